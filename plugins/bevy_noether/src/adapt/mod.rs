//! Online adaptation: bodies that watch their own (hidden or observed) physics and refine
//! their latent codes while the world keeps stepping.
//!
//! A body with an [`Observed`] component gathers observations — positions or full states
//! with timestamps — into its [`ObservationBuffer`], a bounded ring buffer. They come from
//! one of two [`ObservationSource`]s:
//!
//! - [`ObservationSource::HiddenTruth`]: a ground-truth simulator of the core runs beside
//!   the body from its [`HiddenTruth`](crate::dynamics::HiddenTruth) parameters and its
//!   spawn state, and is sampled every `interval` seconds with optional Gaussian noise;
//! - [`ObservationSource::Pushed`]: the game calls [`ObservationBuffer::push`] with what it
//!   sees (irregular and noisy samples are fine).
//!
//! The [`AdaptPlugin`] sends batches of observed bodies, one per model, to a worker thread
//! over crossbeam channels. The worker minimises the trajectory loss of
//! [`noether::meta::observed`] — the learned flow from the first observation over the
//! observed horizon, compared with the observations, plus λ_z‖z‖² — by Levenberg–Marquardt
//! steps with the network frozen, every body of a batch in the same kernel calls. The
//! frame loop never waits: it sends when the worker is free ([`AdaptSettings::max_bodies_per_job`]
//! bodies at most) and takes whatever results have arrived. Each body's [`Adaptation`]
//! says where it stands ([`AdaptationPhase`]) and how large its loss is;
//! [`AdaptationConverged`] and [`AdaptationDiverged`] messages fire when it settles. An
//! update with a non-finite latent or loss, or a loss that explodes, is rejected and the
//! last good latent kept; a result for a body despawned meanwhile is dropped.
//!
//! ```no_run
//! use bevy::prelude::*;
//! use bevy_noether::{adapt::{Observed, ObservationBuffer}, prelude::*};
//!
//! /// Feed what the game sees (here: a tracked object's angle) to a body.
//! fn observe(time: Res<Time>, mut bodies: Query<&mut ObservationBuffer, With<Observed>>) {
//!     for mut buffer in &mut bodies {
//!         let seen_angle = 0.3_f32; // from the game
//!         if let Err(e) = buffer.push(time.elapsed_secs_f64(), vec![seen_angle]) {
//!             warn!("{e}");
//!         }
//!     }
//! }
//! # bevy::ecs::system::assert_is_system(observe);
//! ```

mod plugin;
mod worker;

pub use plugin::{AdaptPlugin, AdaptSystems, AdaptationStats, TruthSimulator};

use std::collections::VecDeque;

use bevy::prelude::{
    Component, Entity, Message, Reflect, ReflectComponent, ReflectDefault, ReflectResource,
    Resource,
};
use noether::meta::{Observation, ObservedPart};

/// What a body's observations hold.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Reflect, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ObservedComponents {
    /// Positions q only (what a game usually sees).
    #[default]
    Positions,
    /// Full states x.
    States,
}

impl From<ObservedComponents> for ObservedPart {
    fn from(c: ObservedComponents) -> Self {
        match c {
            ObservedComponents::Positions => Self::Positions,
            ObservedComponents::States => Self::States,
        }
    }
}

/// Where a body's observations come from.
#[derive(Clone, Copy, Debug, PartialEq, Reflect)]
pub enum ObservationSource {
    /// A ground-truth simulator with the body's hidden parameters, sampled every
    /// `interval` simulated seconds. Each observed value gets Gaussian noise of standard
    /// deviation `noise ×` the largest magnitude that component has shown.
    HiddenTruth {
        /// Seconds between samples.
        interval: f64,
        /// Relative noise (0.01: 1% of the amplitude).
        noise: f32,
    },
    /// Samples pushed by the game with [`ObservationBuffer::push`].
    Pushed,
}

/// Marks a body as observed: its latent code is refined from its observations.
#[derive(Component, Clone, Debug, PartialEq, Reflect)]
#[reflect(Component, Debug)]
#[require(ObservationBuffer, Adaptation)]
pub struct Observed {
    /// What each observation holds.
    pub components: ObservedComponents,
    /// Where observations come from.
    pub source: ObservationSource,
}

impl Observed {
    /// Positions sampled from the hidden truth every `interval` seconds, without noise.
    pub fn hidden_truth(interval: f64) -> Self {
        Self {
            components: ObservedComponents::Positions,
            source: ObservationSource::HiddenTruth {
                interval,
                noise: 0.0,
            },
        }
    }

    /// Samples the game pushes.
    pub fn pushed(components: ObservedComponents) -> Self {
        Self {
            components,
            source: ObservationSource::Pushed,
        }
    }
}

/// One timestamped observation.
#[derive(Clone, Debug, PartialEq, Reflect)]
pub struct ObservedSample {
    /// Time, seconds (any clock, as long as it is the same for one body).
    pub t: f64,
    /// Observed values.
    pub values: Vec<f32>,
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

/// The most recent observations of a body, oldest first; at capacity the oldest is dropped.
#[derive(Component, Clone, Debug, PartialEq, Reflect)]
#[reflect(Component, Default, Debug)]
pub struct ObservationBuffer {
    samples: VecDeque<ObservedSample>,
    capacity: usize,
    /// Samples accepted since the body started observing.
    pub received: u64,
}

/// Default [`ObservationBuffer`] capacity: 3 s at 20 Hz.
pub const DEFAULT_CAPACITY: usize = 60;

impl Default for ObservationBuffer {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl ObservationBuffer {
    /// An empty buffer that keeps the last `capacity` samples (at least 3).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(3);
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
            received: 0,
        }
    }

    /// Adds a sample; the oldest is dropped when full.
    ///
    /// # Errors
    /// [`PushError`] for a non-finite value, a time not after the last one, or a width
    /// that differs from earlier samples; the buffer is unchanged.
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
        self.samples.push_back(ObservedSample { t, values });
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

    /// Whether the buffer holds `capacity` samples.
    pub fn is_full(&self) -> bool {
        self.samples.len() == self.capacity
    }

    /// The most samples held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &ObservedSample> {
        self.samples.iter()
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The first `count` samples as core observations.
    fn window(&self, count: usize) -> Vec<Observation> {
        self.samples
            .iter()
            .take(count)
            .map(|s| Observation {
                t: s.t,
                values: s.values.clone(),
            })
            .collect()
    }
}

/// Where a body's adaptation stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Reflect)]
pub enum AdaptationPhase {
    /// Gathering observations (fewer than needed for a fit).
    #[default]
    Observing,
    /// Its latent code is being refined.
    Adapting,
    /// The fit over a full buffer (or [`AdaptSettings::converge_span`] seconds of
    /// observations) stopped improving: the latent is final.
    Converged,
    /// Updates kept failing (non-finite or exploding loss); the last good latent is kept.
    Diverged,
}

/// A body's adaptation state, loss and history.
#[derive(Component, Clone, Debug, PartialEq, Reflect)]
#[reflect(Component, Default, Debug)]
pub struct Adaptation {
    /// Where it stands.
    pub phase: AdaptationPhase,
    /// Trajectory loss of the current latent on its last window (NaN before the first
    /// update).
    pub loss: f32,
    /// Trajectory loss of the first window at the starting latent.
    pub initial_loss: f32,
    /// Accepted updates.
    pub updates: u32,
    /// Rejected updates in total.
    pub rejected: u32,
    /// Rejected updates in a row (the body diverges at [`AdaptSettings::max_rejections`]).
    pub rejected_in_a_row: u32,
    /// Loss after each accepted update (the last [`HISTORY`]).
    pub history: Vec<f32>,
    /// Observations the fit currently covers (grows as fits settle: the loss over a long
    /// horizon is not convex in z, so the horizon doubles after each settled fit).
    pub horizon: usize,
    /// Whether a job for this body is at the worker.
    pub in_flight: bool,
    /// Fit state carried between jobs (latent, unobserved start, damping, start time).
    #[reflect(ignore)]
    fit: Option<worker::CarriedFit>,
}

/// Loss history kept per body.
pub const HISTORY: usize = 256;

impl Default for Adaptation {
    fn default() -> Self {
        Self {
            phase: AdaptationPhase::Observing,
            loss: f32::NAN,
            initial_loss: f32::NAN,
            updates: 0,
            rejected: 0,
            rejected_in_a_row: 0,
            history: Vec::new(),
            horizon: noether::meta::observed::FIRST_HORIZON,
            in_flight: false,
            fit: None,
        }
    }
}

impl Adaptation {
    /// Starts over (keeps nothing but the current latent code of the body).
    pub fn restart(&mut self) {
        *self = Self::default();
    }
}

/// Settings of online adaptation.
#[derive(Resource, Clone, Debug, PartialEq, Reflect)]
#[reflect(Resource, Default, Debug)]
pub struct AdaptSettings {
    /// Whether bodies are sent to the worker at all.
    pub enabled: bool,
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Levenberg–Marquardt steps per job.
    pub steps_per_job: usize,
    /// A job that lowers a body's loss on its (new) window by less than this fraction
    /// settles the fit: over a full buffer the body is converged, over a shorter horizon
    /// the horizon doubles.
    pub settle_tol: f64,
    /// A fit whose RMS misfit is at most this fraction of the observations' RMS spread is
    /// settled too (with noisy observations every refit fits some noise, so the relative
    /// improvement alone would never settle).
    pub settle_misfit: f64,
    /// A settled fit converges the body once it covers the whole buffer and the buffer is
    /// full or spans at least this many seconds.
    pub converge_span: f64,
    /// When a body observing its hidden truth converges, move its state to the truth's
    /// present as the fit estimates it (the fitted start carried along the learned flow),
    /// so body and truth move in step from then on. The energy bookkeeping restarts there.
    pub sync_on_converge: bool,
    /// Per-frame budget: bodies sent in one job, at most.
    pub max_bodies_per_job: usize,
    /// Jobs at the worker at once, at most (one job per model).
    pub max_jobs_in_flight: usize,
    /// Observations a body needs before its first fit.
    pub min_observations: usize,
    /// Rejected updates in a row after which a body is [`AdaptationPhase::Diverged`].
    pub max_rejections: u32,
    /// An update whose loss exceeds this multiple of the loss it started from is rejected.
    pub explode_factor: f64,
    /// Rayon threads of the worker (default: all logical CPUs but one, at least 1).
    /// Read when the plugin is built.
    pub worker_threads: usize,
    /// Fraction of the time the worker may be busy (1: always). On a machine with few
    /// cores the worker competes with the frame's own threads; a lower duty trades
    /// convergence speed for frame time. Read when the plugin is built.
    pub worker_duty: f64,
    /// Run the worker's threads at the lowest scheduling priority (nice 19 on Linux), so
    /// they use only CPU time the frame leaves idle. Read when the plugin is built.
    pub worker_background: bool,
}

impl Default for AdaptSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            lambda_z: noether::meta::FitConfig::default().lambda_z,
            steps_per_job: 2,
            settle_tol: 0.02,
            settle_misfit: 0.02,
            converge_span: 2.0,
            sync_on_converge: true,
            max_bodies_per_job: 256,
            max_jobs_in_flight: 1,
            min_observations: noether::meta::observed::FIRST_HORIZON,
            max_rejections: 3,
            explode_factor: 1e3,
            worker_threads: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
            worker_duty: 1.0,
            worker_background: true,
        }
    }
}

/// A body's fit settled over a full buffer.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct AdaptationConverged {
    /// The body.
    pub entity: Entity,
    /// Its final trajectory loss.
    pub loss: f32,
    /// Updates it took.
    pub updates: u32,
}

/// A body's updates kept failing; its last good latent is kept.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct AdaptationDiverged {
    /// The body.
    pub entity: Entity,
    /// Why the last update was rejected.
    pub reason: String,
}

/// Whether an update from the worker may replace a body's latent code.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_bounded_and_refuses_bad_samples() {
        let mut b = ObservationBuffer::with_capacity(4);
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
        assert_eq!(b.window(2).len(), 2);
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
}
