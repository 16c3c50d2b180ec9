//! Training a model's encoder: the amortised start of online adaptation
//! ([`crate::nn::cpu::encoder`]).
//!
//! The data are the family's meta-training distribution, seen the way a game sees a body:
//!
//! 1. `instances` systems with parameters drawn from the training ranges; each gets its
//!    latent code by the paper's auto-decoding (Adam from the mean latent on `shots` exact
//!    (x, ẋ) samples, the network frozen: [`adapt_latents`]).
//! 2. For each system, `windows` observed windows: a protocol initial state, the true
//!    system stepped at game ticks of 1/64 s and sampled every `interval` seconds (so the
//!    timestamps are irregular), positions only, with Gaussian noise of a level drawn
//!    uniformly up to `max_noise` of the amplitude ([`TruthSimulator`]).
//! 3. Regression of (z, u₀) — the system's latent and the window's true unobserved start —
//!    on the resampled window, by Adam on the mean squared error of standardised outputs;
//!    the last tenth of the systems are held out for the validation loss.

use rand::{RngExt as _, seq::SliceRandom as _};
use serde::{Deserialize, Serialize};

use super::{
    AdaptConfig, EvalReport, FitConfig, FitState, Observation, ObservedPart, TaskSet, Track,
    adapt_latents, evaluate, fit_step, observed::validate, system_shots,
};
use crate::{
    data::{Split, sample_initial_state, sample_params, stream_rng},
    nn::{
        ModelConfig,
        cpu::{CpuModel, Encoder, EncoderRecord, EncoderSpec, ModelParams, encoder::EncoderAdam},
    },
    runtime::TruthSimulator,
};

/// Settings of [`train_encoder`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderTraining {
    /// Systems drawn from the training distribution.
    pub instances: usize,
    /// Observed windows per system.
    pub windows: usize,
    /// Seconds of observations the encoder reads.
    pub span: f64,
    /// Seconds between two observations.
    pub interval: f64,
    /// Evenly spaced times the window is resampled at.
    pub grid: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Largest relative observation noise.
    pub max_noise: f64,
    /// Adam steps.
    pub steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Adam learning rate (decays linearly to a tenth).
    pub lr: f64,
    /// Exact (x, ẋ) shots per system for its auto-decoded latent.
    pub shots: usize,
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for EncoderTraining {
    fn default() -> Self {
        Self {
            instances: 256,
            windows: 24,
            span: 1.0,
            interval: 0.05,
            grid: 21,
            hidden: vec![64, 64],
            max_noise: 0.02,
            steps: 4000,
            batch: 256,
            lr: 3e-3,
            shots: 50,
            seed: 0,
        }
    }
}

/// Why an encoder could not be trained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// A setting out of range.
    #[error("encoder training: {0}")]
    Settings(String),
    /// The truth of a drawn system could not be simulated.
    #[error("encoder training: simulating system {instance}: {message}")]
    Simulation {
        /// The system.
        instance: usize,
        /// What failed.
        message: String,
    },
    /// The loss stopped being finite.
    #[error("encoder training: the loss is not finite at step {step}")]
    NonFinite {
        /// Adam step.
        step: usize,
    },
}

/// The training set: raw inputs and targets of every window, by system.
struct Windows {
    inputs: Vec<f32>,
    targets: Vec<f32>,
    system: Vec<usize>,
}

/// Draws the systems, their latents and their windows.
fn windows(
    config: &ModelConfig,
    params: &ModelParams,
    settings: &EncoderTraining,
    raw: &Encoder,
) -> Result<Windows, EncoderError> {
    let family = config.family;
    let (seed, n) = (settings.seed, settings.instances);
    let mut systems = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut rng = stream_rng("meta/encoder/system", seed, i as u64);
        let p = sample_params(family, Split::Standard, &mut rng)
            .map_err(|e| EncoderError::Settings(e.to_string()))?;
        let sys = family.build(&p).map_err(|e| EncoderError::Simulation {
            instance: i,
            message: e.to_string(),
        })?;
        let shots =
            system_shots(family, sys.as_ref(), &p, settings.shots, &mut rng).map_err(|e| {
                EncoderError::Simulation {
                    instance: i,
                    message: e.to_string(),
                }
            })?;
        tasks.push(shots);
        systems.push(p);
    }
    let mean: Vec<f32> = config.mean_latent().iter().map(|v| *v as f32).collect();
    let adapt = AdaptConfig {
        shots: settings.shots,
        ..AdaptConfig::for_model(config, settings.shots)
    };
    let latents = adapt_latents(params, &tasks, &mean, &adapt).latents;

    let dof = family.dof();
    let mut out = Windows {
        inputs: Vec::new(),
        targets: Vec::new(),
        system: Vec::new(),
    };
    let tick = 1.0 / 64.0;
    for (i, p) in systems.iter().enumerate() {
        for w in 0..settings.windows {
            let mut rng = stream_rng(
                "meta/encoder/window",
                seed,
                (i * settings.windows + w) as u64,
            );
            let x0 = sample_initial_state(family, p, &mut rng);
            let noise = settings.max_noise * rng.random::<f64>();
            let mut truth = TruthSimulator::new(
                family,
                p,
                x0.clone(),
                ObservedPart::Positions,
                settings.interval,
                noise as f32,
                rng.random(),
            )
            .map_err(|e| EncoderError::Simulation {
                instance: i,
                message: e.to_string(),
            })?;
            let mut observations: Vec<_> = truth.advance(0.0).into_iter().collect();
            while truth.time() < settings.span + settings.interval {
                observations.extend(truth.advance(tick));
            }
            let Some(x) = raw.features(&observations) else {
                return Err(EncoderError::Simulation {
                    instance: i,
                    message: "the truth stopped before the window was full".into(),
                });
            };
            out.inputs.extend(x);
            out.targets.extend(&latents[i]);
            out.targets.extend(x0[dof..].iter().map(|v| *v as f32));
            out.system.push(i);
        }
    }
    Ok(out)
}

/// Per-column mean and standard deviation (floored at `floor`) of `rows × width` values.
fn standardisation(values: &[f32], width: usize, floor: f64) -> (Vec<f64>, Vec<f64>) {
    let rows = (values.len() / width.max(1)).max(1) as f64;
    let mean: Vec<f64> = (0..width)
        .map(|c| {
            values
                .iter()
                .skip(c)
                .step_by(width)
                .map(|v| f64::from(*v))
                .sum::<f64>()
                / rows
        })
        .collect();
    let std = (0..width)
        .map(|c| {
            let var = values
                .iter()
                .skip(c)
                .step_by(width)
                .map(|v| (f64::from(*v) - mean[c]).powi(2))
                .sum::<f64>()
                / rows;
            var.sqrt().max(floor)
        })
        .collect();
    (mean, std)
}

/// Trains the encoder of the model (`config`, `params`); `progress(step, loss)` is called
/// every 100 steps. Returns the encoder, its training record filled in.
///
/// # Errors
/// [`EncoderError`] for settings out of range, a system that cannot be simulated, or a
/// loss that stops being finite.
pub fn train_encoder(
    config: &ModelConfig,
    params: &ModelParams,
    settings: &EncoderTraining,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Encoder, EncoderError> {
    let family = config.family;
    if settings.instances < 2 || settings.windows == 0 || settings.batch == 0 {
        return Err(EncoderError::Settings(
            "need at least 2 systems, 1 window per system and a batch of 1".into(),
        ));
    }
    if !(settings.interval > 0.0 && settings.span >= 2.0 * settings.interval && settings.grid >= 2)
    {
        return Err(EncoderError::Settings(format!(
            "span {} s must cover two intervals of {} s, and the grid two points",
            settings.span, settings.interval
        )));
    }
    let (d_in, d_out) = (
        settings.grid * family.dof(),
        Encoder::output_width(family, config.d_latent),
    );
    let spec = EncoderSpec {
        span: settings.span,
        grid: settings.grid,
        hidden: settings.hidden.clone(),
        input_mean: vec![0.0; d_in],
        input_std: vec![1.0; d_in],
        output_mean: vec![0.0; d_out],
        output_std: vec![1.0; d_out],
        record: None,
    };
    let raw = Encoder::new(spec.clone(), family, config.d_latent, settings.seed);
    let data = windows(config, params, settings, &raw)?;

    // Standardise with the statistics of the training systems.
    let held_out = (settings.instances / 10).max(1);
    let first_validation = settings.instances - held_out;
    let train_rows: Vec<usize> = (0..data.system.len())
        .filter(|&r| data.system[r] < first_validation)
        .collect();
    let gather = |values: &[f32], width: usize, rows: &[usize]| -> Vec<f32> {
        rows.iter()
            .flat_map(|&r| values[r * width..(r + 1) * width].iter().copied())
            .collect()
    };
    let (input_mean, input_std) =
        standardisation(&gather(&data.inputs, d_in, &train_rows), d_in, 1e-6);
    let (output_mean, output_std) =
        standardisation(&gather(&data.targets, d_out, &train_rows), d_out, 1e-4);
    let standardise = |values: &mut [f32], width: usize, mean: &[f64], std: &[f64]| {
        for row in values.chunks_mut(width) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = ((f64::from(*v) - mean[c]) / std[c]) as f32;
            }
        }
    };
    let (mut inputs, mut targets) = (data.inputs, data.targets);
    standardise(&mut inputs, d_in, &input_mean, &input_std);
    standardise(&mut targets, d_out, &output_mean, &output_std);
    let mut encoder = Encoder::new(
        EncoderSpec {
            input_mean,
            input_std,
            output_mean,
            output_std,
            ..spec
        },
        family,
        config.d_latent,
        settings.seed,
    );
    let validation: Vec<usize> = (0..data.system.len())
        .filter(|&r| data.system[r] >= first_validation)
        .collect();

    let mut adam = EncoderAdam::default();
    let mut rng = stream_rng("meta/encoder/batches", settings.seed, 0);
    let mut order = train_rows.clone();
    let mut cursor = order.len();
    let batch = settings.batch.min(order.len());
    for step in 0..settings.steps {
        if cursor + batch > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let rows = &order[cursor..cursor + batch];
        cursor += batch;
        let (x, t) = (gather(&inputs, d_in, rows), gather(&targets, d_out, rows));
        let (loss, grads) = encoder.loss_grad(&x, &t, batch);
        if !loss.is_finite() {
            return Err(EncoderError::NonFinite { step });
        }
        let decay = 1.0 - 0.9 * step as f64 / settings.steps.max(1) as f64;
        adam.step(&mut encoder, &grads, settings.lr * decay);
        if step % 100 == 0 {
            progress(step, loss);
        }
    }
    let (validation_loss, _) = encoder.loss_grad(
        &gather(&inputs, d_in, &validation),
        &gather(&targets, d_out, &validation),
        validation.len(),
    );
    progress(settings.steps, validation_loss);
    encoder.spec_mut().record = Some(EncoderRecord {
        instances: settings.instances,
        windows: settings.windows,
        steps: settings.steps,
        max_noise: settings.max_noise,
        seed: settings.seed,
        validation_loss,
    });
    Ok(encoder)
}

/// ε_traj and friends of three starts on the meta-test instances of `tasks`, each read
/// from one observed window per instance (positions every `interval` s over the encoder's
/// span, relative noise `noise`, from a protocol initial state): the mean latent, the
/// encoder's reading alone, and that reading refined by `refine_steps` exact
/// Gauss–Newton (Levenberg–Marquardt) steps of the trajectory fit on the same window.
pub struct EncoderEval {
    /// The mean training latent.
    pub mean: EvalReport,
    /// The encoder alone (one forward pass).
    pub encoded: EvalReport,
    /// The encoder, then `refine_steps` steps.
    pub refined: EvalReport,
    /// The encoder's latent of each test instance.
    pub encoded_latents: Vec<Vec<f32>>,
}

/// RMS distance between two latent codes in units of the training latents' standard
/// deviation per component (`std` empty or zero: unit scale).
pub fn latent_distance(a: &[f32], b: &[f32], std: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    (a.iter()
        .zip(b)
        .enumerate()
        .map(|(k, (x, y))| {
            let s = std.get(k).copied().filter(|s| *s > 0.0).unwrap_or(1.0);
            (f64::from(x - y) / s).powi(2)
        })
        .sum::<f64>()
        / n)
        .sqrt()
}

/// Evaluates an encoder (see [`EncoderEval`]).
///
/// # Errors
/// [`EncoderError::Simulation`] when a test instance's window cannot be simulated.
pub fn evaluate_encoder(
    tasks: &TaskSet<'_>,
    model: &CpuModel,
    encoder: &Encoder,
    mean: &[f32],
    noise: f64,
    refine_steps: usize,
    seed: u64,
) -> Result<EncoderEval, EncoderError> {
    let family = tasks.family();
    let interval = 0.05;
    let mut encoded = Vec::new();
    let mut refined = Vec::new();
    for i in tasks.meta_test() {
        let (data, local) = tasks.locate(i);
        let params = data.params_of(local);
        let mut rng = stream_rng("meta/encoder/eval", seed, i as u64);
        let x0 = sample_initial_state(family, params, &mut rng);
        let simulation = |e: &dyn std::fmt::Display| EncoderError::Simulation {
            instance: i,
            message: e.to_string(),
        };
        let mut truth = TruthSimulator::new(
            family,
            params,
            x0,
            ObservedPart::Positions,
            interval,
            noise as f32,
            rng.random(),
        )
        .map_err(|e| simulation(&e))?;
        let mut window: Vec<Observation> = truth.advance(0.0).into_iter().collect();
        while truth.time() < encoder.span() + 0.5 * interval {
            window.extend(truth.advance(1.0 / 64.0));
        }
        let guess = encoder
            .encode(&window)
            .ok_or_else(|| simulation(&"the encoder cannot read the window"))?;
        let track = Track {
            observations: &window,
            part: ObservedPart::Positions,
        };
        let mut state = [FitState {
            latent: guess.latent.clone(),
            hidden: guess.hidden,
            damping: FitConfig::default().initial_damping,
        }];
        if validate(model, track).is_ok() {
            for _ in 0..refine_steps {
                fit_step(model, &[track], &mut state, &FitConfig::default());
            }
        }
        encoded.push(guess.latent);
        refined.push(state[0].latent.clone());
    }
    Ok(EncoderEval {
        mean: evaluate(tasks, |_, _| (model, mean.to_vec())),
        encoded: evaluate(tasks, |k, _| (model, encoded[k].clone())),
        refined: evaluate(tasks, |k, _| (model, refined[k].clone())),
        encoded_latents: encoded,
    })
}
