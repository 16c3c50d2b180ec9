//! The plugins in a headless app (`MinimalPlugins`, no render): stepping matches the core
//! integrators bit for bit, Hamiltonian energy holds, GENERIC entropy never decreases,
//! latents matter, pause/step work, scenes spawn and hot-reload, malformed scenes are
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
    diagnostics::NoetherDiagnosticsPlugin,
    dynamics::{DynamicsPlugin, MAX_SUBSTEP},
    headless::wait_for_scene,
    model::ModelPlugin,
    prelude::*,
    scene::{NoetherScene, ScenePlugin, SceneStatus},
    schedule::NoetherSchedulePlugin,
};
use noether::{
    integrate::{DiscreteGradient, ImplicitMidpoint, ImplicitSolver},
    nn::cpu::CpuFlow,
};

mod common;

use common::{HZ, add_model, create_app, spawn_bodies, states};

#[test]
fn stepping_matches_the_core_integrator_bit_for_bit() {
    let mut app = create_app();
    let model = add_model(&mut app, "pendulum-svd5");
    let entities = spawn_bodies(&mut app, &model, 40, 1);
    app.update();
    let m = app
        .world()
        .resource::<Assets<NoetherModel>>()
        .get(&model)
        .unwrap()
        .clone();
    let z: Vec<f32> = entities
        .iter()
        .flat_map(|&e| app.world().get::<LatentCode>(e).unwrap().0.clone())
        .collect();
    let mut expected = states(&mut app, &entities);
    let before = expected.clone();
    let h = 1.0 / HZ;
    assert!(h <= MAX_SUBSTEP);
    let midpoint = ImplicitMidpoint::default()
        .with_tolerance(1e-6)
        .with_solver(ImplicitSolver::FixedPoint);
    for _ in 0..20 {
        app.update();
        expected = midpoint
            .step_fixed_point(
                &CpuFlow {
                    model: &m.cpu,
                    latents: &z,
                },
                &expected,
                h,
            )
            .unwrap()
            .0;
    }
    let got = states(&mut app, &entities);
    assert_ne!(got, before, "the bodies moved");
    assert_eq!(
        got, expected,
        "the plugin steps exactly as the core integrator"
    );
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
    for &e in &p {
        let be = world.get::<BodyEnergy>(e).unwrap();
        assert!(
            be.max_drift < 2e-3,
            "pendulum energy drift {:e}",
            be.max_drift
        );
    }
    for &e in d.iter().chain(&t) {
        let be = world.get::<BodyEnergy>(e).unwrap();
        assert!(
            be.max_drift < 2e-3,
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
    let m = app
        .world()
        .resource::<Assets<NoetherModel>>()
        .get(&model)
        .unwrap()
        .clone();
    let mean = m.mean_latent();
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
    let steps = app.world().resource::<Time<Simulation>>().context().steps;
    app.world_mut().resource_mut::<Time<Simulation>>().unpause();
    app.update();
    assert_eq!(
        app.world().resource::<Time<Simulation>>().context().steps,
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

#[test]
fn malformed_scenes_are_reported_and_the_app_keeps_running() {
    let expected = [
        ("syntax", "syntax.noether.ron:3:90"),
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
    ];
    let mut app = create_app();
    let roots: Vec<(Entity, &str, &str)> = expected
        .iter()
        .map(|(name, needle)| {
            let handle = app
                .world()
                .resource::<AssetServer>()
                .load::<NoetherScene>(format!(
                    "plugins/bevy_noether/tests/scenes/bad/{name}.noether.ron"
                ));
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
    fn with<T: Plugin>() {
        let mut app = App::new();
        app.add_plugins((
            MinimalPlugins,
            AssetPlugin::default(),
            DiagnosticsPlugin,
            bevy::transform::TransformPlugin,
        ));
        app.add_plugins(NoetherPlugins::default().headless().disable::<T>());
        app.update();
    }
    with::<NoetherDiagnosticsPlugin>();
    with::<ScenePlugin>();
    with::<DynamicsPlugin>();
    with::<ModelPlugin>();
    // The schedule plugin owns the clock the others read; without it nothing steps.
    with::<NoetherSchedulePlugin>();
}

#[test]
fn a_discrete_gradient_batch_matches_the_core_step() {
    let mut app = create_app();
    let model = add_model(&mut app, "dno-svd3");
    let e = spawn_bodies(&mut app, &model, 12, 11);
    app.update();
    let m = app
        .world()
        .resource::<Assets<NoetherModel>>()
        .get(&model)
        .unwrap()
        .clone();
    let z: Vec<f32> = e
        .iter()
        .flat_map(|&x| app.world().get::<LatentCode>(x).unwrap().0.clone())
        .collect();
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
