#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

pub mod adapt;
pub mod diagnostics;
pub mod dynamics;
pub mod headless;
#[cfg(feature = "egui")]
pub mod inspector;
pub mod model;
pub mod regression;
pub mod scene;
pub mod schedule;
#[cfg(feature = "render")]
pub mod visuals;

use bevy::{
    app::{FixedPostUpdate, PluginGroup, PluginGroupBuilder},
    ecs::{intern::Interned, schedule::ScheduleLabel},
};

/// The most used items, by name.
pub mod prelude {
    pub use crate::{
        NoetherPlugins,
        adapt::{
            Adaptation, AdaptationConverged, AdaptationDiverged, AdaptationPhase,
            ObservationBuffer, Observed,
        },
        dynamics::{BodyEnergy, HiddenTruth, LatentCode, NoetherBody, PhaseState, StepMethod},
        model::NoetherModel,
        scene::{NoetherSceneRoot, Population, SceneStatus},
        schedule::{NoetherSystems, Simulation, SimulationControl},
    };
}

/// All of noether's plugins. Each member works alone and can be disabled or replaced:
///
/// | member | what it does | feature |
/// |---|---|---|
/// | [`schedule::NoetherSchedulePlugin`] | the [`schedule::NoetherSystems`] sets and the simulation clock | |
/// | [`model::ModelPlugin`] | [`model::NoetherModel`] assets | |
/// | [`dynamics::DynamicsPlugin`] | batched stepping and energy bookkeeping | |
/// | [`scene::ScenePlugin`] | `*.noether.ron` population scenes, hot reload | |
/// | [`adapt::AdaptPlugin`] | online adaptation of observed bodies on a worker thread | |
/// | [`diagnostics::NoetherDiagnosticsPlugin`] | `noether/*` diagnostics | |
/// | [`visuals::VisualsPlugin`] | drawings, bars, phase portraits, camera | `render` |
/// | [`inspector::InspectorPlugin`] | egui inspector | `egui` |
///
/// ```no_run
/// use bevy::prelude::*;
/// use bevy_noether::prelude::*;
/// App::new()
///     .add_plugins(DefaultPlugins)
///     .add_plugins(NoetherPlugins::default().build().disable::<bevy_noether::diagnostics::NoetherDiagnosticsPlugin>())
///     .run();
/// ```
pub struct NoetherPlugins {
    schedule: Interned<dyn ScheduleLabel>,
}

impl NoetherPlugins {
    /// The plugins with their systems in `schedule` (a fixed-timestep schedule: the
    /// dynamics advance one step per run).
    pub fn new(schedule: impl ScheduleLabel) -> Self {
        Self {
            schedule: schedule.intern(),
        }
    }

    /// The group without its views (visuals, inspector), whichever features are on: for
    /// `MinimalPlugins` apps, servers and tests, which have no window, no `Assets<Mesh>`
    /// and no egui context.
    pub fn headless(self) -> PluginGroupBuilder {
        let group = self.build();
        #[cfg(feature = "render")]
        let group = group.disable::<visuals::VisualsPlugin>();
        #[cfg(feature = "egui")]
        let group = group.disable::<inspector::InspectorPlugin>();
        group
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
        let group = PluginGroupBuilder::start::<Self>()
            .add(schedule::NoetherSchedulePlugin { schedule: s })
            .add(model::ModelPlugin)
            .add(dynamics::DynamicsPlugin { schedule: s })
            .add(scene::ScenePlugin)
            .add(adapt::AdaptPlugin { schedule: s })
            .add(diagnostics::NoetherDiagnosticsPlugin { schedule: s });
        #[cfg(feature = "render")]
        let group = group.add(visuals::VisualsPlugin { schedule: s });
        #[cfg(feature = "egui")]
        let group = group.add(inspector::InspectorPlugin);
        group
    }
}
