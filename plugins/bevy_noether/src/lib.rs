#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

pub mod adapt;
#[cfg(feature = "render")]
pub mod controls;
pub mod diagnostics;
pub mod dynamics;
#[cfg(feature = "headless")]
pub mod headless;
#[cfg(feature = "egui")]
pub mod inspector;
pub mod model;
mod reflect;
#[cfg(feature = "regression")]
pub mod regression;
pub mod scene;
pub mod schedule;
pub mod transform;
#[cfg(feature = "render")]
pub mod visuals;

use bevy::{
    app::{FixedPostUpdate, PluginGroup, PluginGroupBuilder},
    ecs::{intern::Interned, schedule::ScheduleLabel},
};

/// The most used items, by name.
pub mod prelude {
    #[cfg(feature = "egui")]
    pub use crate::inspector::InspectorPlugin;
    pub use crate::{
        NoetherPlugins,
        adapt::{
            AdaptPhase, AdaptSettings, Adaptation, AdaptationConverged, AdaptationDiverged,
            AdaptationStalled, ObservationBuffer, Observed,
        },
        dynamics::{
            BodyEnergy, BodyIntegrator, FrozenBody, HiddenTruth, InvalidBody, LatentCode,
            NoetherBackend, NoetherBody, PhaseState,
        },
        model::NoetherModel,
        scene::{NoetherScene, NoetherSceneRoot, Population, SceneReady, SceneStatus},
        schedule::{NoetherSystems, Simulation, SimulationControl},
        transform::{ConfigurationMap, StateTransform, StateTransformPlugin},
    };
    #[cfg(feature = "render")]
    pub use crate::{controls::SimulationControlsPlugin, visuals::VisualsPlugin};
    pub use noether::{integrate::Integrator, meta::ObservedPart, systems::Family};
}

/// noether's simulation plugins. Each member works alone and can be disabled or replaced:
///
/// | member | what it does |
/// |---|---|
/// | [`schedule::NoetherSchedulePlugin`] | the [`schedule::NoetherSystems`] sets and the simulation clock |
/// | [`model::ModelPlugin`] | [`model::NoetherModel`] assets (`*.model.ron`) |
/// | [`dynamics::DynamicsPlugin`] | body checks, batched stepping, energy bookkeeping |
/// | [`scene::ScenePlugin`] | `*.noether.ron` population scenes, async latent fits, hot reload |
/// | [`adapt::AdaptPlugin`] | online adaptation of observed bodies on a worker thread |
/// | [`diagnostics::NoetherDiagnosticsPlugin`] | `noether/*` diagnostics |
///
/// Views are plugins you add yourself, like avian's `PhysicsDebugPlugin`:
///
/// | plugin | what it does | feature |
/// |---|---|---|
/// | [`transform::StateTransformPlugin`] | writes each [`transform::StateTransform`] body's configuration to its `Transform` (sprites and meshes follow) | |
/// | `visuals::VisualsPlugin` | gizmo drawings of every family, bars, phase portraits, camera | `render` |
/// | `inspector::InspectorPlugin` | the egui inspector | `egui` |
/// | `controls::SimulationControlsPlugin` | Space pauses, S steps, +/− speed, Esc quits | `render` |
///
/// Build-time knobs are on the group ([`NoetherPlugins::new`], [`NoetherPlugins::with_backend`],
/// [`NoetherPlugins::with_adaptation_worker`]); run-time knobs are resources
/// ([`adapt::AdaptSettings`], [`dynamics::DynamicsSettings`], [`schedule::Simulation`]).
///
/// ```no_run
/// use bevy::prelude::*;
/// use bevy_noether::prelude::*;
/// App::new()
///     .add_plugins(DefaultPlugins)
///     .add_plugins(
///         NoetherPlugins::default()
///             .build()
///             .disable::<bevy_noether::diagnostics::NoetherDiagnosticsPlugin>(),
///     )
///     .add_plugins((VisualsPlugin, InspectorPlugin))
///     .run();
/// ```
#[derive(Clone, Debug)]
pub struct NoetherPlugins {
    schedule: Interned<dyn ScheduleLabel>,
    backend: dynamics::NoetherBackend,
    worker: adapt::AdaptWorkerConfig,
}

impl NoetherPlugins {
    /// The plugins with their systems in `schedule` (a fixed-timestep schedule: the
    /// dynamics advance one step per run).
    pub fn new(schedule: impl ScheduleLabel) -> Self {
        Self {
            schedule: schedule.intern(),
            backend: dynamics::NoetherBackend::default(),
            worker: adapt::AdaptWorkerConfig::default(),
        }
    }

    /// Which device steps the bodies (default [`dynamics::NoetherBackend::Auto`]).
    pub fn with_backend(mut self, backend: dynamics::NoetherBackend) -> Self {
        self.backend = backend;
        self
    }

    /// The adaptation worker's threads, duty and priority.
    pub fn with_adaptation_worker(mut self, worker: adapt::AdaptWorkerConfig) -> Self {
        self.worker = worker;
        self
    }

    /// The group as it is: it holds no views any more (they are plugins you add), so
    /// there is nothing to take out for a headless app.
    #[deprecated(
        since = "0.1.0",
        note = "the group has no views any more; use `build()` or add it as it is"
    )]
    pub fn headless(self) -> PluginGroupBuilder {
        self.build()
    }
}

impl Default for NoetherPlugins {
    /// In `FixedPostUpdate`, after game logic in `FixedUpdate`.
    fn default() -> Self {
        Self::new(FixedPostUpdate)
    }
}

impl PluginGroup for NoetherPlugins {
    fn build(self) -> PluginGroupBuilder {
        let s = self.schedule;
        PluginGroupBuilder::start::<Self>()
            .add(schedule::NoetherSchedulePlugin { schedule: s })
            .add(model::ModelPlugin)
            .add(dynamics::DynamicsPlugin {
                schedule: s,
                backend: self.backend,
            })
            .add(scene::ScenePlugin { schedule: s })
            .add(adapt::AdaptPlugin {
                schedule: s,
                worker: self.worker,
            })
            .add(diagnostics::NoetherDiagnosticsPlugin { schedule: s })
    }
}
