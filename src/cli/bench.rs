//! `noether bench`: throughput benchmarks printed as Markdown tables for BENCHMARKS.md.

use std::time::{Duration, Instant};

use burn::{
    backend::Flex,
    tensor::{Tensor, TensorData},
};
use clap::{Args, Subcommand};
use noether::{
    data::{DatasetSpec, load_or_generate, stream_rng},
    integrate::{Integrator, Stepper},
    meta::{
        AdaptConfig, Baseline, BaselineConfig, MetaConfig, Method, Profile, TaskSet,
        adapt_baseline, adapt_latents, meta_train, train_baseline,
    },
    nn::cpu::{BASE_FLOPS_PER_ROW, ModelParams},
    nn::{LatentField, ModelConfig, Modulation, cpu::CpuModel},
    systems::Family,
};
use rand::RngExt;

use super::{CliResult, count_in, limits, number_in, outln};

/// The benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Ground-truth integrator throughput (steps/s) per family and integrator.
    Integrators(IntegratorArgs),
    /// Network forward + ∇ₓ throughput per method and batch size, shared vs per-row latents.
    Network(NetworkArgs),
    /// Meta-training iterations/s per method (batch 10 instances × 64 points) and
    /// test-time adaptation time per instance.
    Meta(MetaArgs),
}

/// Arguments of `noether bench meta`.
#[derive(Args, Debug)]
pub struct MetaArgs {
    /// Family whose dataset (seed 0) trains.
    #[arg(long, default_value = "mass_spring")]
    system: Family,
    /// Outer iterations timed per method.
    #[arg(long, default_value_t = 200, value_parser = count_in(1, limits::MAX_ITERATIONS))]
    iterations: usize,
    /// Methods (modulations and baselines).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shift,fw,ro,mr5,svd5,scratch,maml,anil,reptile"
    )]
    methods: Vec<Method>,
    /// Dataset cache directory.
    #[arg(long, default_value = "data")]
    data: std::path::PathBuf,
}

/// Arguments of `noether bench network`.
#[derive(Args, Debug)]
pub struct NetworkArgs {
    /// Minimum wall time per measurement, in seconds.
    #[arg(long, default_value_t = 0.3, value_parser = number_in(0.0, limits::MAX_BENCH_SECONDS, true))]
    seconds: f64,
    /// Batch sizes (rows).
    #[arg(long, value_delimiter = ',', default_value = "1,64,1000,16000,64000", value_parser = count_in(1, limits::MAX_BATCH))]
    batches: Vec<usize>,
    /// Methods.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,shift,fw,ro,mr5,svd5"
    )]
    methods: Vec<Modulation>,
    /// Also time the burn (Flex) implementation at this batch size (0: skip).
    #[arg(long, default_value_t = 10_000, value_parser = count_in(1, limits::MAX_BATCH))]
    burn_batch: usize,
}

/// Arguments of `noether bench integrators`.
#[derive(Args, Debug)]
pub struct IntegratorArgs {
    /// Wall time per (family, integrator) cell, in seconds.
    #[arg(long, default_value_t = 0.5, value_parser = number_in(0.0, limits::MAX_BENCH_SECONDS, true))]
    seconds: f64,
}

/// Runs a benchmark.
pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Integrators(args) => integrators(&args),
        BenchCommand::Network(args) => network(&args),
        BenchCommand::Meta(args) => meta(&args),
    }
}

/// `noether bench meta`: protocol-v1 training settings (batch 10 × 64, N_in = 1), no
/// validation inside the timed iterations; adaptation: 10 shots, the protocol's steps.
fn meta(args: &MetaArgs) -> CliResult {
    let (data, _) = load_or_generate(&args.data, &DatasetSpec::new(args.system, 0), &|_| ())?;
    let tasks = TaskSet::new(&data);
    let device = Default::default();
    let instance = tasks.meta_test()[0];
    let shots = AdaptConfig::default().shots;
    outln!(
        "{} (seed 0), {} outer iterations per method, CPU training kernel (Flex for baselines' adaptation); \
         modulations: iterations/s of the fastest fifth of the loop (as benches/jax_meta.py takes its fastest round), \
         baselines: of the whole run",
        args.system,
        args.iterations
    );
    outln!(
        "| method | meta-iterations/s | test-time adaptation: ms per instance ({shots} shots) |"
    );
    outln!("|---|---|---|");
    for &method in &args.methods {
        let base = ModelConfig::new(args.system, Modulation::None);
        let (rate, adapt_ms) = match method {
            Method::Modulated(modulation) => {
                let config = ModelConfig { modulation, ..base };
                let cfg = MetaConfig {
                    iterations: args.iterations,
                    validate_every: usize::MAX,
                    ..Profile::Paper.meta(0)
                };
                let mut stamps = Vec::with_capacity(args.iterations);
                let out = meta_train::<Flex>(&config, &tasks, &cfg, &device, &mut |_, _| {
                    stamps.push(Instant::now());
                });
                let rate = loop_rate(&stamps).unwrap_or(f64::NAN);
                let params = ModelParams::from_model(&out.model);
                let z0: Vec<f32> = vec![0.0; config.d_latent];
                let shot_sets = [tasks.shots(instance, shots)];
                let seconds = time_per_call(Duration::from_secs(1), || {
                    adapt_latents(&params, &shot_sets, &z0, &cfg.adapt);
                });
                (rate, seconds * 1e3)
            }
            Method::Baseline(baseline) => {
                let cfg = BaselineConfig {
                    iterations: args.iterations,
                    ..Profile::Paper.baseline(0)
                };
                let t = Instant::now();
                let out =
                    train_baseline::<Flex>(&base, baseline, &tasks, &cfg, &device, &mut |_, _| {});
                let rate = args.iterations as f64 / t.elapsed().as_secs_f64();
                let seconds = time_per_call(Duration::from_secs(1), || {
                    adapt_baseline::<Flex>(
                        &out,
                        baseline,
                        &tasks.shots(instance, shots),
                        &cfg,
                        instance,
                        &device,
                    );
                });
                (rate, seconds * 1e3)
            }
        };
        let rate = if method == Method::Baseline(Baseline::Scratch) {
            "— (trains at test time only)".to_owned()
        } else if rate.is_nan() {
            "— (time two iterations or more)".to_owned()
        } else {
            format!("{rate:.1}")
        };
        outln!("| {} | {rate} | {adapt_ms:.2} |", method.label());
    }
    Ok(())
}

/// Outer iterations per second of a training loop from the instants its iterations ended:
/// the fastest of five equal runs of consecutive iterations (as `benches/jax_meta.py`
/// reports the fastest of five rounds; the machine is shared). Setup, the first iteration
/// (no start instant) and the final validation are outside every run.
/// `None` under two iterations.
fn loop_rate(stamps: &[Instant]) -> Option<f64> {
    let per_run = (stamps.len().checked_sub(1)? / 5).max(1);
    stamps
        .windows(per_run + 1)
        .step_by(per_run)
        .map(|w| per_run as f64 / (w[per_run] - w[0]).as_secs_f64())
        .reduce(f64::max)
}

/// Seconds per call of `f`: after one warm-up call, five rounds of at least `budget / 5`
/// each, and the fastest round's mean (the machine is shared: the minimum is the least
/// disturbed estimate).
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let round = budget / 5;
    (0..5)
        .map(|_| {
            let (start, mut calls) = (Instant::now(), 0u32);
            while start.elapsed() < round || calls < 2 {
                f();
                calls += 1;
            }
            start.elapsed().as_secs_f64() / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Seconds per call of `f` and of `g`, measured in alternating rounds (so drifts in machine
/// load hit both alike), each the fastest of five rounds.
fn time_pair(budget: Duration, mut f: impl FnMut(), mut g: impl FnMut()) -> (f64, f64) {
    f();
    g();
    let round = budget / 5;
    let time = |h: &mut dyn FnMut()| {
        let (start, mut calls) = (Instant::now(), 0u32);
        while start.elapsed() < round || calls < 2 {
            h();
            calls += 1;
        }
        start.elapsed().as_secs_f64() / f64::from(calls)
    };
    (0..5).fold((f64::INFINITY, f64::INFINITY), |(a, b), _| {
        (a.min(time(&mut f)), b.min(time(&mut g)))
    })
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("bench/network", seed, 0);
    (0..n)
        .map(|_| (2.0 * rng.random::<f64>() - 1.0) as f32)
        .collect()
}

fn network(args: &NetworkArgs) -> CliResult {
    let budget = Duration::from_secs_f64(args.seconds);
    let dev = Default::default();
    outln!("Pendulum HNN, 2 → 3×100 tanh → 1, forward + ∇ₓ (the field J∇H), f32, CPU kernel.");
    outln!(
        "GFLOP/s counts the unmodulated network's GEMM work ({BASE_FLOPS_PER_ROW} FLOP/row) for every method.\n"
    );
    outln!(
        "| method | rows | shared z: rows/s | per-row z: rows/s | per-row / shared time | per-row GFLOP/s | plain GEMM [rows×100]·[100×100] GFLOP/s |"
    );
    outln!("|---|---|---|---|---|---|---|");
    for &method in &args.methods {
        let model = ModelConfig::new(Family::Pendulum, method).init::<Flex>(&dev);
        let cpu = CpuModel::from_model(&model);
        let z1 = random(10, 1);
        let folded = cpu.fold(&z1);
        for &rows in &args.batches {
            let x = random(rows * 2, 2);
            let z = random(rows * 10, 3);
            let (mut out_a, mut out_b) = (vec![0.0; rows * 2], vec![0.0; rows * 2]);
            let (shared, hetero) = time_pair(
                budget,
                || folded.field(&x, &[], &mut out_a),
                || cpu.field(&x, &z, &mut out_b),
            );
            let a = random(rows * 100, 4);
            let w = random(100 * 100, 5);
            let gemm = time_per_call(budget, || noether::nn::cpu::bench_gemm(&a, &w, rows));
            outln!(
                "| {method} | {rows} | {:.3e} | {:.3e} | {:.2} | {:.1} | {:.1} |",
                rows as f64 / shared,
                rows as f64 / hetero,
                hetero / shared,
                BASE_FLOPS_PER_ROW * rows as f64 / hetero / 1e9,
                2.0 * 100.0 * 100.0 * rows as f64 / gemm / 1e9
            );
        }
        if args.burn_batch > 0 {
            let rows = args.burn_batch;
            let x =
                Tensor::<Flex, 2>::from_data(TensorData::new(random(rows * 2, 2), [rows, 2]), &dev);
            let z = Tensor::<Flex, 2>::from_data(
                TensorData::new(random(rows * 10, 3), [rows, 10]),
                &dev,
            );
            let burn = time_per_call(budget, || {
                let _ = model.field(x.clone(), &z).into_data();
            });
            let xs = random(rows * 2, 2);
            let zs = random(rows * 10, 3);
            let mut out = vec![0.0; rows * 2];
            let kernel = time_per_call(budget, || cpu.field(&xs, &zs, &mut out));
            outln!(
                "| {method} (burn Flex, per-row z) | {rows} | — | {:.3e} | kernel is {:.1}× faster | {:.1} | — |",
                rows as f64 / burn,
                burn / kernel,
                BASE_FLOPS_PER_ROW * rows as f64 / burn / 1e9
            );
        }
    }
    Ok(())
}

fn integrators(args: &IntegratorArgs) -> CliResult {
    let budget = Duration::from_secs_f64(args.seconds);
    outln!("| family | integrator | Δt | steps/s | ns/step |");
    outln!("|---|---|---|---|---|");
    for family in Family::ALL {
        let spec = family.spec();
        let sys = family.build(&family.default_params())?;
        // `auto` is dopri for a ground-truth system: timed once, under its own name.
        for method in Integrator::ALL
            .into_iter()
            .filter(|m| *m != Integrator::Auto)
        {
            let mut stepper = Stepper::new(method, family.dim());
            if stepper.check(sys.as_ref()).is_err() {
                continue;
            }
            let mut x = spec.default_state.to_vec();
            let (start, mut steps) = (Instant::now(), 0u64);
            while start.elapsed() < budget {
                // Restart every 100 steps: a damped state decaying into subnormal numbers
                // would time the FPU's slow path, not the integrator.
                x.copy_from_slice(spec.default_state);
                for _ in 0..100 {
                    stepper.step(sys.as_ref(), &mut x, spec.dt)?;
                }
                steps += 100;
            }
            let secs = start.elapsed().as_secs_f64();
            outln!(
                "| {family} | {method} | {} | {:.3e} | {:.0} |",
                spec.dt,
                steps as f64 / secs,
                secs * 1e9 / steps as f64
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_rate_is_the_fastest_fifth_of_the_iterations() {
        let start = Instant::now();
        // 11 iterations ending 10 ms apart, except that the last two runs of two took 50 ms
        // per iteration: the fastest run of two is 100 iterations/s.
        let gaps = [10, 10, 10, 10, 10, 10, 50, 50, 50, 50];
        let mut stamps = vec![start];
        for gap in gaps {
            let last = *stamps.last().unwrap();
            stamps.push(last + Duration::from_millis(gap));
        }
        let rate = loop_rate(&stamps).unwrap();
        assert!((rate - 100.0).abs() < 1e-6, "{rate}");
        assert_eq!(loop_rate(&stamps[..1]), None, "one iteration has no rate");
        let two = loop_rate(&stamps[..2]).unwrap();
        assert!((two - 100.0).abs() < 1e-6, "{two}");
    }
}
