//! Apps without a window (feature `headless`): the plugins on `MinimalPlugins`, one fixed
//! step per [`App::update`], for servers, command-line runs, benchmarks and tests.
//!
//! ```no_run
//! use bevy_noether::headless::{headless_app, load_scene};
//! let mut app = headless_app("assets", 64.0);
//! let root = load_scene(&mut app, "scenes/oscillator_zoo.noether.ron", std::time::Duration::from_secs(60)).unwrap();
//! for _ in 0..640 {
//!     app.update(); // 1/64 s of simulated time each
//! }
//! # let _ = root;
//! ```

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bevy::{
    asset::AssetPlugin, diagnostic::DiagnosticsPlugin, prelude::*, time::TimeUpdateStrategy,
};

use crate::{
    NoetherPlugins,
    scene::{NoetherScene, NoetherSceneRoot, SceneStatus},
    schedule::{Simulation, SimulationControl},
};

/// A headless app stepping at `hz`: `MinimalPlugins`, assets read from `asset_root` (no file
/// watching), diagnostics, transforms and [`NoetherPlugins`]. Virtual time advances by
/// exactly one fixed step per `update()`, so runs are reproducible tick for tick.
pub fn headless_app(asset_root: impl AsRef<Path>, hz: f64) -> App {
    headless_app_with(asset_root, hz, NoetherPlugins::default())
}

/// [`headless_app`] with the group's build-time knobs set (`plugins`).
pub fn headless_app_with(asset_root: impl AsRef<Path>, hz: f64, plugins: NoetherPlugins) -> App {
    let dt = Duration::from_secs_f64(1.0 / hz);
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin {
            file_path: asset_root.as_ref().display().to_string(),
            watch_for_changes_override: Some(false),
            ..default()
        },
        DiagnosticsPlugin,
        bevy::transform::TransformPlugin,
    ))
    .insert_resource(Time::<Fixed>::from_duration(dt))
    .insert_resource(TimeUpdateStrategy::ManualDuration(dt))
    .add_plugins(plugins);
    app
}

/// Spawns a [`NoetherSceneRoot`] for the scene file at `path` (relative to the asset root).
pub fn spawn_scene(app: &mut App, path: &str) -> Entity {
    let handle = app
        .world()
        .resource::<AssetServer>()
        .load::<NoetherScene>(path.to_owned());
    app.world_mut().spawn(NoetherSceneRoot(handle)).id()
}

/// Updates `app` until `root`'s scene has spawned `generation` (or a later version) and
/// every latent fit has landed, and returns its status; the scene's error (with file,
/// line and field) if it failed, or a timeout message. The simulation clock is paused
/// meanwhile (and restored after), so the bodies start from their spawn states with their
/// fitted latents: runs are reproducible whatever the fits' wall time.
pub fn wait_for_scene(
    app: &mut App,
    root: Entity,
    generation: u32,
    timeout: Duration,
) -> Result<SceneStatus, String> {
    let was_paused = app
        .world()
        .resource::<Time<Simulation>>()
        .context()
        .is_paused();
    app.world_mut().resource_mut::<Time<Simulation>>().pause();
    let result = wait(app, root, generation, timeout);
    if !was_paused {
        app.world_mut().resource_mut::<Time<Simulation>>().unpause();
    }
    result
}

fn wait(
    app: &mut App,
    root: Entity,
    generation: u32,
    timeout: Duration,
) -> Result<SceneStatus, String> {
    let started = Instant::now();
    loop {
        app.update();
        let status = app
            .world()
            .get::<SceneStatus>(root)
            .cloned()
            .ok_or("the scene root was despawned")?;
        if let Some(e) = status.error {
            return Err(e);
        }
        if status.is_ready(generation) {
            return Ok(status);
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "the scene did not load within {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`spawn_scene`] then [`wait_for_scene`] for its first version: the root entity.
pub fn load_scene(app: &mut App, path: &str, timeout: Duration) -> Result<Entity, String> {
    let root = spawn_scene(app, path);
    wait_for_scene(app, root, 1, timeout).map(|_| root)
}
