//! GPU stepping benchmark: the runtime's resident burn-wgpu batch (`GpuStepper`, the path
//! `NoetherBackend::Gpu` takes) against the CPU kernel (`noether::runtime::advance`) for growing
//! populations of pendulums, every body its own latent. One command on a machine with a GPU:
//!
//! ```text
//! cargo run -p bevy_noether --example bench_gpu -- --max 1000000
//! ```
//!
//! Without a GPU it runs on whatever adapter wgpu finds (Mesa lavapipe: software Vulkan, so
//! keep `--max` small there). Prints a Markdown table: body-steps/s on each backend and the
//! ratio, plus the adapter's description.

use std::time::{Duration, Instant};

use bevy::{asset::AssetId, prelude::*};
use bevy_noether::{
    dynamics::{GpuStepper, standalone_gpu},
    model::NoetherModel,
};
use noether::{
    data::stream_rng,
    integrate::Integrator,
    nn::cpu::CpuFlow,
    runtime::{LearnedModel, StepSettings, advance},
};
use rand::RngExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let max: usize = args
        .iter()
        .position(|a| a == "--max")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let Some((device, adapter)) = standalone_gpu() else {
        eprintln!("error: no wgpu adapter (install mesa-vulkan-drivers for a software one)");
        std::process::exit(1);
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = NoetherModel(
        LearnedModel::load(&root.join("assets/models/pendulum-svd5")).expect("shipped model"),
    );
    let settings = StepSettings::default();
    let mut gpu = GpuStepper::new(device);
    let id = AssetId::<NoetherModel>::default();
    let dz = model.config.d_latent;
    println!("adapter: {adapter}\n");
    println!("| bodies | method | GPU body-steps/s | CPU kernel body-steps/s | GPU / CPU |");
    println!("|---|---|---|---|---|");
    let mut world = World::new();
    let mut rows = 1000;
    while rows <= max {
        let mut rng = stream_rng("bench/gpu", rows as u64, 0);
        let x: Vec<f32> = (0..rows * 2)
            .map(|_| (2.0 * rng.random::<f64>() - 1.0) as f32)
            .collect();
        let mean = model.mean_latent();
        let z: Vec<f32> = (0..rows * dz)
            .map(|i| mean[i % dz] + 0.1 * (2.0 * rng.random::<f32>() - 1.0))
            .collect();
        let entities: Vec<Entity> = (0..rows).map(|_| world.spawn_empty().id()).collect();
        for method in [Integrator::Midpoint, Integrator::Rk4] {
            // First step uploads; the timed steps reuse the resident batch (as the runtime
            // does) and read the states back each step.
            let mut state = gpu
                .step(
                    id,
                    &model,
                    method,
                    &entities,
                    x.clone(),
                    z.clone(),
                    1.0 / 64.0,
                    &settings,
                )
                .expect("GPU step")
                .0;
            let (start, mut steps) = (Instant::now(), 0);
            while start.elapsed() < Duration::from_secs(2) || steps < 3 {
                state = gpu
                    .step(
                        id,
                        &model,
                        method,
                        &entities,
                        state,
                        z.clone(),
                        1.0 / 64.0,
                        &settings,
                    )
                    .expect("GPU step")
                    .0;
                steps += 1;
            }
            let gpu_rate = (rows * steps) as f64 / start.elapsed().as_secs_f64();
            let (start, mut steps) = (Instant::now(), 0);
            let mut xc = x.clone();
            while start.elapsed() < Duration::from_secs(2) || steps < 3 {
                let flow = CpuFlow {
                    model: &model.cpu,
                    latents: &z,
                };
                xc = advance(&flow, method, xc, 1.0 / 64.0, &settings)
                    .expect("CPU step")
                    .0;
                steps += 1;
            }
            let cpu_rate = (rows * steps) as f64 / start.elapsed().as_secs_f64();
            println!(
                "| {rows} | {method:?} | {gpu_rate:.3e} | {cpu_rate:.3e} | {:.2} |",
                gpu_rate / cpu_rate
            );
        }
        rows *= 10;
    }
}
