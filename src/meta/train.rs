//! Meta-training by auto-decoding (Algorithm 1 of the paper, first order; docs/protocol.md §5).
//!
//! ```text
//! for each outer iteration:
//!     B ← 10 random meta-train instances, 64 random (x, ẋ) samples each
//!     repeat N_in times:   z_B ← Adam_z(z_B, ∇_z L)          (network frozen)
//!     θ ← Adam_θ(θ, ∇_θ L)                                     (z_B fixed)
//! L = mean ‖f(x; z) − ẋ‖² + λ_z mean ‖z_B‖² + λ_φ ‖φ‖² + λ_⊥ Σ(‖UᵀU − I‖² + ‖VᵀV − I‖²)
//! ```
//!
//! Both learning rates follow a cosine decay to `lr_final` of their initial value.
//!
//! Every meta-train instance owns one latent (its own Adam state, so Adam touches only the
//! rows in the batch). Every `validate_every` iterations the validation instances are
//! adapted from the mean training latent and scored by their query derivative error; the
//! best checkpoint is kept. A NaN or infinite loss stops training and is reported as a
//! divergence, never hidden and never a crash. Gradients come from the CPU kernel
//! ([`crate::nn::cpu::loss`]); the result is deterministic for a seed.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{
    adapt::{AdaptConfig, adapt_latents},
    optim::{ParamsAdam, RowsAdam},
    task::TaskSet,
};
use crate::{
    data::stream_rng,
    nn::{
        LatentStats, Model, ModelConfig, TrainingRecord,
        cpu::{
            CpuModel, ModelParams,
            loss::{Batch, Objective, add_regularizers},
        },
    },
};

/// Hyper-parameters of meta-training (defaults: protocol v1, docs/protocol.md §5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaConfig {
    /// Outer iterations.
    pub iterations: usize,
    /// Instances per batch (10).
    pub batch_tasks: usize,
    /// Samples per instance per batch (64).
    pub points: usize,
    /// Inner latent steps per outer step, N_in (1).
    pub inner_steps: usize,
    /// Adam learning rate of the network (1e-3).
    pub lr_base: f64,
    /// Adam learning rate of the latents (1e-2).
    pub lr_latent: f64,
    /// λ_φ, hypernetwork weight penalty (1e-3).
    pub lambda_phi: f64,
    /// λ_z, latent penalty (1e-2).
    pub lambda_z: f64,
    /// λ_⊥, SVD basis orthogonality penalty (1e-2; our choice, the paper does not state it).
    pub lambda_orth: f64,
    /// Final learning rate as a fraction of the initial one: both learning rates follow a
    /// cosine from ×1 to ×`lr_final` over the run (0.01; our choice, the paper does not say).
    pub lr_final: f64,
    /// Validate (and checkpoint) every this many iterations.
    pub validate_every: usize,
    /// Test-time adaptation used for validation and evaluation.
    pub adapt: AdaptConfig,
    /// Seed of batch sampling.
    pub seed: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            iterations: 20_000,
            batch_tasks: 10,
            points: 64,
            inner_steps: 1,
            lr_base: 1e-3,
            lr_latent: 1e-2,
            lambda_phi: 1e-3,
            lambda_z: 1e-2,
            lambda_orth: 1e-2,
            lr_final: 0.01,
            validate_every: 1_000,
            adapt: AdaptConfig::default(),
            seed: 0,
        }
    }
}

impl MetaConfig {
    /// The cosine learning-rate factor at iteration `it` (1-based) of `iterations`.
    pub fn lr_factor(&self, it: usize) -> f64 {
        let progress = (it - 1) as f64 / self.iterations.max(2).saturating_sub(1) as f64;
        self.lr_final
            + (1.0 - self.lr_final) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// One point of the training history.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Outer iteration (1-based).
    pub iteration: usize,
    /// Mean training loss (fit term only) since the previous point.
    pub loss: f64,
    /// Validation relative derivative error at this point.
    pub validation: f64,
}

/// What meta-training produced.
#[derive(Debug)]
pub struct MetaOutcome<B: Backend> {
    /// The best checkpoint, with its latent statistics in `config.latents`.
    pub model: Model<B>,
    /// The meta-train latents at the best checkpoint, one per instance of
    /// [`TaskSet::meta_train`].
    pub latents: Vec<Vec<f32>>,
    /// Loss and validation history.
    pub history: Vec<HistoryPoint>,
    /// Iteration of the best checkpoint.
    pub best_iteration: usize,
    /// Best validation error.
    pub best_validation: f64,
    /// Why training stopped early, if it diverged.
    pub diverged: Option<String>,
}

/// Mean and per-component standard deviation of latents.
pub fn latent_stats(latents: &[Vec<f32>]) -> LatentStats {
    let (n, dz) = (latents.len(), latents.first().map_or(0, Vec::len));
    let mean: Vec<f64> = (0..dz)
        .map(|k| latents.iter().map(|z| f64::from(z[k])).sum::<f64>() / n as f64)
        .collect();
    let std = (0..dz)
        .map(|k| {
            (latents
                .iter()
                .map(|z| (f64::from(z[k]) - mean[k]).powi(2))
                .sum::<f64>()
                / n as f64)
                .sqrt()
        })
        .collect();
    LatentStats {
        mean,
        std,
        count: n,
    }
}

/// Relative derivative error ‖f − ẋ‖/‖ẋ‖ on the query trajectories of each instance, with
/// one latent per instance, averaged.
pub fn query_error(
    params: &ModelParams,
    config: &ModelConfig,
    tasks: &TaskSet<'_>,
    instances: &[usize],
    latents: &[Vec<f32>],
) -> f64 {
    let cpu = CpuModel::from_params(params, config);
    let mut total = 0.0;
    for (&i, z) in instances.iter().zip(latents) {
        let q = tasks.query_points(i);
        let zr: Vec<f32> = (0..q.len()).flat_map(|_| z.iter().copied()).collect();
        let mut f = vec![0.0; q.x.len()];
        cpu.field(&q.x, &zr, &mut f);
        let num: f64 = f
            .iter()
            .zip(&q.dx)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let den: f64 = q.dx.iter().map(|b| f64::from(*b).powi(2)).sum();
        total += (num / den).sqrt();
    }
    total / instances.len() as f64
}

/// Validation error: adapt every validation instance from `start`, then [`query_error`].
pub fn validation_error(
    params: &ModelParams,
    config: &ModelConfig,
    tasks: &TaskSet<'_>,
    start: &[f32],
    adapt: &AdaptConfig,
) -> f64 {
    let ids = tasks.validation();
    let shots: Vec<_> = ids.iter().map(|&i| tasks.shots(i, adapt.shots)).collect();
    let adapted = adapt_latents(params, &shots, start, adapt);
    query_error(params, config, tasks, &ids, &adapted.latents)
}

/// Runs Algorithm 1 on the meta-train instances of `tasks`, calling `progress(iteration,
/// loss)` after every outer step. The model is initialised (and returned) on backend `B`;
/// the training itself runs on the CPU kernel.
pub fn meta_train<B: Backend>(
    config: &ModelConfig,
    tasks: &TaskSet<'_>,
    cfg: &MetaConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, f64),
) -> MetaOutcome<B> {
    let started = std::time::Instant::now();
    let mut params = ModelParams::from_model(&config.init::<B>(device));
    let dz = config.d_latent;
    let ids = tasks.meta_train();
    let mut table = vec![0.0f32; ids.len() * dz];
    let (mut opt_params, mut opt_rows) = (ParamsAdam::default(), RowsAdam::new(ids.len(), dz));
    let mut rng = stream_rng("meta/batches", cfg.seed, 0);
    let mut history = Vec::new();
    let rows_of =
        |table: &[f32]| -> Vec<Vec<f32>> { table.chunks(dz).map(<[f32]>::to_vec).collect() };
    let (mut best, mut best_iteration) = (f64::INFINITY, 0);
    let (mut best_params, mut best_table) = (params.clone(), table.clone());
    let mut diverged = None;
    let (mut loss_sum, mut loss_count) = (0.0, 0usize);
    let lz = (2.0 * cfg.lambda_z / cfg.batch_tasks as f64) as f32;

    for it in 1..=cfg.iterations {
        let batch_ids: Vec<usize> =
            rand::seq::index::sample(&mut rng, ids.len(), cfg.batch_tasks.min(ids.len()))
                .into_vec();
        let instances: Vec<usize> = batch_ids.iter().map(|&b| ids[b]).collect();
        let points = tasks.batch(&instances, cfg.points, &mut rng);
        let batch = Batch {
            x: &points.x,
            dx: &points.dx,
            task: &points.task,
        };
        let objective = Objective::new(&params);
        let decay = cfg.lr_factor(it);
        // Inner steps: the batch's latents, network frozen.
        for _ in 0..cfg.inner_steps {
            let z: Vec<f32> = batch_ids
                .iter()
                .flat_map(|&b| table[b * dz..(b + 1) * dz].to_vec())
                .collect();
            let mut g = objective.loss_grad(batch, &z, false).latents;
            g.iter_mut().zip(&z).for_each(|(g, z)| *g += lz * z);
            opt_rows.step(&mut table, &batch_ids, &g, cfg.lr_latent * decay);
        }
        // Outer step: network, hypernetwork and bases, latents fixed.
        let z: Vec<f32> = batch_ids
            .iter()
            .flat_map(|&b| table[b * dz..(b + 1) * dz].to_vec())
            .collect();
        let out = objective.loss_grad(batch, &z, true);
        if !out.loss.is_finite() {
            diverged = Some(format!(
                "training loss became {} at iteration {it}",
                out.loss
            ));
            break;
        }
        let mut grads = out.params.expect("asked for parameter gradients");
        add_regularizers(&params, &mut grads, cfg.lambda_phi, cfg.lambda_orth);
        drop(objective);
        opt_params.step(&mut params, &grads, cfg.lr_base * decay, |_| true);
        if !params.all_finite() {
            diverged = Some(format!("parameters became non-finite at iteration {it}"));
            break;
        }
        loss_sum += out.loss;
        loss_count += 1;
        progress(it, out.loss);

        if it % cfg.validate_every == 0 || it == cfg.iterations {
            let stats = latent_stats(&rows_of(&table));
            let start: Vec<f32> = stats.mean.iter().map(|v| *v as f32).collect();
            let val = validation_error(&params, config, tasks, &start, &cfg.adapt);
            history.push(HistoryPoint {
                iteration: it,
                loss: loss_sum / loss_count.max(1) as f64,
                validation: val,
            });
            (loss_sum, loss_count) = (0.0, 0);
            if val < best {
                (best, best_iteration) = (val, it);
                (best_params, best_table) = (params.clone(), table.clone());
            }
        }
    }
    let latents = rows_of(&best_table);
    let mut config = config.clone();
    config.latents = latent_stats(&latents);
    config.training = Some(TrainingRecord {
        method: config.modulation.name(),
        iterations: history.last().map_or(0, |h| h.iteration),
        data_seed: tasks.datasets[0].spec.seed,
        lambda_z: cfg.lambda_z,
        lambda_phi: cfg.lambda_phi,
        adapt_steps: cfg.adapt.steps,
        adapt_lr: cfg.adapt.lr,
        adapt_solver: cfg.adapt.solver,
        best_iteration,
        best_validation: best,
        seconds: started.elapsed().as_secs_f64(),
    });
    MetaOutcome {
        model: best_params.to_model(&config, device),
        latents,
        history,
        best_iteration,
        best_validation: best,
        diverged,
    }
}
