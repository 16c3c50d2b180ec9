//! Online adaptation: bodies that watch their own (hidden or observed) physics and refine
//! their latent codes while the world keeps stepping.
//!
//! A body with an [`Observed`] component gathers observations — positions or full states
//! with timestamps — into its [`ObservationBuffer`], a bounded ring buffer. They come from
//! one of two [`ObservationSource`]s:
//!
//! - [`ObservationSource::HiddenTruth`]: a ground-truth simulator of the core
//!   ([`noether::runtime::TruthSimulator`]) runs beside the body from its
//!   [`HiddenTruth`](crate::dynamics::HiddenTruth) parameters and its state when observation
//!   began, and is sampled every `interval` seconds with optional Gaussian noise;
//! - [`ObservationSource::Pushed`]: the game calls [`ObservationBuffer::push`](ObservationWindow::push) with what it
//!   sees (irregular and noisy samples are fine). Any clock works for fitting; with times on
//!   the simulation clock (`Time<Simulation>::elapsed_secs_f64()`), a converged body is also
//!   moved into step with what it observes ([`AdaptationSettings::sync_on_converge`]).
//!
//! The state machine is the core's ([`noether::runtime::AdaptState`]); this plugin maps it
//! to the ECS. Every fixed tick, in [`NoetherSystems::Writeback`](crate::schedule::NoetherSystems),
//! [`AdaptPlugin`] sends batches of observed bodies, one per model, to a worker thread over
//! crossbeam channels; the worker runs Levenberg–Marquardt steps of the trajectory fit
//! ([`noether::runtime::run_job`]) on its own small thread pool. The frame loop never waits:
//! it sends when the worker is free ([`AdaptationSettings::max_bodies_per_job`] bodies at
//! most) and, in [`NoetherSystems::Prepare`](crate::schedule::NoetherSystems), takes
//! whatever results have arrived. Each body's [`Adaptation`] says where it stands
//! ([`AdaptPhase`]) and how large its loss is; [`AdaptationConverged`],
//! [`AdaptationStalled`] and [`AdaptationDiverged`] fire on the body when it settles
//! (observe them on the entity or globally). A body converges only when its misfit is at
//! the noise floor estimated from its own observations; one whose fit stops improving above
//! it is stalled and starts over later. An update with a non-finite latent or loss is
//! rejected and the last good latent kept; a job that panics fails its bodies and the
//! worker goes on; a latent of the wrong length is refused at dispatch with an error naming
//! the entity; a result for a body despawned meanwhile is dropped.
//!
//! The frame comes first: the app's update (and, inside it, the stepping) raises a flag
//! while it runs and the worker pauses before every stage of its rollouts until it is
//! lowered, so the worker's threads (one per logical CPU) compute while the frame is idle;
//! they also run at the lowest normal priority ([`AdaptWorkerConfig::background`]).
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

pub use noether::runtime::{AdaptPhase, AdaptState, AdaptationSettings, PushError};
pub use plugin::{AdaptPlugin, AdaptSystems, AdaptWorkerConfig, AdaptationStats, TruthSimulator};

use bevy::prelude::{
    Component, Deref, DerefMut, Entity, EntityEvent, Reflect, ReflectComponent, ReflectDefault,
    ReflectResource, Resource,
};
use noether::{meta::ObservedPart, runtime::ObservationWindow};

use crate::reflect::{AdaptationSettingsReflect, ObservedPartReflect};

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
    /// Samples pushed by the game with [`ObservationBuffer::push`](ObservationWindow::push).
    Pushed,
}

/// Marks a body as observed: its latent code is refined from its observations.
#[derive(Component, Clone, Debug, PartialEq, Reflect)]
#[reflect(Component, Debug)]
#[require(ObservationBuffer, Adaptation)]
pub struct Observed {
    /// What each observation holds: positions q (what a game usually sees) or full states.
    #[reflect(remote = ObservedPartReflect)]
    pub components: ObservedPart,
    /// Where observations come from.
    pub source: ObservationSource,
}

impl Observed {
    /// Positions sampled from the hidden truth every `interval` seconds, without noise.
    pub fn hidden_truth(interval: f64) -> Self {
        Self {
            components: ObservedPart::Positions,
            source: ObservationSource::HiddenTruth {
                interval,
                noise: 0.0,
            },
        }
    }

    /// Samples the game pushes.
    pub fn pushed(components: ObservedPart) -> Self {
        Self {
            components,
            source: ObservationSource::Pushed,
        }
    }
}

/// The most recent observations of a body, oldest first; at capacity the oldest is dropped
/// ([`ObservationWindow`]: `push`, `len`, `samples`, …).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct ObservationBuffer(#[reflect(ignore)] pub ObservationWindow);

impl ObservationBuffer {
    /// An empty buffer that keeps the last `capacity` samples (at least 3).
    pub fn with_capacity(capacity: usize) -> Self {
        Self(ObservationWindow::with_capacity(capacity))
    }
}

/// A body's adaptation: phase, loss, history ([`AdaptState`]).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct Adaptation(#[reflect(ignore)] pub AdaptState);

impl Adaptation {
    /// Where the body stands.
    pub fn phase(&self) -> AdaptPhase {
        self.0.phase
    }
}

/// Run-time settings of online adaptation ([`AdaptationSettings`]); the worker's threads
/// are a build-time knob ([`AdaptWorkerConfig`]).
#[derive(Resource, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Resource, Default, Debug)]
pub struct AdaptSettings(#[reflect(remote = AdaptationSettingsReflect)] pub AdaptationSettings);

/// A body's fit settled over a full observation window: fired on the body.
#[derive(EntityEvent, Clone, Debug, PartialEq)]
pub struct AdaptationConverged {
    /// The body.
    pub entity: Entity,
    /// Its final trajectory loss.
    pub loss: f32,
    /// Updates it took.
    pub updates: u32,
}

/// A body's fit has no descent left above its noise floor ([`AdaptPhase::Stalled`]): it
/// keeps its latent and starts over from a fresh estimate after
/// [`AdaptationSettings::retry_delay`] seconds (at `retry_at`). Fired on the body.
#[derive(EntityEvent, Clone, Debug, PartialEq)]
pub struct AdaptationStalled {
    /// The body.
    pub entity: Entity,
    /// RMS misfit of its fit.
    pub misfit: f64,
    /// The noise floor it did not reach.
    pub floor: f64,
}

/// A body's updates kept failing; its last good latent is kept. Fired on the body.
#[derive(EntityEvent, Clone, Debug, PartialEq)]
pub struct AdaptationDiverged {
    /// The body.
    pub entity: Entity,
    /// Why the last update was rejected.
    pub reason: String,
}
