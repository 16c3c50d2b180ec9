//! Keyboard controls of the simulation clock (feature `render`), shared by `noether-play`
//! and the examples: add [`SimulationControlsPlugin`] to an app with a window.
//!
//! | key | action |
//! |---|---|
//! | Space | pause / resume the dynamics |
//! | S | one step (pauses) |
//! | + / − | double / halve the simulation speed |
//! | Esc | quit |

use bevy::{
    app::{App, AppExit, Plugin, Update},
    prelude::*,
};

use crate::schedule::{Simulation, SimulationControl};

/// The key handler, in `Update`.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimulationControlsSystems;

/// Applies the keys of the module docs to [`Time<Simulation>`].
fn controls(
    keys: Res<ButtonInput<KeyCode>>,
    mut time: ResMut<Time<Simulation>>,
    mut exit: MessageWriter<AppExit>,
) {
    if keys.just_pressed(KeyCode::Space) {
        time.toggle_pause();
    }
    if keys.just_pressed(KeyCode::KeyS) {
        time.pause();
        time.step_once();
    }
    let speed = time.context().speed();
    if keys.just_pressed(KeyCode::Equal) || keys.just_pressed(KeyCode::NumpadAdd) {
        time.set_speed(speed * 2.0);
    }
    if keys.just_pressed(KeyCode::Minus) || keys.just_pressed(KeyCode::NumpadSubtract) {
        time.set_speed(speed / 2.0);
    }
    if keys.just_pressed(KeyCode::Escape) {
        exit.write(AppExit::Success);
    }
}

/// Space pauses, S steps, +/− change speed, Esc quits (see the module docs).
#[derive(Default)]
pub struct SimulationControlsPlugin;

impl Plugin for SimulationControlsPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Time<Simulation>>()
            .add_systems(Update, controls.in_set(SimulationControlsSystems));
    }
}
