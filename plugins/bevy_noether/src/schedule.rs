//! Where noether runs in the frame, and the simulation clock.
//!
//! All systems live in one chained, public set enum in the schedule given to
//! [`crate::NoetherPlugins::new`] (default `FixedPostUpdate`), ordered before transform
//! propagation:
//!
//! ```text
//! NoetherSystems::Prepare → NoetherSystems::Step → NoetherSystems::Writeback → TransformSystems::Propagate
//! ```
//!
//! | set | what runs there |
//! |---|---|
//! | [`NoetherSystems::Prepare`] | the simulation clock advances; scenes spawn and respawn populations and apply finished fits; adaptation results are applied; bodies are checked against their models (an empty latent becomes the model's mean) |
//! | [`NoetherSystems::Step`] | every population is gathered, stepped in one batched call per model and method, and scattered back |
//! | [`NoetherSystems::Writeback`] | hidden truths advance and are observed, energies and entropies are measured, adaptation jobs are sent, diagnostics are published |
//!
//! Every system that changes simulation state runs here, in the fixed schedule. What runs
//! in `Update` only reads: asset-change tracking ([`crate::scene::SceneSystems`]), and the
//! optional views ([`TransformSystems`], the visuals, the inspector),
//! which interpolate between the last two fixed steps.
//!
//! Order your own systems against these sets, never against noether's functions.
//!
//! The simulation clock is a [`Time<Simulation>`]: pause, resume, single-step and speed
//! up or slow down the learned dynamics without touching the rest of the app.
//!
//! ```
//! use bevy::prelude::*;
//! use bevy_noether::prelude::*;
//! fn pause_on_space(keys: Res<ButtonInput<KeyCode>>, mut time: ResMut<Time<Simulation>>) {
//!     if keys.just_pressed(KeyCode::Space) {
//!         time.toggle_pause();
//!     }
//! }
//! # bevy::ecs::system::assert_is_system(pause_on_space);
//! ```

use std::time::Duration;

use bevy::{
    app::{App, Plugin},
    ecs::{
        intern::Interned,
        schedule::{IntoScheduleConfigs, ScheduleLabel, SystemSet},
        system::ResMut,
    },
    prelude::{Fixed, Res, Time},
    reflect::Reflect,
    transform::TransformSystems,
};

/// The phases of a noether step, chained in this order (see the module docs).
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoetherSystems {
    /// Clock and scene spawning.
    Prepare,
    /// Batched stepping of every population.
    Step,
    /// Energies, entropies, transforms.
    Writeback,
}

/// The simulation clock's system, first in [`NoetherSystems::Prepare`]: order systems that
/// read this tick's [`Simulation::tick`] after it.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClockSystems;

/// The context of [`Time<Simulation>`]: pause, speed and single steps of the learned
/// dynamics. Each fixed tick advances the simulation by `speed ×` the fixed timestep (or
/// by one fixed timestep per requested single step while paused). Change it through
/// [`SimulationControl`]; read it through the accessors.
#[derive(Clone, Debug, PartialEq, Reflect)]
pub struct Simulation {
    paused: bool,
    speed: f64,
    pending_steps: u32,
    tick: f64,
    steps: u64,
}

impl Default for Simulation {
    fn default() -> Self {
        Self {
            paused: false,
            speed: 1.0,
            pending_steps: 0,
            tick: 0.0,
            steps: 0,
        }
    }
}

impl Simulation {
    /// Simulated seconds the current tick advances (0 when nothing steps: paused, or
    /// before the first tick).
    pub fn tick(&self) -> f64 {
        self.tick
    }

    /// Ticks in which the dynamics advanced since startup.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Simulated seconds per fixed-timestep second (1 = real time).
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Whether the dynamics are frozen.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Single steps requested while paused and not yet taken.
    pub fn pending_steps(&self) -> u32 {
        self.pending_steps
    }
}

/// Controls on [`Time<Simulation>`].
pub trait SimulationControl {
    /// Freezes the dynamics.
    fn pause(&mut self);
    /// Resumes them.
    fn unpause(&mut self);
    /// Flips [`SimulationControl::pause`] / [`SimulationControl::unpause`].
    fn toggle_pause(&mut self);
    /// While paused, advances by one fixed timestep at the next tick.
    fn step_once(&mut self);
    /// Simulated seconds per real second.
    fn set_speed(&mut self, speed: f64);
    /// Whether the dynamics are frozen.
    fn is_paused(&self) -> bool;
}

impl SimulationControl for Time<Simulation> {
    fn pause(&mut self) {
        self.context_mut().paused = true;
    }

    fn unpause(&mut self) {
        self.context_mut().paused = false;
    }

    fn toggle_pause(&mut self) {
        let c = self.context_mut();
        c.paused = !c.paused;
    }

    fn step_once(&mut self) {
        self.context_mut().pending_steps += 1;
    }

    fn set_speed(&mut self, speed: f64) {
        self.context_mut().speed = if speed.is_finite() {
            speed.max(0.0)
        } else {
            1.0
        };
    }

    fn is_paused(&self) -> bool {
        self.context().paused
    }
}

/// Advances [`Time<Simulation>`] by this tick's simulated duration.
pub fn advance_simulation_clock(fixed: Res<Time<Fixed>>, mut sim: ResMut<Time<Simulation>>) {
    let dt = fixed.timestep().as_secs_f64();
    let c = sim.context_mut();
    let tick = if !c.paused {
        dt * c.speed
    } else if c.pending_steps > 0 {
        c.pending_steps -= 1;
        dt
    } else {
        0.0
    };
    c.tick = tick;
    if tick > 0.0 {
        c.steps += 1;
        sim.advance_by(Duration::from_secs_f64(tick));
    }
}

/// Configures [`NoetherSystems`] in a schedule and owns the simulation clock.
pub struct NoetherSchedulePlugin {
    /// Where the sets live.
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl Plugin for NoetherSchedulePlugin {
    fn build(&self, app: &mut App) {
        app.register_type::<Simulation>()
            .init_resource::<Time<Simulation>>()
            .configure_sets(
                self.schedule,
                (
                    NoetherSystems::Prepare,
                    NoetherSystems::Step,
                    NoetherSystems::Writeback,
                )
                    .chain()
                    .before(TransformSystems::Propagate),
            )
            .configure_sets(self.schedule, ClockSystems.in_set(NoetherSystems::Prepare))
            .add_systems(self.schedule, advance_simulation_clock.in_set(ClockSystems));
    }
}
