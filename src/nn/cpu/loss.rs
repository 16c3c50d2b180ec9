//! The training objective on the CPU kernel: the derivative-matching loss
//! L = mean ‖f(x; θ, z) − ẋ‖² of a whole model with its gradient with respect to every
//! parameter and every latent, plus the regularisers of docs/protocol.md §5.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::integrate::gather_rows;

use super::{
    backprop::{Runs, Tape},
    fold::dot,
    generic::CpuGeneric,
    mlp::CpuMlp,
    params::{MlpParams, ModelParams, ParamRole},
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
    /// ∂L/∂z per run of the tile's [`Runs`], `[runs, d_z]`.
    zbar: Vec<f32>,
    /// f per row (`[rows, n]`; kept for [`Cotangent::Unit`] passes only).
    field: Vec<f32>,
}

/// Where the reverse pass of [`Objective::tile`] starts: the cotangent ẋ̄ of the field.
#[derive(Clone, Copy)]
enum Cotangent<'a> {
    /// The loss's: ẋ̄ = scale·(f − ẋ), accumulating ‖f − ẋ‖².
    Loss { dx: &'a [f32], scale: f32 },
    /// The unit vector eⱼ on every row: the adjoint's latent part is row j of ∂f/∂z.
    Unit(usize),
}

/// The objective at one set of parameters, their networks laid out for the kernel when first
/// evaluated.
pub struct Objective<'a> {
    params: &'a ModelParams,
    /// Laid out on first use: an FW model's training path folds per task and never
    /// evaluates the unfolded networks (laying them out cost a quarter of its step).
    nets: OnceLock<Nets>,
}

enum Nets {
    Hnn(CpuMlp),
    Separable(CpuMlp, CpuMlp),
    Generic(Box<CpuGeneric>),
}

impl<'a> Objective<'a> {
    /// The objective at `params` (nothing is laid out yet).
    pub fn new(params: &'a ModelParams) -> Self {
        Self {
            params,
            nets: OnceLock::new(),
        }
    }

    /// The networks in kernel layout, laid out on the first call.
    fn nets(&self) -> &Nets {
        self.nets.get_or_init(|| match self.params {
            ModelParams::Hnn(h) => Nets::Hnn(CpuMlp::from_params(h)),
            ModelParams::Separable { t, v } => {
                Nets::Separable(CpuMlp::from_params(t), CpuMlp::from_params(v))
            }
            ModelParams::Generic(g) => Nets::Generic(Box::new(CpuGeneric::new(g))),
        })
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
        assert!(
            batch.x.len() == rows * n && batch.dx.len() == rows * n,
            "Objective: batch of {rows} rows of width {n} expected"
        );
        if self.params.is_full_weight() {
            return self.loss_grad_folded(batch, latents, want_params);
        }
        let mut z = Vec::with_capacity(rows * dz);
        for &t in batch.task {
            z.extend_from_slice(&latents[t * dz..(t + 1) * dz]);
        }
        let scale = 2.0 / (rows * n) as f32;
        let tile = TRAIN_TILE;
        // Each tile's runs of rows sharing a task (and so a latent).
        let runs: Vec<Runs> = batch.task.chunks(tile).map(Runs::of_tasks).collect();
        let partials: Vec<Partial> = (0..rows.div_ceil(tile))
            .into_par_iter()
            .map(|t| {
                let r0 = t * tile;
                let r1 = (r0 + tile).min(rows);
                self.tile(
                    &batch.x[r0 * n..r1 * n],
                    &z[r0 * dz..r1 * dz],
                    &runs[t],
                    r1 - r0,
                    Cotangent::Loss {
                        dx: &batch.dx[r0 * n..r1 * n],
                        scale,
                    },
                    want_params,
                )
            })
            .collect();
        let mut sq = 0.0;
        let mut grads: Option<ModelParams> = None;
        let mut zbar = vec![0.0; latents.len()];
        for (t, (p, runs)) in partials.into_iter().zip(&runs).enumerate() {
            sq += p.sq;
            if let Some(g) = p.grads {
                match &mut grads {
                    Some(acc) => acc.add_assign(&g),
                    None => grads = Some(g),
                }
            }
            // Each run is one task's rows: its z̄ goes to that task's latent.
            let r0 = t * tile;
            for (run, zr) in runs.iter().zip(p.zbar.chunks_exact(dz.max(1))) {
                let task = batch.task[r0 + run.start];
                zbar[task * dz..(task + 1) * dz]
                    .iter_mut()
                    .zip(zr)
                    .for_each(|(a, b)| *a += b);
            }
        }
        LossGrad {
            loss: sq / (rows * n) as f64,
            params: grads,
            latents: zbar,
        }
    }

    /// [`Objective::loss_grad`] of an FW model: the latent folded into the weights once per
    /// latent (task), each task's rows differentiated as an unmodulated network, the folded
    /// gradients carried back to (W, ΔW, b, A_s, z) ([`super::fold`]). Tasks run in
    /// parallel; their partial results are added in task order (deterministic).
    fn loss_grad_folded(&self, batch: Batch<'_>, latents: &[f32], want_params: bool) -> LossGrad {
        let (n, dz) = (self.dim(), self.d_latent());
        let rows = batch.task.len();
        let mut members = vec![Vec::new(); latents.len() / dz.max(1)];
        for (r, &t) in batch.task.iter().enumerate() {
            members[t].push(r);
        }
        // Per task, in parallel: the folded network's loss and gradient (small: the
        // unmodulated network's) and the task's own ∂L/∂z. Then, in task order, the
        // parameters' chain rule into one accumulator, when asked for.
        let parts: Vec<Option<(f64, ModelParams)>> = members
            .par_iter()
            .enumerate()
            .map(|(t, own)| {
                if own.is_empty() {
                    return None;
                }
                let folded = self.params.fold_fw(&latents[t * dz..(t + 1) * dz]);
                let (x, dx) = (gather_rows(batch.x, own, n), gather_rows(batch.dx, own, n));
                let task = vec![0; own.len()];
                let out = Objective::new(&folded).loss_grad(
                    Batch {
                        x: &x,
                        dx: &dx,
                        task: &task,
                    },
                    &[],
                    true,
                );
                // The task's mean over its rows, as a share of the batch's mean.
                let share = own.len() as f32 / rows as f32;
                let mut g = out.params.expect("asked for parameter gradients");
                for (tensor, _) in g.tensors_mut() {
                    tensor.iter_mut().for_each(|v| *v *= share);
                }
                Some((out.loss * (own.len() * n) as f64, g))
            })
            .collect();
        let mut zbar = vec![0.0; latents.len()];
        zbar.par_chunks_mut(dz.max(1))
            .zip(&parts)
            .for_each(|(zbar, part)| {
                if let Some((_, g)) = part {
                    self.params.add_fw_latent_grad(g, zbar);
                }
            });
        let sq: f64 = parts.iter().flatten().map(|(s, _)| s).sum();
        let grads = want_params.then(|| {
            let tasks: Vec<(&[f32], &ModelParams)> = parts
                .iter()
                .enumerate()
                .filter_map(|(t, part)| Some((&latents[t * dz..(t + 1) * dz], &part.as_ref()?.1)))
                .collect();
            let mut full = self.params.zeros_like();
            self.params.add_unfolded_fw(&tasks, &mut full);
            full
        });
        LossGrad {
            loss: sq / (rows * n).max(1) as f64,
            params: grads,
            latents: zbar,
        }
    }

    /// f(x; z) per row, each row with its own latent (`z` `[rows·d_z]`).
    pub fn field(&self, x: &[f32], z: &[f32]) -> Vec<f32> {
        self.unit_pass(x, z, 0)
            .into_iter()
            .flat_map(|p| p.field)
            .collect()
    }

    /// One pass over the tiles from the cotangent eⱼ (see [`Cotangent::Unit`]).
    fn unit_pass(&self, x: &[f32], z: &[f32], j: usize) -> Vec<Partial> {
        let (n, dz) = (self.dim(), self.d_latent());
        let rows = x.len() / n.max(1);
        (0..rows.div_ceil(TRAIN_TILE))
            .into_par_iter()
            .map(|t| {
                let (r0, r1) = (t * TRAIN_TILE, ((t + 1) * TRAIN_TILE).min(rows));
                let (x, z) = (&x[r0 * n..r1 * n], &z[r0 * dz..r1 * dz]);
                self.tile(
                    x,
                    z,
                    &Runs::singles(r1 - r0),
                    r1 - r0,
                    Cotangent::Unit(j),
                    false,
                )
            })
            .collect()
    }

    /// f(x; z) and the per-row Jacobian ∂f/∂z, each row with its own latent: one reverse
    /// pass of the objective's adjoint per output component j, started from ẋ̄ = eⱼ, whose
    /// latent part is row j of ∂f/∂z (the training loss's own derivative code, so every
    /// architecture has it, GENERIC included).
    ///
    /// # Shapes
    /// - x: `[rows·n]`, z: `[rows·d_z]`
    /// - returns f `[rows·n]` and J `[rows·n·d_z]` (row r, output i, latent k at
    ///   r·n·d_z + i·d_z + k)
    pub fn field_latent_jacobian(&self, x: &[f32], z: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (n, dz) = (self.dim(), self.d_latent());
        let rows = x.len() / n.max(1);
        let (mut f, mut jac) = (Vec::new(), vec![0.0; rows * n * dz]);
        for j in 0..n {
            let mut r = 0;
            for p in self.unit_pass(x, z, j) {
                for row in p.zbar.chunks_exact(dz.max(1)) {
                    jac[r * n * dz + j * dz..r * n * dz + (j + 1) * dz].copy_from_slice(row);
                    r += 1;
                }
                if j == 0 {
                    f.extend(p.field);
                }
            }
        }
        (f, jac)
    }

    /// One tile of `rows` rows (latents per row, in `runs` of rows sharing one): the loss
    /// terms, ∂L/∂z per run and, when `want_params`, ∂L/∂θ.
    fn tile(
        &self,
        x: &[f32],
        z: &[f32],
        runs: &Runs,
        rows: usize,
        cotangent: Cotangent<'_>,
        want_params: bool,
    ) -> Partial {
        let n = self.dim();
        let dz = self.d_latent();
        let mut grads = want_params.then(|| self.params.zeros_like());
        let mut zbar = vec![0.0; runs.len() * dz];
        let mut sq = 0.0f64;
        let mut field = Vec::new();
        // f → ẋ̄: for the loss 2(f − ẋ)/(rows·n), accumulating the squared error.
        let mut residual = |f: &[f32]| -> Vec<f32> {
            match cotangent {
                // The training hot path: no copy of f.
                Cotangent::Loss { dx, scale } => f
                    .iter()
                    .zip(dx)
                    .map(|(f, t)| {
                        let e = f - t;
                        sq += f64::from(e) * f64::from(e);
                        scale * e
                    })
                    .collect(),
                Cotangent::Unit(j) => {
                    field = f.to_vec();
                    (0..f.len())
                        .map(|i| f32::from(u8::from(i % n == j)))
                        .collect()
                }
            }
        };
        match (self.nets(), self.params) {
            (Nets::Hnn(h), ModelParams::Hnn(hp)) => {
                let mut g = vec![0.0; rows * n];
                let tape = h.record(x, z, runs, rows, &mut g);
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
                let tape_t = t.record(&p, z, runs, rows, &mut gt);
                let tape_v = v.record(&q, z, runs, rows, &mut gv);
                let f: Vec<f32> = (0..rows)
                    .flat_map(|r| {
                        gt[r * dof..(r + 1) * dof]
                            .iter()
                            .copied()
                            .chain(gv[r * dof..(r + 1) * dof].iter().map(|v| -v))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let xbar = residual(&f);
                let gbar_t: Vec<f32> = xbar.chunks(n).flat_map(|r| r[..dof].to_vec()).collect();
                let gbar_v: Vec<f32> = xbar
                    .chunks(n)
                    .flat_map(|r| r[dof..].iter().map(|v| -v).collect::<Vec<_>>())
                    .collect();
                let (gt_params, gv_params) = match grads.as_mut() {
                    Some(ModelParams::Separable { t, v }) => (Some(t), Some(v)),
                    _ => (None, None),
                };
                adjoint_into(t, tp, &tape_t, z, &gbar_t, gt_params, &mut zbar);
                adjoint_into(v, vp, &tape_v, z, &gbar_v, gv_params, &mut zbar);
            }
            (Nets::Generic(net), ModelParams::Generic(gp)) => {
                let (e, s) = (&net.energy, &net.entropy);
                let (mut ge, mut gs) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                let tape_e = e.record(x, z, runs, rows, &mut ge);
                let tape_s = s.record(x, z, runs, rows, &mut gs);
                let a_tape = net.a_net.forward_tape(x, rows);
                let c_tape = net.c_net.forward_tape(x, rows);
                let (a_out, c_out) = (
                    a_tape.last().expect("output"),
                    c_tape.last().expect("output"),
                );
                let f = net.assembly.forward(&ge, &gs, a_out, c_out, rows);
                let xbar = residual(&f);
                let back = net.assembly.backward(&ge, &gs, a_out, c_out, &xbar, rows);
                let (ge_p, gs_p) = match grads.as_mut() {
                    Some(ModelParams::Generic(g)) => {
                        net.a_net.backward(&a_tape, &back.a, rows, &mut g.a_net);
                        net.c_net.backward(&c_tape, &back.c, rows, &mut g.c_net);
                        // ξ = Ξ − Ξᵀ ⇒ Ξ̄ = ξ̄ − ξ̄ᵀ (per k), likewise for ζ.
                        add_skew_grad(&mut g.xi, &back.xi, gp.k, n);
                        add_skew_grad(&mut g.zeta, &back.zeta, gp.k, n);
                        let g = &mut **g;
                        (Some(&mut g.energy), Some(&mut g.entropy))
                    }
                    _ => (None, None),
                };
                adjoint_into(
                    e,
                    &gp.energy,
                    &tape_e,
                    z,
                    &back.grad_energy,
                    ge_p,
                    &mut zbar,
                );
                adjoint_into(
                    s,
                    &gp.entropy,
                    &tape_s,
                    z,
                    &back.grad_entropy,
                    gs_p,
                    &mut zbar,
                );
            }
            _ => unreachable!("nets are built from these params"),
        }
        Partial {
            sq,
            grads,
            zbar,
            field,
        }
    }
}

/// Adjoint into `grads` (when given; otherwise latent gradients only).
fn adjoint_into(
    net: &CpuMlp,
    params: &MlpParams,
    tape: &Tape,
    z: &[f32],
    gbar: &[f32],
    grads: Option<&mut MlpParams>,
    zbar: &mut [f32],
) {
    net.adjoint(params, tape, z, gbar, grads, zbar, None);
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

/// Regulariser terms of docs/protocol.md §5 and their gradients, added to `grads`:
/// λ_φ‖φ‖² over [`ParamRole::Hyper`] tensors and λ_⊥ Σ(‖U_sᵀU_s − I‖² + ‖V_sᵀV_s − I‖²) over
/// each SVD layer's bases. Returns the penalty.
pub fn add_regularizers(
    params: &ModelParams,
    grads: &mut ModelParams,
    lambda_phi: f64,
    lambda_orth: f64,
) -> f64 {
    let mut total = 0.0;
    let (lp, lo) = (lambda_phi as f32, lambda_orth as f32);
    for ((p, role), (g, _)) in params.tensors().into_iter().zip(grads.tensors_mut()) {
        if role == ParamRole::Hyper {
            g.iter_mut()
                .zip(p.iter())
                .for_each(|(gv, pv)| *gv += 2.0 * lp * pv);
            total += f64::from(lp * dot(p, p));
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
                    .map(|idx| {
                        (0..rows)
                            .map(|m| basis[m * r + idx / r] * basis[m * r + idx % r])
                            .sum::<f32>()
                            - f32::from(u8::from(idx / r == idx % r))
                    })
                    .collect();
                total += f64::from(lo * gram.iter().map(|v| v * v).sum::<f32>());
                for m in 0..rows {
                    for j in 0..r {
                        grad[m * r + j] += 4.0
                            * lo
                            * (0..r)
                                .map(|q| basis[m * r + q] * gram[q * r + j])
                                .sum::<f32>();
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
