//! GPU stepping benchmark: the fused kernel (`noether::nn::gpu::FusedStepper`, one launch per
//! tick, states resident on the device) against the CPU kernel (`noether::runtime::advance`)
//! on the shipped pendulum SVD(5) model (implicit midpoint, RK4), on a separable pendulum
//! network of the same size (3×100, SVD(5), d_z = 10, weights as initialised; Yoshida-4)
//! and on the shipped GENERIC dno SVD(3) model (discrete gradient), every body its own
//! latent, in one run. On a machine
//! with a GPU:
//!
//! ```text
//! cargo run --release --example bench_gpu -- --max 1000000
//! ```
//!
//! Without one it runs on whatever adapter wgpu finds (Mesa lavapipe: software Vulkan on the
//! same CPUs; keep `--max` at 10 000 there, and `--min 100 --max 100` for the GENERIC row,
//! whose discrete gradient takes six network gradients per fixed-point update). Rows go from
//! `--min` (default 1000) up by 10× to `--max`. Two GPU columns: launches only (one blocking
//! read after the timed steps, so the time covers every step), and the game loop's pattern
//! (launch + an asynchronous read-back requested every tick and picked up when ready).
//! Prints a Markdown table with launches and blocking syncs per step, then a second: the
//! three shipped Hamiltonian models of one network shape (pendulum, mass_spring and duffing
//! SVD(5)) stepped as one group in one dispatch per tick against one dispatch per model.

use std::time::{Duration, Instant};

use burn::backend::Flex;
use noether::{
    data::stream_rng,
    integrate::Integrator,
    nn::{
        Architecture, ModelConfig, Modulation,
        cpu::{CpuFlow, CpuModel, ModelParams},
        gpu::{BatchPart, DeviceBatch, DeviceModel, FusedStepper},
    },
    runtime::{LearnedModel, StepSettings, advance},
    systems::Family,
};
use rand::RngExt;

const DT: f64 = 1.0 / 64.0;
const BUDGET: Duration = Duration::from_secs(3);

/// The value after `--name` on the command line, or `default`.
fn count(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (min, max) = (count(&args, "--min", 1000), count(&args, "--max", 10_000));
    let (device, adapter) = match noether::device::probe_wgpu() {
        Ok(found) => found,
        Err(reason) => {
            eprintln!("error: {reason} (install mesa-vulkan-drivers for a software adapter)");
            std::process::exit(1);
        }
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shipped =
        LearnedModel::load(&root.join("assets/models/pendulum-svd5")).expect("shipped model");
    let config = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 })
        .with_architecture(Architecture::SeparableHnn)
        .with_hidden(vec![100, 100, 100])
        .with_d_latent(10);
    let split = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
    let dno = LearnedModel::load(&root.join("assets/models/dno-svd3")).expect("shipped model");
    // (label, weights, CPU kernel, mean latent, integrators)
    let cases = [
        (
            "pendulum-svd5",
            (*shipped.params).clone(),
            (*shipped.cpu).clone(),
            shipped.mean_latent(),
            vec![Integrator::Midpoint, Integrator::Rk4],
        ),
        (
            "separable SVD(5)",
            split.clone(),
            CpuModel::from_params(&split, &config),
            vec![0.0; 10],
            vec![Integrator::Yoshida4],
        ),
        (
            "dno-svd3",
            (*dno.params).clone(),
            (*dno.cpu).clone(),
            dno.mean_latent(),
            vec![Integrator::DiscreteGradient],
        ),
    ];
    let settings = StepSettings::default();
    let mut gpu = FusedStepper::new(&device);
    println!("adapter: {adapter}\n");
    println!(
        "| bodies | model | method | GPU body-steps/s (launches) | GPU body-steps/s (launch + async read-back) | CPU kernel body-steps/s | GPU / CPU | launches per step | blocking syncs per step | one step: max rel. |GPU − CPU| |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = min.max(1);
    while rows <= max {
        let mut rng = stream_rng("bench/gpu", rows as u64, 0);
        for (label, params, cpu, mean, methods) in &cases {
            let x: Vec<f32> = (0..rows * cpu.dim())
                .map(|_| (2.0 * rng.random::<f64>() - 1.0) as f32)
                .collect();
            let device_model = gpu.upload_model(params).expect("the model packs");
            let dz = mean.len();
            let z: Vec<f32> = (0..rows * dz)
                .map(|i| mean[i % dz] + 0.1 * (2.0 * rng.random::<f32>() - 1.0))
                .collect();
            for &method in methods {
                let mut batch = gpu.upload_batch(&device_model, &x, &z).expect("batch");
                // Warm-up: the kernel compiles on its first launch. Its step against the CPU
                // kernel's, for the accuracy column.
                gpu.step(&device_model, &batch, method, DT, &settings)
                    .expect("step");
                let first = gpu.read_blocking(&mut batch).expect("read");
                let flow = CpuFlow {
                    model: cpu,
                    latents: &z,
                };
                let want = advance(&flow, method, x.clone(), DT, &settings)
                    .expect("CPU step")
                    .0;
                let error = first
                    .states
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                    .fold(0.0f32, f32::max);

                let before = gpu.counters();
                let (start, mut steps) = (Instant::now(), 0);
                while start.elapsed() < BUDGET || steps < 3 {
                    // Launches return at once: bound the queue by reading every 16 steps.
                    for _ in 0..16 {
                        gpu.step(&device_model, &batch, method, DT, &settings)
                            .expect("step");
                    }
                    gpu.read_blocking(&mut batch).expect("read");
                    steps += 16;
                }
                let launch_rate = (rows * steps) as f64 / start.elapsed().as_secs_f64();
                let counted = gpu.counters();
                let per_step = |a: u64, b: u64| (a - b) as f64 / steps as f64;
                let launches = per_step(counted.dispatches, before.dispatches);

                let before = gpu.counters();
                let (start, mut steps, mut arrived) = (Instant::now(), 0, 0);
                while start.elapsed() < BUDGET || steps < 3 {
                    gpu.step(&device_model, &batch, method, DT, &settings)
                        .expect("step");
                    gpu.request_readback(&mut batch);
                    if gpu.poll_readback(&mut batch).expect("read").is_some() {
                        arrived += 1;
                    }
                    steps += 1;
                }
                // The time covers every step launched: wait for the last one (outside the sync
                // count, which is the loop's).
                let syncs = per_step(gpu.counters().blocking_syncs, before.blocking_syncs);
                gpu.read_blocking(&mut batch).expect("read");
                let async_rate = (rows * steps) as f64 / start.elapsed().as_secs_f64();
                eprintln!("{rows} {method:?}: {arrived} read-backs arrived during {steps} steps");

                let (start, mut steps) = (Instant::now(), 0);
                let mut xc = x.clone();
                while start.elapsed() < BUDGET || steps < 3 {
                    let flow = CpuFlow {
                        model: cpu,
                        latents: &z,
                    };
                    xc = advance(&flow, method, xc, DT, &settings)
                        .expect("CPU step")
                        .0;
                    steps += 1;
                }
                let cpu_rate = (rows * steps) as f64 / start.elapsed().as_secs_f64();
                println!(
                    "| {rows} | {label} | {method:?} | {launch_rate:.3e} | {async_rate:.3e} | {cpu_rate:.3e} | {:.2} | {launches:.2} | {syncs:.2} | {error:.1e} |",
                    async_rate / cpu_rate
                );
            }
        }
        rows *= 10;
    }
    grouped(&mut gpu, &root, max, &settings);
}

/// Launches-only body-steps/s of `step` (one tick of every batch) on `bodies` bodies: a
/// blocking read of `batches` every 16 ticks bounds the queue.
fn launch_rate(
    gpu: &mut FusedStepper,
    bodies: usize,
    batches: &mut [DeviceBatch],
    mut step: impl FnMut(&mut FusedStepper, &[DeviceBatch]),
) -> f64 {
    step(gpu, batches);
    let (start, mut steps) = (Instant::now(), 0);
    while start.elapsed() < BUDGET || steps < 3 {
        for _ in 0..16 {
            step(gpu, batches);
        }
        for b in batches.iter_mut() {
            gpu.read_blocking(b).expect("read");
        }
        steps += 16;
    }
    (bodies * steps) as f64 / start.elapsed().as_secs_f64()
}

/// Three shipped models of one shape: one grouped dispatch per tick against one per model.
fn grouped(gpu: &mut FusedStepper, root: &std::path::Path, max: usize, settings: &StepSettings) {
    let models: Vec<LearnedModel> = ["pendulum-svd5", "mass_spring-svd5", "duffing-svd5"]
        .iter()
        .map(|name| LearnedModel::load(&root.join("assets/models").join(name)).expect("shipped"))
        .collect();
    let params: Vec<&ModelParams> = models.iter().map(|m| m.params.as_ref()).collect();
    let group = gpu.upload_models(&params).expect("one network shape");
    let singles: Vec<DeviceModel> = params
        .iter()
        .map(|p| gpu.upload_model(p).expect("packs"))
        .collect();
    println!(
        "\n| bodies (three models, a third each) | method | one grouped dispatch: body-steps/s | three dispatches: body-steps/s | grouped / separate | dispatches per tick (grouped / separate) |"
    );
    println!("|---|---|---|---|---|---|");
    let method = Integrator::Midpoint;
    let mut rows = 1000;
    while rows <= max {
        let third = rows / 3;
        let mut rng = stream_rng("bench/gpu-group", rows as u64, 0);
        let data: Vec<(Vec<f32>, Vec<f32>)> = models
            .iter()
            .map(|m| {
                let mean = m.mean_latent();
                let x = (0..third * 2)
                    .map(|_| (2.0 * rng.random::<f64>() - 1.0) as f32)
                    .collect();
                let z = (0..third * mean.len())
                    .map(|i| mean[i % mean.len()] + 0.1 * (2.0 * rng.random::<f32>() - 1.0))
                    .collect();
                (x, z)
            })
            .collect();
        let parts: Vec<BatchPart<'_>> = data
            .iter()
            .enumerate()
            .map(|(model, (states, latents))| BatchPart {
                model,
                states,
                latents,
            })
            .collect();
        let mut one = vec![gpu.upload_parts(&group, &parts).expect("batch")];
        let before = gpu.counters().dispatches;
        let together = launch_rate(gpu, 3 * third, &mut one, |gpu, b| {
            gpu.step(&group, &b[0], method, DT, settings).expect("step");
        });
        let grouped_launches = gpu.counters().dispatches - before;
        let mut three: Vec<DeviceBatch> = singles
            .iter()
            .zip(&data)
            .map(|(m, (x, z))| gpu.upload_batch(m, x, z).expect("batch"))
            .collect();
        let before = gpu.counters().dispatches;
        let apart = launch_rate(gpu, 3 * third, &mut three, |gpu, b| {
            for (m, batch) in singles.iter().zip(b) {
                gpu.step(m, batch, method, DT, settings).expect("step");
            }
        });
        let separate_launches = gpu.counters().dispatches - before;
        println!(
            "| {} | {method:?} | {together:.3e} | {apart:.3e} | {:.2} | 1 / {:.0} |",
            3 * third,
            together / apart,
            separate_launches as f64 / grouped_launches as f64
        );
        rows *= 10;
    }
}
