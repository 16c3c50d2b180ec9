//! A dedicated f32 CPU inference kernel for trained models: the path the Bevy runtime steps.
//!
//! [`CpuModel::from_model`] copies a burn [`Model`] into a layout made for row tiles:
//! every layer's forward map and its transpose are one GEMM each (the `gemm` crate's
//! AVX-512/AVX2 microkernels, chosen at run time) over rows augmented with the latent
//! terms (see [`mlp`]), tanh and its derivative are vectorised rational functions
//! (`pulp`), and tiles of [`TILE`] rows run in parallel on rayon with the weights resident
//! in cache. It computes exactly what the burn implementation computes (tests compare the
//! two), at several times its speed; see BENCHMARKS.md.
//!
//! ```
//! use burn::backend::Flex;
//! use noether::nn::{ModelConfig, Modulation, cpu::CpuModel};
//! use noether::systems::Family;
//! let model = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 }).init::<Flex>(&Default::default());
//! let cpu = CpuModel::from_model(&model);
//! let (x, z) = (vec![0.5f32, 0.0, 1.0, -0.3], vec![0.0f32; 20]); // two rows, two latents
//! let mut xdot = vec![0.0f32; 4];
//! cpu.field(&x, &z, &mut xdot);
//! ```

mod backprop;
pub mod encoder;
mod fold;
mod gemm;
mod generic;
pub(crate) use generic::skew;
mod jacobian;
pub mod loss;
pub mod mlp;
pub mod params;
mod scratch;
mod simd;

pub use encoder::{Encoder, EncoderRecord, EncoderSpec, Guess};
pub use jacobian::FieldJacobian;
pub use mlp::CpuMlp;
pub use params::{DenseParams, GenericParams, LayerParams, MlpParams, ModelParams, ParamRole};

use burn::tensor::backend::Backend;
use rayon::prelude::*;

use self::{
    gemm::{MatRef, matmul},
    generic::CpuGeneric,
    mlp::TileOut,
};
use crate::{
    integrate::{Flow, MetriplecticRows, NewtonFlow, RowFlow, SplitFlow, gather_rows},
    nn::{Model, ModelConfig},
};

/// One plain GEMM `[rows, 100]·[100, 100]` with the kernel's tiling and threads: the
/// reference rate `noether bench network` prints beside the network's.
pub fn bench_gemm(a: &[f32], w: &[f32], rows: usize) {
    let mut out = vec![0.0; rows * 100];
    out.par_chunks_mut(TILE * 100)
        .enumerate()
        .for_each(|(t, o)| {
            let n = o.len() / 100;
            matmul(
                o,
                n,
                100,
                100,
                MatRef::rows(&a[t * TILE * 100..(t * TILE + n) * 100], n, 100),
                MatRef::rows(w, 100, 100),
                false,
            );
        });
}

/// FLOPs per row of forward + ∇ₓ of the unmodulated 2 → 3×100 tanh → 1 network (GEMM
/// work only): the count every benchmark's GFLOP/s uses.
pub const BASE_FLOPS_PER_ROW: f64 =
    2.0 * ((2 * 100 + 2 * 100 * 100 + 100) + (2 * 100 * 100 + 100 * 2)) as f64;

/// Most rows per tile: large enough to amortise each GEMM call's fixed cost (a few µs of
/// packing and dispatch), small enough that a tile's activations (4 × 1024 × 110 floats
/// ≈ 1.8 MB) stay in L2/L3.
pub const TILE: usize = 1024;

/// Fewest rows per tile when a batch is split across threads.
const MIN_TILE: usize = 64;

/// L, M, ∇E, ∇S of a batch of states of a GENERIC model (row-major, f32).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenericRows {
    /// L per row, `[B, n, n]`.
    pub l: Vec<f32>,
    /// M per row, `[B, n, n]`.
    pub m: Vec<f32>,
    /// ∇E per row, `[B, n]`.
    pub grad_energy: Vec<f32>,
    /// ∇S per row, `[B, n]`.
    pub grad_entropy: Vec<f32>,
}

#[derive(Clone, Debug)]
enum CpuNet {
    Hnn(CpuMlp),
    Separable { t: CpuMlp, v: CpuMlp },
    Generic(Box<CpuGeneric>),
}

/// A trained model in the CPU kernel's layout. See the module docs.
#[derive(Clone, Debug)]
pub struct CpuModel {
    net: CpuNet,
    /// The host parameters the layout was built from (the reverse passes of
    /// [`CpuModel::field_jacobian`] need them); `None` once a latent is folded in.
    params: Option<std::sync::Arc<ModelParams>>,
    config: ModelConfig,
    dim: usize,
    /// Latent width the evaluation expects per row (0 once a latent is folded in).
    row_latent: usize,
}

/// Runs `f(x_tile, z_tile, rows, out_tile)` over tiles of [`TILE`] rows in parallel.
fn par_tiles(
    x: &[f32],
    z: &[f32],
    n_in: usize,
    dz: usize,
    out: &mut [f32],
    n_out: usize,
    f: impl Fn(&[f32], &[f32], usize, &mut [f32]) + Sync,
) {
    let rows = x.len() / n_in;
    assert!(
        x.len() == rows * n_in && out.len() == rows * n_out,
        "CpuModel: x has {} values, out {}, for {rows} rows",
        x.len(),
        out.len()
    );
    assert!(
        z.len() == rows * dz,
        "CpuModel: {} latent values for {rows} rows of width {dz}",
        z.len()
    );
    // At least two tiles per thread for load balance, at most TILE rows per tile.
    let threads = rayon::current_num_threads().max(1);
    let per_tile = rows.div_ceil(2 * threads).clamp(MIN_TILE, TILE);
    let tile = |t: usize, o: &mut [f32]| {
        let r0 = t * per_tile;
        let n = o.len() / n_out;
        f(
            &x[r0 * n_in..(r0 + n) * n_in],
            &z[r0 * dz..(r0 + n) * dz],
            n,
            o,
        );
    };
    if rows <= per_tile {
        tile(0, out);
    } else {
        out.par_chunks_mut(per_tile * n_out)
            .enumerate()
            .for_each(|(t, o)| tile(t, o));
    }
}

impl CpuModel {
    /// Copies `model`'s weights into the CPU layout.
    pub fn from_model<B: Backend>(model: &Model<B>) -> Self {
        Self::from_params(&ModelParams::from_model(model), &model.config)
    }

    /// Lays out host parameters of a model of `config`.
    pub fn from_params(params: &ModelParams, config: &ModelConfig) -> Self {
        let net = match params {
            ModelParams::Hnn(h) => CpuNet::Hnn(CpuMlp::from_params(h)),
            ModelParams::Separable { t, v } => CpuNet::Separable {
                t: CpuMlp::from_params(t),
                v: CpuMlp::from_params(v),
            },
            ModelParams::Generic(g) => CpuNet::Generic(Box::new(CpuGeneric::new(g))),
        };
        let dim = config.family.dim();
        Self {
            net,
            params: Some(std::sync::Arc::new(params.clone())),
            config: config.clone(),
            dim,
            row_latent: config.d_latent,
        }
    }

    /// The model's config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// State dimension n.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Latent values expected per row: d_z, or 0 for a folded model.
    pub fn row_latent(&self) -> usize {
        self.row_latent
    }

    /// The same model with one latent folded into unmodulated weights: the homogeneous fast
    /// path for a batch whose rows all share `z`. Evaluate it with an empty latent slice.
    pub fn fold(&self, z: &[f32]) -> CpuModel {
        let net = match &self.net {
            CpuNet::Hnn(h) => CpuNet::Hnn(h.fold(z)),
            CpuNet::Separable { t, v } => CpuNet::Separable {
                t: t.fold(z),
                v: v.fold(z),
            },
            CpuNet::Generic(g) => CpuNet::Generic(Box::new(CpuGeneric {
                energy: g.energy.fold(z),
                entropy: g.entropy.fold(z),
                ..(**g).clone()
            })),
        };
        Self {
            net,
            params: None,
            row_latent: 0,
            ..self.clone()
        }
    }

    /// ẋ = f(x; z) for a batch, each row with its own latent.
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`, out: `[B·n]` (row-major)
    pub fn field(&self, x: &[f32], z: &[f32], out: &mut [f32]) {
        let (n, dz) = (self.dim, self.row_latent);
        match &self.net {
            CpuNet::Hnn(h) => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                let mut g = vec![0.0; rows * n];
                h.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: None,
                        grad: Some(&mut g),
                    },
                );
                j_grad(&g, out, n / 2);
            }),
            CpuNet::Separable { t, v } => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                let dof = n / 2;
                let (gt, gv) = separable_grads(t, v, x, z, rows, dof);
                j_separable(&gt, &gv, out, dof);
            }),
            CpuNet::Generic(g) => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                g.field_tile(x, z, rows, out)
            }),
        }
    }

    /// Energy H or E per row.
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`, out: `[B]`
    pub fn energy(&self, x: &[f32], z: &[f32], out: &mut [f32]) {
        let (n, dz) = (self.dim, self.row_latent);
        match &self.net {
            CpuNet::Hnn(h) => par_tiles(x, z, n, dz, out, 1, |x, z, rows, out| {
                h.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: Some(out),
                        grad: None,
                    },
                );
            }),
            CpuNet::Separable { t, v } => par_tiles(x, z, n, dz, out, 1, |x, z, rows, out| {
                let (q, p) = split_rows(x, rows, n / 2);
                let mut vv = vec![0.0; rows];
                t.eval_tile(
                    &p,
                    z,
                    rows,
                    TileOut {
                        value: Some(out),
                        grad: None,
                    },
                );
                v.eval_tile(
                    &q,
                    z,
                    rows,
                    TileOut {
                        value: Some(&mut vv),
                        grad: None,
                    },
                );
                out.iter_mut().zip(&vv).for_each(|(a, b)| *a += b);
            }),
            CpuNet::Generic(g) => par_tiles(x, z, n, dz, out, 1, |x, z, rows, out| {
                g.energy.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: Some(out),
                        grad: None,
                    },
                );
            }),
        }
    }

    /// Entropy per row (GENERIC models; returns false and leaves `out` for others).
    pub fn entropy(&self, x: &[f32], z: &[f32], out: &mut [f32]) -> bool {
        let CpuNet::Generic(g) = &self.net else {
            return false;
        };
        par_tiles(
            x,
            z,
            self.dim,
            self.row_latent,
            out,
            1,
            |x, z, rows, out| {
                g.entropy.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: Some(out),
                        grad: None,
                    },
                );
            },
        );
        true
    }

    /// ∇ₓH per row (Hamiltonian models; GENERIC models give ∇E).
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`, out: `[B·n]`
    pub fn energy_grad(&self, x: &[f32], z: &[f32], out: &mut [f32]) {
        let (n, dz) = (self.dim, self.row_latent);
        match &self.net {
            CpuNet::Hnn(h) => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                h.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: None,
                        grad: Some(out),
                    },
                )
            }),
            CpuNet::Generic(g) => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                g.energy.eval_tile(
                    x,
                    z,
                    rows,
                    TileOut {
                        value: None,
                        grad: Some(out),
                    },
                )
            }),
            CpuNet::Separable { t, v } => par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
                let dof = n / 2;
                let (gt, gv) = separable_grads(t, v, x, z, rows, dof);
                for r in 0..rows {
                    out[r * n..r * n + dof].copy_from_slice(&gv[r * dof..(r + 1) * dof]);
                    out[r * n + dof..(r + 1) * n].copy_from_slice(&gt[r * dof..(r + 1) * dof]);
                }
            }),
        }
    }

    /// ∇S per row (GENERIC models; `None` otherwise).
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`, out: `[B·n]`
    pub fn entropy_grad(&self, x: &[f32], z: &[f32], out: &mut [f32]) -> Option<()> {
        let CpuNet::Generic(g) = &self.net else {
            return None;
        };
        let (n, dz) = (self.dim, self.row_latent);
        par_tiles(x, z, n, dz, out, n, |x, z, rows, out| {
            g.entropy.eval_tile(
                x,
                z,
                rows,
                TileOut {
                    value: None,
                    grad: Some(out),
                },
            )
        });
        Some(())
    }

    /// (∇E, ∇S) per row of a GENERIC model, both in one pass over the tiles (`None` for
    /// other models).
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`; each gradient `[B·n]`
    pub fn generic_gradients(&self, x: &[f32], z: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
        let CpuNet::Generic(g) = &self.net else {
            return None;
        };
        let (n, dz) = (self.dim, self.row_latent);
        let mut both = vec![0.0; 2 * x.len()];
        par_tiles(x, z, n, dz, &mut both, 2 * n, |x, z, rows, out| {
            let (ge, gs) = g.gradients(x, z, rows);
            for r in 0..rows {
                out[2 * r * n..(2 * r + 1) * n].copy_from_slice(&ge[r * n..(r + 1) * n]);
                out[(2 * r + 1) * n..(2 * r + 2) * n].copy_from_slice(&gs[r * n..(r + 1) * n]);
            }
        });
        let (mut ge, mut gs) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        for pair in both.chunks_exact(2 * n) {
            ge.extend_from_slice(&pair[..n]);
            gs.extend_from_slice(&pair[n..]);
        }
        Some((ge, gs))
    }

    /// q̇ = ∇ₚT(p; z) for a separable model (`None` otherwise).
    ///
    /// # Shapes
    /// - p: `[B·dof]`, z: `[B·row_latent]`, out: `[B·dof]`
    pub fn velocity(&self, p: &[f32], z: &[f32], out: &mut [f32]) -> Option<()> {
        let CpuNet::Separable { t, .. } = &self.net else {
            return None;
        };
        let dof = self.dim / 2;
        par_tiles(p, z, dof, self.row_latent, out, dof, |p, z, rows, out| {
            t.eval_tile(
                p,
                z,
                rows,
                TileOut {
                    value: None,
                    grad: Some(out),
                },
            )
        });
        Some(())
    }

    /// ṗ = −∇_qV(q; z) for a separable model (`None` otherwise).
    ///
    /// # Shapes
    /// - q: `[B·dof]`, z: `[B·row_latent]`, out: `[B·dof]`
    pub fn force(&self, q: &[f32], z: &[f32], out: &mut [f32]) -> Option<()> {
        let CpuNet::Separable { v, .. } = &self.net else {
            return None;
        };
        let dof = self.dim / 2;
        par_tiles(q, z, dof, self.row_latent, out, dof, |q, z, rows, out| {
            v.eval_tile(
                q,
                z,
                rows,
                TileOut {
                    value: None,
                    grad: Some(&mut *out),
                },
            );
            out.iter_mut().for_each(|f| *f = -*f);
        });
        Some(())
    }

    /// L, M, ∇E, ∇S at a batch of states (GENERIC models only).
    ///
    /// # Shapes
    /// - x: `[B·n]`, z: `[B·row_latent]`
    pub fn generic_structure(&self, x: &[f32], z: &[f32]) -> Option<GenericRows> {
        let CpuNet::Generic(g) = &self.net else {
            return None;
        };
        let (n, dz) = (self.dim, self.row_latent);
        let rows = x.len() / n;
        let mut out = GenericRows::default();
        for start in (0..rows).step_by(TILE) {
            let end = (start + TILE).min(rows);
            let (xs, m) = (&x[start * n..end * n], end - start);
            let (ge, gs) = g.gradients(xs, &z[start * dz..end * dz], m);
            let (l, mm) = g.assembly.matrices(
                &ge,
                &gs,
                &g.a_net.forward(xs, m),
                &g.c_net.forward(xs, m),
                m,
            );
            out.l.extend(l);
            out.m.extend(mm);
            out.grad_energy.extend(ge);
            out.grad_entropy.extend(gs);
        }
        Some(out)
    }

    /// Whether H = T(p) + V(q).
    pub fn is_separable(&self) -> bool {
        matches!(self.net, CpuNet::Separable { .. })
    }

    /// Whether the model is GENERIC.
    pub fn is_generic(&self) -> bool {
        matches!(self.net, CpuNet::Generic(_))
    }
}

/// A batch of learned systems as a flow on f32 rows: the model with one latent per row (or
/// a folded model and no latents), so every integrator of [`crate::integrate`] steps it —
/// RK4 and implicit midpoint ([`Flow`], [`NewtonFlow`]) for any model, Störmer–Verlet and
/// Yoshida ([`SplitFlow`]) for separable ones, the discrete gradient
/// ([`MetriplecticRows`]) for GENERIC ones.
pub struct CpuFlow<'a> {
    /// The model.
    pub model: &'a CpuModel,
    /// Latents `[B·row_latent]`.
    pub latents: &'a [f32],
}

impl Flow<Vec<f32>> for CpuFlow<'_> {
    fn rate(&self, x: &Vec<f32>) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        self.model.field(x, self.latents, &mut out);
        out
    }
}

impl RowFlow for CpuFlow<'_> {
    fn row_dim(&self) -> usize {
        self.model.dim()
    }

    fn rate_rows(&self, rows: &[usize], x: &[f32]) -> Vec<f32> {
        let dz = self.model.row_latent();
        let mut out = vec![0.0; x.len()];
        if rows.len() * dz == self.latents.len() {
            self.model.field(x, self.latents, &mut out);
        } else {
            self.model
                .field(x, &gather_rows(self.latents, rows, dz), &mut out);
        }
        out
    }
}

impl NewtonFlow<Vec<f32>> for CpuFlow<'_> {
    /// Per-row Newton matrices from central differences of the batched field (2n batched
    /// evaluations), each n×n system solved by LU.
    fn solve_linearized(&self, y: &Vec<f32>, h: f64, r: &Vec<f32>) -> Option<Vec<f32>> {
        let n = self.model.dim();
        let rows = y.len() / n;
        let eps = 1e-3f32;
        let mut jac = vec![0.0f32; rows * n * n];
        for j in 0..n {
            let (mut plus, mut minus) = (y.clone(), y.clone());
            for row in 0..rows {
                plus[row * n + j] += eps;
                minus[row * n + j] -= eps;
            }
            let (fp, fm) = (self.rate(&plus), self.rate(&minus));
            for row in 0..rows {
                for i in 0..n {
                    jac[row * n * n + i * n + j] =
                        (fp[row * n + i] - fm[row * n + i]) / (2.0 * eps);
                }
            }
        }
        let mut out = vec![0.0f32; y.len()];
        for row in 0..rows {
            let m = nalgebra::DMatrix::from_fn(n, n, |i, j| {
                f64::from(u8::from(i == j)) - 0.5 * h * f64::from(jac[row * n * n + i * n + j])
            });
            let b = nalgebra::DVector::from_fn(n, |i, _| f64::from(r[row * n + i]));
            let d = m.lu().solve(&b)?;
            for i in 0..n {
                out[row * n + i] = d[i] as f32;
            }
        }
        Some(out)
    }
}

impl SplitFlow<Vec<f32>> for CpuFlow<'_> {
    /// q ← q + h ∇ₚT(p; z).
    ///
    /// # Panics
    /// For a model that is not separable.
    fn drift(&self, x: &Vec<f32>, h: f64) -> Vec<f32> {
        let dof = self.model.dim() / 2;
        let (_, p) = split_rows(x, x.len() / (2 * dof), dof);
        let mut v = vec![0.0; p.len()];
        self.model
            .velocity(&p, self.latents, &mut v)
            .expect("drift needs a separable model");
        let mut out = x.clone();
        for (row, vr) in out.chunks_exact_mut(2 * dof).zip(v.chunks_exact(dof)) {
            row[..dof]
                .iter_mut()
                .zip(vr)
                .for_each(|(q, v)| *q += h as f32 * v);
        }
        out
    }

    /// p ← p − h ∇_qV(q; z).
    ///
    /// # Panics
    /// For a model that is not separable.
    fn kick(&self, x: &Vec<f32>, h: f64) -> Vec<f32> {
        let dof = self.model.dim() / 2;
        let (q, _) = split_rows(x, x.len() / (2 * dof), dof);
        let mut f = vec![0.0; q.len()];
        self.model
            .force(&q, self.latents, &mut f)
            .expect("kick needs a separable model");
        let mut out = x.clone();
        for (row, fr) in out.chunks_exact_mut(2 * dof).zip(f.chunks_exact(dof)) {
            row[dof..]
                .iter_mut()
                .zip(fr)
                .for_each(|(p, f)| *p += h as f32 * f);
        }
        out
    }
}

impl MetriplecticRows for CpuFlow<'_> {
    fn dim(&self) -> usize {
        self.model.dim()
    }

    /// # Panics
    /// For a model that is not GENERIC.
    fn gradients(&self, rows: &[usize], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let dz = self.model.row_latent();
        let gathered;
        let latents = if rows.len() * dz == self.latents.len() {
            self.latents
        } else {
            gathered = gather_rows(self.latents, rows, dz);
            &gathered
        };
        self.model
            .generic_gradients(x, latents)
            .expect("the discrete gradient needs a GENERIC model")
    }

    /// # Panics
    /// For a model that is not GENERIC.
    fn assemble(&self, _rows: &[usize], x: &[f32], ge: &[f32], gs: &[f32]) -> Vec<f32> {
        let CpuNet::Generic(g) = &self.model.net else {
            panic!("assemble needs a GENERIC model")
        };
        // A and C are functions of x alone (not of the latent).
        g.assemble(x, ge, gs, x.len() / self.model.dim())
    }
}

/// ẋ = J g = (g_p, −g_q) row by row.
fn j_grad(g: &[f32], out: &mut [f32], dof: usize) {
    let n = 2 * dof;
    for (gr, or) in g.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        or[..dof].copy_from_slice(&gr[dof..]);
        for i in 0..dof {
            or[dof + i] = -gr[i];
        }
    }
}

/// ẋ = (∇ₚT, −∇_qV) row by row, from the two halves' `[rows·dof]` gradients.
fn j_separable(gt: &[f32], gv: &[f32], out: &mut [f32], dof: usize) {
    for ((t, v), o) in gt
        .chunks_exact(dof)
        .zip(gv.chunks_exact(dof))
        .zip(out.chunks_exact_mut(2 * dof))
    {
        o[..dof].copy_from_slice(t);
        for (o, v) in o[dof..].iter_mut().zip(v) {
            *o = -v;
        }
    }
}

/// Splits rows (q, p) into two contiguous `[rows, dof]` blocks.
/// ∇ₚT(p) and ∇_qV(q) of a tile of a separable model, each `[rows·dof]`.
fn separable_grads(
    t: &CpuMlp,
    v: &CpuMlp,
    x: &[f32],
    z: &[f32],
    rows: usize,
    dof: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (q, p) = split_rows(x, rows, dof);
    let (mut gt, mut gv) = (vec![0.0; rows * dof], vec![0.0; rows * dof]);
    for (net, input, grad) in [(t, &p, &mut gt), (v, &q, &mut gv)] {
        net.eval_tile(
            input,
            z,
            rows,
            TileOut {
                value: None,
                grad: Some(grad),
            },
        );
    }
    (gt, gv)
}

fn split_rows(x: &[f32], rows: usize, dof: usize) -> (Vec<f32>, Vec<f32>) {
    let mut q = Vec::with_capacity(rows * dof);
    let mut p = Vec::with_capacity(rows * dof);
    for row in x.chunks_exact(2 * dof).take(rows) {
        q.extend_from_slice(&row[..dof]);
        p.extend_from_slice(&row[dof..]);
    }
    (q, p)
}
