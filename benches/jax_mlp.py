"""Reference: forward + input gradient of the 2 -> 3x100 tanh -> 1 MLP in JAX (jit, CPU).

The same work as `noether bench network` (unmodulated row): H(x) and dH/dx for a batch of
rows, f32. Run on the same machine, right before or after the Rust benchmark:

    pip install "jax[cpu]"
    python3 benches/jax_mlp.py            # prints rows/s for 1k, 10k, 16k, 64k rows

Timing: jit-compiled function, one warm-up call, then the best of 5 rounds (each >= 0.2 s)
of block_until_ready() calls, the same estimator as the Rust side.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_platforms", "cpu")


def init(key, sizes):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, k1, k2 = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(n_in)
        params.append((jax.random.uniform(k1, (n_in, n_out), minval=-bound, maxval=bound),
                       jax.random.uniform(k2, (n_out,), minval=-bound, maxval=bound)))
    return params


def energy(params, x):
    h = x
    for w, b in params[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = params[-1]
    return (h @ w + b)[..., 0]


@jax.jit
def energy_and_grad(params, x):
    # d/dx of sum_rows H(x_row) is the per-row gradient.
    return jax.value_and_grad(lambda x: energy(params, x).sum())(x)


def best_time(f, rounds=5, budget=0.2):
    f()
    best = float("inf")
    for _ in range(rounds):
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < budget or calls < 2:
            f()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main():
    params = init(jax.random.PRNGKey(0), [2, 100, 100, 100, 1])
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    print("| rows | JAX forward + grad: ms | rows/s |")
    print("|---|---|---|")
    for rows in [1000, 10000, 16000, 64000]:
        x = jax.random.uniform(jax.random.PRNGKey(1), (rows, 2), minval=-1.0, maxval=1.0)
        t = best_time(lambda: jax.block_until_ready(energy_and_grad(params, x)))
        print(f"| {rows} | {t * 1e3:.2f} | {rows / t:.3e} |")


if __name__ == "__main__":
    main()
