//! The plugins in a headless app (`MinimalPlugins`, no render): the app steps exactly as the
//! engine-free runtime and solves the implicit-midpoint equation, Hamiltonian energy holds, GENERIC entropy never decreases,
//! latents matter, pause/step work, scenes load from a game's `assets/` folder, spawn and
//! hot-reload, bodies spawned in code take the mean latent and follow with their
//! transforms, bodies that do not fit their model are marked, malformed scenes are
//! reported without a panic, the schedule has no ambiguities, and every member of the group
//! can be disabled.

use std::time::Duration;

use bevy::{
    asset::{AssetPlugin, Assets},
    diagnostic::DiagnosticsPlugin,
    ecs::schedule::{LogLevel, ScheduleBuildSettings},
    prelude::*,
};
use bevy_noether::{
    adapt::AdaptPlugin,
    diagnostics::NoetherDiagnosticsPlugin,
    dynamics::{DynamicsPlugin, StepDiagnostics},
    headless::{headless_app, load_scene, wait_for_scene},
    model::ModelPlugin,
    prelude::*,
    scene::ScenePlugin,
    schedule::NoetherSchedulePlugin,
};
use noether::{
    integrate::DiscreteGradient,
    nn::cpu::CpuFlow,
    runtime::{BodyBatch, BodyInit, MAX_SUBSTEP},
};

mod common;

use common::{HZ, add_model, assets, create_app, latents, loaded, repo, spawn_bodies, states};

#[test]
fn the_app_steps_as_the_plain_loop_runtime_and_solves_the_midpoint_equation() {
    let mut app = create_app();
    let model = add_model(&mut app, "pendulum-svd5");
    let entities = spawn_bodies(&mut app, &model, 40, 1);
    app.update();
    let m = loaded(&app, &model).clone();
    let z = latents(&app, &entities);
    // The same bodies in the engine-free runtime, stepped in a plain loop.
    let x = states(&mut app, &entities);
    let bodies: Vec<BodyInit> = (0..entities.len())
        .map(|i| BodyInit {
            state: x[i * 2..i * 2 + 2].to_vec(),
            latent: z[i * 10..i * 10 + 10].to_vec(),
            params: Vec::new(),
            position: (0.0, 0.0),
        })
        .collect();
    let mut plain = BodyBatch::new(m.0.clone(), Integrator::Auto, &bodies).unwrap();
    let h = 1.0 / HZ;
    assert!(h <= MAX_SUBSTEP, "one substep per tick");
    let mut before = x.clone();
    for _ in 0..20 {
        before = states(&mut app, &entities);
        app.update();
        plain.step(h).unwrap();
    }
    let got = states(&mut app, &entities);
    assert_ne!(got, x, "the bodies moved");
    assert_eq!(
        got,
        plain.states(),
        "the ECS maps to the runtime and back exactly"
    );
    // And the step is what it claims: x₁ = x₀ + h f((x₀ + x₁)/2) to the solver's tolerance.
    let mid: Vec<f32> = before
        .iter()
        .zip(&got)
        .map(|(a, b)| 0.5 * (a + b))
        .collect();
    let mut f = vec![0.0; mid.len()];
    m.cpu.field(&mid, &z, &mut f);
    for k in 0..got.len() {
        let residual = (got[k] - before[k] - h as f32 * f[k]).abs();
        assert!(
            residual <= 1e-5 * (1.0 + got[k].abs()),
            "component {k}: midpoint residual {residual:e}"
        );
    }
}

#[test]
fn hamiltonian_energy_holds_and_generic_entropy_never_decreases() {
    let mut app = create_app();
    let pendulum = add_model(&mut app, "pendulum-svd5");
    let dno = add_model(&mut app, "dno-svd3");
    let tgc = add_model(&mut app, "tgc-svd5");
    let p = spawn_bodies(&mut app, &pendulum, 30, 2);
    let d = spawn_bodies(&mut app, &dno, 20, 3);
    let t = spawn_bodies(&mut app, &tgc, 20, 4);
    for _ in 0..320 {
        app.update();
    }
    let world = app.world();
    // Offset-free drifts (EnergyRecord): the typical body holds its energy to 1e-4, and
    // even the ones spawned practically at rest (random states near (0, 0), measured
    // against the energy's resolution) to 1e-2.
    let median = |bodies: &[Entity]| {
        let mut d: Vec<f32> = bodies
            .iter()
            .map(|&e| world.get::<BodyEnergy>(e).unwrap().max_drift)
            .collect();
        d.sort_by(f32::total_cmp);
        d[d.len() / 2]
    };
    for (name, bodies) in [("pendulum", &p), ("dno", &d), ("tgc", &t)] {
        let m = median(bodies);
        assert!(m < 1e-4, "{name}: median energy drift {m:e}");
    }
    for &e in &p {
        let be = world.get::<BodyEnergy>(e).unwrap();
        assert!(
            be.max_drift < 1e-2,
            "pendulum energy drift {:e}",
            be.max_drift
        );
    }
    for &e in d.iter().chain(&t) {
        let be = world.get::<BodyEnergy>(e).unwrap();
        assert!(
            be.max_drift < 1e-2,
            "GENERIC energy drift {:e}",
            be.max_drift
        );
        let scale = 1.0 + be.entropy.abs();
        assert!(
            be.min_entropy_change >= -1e-5 * scale,
            "entropy decreased by {:e}",
            be.min_entropy_change
        );
        assert!(
            be.entropy >= be.initial_entropy - 1e-5 * scale,
            "entropy {} → {}",
            be.initial_entropy,
            be.entropy
        );
    }
}

#[test]
fn different_latents_give_different_motion() {
    let mut app = create_app();
    let model = add_model(&mut app, "pendulum-svd5");
    let mean = loaded(&app, &model).mean_latent();
    let other: Vec<f32> = mean
        .iter()
        .enumerate()
        .map(|(k, v)| v + if k % 2 == 0 { 0.3 } else { -0.3 })
        .collect();
    let spawn = |app: &mut App, z: Vec<f32>| {
        app.world_mut()
            .spawn((
                NoetherBody::new(model.clone()),
                PhaseState(vec![1.0, 0.0]),
                LatentCode(z),
            ))
            .id()
    };
    let (a, b, c) = (
        spawn(&mut app, mean.clone()),
        spawn(&mut app, mean),
        spawn(&mut app, other),
    );
    for _ in 0..64 {
        app.update();
    }
    let s = |e| app.world().get::<PhaseState>(e).unwrap().0.clone();
    assert_eq!(s(a), s(b), "same latent, same motion");
    let d: f32 = s(a).iter().zip(&s(c)).map(|(x, y)| (x - y).abs()).sum();
    assert!(d > 1e-3, "different latents, different motion ({d:e})");
}

#[test]
fn pause_holds_and_single_step_advances_one_tick() {
    let mut app = create_app();
    let model = add_model(&mut app, "mass_spring-svd5");
    let e = spawn_bodies(&mut app, &model, 4, 5);
    app.update();
    app.world_mut().resource_mut::<Time<Simulation>>().pause();
    let frozen = states(&mut app, &e);
    for _ in 0..10 {
        app.update();
    }
    assert_eq!(states(&mut app, &e), frozen, "paused: no motion");
    app.world_mut()
        .resource_mut::<Time<Simulation>>()
        .step_once();
    app.update();
    let once = states(&mut app, &e);
    assert_ne!(once, frozen, "a single step moves");
    app.update();
    assert_eq!(states(&mut app, &e), once, "and only one");
    let steps = app.world().resource::<Time<Simulation>>().context().steps();
    app.world_mut().resource_mut::<Time<Simulation>>().unpause();
    app.update();
    assert_eq!(
        app.world().resource::<Time<Simulation>>().context().steps(),
        steps + 1
    );
}

/// Updates until `root`'s scene is spawned (or failed), at most ~20 s.
fn wait_for(app: &mut App, root: Entity, generation: u32) -> SceneStatus {
    wait_for_scene(app, root, generation, Duration::from_secs(60)).expect("the scene loads")
}

#[test]
fn scenes_spawn_and_hot_reload_respawns_only_their_populations() {
    let mut app = create_app();
    let bystander_model = add_model(&mut app, "mass_spring-svd5");
    let bystander = app
        .world_mut()
        .spawn((
            NoetherBody::new(bystander_model),
            PhaseState(vec![0.5, 0.0]),
            LatentCode(vec![0.0; 10]),
        ))
        .id();
    // The README's path under a game's `assets/` folder (the asset root of `DefaultPlugins`).
    let scene = app
        .world()
        .resource::<AssetServer>()
        .load::<NoetherScene>("scenes/oscillator_zoo.noether.ron");
    let root = app.world_mut().spawn(NoetherSceneRoot(scene.clone())).id();
    let status = wait_for(&mut app, root, 1);
    assert_eq!(status.error, None);
    assert_eq!(status.bodies, 300);
    let mut q = app.world_mut().query::<&Population>();
    assert_eq!(q.iter(app.world()).count(), 300);
    // Edit the scene asset (as the file watcher would after a save): fewer springs.
    {
        let mut scenes = app.world_mut().resource_mut::<Assets<NoetherScene>>();
        let mut s = scenes.get_mut(&scene).unwrap();
        s.populations[0].count = 10;
    }
    let status = wait_for(&mut app, root, 2);
    assert_eq!((status.generation, status.bodies), (2, 210));
    let mut q = app.world_mut().query::<&Population>();
    assert_eq!(q.iter(app.world()).filter(|p| p.index == 0).count(), 10);
    assert!(
        app.world().get_entity(bystander).is_ok(),
        "bodies outside the scene are untouched"
    );
}

/// A game's asset folder for the malformed scenes: the scenes under `scenes/`, the
/// shipped models linked in as `models/` (the scenes name `../models/…`).
fn bad_scene_assets() -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("noether-bad-scenes-{}", std::process::id()));
    let scenes = root.join("scenes");
    std::fs::create_dir_all(&scenes).unwrap();
    for entry in std::fs::read_dir(repo().join("plugins/bevy_noether/tests/scenes/bad")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, scenes.join(path.file_name().unwrap())).unwrap();
    }
    let models = root.join("models");
    if !models.exists() {
        #[cfg(unix)]
        std::os::unix::fs::symlink(assets().join("models"), &models).unwrap();
        #[cfg(not(unix))]
        panic!("this test links the shipped models into a temporary asset folder (unix only)");
    }
    root
}

#[test]
fn malformed_scenes_are_reported_and_the_app_keeps_running() {
    let expected = [
        ("syntax", "syntax.noether.ron:3:92"),
        ("unknown_field", "colour"),
        ("unknown_family", "spring_mass"),
        ("unknown_param", "params.g"),
        ("out_of_range", "training range"),
        ("zero_count", "count: is 0"),
        ("absurd_count", "absurd"),
        ("nan", "not finite"),
        ("empty_list", "empty"),
        ("bad_state", "initial.theta"),
        ("wrong_model", "models mass_spring"),
        ("missing_model", "does-not-exist"),
        (
            "observe_without_truth",
            "observe: observes the hidden truth",
        ),
        (
            "far_state",
            "initial.q: invalid mass_spring state: q = 1000000000000000000000000000000 is outside",
        ),
        ("too_many_observations", "observations kept"),
    ];
    let root = bad_scene_assets();
    let mut app = headless_app(&root, HZ);
    let roots: Vec<(Entity, &str, &str)> = expected
        .iter()
        .map(|(name, needle)| {
            let handle = app
                .world()
                .resource::<AssetServer>()
                .load::<NoetherScene>(format!("scenes/{name}.noether.ron"));
            (
                app.world_mut().spawn(NoetherSceneRoot(handle)).id(),
                *name,
                *needle,
            )
        })
        .collect();
    let model = add_model(&mut app, "pendulum-svd5");
    let alive = spawn_bodies(&mut app, &model, 2, 9);
    let before = states(&mut app, &alive);
    for _ in 0..4000 {
        app.update();
        if roots
            .iter()
            .all(|(r, _, _)| app.world().get::<SceneStatus>(*r).unwrap().error.is_some())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (root, name, needle) in roots {
        let status = app.world().get::<SceneStatus>(root).unwrap();
        let error = status
            .error
            .clone()
            .unwrap_or_else(|| panic!("{name}: no error reported"));
        assert!(
            error.contains(needle),
            "{name}: expected `{needle}` in: {error}"
        );
        assert_eq!(status.bodies, 0, "{name}: nothing spawned");
    }
    assert_ne!(states(&mut app, &alive), before, "the app kept stepping");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn the_fixed_schedule_has_no_ambiguities() {
    let mut app = create_app();
    app.edit_schedule(FixedPostUpdate, |s| {
        s.set_build_settings(ScheduleBuildSettings {
            ambiguity_detection: LogLevel::Error,
            ..default()
        });
    });
    let model = add_model(&mut app, "pendulum-svd5");
    spawn_bodies(&mut app, &model, 3, 10);
    app.update();
    app.update();
}

#[test]
fn every_member_can_be_disabled() {
    /// Whether a body moves in an app whose group has `T` disabled.
    fn moves_without<T: Plugin>() -> bool {
        let mut app = App::new();
        app.add_plugins((
            MinimalPlugins,
            AssetPlugin::default(),
            DiagnosticsPlugin,
            bevy::transform::TransformPlugin,
        ))
        .insert_resource(Time::<Fixed>::from_hz(HZ))
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
            Duration::from_secs_f64(1.0 / HZ),
        ));
        app.add_plugins(NoetherPlugins::default().build().disable::<T>());
        let model = add_model(&mut app, "pendulum-svd5");
        let body = app
            .world_mut()
            .spawn((NoetherBody::new(model), PhaseState(vec![1.0, 0.0])))
            .id();
        for _ in 0..4 {
            app.update();
        }
        app.world().get::<PhaseState>(body).unwrap().0 != vec![1.0, 0.0]
    }
    // Every member but the stepping and the clock it reads can go: bodies still move.
    assert!(moves_without::<NoetherDiagnosticsPlugin>());
    assert!(moves_without::<ScenePlugin>());
    assert!(moves_without::<ModelPlugin>());
    assert!(moves_without::<AdaptPlugin>());
    // Without the dynamics nothing steps; without the schedule plugin there is no clock,
    // so nothing advances either (and nothing panics).
    assert!(!moves_without::<DynamicsPlugin>());
    assert!(!moves_without::<NoetherSchedulePlugin>());
}

#[test]
fn a_discrete_gradient_batch_matches_the_core_step() {
    let mut app = create_app();
    let model = add_model(&mut app, "dno-svd3");
    let e = spawn_bodies(&mut app, &model, 12, 11);
    app.update();
    let m = loaded(&app, &model).clone();
    let z = latents(&app, &e);
    let mut expected = states(&mut app, &e);
    for _ in 0..5 {
        app.update();
        expected = DiscreteGradient::default()
            .step(
                &CpuFlow {
                    model: &m.cpu,
                    latents: &z,
                },
                &expected,
                1.0 / HZ,
            )
            .unwrap()
            .0;
    }
    assert_eq!(states(&mut app, &e), expected);
}

#[test]
fn a_body_spawned_in_code_takes_the_mean_latent_once_its_model_loads() {
    let mut app = create_app();
    // Loaded through the asset server, as a game would: not there on the first frames.
    let model: Handle<NoetherModel> = app
        .world()
        .resource::<AssetServer>()
        .load("models/pendulum-svd5.model.ron");
    let body = app
        .world_mut()
        .spawn((NoetherBody::new(model.clone()), PhaseState(vec![1.0, 0.0])))
        .id();
    let started = std::time::Instant::now();
    while app
        .world()
        .resource::<Assets<NoetherModel>>()
        .get(&model)
        .is_none()
    {
        app.update();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the model did not load"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    for _ in 0..32 {
        app.update();
    }
    let mean = loaded(&app, &model).mean_latent();
    assert_eq!(app.world().get::<LatentCode>(body).unwrap().0, mean);
    assert_ne!(
        app.world().get::<PhaseState>(body).unwrap().0,
        vec![1.0, 0.0],
        "the body moves"
    );
    assert!(app.world().get::<InvalidBody>(body).is_none());
    let energy = app.world().get::<BodyEnergy>(body).unwrap();
    assert!(energy.initial.is_finite() && energy.max_drift < 1e-3);
}

#[test]
fn a_body_that_does_not_fit_its_model_is_marked_and_not_stepped() {
    let mut app = create_app();
    let model = add_model(&mut app, "pendulum-svd5");
    let wrong_latent = app
        .world_mut()
        .spawn((
            NoetherBody::new(model.clone()),
            PhaseState(vec![1.0, 0.0]),
            LatentCode(vec![0.0; 3]),
        ))
        .id();
    let wrong_state = app
        .world_mut()
        .spawn((
            NoetherBody::new(model.clone()),
            PhaseState(vec![1.0, 0.0, 0.0]),
        ))
        .id();
    let fine = spawn_bodies(&mut app, &model, 2, 12);
    let before = states(&mut app, &fine);
    for _ in 0..8 {
        app.update();
    }
    let reason = |e| {
        app.world()
            .get::<InvalidBody>(e)
            .map(|i| i.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason(wrong_latent).contains("LatentCode has 3 values"),
        "{}",
        reason(wrong_latent)
    );
    assert!(
        reason(wrong_state).contains("PhaseState has 3 values"),
        "{}",
        reason(wrong_state)
    );
    assert_eq!(
        app.world().get::<PhaseState>(wrong_latent).unwrap().0,
        vec![1.0, 0.0]
    );
    assert_eq!(app.world().resource::<StepDiagnostics>().invalid, 2);
    assert_ne!(states(&mut app, &fine), before, "the others step on");
    // Fixed by the game: the mark goes and the body steps.
    app.world_mut()
        .get_mut::<LatentCode>(wrong_latent)
        .unwrap()
        .0
        .clear();
    for _ in 0..4 {
        app.update();
    }
    assert!(app.world().get::<InvalidBody>(wrong_latent).is_none());
    assert_ne!(
        app.world().get::<PhaseState>(wrong_latent).unwrap().0,
        vec![1.0, 0.0]
    );
}

#[test]
fn the_transform_follows_the_configuration() {
    let mut app = create_app();
    app.add_plugins(StateTransformPlugin);
    let model = add_model(&mut app, "pendulum-svd5");
    let origin = Vec3::new(10.0, 20.0, 0.0);
    let body = app
        .world_mut()
        .spawn((
            NoetherBody::new(model),
            PhaseState(vec![0.8, 0.0]),
            StateTransform {
                interpolate: false,
                ..StateTransform::new(origin, ConfigurationMap::Swing { length: 50.0 })
            },
        ))
        .id();
    for _ in 0..40 {
        app.update();
        let q = app.world().get::<PhaseState>(body).unwrap().0[0];
        let t = app.world().get::<Transform>(body).unwrap();
        let expected = origin + 50.0 * Vec3::new(q.sin(), -q.cos(), 0.0);
        assert!(
            (t.translation - expected).length() < 1e-3,
            "q = {q}: {} vs {expected}",
            t.translation
        );
        assert!((t.rotation.to_euler(EulerRot::XYZ).2 - q).abs() < 1e-4);
    }
    let q = app.world().get::<PhaseState>(body).unwrap().0[0];
    assert!((q - 0.8).abs() > 1e-2, "the pendulum swung (q = {q})");
}

#[test]
fn scene_ready_fires_on_the_root_when_every_fit_has_landed() {
    #[derive(Resource, Default)]
    struct Ready(Vec<(Entity, usize, u32)>);
    let mut app = create_app();
    app.init_resource::<Ready>()
        .add_observer(|e: On<SceneReady>, mut ready: ResMut<Ready>| {
            ready.0.push((e.entity, e.bodies, e.generation));
        });
    let root = load_scene(
        &mut app,
        "scenes/thermodynamics.noether.ron",
        Duration::from_secs(120),
    )
    .expect("the shipped scene loads");
    assert_eq!(app.world().resource::<Ready>().0, vec![(root, 96, 1)]);
    let status = app.world().get::<SceneStatus>(root).unwrap();
    assert_eq!((status.bodies, status.pending_fits), (96, 0));
    // Fitted, not the mean: the bodies of one population carry different latents.
    let mut q = app.world_mut().query::<(&Population, &LatentCode)>();
    let latents: Vec<Vec<f32>> = q
        .iter(app.world())
        .filter(|(p, _)| p.index == 0)
        .map(|(_, z)| z.0.clone())
        .collect();
    assert_eq!(latents.len(), 48);
    assert!(latents.iter().any(|z| z != &latents[0]));
}

#[test]
fn non_finite_bodies_are_frozen_reported_and_counted_while_the_rest_steps() {
    let mut app = create_app();
    let model = add_model(&mut app, "pendulum-svd5");
    let nan_state = app
        .world_mut()
        .spawn((
            NoetherBody::new(model.clone()),
            PhaseState(vec![f32::NAN, 0.0]),
        ))
        .id();
    // A NaN latent makes the field NaN: the body's state becomes non-finite in its first
    // step, inside a batch with healthy bodies.
    let mut latent = vec![0.0; 10];
    latent[3] = f32::NAN;
    let nan_latent = app
        .world_mut()
        .spawn((
            NoetherBody::new(model.clone()),
            PhaseState(vec![0.5, 0.0]),
            LatentCode(latent),
        ))
        .id();
    let fine = spawn_bodies(&mut app, &model, 4, 14);
    let before = states(&mut app, &fine);
    for _ in 0..6 {
        app.update();
    }
    for e in [nan_state, nan_latent] {
        let frozen = app.world().get::<FrozenBody>(e);
        assert!(frozen.is_some(), "{e} is frozen");
        assert!(frozen.unwrap().reason.contains("finite"), "{:?}", frozen);
    }
    assert_eq!(
        app.world().get::<PhaseState>(nan_latent).unwrap().0,
        vec![0.5, 0.0],
        "held at its last finite state"
    );
    assert_eq!(app.world().resource::<StepDiagnostics>().frozen, 2);
    let store = app.world().resource::<bevy::diagnostic::DiagnosticsStore>();
    assert_eq!(
        store
            .get(&NoetherDiagnosticsPlugin::NONFINITE_BODIES)
            .and_then(|d| d.value()),
        Some(2.0)
    );
    let after = states(&mut app, &fine);
    assert!(after.iter().all(|v| v.is_finite()));
    assert_ne!(after, before, "the healthy bodies step on");
    // A new finite state from the game thaws a body.
    app.world_mut().get_mut::<PhaseState>(nan_state).unwrap().0 = vec![0.3, 0.0];
    for _ in 0..3 {
        app.update();
    }
    assert!(app.world().get::<FrozenBody>(nan_state).is_none());
    assert_ne!(
        app.world().get::<PhaseState>(nan_state).unwrap().0,
        vec![0.3, 0.0]
    );
}
