//! A game loading a population scene from its own `assets/` folder.
//!
//! This is the plugin README's example with the views added: `DefaultPlugins` read assets
//! from `assets/`, so the scene is `scenes/oscillator_zoo.noether.ron` and the models it
//! names (`../models/…`, relative to the scene file) load with it as its dependencies. The
//! bodies spawn as soon as the scene and its models are in; each population fits its
//! latents to its hidden physics on the async compute pool (the bodies step from the mean
//! latent until then), and the root's `SceneReady` event fires when every fit has landed.
//!
//! ```text
//! cargo run -p bevy_noether --example load_scene                      # the oscillator zoo
//! cargo run -p bevy_noether --example load_scene -- scenes/thermodynamics.noether.ron
//! ```
//!
//! | key | action |
//! |---|---|
//! | Space | pause / resume the dynamics |
//! | S | one step (pauses) |
//! | + / − | double / halve the simulation speed |
//! | Esc | quit |
//!
//! The egui inspector on the right lists the populations; click one to edit its first
//! body's latent code and watch its energy.

use bevy::{asset::AssetPlugin, prelude::*};
use bevy_noether::prelude::*;

/// The scene to load (asset path).
#[derive(Resource)]
struct ScenePath(String);

fn main() {
    let scene = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scenes/oscillator_zoo.noether.ron".into());
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            // The workspace's shipped assets; a game uses its own `assets/` (the default).
            file_path: concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets").into(),
            ..default()
        }))
        .add_plugins(NoetherPlugins::default())
        .add_plugins((VisualsPlugin, InspectorPlugin, SimulationControlsPlugin))
        .insert_resource(ScenePath(scene))
        .add_systems(Startup, load)
        .run();
}

fn load(mut commands: Commands, server: Res<AssetServer>, path: Res<ScenePath>) {
    commands
        .spawn(NoetherSceneRoot(server.load(path.0.clone())))
        .observe(|ready: On<SceneReady>| {
            info!(
                "scene version {} is ready: {} bodies, every latent fitted",
                ready.generation, ready.bodies
            );
        });
}
