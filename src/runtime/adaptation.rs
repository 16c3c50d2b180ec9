//! Online adaptation as a state machine: a body that is observed refines its latent code
//! from what it is seen doing, while the world keeps stepping.
//!
//! Per body, an [`AdaptState`] moves through the phases of [`AdaptPhase`]:
//!
//! ```text
//!  Observing ──(enough observations)──▶ Adapting ──(at the noise floor over a full window)──▶ Converged
//!                                          │  ▲
//!                                          │  └──(retry_after seconds, from a fresh start)──┐
//!                                          ├──(no descent left above the noise floor)──▶ Stalled
//!                                          └──(max_rejections rejected updates)──▶ Diverged
//! ```
//!
//! "At the noise floor" is measured, not assumed: the RMS misfit of the fit must be within
//! [`NOISE_MULTIPLE`] × the observation noise that [`noise_floor`] estimates from the window
//! itself (local cubic fits, independent of the model), or within
//! [`AdaptationSettings::settle_misfit`] of the motion's spread (the model's own accuracy,
//! which noise-free observations expose). A fit that stops improving above both is
//! [`AdaptPhase::Stalled`], never `Converged`.
//!
//! A runtime drives it in three moves, none of which blocks on the others:
//!
//! 1. [`AdaptState::wants_job`] says whether a body needs work; [`AdaptState::begin_job`]
//!    takes its observation window into a [`JobBody`] (the body is then in flight).
//! 2. [`run_job`] runs Levenberg–Marquardt steps of the trajectory fit of
//!    [`crate::meta::observed`] on every body of a [`Job`] (one model), batched through the
//!    CPU kernel: on a worker thread in the Bevy plugin, inline in a plain loop.
//! 3. [`AdaptState::apply`] reviews each [`BodyResult`] ([`review`]: a non-finite latent or
//!    loss is rejected and the last good latent kept; a step is only taken when it lowers
//!    the loss, so a finite loss cannot grow), moves the phase, and says what the runtime
//!    must do ([`Applied`]: a new latent, an event). A stalled body is due a fresh start
//!    ([`AdaptState::retry_due`], [`AdaptState::retry`]) from the model's encoder or mean
//!    latent.
//!
//! Observations come from the game or from a [`TruthSimulator`] running beside the body with
//! its hidden parameters.

use std::{
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nalgebra::{SMatrix, SVector};
use rand::{RngExt as _, rngs::Xoshiro256PlusPlus};
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    data::stream_rng,
    integrate::{FieldFlow, SMALL_DIM, SmallState, rk4_step},
    meta::{
        FitConfig, FitState, Observation, ObservedPart, Track, Values, fit_step,
        observed::{
            FIRST_HORIZON, checkpoint, extended_loss, predict, rollout_intervals,
            trajectory_rollout, validate, with_checkpoint,
        },
    },
    nn::cpu::{CpuModel, Guess},
    runtime::LearnedModel,
    systems::{Family, System, SystemError},
};

/// Default observation window of a body: 3 s at 20 Hz.
pub const DEFAULT_WINDOW: usize = 60;

/// Loss history kept per body.
pub const HISTORY: usize = 256;

/// Bodies of a [`Job`] fitted together in one batch (the unit of parallel work; the
/// [`FrameGate`] is checked before every stage of their rollouts, which for 16 bodies is
/// well under a millisecond of work).
pub const TILE_BODIES: usize = 16;

/// A flag the frame raises while it runs; background adaptation waits at its checkpoints
/// (before each stage of its rollouts) until the flag is lowered, so it computes only in
/// the time the frame leaves idle (pacing to the display, waiting for the GPU). Raising
/// nests: the whole update raises it once and the stepping once more, so a stepping
/// schedule run on its own is still guarded.
///
/// A frame loop that never idles would starve the work, so the wait is bounded: after
/// waiting [`FrameGate::MAX_WAIT`], a checkpoint lets its thread through for
/// [`FrameGate::PASS`] without waiting (at the lowest scheduling priority, sharing the
/// cores with the frame). The work then keeps at least `PASS / (MAX_WAIT + PASS)` of its
/// threads' time however busy the frame is.
#[derive(Debug, Default)]
pub struct FrameGate {
    depth: AtomicU32,
    /// Waiters sleep on `lowered` (no wake-ups while the frame runs); `lock` orders their
    /// check of the depth against the lowering's notification, so none is missed.
    lock: Mutex<()>,
    lowered: Condvar,
}

thread_local! {
    /// Until when this thread may pass the gate without waiting.
    static PASS_UNTIL: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

impl FrameGate {
    /// The longest a checkpoint waits for the gate to be lowered.
    pub const MAX_WAIT: Duration = Duration::from_millis(30);

    /// How long a thread that waited [`FrameGate::MAX_WAIT`] in vain passes freely.
    pub const PASS: Duration = Duration::from_millis(10);

    /// The frame (or its stepping) starts.
    pub fn raise(&self) {
        self.depth.fetch_add(1, Ordering::AcqRel);
    }

    /// The frame (or its stepping) is done; a lower without a raise does nothing. The
    /// outermost lowering wakes the waiting threads.
    pub fn lower(&self) {
        let lowered = self
            .depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
        if lowered == Ok(1) {
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.lowered.notify_all();
        }
    }

    /// Whether the frame is running.
    pub fn is_raised(&self) -> bool {
        self.depth.load(Ordering::Acquire) > 0
    }

    /// Waits while the gate is raised (asleep until it is lowered: a waiting thread takes
    /// no CPU time from the frame), at most [`FrameGate::MAX_WAIT`], after which this
    /// thread passes freely for [`FrameGate::PASS`]; returns the time waited.
    pub fn wait(&self) -> Duration {
        if !self.is_raised() {
            return Duration::ZERO;
        }
        let start = Instant::now();
        if PASS_UNTIL.get().is_some_and(|until| start < until) {
            return Duration::ZERO;
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.is_raised() {
            let Some(left) = Self::MAX_WAIT.checked_sub(start.elapsed()) else {
                PASS_UNTIL.set(Some(Instant::now() + Self::PASS));
                break;
            };
            guard = self
                .lowered
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        start.elapsed()
    }
}

/// The most recent observations of a body, oldest first; at capacity the oldest is dropped.
/// The samples are held in one slice ([`ObservationWindow::as_slice`]), so a reader (the
/// encoder) needs no copy; dropping the oldest moves the rest down (a window holds tens of
/// samples of a few bytes, and a sample arrives every few frames).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservationWindow {
    samples: Vec<Observation>,
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
            samples: Vec::new(),
            capacity: capacity.max(3),
            received: 0,
        }
    }

    /// Adds a sample; the oldest is dropped when full.
    ///
    /// # Errors
    /// [`PushError`] for a non-finite value, a time not after the last one, or a width
    /// that differs from earlier samples; the window is unchanged.
    pub fn push(&mut self, t: f64, values: impl Into<Values>) -> Result<(), PushError> {
        let values = values.into();
        if !t.is_finite() || values.iter().any(|v| !v.is_finite()) {
            return Err(PushError::NonFinite { t });
        }
        if let Some(last) = self.samples.last() {
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
            self.samples.remove(0);
        }
        self.samples.push(Observation { t, values });
        self.received += 1;
        Ok(())
    }

    /// Seconds from the oldest sample held to the newest (0 with fewer than two).
    pub fn span(&self) -> f64 {
        self.samples
            .first()
            .zip(self.samples.last())
            .map_or(0.0, |(first, last)| last.t - first.t)
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

    /// The samples, oldest first, as one slice.
    pub fn as_slice(&self) -> &[Observation] {
        &self.samples
    }

    /// The first `count` samples.
    pub fn first(&self, count: usize) -> Vec<Observation> {
        self.samples[..count.min(self.samples.len())].to_vec()
    }
}

/// The ground truth beside an observed body: the true system with its hidden parameters,
/// started from the body's state when observation began, stepped by RK4 at ≤ 5 ms
/// substeps and sampled every `interval` seconds with Gaussian noise of standard deviation
/// `noise ×` the largest magnitude each component has shown.
#[derive(Debug)]
pub struct TruthSimulator {
    system: Box<dyn System>,
    x: SmallState,
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
        // Every family's state fits (a unit test checks); the check above fixed its length.
        let x = SmallState::from_slice(&x0).ok_or_else(|| SystemError::InvalidState {
            family,
            reason: format!("the truth simulator holds at most {SMALL_DIM} components"),
        })?;
        Ok(Self {
            system,
            amplitude: x0.iter().map(|v| v.abs()).collect(),
            width: part.width(family.dim(), family.dof()),
            x,
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
            // RK4 on an inline state: no allocation per stage for a simulator stepped
            // every frame beside each observed body.
            let flow = FieldFlow(self.system.as_ref());
            for _ in 0..substeps {
                self.x = rk4_step(&flow, &self.x, h);
            }
            self.t += dt;
        }
        if self.t + 1e-9 < self.next_sample || !self.x.iter().all(|v| v.is_finite()) {
            return None;
        }
        self.next_sample = (self.next_sample + self.interval).max(self.t + 0.5 * self.interval);
        for (a, v) in self.amplitude.iter_mut().zip(self.x.iter()) {
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
    /// observations) is at the observation noise floor: the latent is final.
    Converged,
    /// Updates kept failing (non-finite loss or latent, observations that cannot be
    /// fitted); the last good latent is kept.
    Diverged,
    /// The fit has no descent left but its misfit is above the noise floor (a local
    /// minimum, or a motion the model cannot represent): the latent is kept, and the body
    /// starts over from a fresh estimate after [`AdaptationSettings::retry_after`] seconds.
    Stalled,
}

impl AdaptPhase {
    /// Every phase, in the order of their discriminants (counts are indexed by
    /// `phase as usize`).
    pub const ALL: [Self; 5] = [
        Self::Observing,
        Self::Adapting,
        Self::Converged,
        Self::Diverged,
        Self::Stalled,
    ];
}

/// How many times the estimated observation noise a fit's RMS misfit may be and still be
/// at the noise floor. A perfect model fitted to observations with noise σ leaves an RMS
/// misfit a little under σ; 2σ leaves room for a model error of up to √3 σ.
pub const NOISE_MULTIPLE: f64 = 2.0;

/// Points of each local fit of [`noise_floor`].
pub const NOISE_WINDOW: usize = 7;

/// The median of χ²₃ / 3 (the residual variance of a 7-point cubic fit, in units of σ²).
const CHI2_3_MEDIAN: f64 = 0.788_5;

/// The RMS noise of observed values, estimated from the observations alone: each run of
/// [`NOISE_WINDOW`] consecutive samples gets a least-squares cubic in time per component
/// (timestamps may be irregular); with noise σ its residual variance s² = RSS / (7 − 4) is
/// σ² χ²₃/3 in distribution, while a smooth motion sampled at game rates leaves a residual
/// orders of magnitude below the noise of a real sensor. The median over runs and
/// components, divided by the median of χ²₃/3, is robust to the odd collision or glitch.
/// 0 with fewer than seven observations (no estimate: the model floor decides).
pub fn noise_floor(observations: &[Observation]) -> f64 {
    if observations.len() < NOISE_WINDOW {
        return 0.0;
    }
    let width = observations[0].values.len();
    let mut variances = Vec::new();
    for run in observations.windows(NOISE_WINDOW) {
        let tc = run[NOISE_WINDOW / 2].t;
        let span = (run[NOISE_WINDOW - 1].t - run[0].t).max(f64::MIN_POSITIVE);
        let basis = SMatrix::<f64, NOISE_WINDOW, 4>::from_fn(|i, k| {
            ((run[i].t - tc) / span).powi(k as i32)
        });
        // Householder QR of the 7×4 basis (on the stack): the residual of y is y − Q Qᵀ y.
        let qr = basis.qr();
        let diagonal = qr.r().diagonal().abs();
        if diagonal.min() <= 1e-9 * diagonal.max() {
            continue;
        }
        let q = qr.q();
        for c in 0..width {
            let y = SVector::<f64, NOISE_WINDOW>::from_fn(|i, _| f64::from(run[i].values[c]));
            let rss = (y - q * (q.transpose() * y)).norm_squared();
            variances.push(rss / (NOISE_WINDOW - 4) as f64);
        }
    }
    if variances.is_empty() {
        return 0.0;
    }
    variances.sort_by(f64::total_cmp);
    (variances[variances.len() / 2] / CHI2_3_MEDIAN).sqrt()
}

/// Default [`AdaptationSettings::max_substep`]: four ticks of 1/64 s.
pub const DEFAULT_FIT_SUBSTEP: f64 = 4.0 / 64.0;

/// Run-time settings of online adaptation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptationSettings {
    /// Whether bodies are sent to the worker at all.
    pub enabled: bool,
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Levenberg–Marquardt steps per job.
    pub steps_per_job: usize,
    /// Longest RK4 substep of a fit's rollouts, in seconds ([`FitConfig::max_substep`]).
    /// A batch of bodies takes as many substeps per observation interval as its longest
    /// interval needs, so this should cover the longest spacing the observations have:
    /// sampled every 0.05 s on 1/64-s ticks, samples are 3 or 4 ticks apart, and a cap
    /// of 0.05 s would split every interval of a batch that holds one 4-tick interval in
    /// two (twice the fit's work). RK4's error at 1/16 s is far below observation noise
    /// for the shipped families (docs/protocol.md §8.1).
    pub max_substep: f64,
    /// A job that lowers a body's loss on its (new) window by less than this fraction has
    /// no descent left: at the noise floor the fit is done (over a full window the body is
    /// converged, over a shorter horizon the horizon doubles); above it the body stalls.
    pub settle_tol: f64,
    /// The model floor: an RMS misfit of at most this fraction of the observations' RMS
    /// spread counts as at the floor even when the estimated noise is lower (a learned
    /// model is not exact; noise-free observations show its error, not noise).
    pub settle_misfit: f64,
    /// A known RMS observation noise (absolute, in the observed units) caps the estimate
    /// of [`noise_floor`], so a motion the estimate mistakes for noise cannot lift the floor.
    pub noise: Option<f64>,
    /// A fit at the floor converges the body once it covers the whole window its job held
    /// and that window was full or spanned at least this many seconds.
    pub converge_span: f64,
    /// Seconds of new observations after which a stalled body starts over from a fresh
    /// estimate (the model's encoder, or its mean latent); doubled for each further stall
    /// of the same body, up to [`MAX_RETRY_BACKOFF`] times ([`AdaptationSettings::retry_delay`]).
    pub retry_after: f64,
    /// When a body converges, move its state to the present as the fit estimates it (the
    /// fitted start carried along the learned flow, [`CarriedFit::state_at`]), so body and
    /// what it observes move in step from then on. Off by default: the body keeps its own
    /// state and shows the real residual of its latent.
    pub sync_on_converge: bool,
    /// Bodies sent in one job, at most (the per-frame budget of a runtime).
    pub max_bodies_per_job: usize,
    /// Jobs at the worker at once, at most (one job per model).
    pub max_jobs_in_flight: usize,
    /// Observations a body needs before its first fit.
    pub min_observations: usize,
    /// Rejected updates in a row after which a body is [`AdaptPhase::Diverged`].
    pub max_rejections: u32,
}

/// The longest wait of a stalled body, in multiples of [`AdaptationSettings::retry_after`].
pub const MAX_RETRY_BACKOFF: f64 = 16.0;

impl AdaptationSettings {
    /// Seconds of new observations a body waits after its `stalls`-th stall:
    /// `retry_after · 2^(stalls − 1)`, at most [`MAX_RETRY_BACKOFF`] × `retry_after`. A stall
    /// is most often a wrong basin of the fit (a misfit tens of times the floor), which a
    /// fresh start soon leaves; a body its model cannot represent at all stalls again and
    /// again, and then costs the worker less and less.
    pub fn retry_delay(&self, stalls: u32) -> f64 {
        let doublings = stalls.saturating_sub(1).min(31);
        self.retry_after * f64::from(1u32 << doublings).min(MAX_RETRY_BACKOFF)
    }
}

impl Default for AdaptationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lambda_z: FitConfig::default().lambda_z,
            steps_per_job: 2,
            max_substep: DEFAULT_FIT_SUBSTEP,
            settle_tol: 0.02,
            settle_misfit: 0.02,
            noise: None,
            converge_span: 2.0,
            retry_after: 0.5,
            sync_on_converge: false,
            max_bodies_per_job: 256,
            max_jobs_in_flight: 1,
            min_observations: FIRST_HORIZON,
            max_rejections: 3,
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
    /// Its whole observation window, oldest first: the noise floor is estimated from it,
    /// and a fit at its floor goes on over more of it in the same job.
    pub window: Vec<Observation>,
    /// Observations fitted first: the first `horizon` of the window
    /// ([`JobBody::observations`]).
    pub horizon: usize,
    /// What each observation holds.
    pub part: ObservedPart,
    /// Its latent code now.
    pub latent: Vec<f32>,
    /// What the last job left.
    pub carried: Option<CarriedFit>,
}

impl<K> JobBody<K> {
    /// The observations fitted first: the first `horizon` of the window (all of it when
    /// the horizon is longer).
    pub fn observations(&self) -> &[Observation] {
        &self.window[..self.horizon.min(self.window.len())]
    }
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
    /// A job that lowers a body's loss by less than this fraction has no descent left.
    pub settle_tol: f64,
    /// The model floor, as a fraction of the observations' RMS spread.
    pub settle_misfit: f64,
    /// A known RMS observation noise capping the estimate.
    pub noise: Option<f64>,
    /// Bodies fitted together in one batch (the unit of parallel work).
    pub tile: usize,
    /// The frame's gate: the job waits at it before each observation interval of its
    /// rollouts.
    pub gate: Option<Arc<FrameGate>>,
}

impl<K> Job<K> {
    /// An empty job under `settings`.
    pub fn new(settings: &AdaptationSettings) -> Self {
        Self {
            bodies: Vec::new(),
            config: FitConfig {
                lambda_z: settings.lambda_z,
                max_substep: settings.max_substep,
                ..FitConfig::default()
            },
            steps: settings.steps_per_job,
            settle_tol: settings.settle_tol,
            settle_misfit: settings.settle_misfit,
            noise: settings.noise,
            tile: TILE_BODIES,
            gate: None,
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
    /// No descent left: the job lowered the loss by less than `settle_tol`, or no damping
    /// finds a lower loss.
    pub settled: bool,
    /// RMS misfit of the fit to the observed values (the loss without the latent penalty).
    pub misfit: f64,
    /// The noise floor of this window: [`NOISE_MULTIPLE`] × the estimated (or known) noise,
    /// or the model floor, whichever is larger.
    pub floor: f64,
    /// Observations the fit covered.
    pub window: usize,
    /// Observations the job held: the body's window when the job was formed. A fit that
    /// covers them all covers the window it was asked to fit, however many observations
    /// arrived while the job ran.
    pub observations: usize,
}

/// A finished job.
#[derive(Clone, Debug)]
pub struct JobResult<K> {
    /// Bodies fitted.
    pub bodies: Vec<BodyResult<K>>,
    /// Bodies whose observations could not be fitted, with the reason.
    pub invalid: Vec<(K, String)>,
    /// Seconds the job took, waits at the frame gate included.
    pub seconds: f64,
    /// Core-seconds it computed: each tile's time less its waits at the frame gate,
    /// summed over the worker's threads.
    pub compute_seconds: f64,
}

/// The fit state each body starts a job from: its current latent (the game may have
/// edited it), and the unobserved start carried forward along the learned flow when the
/// window has slid within the span the last fit covered (all such bodies in one batched
/// rollout, each over its own interval), or inferred afresh.
fn starting_states<K>(
    model: &CpuModel,
    bodies: &[JobBody<K>],
    config: &FitConfig,
) -> Vec<FitState> {
    fn carries<K>(b: &JobBody<K>) -> Option<&CarriedFit> {
        let t0 = b.observations()[0].t;
        b.carried
            .as_ref()
            .filter(|c| c.t0 <= t0 && t0 <= c.t_end && c.state.latent == b.latent)
    }
    // Bodies whose start must be carried from an earlier time, rolled out together.
    let moved: Vec<usize> = (0..bodies.len())
        .filter(|&i| carries(&bodies[i]).is_some_and(|c| c.t0 < bodies[i].observations()[0].t))
        .collect();
    let (mut latents, mut x0, mut dt) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &moved {
        let c = carries(&bodies[i]).expect("filtered above");
        latents.extend_from_slice(&c.state.latent);
        x0.extend_from_slice(&c.start);
        dt.push(bodies[i].observations()[0].t - c.t0);
    }
    let carried_now = if moved.is_empty() {
        Vec::new()
    } else {
        rollout_intervals(model, &latents, &x0, &[dt], config.max_substep)
            .pop()
            .unwrap_or_default()
    };
    let dim = model.dim();
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let track = Track {
                observations: body.observations(),
                part: body.part,
            };
            let width = body.window[0].values.len();
            let fresh = || FitState::new(model, track, body.latent.clone(), config);
            match carries(body) {
                Some(c) => {
                    let hidden = match moved.iter().position(|&m| m == i) {
                        Some(row) => carried_now[row * dim + width..(row + 1) * dim].to_vec(),
                        None => c.state.hidden.clone(),
                    };
                    if hidden.iter().all(|v| v.is_finite()) {
                        FitState {
                            hidden,
                            ..c.state.clone()
                        }
                    } else {
                        fresh()
                    }
                }
                None => match &body.carried {
                    Some(c) if c.state.latent == body.latent => FitState {
                        damping: c.state.damping,
                        ..fresh()
                    },
                    _ => fresh(),
                },
            }
        })
        .collect()
}

/// RMS misfit of a fit to its observed values: the trajectory loss without the latent
/// penalty λ_z ‖z‖², square-rooted (NaN for a non-finite loss).
fn misfit(loss: f64, latent: &[f32], lambda_z: f64) -> f64 {
    let penalty = lambda_z * latent.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    if loss.is_finite() {
        (loss - penalty).max(0.0).sqrt()
    } else {
        f64::NAN
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
                observations: b.observations(),
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
    // Bodies of like horizons share tiles: a tile's rollouts run as long as its longest
    // track, so a mixed tile would roll its short tracks on through idle intervals.
    let mut bodies = bodies;
    bodies.sort_by_key(|b| b.observations().len());
    let n = bodies.len();
    let gate = job.gate.as_ref();
    // Like the tiles below, the starting states wait at the frame's gate (their rollout
    // carries a slid window's start along the flow for every body at once).
    let (mut states, starting) = gated(gate, || starting_states(model, &bodies, &job.config));
    // Tiles of bodies, each fitted on its own (in parallel on the caller's rayon pool),
    // waiting at the frame gate before every stage of their rollouts. Each tile first
    // takes its bodies' noise floors from their own observations (a least-squares cubic
    // per run of samples: for a full window, as much work as a rollout), one body between
    // checkpoints.
    let tile = job.tile.max(1);
    let seen: Vec<Seen<'_>> = bodies
        .iter()
        .map(|b| Seen {
            all: &b.window,
            horizon: b.observations().len(),
            part: b.part,
        })
        .collect();
    let serial = clock.elapsed().as_secs_f64() - starting.waited;
    let fitted: Vec<((Vec<f64>, TileFit), Gated)> = seen
        .par_chunks(tile)
        .zip(states.par_chunks_mut(tile))
        .map(|(bodies, states)| {
            gated(gate, || {
                let floors: Vec<f64> = bodies
                    .iter()
                    .map(|b| {
                        checkpoint();
                        let estimate = noise_floor(b.all);
                        let noise = job.noise.map_or(estimate, |known| estimate.min(known));
                        (NOISE_MULTIPLE * noise)
                            .max(job.settle_misfit * spread(&b.all[..b.horizon]))
                    })
                    .collect();
                let fits = fit_tile(model, &job.config, job.steps, bodies, states, &floors);
                (floors, fits)
            })
        })
        .collect();
    let (mut floors, mut fits) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut compute_seconds = serial;
    for ((tile_floors, tile_fits), time) in fitted {
        floors.extend(tile_floors);
        fits.extend(tile_fits);
        compute_seconds += time.busy;
    }
    let lambda_z = job.config.lambda_z;
    let bodies: Vec<BodyResult<K>> = bodies
        .into_iter()
        .zip(states)
        .zip(fits)
        .zip(floors)
        .map(|(((b, state), fit), floor)| {
            let misfit = misfit(fit.loss, &state.latent, lambda_z);
            let mut start = b.window[0].values.to_vec();
            start.extend_from_slice(&state.hidden);
            // Settled: the fit the stage started from predicted its horizon nearly as well
            // as the refit does, or no descent is left at any damping.
            let settled = (fit.stage_before.is_finite()
                && fit.stage_before - fit.loss <= job.settle_tol * fit.stage_before)
                || state.damping >= 1e6;
            BodyResult {
                fit: CarriedFit {
                    state,
                    t0: b.window[0].t,
                    t_end: b.window[fit.horizon - 1].t,
                    start,
                },
                key: b.key,
                loss_before: fit.before,
                loss: fit.loss,
                improved: fit.improved,
                settled,
                misfit,
                floor,
                window: fit.horizon,
                observations: b.window.len(),
            }
        })
        .collect();
    JobResult {
        bodies,
        invalid,
        seconds: clock.elapsed().as_secs_f64(),
        compute_seconds,
    }
}

/// Time spent in a [`gated`] call.
struct Gated {
    /// Seconds it computed: its wall time less its waits at the gate.
    busy: f64,
    /// Seconds it waited at the gate.
    waited: f64,
}

/// Runs `f` with the frame's `gate` as this thread's checkpoint ([`with_checkpoint`]),
/// waiting at it once first; without a gate, just runs `f`.
fn gated<R>(gate: Option<&Arc<FrameGate>>, f: impl FnOnce() -> R) -> (R, Gated) {
    let started = Instant::now();
    let Some(gate) = gate else {
        let out = f();
        let busy = started.elapsed().as_secs_f64();
        return (out, Gated { busy, waited: 0.0 });
    };
    let waited = Arc::new(AtomicU64::new(gate.wait().as_nanos() as u64));
    let (gate, counter) = (gate.clone(), waited.clone());
    let out = with_checkpoint(
        Arc::new(move || {
            counter.fetch_add(gate.wait().as_nanos() as u64, Ordering::Relaxed);
        }),
        f,
    );
    let waited = waited.load(Ordering::Relaxed) as f64 * 1e-9;
    let busy = (started.elapsed().as_secs_f64() - waited).max(0.0);
    (out, Gated { busy, waited })
}

/// What a tile fit sees of one body.
struct Seen<'a> {
    /// Every observation there is to fit ([`JobBody::window`]).
    all: &'a [Observation],
    /// The first horizon: observations fitted first.
    horizon: usize,
    /// What each observation holds.
    part: ObservedPart,
}

/// How one body's fit went in a job.
struct BodyFit {
    /// Loss at the start of the job (its first horizon).
    before: f64,
    /// Loss at the start of its last horizon.
    stage_before: f64,
    /// Loss at the end.
    loss: f64,
    /// Some step lowered the loss.
    improved: bool,
    /// Observations its last horizon covers.
    horizon: usize,
}

type TileFit = Vec<BodyFit>;

/// Fits one tile of bodies: a plain rollout first (a fit carried to a longer window that
/// still holds needs no Jacobian and no step), then up to `steps` Levenberg–Marquardt
/// steps for the bodies above their floor. A body at its floor whose horizon does not yet
/// cover its window goes on in the same job over twice the horizon (a rollout of the new
/// half from where the last one ended, [`extended_loss`], then steps again), so a body
/// whose window filled while it waited for the worker is fitted over all of it in one job,
/// not one doubling per trip through the queue.
fn fit_tile(
    model: &CpuModel,
    config: &FitConfig,
    steps: usize,
    bodies: &[Seen<'_>],
    states: &mut [FitState],
    floors: &[f64],
) -> TileFit {
    let lambda_z = config.lambda_z;
    let n = bodies.len();
    let mut horizon: Vec<usize> = bodies.iter().map(|b| b.horizon).collect();
    let track = |i: usize, h: usize| Track {
        observations: &bodies[i].all[..h],
        part: bodies[i].part,
    };
    let tracks: Vec<Track<'_>> = (0..n).map(|i| track(i, horizon[i])).collect();
    // Each body's loss over its horizon and the state its rollout ended in there.
    let (before, mut ends): (Vec<f64>, Vec<Vec<f32>>) =
        trajectory_rollout(model, &tracks, states, config)
            .into_iter()
            .unzip();
    let (mut stage_before, mut last) = (before.clone(), before.clone());
    let mut improved = vec![false; n];
    let mut stage: Vec<usize> = (0..n).collect();
    let above = |i: usize, last: &[f64], states: &[FitState]| {
        misfit(last[i], &states[i].latent, lambda_z) > floors[i]
    };
    loop {
        for _ in 0..steps.max(1) {
            let active: Vec<usize> = stage
                .iter()
                .copied()
                .filter(|&i| above(i, &last, states))
                .collect();
            if active.is_empty() {
                break;
            }
            let sub_tracks: Vec<Track<'_>> = active.iter().map(|&i| track(i, horizon[i])).collect();
            let mut sub_states: Vec<FitState> = active.iter().map(|&i| states[i].clone()).collect();
            let out = fit_step(model, &sub_tracks, &mut sub_states, config);
            for ((&i, s), state) in active.iter().zip(out).zip(sub_states) {
                improved[i] |= s.accepted;
                last[i] = s.loss;
                states[i] = state;
                if let Some(end) = s.end {
                    ends[i] = end;
                }
            }
        }
        // At the floor with more window to cover: twice the horizon, in this job.
        let grow: Vec<usize> = stage
            .iter()
            .copied()
            .filter(|&i| !above(i, &last, states) && horizon[i] < bodies[i].all.len())
            .collect();
        if grow.is_empty() {
            break;
        }
        // The check goes on from where the fit's last rollout ended: only the new part of
        // the horizon is rolled.
        let from: Vec<usize> = grow.iter().map(|&i| horizon[i]).collect();
        for &i in &grow {
            horizon[i] = (2 * horizon[i]).min(bodies[i].all.len());
        }
        let sub_tracks: Vec<Track<'_>> = grow.iter().map(|&i| track(i, horizon[i])).collect();
        let sub_ends: Vec<Vec<f32>> = grow.iter().map(|&i| ends[i].clone()).collect();
        let sub_losses: Vec<f64> = grow.iter().map(|&i| last[i]).collect();
        let latents: Vec<&[f32]> = grow.iter().map(|&i| &states[i].latent[..]).collect();
        let extended = extended_loss(
            model,
            &sub_tracks,
            &from,
            &sub_ends,
            &sub_losses,
            &latents,
            config,
        );
        for (&i, (loss, end)) in grow.iter().zip(extended) {
            (stage_before[i], last[i], ends[i]) = (loss, loss, end);
        }
        stage = grow;
    }
    (0..n)
        .map(|i| BodyFit {
            before: before[i],
            stage_before: stage_before[i],
            loss: last[i],
            improved: improved[i],
            horizon: horizon[i],
        })
        .collect()
}

/// What a body does before its first fit when its model may have an encoder
/// ([`amortised_start`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// Nothing to do: the fit has started, or the model has no encoder (the body starts
    /// from its current latent).
    Ready,
    /// Wait: the window spans less than the encoder reads.
    Wait,
    /// The encoder read the window: give the body this latent code; its first job
    /// refines the encoder's reading.
    Encoded(Vec<f32>),
}

/// The amortised start of a body's fit: with an encoder, a fresh body waits until its
/// window spans the encoder's span, then starts from the encoder's reading of it (z and the
/// unobserved start) instead of its current latent and a finite-difference momentum; the
/// first Levenberg–Marquardt steps then refine that reading over the whole span.
pub fn amortised_start(
    model: &LearnedModel,
    state: &mut AdaptState,
    window: &ObservationWindow,
    part: ObservedPart,
) -> Start {
    let Some(encoder) = model.encoder.as_ref().filter(|_| state.is_fresh()) else {
        return Start::Ready;
    };
    if !encoder.covers(window.span()) {
        return Start::Wait;
    }
    match encoder.encode(window.as_slice()) {
        Some(guess) => {
            let latent = guess.latent.clone();
            state.start_from(guess, window, encoder.span(), part);
            Start::Encoded(latent)
        }
        // Long enough but unreadable (a non-finite reading): fit from the current latent.
        None => Start::Ready,
    }
}

/// Whether [`amortised_start`] would have the body wait: its model has an encoder, the body
/// is fresh, and its window spans less than the encoder reads. A check of two times, for
/// the runtime's scan of every body each frame; the reading itself is left to the bodies
/// that go into a job.
pub fn waits_for_encoder(
    model: &LearnedModel,
    state: &AdaptState,
    window: &ObservationWindow,
) -> bool {
    model
        .encoder
        .as_ref()
        .is_some_and(|e| state.is_fresh() && !e.covers(window.span()))
}

/// Whether an update may replace a body's latent code.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Take it.
    Accept,
    /// Keep the last good latent, for this reason.
    Reject(String),
}

/// Reviews an update: a non-finite latent or loss is rejected. (A finite loss cannot have
/// grown: [`fit_step`] only takes a step that lowers it.)
pub fn review(latent: &[f32], loss: f64) -> Verdict {
    if latent.iter().any(|v| !v.is_finite()) {
        Verdict::Reject("the latent code is not finite".into())
    } else if !loss.is_finite() {
        Verdict::Reject(format!("the trajectory loss is not finite ({loss})"))
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
    /// RMS misfit of the last fit and the noise floor it was held to (NaN before the
    /// first update).
    pub misfit: f64,
    /// The noise floor of the last fit.
    pub floor: f64,
    /// Times the body stalled.
    pub stalls: u32,
    /// Observation time after which a stalled body starts over.
    pub retry_at: f64,
    /// Observations the body waits for before its next job: a fit at its floor over the
    /// whole window, too short to converge yet, is not refitted until the window has grown
    /// to the next horizon.
    pub wait_for: usize,
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
            misfit: f64::NAN,
            floor: f64::NAN,
            stalls: 0,
            retry_at: f64::INFINITY,
            wait_for: 0,
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
    /// The fit has no descent left above the noise floor.
    Stalled {
        /// RMS misfit of the fit.
        misfit: f64,
        /// The floor it did not reach.
        floor: f64,
        /// Observation time at which the body starts over.
        retry_at: f64,
    },
}

impl AdaptState {
    /// Starts over (the runtime keeps the body's current latent code).
    pub fn restart(&mut self) {
        *self = Self::default();
    }

    /// Whether a stalled body is due its fresh start: the newest observation in `window`
    /// is at least [`AdaptationSettings::retry_after`] seconds past the stall.
    pub fn retry_due(&self, window: &ObservationWindow) -> bool {
        self.phase == AdaptPhase::Stalled
            && !self.in_flight
            && window
                .samples()
                .last()
                .is_some_and(|o| o.t >= self.retry_at)
    }

    /// Whether the body's fit has not started yet (its first job is ahead of it).
    pub fn is_fresh(&self) -> bool {
        self.fit.is_none() && self.phase == AdaptPhase::Observing && !self.in_flight
    }

    /// Starts the fit from an encoder's reading of `window` ([`amortised_start`]): the
    /// latent and unobserved start at the window's first observation are carried into the
    /// first job, whose horizon covers every observation the encoder read.
    pub fn start_from(
        &mut self,
        guess: Guess,
        window: &ObservationWindow,
        span: f64,
        part: ObservedPart,
    ) {
        let Some(first) = window.samples().next() else {
            return;
        };
        let hidden = match part {
            ObservedPart::Positions => guess.hidden,
            ObservedPart::States => Vec::new(),
        };
        let mut start = first.values.to_vec();
        start.extend_from_slice(&hidden);
        let read = window
            .samples()
            .take_while(|o| o.t <= first.t + span + 1e-9)
            .count();
        self.horizon = read.max(FIRST_HORIZON);
        self.fit = Some(CarriedFit {
            state: FitState {
                latent: guess.latent,
                hidden,
                damping: FitConfig::default().initial_damping,
            },
            t0: first.t,
            t_end: first.t,
            start,
        });
    }

    /// Starts a stalled body over: the fit, horizon and phase are reset; counters are
    /// kept. The runtime gives the body its fresh latent (encoder or mean) with this.
    pub fn retry(&mut self) {
        *self = Self {
            updates: self.updates,
            rejected: self.rejected,
            stalls: self.stalls,
            history: std::mem::take(&mut self.history),
            initial_loss: self.initial_loss,
            ..Self::default()
        };
    }

    /// Whether the body should go into the next job: still observing or adapting, not in
    /// flight, with at least `min_observations` (≥ 3) observations and as many as it waits
    /// for ([`AdaptState::wait_for`]).
    pub fn wants_job(&self, observations: usize, settings: &AdaptationSettings) -> bool {
        matches!(self.phase, AdaptPhase::Observing | AdaptPhase::Adapting)
            && !self.in_flight
            && observations >= settings.min_observations.max(3).max(self.wait_for)
    }

    /// The body's part of a job: its window (one copy), fitted first over the body's
    /// horizon; the body is in flight from now on.
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
            window: window.first(window.len()),
            horizon: self.horizon.clamp(3, window.len().max(3)),
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
        if self.rejected_in_a_row >= settings.max_rejections && self.phase != AdaptPhase::Diverged {
            self.phase = AdaptPhase::Diverged;
            applied.event = Some(AdaptEvent::Diverged { reason });
        }
        applied
    }

    /// Takes a job's result for this body: reviews it ([`review`]), keeps or replaces the
    /// latent, and moves the phase. A fit at its noise floor ([`BodyResult::floor`]) that
    /// covers less than the observations its job held ([`BodyResult::observations`])
    /// doubles the horizon; covering them all, a full window or one spanning
    /// [`AdaptationSettings::converge_span`] seconds, it converges the body.
    /// A fit with no descent left above the floor stalls the body until
    /// [`AdaptationSettings::retry_after`] more seconds of observations have arrived.
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
        let verdict = review(&result.fit.state.latent, result.loss);
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
        // The time the fitted samples cover, each standing for its interval: 40 samples
        // 0.05 s apart cover 2 s.
        let n = result.window.max(2) as f64;
        let span = (result.fit.t_end - result.fit.t0) * n / (n - 1.0);
        let newest = result.fit.t_end;
        self.fit = Some(result.fit);
        (self.misfit, self.floor) = (result.misfit, result.floor);
        let at_floor = result.misfit <= result.floor;
        // The job may have grown the horizon itself.
        self.horizon = self.horizon.max(result.window);
        if at_floor {
            // Judged on the window the job held: observations that arrived while it ran
            // were not the fit's to cover, and asking for them would hold back every body
            // whose window is still filling by a further trip through the queue.
            let covers_window = result.window >= result.observations;
            let enough = result.observations >= window.capacity() || span >= settings.converge_span;
            if !covers_window || !enough {
                self.horizon = (self.horizon * 2).min(window.capacity());
                if covers_window {
                    self.wait_for = self.horizon;
                }
            } else if self.phase != AdaptPhase::Converged {
                self.phase = AdaptPhase::Converged;
                applied.event = Some(AdaptEvent::Converged {
                    loss: self.loss,
                    updates: self.updates,
                });
            }
        } else if result.settled {
            self.phase = AdaptPhase::Stalled;
            self.stalls += 1;
            self.retry_at = newest.max(window.samples().last().map_or(newest, |o| o.t))
                + settings.retry_delay(self.stalls);
            applied.event = Some(AdaptEvent::Stalled {
                misfit: result.misfit,
                floor: result.floor,
                retry_at: self.retry_at,
            });
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_gate_nests_and_lets_a_starved_thread_through() {
        let gate = FrameGate::default();
        assert_eq!(gate.wait(), Duration::ZERO, "a lowered gate does not wait");
        gate.raise();
        gate.raise();
        gate.lower();
        assert!(
            gate.is_raised(),
            "the stepping's lower leaves the frame's raise"
        );
        gate.lower();
        gate.lower();
        assert!(!gate.is_raised(), "an extra lower does not wrap around");
        // A frame that never lowers it: the wait ends at MAX_WAIT, then the thread passes.
        gate.raise();
        assert!(gate.wait() >= FrameGate::MAX_WAIT);
        assert!(
            gate.wait() < FrameGate::PASS,
            "the starved thread passes freely"
        );
        std::thread::spawn(move || {
            assert!(gate.wait() >= FrameGate::MAX_WAIT, "the pass is per thread");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_waiting_thread_wakes_when_the_gate_is_lowered() {
        // Woken by the lowering, not by its MAX_WAIT: the thread does not take the starved
        // thread's pass. (A few tries: a machine that stalls this thread past MAX_WAIT
        // between raising and lowering would time the waiter out.)
        let woken = (0..5).any(|_| {
            let gate = Arc::new(FrameGate::default());
            gate.raise();
            let waiter = {
                let gate = gate.clone();
                std::thread::spawn(move || {
                    gate.wait();
                    !gate.is_raised() && PASS_UNTIL.get().is_none()
                })
            };
            std::thread::sleep(Duration::from_millis(2));
            gate.lower();
            waiter.join().unwrap()
        });
        assert!(woken);
    }

    #[test]
    fn the_window_is_bounded_and_refuses_bad_samples() {
        let mut b = ObservationWindow::with_capacity(4);
        for i in 0..6 {
            b.push(f64::from(i) * 0.1, vec![i as f32]).unwrap();
        }
        assert_eq!(b.len(), 4);
        assert!(b.is_full());
        assert_eq!(b.samples().next().unwrap().values[..], [2.0]);
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
    fn review_rejects_non_finite_updates() {
        assert_eq!(review(&[0.1, 0.2], 0.5), Verdict::Accept);
        assert!(matches!(review(&[f32::NAN], 0.5), Verdict::Reject(_)));
        assert!(matches!(review(&[0.1], f64::NAN), Verdict::Reject(_)));
        assert!(matches!(review(&[0.1], f64::INFINITY), Verdict::Reject(_)));
    }

    /// Samples of a(t) = sin(3t) + 0.5 cos(7t) every `dt` s (jittered by ±20 %), with
    /// Gaussian noise of standard deviation `sigma`.
    fn noisy_track(sigma: f64, dt: f64, n: usize) -> Vec<Observation> {
        let mut rng = stream_rng("test/noise", 7, 0);
        let mut t = 0.0;
        (0..n)
            .map(|_| {
                t += dt * (1.0 + 0.4 * (rng.random::<f64>() - 0.5));
                let g: f64 = rng.sample(StandardNormal);
                let v = (3.0 * t).sin() + 0.5 * (7.0 * t).cos() + sigma * g;
                Observation {
                    t,
                    values: [v as f32][..].into(),
                }
            })
            .collect()
    }

    #[test]
    fn tick_spaced_observations_take_one_fit_substep_per_interval() {
        // Samples every 0.05 s on 1/64-s ticks land 3 or 4 ticks apart.
        let settings = AdaptationSettings::default();
        for ticks in [3.0, 4.0] {
            let interval = ticks / 64.0;
            assert_eq!(
                crate::meta::observed::substeps(interval, settings.max_substep),
                1
            );
        }
        assert_eq!(
            crate::meta::observed::substeps(5.0 / 64.0, settings.max_substep),
            2
        );
        assert_eq!(
            Job::<u32>::new(&settings).config.max_substep,
            settings.max_substep
        );
    }

    #[test]
    fn the_noise_floor_is_estimated_from_the_observations() {
        for sigma in [0.005, 0.01, 0.05] {
            let estimate = noise_floor(&noisy_track(sigma, 0.05, 60));
            assert!(
                (0.6 * sigma..1.5 * sigma).contains(&estimate),
                "σ = {sigma}: estimated {estimate}"
            );
        }
        // A smooth motion is not mistaken for noise of a real sensor's size: with a 7-rad/s
        // tone sampled at 20 Hz the cubic fits leave about 0.2 % of the amplitude (1.5).
        let clean = noise_floor(&noisy_track(0.0, 0.05, 60));
        assert!(clean < 5e-3, "noise-free samples: estimated {clean}");
        assert_eq!(
            noise_floor(&noisy_track(0.01, 0.05, 6)),
            0.0,
            "too few to tell"
        );
    }

    fn result(settled: bool, misfit: f64, floor: f64, window: usize) -> BodyResult<u32> {
        BodyResult {
            key: 0,
            fit: CarriedFit {
                state: FitState {
                    latent: vec![0.1, 0.2],
                    hidden: vec![0.0],
                    damping: 1e-2,
                },
                t0: 0.0,
                t_end: 2.95,
                start: vec![1.0, 0.0],
            },
            loss_before: 2.0 * misfit * misfit,
            loss: misfit * misfit,
            improved: true,
            settled,
            misfit,
            floor,
            window,
            observations: window,
        }
    }

    /// A 60-sample window holding `samples` observations of a body at rest, 0.05 s apart.
    fn resting_window(samples: u32) -> ObservationWindow {
        let mut window = ObservationWindow::with_capacity(60);
        for i in 0..samples {
            window.push(f64::from(i) * 0.05, vec![0.0]).unwrap();
        }
        window
    }

    #[test]
    fn a_fit_without_descent_above_the_floor_stalls_and_is_retried() {
        let settings = AdaptationSettings::default();
        let mut window = resting_window(60);
        // Still descending above the floor: keep adapting.
        let mut s = AdaptState {
            horizon: 60,
            phase: AdaptPhase::Adapting,
            ..AdaptState::default()
        };
        assert_eq!(
            s.apply(result(false, 0.3, 0.02, 60), &window, &settings)
                .event,
            None
        );
        assert_eq!(s.phase, AdaptPhase::Adapting);
        // No descent left above the floor: stalled, not converged.
        let applied = s.apply(result(true, 0.3, 0.02, 60), &window, &settings);
        assert!(matches!(applied.event, Some(AdaptEvent::Stalled { .. })));
        assert_eq!(s.phase, AdaptPhase::Stalled);
        assert!(!s.wants_job(60, &settings), "a stalled body waits");
        assert!(!s.retry_due(&window));
        window.push(2.95 + settings.retry_after, vec![0.0]).unwrap();
        assert!(s.retry_due(&window));
        s.retry();
        assert_eq!(
            (s.phase, s.stalls, s.horizon),
            (AdaptPhase::Observing, 1, FIRST_HORIZON)
        );
        assert!(s.wants_job(60, &settings));
        // A second stall waits twice as long; the wait stops doubling at 16×.
        s.horizon = 60;
        s.phase = AdaptPhase::Adapting;
        let newest = window.samples().last().unwrap().t;
        let applied = s.apply(result(true, 0.3, 0.02, 60), &window, &settings);
        assert!(
            matches!(applied.event, Some(AdaptEvent::Stalled { retry_at, .. })
                if retry_at == newest + 2.0 * settings.retry_after),
            "{applied:?}"
        );
        assert_eq!(
            settings.retry_delay(9),
            MAX_RETRY_BACKOFF * settings.retry_after
        );
        // At the floor over the whole full window: converged.
        s.horizon = 60;
        s.phase = AdaptPhase::Adapting;
        let applied = s.apply(result(true, 0.01, 0.02, 60), &window, &settings);
        assert!(matches!(applied.event, Some(AdaptEvent::Converged { .. })));
        assert_eq!(s.phase, AdaptPhase::Converged);
    }

    #[test]
    fn a_fit_is_judged_on_the_observations_its_job_held() {
        let settings = AdaptationSettings::default();
        // 2.25 s of observations when the job was formed; 0.5 s more arrived while it ran.
        let window = resting_window(55);
        let adapting = |horizon| AdaptState {
            phase: AdaptPhase::Adapting,
            horizon,
            ..AdaptState::default()
        };
        let at_floor = |covered: usize| BodyResult {
            fit: CarriedFit {
                t_end: (covered - 1) as f64 * 0.05,
                ..result(true, 0.01, 0.02, covered).fit
            },
            observations: 45,
            ..result(true, 0.01, 0.02, covered)
        };
        let mut s = adapting(45);
        let applied = s.apply(at_floor(45), &window, &settings);
        assert!(
            matches!(applied.event, Some(AdaptEvent::Converged { .. })),
            "{applied:?}"
        );
        // Part of what the job held is not covered: the horizon grows instead.
        let mut s = adapting(40);
        let applied = s.apply(at_floor(40), &window, &settings);
        assert_eq!(applied.event, None);
        assert_eq!((s.phase, s.horizon), (AdaptPhase::Adapting, 60));
        // All it held, but too short a span to converge on: wait for a longer window.
        let mut s = adapting(30);
        let short = BodyResult {
            observations: 30,
            ..at_floor(30)
        };
        assert_eq!(s.apply(short, &window, &settings).event, None);
        assert_eq!((s.phase, s.wait_for), (AdaptPhase::Adapting, 60));
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
        assert_eq!((first.t, &first.values[..]), (0.0, &[1.0][..]));
        let samples = (0..64).filter_map(|_| truth.advance(1.0 / 64.0)).count();
        assert!(
            (19..=21).contains(&samples),
            "{samples} samples in 1 s at 20 Hz"
        );
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
