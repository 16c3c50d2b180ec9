//! The experiment grid of `noether reproduce`: methods, profiles, and one cell
//! (family × method × seed) trained and evaluated end to end.

use std::{fmt, str::FromStr};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use super::{
    adapt::{AdaptConfig, LatentStart, adapt_latents},
    baselines::{Baseline, BaselineConfig, Tuning, adapt_baseline, train_baseline, tune_baseline},
    eval::{EvalReport, Stat, evaluate},
    task::{PROTOCOL, TaskSet},
    train::{MetaConfig, meta_train},
};
use crate::{
    nn::{
        Model, ModelConfig, Modulation,
        cpu::{CpuModel, ModelParams},
    },
    systems::Family,
};

/// A row of the paper's tables: a latent modulation or a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Meta-learned latent modulation (Algorithm 1).
    Modulated(Modulation),
    /// A weight-adapting baseline.
    Baseline(Baseline),
}

impl Method {
    /// The methods of the paper's tables for `family` (protocol v1 ranks: MR(5), SVD(5),
    /// SVD(3) for dno).
    pub fn paper_grid(family: Family) -> Vec<Method> {
        let svd = if family == Family::Dno { 3 } else { 5 };
        let mut out: Vec<Method> = [
            Modulation::Shift,
            Modulation::Fw,
            Modulation::RO,
            Modulation::Mr { rank: 5 },
            Modulation::Svd { rank: svd },
        ]
        .into_iter()
        .map(Method::Modulated)
        .collect();
        out.extend(Baseline::ALL.map(Method::Baseline));
        out
    }

    /// Name in file names, tables and on the command line.
    pub fn name(self) -> String {
        match self {
            Method::Modulated(m) => m.name(),
            Method::Baseline(b) => b.name().into(),
        }
    }

    /// The label of the paper's tables (`SVD(5)`, `MAML`, …).
    pub fn label(self) -> String {
        match self {
            Method::Modulated(Modulation::None) => "None".into(),
            Method::Modulated(Modulation::Shift) => "Shift".into(),
            Method::Modulated(Modulation::Fw) => "FW".into(),
            Method::Modulated(Modulation::Mr { rank: 1 }) => "RO".into(),
            Method::Modulated(Modulation::Mr { rank }) => format!("MR({rank})"),
            Method::Modulated(Modulation::Svd { rank }) => format!("SVD({rank})"),
            Method::Baseline(Baseline::Scratch) => "Scratch".into(),
            Method::Baseline(Baseline::Maml) => "MAML".into(),
            Method::Baseline(Baseline::Anil) => "ANIL".into(),
            Method::Baseline(Baseline::Reptile) => "Reptile".into(),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if let Some(b) = Baseline::ALL.into_iter().find(|b| b.name() == t) {
            return Ok(Method::Baseline(b));
        }
        t.parse::<Modulation>()
            .map(Method::Modulated)
            .map_err(|_| format!("unknown method `{s}`; expected shift, fw, ro, mr<r>, svd<r>, scratch, maml, anil or reptile"))
    }
}

/// How long `noether reproduce` trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Short runs for a smoke test of the whole grid (mass_spring and pendulum in under 15
    /// minutes on 2 cores).
    #[default]
    Quick,
    /// The full protocol: 20 000 outer iterations, 3 seeds.
    Paper,
}

impl Profile {
    /// Name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Paper => "paper",
        }
    }

    /// Seeds of the grid.
    pub fn seeds(self) -> Vec<u64> {
        match self {
            Profile::Quick => vec![0],
            Profile::Paper => vec![0, 1, 2],
        }
    }

    /// Algorithm 1 settings.
    pub fn meta(self, seed: u64) -> MetaConfig {
        let (iterations, validate_every) = match self {
            Profile::Quick => (2_500, 500),
            Profile::Paper => (20_000, 1_000),
        };
        MetaConfig {
            iterations,
            validate_every,
            seed,
            ..MetaConfig::default()
        }
    }

    /// [`Profile::meta`] with its outer iterations overridden when `iterations` is given
    /// (smoke tests), validation then at least once.
    pub fn meta_with(self, seed: u64, iterations: Option<usize>) -> MetaConfig {
        let mut cfg = self.meta(seed);
        if let Some(it) = iterations {
            cfg.iterations = it;
            cfg.validate_every = cfg.validate_every.min(it);
        }
        cfg
    }

    /// Encoder training settings ([`crate::meta::encoder`]).
    pub fn encoder(self, seed: u64) -> super::EncoderTraining {
        let base = super::EncoderTraining {
            seed,
            ..super::EncoderTraining::default()
        };
        match self {
            Profile::Quick => super::EncoderTraining {
                instances: 32,
                windows: 8,
                steps: 300,
                shots: 20,
                ..base
            },
            Profile::Paper => base,
        }
    }

    /// Baseline settings: the modulations' outer-iteration budget and validation cadence
    /// ([`Profile::meta`]), tuning pilots of a twentieth of it.
    pub fn baseline(self, seed: u64) -> BaselineConfig {
        let meta = self.meta(seed);
        let scratch_steps = match self {
            Profile::Quick => 300,
            Profile::Paper => 1_000,
        };
        BaselineConfig {
            iterations: meta.iterations,
            validate_every: meta.validate_every,
            pilot_iterations: meta.iterations / 20,
            scratch_steps,
            seed,
            ..BaselineConfig::default()
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quick" => Ok(Profile::Quick),
            "paper" => Ok(Profile::Paper),
            other => Err(format!(
                "unknown profile `{other}`; expected quick or paper"
            )),
        }
    }
}

/// Shot counts of the shots sweep.
pub const SHOTS_SWEEP: [usize; 6] = [1, 5, 10, 30, 100, 300];

/// Everything measured for one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Family.
    pub family: Family,
    /// Method.
    pub method: Method,
    /// Seed.
    pub seed: u64,
    /// Profile.
    pub profile: Profile,
    /// Training wall time, seconds.
    pub train_seconds: f64,
    /// Meta-training iterations per second.
    pub iterations_per_second: f64,
    /// Why training diverged, if it did.
    pub diverged: Option<String>,
    /// Evaluation at the protocol's shot count (absent when training diverged before any
    /// usable checkpoint).
    pub report: Option<EvalReport>,
    /// Shots used by `report`.
    pub shots: usize,
    /// ε_traj (mean over test instances) for each count of [`SHOTS_SWEEP`].
    pub shots_sweep: Vec<(usize, f64)>,
    /// ε_traj when adaptation starts from zero instead of the mean latent (modulated only).
    pub zero_start: Option<Stat>,
    /// Seconds per test instance of test-time adaptation at the protocol's shot count.
    pub adapt_seconds_per_instance: f64,
    /// MAML's, ANIL's or Reptile's tuned inner learning rate and step count, with every
    /// candidate's validation error (`None` for other methods and older cells).
    #[serde(default)]
    pub tuning: Option<Tuning>,
    /// The protocol the cell ran under ([`PROTOCOL`]; cells written before it was
    /// recorded ran under v1).
    #[serde(default = "protocol_v1")]
    pub protocol: u32,
}

fn protocol_v1() -> u32 {
    1
}

/// What a cell leaves behind to save: the trained model.
pub struct CellModel<B: Backend> {
    /// The model (meta-learned initialisation for baselines).
    pub model: Model<B>,
}

/// Adapts and evaluates a trained modulated model on `tasks`' test instances with `shots`
/// shots; returns the report and the mean ε_traj.
pub fn evaluate_modulated(
    params: &ModelParams,
    config: &ModelConfig,
    tasks: &TaskSet<'_>,
    shots: usize,
    start: LatentStart,
) -> EvalReport {
    let cpu = CpuModel::from_params(params, config);
    let adapt = AdaptConfig {
        start,
        ..AdaptConfig::for_model(config, shots)
    };
    let z0: Vec<f32> = match start {
        LatentStart::Mean => config.mean_latent().iter().map(|v| *v as f32).collect(),
        LatentStart::Zero => vec![0.0; config.d_latent],
    };
    let shot_sets: Vec<_> = tasks
        .meta_test()
        .into_iter()
        .map(|i| tasks.shots(i, shots))
        .collect();
    let adapted = adapt_latents(params, &shot_sets, &z0, &adapt);
    evaluate(tasks, |k, _| (&cpu, adapted.latents[k].clone()))
}

/// Adapts and evaluates a baseline on `tasks`' test instances with `shots` shots.
pub fn evaluate_baseline<B: Backend>(
    outcome: &super::baselines::BaselineOutcome,
    baseline: Baseline,
    cfg: &BaselineConfig,
    tasks: &TaskSet<'_>,
    shots: usize,
    device: &B::Device,
) -> EvalReport {
    let models: Vec<CpuModel> = tasks
        .meta_test()
        .into_iter()
        .map(|i| {
            let p = adapt_baseline::<B>(outcome, baseline, &tasks.shots(i, shots), cfg, i, device);
            CpuModel::from_params(&p, &outcome.config)
        })
        .collect();
    let zeros = vec![0.0f32; outcome.config.d_latent];
    evaluate(tasks, |k, _| (&models[k], zeros.clone()))
}

/// Trains a modulated model with explicit settings (the locality sweep varies λ_φ, λ_z)
/// and evaluates it like a grid cell.
pub fn run_modulated<B: Backend>(
    config: &ModelConfig,
    cfg: &MetaConfig,
    profile: Profile,
    tasks: &TaskSet<'_>,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> (CellResult, CellModel<B>) {
    let shots = AdaptConfig::default().shots;
    let started = std::time::Instant::now();
    let total = cfg.iterations;
    let outcome = meta_train::<B>(config, tasks, cfg, device, &mut |it, loss| {
        progress(it, total, loss)
    });
    let train_seconds = started.elapsed().as_secs_f64();
    let iterations = outcome.history.last().map_or(0, |h| h.iteration);
    let usable = outcome.best_iteration > 0;
    let params = ModelParams::from_model(&outcome.model);
    let trained = outcome.model.config.clone();
    let t = std::time::Instant::now();
    let report =
        usable.then(|| evaluate_modulated(&params, &trained, tasks, shots, LatentStart::Mean));
    let adapt_seconds = t.elapsed().as_secs_f64() / tasks.meta_test().len() as f64;
    let shots_sweep = if usable {
        SHOTS_SWEEP
            .iter()
            .map(|&k| {
                (
                    k,
                    evaluate_modulated(&params, &trained, tasks, k, LatentStart::Mean)
                        .traj_error()
                        .mean,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let zero_start = usable.then(|| {
        evaluate_modulated(&params, &trained, tasks, shots, LatentStart::Zero).traj_error()
    });
    let result = CellResult {
        family: config.family,
        method: Method::Modulated(config.modulation),
        seed: cfg.seed,
        profile,
        train_seconds,
        iterations_per_second: iterations as f64 / train_seconds.max(1e-9),
        diverged: outcome.diverged,
        report,
        shots,
        shots_sweep,
        zero_start,
        adapt_seconds_per_instance: adapt_seconds,
        tuning: None,
        protocol: PROTOCOL,
    };
    (
        result,
        CellModel {
            model: outcome.model,
        },
    )
}

/// Trains and evaluates one cell with the profile's settings for `seed`, or `iterations`
/// outer iterations when given (smoke tests). `progress(iteration, total, loss)` reports
/// training.
#[expect(
    clippy::too_many_arguments,
    reason = "the coordinates of one grid cell"
)]
pub fn run_cell<B: Backend>(
    family: Family,
    method: Method,
    seed: u64,
    profile: Profile,
    iterations: Option<usize>,
    tasks: &TaskSet<'_>,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> (CellResult, CellModel<B>) {
    let base = ModelConfig::new(family, Modulation::None).with_seed(seed);
    let shots = AdaptConfig::default().shots;
    let started = std::time::Instant::now();
    match method {
        Method::Modulated(modulation) => {
            let config = ModelConfig { modulation, ..base };
            let cfg = profile.meta_with(seed, iterations);
            run_modulated::<B>(&config, &cfg, profile, tasks, device, progress)
        }
        Method::Baseline(baseline) => {
            let mut cfg = profile.baseline(seed);
            if let Some(it) = iterations {
                cfg.iterations = it;
                cfg.validate_every = cfg.validate_every.min(it);
                cfg.pilot_iterations = cfg.pilot_iterations.clamp(1, it);
                cfg.scratch_steps = cfg.scratch_steps.min(it);
            }
            let tuning = tune_baseline::<B>(&base, baseline, tasks, &cfg, device);
            if let Some(t) = &tuning {
                (cfg.inner_lr, cfg.inner_steps) = t.chosen;
            }
            let total = cfg.iterations;
            let outcome =
                train_baseline::<B>(&base, baseline, tasks, &cfg, device, &mut |it, loss| {
                    progress(it, total, loss)
                });
            let train_seconds = started.elapsed().as_secs_f64();
            let iterations = outcome.history.last().map_or(0, |h| h.0);
            // A run that diverged after a validated checkpoint is evaluated at that
            // checkpoint (and still reports the divergence).
            let usable = outcome.diverged.is_none()
                || outcome
                    .config
                    .training
                    .as_ref()
                    .is_some_and(|t| t.best_iteration > 0);
            let t = std::time::Instant::now();
            let report = usable
                .then(|| evaluate_baseline::<B>(&outcome, baseline, &cfg, tasks, shots, device));
            let adapt_seconds = t.elapsed().as_secs_f64() / tasks.meta_test().len() as f64;
            let shots_sweep = if usable {
                SHOTS_SWEEP
                    .iter()
                    .map(|&k| {
                        (
                            k,
                            evaluate_baseline::<B>(&outcome, baseline, &cfg, tasks, k, device)
                                .traj_error()
                                .mean,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let model = outcome.params.to_model::<B>(&outcome.config, device);
            let result = CellResult {
                family,
                method,
                seed,
                profile,
                train_seconds,
                iterations_per_second: iterations as f64 / train_seconds.max(1e-9),
                diverged: outcome.diverged,
                report,
                shots,
                shots_sweep,
                zero_start: None,
                adapt_seconds_per_instance: adapt_seconds,
                tuning,
                protocol: PROTOCOL,
            };
            (result, CellModel { model })
        }
    }
}

/// The paper's ordering claim for one family, checked on measured ε_traj: every
/// modulation below every optimization-based method (MAML, ANIL, Reptile), and every
/// optimization-based method below Scratch.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderingVerdict {
    /// Whether each of the three groups has at least one method.
    pub complete: bool,
    /// The pairs that break the order: (the method that should be lower, its ε_traj, the
    /// method it is not below, that one's ε_traj).
    pub exceptions: Vec<(Method, f64, Method, f64)>,
}

impl OrderingVerdict {
    /// Checks `results` (method, mean ε_traj), one family's. A diverged method counts as
    /// ε_traj = ∞.
    pub fn of(results: &[(Method, f64)]) -> Self {
        let rank = |m: &Method| match m {
            Method::Modulated(_) => 0,
            Method::Baseline(Baseline::Scratch) => 2,
            Method::Baseline(_) => 1,
        };
        let complete = (0..3).all(|g| results.iter().any(|(m, _)| rank(m) == g));
        let mut exceptions = Vec::new();
        for &(a, ea) in results {
            for &(b, eb) in results {
                // NaN compares as not below: it is an exception.
                if rank(&a) < rank(&b) && ea.partial_cmp(&eb) != Some(std::cmp::Ordering::Less) {
                    exceptions.push((a, ea, b, eb));
                }
            }
        }
        Self {
            complete,
            exceptions,
        }
    }

    /// One line for the report: "holds", "holds except …", or what is missing.
    pub fn describe(&self) -> String {
        if !self.complete {
            return "not yet decidable (a group has no finished cell)".into();
        }
        if self.exceptions.is_empty() {
            return "holds".into();
        }
        let list: Vec<String> = self
            .exceptions
            .iter()
            .map(|(a, ea, b, eb)| {
                format!(
                    "{} ({:.2}) ≥ {} ({:.2})",
                    a.label(),
                    ea * 100.0,
                    b.label(),
                    eb * 100.0
                )
            })
            .collect();
        format!("holds except {}", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ordering_claim_lists_its_exceptions() {
        let svd = Method::Modulated(Modulation::Svd { rank: 5 });
        let shift = Method::Modulated(Modulation::Shift);
        let maml = Method::Baseline(Baseline::Maml);
        let reptile = Method::Baseline(Baseline::Reptile);
        let scratch = Method::Baseline(Baseline::Scratch);
        let holds =
            OrderingVerdict::of(&[(svd, 0.02), (shift, 0.04), (reptile, 0.6), (scratch, 1.5)]);
        assert!(holds.complete && holds.exceptions.is_empty());
        assert_eq!(holds.describe(), "holds");
        // MAML worse than Scratch, and a diverged Shift (∞) above every baseline.
        let broken = OrderingVerdict::of(&[
            (svd, 0.02),
            (shift, f64::INFINITY),
            (maml, 1.8),
            (reptile, 0.6),
            (scratch, 1.5),
        ]);
        assert_eq!(
            broken.exceptions,
            vec![
                (shift, f64::INFINITY, maml, 1.8),
                (shift, f64::INFINITY, reptile, 0.6),
                (shift, f64::INFINITY, scratch, 1.5),
                (maml, 1.8, scratch, 1.5),
            ]
        );
        assert!(
            broken
                .describe()
                .contains("MAML (180.00) ≥ Scratch (150.00)")
        );
        assert!(!OrderingVerdict::of(&[(svd, 0.02), (scratch, 1.0)]).complete);
    }
}
