//! Online adaptation as a state machine: a body that is observed refines its latent code
//! from what it is seen doing, while the world keeps stepping.
//!
//! Per body, an [`AdaptState`] moves through the phases of [`AdaptPhase`]:
//!
//! ```text
//!  Observing ──(enough observations)──▶ Adapting ──(settled over a full window)──▶ Converged
//!                                          │
//!                                          └──(max_rejections rejected updates)──▶ Diverged
//! ```
//!
//! A runtime drives it in three moves, none of which blocks on the others:
//!
//! 1. [`AdaptState::wants_job`] says whether a body needs work; [`AdaptState::begin_job`]
//!    takes its observation window into a [`JobBody`] (the body is then in flight).
//! 2. [`run_job`] runs Levenberg–Marquardt steps of the trajectory fit of
//!    [`crate::meta::observed`] on every body of a [`Job`] (one model), batched through the
//!    CPU kernel: on a worker thread in the Bevy plugin, inline in a plain loop.
//! 3. [`AdaptState::apply`] reviews each [`BodyResult`] ([`review`]: a non-finite latent or
//!    loss, or an exploding loss, is rejected and the last good latent kept), moves the
//!    phase, and says what the runtime must do ([`Applied`]: a new latent, an event).
//!
//! Observations come from the game or from a [`TruthSimulator`] running beside the body with
//! its hidden parameters.

use std::{collections::VecDeque, time::Instant};

use rand::{RngExt as _, rngs::Xoshiro256PlusPlus};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::{
    data::stream_rng,
    integrate::{Integrator, Stepper},
    meta::{
        FitConfig, FitState, Observation, ObservedPart, Track, fit_step,
        observed::{FIRST_HORIZON, predict, validate},
    },
    nn::cpu::CpuModel,
    systems::{Family, System, SystemError},
};

/// Default observation window of a body: 3 s at 20 Hz.
pub const DEFAULT_WINDOW: usize = 60;

/// Loss history kept per body.
pub const HISTORY: usize = 256;

/// The most recent observations of a body, oldest first; at capacity the oldest is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservationWindow {
    samples: VecDeque<Observation>,
    capacity: usize,
    /// Samples accepted since the body started observing.
    pub received: u64,
}

impl Default for ObservationWindow {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_WINDOW)
    }
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A value or the time is NaN or infinite.
    #[error("observation at t = {t} holds a non-finite value")]
    NonFinite {
        /// Its time.
        t: f64,
    },
    /// The time is not after the last sample's.
    #[error("observation at t = {t} is not after the previous one at t = {last}")]
    OutOfOrder {
        /// Its time.
        t: f64,
        /// The last sample's time.
        last: f64,
    },
    /// A different number of values than earlier samples.
    #[error("observation has {got} values, earlier ones had {expected}")]
    Width {
        /// Values given.
        got: usize,
        /// Values of earlier samples.
        expected: usize,
    },
}

impl ObservationWindow {
    /// An empty window that keeps the last `capacity` samples (at least 3).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            capacity: capacity.max(3),
            received: 0,
        }
    }

    /// Adds a sample; the oldest is dropped when full.
    ///
    /// # Errors
    /// [`PushError`] for a non-finite value, a time not after the last one, or a width
    /// that differs from earlier samples; the window is unchanged.
    pub fn push(&mut self, t: f64, values: Vec<f32>) -> Result<(), PushError> {
        if !t.is_finite() || values.iter().any(|v| !v.is_finite()) {
            return Err(PushError::NonFinite { t });
        }
        if let Some(last) = self.samples.back() {
            if t <= last.t {
                return Err(PushError::OutOfOrder { t, last: last.t });
            }
            if values.len() != last.values.len() {
                return Err(PushError::Width {
                    got: values.len(),
                    expected: last.values.len(),
                });
            }
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(Observation { t, values });
        self.received += 1;
        Ok(())
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether the window holds `capacity` samples.
    pub fn is_full(&self) -> bool {
        self.samples.len() == self.capacity
    }

    /// The most samples held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Observation> {
        self.samples.iter()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The first `count` samples.
    pub fn first(&self, count: usize) -> Vec<Observation> {
        self.samples.iter().take(count).cloned().collect()
    }
}

/// The ground truth beside an observed body: the true system with its hidden parameters,
/// started from the body's state when observation began, stepped by RK4 at ≤ 5 ms
/// substeps and sampled every `interval` seconds with Gaussian noise of standard deviation
/// `noise ×` the largest magnitude each component has shown.
#[derive(Debug)]
pub struct TruthSimulator {
    system: Box<dyn System>,
    stepper: Stepper,
    x: Vec<f64>,
    t: f64,
    next_sample: f64,
    amplitude: Vec<f64>,
    interval: f64,
    noise: f32,
    width: usize,
    rng: Xoshiro256PlusPlus,
}

/// Longest ground-truth RK4 substep, seconds (well inside the stability and accuracy range
/// of every family at its training parameters).
const TRUTH_SUBSTEP: f64 = 0.005;

impl TruthSimulator {
    /// The true system of `family` with `params`, from `x0`, observed (`part`) every
    /// `interval` seconds with relative noise `noise`; noise stream `seed`.
    ///
    /// # Errors
    /// [`SystemError`] when the parameters or the state are outside the family's valid range.
    pub fn new(
        family: Family,
        params: &[f64],
        x0: Vec<f64>,
        part: ObservedPart,
        interval: f64,
        noise: f32,
        seed: u64,
    ) -> Result<Self, SystemError> {
        let system = family.build(params)?;
        system.check_state(&x0)?;
        Ok(Self {
            system,
            stepper: Stepper::new(Integrator::Rk4, family.dim()),
            amplitude: x0.iter().map(|v| v.abs()).collect(),
            width: part.width(family.dim(), family.dof()),
            x: x0,
            t: 0.0,
            next_sample: 0.0,
            interval,
            noise,
            rng: stream_rng("runtime/truth", seed, 0),
        })
    }

    /// The true state now.
    pub fn state(&self) -> &[f64] {
        &self.x
    }

    /// Simulated seconds since observation began.
    pub fn time(&self) -> f64 {
        self.t
    }

    /// Advances by `dt` seconds and returns the observation that fell due, if any (the
    /// first call with `dt = 0` returns the observation at t = 0). A state that stops being
    /// finite stops the observations.
    pub fn advance(&mut self, dt: f64) -> Option<Observation> {
        if dt > 0.0 {
            let substeps = (dt / TRUTH_SUBSTEP).ceil().max(1.0) as usize;
            let h = dt / substeps as f64;
            for _ in 0..substeps {
                if self
                    .stepper
                    .step(self.system.as_ref(), &mut self.x, h)
                    .is_err()
                {
                    break;
                }
            }
            self.t += dt;
        }
        if self.t + 1e-9 < self.next_sample || !self.x.iter().all(|v| v.is_finite()) {
            return None;
        }
        self.next_sample = (self.next_sample + self.interval).max(self.t + 0.5 * self.interval);
        for (a, v) in self.amplitude.iter_mut().zip(&self.x) {
            *a = a.max(v.abs());
        }
        let values = (0..self.width)
            .map(|i| {
                let n = if self.noise > 0.0 {
                    let g: f64 = self.rng.sample(StandardNormal);
                    f64::from(self.noise) * self.amplitude[i] * g
                } else {
                    0.0
                };
                (self.x[i] + n) as f32
            })
            .collect();
        Some(Observation { t: self.t, values })
    }
}

/// Where a body's adaptation stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdaptPhase {
    /// Gathering observations (fewer than needed for a fit).
    #[default]
    Observing,
    /// Its latent code is being refined.
    Adapting,
    /// The fit over a full window (or [`AdaptationSettings::converge_span`] seconds of
    /// observations) stopped improving: the latent is final.
    Converged,
    /// Updates kept failing (non-finite or exploding loss); the last good latent is kept.
    Diverged,
}

/// Run-time settings of online adaptation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptationSettings {
    /// Whether bodies are sent to the worker at all.
    pub enabled: bool,
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Levenberg–Marquardt steps per job.
    pub steps_per_job: usize,
    /// A job that lowers a body's loss on its (new) window by less than this fraction
    /// settles the fit: over a full window the body is converged, over a shorter horizon
    /// the horizon doubles.
    pub settle_tol: f64,
    /// A fit whose RMS misfit is at most this fraction of the observations' RMS spread is
    /// settled too (with noisy observations every refit fits some noise, so the relative
    /// improvement alone would never settle).
    pub settle_misfit: f64,
    /// A settled fit converges the body once it covers the whole window and the window is
    /// full or spans at least this many seconds.
    pub converge_span: f64,
    /// When a body converges, move its state to the present as the fit estimates it (the
    /// fitted start carried along the learned flow, [`CarriedFit::state_at`]), so body and
    /// what it observes move in step from then on.
    pub sync_on_converge: bool,
    /// Bodies sent in one job, at most (the per-frame budget of a runtime).
    pub max_bodies_per_job: usize,
    /// Jobs at the worker at once, at most (one job per model).
    pub max_jobs_in_flight: usize,
    /// Observations a body needs before its first fit.
    pub min_observations: usize,
    /// Rejected updates in a row after which a body is [`AdaptPhase::Diverged`].
    pub max_rejections: u32,
    /// An update whose loss exceeds this multiple of the loss it started from is rejected.
    pub explode_factor: f64,
}

impl Default for AdaptationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lambda_z: FitConfig::default().lambda_z,
            steps_per_job: 2,
            settle_tol: 0.02,
            settle_misfit: 0.02,
            converge_span: 2.0,
            sync_on_converge: true,
            max_bodies_per_job: 256,
            max_jobs_in_flight: 1,
            min_observations: FIRST_HORIZON,
            max_rejections: 3,
            explode_factor: 1e3,
        }
    }
}

/// What a body's fit carries from one job to the next: the fit state and the start it
/// belongs to (time and full state x₀ = (y₀, u)).
#[derive(Clone, Debug, PartialEq)]
pub struct CarriedFit {
    /// Latent, unobserved start and damping.
    pub state: FitState,
    /// Time of the first observation the fit covered.
    pub t0: f64,
    /// Time of the last observation the fit covered.
    pub t_end: f64,
    /// The fitted full start state at `t0`.
    pub start: Vec<f32>,
}

impl CarriedFit {
    /// The state at time `t` (≥ `t0`) as the fit predicts it: its start carried along the
    /// learned flow of `model` with `latent`. `None` when `t < t0` or the prediction is not
    /// finite.
    pub fn state_at(&self, model: &CpuModel, latent: &[f32], t: f64) -> Option<Vec<f32>> {
        if t < self.t0 || self.start.len() != model.dim() {
            return None;
        }
        let now = predict(
            model,
            latent,
            &self.start,
            &[self.t0, t],
            FitConfig::default().max_substep,
        );
        now.into_iter()
            .nth(1)
            .filter(|x| x.iter().all(|v| v.is_finite()))
    }
}

/// One body of a [`Job`]; `K` identifies it to the runtime (an `Entity` in Bevy).
#[derive(Clone, Debug)]
pub struct JobBody<K> {
    /// The body.
    pub key: K,
    /// Its observation window (the first `horizon` observations).
    pub observations: Vec<Observation>,
    /// What each observation holds.
    pub part: ObservedPart,
    /// Its latent code now.
    pub latent: Vec<f32>,
    /// What the last job left.
    pub carried: Option<CarriedFit>,
}

/// Bodies of one model to fit.
#[derive(Clone, Debug)]
pub struct Job<K> {
    /// The bodies.
    pub bodies: Vec<JobBody<K>>,
    /// Trajectory-fit settings.
    pub config: FitConfig,
    /// Levenberg–Marquardt steps.
    pub steps: usize,
    /// A job that lowers a body's loss by less than this fraction settles its fit.
    pub settle_tol: f64,
    /// So does an RMS misfit at most this fraction of the observations' RMS spread.
    pub settle_misfit: f64,
}

impl<K> Job<K> {
    /// An empty job under `settings`.
    pub fn new(settings: &AdaptationSettings) -> Self {
        Self {
            bodies: Vec::new(),
            config: FitConfig {
                lambda_z: settings.lambda_z,
                ..FitConfig::default()
            },
            steps: settings.steps_per_job,
            settle_tol: settings.settle_tol,
            settle_misfit: settings.settle_misfit,
        }
    }
}

/// What a job found for one body.
#[derive(Clone, Debug)]
pub struct BodyResult<K> {
    /// The body.
    pub key: K,
    /// The fit to carry on.
    pub fit: CarriedFit,
    /// Loss at the start of the job.
    pub loss_before: f64,
    /// Loss at its end.
    pub loss: f64,
    /// A step lowered the loss.
    pub improved: bool,
    /// The last step met the convergence test on this window.
    pub settled: bool,
    /// Observations the fit covered.
    pub window: usize,
}

/// A finished job.
#[derive(Clone, Debug)]
pub struct JobResult<K> {
    /// Bodies fitted.
    pub bodies: Vec<BodyResult<K>>,
    /// Bodies whose observations could not be fitted, with the reason.
    pub invalid: Vec<(K, String)>,
    /// Seconds the job took.
    pub seconds: f64,
}

/// The fit state a body starts a job from: its current latent (the game may have edited
/// it), and the unobserved start carried forward along the learned flow when the window has
/// slid within the span the last fit covered, or inferred afresh.
fn starting_state<K>(model: &CpuModel, body: &JobBody<K>, config: &FitConfig) -> FitState {
    let track = Track {
        observations: &body.observations,
        part: body.part,
    };
    let width = body.observations[0].values.len();
    let t0 = body.observations[0].t;
    match &body.carried {
        Some(c) if c.t0 <= t0 && t0 <= c.t_end && c.state.latent == body.latent => {
            let hidden = if c.t0 == t0 {
                c.state.hidden.clone()
            } else {
                predict(
                    model,
                    &c.state.latent,
                    &c.start,
                    &[c.t0, t0],
                    config.max_substep,
                )[1][width..]
                    .to_vec()
            };
            if hidden.iter().all(|v| v.is_finite()) {
                return FitState {
                    hidden,
                    ..c.state.clone()
                };
            }
            FitState::new(model, track, body.latent.clone(), config)
        }
        Some(c) if c.state.latent == body.latent => FitState {
            damping: c.state.damping,
            ..FitState::new(model, track, body.latent.clone(), config)
        },
        _ => FitState::new(model, track, body.latent.clone(), config),
    }
}

/// RMS deviation of the observed values from their means.
fn spread(observations: &[Observation]) -> f64 {
    let width = observations[0].values.len();
    let n = observations.len() as f64;
    ((0..width)
        .map(|c| {
            let mean = observations
                .iter()
                .map(|o| f64::from(o.values[c]))
                .sum::<f64>()
                / n;
            observations
                .iter()
                .map(|o| (f64::from(o.values[c]) - mean).powi(2))
                .sum::<f64>()
                / n
        })
        .sum::<f64>()
        .max(0.0)
        / width as f64)
        .sqrt()
}

/// Runs `job.steps` batched Levenberg–Marquardt steps over the job's bodies with `model`
/// frozen. Bodies whose observations cannot be fitted come back in
/// [`JobResult::invalid`].
pub fn run_job<K>(model: &CpuModel, job: Job<K>) -> JobResult<K> {
    let clock = Instant::now();
    let mut invalid = Vec::new();
    let bodies: Vec<JobBody<K>> = job
        .bodies
        .into_iter()
        .filter_map(|b| {
            let track = Track {
                observations: &b.observations,
                part: b.part,
            };
            let latent_ok = b.latent.len() == model.config().d_latent;
            match validate(model, track) {
                Ok(()) if latent_ok => Some(b),
                Ok(()) => {
                    let reason = format!(
                        "latent code of {} values; the model's has {}",
                        b.latent.len(),
                        model.config().d_latent
                    );
                    invalid.push((b.key, reason));
                    None
                }
                Err(e) => {
                    invalid.push((b.key, e.to_string()));
                    None
                }
            }
        })
        .collect();
    let tracks: Vec<Track<'_>> = bodies
        .iter()
        .map(|b| Track {
            observations: &b.observations,
            part: b.part,
        })
        .collect();
    let mut states: Vec<FitState> = bodies
        .iter()
        .map(|b| starting_state(model, b, &job.config))
        .collect();
    let mut first: Vec<f64> = Vec::new();
    let mut last = Vec::new();
    let mut improved = vec![false; bodies.len()];
    for step in 0..job.steps.max(1) {
        let out = fit_step(model, &tracks, &mut states, &job.config);
        for (i, s) in out.iter().enumerate() {
            improved[i] |= s.accepted;
        }
        if step == 0 {
            first = out.iter().map(|s| s.loss_before).collect();
        }
        last = out.iter().map(|s| s.loss).collect();
    }
    drop(tracks);
    // Settled: the latent the body came with predicted this window nearly as well as
    // the refit does, or the misfit is small against the motion itself (with noisy
    // observations a refit keeps fitting some noise), or no descent is left.
    let settled: Vec<bool> = (0..bodies.len())
        .map(|i| {
            let (before, after) = (first[i], last[i]);
            let spread = spread(&bodies[i].observations);
            (before.is_finite() && before - after <= job.settle_tol * before)
                || (after.is_finite() && after.max(0.0).sqrt() <= job.settle_misfit * spread)
                || states[i].damping >= 1e6
        })
        .collect();
    let bodies = bodies
        .into_iter()
        .zip(states)
        .enumerate()
        .map(|(i, (b, state))| {
            let mut start = b.observations[0].values.clone();
            start.extend_from_slice(&state.hidden);
            BodyResult {
                fit: CarriedFit {
                    state,
                    t0: b.observations[0].t,
                    t_end: b.observations[b.observations.len() - 1].t,
                    start,
                },
                key: b.key,
                loss_before: first[i],
                loss: last[i],
                improved: improved[i],
                settled: settled[i],
                window: b.observations.len(),
            }
        })
        .collect();
    JobResult {
        bodies,
        invalid,
        seconds: clock.elapsed().as_secs_f64(),
    }
}

/// Whether an update may replace a body's latent code.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Take it.
    Accept,
    /// Keep the last good latent, for this reason.
    Reject(String),
}

/// Reviews an update: a non-finite latent or loss, or a loss above `explode_factor ×` the
/// loss it started from, is rejected.
pub fn review(latent: &[f32], loss_before: f64, loss: f64, explode_factor: f64) -> Verdict {
    if latent.iter().any(|v| !v.is_finite()) {
        Verdict::Reject("the latent code is not finite".into())
    } else if !loss.is_finite() {
        Verdict::Reject(format!("the trajectory loss is not finite ({loss})"))
    } else if loss_before.is_finite() && loss > explode_factor * loss_before.max(f64::MIN_POSITIVE)
    {
        Verdict::Reject(format!(
            "the trajectory loss exploded ({loss_before:.3e} → {loss:.3e})"
        ))
    } else {
        Verdict::Accept
    }
}

/// A body's adaptation: phase, loss, history, and the fit carried between jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptState {
    /// Where it stands.
    pub phase: AdaptPhase,
    /// Trajectory loss of the current latent on its last window (NaN before the first
    /// update).
    pub loss: f32,
    /// Trajectory loss of the first window at the starting latent.
    pub initial_loss: f32,
    /// Accepted updates.
    pub updates: u32,
    /// Rejected updates in total.
    pub rejected: u32,
    /// Rejected updates in a row (the body diverges at
    /// [`AdaptationSettings::max_rejections`]).
    pub rejected_in_a_row: u32,
    /// Loss after each accepted update (the last [`HISTORY`]).
    pub history: Vec<f32>,
    /// Observations the fit currently covers (grows as fits settle: the loss over a long
    /// horizon is not convex in z, so the horizon doubles after each settled fit).
    pub horizon: usize,
    /// Whether a job for this body is at the worker.
    pub in_flight: bool,
    /// Fit state carried between jobs.
    pub fit: Option<CarriedFit>,
}

impl Default for AdaptState {
    fn default() -> Self {
        Self {
            phase: AdaptPhase::Observing,
            loss: f32::NAN,
            initial_loss: f32::NAN,
            updates: 0,
            rejected: 0,
            rejected_in_a_row: 0,
            history: Vec::new(),
            horizon: FIRST_HORIZON,
            in_flight: false,
            fit: None,
        }
    }
}

/// What the runtime must do after [`AdaptState::apply`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The body's new latent code (an accepted update).
    pub latent: Option<Vec<f32>>,
    /// The phase change to report.
    pub event: Option<AdaptEvent>,
}

/// A phase change worth reporting.
#[derive(Clone, Debug, PartialEq)]
pub enum AdaptEvent {
    /// The fit settled over a full window.
    Converged {
        /// Final trajectory loss.
        loss: f32,
        /// Updates it took.
        updates: u32,
    },
    /// Updates kept failing.
    Diverged {
        /// Why the last one was rejected.
        reason: String,
    },
}

impl AdaptState {
    /// Starts over (the runtime keeps the body's current latent code).
    pub fn restart(&mut self) {
        *self = Self::default();
    }

    /// Whether the body should go into the next job: still observing or adapting, not in
    /// flight, with at least `min_observations` (≥ 3) observations.
    pub fn wants_job(&self, observations: usize, settings: &AdaptationSettings) -> bool {
        matches!(self.phase, AdaptPhase::Observing | AdaptPhase::Adapting)
            && !self.in_flight
            && observations >= settings.min_observations.max(3)
    }

    /// The body's part of a job: the first `horizon` observations of `window`; the body is
    /// in flight from now on.
    pub fn begin_job<K>(
        &mut self,
        key: K,
        window: &ObservationWindow,
        part: ObservedPart,
        latent: &[f32],
    ) -> JobBody<K> {
        self.in_flight = true;
        self.phase = AdaptPhase::Adapting;
        JobBody {
            key,
            observations: window.first(self.horizon.clamp(3, window.len().max(3))),
            part,
            latent: latent.to_vec(),
            carried: self.fit.clone(),
        }
    }

    /// The job could not be run (the worker is gone, the job was refused): the body waits
    /// for the next one.
    pub fn cancel_job(&mut self) {
        self.in_flight = false;
    }

    /// The body's observations could not be fitted (`reason`): it is no longer in flight,
    /// and the rejection counts towards [`AdaptPhase::Diverged`].
    pub fn refuse(&mut self, reason: String, settings: &AdaptationSettings) -> Applied {
        self.in_flight = false;
        self.reject(reason, settings)
    }

    fn reject(&mut self, reason: String, settings: &AdaptationSettings) -> Applied {
        self.rejected += 1;
        self.rejected_in_a_row += 1;
        let mut applied = Applied::default();
        if self.rejected_in_a_row >= settings.max_rejections && self.phase != AdaptPhase::Diverged
        {
            self.phase = AdaptPhase::Diverged;
            applied.event = Some(AdaptEvent::Diverged { reason });
        }
        applied
    }

    /// Takes a job's result for this body: reviews it ([`review`]), keeps or replaces the
    /// latent, doubles the horizon when a fit settles short of the whole window, and
    /// converges the body when a settled fit covers the whole `window` and the window is
    /// full or spans [`AdaptationSettings::converge_span`] seconds.
    pub fn apply<K>(
        &mut self,
        result: BodyResult<K>,
        window: &ObservationWindow,
        settings: &AdaptationSettings,
    ) -> Applied {
        self.in_flight = false;
        if self.initial_loss.is_nan() {
            self.initial_loss = result.loss_before as f32;
        }
        let verdict = review(
            &result.fit.state.latent,
            result.loss_before,
            result.loss,
            settings.explode_factor,
        );
        if let Verdict::Reject(reason) = verdict {
            return self.reject(reason, settings);
        }
        self.rejected_in_a_row = 0;
        self.loss = result.loss as f32;
        if result.improved {
            self.updates += 1;
            if self.history.len() == HISTORY {
                self.history.remove(0);
            }
            self.history.push(result.loss as f32);
        }
        let mut applied = Applied {
            latent: Some(result.fit.state.latent.clone()),
            event: None,
        };
        let span = result.fit.t_end - result.fit.t0;
        self.fit = Some(result.fit);
        if result.settled {
            let covers_window = result.window >= window.len();
            let enough = window.is_full() || span >= settings.converge_span;
            if !covers_window || !enough {
                self.horizon = (self.horizon * 2).min(window.capacity());
            } else if self.phase != AdaptPhase::Converged {
                self.phase = AdaptPhase::Converged;
                applied.event = Some(AdaptEvent::Converged {
                    loss: self.loss,
                    updates: self.updates,
                });
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_bounded_and_refuses_bad_samples() {
        let mut b = ObservationWindow::with_capacity(4);
        for i in 0..6 {
            b.push(f64::from(i) * 0.1, vec![i as f32]).unwrap();
        }
        assert_eq!(b.len(), 4);
        assert!(b.is_full());
        assert_eq!(b.samples().next().unwrap().values, vec![2.0]);
        assert_eq!(b.received, 6);
        assert!(matches!(
            b.push(0.3, vec![1.0]),
            Err(PushError::OutOfOrder { .. })
        ));
        assert!(matches!(
            b.push(1.0, vec![f32::NAN]),
            Err(PushError::NonFinite { .. })
        ));
        assert!(matches!(
            b.push(f64::INFINITY, vec![1.0]),
            Err(PushError::NonFinite { .. })
        ));
        assert!(matches!(
            b.push(1.0, vec![1.0, 2.0]),
            Err(PushError::Width { .. })
        ));
        assert_eq!(b.len(), 4);
        assert_eq!(b.first(2).len(), 2);
    }

    #[test]
    fn review_rejects_divergent_updates() {
        assert_eq!(review(&[0.1, 0.2], 1.0, 0.5, 1e3), Verdict::Accept);
        assert!(matches!(
            review(&[f32::NAN], 1.0, 0.5, 1e3),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            review(&[0.1], 1.0, f64::NAN, 1e3),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            review(&[0.1], 1.0, f64::INFINITY, 1e3),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            review(&[0.1], 1e-3, 10.0, 1e3),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn repeated_rejections_diverge_once() {
        let settings = AdaptationSettings::default();
        let mut s = AdaptState::default();
        let events: Vec<_> = (0..5)
            .filter_map(|_| s.refuse("bad".into(), &settings).event)
            .collect();
        assert_eq!(s.phase, AdaptPhase::Diverged);
        assert_eq!(events.len(), 1, "Diverged is reported once");
    }

    #[test]
    fn the_truth_is_sampled_on_its_interval() {
        let mut truth = TruthSimulator::new(
            Family::Pendulum,
            &[1.0, 1.0],
            vec![1.0, 0.0],
            ObservedPart::Positions,
            0.05,
            0.0,
            1,
        )
        .unwrap();
        let first = truth.advance(0.0).unwrap();
        assert_eq!((first.t, first.values.clone()), (0.0, vec![1.0]));
        let samples = (0..64).filter_map(|_| truth.advance(1.0 / 64.0)).count();
        assert!((19..=21).contains(&samples), "{samples} samples in 1 s at 20 Hz");
        assert!(truth.state()[0] < 1.0, "the pendulum swung");
        assert!(
            TruthSimulator::new(
                Family::Pendulum,
                &[1.0, -1.0],
                vec![1.0, 0.0],
                ObservedPart::Positions,
                0.05,
                0.0,
                1
            )
            .is_err()
        );
    }
}
