//! Helpers shared by the integration tests: a headless app, shipped models, random bodies.

#![allow(dead_code, reason = "each test file uses a subset")]

use std::path::PathBuf;

use bevy::{asset::Assets, prelude::*};
use bevy_noether::{headless::headless_app, prelude::*};
use noether::{data::stream_rng, runtime::LearnedModel};
use rand::RngExt;

pub const HZ: f64 = 64.0;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped assets: the asset root a game's `DefaultPlugins` would use.
pub fn assets() -> PathBuf {
    repo().join("assets")
}

/// A headless app on `MinimalPlugins`, one fixed tick per `update()`, assets from `assets/`.
pub fn create_app() -> App {
    headless_app(assets(), HZ)
}

/// Adds a shipped model straight into the asset store.
pub fn add_model(app: &mut App, name: &str) -> Handle<NoetherModel> {
    let model = LearnedModel::load(&assets().join("models").join(name)).expect("shipped model");
    app.world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(NoetherModel(model))
}

pub fn random(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("tests/headless", seed, 0);
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// The model behind `model`, once it has loaded.
pub fn loaded<'a>(app: &'a App, model: &Handle<NoetherModel>) -> &'a NoetherModel {
    app.world()
        .resource::<Assets<NoetherModel>>()
        .get(model)
        .expect("the model has loaded")
}

/// The latent codes of `entities`, end to end.
pub fn latents(app: &App, entities: &[Entity]) -> Vec<f32> {
    entities
        .iter()
        .flat_map(|&e| app.world().get::<LatentCode>(e).unwrap().0.clone())
        .collect()
}

/// Spawns `count` bodies of `model` with random states (scaled) and latents near the mean.
pub fn spawn_bodies(
    app: &mut App,
    model: &Handle<NoetherModel>,
    count: usize,
    seed: u64,
) -> Vec<Entity> {
    let m = loaded(app, model).clone();
    let (n, dz) = (m.dim(), m.config.d_latent);
    let mean = m.mean_latent();
    let x = random(count * n, 1.0, seed);
    let z = random(count * dz, 0.05, seed + 1);
    (0..count)
        .map(|i| {
            let mut state: Vec<f32> = x[i * n..(i + 1) * n].to_vec();
            if m.config.family == noether::systems::Family::Tgc {
                state = vec![
                    1.0 + 0.5 * state[0],
                    state[1],
                    2.0 + state[2],
                    2.0 + state[3],
                ];
            }
            if m.config.family == noether::systems::Family::Dno {
                state[2] = 0.0;
            }
            let latent: Vec<f32> = mean
                .iter()
                .zip(&z[i * dz..(i + 1) * dz])
                .map(|(a, b)| a + b)
                .collect();
            app.world_mut()
                .spawn((
                    NoetherBody::new(model.clone()),
                    PhaseState(state),
                    LatentCode(latent),
                ))
                .id()
        })
        .collect()
}

pub fn states(app: &mut App, entities: &[Entity]) -> Vec<f32> {
    entities
        .iter()
        .flat_map(|&e| app.world().get::<PhaseState>(e).unwrap().0.clone())
        .collect()
}
