//! Training gradients on the CPU kernel: reverse mode through the forward pass *and* the
//! explicit ∇ₓ pass of a modulated MLP, written out by hand (burn has no double backward,
//! and its autodiff runs this network several times slower; see BENCHMARKS.md). Tests
//! compare every gradient with burn's autodiff of the burn implementation.
//!
//! With u_ℓ = a_{ℓ−1}W̃_ℓ + b̃_ℓ, a_ℓ = tanh u_ℓ (forward) and g_L = w, δ_ℓ = g_ℓ ⊙ (1 − a_ℓ²),
//! g_{ℓ−1} = δ_ℓW̃_ℓᵀ (∇ₓ, with ∇ₓf = g₀), a loss with adjoint ḡ₀ = ∂L/∂(∇ₓf) gives
//!
//! ```text
//! for ℓ = 1 … L:   δ̄_ℓ = ḡ_{ℓ−1} W̃_ℓ          ḡ_ℓ = δ̄_ℓ ⊙ (1 − a_ℓ²)     ā_ℓ = −2 δ̄_ℓ ⊙ g_ℓ ⊙ a_ℓ
//! w̄ = Σ_rows ḡ_L
//! for ℓ = L … 1:   ū_ℓ = ā_ℓ ⊙ (1 − a_ℓ²)      ā_{ℓ−1} += ū_ℓ W̃_ℓᵀ       b̃̄_ℓ = ū_ℓ
//!                  W̃̄_ℓ (per row) = a_{ℓ−1} ⊗ ū_ℓ + ḡ_{ℓ−1} ⊗ δ_ℓ
//! ```
//!
//! and the per-row W̃̄ is pushed through each method's W̃(z) to W, the hypernetwork maps, the
//! SVD bases and the latent z, without ever forming it (rank-2 structure per row):
//!
//! | method | W̃(z) | gradients |
//! |---|---|---|
//! | Shift | W, b̃ = b + zA_s | Ā_s = Σ zᵀū, z̄ = ūA_sᵀ |
//! | FW | W + Σₖ zₖΔWₖ | ΔW̄ₖ = Σ zₖ(a⊗ū + ḡ⊗δ), z̄ₖ = (aΔWₖ)·ū + (ḡΔWₖ)·δ |
//! | MR | W + V(z)U(z)ᵀ | V̄ₖ = Σ z̃ₖ(a⊗(ūU) + ḡ⊗(δU)), Ūₖ likewise, z̄ₖ from the pre-products |
//! | SVD | W + V_s diag(d) U_sᵀ | V̄_s, Ū_s, d̄ = (aV)⊙(ūU) + (ḡV)⊙(δU) → A_d, z |

use std::{borrow::Cow, ops::Range};

use super::{
    gemm::{MatRef, matmul},
    mlp::{CpuLayer, CpuMlp, ShiftInput, affine_latents},
    params::{LayerParams, MlpParams},
    scratch::Buf,
    simd::{dtanh_curvature, mul_dtanh, tanh_runs},
};
use crate::nn::Modulation;

/// Consecutive rows of a tile that share one latent: a task's points in a training batch
/// ([`Runs::of_tasks`]), or every row on its own ([`Runs::singles`]). What depends on the
/// latent alone, the shift s(z) = zA_s and the SVD coefficients d(z), is computed once per
/// run, and the latent gradient comes out per run: z̄ = Σ_rows ū A_sᵀ = (Σ_rows ū) A_sᵀ,
/// Ā_s = Σ_runs zᵀ(Σ_rows ū), and likewise d̄ through A_d.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Runs {
    /// Run k is rows `bounds[k] .. bounds[k + 1]`.
    bounds: Vec<usize>,
}

impl Runs {
    /// Every one of `rows` rows its own run.
    pub(super) fn singles(rows: usize) -> Self {
        Self {
            bounds: (0..=rows).collect(),
        }
    }

    /// Runs of equal consecutive task indices (one per row).
    pub(super) fn of_tasks(task: &[usize]) -> Self {
        let mut bounds = vec![0];
        bounds.extend((1..task.len()).filter(|&r| task[r] != task[r - 1]));
        bounds.push(task.len());
        if task.is_empty() {
            bounds.truncate(1);
        }
        Self { bounds }
    }

    /// Number of runs.
    pub(super) fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The runs' row ranges, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.bounds.windows(2).map(|w| w[0]..w[1])
    }

    /// Whether every run is a single row (then per-run values are the rows themselves).
    fn singles_only(&self) -> bool {
        self.bounds.windows(2).all(|w| w[1] == w[0] + 1)
    }

    /// Rows `[rows, width]` of `per_row` (first row of each run) → `[runs, width]`.
    fn firsts<'b>(&self, per_row: &'b [f32], width: usize) -> Cow<'b, [f32]> {
        if self.singles_only() {
            return Cow::Borrowed(&per_row[..self.len() * width]);
        }
        let mut out = Vec::with_capacity(self.len() * width);
        for run in self.iter() {
            out.extend_from_slice(&per_row[run.start * width..(run.start + 1) * width]);
        }
        Cow::Owned(out)
    }

    /// Σ over each run's rows of the first `width` columns of `[rows, stride]` → `[runs, width]`.
    fn sums<'b>(&self, (buf, stride): (&'b [f32], usize), width: usize) -> Cow<'b, [f32]> {
        if self.singles_only() && stride == width {
            return Cow::Borrowed(&buf[..self.len() * width]);
        }
        let mut out = vec![0.0; self.len() * width];
        for (k, run) in self.iter().enumerate() {
            let acc = &mut out[k * width..(k + 1) * width];
            for r in run {
                acc.iter_mut()
                    .zip(&buf[r * stride..r * stride + width])
                    .for_each(|(a, v)| *a += v);
            }
        }
        Cow::Owned(out)
    }
}

/// Everything a tile's forward and ∇ₓ passes computed, kept for the adjoint pass.
#[derive(Default)]
pub(super) struct Tape {
    rows: usize,
    runs: Runs,
    zt: Vec<f32>,
    d: Vec<Buf>,
    acts: Vec<Buf>,
    strides: Vec<usize>,
    /// Forward outputs `[rows, out + pre]` (pre-products a·V).
    y: Vec<Buf>,
    /// δ_ℓ with the transposed map's extra columns, `[rows, out + extra_out]`.
    delta: Vec<Buf>,
    /// Transposed outputs `[rows, in + pre]` (pre-products δ·U).
    gy: Vec<Buf>,
}

/// grad[m×n] += leftᵀ·right with left `[rows, m]` (stride `ls`) and right `[rows, n]` (stride `rs`).
#[expect(
    clippy::too_many_arguments,
    reason = "a product: the gradient, two strided operands and their shapes"
)]
fn add_outer(
    grad: &mut [f32],
    m: usize,
    n: usize,
    left: &[f32],
    ls: usize,
    right: &[f32],
    rs: usize,
    rows: usize,
) {
    matmul(
        grad,
        m,
        n,
        n,
        MatRef::strided(left, rows, m, ls).t(),
        MatRef::strided(right, rows, n, rs),
        true,
    );
}

/// out[rows, n] = x[rows, m] (stride xs) · w[m, n].
fn mul(out: &mut [f32], x: &[f32], xs: usize, w: &[f32], rows: usize, m: usize, n: usize) {
    matmul(
        out,
        rows,
        n,
        n,
        MatRef::strided(x, rows, m, xs),
        MatRef::rows(w, m, n),
        false,
    );
}

/// out[rows, n] = x[rows, m] (stride xs) · wᵀ with w `[n, m]`.
fn mul_t(out: &mut [f32], x: &[f32], xs: usize, w: &[f32], rows: usize, m: usize, n: usize) {
    matmul(
        out,
        rows,
        n,
        n,
        MatRef::strided(x, rows, m, xs),
        MatRef::rows(w, n, m).t(),
        false,
    );
}

/// c[row, j] = Σₖ z̃[row, k] p[row, offset + k·r + j] for a block of K·r pre-products.
fn contract(
    p: &[f32],
    ps: usize,
    offset: usize,
    zt: &[f32],
    k: usize,
    r: usize,
    rows: usize,
) -> Buf {
    let mut c = Buf::zeroed(rows * r);
    for row in 0..rows {
        for kk in 0..k {
            let zk = zt[row * k + kk];
            for j in 0..r {
                c[row * r + j] += zk * p[row * ps + offset + kk * r + j];
            }
        }
    }
    c
}

/// e[row, k·r + j] = z̃[row, k] c[row, j].
fn spread(c: &[f32], zt: &[f32], k: usize, r: usize, rows: usize) -> Buf {
    let mut e = Buf::zeroed(rows * k * r);
    for row in 0..rows {
        for kk in 0..k {
            for j in 0..r {
                e[row * k * r + kk * r + j] = zt[row * k + kk] * c[row * r + j];
            }
        }
    }
    e
}

impl CpuMlp {
    /// Runs the forward and ∇ₓ passes of `rows` rows in `runs` of shared latents, keeping
    /// the tape; writes ∇ₓf to `grad`.
    pub(super) fn record(
        &self,
        x: &[f32],
        z: &[f32],
        runs: &Runs,
        rows: usize,
        grad: &mut [f32],
    ) -> Tape {
        let (n, dz) = (self.d_input, self.d_latent);
        let layers = self.layers.len();
        let mut t = Tape {
            rows,
            runs: runs.clone(),
            ..Tape::default()
        };
        affine_latents(z, rows, dz, &mut t.zt);
        let z_runs = if z.is_empty() {
            Cow::Borrowed(z)
        } else {
            runs.firsts(z, dz)
        };
        let mut zt_runs = Vec::new();
        affine_latents(&z_runs, runs.len(), dz, &mut zt_runs);
        // Every row its own latent (a Jacobian's rows, a body each): the shift goes in as z
        // columns, as `CpuMlp::eval_tile` takes it, so that the recorded field equals the
        // evaluated one bit for bit; shared latents take it once per run.
        let shift = if runs.singles_only() {
            ShiftInput::Columns
        } else {
            ShiftInput::ByRun
        };
        let extra_in = |layer: &CpuLayer| match shift {
            ShiftInput::Columns => layer.extra_in(),
            _ => layer.tape_extra_in(),
        };
        t.strides.push(n + extra_in(&self.layers[0]));
        for (l, layer) in self.layers.iter().enumerate() {
            t.strides
                .push(layer.d_out + self.layers.get(l + 1).map_or(0, extra_in));
        }
        let mut a0 = Buf::overwritten(rows * t.strides[0]);
        for r in 0..rows {
            a0[r * t.strides[0]..r * t.strides[0] + n].copy_from_slice(&x[r * n..(r + 1) * n]);
        }
        t.acts.push(a0);
        let (mut scratch, mut d_runs, mut biases) = (Buf::default(), Vec::new(), Vec::new());
        for (l, layer) in self.layers.iter().enumerate() {
            // d(z) and b + s(z) once per run; d spread back over the rows.
            layer.svd_coefficients(&zt_runs, runs.len(), &mut d_runs);
            let r = layer.pre();
            let mut d = Buf::default();
            if !d_runs.is_empty() {
                d = Buf::overwritten(rows * r);
                for (k, run) in runs.iter().enumerate() {
                    for row in run {
                        d[row * r..(row + 1) * r].copy_from_slice(&d_runs[k * r..(k + 1) * r]);
                    }
                }
            }
            let o = layer.d_out;
            let shifted: &[f32] = if shift == ShiftInput::ByRun {
                &z_runs
            } else {
                &[]
            };
            layer.run_biases(shifted, runs.len(), &mut biases);
            let cols = o + layer.pre();
            let mut y = Buf::overwritten(rows * cols);
            let stride = t.strides[l];
            layer.forward_map(
                &mut t.acts[l],
                stride,
                rows,
                z,
                &t.zt,
                &d,
                shift,
                &mut y,
                &mut scratch,
            );
            let next = t.strides[l + 1];
            let mut a = Buf::overwritten(rows * next);
            let biases = &biases[..runs.len() * o];
            tanh_runs(&y, cols, biases, &runs.bounds, &mut a, next, o);
            t.acts.push(a);
            t.y.push(y);
            t.d.push(d);
        }
        // ∇ₓ pass, keeping δ_ℓ and the transposed outputs (g_ℓ is read where it lies:
        // see `grad_input`).
        t.delta = (0..layers).map(|_| Buf::default()).collect();
        t.gy = (0..layers).map(|_| Buf::default()).collect();
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (o, i) = (layer.d_out, layer.d_in);
            let ds = o + layer.extra_out();
            let mut delta = Buf::overwritten(rows * ds);
            let (g, g_stride) = self.grad_input(&t, l);
            mul_dtanh(
                g,
                g_stride,
                &t.acts[l + 1],
                t.strides[l + 1],
                &mut delta,
                ds,
                rows,
                o,
            );
            let mut gy = Buf::overwritten(rows * (i + layer.pre()));
            layer.transpose_map(
                &mut delta,
                ds,
                rows,
                z,
                &t.zt,
                &t.d[l],
                &mut gy,
                &mut scratch,
            );
            t.delta[l] = delta;
            t.gy[l] = gy;
        }
        // ∇ₓf = g₀: layer 0's transposed output.
        let (g, g_stride) = (&t.gy[0], n + self.layers[0].pre());
        for r in 0..rows {
            grad[r * n..(r + 1) * n].copy_from_slice(&g[r * g_stride..r * g_stride + n]);
        }
        t
    }

    /// g_ℓ, the ∇ₓ pass's input to layer ℓ (before the tanh derivative), and its row
    /// stride: the readout on every row (stride 0) for the last layer, else the first
    /// columns of layer ℓ + 1's transposed output in `tape`.
    fn grad_input<'t>(&'t self, tape: &'t Tape, l: usize) -> (&'t [f32], usize) {
        let above = l + 1;
        match self.layers.get(above) {
            Some(next) => (&tape.gy[above], next.d_in + next.pre()),
            None => (&self.readout, 0),
        }
    }

    /// Reverse mode through a recorded tile: given ḡ₀ = ∂L/∂(∇ₓf) `[rows, n]`, adds the
    /// parameter gradients to `grads` (skipped when `None`: latents only), ∂L/∂z per run of
    /// the tape's [`Runs`] to `zbar` `[runs, d_z]`, and, when asked, ∂L/∂x per row to
    /// `xbar` `[rows, n]`: with
    /// ḡ₀ = v that is the Hessian-vector product ∇²f·v, x entering only through a₀ = x, so
    /// x̄ = ū₁W̃₁ᵀ.
    #[expect(
        clippy::too_many_arguments,
        reason = "one reverse pass and its three outputs"
    )]
    pub(super) fn adjoint(
        &self,
        params: &MlpParams,
        tape: &Tape,
        z: &[f32],
        gbar0: &[f32],
        mut grads: Option<&mut MlpParams>,
        zbar: &mut [f32],
        mut xbar: Option<&mut [f32]>,
    ) {
        let rows = tape.rows;
        let n = self.d_input;
        let layers = self.layers.len();
        let mut scratch = Buf::default();
        // Pass 1, through the ∇ₓ chain in forward order: δ̄_ℓ = ḡ_{ℓ−1}W̃_ℓ.
        let mut gbars: Vec<(Buf, usize)> = Vec::with_capacity(layers + 1);
        let s0 = n + self.layers[0].tape_extra_in();
        let mut g0 = Buf::overwritten(rows * s0);
        for r in 0..rows {
            g0[r * s0..r * s0 + n].copy_from_slice(&gbar0[r * n..(r + 1) * n]);
        }
        gbars.push((g0, s0));
        let mut dbar_y: Vec<Buf> = Vec::with_capacity(layers);
        let mut abar: Vec<Buf> = Vec::with_capacity(layers);
        for (l, layer) in self.layers.iter().enumerate() {
            let (o, cols) = (layer.d_out, layer.d_out + layer.pre());
            let mut dy = Buf::overwritten(rows * cols);
            let (src, ss) = &mut gbars[l];
            layer.forward_map(
                src,
                *ss,
                rows,
                z,
                &tape.zt,
                &tape.d[l],
                ShiftInput::Without,
                &mut dy,
                &mut scratch,
            );
            let (a, as_) = (&tape.acts[l + 1], tape.strides[l + 1]);
            let next_stride = o + self
                .layers
                .get(l + 1)
                .map_or(0, |next| next.tape_extra_in());
            let mut next = Buf::overwritten(rows * next_stride);
            let mut ab = Buf::overwritten(rows * o);
            dtanh_curvature(
                (&dy, cols),
                self.grad_input(tape, l),
                (a, as_),
                (&mut next, next_stride),
                (&mut ab, o),
                rows,
                o,
            );
            gbars.push((next, next_stride));
            dbar_y.push(dy);
            abar.push(ab);
        }
        // w̄ = Σ_rows ḡ_L.
        if let Some(grads) = grads.as_deref_mut() {
            let (gl, gls) = &gbars[layers];
            for r in 0..rows {
                for (wbar, g) in grads.readout.iter_mut().zip(&gl[r * gls..]) {
                    *wbar += g;
                }
            }
        }
        // Pass 2, through the forward chain in reverse order.
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (o, i) = (layer.d_out, layer.d_in);
            let us = o + layer.extra_out();
            let mut ubar = Buf::overwritten(rows * us);
            mul_dtanh(
                &abar[l],
                o,
                &tape.acts[l + 1],
                tape.strides[l + 1],
                &mut ubar,
                us,
                rows,
                o,
            );
            let cols = i + layer.pre();
            let mut uy = Buf::overwritten(rows * cols);
            layer.transpose_map(
                &mut ubar,
                us,
                rows,
                z,
                &tape.zt,
                &tape.d[l],
                &mut uy,
                &mut scratch,
            );
            if l > 0 {
                for (r, row) in abar[l - 1].chunks_exact_mut(i).enumerate() {
                    row.iter_mut()
                        .zip(&uy[r * cols..r * cols + i])
                        .for_each(|(a, u)| *a += u);
                }
            } else if let Some(xbar) = xbar.as_deref_mut() {
                for (r, row) in xbar.chunks_exact_mut(i).enumerate() {
                    row.iter_mut()
                        .zip(&uy[r * cols..r * cols + i])
                        .for_each(|(x, u)| *x += u);
                }
            }
            let side = Sides {
                rows,
                a: (&tape.acts[l], tape.strides[l]),
                ubar: (&ubar, us),
                gbar: (&gbars[l].0, gbars[l].1),
                delta: (&tape.delta[l], o + layer.extra_out()),
                a_v: (&tape.y[l], o + layer.pre()),
                gbar_v: (&dbar_y[l], o + layer.pre()),
                ubar_u: (&uy, cols),
                delta_u: (&tape.gy[l], cols),
                zt: &tape.zt,
                d: &tape.d[l],
                runs: &tape.runs,
            };
            layer_grads(
                &params.layers[l],
                grads.as_deref_mut().map(|g| &mut g.layers[l]),
                &side,
                z,
                zbar,
            );
        }
    }
}

/// The two (left, right) row pairs of a layer's W̃ adjoint and the pre-products, each a
/// buffer with its row stride.
struct Sides<'a> {
    rows: usize,
    a: (&'a [f32], usize),
    ubar: (&'a [f32], usize),
    gbar: (&'a [f32], usize),
    delta: (&'a [f32], usize),
    /// Forward outputs, pre-products (a·V) after `out` columns.
    a_v: (&'a [f32], usize),
    /// δ̄ outputs, pre-products (ḡ·V) after `out` columns.
    gbar_v: (&'a [f32], usize),
    /// Transposed ū outputs, pre-products (ū·U) after `in` columns.
    ubar_u: (&'a [f32], usize),
    /// Transposed δ outputs, pre-products (δ·U) after `in` columns.
    delta_u: (&'a [f32], usize),
    zt: &'a [f32],
    d: &'a [f32],
    runs: &'a Runs,
}

/// Adds one layer's parameter gradients (unless `g` is `None`) and its latent gradient per
/// run to `zbar` `[runs, d_z]` (see the module table).
fn layer_grads(
    p: &LayerParams,
    mut g: Option<&mut LayerParams>,
    s: &Sides<'_>,
    z: &[f32],
    zbar: &mut [f32],
) {
    let cfg = p.config;
    let (i, o, dz) = (cfg.d_input, cfg.d_output, cfg.d_latent);
    let k = dz + 1;
    let rows = s.rows;
    if let Some(g) = g.as_deref_mut() {
        // W̄ += aᵀū + ḡᵀδ;  b̄ += Σ ū.
        add_outer(&mut g.weight, i, o, s.a.0, s.a.1, s.ubar.0, s.ubar.1, rows);
        add_outer(
            &mut g.weight,
            i,
            o,
            s.gbar.0,
            s.gbar.1,
            s.delta.0,
            s.delta.1,
            rows,
        );
        for r in 0..rows {
            for (b, u) in g
                .bias
                .iter_mut()
                .zip(&s.ubar.0[r * s.ubar.1..r * s.ubar.1 + o])
            {
                *b += u;
            }
        }
    }
    if cfg.modulation == Modulation::None {
        return;
    }
    // Shift, per run (z is one row z_k for a run's rows): Ā_s += Σₖ z_kᵀ(Σ_run ū),
    // z̄_k += (Σ_run ū)A_sᵀ.
    let runs = s.runs;
    let z_runs = runs.firsts(z, dz);
    let ubar_sums = runs.sums(s.ubar, o);
    if let Some(g) = g.as_deref_mut() {
        add_outer(&mut g.shift, dz, o, &z_runs, dz, &ubar_sums, o, runs.len());
    }
    let mut zb_runs = Buf::overwritten(runs.len() * dz);
    mul_t(&mut zb_runs, &ubar_sums, o, &p.shift, runs.len(), o, dz);
    // Per-row latent gradients of FW and MR, summed per run below.
    let mut zb = Buf::default();
    match cfg.modulation {
        Modulation::None | Modulation::Shift => {}
        Modulation::Fw => {
            // ΔW̄ₖ[i, o] += Σ zₖ(aᵢūₒ + ḡᵢδₒ): right factors laid out as (k, o).
            let kron = |v: (&[f32], usize)| -> Buf {
                let mut e = Buf::overwritten(rows * dz * o);
                for r in 0..rows {
                    for kk in 0..dz {
                        for oo in 0..o {
                            e[r * dz * o + kk * o + oo] = z[r * dz + kk] * v.0[r * v.1 + oo];
                        }
                    }
                }
                e
            };
            if let Some(g) = g.as_deref_mut() {
                add_outer(
                    &mut g.fw,
                    i,
                    dz * o,
                    s.a.0,
                    s.a.1,
                    &kron(s.ubar),
                    dz * o,
                    rows,
                );
                add_outer(
                    &mut g.fw,
                    i,
                    dz * o,
                    s.gbar.0,
                    s.gbar.1,
                    &kron(s.delta),
                    dz * o,
                    rows,
                );
            }
            // z̄ₖ += (aΔWₖ)·ū + (ḡΔWₖ)·δ.
            zb = Buf::zeroed(rows * dz);
            let (mut aw, mut gw) = (
                Buf::overwritten(rows * dz * o),
                Buf::overwritten(rows * dz * o),
            );
            mul(&mut aw, s.a.0, s.a.1, &p.fw, rows, i, dz * o);
            mul(&mut gw, s.gbar.0, s.gbar.1, &p.fw, rows, i, dz * o);
            for r in 0..rows {
                for kk in 0..dz {
                    let mut acc = 0.0;
                    for oo in 0..o {
                        acc += aw[r * dz * o + kk * o + oo] * s.ubar.0[r * s.ubar.1 + oo]
                            + gw[r * dz * o + kk * o + oo] * s.delta.0[r * s.delta.1 + oo];
                    }
                    zb[r * dz + kk] += acc;
                }
            }
        }
        Modulation::Mr { .. } => {
            let r_ = cfg.effective_rank();
            let f1 = contract(s.a_v.0, s.a_v.1, o, s.zt, k, r_, rows);
            let f2 = contract(s.gbar_v.0, s.gbar_v.1, o, s.zt, k, r_, rows);
            let e1 = contract(s.ubar_u.0, s.ubar_u.1, i, s.zt, k, r_, rows);
            let e2 = contract(s.delta_u.0, s.delta_u.1, i, s.zt, k, r_, rows);
            if let Some(g) = g.as_deref_mut() {
                // V̄ (mr_v [in, K·r], col k·r + j) += aᵀ(z̃ ⊗ e₁) + ḡᵀ(z̃ ⊗ e₂).
                add_outer(
                    &mut g.mr_v,
                    i,
                    k * r_,
                    s.a.0,
                    s.a.1,
                    &spread(&e1, s.zt, k, r_, rows),
                    k * r_,
                    rows,
                );
                add_outer(
                    &mut g.mr_v,
                    i,
                    k * r_,
                    s.gbar.0,
                    s.gbar.1,
                    &spread(&e2, s.zt, k, r_, rows),
                    k * r_,
                    rows,
                );
                // Ū as [out, K·r] = ūᵀ(z̃ ⊗ f₁) + δᵀ(z̃ ⊗ f₂), scattered into mr_u [r, K·out].
                let mut gu = Buf::zeroed(o * k * r_);
                add_outer(
                    &mut gu,
                    o,
                    k * r_,
                    s.ubar.0,
                    s.ubar.1,
                    &spread(&f1, s.zt, k, r_, rows),
                    k * r_,
                    rows,
                );
                add_outer(
                    &mut gu,
                    o,
                    k * r_,
                    s.delta.0,
                    s.delta.1,
                    &spread(&f2, s.zt, k, r_, rows),
                    k * r_,
                    rows,
                );
                for oo in 0..o {
                    for kk in 0..k {
                        for j in 0..r_ {
                            g.mr_u[j * k * o + kk * o + oo] += gu[oo * k * r_ + kk * r_ + j];
                        }
                    }
                }
            }
            // z̄ₖ += Σⱼ e₁ⱼ(aVₖ)ⱼ + e₂ⱼ(ḡVₖ)ⱼ + f₁ⱼ(ūUₖ)ⱼ + f₂ⱼ(δUₖ)ⱼ  (k < d_z).
            zb = Buf::zeroed(rows * dz);
            for r in 0..rows {
                for kk in 0..dz {
                    let mut acc = 0.0;
                    for j in 0..r_ {
                        let idx = kk * r_ + j;
                        acc += e1[r * r_ + j] * s.a_v.0[r * s.a_v.1 + o + idx]
                            + e2[r * r_ + j] * s.gbar_v.0[r * s.gbar_v.1 + o + idx]
                            + f1[r * r_ + j] * s.ubar_u.0[r * s.ubar_u.1 + i + idx]
                            + f2[r * r_ + j] * s.delta_u.0[r * s.delta_u.1 + i + idx];
                    }
                    zb[r * dz + kk] += acc;
                }
            }
        }
        Modulation::Svd { .. } => {
            let r_ = cfg.effective_rank();
            let col =
                |buf: (&[f32], usize), off: usize, r: usize, j: usize| buf.0[r * buf.1 + off + j];
            let (mut t1, mut t2, mut s1, mut s2, mut dbar) = (
                Buf::overwritten(rows * r_),
                Buf::overwritten(rows * r_),
                Buf::overwritten(rows * r_),
                Buf::overwritten(rows * r_),
                Buf::overwritten(rows * r_),
            );
            for r in 0..rows {
                for j in 0..r_ {
                    let dj = s.d[r * r_ + j];
                    let (av, gv) = (col(s.a_v, o, r, j), col(s.gbar_v, o, r, j));
                    let (uu, du) = (col(s.ubar_u, i, r, j), col(s.delta_u, i, r, j));
                    t1[r * r_ + j] = uu * dj;
                    t2[r * r_ + j] = du * dj;
                    s1[r * r_ + j] = av * dj;
                    s2[r * r_ + j] = gv * dj;
                    // ReLU: d = max(pre, 0) passes gradient where d > 0.
                    dbar[r * r_ + j] = if dj > 0.0 { av * uu + gv * du } else { 0.0 };
                }
            }
            // d(z) is one row per run: Ā_d += Σₖ z̃_kᵀ(Σ_run d̄), z̄_k += (Σ_run d̄) A_d[..d_z]ᵀ.
            let dbar_sums = runs.sums((&dbar, r_), r_);
            if let Some(g) = g.as_mut() {
                add_outer(&mut g.svd_v, i, r_, s.a.0, s.a.1, &t1, r_, rows);
                add_outer(&mut g.svd_v, i, r_, s.gbar.0, s.gbar.1, &t2, r_, rows);
                add_outer(&mut g.svd_u, o, r_, s.ubar.0, s.ubar.1, &s1, r_, rows);
                add_outer(&mut g.svd_u, o, r_, s.delta.0, s.delta.1, &s2, r_, rows);
                let zt_runs = runs.firsts(s.zt, k);
                add_outer(&mut g.svd_d, k, r_, &zt_runs, k, &dbar_sums, r_, runs.len());
            }
            for (zr, dr) in zb_runs.chunks_exact_mut(dz).zip(dbar_sums.chunks_exact(r_)) {
                for (kk, zk) in zr.iter_mut().enumerate() {
                    *zk += dr
                        .iter()
                        .zip(&p.svd_d[kk * r_..(kk + 1) * r_])
                        .map(|(d, a)| d * a)
                        .sum::<f32>();
                }
            }
        }
    }
    if !zb.is_empty() {
        let sums = runs.sums((&zb, dz), dz);
        zb_runs
            .iter_mut()
            .zip(sums.iter())
            .for_each(|(a, b)| *a += b);
    }
    for (a, b) in zbar.iter_mut().zip(zb_runs.iter()) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_where_the_task_changes_and_sum_per_run() {
        let runs = Runs::of_tasks(&[3, 3, 1, 1, 1, 3]);
        assert_eq!(runs.iter().collect::<Vec<_>>(), [0..2, 2..5, 5..6]);
        assert_eq!(
            Runs::singles(3).iter().collect::<Vec<_>>(),
            [0..1, 1..2, 2..3]
        );
        assert_eq!(Runs::of_tasks(&[]).len(), 0);
        // Rows [6, stride 3]; the first two columns summed and the first row taken per run.
        let rows: Vec<f32> = (0..18).map(|i| i as f32).collect();
        assert_eq!(
            &runs.sums((&rows, 3), 2)[..],
            &[3.0, 5.0, 27.0, 30.0, 15.0, 16.0]
        );
        // Single rows are their own sums: no copy.
        let singles = Runs::singles(2);
        assert!(matches!(singles.sums((&rows, 3), 3), Cow::Borrowed(r) if r == &rows[..6]));
        assert!(matches!(singles.sums((&rows, 3), 2), Cow::Owned(r) if r == [0.0, 1.0, 3.0, 4.0]));
        let latents: Vec<f32> = (0..12).map(|i| i as f32).collect();
        assert_eq!(
            &runs.firsts(&latents, 2)[..],
            &[0.0, 1.0, 4.0, 5.0, 10.0, 11.0]
        );
    }
}
