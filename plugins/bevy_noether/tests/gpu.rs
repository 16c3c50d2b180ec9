//! The GPU path on whatever wgpu adapter the machine has (Mesa lavapipe on CI): a small
//! population stepped on burn-wgpu matches the CPU kernel, and stays resident on the device.

mod common;

use bevy::prelude::*;
use bevy_noether::dynamics::{ActiveBackend, GpuStepper, NoetherBackend};
use common::{add_model, create_app, spawn_bodies, states};

/// An app whose backend is `backend`, with its choice made (`finish`), and 16 pendulums.
fn app_with(backend: NoetherBackend) -> (App, Vec<Entity>) {
    let mut app = create_app();
    app.insert_resource(backend);
    app.finish();
    app.cleanup();
    let model = add_model(&mut app, "pendulum-svd5");
    let bodies = spawn_bodies(&mut app, &model, 16, 21);
    (app, bodies)
}

#[test]
fn a_population_stepped_on_wgpu_matches_the_cpu_kernel() {
    let (mut gpu, g) = app_with(NoetherBackend::Gpu);
    if !gpu.world().resource::<ActiveBackend>().gpu {
        // No adapter at all (not even lavapipe): `.ci/run` installs one, so say so loudly.
        panic!("no wgpu adapter: install mesa-vulkan-drivers (see .ci/run)");
    }
    let (mut cpu, c) = app_with(NoetherBackend::Cpu);
    assert!(!cpu.world().resource::<ActiveBackend>().gpu);
    let start = states(&mut cpu, &c);
    assert_eq!(states(&mut gpu, &g), start, "same bodies");
    for _ in 0..12 {
        gpu.update();
        cpu.update();
    }
    let (x_gpu, x_cpu) = (states(&mut gpu, &g), states(&mut cpu, &c));
    assert_ne!(x_cpu, start, "the bodies moved");
    let worst = x_gpu
        .iter()
        .zip(&x_cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "GPU and CPU differ by {worst:e}");
    // One upload at the start: the batch stayed on the device for all 12 ticks.
    assert_eq!(gpu.world().resource::<GpuStepper>().uploads, 1);
}
