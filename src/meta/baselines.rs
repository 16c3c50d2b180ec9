//! Baselines on the same data interface (docs/protocol.md §4, §5): a network trained from scratch
//! on the shots, first-order MAML, ANIL and Reptile. All use the unmodulated network of
//! the family's architecture and adapt *weights* instead of a latent.
//!
//! | baseline | meta-training | test time |
//! |---|---|---|
//! | Scratch | none | fresh network, `scratch_steps` Adam steps on the shots |
//! | MAML (first order) | θ′ = θ − α∇L_support(θ) (k steps); θ ← Adam(θ, ∇L_query(θ′)) | k SGD steps on the shots |
//! | ANIL | as MAML, the inner loop adapts only the readout | k SGD steps on the readout |
//! | Reptile | θ′ = k SGD steps on the task; θ ← θ + ε(θ′ − θ), ε annealed 1 → 0 | k SGD steps on the shots |
//!
//! Fair to the modulations (docs/protocol.md §5): the same outer-iteration budget, the same
//! validation-based checkpoint selection ([`baseline_validation_error`]), and the inner
//! learning rate and step count chosen on validation from a stated set ([`tune_baseline`]).
//!
//! A NaN or infinite loss or weight stops meta-training; the outcome reports the divergence.

use std::fmt;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{
    optim::ParamsAdam,
    task::{Points, TaskSet},
};
use crate::{
    data::stream_rng,
    nn::{
        ModelConfig, Modulation, TrainingRecord,
        cpu::{
            ModelParams, ParamRole,
            loss::{Batch, Objective},
        },
    },
};

/// An optimisation-based (or no) meta-learning baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// A fresh network trained on the shots alone.
    Scratch,
    /// First-order MAML (Finn et al. 2017).
    Maml,
    /// Almost No Inner Loop (Raghu et al. 2020).
    Anil,
    /// Reptile (Nichol et al. 2018).
    Reptile,
}

impl Baseline {
    /// All baselines.
    pub const ALL: [Baseline; 4] = [
        Baseline::Scratch,
        Baseline::Maml,
        Baseline::Anil,
        Baseline::Reptile,
    ];

    /// Name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Scratch => "scratch",
            Baseline::Maml => "maml",
            Baseline::Anil => "anil",
            Baseline::Reptile => "reptile",
        }
    }

    /// Which tensors the inner loop adapts.
    fn adapts(self, role: ParamRole) -> bool {
        match self {
            Baseline::Anil => role == ParamRole::Readout,
            _ => true,
        }
    }
}

impl fmt::Display for Baseline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Hyper-parameters of the baselines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// Meta-training iterations (MAML, ANIL, Reptile): the modulations' budget.
    pub iterations: usize,
    /// Iterations between validations; the best validated weights are kept, as for the
    /// modulations (docs/protocol.md §5).
    pub validate_every: usize,
    /// Candidate (inner SGD learning rate, inner steps) pairs of MAML, ANIL and Reptile,
    /// each tried for [`BaselineConfig::pilot_iterations`]; the best on validation trains
    /// for the full budget ([`tune_baseline`]). Empty: `inner_lr`, `inner_steps` as given.
    pub tune: Vec<(f64, usize)>,
    /// Iterations of each tuning pilot.
    pub pilot_iterations: usize,
    /// Tasks per meta-batch (10, as Algorithm 1).
    pub batch_tasks: usize,
    /// Support points per task in meta-training (the test shot count).
    pub support: usize,
    /// Query points per task (64, as Algorithm 1's batch).
    pub query: usize,
    /// Inner SGD steps k, in training and at test time (5).
    pub inner_steps: usize,
    /// Inner SGD learning rate α (1e-2).
    pub inner_lr: f64,
    /// Outer Adam learning rate (MAML, ANIL) (1e-3).
    pub outer_lr: f64,
    /// Initial Reptile outer step ε, annealed linearly to 0 (1.0).
    pub reptile_step: f64,
    /// Adam steps of Scratch on the shots (1000).
    pub scratch_steps: usize,
    /// Adam learning rate of Scratch (1e-3).
    pub scratch_lr: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            iterations: 20_000,
            validate_every: 1_000,
            tune: [5, 20]
                .into_iter()
                .flat_map(|k| [1e-3, 1e-2, 1e-1].map(|lr| (lr, k)))
                .collect(),
            pilot_iterations: 1_000,
            batch_tasks: 10,
            support: 10,
            query: 64,
            inner_steps: 5,
            inner_lr: 1e-2,
            outer_lr: 1e-3,
            reptile_step: 1.0,
            scratch_steps: 1_000,
            scratch_lr: 1e-3,
            seed: 0,
        }
    }
}

/// What meta-training a baseline produced.
#[derive(Clone, Debug)]
pub struct BaselineOutcome {
    /// The unmodulated network's config.
    pub config: ModelConfig,
    /// The meta-learned initialisation (untrained for Scratch).
    pub params: ModelParams,
    /// Mean query loss every 100 iterations.
    pub history: Vec<(usize, f64)>,
    /// Why meta-training stopped early, if it diverged.
    pub diverged: Option<String>,
}

/// The unmodulated counterpart of a family's model config.
pub fn baseline_config(config: &ModelConfig) -> ModelConfig {
    ModelConfig {
        modulation: Modulation::None,
        ..config.clone()
    }
}

fn loss_grad(
    params: &ModelParams,
    points: &Points,
    dz: usize,
    want: bool,
) -> (f64, Option<ModelParams>) {
    let zeros = vec![0.0; dz * (points.task.iter().max().map_or(0, |m| m + 1))];
    let out = Objective::new(params).loss_grad(
        Batch {
            x: &points.x,
            dx: &points.dx,
            task: &points.task,
        },
        &zeros,
        want,
    );
    (out.loss, out.params)
}

/// params ← params + a·g on the tensors `baseline` adapts.
fn sgd(params: &mut ModelParams, g: &ModelParams, a: f64, baseline: Baseline) {
    for ((p, role), (g, _)) in params.tensors_mut().into_iter().zip(g.tensors()) {
        if baseline.adapts(role) {
            p.iter_mut().zip(g).for_each(|(p, g)| *p += a as f32 * g);
        }
    }
}

/// k inner SGD steps on `points` (the adaptation of MAML, ANIL and Reptile at test time).
pub fn inner_adapt(
    params: &ModelParams,
    points: &Points,
    baseline: Baseline,
    cfg: &BaselineConfig,
    dz: usize,
) -> ModelParams {
    let mut adapted = params.clone();
    for _ in 0..cfg.inner_steps {
        let (_, g) = loss_grad(&adapted, points, dz, true);
        sgd(
            &mut adapted,
            &g.expect("gradients"),
            -cfg.inner_lr,
            baseline,
        );
    }
    adapted
}

/// A fresh network of `config` trained on `points` with Adam (Scratch).
pub fn scratch<B: Backend>(
    config: &ModelConfig,
    points: &Points,
    cfg: &BaselineConfig,
    seed: u64,
    device: &B::Device,
) -> ModelParams {
    let mut params = ModelParams::from_model(&config.clone().with_seed(seed).init::<B>(device));
    let mut adam = ParamsAdam::default();
    for _ in 0..cfg.scratch_steps {
        let (loss, g) = loss_grad(&params, points, config.d_latent, true);
        if !loss.is_finite() {
            break;
        }
        adam.step(&mut params, &g.expect("gradients"), cfg.scratch_lr, |_| {
            true
        });
    }
    params
}

/// Adapts a baseline to one test instance's shots.
pub fn adapt_baseline<B: Backend>(
    outcome: &BaselineOutcome,
    baseline: Baseline,
    shots: &Points,
    cfg: &BaselineConfig,
    instance: usize,
    device: &B::Device,
) -> ModelParams {
    match baseline {
        Baseline::Scratch => scratch::<B>(
            &outcome.config,
            shots,
            cfg,
            cfg.seed * 1_000 + instance as u64,
            device,
        ),
        _ => inner_adapt(
            &outcome.params,
            shots,
            baseline,
            cfg,
            outcome.config.d_latent,
        ),
    }
}

/// Validation error of a meta-learned initialisation: each validation instance's shots
/// adapted by the inner loop, then the relative derivative error on its held-out
/// trajectories ([`super::query_error`]), averaged: the modulations' checkpoint criterion.
pub fn baseline_validation_error(
    params: &ModelParams,
    config: &ModelConfig,
    baseline: Baseline,
    tasks: &TaskSet<'_>,
    cfg: &BaselineConfig,
) -> f64 {
    let ids = tasks.validation();
    let zeros = vec![0.0f32; config.d_latent];
    let total: f64 = ids
        .iter()
        .map(|&i| {
            let adapted = inner_adapt(
                params,
                &tasks.shots(i, cfg.support),
                baseline,
                cfg,
                config.d_latent,
            );
            super::query_error(&adapted, config, tasks, &[i], std::slice::from_ref(&zeros))
        })
        .sum();
    total / ids.len().max(1) as f64
}

/// What [`tune_baseline`] tried: (inner lr, inner steps, best validation error) per
/// candidate, and the chosen pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// Every candidate with its pilot's best validation error (∞ when it diverged first).
    pub tried: Vec<(f64, usize, f64)>,
    /// The chosen (inner lr, inner steps).
    pub chosen: (f64, usize),
}

/// Chooses MAML's, ANIL's or Reptile's inner learning rate and step count: a pilot of
/// [`BaselineConfig::pilot_iterations`] for each pair of [`BaselineConfig::tune`], the
/// lowest validation error wins. `None` for Scratch or an empty candidate set.
pub fn tune_baseline<B: Backend>(
    config: &ModelConfig,
    baseline: Baseline,
    tasks: &TaskSet<'_>,
    cfg: &BaselineConfig,
    device: &B::Device,
) -> Option<Tuning> {
    if baseline == Baseline::Scratch || cfg.tune.is_empty() {
        return None;
    }
    let tried: Vec<(f64, usize, f64)> = cfg
        .tune
        .iter()
        .map(|&(lr, steps)| {
            let pilot = BaselineConfig {
                inner_lr: lr,
                inner_steps: steps,
                iterations: cfg.pilot_iterations,
                validate_every: cfg.pilot_iterations,
                tune: Vec::new(),
                ..cfg.clone()
            };
            let out = train_baseline::<B>(config, baseline, tasks, &pilot, device, &mut |_, _| {});
            let val = out
                .config
                .training
                .as_ref()
                .map_or(f64::INFINITY, |t| t.best_validation);
            (lr, steps, if val.is_finite() { val } else { f64::INFINITY })
        })
        .collect();
    let best = tried
        .iter()
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .expect("candidates");
    Some(Tuning {
        chosen: (best.0, best.1),
        tried,
    })
}

/// Meta-trains a baseline on the meta-train instances (Scratch: returns the untrained
/// network), validating every [`BaselineConfig::validate_every`] iterations and returning
/// the best validated weights. `progress(iteration, loss)` is called after every outer step.
pub fn train_baseline<B: Backend>(
    config: &ModelConfig,
    baseline: Baseline,
    tasks: &TaskSet<'_>,
    cfg: &BaselineConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, f64),
) -> BaselineOutcome {
    let started = std::time::Instant::now();
    let mut config = baseline_config(config);
    let mut params = ModelParams::from_model(&config.init::<B>(device));
    let dz = config.d_latent;
    let mut history = Vec::new();
    let mut diverged = None;
    let record = |config: &mut ModelConfig, iterations: usize, best: (usize, f64)| {
        config.training = Some(TrainingRecord {
            method: baseline.name().into(),
            iterations,
            data_seed: tasks.datasets[0].spec.seed,
            lambda_z: 0.0,
            lambda_phi: 0.0,
            adapt_steps: if baseline == Baseline::Scratch {
                cfg.scratch_steps
            } else {
                cfg.inner_steps
            },
            adapt_lr: if baseline == Baseline::Scratch {
                cfg.scratch_lr
            } else {
                cfg.inner_lr
            },
            // Baselines adapt their weights by SGD (`adapt_steps`, `adapt_lr`), not a latent.
            adapt_solver: crate::nn::AdaptSolver::default(),
            best_iteration: best.0,
            best_validation: best.1,
            seconds: started.elapsed().as_secs_f64(),
        });
    };
    if baseline == Baseline::Scratch {
        record(&mut config, 0, (0, f64::NAN));
        return BaselineOutcome {
            config,
            params,
            history,
            diverged,
        };
    }
    let ids = tasks.meta_train();
    let mut rng = stream_rng(&format!("baselines/{baseline}"), cfg.seed, 0);
    let mut adam = ParamsAdam::default();
    let mut window = (0.0, 0usize);
    let (mut best, mut best_params) = ((0usize, f64::INFINITY), params.clone());
    for it in 1..=cfg.iterations {
        let batch: Vec<usize> =
            rand::seq::index::sample(&mut rng, ids.len(), cfg.batch_tasks.min(ids.len()))
                .into_vec();
        let mut outer = params.zeros_like();
        let mut query_loss = 0.0;
        for &b in &batch {
            let task = ids[b];
            match baseline {
                Baseline::Maml | Baseline::Anil => {
                    let support = tasks.batch(&[task], cfg.support, &mut rng);
                    let query = tasks.batch(&[task], cfg.query, &mut rng);
                    let adapted = inner_adapt(&params, &support, baseline, cfg, dz);
                    let (loss, g) = loss_grad(&adapted, &query, dz, true);
                    query_loss += loss;
                    outer.add_assign(&g.expect("gradients"));
                }
                Baseline::Reptile => {
                    let mut adapted = params.clone();
                    for _ in 0..cfg.inner_steps {
                        let points = tasks.batch(&[task], cfg.query, &mut rng);
                        let (loss, g) = loss_grad(&adapted, &points, dz, true);
                        query_loss += loss / cfg.inner_steps as f64;
                        sgd(
                            &mut adapted,
                            &g.expect("gradients"),
                            -cfg.inner_lr,
                            baseline,
                        );
                    }
                    // Accumulate θ′ − θ.
                    for ((o, _), ((a, _), (p, _))) in outer
                        .tensors_mut()
                        .into_iter()
                        .zip(adapted.tensors().into_iter().zip(params.tensors()))
                    {
                        o.iter_mut()
                            .zip(a.iter().zip(p))
                            .for_each(|(o, (a, p))| *o += a - p);
                    }
                }
                Baseline::Scratch => unreachable!("returned above"),
            }
        }
        let scale = 1.0 / batch.len() as f64;
        query_loss *= scale;
        if !query_loss.is_finite() {
            diverged = Some(format!(
                "{baseline}: query loss became {query_loss} at iteration {it}"
            ));
            break;
        }
        match baseline {
            Baseline::Reptile => {
                let eps = cfg.reptile_step * (1.0 - (it - 1) as f64 / cfg.iterations as f64);
                sgd(&mut params, &outer, eps * scale, Baseline::Reptile);
            }
            _ => {
                for (o, _) in outer.tensors_mut() {
                    o.iter_mut().for_each(|v| *v *= scale as f32);
                }
                adam.step(&mut params, &outer, cfg.outer_lr, |_| true);
            }
        }
        if !params.all_finite() {
            diverged = Some(format!(
                "{baseline}: weights became non-finite at iteration {it}"
            ));
            break;
        }
        progress(it, query_loss);
        window = (window.0 + query_loss, window.1 + 1);
        if it % 100 == 0 {
            history.push((it, window.0 / window.1 as f64));
            window = (0.0, 0);
        }
        if it % cfg.validate_every.max(1) == 0 || it == cfg.iterations {
            let val = baseline_validation_error(&params, &config, baseline, tasks, cfg);
            if val < best.1 {
                (best, best_params) = ((it, val), params.clone());
            }
        }
    }
    record(&mut config, history.last().map_or(0, |h| h.0), best);
    BaselineOutcome {
        config,
        // The best validated weights; the initialisation if no validation came before a
        // divergence (the cell then reports the divergence).
        params: best_params,
        history,
        diverged,
    }
}
