//! Runtime benchmarks of the plugin set, printed as Markdown tables for BENCHMARKS.md:
//!
//! 1. batched stepping (`noether::runtime::advance` on the CPU kernel): body-steps/s
//!    for 1k / 10k / 100k bodies, each with its own latent, per integrator, with the
//!    achieved network GFLOP/s next to a plain GEMM of the same rows in the same run;
//! 2. heterogeneous vs shared latents: the same implicit-midpoint step with every row its
//!    own z against one z folded into the weights;
//! 3. the frame time of a headless app stepping 10k bodies;
//! 4. online adaptation: latent updates/s (one Levenberg–Marquardt step per body on a
//!    full 3-s window), wall time until 1 / 100 / 1000 observed pendulums converge with the
//!    app paced in real time, and the frame time added by adaptation at 1000 bodies.
//!
//! ```text
//! cargo run -p bevy_noether --example bench_runtime [-- --quick | --adapt-only | --overhead-only]
//! ```
//!
//! Runs in the dev profile, which this workspace optimises at opt-level 2 (no second
//! multi-gigabyte release build of Bevy needed).

use std::{
    cell::Cell,
    path::PathBuf,
    time::{Duration, Instant},
};

use bevy::prelude::*;
use bevy_noether::{
    NoetherPlugins,
    adapt::{AdaptSettings, AdaptWorkerConfig, AdaptationStats},
    dynamics::StepDiagnostics,
    headless::{headless_app, headless_app_with},
    prelude::*,
};
use noether::{
    data::stream_rng,
    integrate::{Flow, ImplicitMidpoint, ImplicitSolver, simulate},
    meta::{FitConfig, FitState, Observation, Track, fit_step},
    nn::cpu::{BASE_FLOPS_PER_ROW, CpuFlow, bench_gemm},
    runtime::{LearnedModel, StepSettings, advance},
};
use rand::RngExt;

const HZ: f64 = 64.0;

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets")
}

fn model(name: &str) -> NoetherModel {
    NoetherModel(LearnedModel::load(&assets().join("models").join(name)).expect("shipped model"))
}

fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("bench/runtime", seed, 0);
    (0..n)
        .map(|_| (lo + (hi - lo) * rng.random::<f64>()) as f32)
        .collect()
}

/// Bodies' states and latents (mean ± the training spread, every body its own).
fn population(m: &NoetherModel, count: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let (n, dz) = (m.dim(), m.config.d_latent);
    let mut x = uniform(count * n, -1.0, 1.0, seed);
    if m.config.family == Family::Dno {
        x.iter_mut().skip(2).step_by(3).for_each(|s| *s = 0.0);
    }
    let mean = m.mean_latent();
    let std: Vec<f32> = m.config.latents.std.iter().map(|v| *v as f32).collect();
    let noise = uniform(count * dz, -1.0, 1.0, seed + 1);
    let z = (0..count * dz)
        .map(|i| mean[i % dz] + std[i % dz] * noise[i])
        .collect();
    (x, z)
}

/// Seconds per call: the fastest of `rounds` rounds of at least `budget / rounds`.
fn time_per_call(budget: Duration, rounds: u32, mut f: impl FnMut()) -> f64 {
    f();
    (0..rounds)
        .map(|_| {
            let (start, mut calls) = (Instant::now(), 0u32);
            while start.elapsed() < budget / rounds || calls < 2 {
                f();
                calls += 1;
            }
            start.elapsed().as_secs_f64() / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Counts batched field evaluations (rows) of a flow.
struct Counting<'a> {
    flow: CpuFlow<'a>,
    rows: &'a Cell<usize>,
    dim: usize,
}

impl Flow<Vec<f32>> for Counting<'_> {
    fn rate(&self, x: &Vec<f32>) -> Vec<f32> {
        self.rows.set(self.rows.get() + x.len() / self.dim);
        self.flow.rate(x)
    }
}

fn stepping(sizes: &[usize], budget: Duration) {
    println!("### Batched stepping (CPU kernel, one step of 1/64 s, every body its own latent)\n");
    println!(
        "| model | integrator | bodies | body-steps/s | field evals per body-step | network GFLOP/s | plain GEMM GFLOP/s (same rows) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cases = [
        ("pendulum-svd5", Integrator::Midpoint),
        ("pendulum-svd5", Integrator::Rk4),
        ("dno-svd3", Integrator::DiscreteGradient),
    ];
    for (name, method) in cases {
        let m = model(name);
        for &count in sizes {
            let (x, z) = population(&m, count, 7);
            let settings = StepSettings::default();
            let seconds = time_per_call(budget, 3, || {
                let flow = CpuFlow {
                    model: &m.cpu,
                    latents: &z,
                };
                let _ = advance(&flow, method, x.clone(), 1.0 / HZ, &settings);
            });
            // Field evaluations of one step, counted through the same integrator (Hamiltonian
            // models; the discrete gradient evaluates E and S separately).
            let evals = match method {
                Integrator::Rk4 => Some(4.0),
                Integrator::Midpoint => {
                    let rows = Cell::new(0);
                    let flow = Counting {
                        flow: CpuFlow {
                            model: &m.cpu,
                            latents: &z,
                        },
                        rows: &rows,
                        dim: m.dim(),
                    };
                    let _ = ImplicitMidpoint::default()
                        .with_tolerance(1e-6)
                        .with_solver(ImplicitSolver::FixedPoint)
                        .step_fixed_point(&flow, &x, 1.0 / HZ);
                    Some(rows.get() as f64 / count as f64)
                }
                _ => None,
            };
            let a = uniform(count * 100, -1.0, 1.0, 3);
            let w = uniform(100 * 100, -0.1, 0.1, 4);
            let gemm = time_per_call(budget / 2, 3, || bench_gemm(&a, &w, count));
            let (evals_s, gflops) = evals.map_or(("—".into(), "—".into()), |e| {
                (
                    format!("{e:.1}"),
                    format!(
                        "{:.1}",
                        e * count as f64 * BASE_FLOPS_PER_ROW / seconds / 1e9
                    ),
                )
            });
            println!(
                "| {name} | {method:?} | {count} | {:.3e} | {evals_s} | {gflops} | {:.1} |",
                count as f64 / seconds,
                2.0 * 100.0 * 100.0 * count as f64 / gemm / 1e9
            );
        }
    }
    println!();
}

fn heterogeneity(count: usize, budget: Duration) {
    println!(
        "### Heterogeneous vs shared latents (pendulum SVD(5), implicit midpoint, {count} bodies)\n"
    );
    let m = model("pendulum-svd5");
    let (x, z) = population(&m, count, 9);
    let folded = m.cpu.fold(&m.mean_latent());
    let midpoint = ImplicitMidpoint::default()
        .with_tolerance(1e-6)
        .with_solver(ImplicitSolver::FixedPoint);
    let mut per_row = f64::INFINITY;
    let mut shared = f64::INFINITY;
    for _ in 0..3 {
        per_row = per_row.min(time_per_call(budget, 1, || {
            let flow = CpuFlow {
                model: &m.cpu,
                latents: &z,
            };
            let _ = midpoint.step_fixed_point(&flow, &x, 1.0 / HZ);
        }));
        shared = shared.min(time_per_call(budget, 1, || {
            let flow = CpuFlow {
                model: &folded,
                latents: &[],
            };
            let _ = midpoint.step_fixed_point(&flow, &x, 1.0 / HZ);
        }));
    }
    println!("| latents | ms per step | body-steps/s |");
    println!("|---|---|---|");
    println!(
        "| every body its own z | {:.2} | {:.3e} |",
        per_row * 1e3,
        count as f64 / per_row
    );
    println!(
        "| one z, folded into the weights | {:.2} | {:.3e} |",
        shared * 1e3,
        count as f64 / shared
    );
    println!("\nper-row / shared time: {:.2}×\n", per_row / shared);
}

fn spawn(
    app: &mut App,
    handle: &Handle<NoetherModel>,
    m: &NoetherModel,
    count: usize,
    observed: bool,
) -> Vec<Entity> {
    let (x, z) = population(m, count, 11);
    let (n, dz) = (m.dim(), m.config.d_latent);
    let mean = m.mean_latent();
    let ml = uniform(2 * count, 0.5, 2.0, 12);
    (0..count)
        .map(|i| {
            let mut e = app.world_mut().spawn((
                NoetherBody::new(handle.clone()),
                PhaseState(vec![0.6 + 0.8 * (x[i * n] * 0.5 + 0.5), 0.0]),
                LatentCode(if observed {
                    mean.clone()
                } else {
                    z[i * dz..(i + 1) * dz].to_vec()
                }),
            ));
            if observed {
                e.insert((
                    HiddenTruth {
                        params: vec![f64::from(ml[2 * i]), f64::from(ml[2 * i + 1])],
                    },
                    Observed::hidden_truth(0.05),
                ));
            }
            e.id()
        })
        .collect()
}

/// Mean wall milliseconds per `update()` over `frames` frames, paced in real time when
/// `realtime` (a frame never waits on the worker; pacing only sleeps out the remainder).
fn frames(app: &mut App, frames: usize, realtime: bool) -> f64 {
    let start = Instant::now();
    let mut busy = 0.0;
    for k in 1..=frames {
        let t = Instant::now();
        app.update();
        busy += t.elapsed().as_secs_f64();
        if realtime {
            let due = start + Duration::from_secs_f64(k as f64 / HZ);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    busy * 1e3 / frames as f64
}

fn frame_time(count: usize) {
    let m = model("pendulum-svd5");
    let mut app = headless_app(assets(), HZ);
    let handle = app
        .world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(m.clone());
    spawn(&mut app, &handle, &m, count, false);
    frames(&mut app, 5, false);
    let ms = frames(&mut app, 64, false);
    let step = app.world().resource::<StepDiagnostics>().step_ms;
    println!("### Headless app, {count} pendulums (implicit midpoint)\n");
    println!("| frame (update) ms | of which stepping ms | body-steps/s |");
    println!("|---|---|---|");
    println!(
        "| {ms:.2} | {step:.2} | {:.3e} |\n",
        count as f64 / ms * 1e3
    );
}

fn adaptation(sizes: &[usize], limit: Duration, overhead_bodies: usize) {
    let m = model("pendulum-svd5");
    println!(
        "### Online adaptation (pendulum SVD(5), positions every 0.05 s, 3-s window, worker: 1 thread)\n"
    );
    // Latent updates per second: one LM step per body on a full window, straight on the core.
    println!(
        "| observed bodies | latent updates/s (one LM step on 60 observations) | ms per batched step |"
    );
    println!("|---|---|---|");
    let config = FitConfig::default();
    for &count in sizes {
        let tracks_data: Vec<Vec<Observation>> = (0..count)
            .map(|i| {
                let l = 0.5 + 1.5 * (i % 7) as f64 / 6.0;
                let sys = Family::Pendulum.build(&[1.0, l]).unwrap();
                let traj =
                    simulate(sys.as_ref(), Integrator::Dopri, &[1.0, 0.0], 0.05, 59).unwrap();
                (0..60)
                    .map(|k| Observation {
                        t: traj.t[k],
                        values: vec![traj.state(k)[0] as f32],
                    })
                    .collect()
            })
            .collect();
        let tracks: Vec<Track<'_>> = tracks_data
            .iter()
            .map(|o| Track {
                observations: o,
                part: ObservedPart::Positions,
            })
            .collect();
        let states: Vec<FitState> = tracks
            .iter()
            .map(|t| FitState::new(&m.cpu, *t, m.mean_latent(), &config))
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let seconds = time_per_call(Duration::from_secs(2), 1, || {
            let mut s = states.clone();
            pool.install(|| fit_step(&m.cpu, &tracks, &mut s, &config));
        });
        println!(
            "| {count} | {:.1} | {:.1} |",
            count as f64 / seconds,
            seconds * 1e3
        );
    }
    println!();

    println!(
        "| observed bodies | wall s until all converged (app paced in real time) | converged | latent updates | worker s |"
    );
    println!("|---|---|---|---|---|");
    for &count in sizes {
        let mut app = headless_app(assets(), HZ);
        let handle = app
            .world_mut()
            .resource_mut::<Assets<NoetherModel>>()
            .add(m.clone());
        let bodies = spawn(&mut app, &handle, &m, count, true);
        let start = Instant::now();
        let mut k = 0usize;
        let done = loop {
            app.update();
            k += 1;
            let due = start + Duration::from_secs_f64(k as f64 / HZ);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let stats = app.world().resource::<AdaptationStats>();
            if stats.phases[2] + stats.phases[3] == bodies.len() && k > 2 {
                break true;
            }
            if start.elapsed() > limit {
                break false;
            }
        };
        let stats = app.world().resource::<AdaptationStats>().clone();
        let wall = if done {
            format!("{:.1}", start.elapsed().as_secs_f64())
        } else {
            format!("> {:.0} (stopped)", limit.as_secs_f64())
        };
        println!(
            "| {count} | {wall} | {} | {} | {:.1} |",
            stats.phases[2], stats.updates, stats.worker_seconds
        );
    }
    println!();
    adaptation_overhead(overhead_bodies);
}

/// Frame time with and without adaptation, same observed bodies, real-time pacing.
fn adaptation_overhead(overhead_bodies: usize) {
    let m = model("pendulum-svd5");
    let measure = |enabled: bool, background: bool| {
        let worker = AdaptWorkerConfig {
            background,
            ..default()
        };
        let mut app = headless_app_with(
            assets(),
            HZ,
            NoetherPlugins::default().with_adaptation_worker(worker),
        );
        app.world_mut().resource_mut::<AdaptSettings>().enabled = enabled;
        let handle = app
            .world_mut()
            .resource_mut::<Assets<NoetherModel>>()
            .add(m.clone());
        spawn(&mut app, &handle, &m, overhead_bodies, true);
        frames(&mut app, 64, true);
        let mut adapt_ms = 0.0;
        let start = Instant::now();
        let (mut total, mut n) = (0.0, 0);
        while start.elapsed() < Duration::from_secs(10) {
            total += frames(&mut app, 16, true) * 16.0;
            n += 16;
            adapt_ms += app.world().resource::<AdaptationStats>().frame_ms;
        }
        (total / f64::from(n), adapt_ms / f64::from(n / 16))
    };
    let (off, _) = measure(false, true);
    let (on, systems) = measure(true, true);
    let (normal, _) = measure(true, false);
    println!("| {overhead_bodies} observed bodies, real-time pacing | frame ms | added |");
    println!("|---|---|---|");
    println!("| adaptation off (observations still recorded) | {off:.2} | — |");
    println!(
        "| adaptation on, worker at background priority (default) | {on:.2} | {:.1}% |",
        (on - off) / off * 100.0
    );
    println!(
        "| adaptation on, worker at normal priority | {normal:.2} | {:.1}% |",
        (normal - off) / off * 100.0
    );
    println!("\nmain-thread time in the adaptation systems per frame (sampled): {systems:.3} ms\n");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 1500 });
    let sizes: &[usize] = if quick {
        &[1000, 10_000]
    } else {
        &[1000, 10_000, 100_000]
    };
    println!(
        "bench_runtime on {} logical CPUs, {}\n",
        std::thread::available_parallelism().map_or(0, usize::from),
        if quick { "--quick" } else { "full" }
    );
    if std::env::args().any(|a| a == "--overhead-only") {
        adaptation_overhead(1000);
        return;
    }
    if std::env::args().any(|a| a == "--adapt-only") {
        adaptation(&[1, 100, 1000], Duration::from_secs(300), 1000);
        return;
    }
    stepping(sizes, budget);
    heterogeneity(10_000, budget);
    frame_time(10_000);
    let adapt_sizes: &[usize] = if quick { &[1, 100] } else { &[1, 100, 1000] };
    adaptation(
        adapt_sizes,
        Duration::from_secs(if quick { 60 } else { 300 }),
        if quick { 100 } else { 1000 },
    );
}
