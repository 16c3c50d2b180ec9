"""Reference: one SVD(5) meta-training iteration of Algorithm 1 in JAX (jit, CPU).

The same work as one outer iteration of `noether train --method svd5` on mass_spring:
an HNN 2 -> 3x100 tanh -> 1 whose hidden layers are modulated by
W + V_s diag(ReLU(A_d [z, 1])) U_s^T and a shift z A_s (d_z = 10, rank 5, first layer rank 2),
a batch of 10 instances x 64 points, one inner Adam step on the batch's latents (network
frozen), then one outer Adam step on everything else (latents fixed), with the lambda_z,
lambda_phi and orthogonality penalties. Run on the same machine as the Rust benchmark:

    pip install "jax[cpu]"
    python3 benches/jax_meta.py

Prints iterations/s (best of 5 rounds of >= 1 s, after compilation).
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_platforms", "cpu")

DZ, RANK, WIDTH, LAYERS = 10, 5, 100, 3
LR_BASE, LR_Z, LAM_Z, LAM_PHI, LAM_ORTH = 1e-3, 1e-2, 1e-2, 1e-3, 1e-2


def init(key):
    params, sizes = [], [2] + [WIDTH] * LAYERS
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, *ks = jax.random.split(key, 7)
        r = min(RANK, n_in, n_out)
        b = 1 / np.sqrt(n_in)
        h = 0.1 / np.sqrt(DZ + 1)
        params.append(dict(
            w=jax.random.uniform(ks[0], (n_in, n_out), minval=-b, maxval=b),
            b=jax.random.uniform(ks[1], (n_out,), minval=-b, maxval=b),
            shift=jax.random.uniform(ks[2], (DZ, n_out), minval=-h, maxval=h),
            v=jax.random.uniform(ks[3], (n_in, r), minval=-1, maxval=1) * np.sqrt(3 / n_in),
            u=jax.random.uniform(ks[4], (n_out, r), minval=-1, maxval=1) * np.sqrt(3 / n_out),
            d=jnp.concatenate([jax.random.uniform(ks[5], (DZ, r), minval=-h, maxval=h), jnp.full((1, r), 0.1)]),
        ))
    key, k = jax.random.split(key)
    readout = jax.random.uniform(k, (WIDTH,), minval=-0.1, maxval=0.1)
    return dict(layers=params, readout=readout)


def hamiltonian(params, x, z):
    """H for a batch, every row its own latent: one shared GEMM plus the rank-r
    correction per layer, as the Rust kernel does (no per-row weight matrices)."""
    zt = jnp.concatenate([z, jnp.ones((z.shape[0], 1))], axis=1)
    h = x
    for l in params["layers"]:
        d = jax.nn.relu(zt @ l["d"])
        h = jnp.tanh(h @ l["w"] + ((h @ l["v"]) * d) @ l["u"].T + l["b"] + z @ l["shift"])
    return h @ params["readout"]


def field(params, x, z):
    # Rows are independent, so the gradient of the sum is the per-row gradient.
    g = jax.grad(lambda x: hamiltonian(params, x, z).sum())(x)
    return jnp.stack([g[:, 1], -g[:, 0]], axis=1)


def fit_loss(params, z_rows, x, dx):
    return jnp.mean((field(params, x, z_rows) - dx) ** 2)


def penalties(params):
    phi = sum(jnp.sum(l["shift"] ** 2) + jnp.sum(l["d"] ** 2) for l in params["layers"])
    orth = 0.0
    for l in params["layers"]:
        for m in (l["u"], l["v"]):
            g = m.T @ m - jnp.eye(m.shape[1])
            orth = orth + jnp.sum(g ** 2)
    return LAM_PHI * phi + LAM_ORTH * orth


def adam(p, g, m, v, t, lr):
    m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
    v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
    p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), p, m, v)
    return p, m, v


@jax.jit
def meta_step(params, state, z, zstate, x, dx, task, t):
    def inner(z):
        return fit_loss(params, z[task], x, dx) + LAM_Z * jnp.mean(jnp.sum(z ** 2, axis=1))
    gz = jax.grad(inner)(z)
    z, zm, zv = adam(z, gz, zstate[0], zstate[1], t, LR_Z)

    def outer(p):
        return fit_loss(p, z[task], x, dx) + penalties(p)
    loss, g = jax.value_and_grad(outer)(params)
    params, m, v = adam(params, g, state[0], state[1], t, LR_BASE)
    return params, (m, v), z, (zm, zv), loss


def main():
    params = init(jax.random.PRNGKey(0))
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = (zeros, zeros)
    z = jnp.zeros((10, DZ))
    zstate = (jnp.zeros_like(z), jnp.zeros_like(z))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (640, 2)), dtype=jnp.float32)
    dx = jnp.asarray(rng.uniform(-1, 1, (640, 2)), dtype=jnp.float32)
    task = jnp.repeat(jnp.arange(10), 64)
    out = meta_step(params, state, z, zstate, x, dx, task, 1.0)
    jax.block_until_ready(out)
    best = float("inf")
    t = 1.0
    for _ in range(5):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            t += 1.0
            params, state, z, zstate, loss = meta_step(params, state, z, zstate, x, dx, task, t)
            jax.block_until_ready(loss)
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    print(f"jax {jax.__version__}: SVD(5) meta-iteration (inner + outer), batch 10 x 64: "
          f"{1 / best:.1f} it/s ({best * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
