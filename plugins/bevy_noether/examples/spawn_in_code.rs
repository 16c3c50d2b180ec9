//! Spawning learned bodies from game code, with sprites that follow them.
//!
//! A game rarely starts from a scene file: it spawns things. Here six pendulums and six
//! springs are spawned in `Startup` with nothing but a model handle and a state: their
//! latent codes are left empty, so each takes its model's mean latent once the model has
//! loaded, except the last pendulum of the row, whose latent is pushed away from the mean
//! so it swings with different physics. A [`StateTransform`] makes each body's `Transform`
//! follow its configuration q (interpolated between fixed steps), so the sprites move with
//! the learned motion; the game draws the rods and springs itself from the transforms.
//!
//! ```text
//! cargo run -p bevy_noether --example spawn_in_code
//! ```
//!
//! | key | action |
//! |---|---|
//! | Space | pause / resume the dynamics |
//! | S | one step (pauses) |
//! | + / − | double / halve the simulation speed |
//! | Esc | quit |
//!
//! Models are read from `assets/models/` under the crate you run it from (here the
//! workspace's shipped models; in your game, copy them to your own `assets/`).

use bevy::{asset::AssetPlugin, prelude::*};
use bevy_noether::prelude::*;

fn main() {
    App::new()
        .add_plugins(DefaultPlugins.set(AssetPlugin {
            // The workspace's shipped assets; a game uses its own `assets/` (the default).
            file_path: concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets").into(),
            ..default()
        }))
        .add_plugins((
            NoetherPlugins::default(),
            StateTransformPlugin,
            SimulationControlsPlugin,
        ))
        .add_systems(Startup, spawn)
        .add_systems(Update, draw_links)
        .run();
}

fn spawn(mut commands: Commands, server: Res<AssetServer>) {
    commands.spawn(Camera2d);
    let pendulum: Handle<NoetherModel> = server.load("models/pendulum-svd5.model.ron");
    let spring: Handle<NoetherModel> = server.load("models/mass_spring-svd5.model.ron");
    for i in 0..6 {
        let x = -375.0 + 150.0 * i as f32;
        let mut body = commands.spawn((
            NoetherBody::new(pendulum.clone()),
            PhaseState(vec![0.4 + 0.25 * i as f32, 0.0]),
            StateTransform::new(
                Vec3::new(x, 200.0, 0.0),
                ConfigurationMap::Swing { length: 110.0 },
            ),
            Sprite::from_color(Color::srgb(1.0, 0.75, 0.3), Vec2::splat(18.0)),
        ));
        if i == 5 {
            // An explicit latent: different physics from the same network.
            body.insert(LatentCode(vec![0.4; 10]));
        }
        commands.spawn((
            NoetherBody::new(spring.clone()),
            PhaseState(vec![0.3 + 0.1 * i as f32, 0.0]),
            StateTransform::new(
                Vec3::new(x - 40.0, -150.0, 0.0),
                ConfigurationMap::Slide {
                    axis: Vec3::X,
                    scale: 60.0,
                },
            ),
            Sprite::from_color(Color::srgb(0.4, 0.7, 1.0), Vec2::splat(22.0)),
        ));
    }
}

/// A line from each body's resting origin to where it is now: the pendulums' rods and the
/// springs' stretch.
fn draw_links(mut gizmos: Gizmos, bodies: Query<(&StateTransform, &Transform)>) {
    for (follow, transform) in &bodies {
        gizmos.line_2d(
            follow.origin.truncate(),
            transform.translation.truncate(),
            Color::srgb(0.85, 0.85, 0.9),
        );
    }
}
