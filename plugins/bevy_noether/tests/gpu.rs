//! The GPU path on whatever wgpu adapter the machine has (Mesa lavapipe on CI): a population
//! stepped by the fused kernel follows the CPU kernel's trajectory (a tick or more behind:
//! results come back asynchronously), stays resident on the device with one launch and no
//! blocking sync per tick — general networks by implicit midpoint, separable ones by
//! Yoshida-4, GENERIC ones by the discrete gradient, two models of one kernel shape in one
//! launch, a hot-reloaded model uploaded again; `Measure` times both backends and reports
//! the choice.

mod common;

use bevy::prelude::*;
use bevy_noether::{
    dynamics::{ActiveBackend, BodyEnergy, GpuStepper, LatentCode, NoetherBackend, NoetherBody},
    model::NoetherModel,
};
use common::{add_model, create_app, spawn_bodies, states};
use noether::{
    nn::{Architecture, ModelConfig, Modulation, cpu::ModelParams},
    runtime::LearnedModel,
    systems::Family,
};

/// An app whose backend is `backend`, with its choice made (`finish`), and 16 pendulums of
/// the model `add` puts into it.
fn app_with_model(
    backend: NoetherBackend,
    add: impl Fn(&mut App) -> Handle<NoetherModel>,
) -> (App, Vec<Entity>) {
    let mut app = create_app();
    app.insert_resource(backend);
    app.finish();
    app.cleanup();
    let model = add(&mut app);
    let bodies = spawn_bodies(&mut app, &model, 16, 21);
    (app, bodies)
}

/// An app whose backend is `backend` with two populations of models of one kernel shape:
/// 9 pendulums and 7 mass-springs (the shipped SVD(5) models).
fn app_with_two_models(backend: NoetherBackend) -> (App, Vec<Entity>) {
    let (mut app, mut bodies) = app_with_model(backend, |app| add_model(app, "pendulum-svd5"));
    for e in bodies.split_off(9) {
        app.world_mut().despawn(e);
    }
    let springs = add_model(&mut app, "mass_spring-svd5");
    bodies.extend(spawn_bodies(&mut app, &springs, 7, 22));
    (app, bodies)
}

/// A GENERIC dno network (E, S: 16, 12; A, C: 8, 8; weights as initialised): its bodies
/// step by the discrete gradient.
fn add_generic(app: &mut App) -> Handle<NoetherModel> {
    let mut config = ModelConfig::new(Family::Dno, Modulation::Svd { rank: 3 })
        .with_hidden(vec![16, 12])
        .with_d_latent(4)
        .with_seed(6);
    config.assembly_hidden = vec![8, 8];
    let params = ModelParams::from_model(&config.init::<burn::backend::Flex>(&Default::default()));
    app.world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(NoetherModel(LearnedModel::new(config, params)))
}

/// [`app_with_model`] with the shipped pendulum SVD(5).
fn app_with(backend: NoetherBackend) -> (App, Vec<Entity>) {
    app_with_model(backend, |app| add_model(app, "pendulum-svd5"))
}

/// A separable pendulum network H = T(p; z) + V(q; z) (weights as initialised): its bodies
/// step by Yoshida-4 (`Auto` for a separable H).
fn add_separable(app: &mut App) -> Handle<NoetherModel> {
    let config = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 3 })
        .with_architecture(Architecture::SeparableHnn)
        .with_hidden(vec![16, 16])
        .with_d_latent(4)
        .with_seed(5);
    let params = ModelParams::from_model(&config.init::<burn::backend::Flex>(&Default::default()));
    app.world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(NoetherModel(LearnedModel::new(config, params)))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, |m, v| {
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        })
}

#[test]
fn a_population_on_the_fused_kernel_follows_the_cpu_kernel() {
    assert_gpu_follows_cpu(app_with);
}

#[test]
fn a_separable_population_steps_by_yoshida_on_the_fused_kernel() {
    assert_gpu_follows_cpu(|backend| app_with_model(backend, add_separable));
}

#[test]
fn a_generic_population_steps_by_the_discrete_gradient_on_the_fused_kernel() {
    assert_gpu_follows_cpu(|backend| app_with_model(backend, add_generic));
}

#[test]
fn populations_of_two_models_of_one_shape_share_one_launch_per_tick() {
    assert_gpu_follows_cpu(app_with_two_models);
}

/// 12 ticks of the same bodies on the GPU and on the CPU: the GPU shows the CPU's
/// trajectory a few ticks back to 1e-4, energies from the launch are H of the shown states
/// (each under its own model), one batch on the device, one upload, one launch per step
/// and no blocking sync.
fn assert_gpu_follows_cpu(app_with: impl Fn(NoetherBackend) -> (App, Vec<Entity>)) {
    let (mut gpu, g) = app_with(NoetherBackend::Gpu);
    if !gpu.world().resource::<ActiveBackend>().gpu {
        // No adapter at all (not even lavapipe): `.ci/run` installs one, so say so loudly.
        panic!("no wgpu adapter: install mesa-vulkan-drivers (see .ci/run)");
    }
    let (mut cpu, c) = app_with(NoetherBackend::Cpu);
    assert!(!cpu.world().resource::<ActiveBackend>().gpu);
    let start = states(&mut cpu, &c);
    assert_eq!(states(&mut gpu, &g), start, "same bodies");
    let mut trajectory = vec![start.clone()];
    for _ in 0..12 {
        gpu.update();
        cpu.update();
        trajectory.push(states(&mut cpu, &c));
    }
    let x_gpu = states(&mut gpu, &g);
    assert_ne!(x_gpu, start, "a read-back arrived and the bodies moved");
    // The GPU shows the CPU trajectory at some earlier tick (the read-back's lag).
    let (lag, worst) = trajectory
        .iter()
        .rev()
        .enumerate()
        .map(|(lag, x)| (lag, max_diff(&x_gpu, x)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("12 ticks");
    eprintln!("GPU states match the CPU kernel's {lag} tick(s) back, to {worst:e}");
    assert!(
        worst <= 1e-4,
        "GPU and CPU differ by {worst:e} (best lag {lag})"
    );
    let diag = gpu
        .world()
        .resource::<bevy_noether::dynamics::StepDiagnostics>();
    assert_eq!(
        diag.non_converged, 0,
        "every fixed point converged on the device"
    );
    // Energies came with the read-back (the same launch): they are H at the shown states.
    let models = gpu.world().resource::<Assets<NoetherModel>>();
    let n = x_gpu.len() / g.len();
    for (k, &e) in g.iter().enumerate() {
        let body = gpu.world().get::<NoetherBody>(e).expect("body");
        let model = models.get(&body.model).expect("model");
        let z = &gpu.world().get::<LatentCode>(e).expect("latent").0;
        let mut want = [0.0];
        model.cpu.energy(&x_gpu[k * n..(k + 1) * n], z, &mut want);
        let got = gpu.world().get::<BodyEnergy>(e).expect("energy").energy;
        assert!(
            (got - want[0]).abs() <= 1e-5 * want[0].abs().max(1.0),
            "body {k}: recorded H {got}, H of its state {}",
            want[0]
        );
        if model.cpu.is_generic() {
            // E, S and ∇E came with the read-back too: S and the temperatures ∂E/∂Sᵢ.
            let record = gpu.world().get::<BodyEnergy>(e).expect("energy");
            let x = &x_gpu[k * n..(k + 1) * n];
            let (mut s, mut grad) = ([0.0], vec![0.0; n]);
            assert!(model.cpu.entropy(x, z, &mut s));
            model.cpu.energy_grad(x, z, &mut grad);
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
            assert!(
                close(record.entropy, s[0]),
                "body {k}: S {} against {}",
                record.entropy,
                s[0]
            );
            assert!(
                close(record.temperatures[0], grad[2]),
                "body {k}: T {} against ∂E/∂S {}",
                record.temperatures[0],
                grad[2]
            );
        }
    }
    let stepper = gpu.world().resource::<GpuStepper>();
    let counters = stepper.counters();
    // One batch, uploaded once at the start: it stayed on the device for all 12 ticks,
    // each one launch (every model of the shape in it), none waiting for the device.
    assert_eq!(stepper.resident_batches(), 1);
    assert_eq!(stepper.uploads, 1);
    // The first update only starts the clock: 11 steps.
    assert_eq!(counters.steps, 11);
    assert_eq!(counters.blocking_syncs, 0, "{counters:?}");
}

#[test]
fn measuring_times_both_backends_and_reports_the_choice() {
    let (mut app, bodies) = app_with(NoetherBackend::Measure);
    assert!(
        app.world().resource::<ActiveBackend>().gpu,
        "lavapipe in CI"
    );
    let start = states(&mut app, &bodies);
    for _ in 0..4 {
        app.update();
    }
    let active = app.world().resource::<ActiveBackend>();
    assert_eq!(active.choices.len(), 1, "{:?}", active.choices);
    let choice = &active.choices[0];
    assert_eq!(choice.bodies, 16);
    assert!(choice.gpu_ms > 0.0 && choice.cpu_ms > 0.0, "{choice:?}");
    assert_eq!(
        choice.gpu,
        choice.gpu_ms < choice.cpu_ms,
        "the faster one wins"
    );
    eprintln!("measured: {choice:?}");
    if !choice.gpu {
        // On the CPU kernel the bodies move every tick.
        assert_ne!(states(&mut app, &bodies), start);
    }
}

#[test]
fn a_hot_reloaded_model_is_uploaded_again_and_changes_the_gpu_result() {
    // Two identical GPU apps; in one, the pendulum asset gets the mass-spring model's
    // weights (same kernel shape) after 4 ticks, as a hot reload would replace it.
    let (mut swapped, bodies) = app_with(NoetherBackend::Gpu);
    let (mut kept, same) = app_with(NoetherBackend::Gpu);
    assert!(
        swapped.world().resource::<ActiveBackend>().gpu,
        "lavapipe in CI"
    );
    for _ in 0..4 {
        swapped.update();
        kept.update();
    }
    let handle = swapped
        .world()
        .get::<NoetherBody>(bodies[0])
        .expect("body")
        .model
        .clone();
    let spring = LearnedModel::load(&common::assets().join("models/mass_spring-svd5"))
        .expect("shipped model");
    swapped
        .world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .insert(handle.id(), NoetherModel(spring))
        .expect("the asset exists");
    for _ in 0..8 {
        swapped.update();
        kept.update();
    }
    let uploads = |app: &App| app.world().resource::<GpuStepper>().uploads;
    assert_eq!(
        uploads(&kept),
        1,
        "no reload: the batch stayed on the device"
    );
    assert_eq!(
        uploads(&swapped),
        2,
        "the reloaded model's group was uploaded again"
    );
    let (a, b) = (states(&mut swapped, &bodies), states(&mut kept, &same));
    assert!(
        max_diff(&a, &b) > 1e-4,
        "the new weights moved the bodies differently (max diff {:e})",
        max_diff(&a, &b)
    );
}
