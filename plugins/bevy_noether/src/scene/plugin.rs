//! [`ScenePlugin`]: spawns the populations of a [`NoetherSceneRoot`] once its scene and
//! models are loaded, and respawns them when the scene file changes (hot reload).

use std::collections::HashMap;

use bevy::{
    app::{App, Plugin},
    asset::{
        AssetApp, AssetEvent, AssetId, AssetLoadFailedEvent, AssetServer, Assets, Handle, LoadState,
    },
    log::{error, info},
    prelude::*,
};
use noether::{
    data::{sample_initial_state, stream_rng},
    meta::{AdaptConfig, Points, adapt_latents, system_shots},
    systems::Family,
};
use rand::RngExt as _;

use super::{
    InitialState, LatentInit, NoetherScene, NoetherSceneLoader, PopulationSpec, SceneError,
};
use crate::{
    adapt::{ObservationBuffer, ObservationSource, Observed},
    dynamics::{HiddenTruth, LatentCode, NoetherBody, PhaseState},
    model::NoetherModel,
};

/// Put on an entity to spawn a scene's populations as its children.
///
/// ```no_run
/// # use bevy::prelude::*;
/// # use bevy_noether::prelude::*;
/// fn setup(mut commands: Commands, server: Res<AssetServer>) {
///     commands.spawn(NoetherSceneRoot(server.load("scenes/oscillator_zoo.noether.ron")));
/// }
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
    /// The last error (load, model mismatch, spawn), if any.
    pub error: Option<String>,
    #[reflect(ignore)]
    models: Vec<Handle<NoetherModel>>,
}

/// Marks a body as a member of a population of a scene.
#[derive(Component, Reflect, Clone, Debug, Default)]
#[reflect(Component, Default, Debug)]
pub struct Population {
    /// Population name.
    pub name: String,
    /// Population index in the scene.
    pub index: usize,
    /// Family name.
    pub family: String,
    /// Body index within the population.
    pub member: usize,
}

/// Sent when a scene's populations were (re)spawned.
#[derive(Message, Clone, Debug)]
pub struct SpawnedScene {
    /// The root entity.
    pub root: Entity,
    /// Bodies spawned.
    pub bodies: usize,
    /// Scene version.
    pub generation: u32,
}

/// Latest version of each scene asset.
#[derive(Resource, Default)]
struct SceneVersions(HashMap<AssetId<NoetherScene>, u32>);

/// What one body starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct BodyInit {
    /// Initial state.
    pub state: Vec<f32>,
    /// Latent code.
    pub latent: Vec<f32>,
    /// True parameters.
    pub params: Vec<f64>,
    /// Layout position.
    pub position: (f32, f32),
}

/// Draws a population's bodies: parameters, initial states, positions and latents (fitted,
/// mean, sampled or given, per the spec). Deterministic in the population's seed.
///
/// # Errors
/// [`SceneError::Invalid`] when the model does not fit the population (family, latent width)
/// or a body's true system cannot be simulated for fitting.
pub fn build_population(
    spec: &PopulationSpec,
    index: usize,
    model: &NoetherModel,
    scene_path: &str,
) -> Result<Vec<BodyInit>, SceneError> {
    let invalid = |field: &str, message: String| SceneError::Invalid {
        path: scene_path.into(),
        population: spec.name.clone(),
        field: field.into(),
        message,
    };
    let family: Family = spec.family;
    if model.config.family != family {
        return Err(invalid(
            "model",
            format!(
                "`{}` models {}, the population is {family}",
                spec.model, model.config.family
            ),
        ));
    }
    let fs = family.spec();
    let tag = format!("scene/{}/{index}", spec.name);
    let mut rng = stream_rng(&tag, spec.seed, 0);
    let mut bodies = Vec::with_capacity(spec.count);
    for i in 0..spec.count {
        let params: Vec<f64> = fs
            .params
            .iter()
            .map(|p| {
                spec.params
                    .get(p.name)
                    .map_or(p.default, |d| d.sample(i, rng.random::<f64>()))
            })
            .collect();
        let state: Vec<f64> = match &spec.initial {
            InitialState::Protocol => sample_initial_state(family, &params, &mut rng),
            InitialState::Components(map) => fs
                .state
                .iter()
                .map(|c| map[*c].sample(i, rng.random::<f64>()))
                .collect(),
        };
        bodies.push(BodyInit {
            state: state.iter().map(|v| *v as f32).collect(),
            latent: Vec::new(),
            params,
            position: spec.layout.position(i, spec.count),
        });
    }
    let dz = model.config.d_latent;
    let mean = model.mean_latent();
    match &spec.latent {
        LatentInit::Mean => bodies.iter_mut().for_each(|b| b.latent = mean.clone()),
        LatentInit::Sample => {
            let std: Vec<f32> = model.config.latents.std.iter().map(|v| *v as f32).collect();
            for b in &mut bodies {
                b.latent = (0..dz)
                    .map(|k| {
                        mean[k]
                            + std.get(k).copied().unwrap_or(0.0)
                                * (2.0 * rng.random::<f32>() - 1.0)
                                * 3f32.sqrt()
                    })
                    .collect();
            }
        }
        LatentInit::Explicit(list) => {
            if let Some(bad) = list.iter().find(|z| z.len() != dz) {
                return Err(invalid(
                    "latent",
                    format!(
                        "Explicit code of {} values; the model's latent has {dz}",
                        bad.len()
                    ),
                ));
            }
            for (i, b) in bodies.iter_mut().enumerate() {
                b.latent = list[i % list.len()].clone();
            }
        }
        LatentInit::Fit { shots } => {
            let mut tasks: Vec<Points> = Vec::with_capacity(bodies.len());
            for (i, b) in bodies.iter().enumerate() {
                let sys = family
                    .build(&b.params)
                    .map_err(|e| invalid("params", e.to_string()))?;
                let mut r = stream_rng(&format!("{tag}/shots"), spec.seed, i as u64);
                tasks.push(
                    system_shots(family, sys.as_ref(), &b.params, *shots, &mut r)
                        .map_err(|e| invalid("params", e.to_string()))?,
                );
            }
            let adapted = adapt_latents(
                &model.params,
                &tasks,
                &mean,
                &AdaptConfig::for_model(&model.config, *shots),
            );
            for (b, z) in bodies.iter_mut().zip(adapted.latents) {
                b.latent = z;
            }
        }
    }
    Ok(bodies)
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

fn report_failed_loads(
    mut scenes: MessageReader<AssetLoadFailedEvent<NoetherScene>>,
    mut models: MessageReader<AssetLoadFailedEvent<NoetherModel>>,
    mut roots: Query<(&NoetherSceneRoot, &mut SceneStatus)>,
) {
    for e in scenes.read() {
        error!("noether: scene {} failed to load: {}", e.path, e.error);
        for (root, mut status) in &mut roots {
            if root.0.id() == e.id {
                status.error = Some(e.error.to_string());
            }
        }
    }
    for e in models.read() {
        error!("noether: model {} failed to load: {}", e.path, e.error);
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a spawner touches assets, the server, commands and its roots"
)]
fn spawn_scenes(
    mut commands: Commands,
    server: Res<AssetServer>,
    scenes: Res<Assets<NoetherScene>>,
    models: Res<Assets<NoetherModel>>,
    versions: Res<SceneVersions>,
    mut roots: Query<(Entity, &NoetherSceneRoot, &mut SceneStatus)>,
    children: Query<&Children>,
    mut spawned: MessageWriter<SpawnedScene>,
) {
    for (root, scene_root, mut status) in &mut roots {
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
        if status.models.len() != scene.populations.len()
            || status
                .models
                .iter()
                .zip(&scene.populations)
                .any(|(h, p)| h.path().is_none_or(|hp| hp.to_string() != p.model))
        {
            status.models = scene
                .populations
                .iter()
                .map(|p| server.load::<NoetherModel>(p.model.clone()))
                .collect();
        }
        // Wait for every model; a failed one is reported once and this version skipped.
        if let Some((h, p)) = status
            .models
            .iter()
            .zip(&scene.populations)
            .find(|(h, _)| matches!(server.load_state(h.id()), LoadState::Failed(_)))
        {
            let message = format!(
                "{path}: population `{}`: model `{}` failed to load ({:?})",
                p.name,
                p.model,
                server.load_state(h.id())
            );
            error!("noether: {message}");
            status.error = Some(message);
            status.generation = version;
            continue;
        }
        if status.models.iter().any(|h| models.get(h).is_none()) {
            continue;
        }
        let mut inits = Vec::new();
        let mut failure = None;
        for (i, (spec, handle)) in scene.populations.iter().zip(&status.models).enumerate() {
            match build_population(spec, i, models.get(handle).expect("loaded"), &path) {
                Ok(bodies) => inits.push((i, spec, handle.clone(), bodies)),
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
        for (i, spec, handle, bodies) in inits {
            for (member, b) in bodies.into_iter().enumerate() {
                let mut e = commands.spawn((
                    Name::new(format!("{} #{member}", spec.name)),
                    NoetherBody::new(handle.clone()),
                    PhaseState(b.state),
                    LatentCode(b.latent),
                    spec.integrator,
                    Population {
                        name: spec.name.clone(),
                        index: i,
                        family: spec.family.to_string(),
                        member,
                    },
                    Transform::from_xyz(b.position.0, b.position.1, 0.0),
                    ChildOf(root),
                ));
                if spec.hidden_truth {
                    e.insert(HiddenTruth { params: b.params });
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
                count += 1;
            }
        }
        status.bodies = count;
        status.error = None;
        info!("noether: spawned {count} bodies of {path} (version {version})");
        spawned.write(SpawnedScene {
            root,
            bodies: count,
            generation: version,
        });
    }
}

/// The scene systems, in `Update` (where asset events arrive every frame).
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SceneSystems {
    /// Track scene versions, report failed loads, (re)spawn populations.
    Spawn,
}

/// Loads `*.noether.ron` scenes and spawns their populations under [`NoetherSceneRoot`]s.
#[derive(Default)]
pub struct ScenePlugin;

impl Plugin for ScenePlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        app.init_asset::<NoetherScene>()
            .register_asset_loader(NoetherSceneLoader)
            .register_type::<NoetherSceneRoot>()
            .register_type::<SceneStatus>()
            .register_type::<Population>()
            .init_resource::<SceneVersions>()
            .add_message::<SpawnedScene>()
            .add_systems(
                Update,
                (track_versions, report_failed_loads, spawn_scenes)
                    .chain()
                    .in_set(SceneSystems::Spawn),
            );
    }
}
