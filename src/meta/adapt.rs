//! Test-time adaptation: fit latent codes to shots with the network frozen (docs/protocol.md §5).

use serde::{Deserialize, Serialize};

use super::{optim::AdamState, task::Points};
pub use crate::nn::AdaptSolver;
use crate::nn::cpu::{
    ModelParams,
    loss::{Batch, Objective},
};

/// Where the latent code starts before adaptation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentStart {
    /// The mean of the meta-training latents (protocol v1).
    #[default]
    Mean,
    /// Zero.
    Zero,
}

/// Test-time adaptation settings (docs/protocol.md §5, protocol v2: 100 Adam steps at lr 1e-2
/// from the mean latent, then Gauss–Newton to the loss's floor; λ_z as in training. Protocol
/// v1 and the paper: the Adam steps alone).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptConfig {
    /// Adam steps, and the cap of the Gauss–Newton steps that follow them.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Shots per test instance.
    pub shots: usize,
    /// Initial latent.
    pub start: LatentStart,
    /// The solver (default Gauss–Newton; settings written before it existed: Adam).
    #[serde(default)]
    pub solver: AdaptSolver,
}

impl AdaptConfig {
    /// The adaptation a trained model was validated with (its [`TrainingRecord`]), for
    /// `shots` shots; protocol defaults for an untrained model.
    ///
    /// [`TrainingRecord`]: crate::nn::TrainingRecord
    pub fn for_model(config: &crate::nn::ModelConfig, shots: usize) -> Self {
        let base = Self {
            shots,
            ..Self::default()
        };
        match &config.training {
            Some(t) => Self {
                steps: t.adapt_steps,
                lr: t.adapt_lr,
                lambda_z: t.lambda_z,
                solver: t.adapt_solver,
                ..base
            },
            None => base,
        }
    }
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 1e-2,
            lambda_z: 1e-2,
            shots: 10,
            start: LatentStart::Mean,
            solver: AdaptSolver::GaussNewton,
        }
    }
}

/// What adaptation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapted {
    /// One latent per task, `[d_z]` each.
    pub latents: Vec<Vec<f32>>,
    /// Shot loss (fit term) before the first step.
    pub initial_loss: f64,
    /// Shot loss (fit term) after the last step.
    pub final_loss: f64,
}

/// All `tasks` as one batch whose rows are tagged by task.
pub fn concat(tasks: &[Points]) -> Points {
    let mut all = Points::default();
    for (t, p) in tasks.iter().enumerate() {
        all.x.extend_from_slice(&p.x);
        all.dx.extend_from_slice(&p.dx);
        all.task.extend(std::iter::repeat_n(t, p.len()));
    }
    all
}

/// Adapts one latent per task to its shots, the network frozen, minimising
/// mean ‖f(x; z) − ẋ‖² + λ_z mean_t ‖z_t‖². All tasks are adapted in one batch: each task's
/// loss depends only on its own latent, so this equals adapting them one by one.
///
/// - [`AdaptSolver::Adam`]: Adam is element-wise, so one batched call per step serves every
///   task (up to the scale of the mean).
/// - [`AdaptSolver::GaussNewton`]: the same Adam steps, then, per task t with N shots of
///   width n,
///   Φₜ(z) = ‖r(z)‖²/(N n) + λ_z ‖z‖² with r = f(x; z) − ẋ and J = ∂r/∂z exact; the step
///   solves (A + μ diag A) Δ = −∇Φₜ with A = 2JᵀJ/(N n) + 2λ_z I, is kept when Φₜ falls
///   (μ ← μ/3) and retried with μ ← 5μ otherwise; a task stops once an accepted step with
///   μ ≤ 10⁻² (close to a Gauss–Newton step) lowers Φₜ by less than 10⁻⁶ Φₜ, or μ passes
///   10¹⁰ (no descent left).
pub fn adapt_latents(
    params: &ModelParams,
    tasks: &[Points],
    start: &[f32],
    cfg: &AdaptConfig,
) -> Adapted {
    let dz = start.len();
    let all = concat(tasks);
    let batch = Batch {
        x: &all.x,
        dx: &all.dx,
        task: &all.task,
    };
    let objective = Objective::new(params);
    let mut z: Vec<f32> = (0..tasks.len())
        .flat_map(|_| start.iter().copied())
        .collect();
    let initial_loss = objective.loss_grad(batch, &z, false).loss;
    // Adam first: from the mean latent the shot loss is not convex, and Gauss–Newton
    // alone can settle in a nearer, worse basin (measured: one pendulum instance of ten at
    // ε_traj 1.15 against Adam's 0.16); Adam's steps choose the basin, Gauss–Newton then
    // reaches its floor.
    let mut adam = AdamState::default();
    let scale = (2.0 * cfg.lambda_z / tasks.len().max(1) as f64) as f32;
    for _ in 0..cfg.steps {
        let mut g = objective.loss_grad(batch, &z, false).latents;
        g.iter_mut().zip(&z).for_each(|(g, z)| *g += scale * z);
        adam.update(&mut z, &g, cfg.lr);
    }
    if cfg.solver == AdaptSolver::GaussNewton {
        gauss_newton(&objective, &all, tasks.len(), &mut z, cfg);
    }
    let final_loss = objective.loss_grad(batch, &z, false).loss;
    Adapted {
        latents: z.chunks(dz.max(1)).map(<[f32]>::to_vec).collect(),
        initial_loss,
        final_loss,
    }
}

/// Levenberg–Marquardt on every task's Φₜ at once (see [`adapt_latents`]): `z` `[T·d_z]`
/// is updated in place.
fn gauss_newton(
    objective: &Objective<'_>,
    all: &Points,
    tasks: usize,
    z: &mut [f32],
    cfg: &AdaptConfig,
) {
    let dz = z.len() / tasks.max(1);
    let rows = all.len();
    let n = all.x.len() / rows.max(1);
    let lambda = cfg.lambda_z;
    let per_row = |z: &[f32]| -> Vec<f32> {
        all.task
            .iter()
            .flat_map(|&t| z[t * dz..(t + 1) * dz].iter().copied())
            .collect()
    };
    // Φₜ per task from the field at the shots.
    let losses = |f: &[f32], z: &[f32]| -> Vec<f64> {
        let (mut sq, mut count) = (vec![0.0f64; tasks], vec![0usize; tasks]);
        for (r, &t) in all.task.iter().enumerate() {
            let row = r * n..(r + 1) * n;
            for (fv, dv) in f[row.clone()].iter().zip(&all.dx[row]) {
                let e = f64::from(fv - dv);
                sq[t] += e * e;
            }
            count[t] += n;
        }
        (0..tasks)
            .map(|t| {
                let zz: f64 = z[t * dz..(t + 1) * dz]
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum();
                sq[t] / count[t].max(1) as f64 + lambda * zz
            })
            .collect()
    };
    let mut mu = vec![1e-3f64; tasks];
    let mut active = vec![true; tasks];
    for _ in 0..cfg.steps {
        if !active.contains(&true) {
            break;
        }
        let (f, jac) = objective.field_latent_jacobian(&all.x, &per_row(z));
        let now = losses(&f, z);
        // Normal equations per task: A = 2JᵀJ/(N n) + 2λ I, g = 2Jᵀr/(N n) + 2λ z.
        let mut a = vec![0.0f64; tasks * dz * dz];
        let mut g = vec![0.0f64; tasks * dz];
        let mut count = vec![0usize; tasks];
        for (r, &t) in all.task.iter().enumerate() {
            count[t] += n;
            for i in 0..n {
                let e = f64::from(f[r * n + i] - all.dx[r * n + i]);
                let row = &jac[(r * n + i) * dz..(r * n + i + 1) * dz];
                for k in 0..dz {
                    g[t * dz + k] += f64::from(row[k]) * e;
                    for l in 0..dz {
                        a[t * dz * dz + k * dz + l] += f64::from(row[k]) * f64::from(row[l]);
                    }
                }
            }
        }
        let mut trial = z.to_vec();
        for t in (0..tasks).filter(|&t| active[t]) {
            let c = 2.0 / count[t].max(1) as f64;
            let m = nalgebra::DMatrix::from_fn(dz, dz, |k, l| {
                let v = c * a[t * dz * dz + k * dz + l] + if k == l { 2.0 * lambda } else { 0.0 };
                if k == l { v * (1.0 + mu[t]) } else { v }
            });
            let rhs = nalgebra::DVector::from_fn(dz, |k, _| {
                -(c * g[t * dz + k] + 2.0 * lambda * f64::from(z[t * dz + k]))
            });
            match m.lu().solve(&rhs) {
                Some(step) => {
                    for k in 0..dz {
                        trial[t * dz + k] = (f64::from(z[t * dz + k]) + step[k]) as f32;
                    }
                }
                None => mu[t] *= 5.0,
            }
        }
        let then = losses(&objective.field(&all.x, &per_row(&trial)), &trial);
        for t in 0..tasks {
            if !active[t] {
                continue;
            }
            if then[t] < now[t] {
                z[t * dz..(t + 1) * dz].copy_from_slice(&trial[t * dz..(t + 1) * dz]);
                // A small gain counts as the floor only for a step close to Gauss–Newton's
                // (μ small): a heavily damped step is short by construction.
                if now[t] - then[t] <= 1e-6 * now[t] && mu[t] <= 1e-2 {
                    active[t] = false;
                }
                mu[t] /= 3.0;
            } else {
                mu[t] *= 5.0;
                if mu[t] > 1e10 {
                    active[t] = false;
                }
            }
        }
    }
}
