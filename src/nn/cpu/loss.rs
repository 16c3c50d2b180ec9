//! The training objective on the CPU kernel: the derivative-matching loss
//! L = mean ‖f(x; θ, z) − ẋ‖² of a whole model with its gradient with respect to every
//! parameter and every latent, plus the regularisers of DESIGN.md §5.

use rayon::prelude::*;

use super::{
    backprop::Tape,
    gemm::{MatRef, matmul},
    mlp::CpuMlp,
    params::{DenseParams, GenericParams, MlpParams, ModelParams, ParamRole},
    simd::{mul_dtanh, tanh_rows},
};

/// Rows per parallel tile of a training batch. Fixed (not derived from the thread count)
/// so that the summation order, and so every result, is the same on any machine.
const TRAIN_TILE: usize = 160;

/// A batch of (x, ẋ) rows, each belonging to one of the latents passed alongside.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// States `[rows, n]`.
    pub x: &'a [f32],
    /// Targets `[rows, n]`.
    pub dx: &'a [f32],
    /// Latent index of each row.
    pub task: &'a [usize],
}

/// The loss and what was asked of its gradient.
#[derive(Clone, Debug)]
pub struct LossGrad {
    /// mean ‖f − ẋ‖² over rows and components.
    pub loss: f64,
    /// ∂L/∂θ, when asked for.
    pub params: Option<ModelParams>,
    /// ∂L/∂z, `[latents, d_z]`.
    pub latents: Vec<f32>,
}

/// Per-tile partial results.
struct Partial {
    sq: f64,
    grads: Option<ModelParams>,
    zbar: Vec<f32>,
}

/// The network in kernel layout, built once per parameter update.
pub struct Objective<'a> {
    params: &'a ModelParams,
    nets: Nets,
}

enum Nets {
    Hnn(CpuMlp),
    Separable(CpuMlp, CpuMlp),
    Generic(CpuMlp, CpuMlp),
}

impl<'a> Objective<'a> {
    /// Lays out `params` for evaluation.
    pub fn new(params: &'a ModelParams) -> Self {
        let nets = match params {
            ModelParams::Hnn(h) => Nets::Hnn(CpuMlp::from_params(h)),
            ModelParams::Separable { t, v } => Nets::Separable(CpuMlp::from_params(t), CpuMlp::from_params(v)),
            ModelParams::Generic(g) => Nets::Generic(CpuMlp::from_params(&g.energy), CpuMlp::from_params(&g.entropy)),
        };
        Self { params, nets }
    }

    fn dim(&self) -> usize {
        match self.params {
            ModelParams::Hnn(h) => h.d_input(),
            ModelParams::Separable { t, .. } => 2 * t.d_input(),
            ModelParams::Generic(g) => g.dim,
        }
    }

    fn d_latent(&self) -> usize {
        match self.params {
            ModelParams::Hnn(h) => h.d_latent(),
            ModelParams::Separable { t, .. } => t.d_latent(),
            ModelParams::Generic(g) => g.energy.d_latent(),
        }
    }

    /// L and its gradients for `batch` with latents `[count, d_z]`; parameter gradients only
    /// when `want_params`. Tiles run in parallel; partial sums are added in tile order, so
    /// the result does not depend on thread scheduling.
    pub fn loss_grad(&self, batch: Batch<'_>, latents: &[f32], want_params: bool) -> LossGrad {
        let (n, dz) = (self.dim(), self.d_latent());
        let rows = batch.task.len();
        assert!(batch.x.len() == rows * n && batch.dx.len() == rows * n, "Objective: batch of {rows} rows of width {n} expected");
        let mut z = Vec::with_capacity(rows * dz);
        for &t in batch.task {
            z.extend_from_slice(&latents[t * dz..(t + 1) * dz]);
        }
        let scale = 2.0 / (rows * n) as f32;
        let tile = TRAIN_TILE;
        let partials: Vec<Partial> = (0..rows.div_ceil(tile))
            .into_par_iter()
            .map(|t| {
                let r0 = t * tile;
                let r1 = (r0 + tile).min(rows);
                self.tile(&batch.x[r0 * n..r1 * n], &batch.dx[r0 * n..r1 * n], &z[r0 * dz..r1 * dz], r1 - r0, scale, want_params)
            })
            .collect();
        let mut sq = 0.0;
        let mut grads: Option<ModelParams> = None;
        let mut zbar_rows = Vec::with_capacity(rows * dz);
        for p in partials {
            sq += p.sq;
            if let Some(g) = p.grads {
                match &mut grads {
                    Some(acc) => acc.add_assign(&g),
                    None => grads = Some(g),
                }
            }
            zbar_rows.extend(p.zbar);
        }
        let mut zbar = vec![0.0; latents.len()];
        for (r, &t) in batch.task.iter().enumerate() {
            for k in 0..dz {
                zbar[t * dz + k] += zbar_rows[r * dz + k];
            }
        }
        LossGrad { loss: sq / (rows * n) as f64, params: grads, latents: zbar }
    }

    fn tile(&self, x: &[f32], dx: &[f32], z: &[f32], rows: usize, scale: f32, want_params: bool) -> Partial {
        let n = self.dim();
        let dz = self.d_latent();
        let mut grads = want_params.then(|| self.params.zeros_like());
        let mut zbar = vec![0.0; rows * dz];
        let mut sq = 0.0f64;
        // residual → ẋ̄ = 2(f − ẋ)/(rows·n), accumulating the squared error.
        let mut residual = |f: &[f32]| -> Vec<f32> {
            f.iter()
                .zip(dx)
                .map(|(f, t)| {
                    let e = f - t;
                    sq += f64::from(e) * f64::from(e);
                    scale * e
                })
                .collect()
        };
        match (&self.nets, self.params) {
            (Nets::Hnn(h), ModelParams::Hnn(hp)) => {
                let mut g = vec![0.0; rows * n];
                let tape = h.record(x, z, rows, &mut g);
                let dof = n / 2;
                // f = J∇H = (∂H/∂p, −∂H/∂q); ḡ = Jᵀẋ̄ = (−ẋ̄_p, ẋ̄_q).
                let mut f = vec![0.0; rows * n];
                for (fr, gr) in f.chunks_exact_mut(n).zip(g.chunks_exact(n)) {
                    for i in 0..dof {
                        fr[i] = gr[dof + i];
                        fr[dof + i] = -gr[i];
                    }
                }
                let xbar = residual(&f);
                let mut gbar = vec![0.0; rows * n];
                for (gr, xr) in gbar.chunks_exact_mut(n).zip(xbar.chunks_exact(n)) {
                    for i in 0..dof {
                        gr[i] = -xr[dof + i];
                        gr[dof + i] = xr[i];
                    }
                }
                let gh = grads.as_mut().map(|g| match g {
                    ModelParams::Hnn(m) => m,
                    _ => unreachable!(),
                });
                adjoint_into(h, hp, &tape, z, &gbar, gh, &mut zbar);
            }
            (Nets::Separable(t, v), ModelParams::Separable { t: tp, v: vp }) => {
                let dof = n / 2;
                let q: Vec<f32> = x.chunks(n).flat_map(|r| r[..dof].to_vec()).collect();
                let p: Vec<f32> = x.chunks(n).flat_map(|r| r[dof..].to_vec()).collect();
                let (mut gt, mut gv) = (vec![0.0; rows * dof], vec![0.0; rows * dof]);
                let tape_t = t.record(&p, z, rows, &mut gt);
                let tape_v = v.record(&q, z, rows, &mut gv);
                let f: Vec<f32> = (0..rows).flat_map(|r| gt[r * dof..(r + 1) * dof].iter().copied().chain(gv[r * dof..(r + 1) * dof].iter().map(|v| -v)).collect::<Vec<_>>()).collect();
                let xbar = residual(&f);
                let gbar_t: Vec<f32> = xbar.chunks(n).flat_map(|r| r[..dof].to_vec()).collect();
                let gbar_v: Vec<f32> = xbar.chunks(n).flat_map(|r| r[dof..].iter().map(|v| -v).collect::<Vec<_>>()).collect();
                let (gt_params, gv_params) = match grads.as_mut() {
                    Some(ModelParams::Separable { t, v }) => (Some(t), Some(v)),
                    _ => (None, None),
                };
                adjoint_into(t, tp, &tape_t, z, &gbar_t, gt_params, &mut zbar);
                adjoint_into(v, vp, &tape_v, z, &gbar_v, gv_params, &mut zbar);
            }
            (Nets::Generic(e, s), ModelParams::Generic(gp)) => {
                let (mut ge, mut gs) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                let tape_e = e.record(x, z, rows, &mut ge);
                let tape_s = s.record(x, z, rows, &mut gs);
                let a_tape = dense_forward(&gp.a_net, x, rows);
                let c_tape = dense_forward(&gp.c_net, x, rows);
                let asm = Assembly::new(gp);
                let f = asm.forward(&ge, &gs, a_tape.last().expect("output"), c_tape.last().expect("output"), rows);
                let xbar = residual(&f);
                let back = asm.backward(&ge, &gs, a_tape.last().expect("output"), c_tape.last().expect("output"), &xbar, rows);
                let (ge_p, gs_p) = match grads.as_mut() {
                    Some(ModelParams::Generic(g)) => {
                        dense_backward(&gp.a_net, &a_tape, &back.a, rows, &mut g.a_net);
                        dense_backward(&gp.c_net, &c_tape, &back.c, rows, &mut g.c_net);
                        // ξ = Ξ − Ξᵀ ⇒ Ξ̄ = ξ̄ − ξ̄ᵀ (per k), likewise for ζ.
                        add_skew_grad(&mut g.xi, &back.xi, gp.k, n);
                        add_skew_grad(&mut g.zeta, &back.zeta, gp.k, n);
                        let g = &mut **g;
                        (Some(&mut g.energy), Some(&mut g.entropy))
                    }
                    _ => (None, None),
                };
                adjoint_into(e, &gp.energy, &tape_e, z, &back.grad_energy, ge_p, &mut zbar);
                adjoint_into(s, &gp.entropy, &tape_s, z, &back.grad_entropy, gs_p, &mut zbar);
            }
            _ => unreachable!("nets are built from these params"),
        }
        Partial { sq, grads, zbar }
    }
}

/// Adjoint into `grads` (when given; otherwise latent gradients only).
fn adjoint_into(net: &CpuMlp, params: &MlpParams, tape: &Tape, z: &[f32], gbar: &[f32], grads: Option<&mut MlpParams>, zbar: &mut [f32]) {
    net.adjoint(params, tape, z, gbar, grads, zbar);
}

fn add_skew_grad(raw_grad: &mut [f32], skew_grad: &[f32], k: usize, n: usize) {
    for kk in 0..k {
        for i in 0..n {
            for j in 0..n {
                let b = kk * n * n;
                raw_grad[b + i * n + j] += skew_grad[b + i * n + j] - skew_grad[b + j * n + i];
            }
        }
    }
}

/// A dense net's activations, input first, output (pre-activation-free) last.
fn dense_forward(p: &DenseParams, x: &[f32], rows: usize) -> Vec<Vec<f32>> {
    let mut acts = vec![x.to_vec()];
    let last = p.layers.len() - 1;
    for (l, (w, b)) in p.layers.iter().enumerate() {
        let (i, o) = (p.sizes[l], p.sizes[l + 1]);
        let mut u = vec![0.0; rows * o];
        matmul(&mut u, rows, o, o, MatRef::rows(&acts[l], rows, i), MatRef::rows(w, i, o), false);
        if l < last {
            let mut a = vec![0.0; rows * o];
            tanh_rows(&u, o, b, &mut a, o, rows, o);
            acts.push(a);
        } else {
            u.chunks_exact_mut(o).for_each(|row| row.iter_mut().zip(b).for_each(|(v, bv)| *v += bv));
            acts.push(u);
        }
    }
    acts
}

/// Standard back-propagation through a dense net given ∂L/∂output.
fn dense_backward(p: &DenseParams, acts: &[Vec<f32>], out_bar: &[f32], rows: usize, grads: &mut DenseParams) {
    let mut ubar = out_bar.to_vec();
    for l in (0..p.layers.len()).rev() {
        let (i, o) = (p.sizes[l], p.sizes[l + 1]);
        let (gw, gb) = &mut grads.layers[l];
        matmul(gw, i, o, o, MatRef::rows(&acts[l], rows, i).t(), MatRef::rows(&ubar, rows, o), true);
        for r in 0..rows {
            gb.iter_mut().zip(&ubar[r * o..(r + 1) * o]).for_each(|(g, u)| *g += u);
        }
        if l > 0 {
            let mut abar = vec![0.0; rows * i];
            matmul(&mut abar, rows, i, i, MatRef::rows(&ubar, rows, o), MatRef::rows(&p.layers[l].0, i, o).t(), false);
            let mut next = vec![0.0; rows * i];
            mul_dtanh(&abar, i, &acts[l], i, &mut next, i, rows, i);
            ubar = next;
        }
    }
}

/// The GENERIC assembly ẋ = B_Sᵀ(A − Aᵀ)B_S∇E + B_EᵀCCᵀB_E∇S, row by row (K, n ≤ 8).
struct Assembly {
    xi: Vec<f32>,
    zeta: Vec<f32>,
    n: usize,
    k: usize,
}

/// Adjoints of the assembly's inputs.
struct AssemblyGrad {
    grad_energy: Vec<f32>,
    grad_entropy: Vec<f32>,
    a: Vec<f32>,
    c: Vec<f32>,
    xi: Vec<f32>,
    zeta: Vec<f32>,
}

impl Assembly {
    fn new(p: &GenericParams) -> Self {
        let skew = |raw: &[f32]| -> Vec<f32> {
            let (k, n) = (p.k, p.dim);
            (0..k * n * n).map(|idx| {
                let (kk, i, j) = (idx / (n * n), idx / n % n, idx % n);
                raw[kk * n * n + i * n + j] - raw[kk * n * n + j * n + i]
            }).collect()
        };
        Self { xi: skew(&p.xi), zeta: skew(&p.zeta), n: p.dim, k: p.k }
    }

    /// (B, w, v) for one row: B[k][j] = Σᵢ gᵢ ξₖᵢⱼ, w = B h, v = S w.
    fn rows_b(&self, g: &[f32], xi: &[f32]) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        (0..k * n).map(|idx| (0..n).map(|i| g[i] * xi[(idx / n) * n * n + i * n + idx % n]).sum()).collect()
    }

    fn forward(&self, ge: &[f32], gs: &[f32], a: &[f32], c: &[f32], rows: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            let (ge, gs) = (&ge[r * n..(r + 1) * n], &gs[r * n..(r + 1) * n]);
            let (a, c) = (&a[r * k * k..(r + 1) * k * k], &c[r * k * k..(r + 1) * k * k]);
            let (bs, be) = (self.rows_b(gs, &self.xi), self.rows_b(ge, &self.zeta));
            let w: Vec<f32> = (0..k).map(|p| (0..n).map(|j| bs[p * n + j] * ge[j]).sum()).collect();
            let w2: Vec<f32> = (0..k).map(|p| (0..n).map(|j| be[p * n + j] * gs[j]).sum()).collect();
            let v: Vec<f32> = (0..k).map(|p| (0..k).map(|q| (a[p * k + q] - a[q * k + p]) * w[q]).sum()).collect();
            let ctw: Vec<f32> = (0..k).map(|q| (0..k).map(|p| c[p * k + q] * w2[p]).sum()).collect();
            let v2: Vec<f32> = (0..k).map(|p| (0..k).map(|q| c[p * k + q] * ctw[q]).sum()).collect();
            for j in 0..n {
                out[r * n + j] = (0..k).map(|p| bs[p * n + j] * v[p] + be[p * n + j] * v2[p]).sum();
            }
        }
        out
    }

    #[expect(clippy::too_many_arguments, reason = "the assembly's inputs and the output adjoint")]
    fn backward(&self, ge: &[f32], gs: &[f32], a: &[f32], c: &[f32], xbar: &[f32], rows: usize) -> AssemblyGrad {
        let (n, k) = (self.n, self.k);
        let mut g = AssemblyGrad {
            grad_energy: vec![0.0; rows * n],
            grad_entropy: vec![0.0; rows * n],
            a: vec![0.0; rows * k * k],
            c: vec![0.0; rows * k * k],
            xi: vec![0.0; k * n * n],
            zeta: vec![0.0; k * n * n],
        };
        for r in 0..rows {
            let (ge, gs, o) = (&ge[r * n..(r + 1) * n], &gs[r * n..(r + 1) * n], &xbar[r * n..(r + 1) * n]);
            let (a, c) = (&a[r * k * k..(r + 1) * k * k], &c[r * k * k..(r + 1) * k * k]);
            let (bs, be) = (self.rows_b(gs, &self.xi), self.rows_b(ge, &self.zeta));
            let w: Vec<f32> = (0..k).map(|p| (0..n).map(|j| bs[p * n + j] * ge[j]).sum()).collect();
            let w2: Vec<f32> = (0..k).map(|p| (0..n).map(|j| be[p * n + j] * gs[j]).sum()).collect();
            let sk = |p: usize, q: usize| a[p * k + q] - a[q * k + p];
            let cc = |p: usize, q: usize| (0..k).map(|m| c[p * k + m] * c[q * k + m]).sum::<f32>();
            let v: Vec<f32> = (0..k).map(|p| (0..k).map(|q| sk(p, q) * w[q]).sum()).collect();
            let v2: Vec<f32> = (0..k).map(|p| (0..k).map(|q| cc(p, q) * w2[q]).sum()).collect();
            // ẋⱼ = Σₚ bsₚⱼ vₚ + beₚⱼ v2ₚ
            let vbar: Vec<f32> = (0..k).map(|p| (0..n).map(|j| o[j] * bs[p * n + j]).sum()).collect();
            let v2bar: Vec<f32> = (0..k).map(|p| (0..n).map(|j| o[j] * be[p * n + j]).sum()).collect();
            let mut bsbar: Vec<f32> = (0..k * n).map(|idx| o[idx % n] * v[idx / n]).collect();
            let mut bebar: Vec<f32> = (0..k * n).map(|idx| o[idx % n] * v2[idx / n]).collect();
            // v = (A − Aᵀ) w: w̄ = (A − Aᵀ)ᵀ v̄, Ā = v̄wᵀ − (v̄wᵀ)ᵀ.
            let wbar: Vec<f32> = (0..k).map(|q| (0..k).map(|p| sk(p, q) * vbar[p]).sum()).collect();
            for p in 0..k {
                for q in 0..k {
                    g.a[r * k * k + p * k + q] += vbar[p] * w[q] - vbar[q] * w[p];
                }
            }
            // v2 = CCᵀ w2: w̄2 = CCᵀ v̄2, C̄ = (v̄2 w2ᵀ + w2 v̄2ᵀ) C.
            let w2bar: Vec<f32> = (0..k).map(|q| (0..k).map(|p| cc(p, q) * v2bar[p]).sum()).collect();
            for p in 0..k {
                for m in 0..k {
                    g.c[r * k * k + p * k + m] += (0..k).map(|q| (v2bar[p] * w2[q] + w2[p] * v2bar[q]) * c[q * k + m]).sum::<f32>();
                }
            }
            // w = B_S ∇E, w2 = B_E ∇S.
            let (gbe, gbs) = (&mut g.grad_energy[r * n..(r + 1) * n], &mut g.grad_entropy[r * n..(r + 1) * n]);
            for p in 0..k {
                for j in 0..n {
                    bsbar[p * n + j] += wbar[p] * ge[j];
                    gbe[j] += wbar[p] * bs[p * n + j];
                    bebar[p * n + j] += w2bar[p] * gs[j];
                    gbs[j] += w2bar[p] * be[p * n + j];
                }
            }
            // B_S[p][j] = Σᵢ ∇Sᵢ ξₚᵢⱼ,  B_E[p][j] = Σᵢ ∇Eᵢ ζₚᵢⱼ.
            for p in 0..k {
                for i in 0..n {
                    for j in 0..n {
                        let idx = p * n * n + i * n + j;
                        gbs[i] += bsbar[p * n + j] * self.xi[idx];
                        g.xi[idx] += gs[i] * bsbar[p * n + j];
                        gbe[i] += bebar[p * n + j] * self.zeta[idx];
                        g.zeta[idx] += ge[i] * bebar[p * n + j];
                    }
                }
            }
        }
        g
    }
}

/// Regulariser terms of DESIGN.md §5 and their gradients, added to `grads`:
/// λ_φ‖φ‖² over [`ParamRole::Hyper`] tensors and λ_⊥ Σ(‖U_sᵀU_s − I‖² + ‖V_sᵀV_s − I‖²) over
/// each SVD layer's bases. Returns the penalty.
pub fn add_regularizers(params: &ModelParams, grads: &mut ModelParams, lambda_phi: f64, lambda_orth: f64) -> f64 {
    let mut total = 0.0;
    let (lp, lo) = (lambda_phi as f32, lambda_orth as f32);
    for ((p, role), (g, _)) in params.tensors().into_iter().zip(grads.tensors_mut()) {
        if role == ParamRole::Hyper {
            for (gv, pv) in g.iter_mut().zip(p.iter()) {
                *gv += 2.0 * lp * pv;
                total += f64::from(lp * pv * pv);
            }
        }
    }
    let mut orth = |p: &MlpParams, g: &mut MlpParams| {
        for (lp_, lg) in p.layers.iter().zip(&mut g.layers) {
            if lp_.svd_u.is_empty() {
                continue;
            }
            let r = lp_.config.effective_rank();
            for (basis, grad) in [(&lp_.svd_u, &mut lg.svd_u), (&lp_.svd_v, &mut lg.svd_v)] {
                let rows = basis.len() / r;
                // G = BᵀB − I;  ∂‖G‖²/∂B = 4 B G.
                let gram: Vec<f32> = (0..r * r)
                    .map(|idx| (0..rows).map(|m| basis[m * r + idx / r] * basis[m * r + idx % r]).sum::<f32>() - f32::from(u8::from(idx / r == idx % r)))
                    .collect();
                total += f64::from(lo * gram.iter().map(|v| v * v).sum::<f32>());
                for m in 0..rows {
                    for j in 0..r {
                        grad[m * r + j] += 4.0 * lo * (0..r).map(|q| basis[m * r + q] * gram[q * r + j]).sum::<f32>();
                    }
                }
            }
        }
    };
    match (params, grads) {
        (ModelParams::Hnn(p), ModelParams::Hnn(g)) => orth(p, g),
        (ModelParams::Separable { t, v }, ModelParams::Separable { t: gt, v: gv }) => {
            orth(t, gt);
            orth(v, gv);
        }
        (ModelParams::Generic(p), ModelParams::Generic(g)) => {
            orth(&p.energy, &mut g.energy);
            orth(&p.entropy, &mut g.entropy);
        }
        _ => unreachable!("gradients share the parameters' structure"),
    }
    total
}
