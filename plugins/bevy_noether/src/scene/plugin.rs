//! [`ScenePlugin`]: spawns the populations of a [`NoetherSceneRoot`] once its scene and
//! models are loaded, fits latents off the main thread, and respawns the populations when
//! the scene file changes (hot reload).

use std::collections::HashMap;

use bevy::{
    app::{App, Plugin, Update},
    asset::{
        AssetApp, AssetEvent, AssetId, AssetLoadError, AssetLoadFailedEvent, AssetServer, Assets,
        LoadState,
    },
    ecs::{intern::Interned, schedule::ScheduleLabel},
    log::{error, info},
    prelude::*,
    tasks::{AsyncComputeTaskPool, Task, block_on, poll_once},
};
use noether::{
    runtime::{BodyInit, LatentInit, SceneError, fit_population, plan_population},
    systems::Family,
};

use super::{NoetherScene, NoetherSceneLoader};
use crate::{
    adapt::{ObservationBuffer, ObservationSource, Observed},
    dynamics::{BodyIntegrator, HiddenTruth, LatentCode, NoetherBody, PhaseState},
    model::NoetherModel,
    reflect::FamilyReflect,
    schedule::{ClockSystems, NoetherSystems},
};

/// Put on an entity to spawn a scene's populations as its children.
///
/// ```no_run
/// # use bevy::prelude::*;
/// # use bevy_noether::prelude::*;
/// fn setup(mut commands: Commands, server: Res<AssetServer>) {
///     commands
///         .spawn(NoetherSceneRoot(server.load("scenes/oscillator_zoo.noether.ron")))
///         .observe(|ready: On<SceneReady>| info!("{} bodies are ready", ready.bodies));
/// }
/// # bevy::ecs::system::assert_is_system(setup);
/// ```
#[derive(Component, Reflect, Clone, Debug)]
#[reflect(Component, Debug)]
#[require(SceneStatus, Transform, Visibility)]
pub struct NoetherSceneRoot(pub Handle<NoetherScene>);

/// Where a scene root stands.
#[derive(Component, Reflect, Clone, Debug, Default)]
#[reflect(Component, Default, Debug)]
pub struct SceneStatus {
    /// Version of the scene file that is spawned (0: none yet).
    pub generation: u32,
    /// Bodies spawned.
    pub bodies: usize,
    /// Populations whose latent fits have not landed yet (their bodies step from the mean
    /// latent meanwhile).
    pub pending_fits: usize,
    /// The last error (load, model mismatch, spawn, fit), if any.
    pub error: Option<String>,
}

impl SceneStatus {
    /// Whether `generation` (or a later version) is spawned with every fit landed.
    pub fn is_ready(&self, generation: u32) -> bool {
        self.generation >= generation && self.pending_fits == 0 && self.error.is_none()
    }
}

/// A scene's version is spawned and every latent fit has landed: fired on the
/// [`NoetherSceneRoot`] entity (observe it there, or globally).
#[derive(EntityEvent, Clone, Debug, PartialEq)]
pub struct SceneReady {
    /// The root entity.
    pub entity: Entity,
    /// Bodies spawned.
    pub bodies: usize,
    /// Scene version.
    pub generation: u32,
}

/// Marks a body as a member of a population of a scene.
#[derive(Component, Reflect, Clone, Debug)]
#[reflect(Component, Debug)]
pub struct Population {
    /// Population name.
    pub name: String,
    /// Population index in the scene.
    pub index: usize,
    /// Family (the model's).
    #[reflect(remote = FamilyReflect)]
    pub family: Family,
    /// Body index within the population.
    pub member: usize,
}

/// Latest version of each scene asset.
#[derive(Resource, Default)]
struct SceneVersions(HashMap<AssetId<NoetherScene>, u32>);

/// A population's latent fit running on the async compute pool.
struct FitTask {
    population: usize,
    bodies: Vec<Entity>,
    task: Task<Result<Option<Vec<Vec<f32>>>, SceneError>>,
}

/// The fits of a root's current generation.
#[derive(Component, Default)]
struct PendingFits(Vec<FitTask>);

/// The scene systems: `Track` in `Update` (asset events arrive every frame), `Spawn` in
/// [`NoetherSystems::Prepare`] (spawning and landing fits change simulation state).
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SceneSystems {
    /// Track scene versions, report failed loads.
    Track,
    /// (Re)spawn populations, apply finished fits.
    Spawn,
}

fn track_versions(
    mut events: MessageReader<AssetEvent<NoetherScene>>,
    mut versions: ResMut<SceneVersions>,
) {
    for event in events.read() {
        match event {
            AssetEvent::LoadedWithDependencies { id } | AssetEvent::Added { id } => {
                versions.0.entry(*id).or_insert(1);
            }
            AssetEvent::Modified { id } => {
                *versions.0.entry(*id).or_insert(0) += 1;
            }
            _ => {}
        }
    }
}

/// The message of a failed load, as the user should read it: a scene or model loader's own
/// error (file, line, field), without the backtrace Bevy attaches when `RUST_BACKTRACE` is
/// set.
pub(crate) fn load_error_message(error: &AssetLoadError) -> String {
    match error {
        AssetLoadError::AssetLoaderError(e) => {
            let inner = e.error();
            if let Some(scene) = inner.downcast_ref::<SceneError>() {
                scene.to_string()
            } else if let Some(model) = inner.downcast_ref::<crate::model::ModelLoadError>() {
                model.to_string()
            } else {
                let text = inner.to_string();
                format!("{}: {}", e.path(), text.lines().next().unwrap_or_default())
            }
        }
        other => other.to_string(),
    }
}

fn report_failed_loads(
    mut scenes: MessageReader<AssetLoadFailedEvent<NoetherScene>>,
    mut models: MessageReader<AssetLoadFailedEvent<NoetherModel>>,
    mut roots: Query<(&NoetherSceneRoot, &mut SceneStatus)>,
) {
    for e in scenes.read() {
        let message = load_error_message(&e.error);
        error!("noether: scene {} failed to load: {message}", e.path);
        for (root, mut status) in &mut roots {
            if root.0.id() == e.id {
                status.error = Some(message.clone());
            }
        }
    }
    for e in models.read() {
        error!(
            "noether: model {} failed to load: {}",
            e.path,
            load_error_message(&e.error)
        );
    }
}

type RootQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherSceneRoot,
        &'static mut SceneStatus,
        Option<&'static mut PendingFits>,
    ),
>;

/// Spawns a scene version once it and its models are loaded: plans every population
/// ([`plan_population`]), spawns the bodies, and starts the latent fits on the async
/// compute pool.
fn spawn_scenes(
    mut commands: Commands,
    server: Res<AssetServer>,
    scenes: Res<Assets<NoetherScene>>,
    models: Res<Assets<NoetherModel>>,
    versions: Res<SceneVersions>,
    mut roots: RootQuery,
    children: Query<&Children>,
) {
    for (root, scene_root, mut status, pending) in &mut roots {
        let Some(scene) = scenes.get(&scene_root.0) else {
            continue;
        };
        let version = versions.0.get(&scene_root.0.id()).copied().unwrap_or(1);
        if status.generation == version {
            continue;
        }
        let path = scene_root
            .0
            .path()
            .map_or_else(|| "<scene>".to_owned(), ToString::to_string);
        // Wait for every model; a failed one is reported once and this version skipped.
        if let Some((h, p)) = scene
            .models
            .iter()
            .zip(&scene.populations)
            .find(|(h, _)| matches!(server.load_state(h.id()), LoadState::Failed(_)))
        {
            let why = match server.load_state(h.id()) {
                LoadState::Failed(e) => load_error_message(&e),
                other => format!("{other:?}"),
            };
            let message = format!(
                "{path}: population `{}`: model `{}` failed to load: {why}",
                p.name, p.model
            );
            error!("noether: {message}");
            status.error = Some(message);
            status.generation = version;
            continue;
        }
        if scene.models.len() != scene.populations.len()
            || scene.models.iter().any(|h| models.get(h).is_none())
        {
            continue;
        }
        let mut plans = Vec::new();
        let mut failure = None;
        for (i, (spec, handle)) in scene.populations.iter().zip(&scene.models).enumerate() {
            let model = models.get(handle).expect("loaded");
            match plan_population(spec, i, model, &path) {
                Ok(bodies) => plans.push((i, spec, handle.clone(), bodies)),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        status.generation = version;
        if let Some(e) = failure {
            error!("noether: {e}");
            status.error = Some(e.to_string());
            continue;
        }
        if let Ok(kids) = children.get(root) {
            for kid in kids.iter() {
                commands.entity(kid).despawn();
            }
        }
        let mut count = 0;
        let mut fits = Vec::new();
        for (i, spec, handle, bodies) in plans {
            let mut entities = Vec::with_capacity(bodies.len());
            for (member, b) in bodies.iter().enumerate() {
                let mut e = commands.spawn((
                    Name::new(format!("{} #{member}", spec.name)),
                    NoetherBody::new(handle.clone()),
                    PhaseState(b.state.clone()),
                    LatentCode(b.latent.clone()),
                    BodyIntegrator(spec.integrator),
                    Population {
                        name: spec.name.clone(),
                        index: i,
                        family: spec.family,
                        member,
                    },
                    Transform::from_xyz(b.position.0, b.position.1, 0.0),
                    ChildOf(root),
                ));
                if spec.hidden_truth {
                    e.insert(HiddenTruth {
                        params: b.params.clone(),
                    });
                }
                if let Some(o) = spec.observe {
                    e.insert((
                        Observed {
                            components: o.components,
                            source: ObservationSource::HiddenTruth {
                                interval: o.interval,
                                noise: o.noise,
                            },
                        },
                        ObservationBuffer::with_capacity(o.window),
                    ));
                }
                entities.push(e.id());
                count += 1;
            }
            if matches!(spec.latent, LatentInit::Fit { .. }) {
                fits.push(start_fit(
                    spec.clone(),
                    i,
                    models.get(&handle).expect("loaded").0.clone(),
                    bodies,
                    entities,
                    path.clone(),
                ));
            }
        }
        status.bodies = count;
        status.pending_fits = fits.len();
        status.error = None;
        info!(
            "noether: spawned {count} bodies of {path} (version {version}), {} latent fits pending",
            fits.len()
        );
        // Fits of an older version are dropped (and so cancelled) here.
        match pending {
            Some(mut p) => p.0 = fits,
            None => {
                commands.entity(root).insert(PendingFits(fits));
            }
        }
        if status.pending_fits == 0 {
            commands.trigger(SceneReady {
                entity: root,
                bodies: count,
                generation: version,
            });
        }
    }
}

/// Starts the latent fit of population `index` on the async compute pool.
fn start_fit(
    spec: noether::runtime::PopulationSpec,
    index: usize,
    model: noether::runtime::LearnedModel,
    bodies: Vec<BodyInit>,
    entities: Vec<Entity>,
    path: String,
) -> FitTask {
    let task = AsyncComputeTaskPool::get()
        .spawn(async move { fit_population(&spec, index, &model, &bodies, &path) });
    FitTask {
        population: index,
        bodies: entities,
        task,
    }
}

/// Applies every finished fit: the population's bodies take their fitted latents (their
/// energy bookkeeping restarts there); the root's [`SceneReady`] fires after the last.
fn land_fits(
    mut commands: Commands,
    mut roots: Query<(Entity, &mut SceneStatus, &mut PendingFits)>,
    mut latents: Query<&mut LatentCode>,
) {
    for (root, mut status, mut pending) in &mut roots {
        if pending.0.is_empty() {
            continue;
        }
        let mut landed = false;
        let mut i = 0;
        while i < pending.0.len() {
            let Some(result) = block_on(poll_once(&mut pending.0[i].task)) else {
                i += 1;
                continue;
            };
            let fit = pending.0.swap_remove(i);
            status.pending_fits = status.pending_fits.saturating_sub(1);
            landed = true;
            match result {
                Ok(Some(codes)) => {
                    for (entity, z) in fit.bodies.iter().zip(codes) {
                        if let Ok(mut latent) = latents.get_mut(*entity) {
                            latent.0 = z;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!(
                        "noether: population #{}: latent fit failed, its bodies keep the mean latent: {e}",
                        fit.population
                    );
                    status.error = Some(e.to_string());
                }
            }
        }
        if landed && status.pending_fits == 0 && status.error.is_none() {
            info!(
                "noether: every latent fit of scene version {} landed",
                status.generation
            );
            commands.trigger(SceneReady {
                entity: root,
                bodies: status.bodies,
                generation: status.generation,
            });
        }
    }
}

/// Loads `*.noether.ron` scenes and spawns their populations under [`NoetherSceneRoot`]s.
pub struct ScenePlugin {
    /// The schedule of [`NoetherSystems`].
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl Plugin for ScenePlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        app.init_asset::<NoetherScene>()
            .register_asset_loader(NoetherSceneLoader)
            .register_type::<NoetherSceneRoot>()
            .register_type::<SceneStatus>()
            .register_type::<Population>()
            .init_resource::<SceneVersions>()
            .add_systems(
                Update,
                (track_versions, report_failed_loads)
                    .chain()
                    .in_set(SceneSystems::Track),
            )
            .configure_sets(
                self.schedule,
                SceneSystems::Spawn
                    .in_set(NoetherSystems::Prepare)
                    .after(ClockSystems),
            )
            .add_systems(
                self.schedule,
                (spawn_scenes, land_fits)
                    .chain()
                    .in_set(SceneSystems::Spawn),
            );
    }
}
