//! Runtime benchmarks of the plugin set, printed as Markdown tables for BENCHMARKS.md:
//!
//! 1. batched stepping (`noether::runtime::advance` on the CPU kernel): body-steps/s
//!    for 1k / 10k / 100k bodies, each with its own latent, per integrator, with the
//!    achieved network GFLOP/s next to a plain GEMM of the same rows in the same run; the
//!    implicit midpoint three ways: a running trajectory with each row's history (the game
//!    loop), rows from the explicit half step, and the whole batch iterated together;
//! 2. heterogeneous vs shared latents: the same implicit-midpoint step with every row its
//!    own z against one z folded into the weights;
//! 3. the frame time of a headless app stepping 10k bodies;
//! 4. online adaptation: latent updates/s (one Levenberg–Marquardt step per body on a
//!    full 3-s window), wall time until 1 / 100 / 1000 observed pendulums converge with the
//!    app paced in real time, and the frame time added by adaptation at 1000 bodies
//!    (`--fit-only`: the latent updates/s alone).
//!
//! ```text
//! cargo run -p bevy_noether --example bench_runtime [-- --quick | --stepping-only | --adapt-only [--bodies N] | --overhead-only [--seconds S] [--chunk N] | --fit-only]
//! ```
//!
//! The numbers in BENCHMARKS.md come from the release profile
//! (`cargo run --release -p bevy_noether --example bench_runtime -- --adapt-only`); the dev
//! profile, which this workspace optimises at opt-level 2, runs it too, slower.

use std::{
    cell::Cell,
    path::PathBuf,
    time::{Duration, Instant},
};

use bevy::prelude::*;
use bevy_noether::{
    adapt::{AdaptSettings, AdaptationStats, ObservationBuffer, ObservationSource},
    dynamics::StepDiagnostics,
    headless::headless_app,
    prelude::*,
};
use noether::{
    data::stream_rng,
    integrate::{Flow, ImplicitMidpoint, ImplicitSolver, simulate},
    meta::{
        AdaptConfig, FitConfig, FitState, Observation, Track, adapt_latents, fit_step,
        observed::position_error, system_shots,
    },
    nn::cpu::{BASE_FLOPS_PER_ROW, CpuFlow, bench_gemm},
    runtime::{LearnedModel, StepHistory, StepSettings, advance, advance_with_history},
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

/// How a case of [`stepping`] is stepped.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// `advance` as a game loop calls it: a running trajectory, each body's history kept
    /// (the implicit midpoint iterates row by row from extrapolated slopes).
    GameLoop,
    /// `advance` from the same state every call with no history: the midpoint iterates row
    /// by row from the explicit half step.
    Cold,
    /// The whole batch iterated until its largest update converges, from the explicit half
    /// step (`ImplicitMidpoint::step_fixed_point`: the CPU path before row-wise solves).
    BatchWide,
}

fn stepping(sizes: &[usize], budget: Duration) {
    println!("### Batched stepping (CPU kernel, one step of 1/64 s, every body its own latent)\n");
    println!(
        "| model | integrator | bodies | body-steps/s | field evals per body-step | network GFLOP/s | plain GEMM GFLOP/s (same rows) |"
    );
    println!("|---|---|---|---|---|---|---|");
    use Variant::*;
    let cases = [
        ("pendulum-svd5", Integrator::Midpoint, GameLoop),
        ("pendulum-svd5", Integrator::Midpoint, Cold),
        ("pendulum-svd5", Integrator::Midpoint, BatchWide),
        ("duffing-svd5", Integrator::Midpoint, GameLoop),
        ("duffing-svd5", Integrator::Midpoint, BatchWide),
        ("pendulum-svd5", Integrator::Rk4, GameLoop),
        ("dno-svd3", Integrator::DiscreteGradient, GameLoop),
    ];
    for (name, method, variant) in cases {
        let m = model(name);
        for &count in sizes {
            let (x0, z) = population(&m, count, 7);
            let settings = StepSettings::default();
            let flow = CpuFlow {
                model: &m.cpu,
                latents: &z,
            };
            // Field evaluations (rows) of the timed calls: from the step reports for the
            // row-wise midpoint, counted through the flow for the batch-wide one.
            let (mut rows, mut calls) = (0usize, 0usize);
            let counted = Cell::new(0);
            let counting = Counting {
                flow: CpuFlow {
                    model: &m.cpu,
                    latents: &z,
                },
                rows: &counted,
                dim: m.dim(),
            };
            let (mut x, mut history) = (x0.clone(), StepHistory::default());
            let seconds = time_per_call(budget, 3, || {
                calls += 1;
                match variant {
                    GameLoop => {
                        let (x1, report) = advance_with_history(
                            &flow,
                            method,
                            x.clone(),
                            1.0 / HZ,
                            &settings,
                            &mut history,
                        )
                        .expect("steps");
                        rows += report.row_evaluations;
                        x = x1;
                    }
                    Cold => {
                        let (_, report) =
                            advance(&flow, method, x0.clone(), 1.0 / HZ, &settings).expect("steps");
                        rows += report.row_evaluations;
                    }
                    BatchWide => {
                        let _ = settings.midpoint.step_fixed_point(&counting, &x0, 1.0 / HZ);
                    }
                }
            });
            // Field evaluations per body-step (Hamiltonian models; the discrete gradient
            // evaluates E and S separately).
            let evals = match (method, variant) {
                (Integrator::Rk4, _) => Some(4.0),
                (Integrator::Midpoint, BatchWide) => {
                    Some(counted.get() as f64 / (calls * count) as f64)
                }
                (Integrator::Midpoint, _) => Some(rows as f64 / (calls * count) as f64),
                _ => None,
            };
            let a = uniform(count * 100, -1.0, 1.0, 3);
            let w = uniform(100 * 100, -0.1, 0.1, 4);
            let gemm = time_per_call(budget / 2, 3, || bench_gemm(&a, &w, count));
            let (evals_s, gflops) = evals.map_or(("—".into(), "—".into()), |e| {
                (
                    format!("{e:.2}"),
                    format!(
                        "{:.1}",
                        e * count as f64 * BASE_FLOPS_PER_ROW / seconds / 1e9
                    ),
                )
            });
            let label = match (method, variant) {
                (Integrator::Midpoint, GameLoop) => "Midpoint, rows warm-started from history",
                (Integrator::Midpoint, Cold) => "Midpoint, rows from the explicit half step",
                (Integrator::Midpoint, BatchWide) => "Midpoint, whole batch (before)",
                (Integrator::Rk4, _) => "Rk4",
                _ => "DiscreteGradient",
            };
            println!(
                "| {name} | {label} | {count} | {:.3e} | {evals_s} | {gflops} | {:.1} |",
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
                    Observed {
                        components: ObservedPart::Positions,
                        source: ObservationSource::HiddenTruth {
                            interval: 0.05,
                            noise: 0.01,
                        },
                    },
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
        "### Online adaptation (pendulum SVD(5), m, l uniform in [0.5, 2], positions every 0.05 s with 1 % noise, 3-s window, worker: {} threads computing while the frame is idle)\n",
        bevy_noether::adapt::AdaptWorkerConfig::default().threads
    );
    encoder_latency(&m);
    latent_updates(&m, sizes);

    println!(
        "| observed bodies | wall s until all converged (app paced in real time) | converged by 5 / 10 / 20 s | converged | stalled and retried | started by the encoder | latent updates | worker core-s (gate waits excluded) | ε_traj, next 10 s, converged latents | ε_traj, 100-step auto-decoding on 10 exact shots |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &count in sizes {
        let mut app = headless_app(assets(), HZ);
        let handle = app
            .world_mut()
            .resource_mut::<Assets<NoetherModel>>()
            .add(m.clone());
        let bodies = spawn(&mut app, &handle, &m, count, true);
        let start = Instant::now();
        let mut k = 0usize;
        let mut at = [(5.0, 0usize), (10.0, 0), (20.0, 0)];
        let done = loop {
            app.update();
            k += 1;
            let due = start + Duration::from_secs_f64(k as f64 / HZ);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let stats = app.world().resource::<AdaptationStats>();
            for (t, n) in &mut at {
                if start.elapsed().as_secs_f64() <= *t {
                    *n = stats.phases[2];
                }
            }
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
        let (adapted, decoded) = accuracy(&app, &m, &bodies);
        println!(
            "| {count} | {wall} | {} / {} / {} | {} | {} | {} | {} | {:.1} | {adapted:.3e} | {decoded:.3e} |",
            at[0].1,
            at[1].1,
            at[2].1,
            stats.phases[2],
            stats.retries,
            stats.encoded,
            stats.updates,
            stats.worker_seconds
        );
    }
    println!();
    if overhead_bodies > 0 {
        adaptation_overhead(overhead_bodies, 20.0, CHUNK);
    }
}

/// Latent updates per second: one Levenberg–Marquardt step per body on a full 3-s window
/// of positions, straight on the core (one thread), as one batch and in the worker's tiles.
fn latent_updates(m: &NoetherModel, sizes: &[usize]) {
    println!(
        "| observed bodies | latent updates/s (one LM step on 60 observations, one batch) | ms per batched step | latent updates/s in the worker's {}-body tiles |",
        noether::runtime::TILE_BODIES
    );
    println!("|---|---|---|---|");
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
                        values: [traj.state(k)[0] as f32][..].into(),
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
        // The same steps tile by tile, as a job runs them (one core).
        let tile = noether::runtime::TILE_BODIES;
        let tiled = time_per_call(Duration::from_secs(2), 1, || {
            let mut s = states.clone();
            pool.install(|| {
                for (t, s) in tracks.chunks(tile).zip(s.chunks_mut(tile)) {
                    fit_step(&m.cpu, t, s, &config);
                }
            });
        });
        println!(
            "| {count} | {:.1} | {:.1} | {:.1} |",
            count as f64 / seconds,
            seconds * 1e3,
            count as f64 / tiled
        );
    }
    println!();
}

/// Relative position error over 10 s of truth, on each body's orbit from its turning
/// point, of its learned latent, and of the paper's auto-decoding (100 Adam steps from
/// the mean latent on 10 exact shots of the same system); means over up to 100 bodies.
fn accuracy(app: &App, m: &NoetherModel, bodies: &[Entity]) -> (f64, f64) {
    let sample: Vec<Entity> = bodies
        .iter()
        .step_by(bodies.len().div_ceil(100))
        .copied()
        .collect();
    let (mut adapted, mut decoded) = (0.0, 0.0);
    for (i, e) in sample.iter().enumerate() {
        let world = app.world();
        let params = &world.get::<HiddenTruth>(*e).unwrap().params;
        let latent = &world.get::<LatentCode>(*e).unwrap().0;
        // From the turning point of the body's orbit (its largest observed angle, at rest):
        // positions alone do not identify m (q(t) depends on l only, p = m l² q̇), so a state
        // with momentum would test the momentum scale, not the latent.
        let amplitude = world.get::<ObservationBuffer>(*e).map_or(1.0, |b| {
            noether::metrics::worst(b.samples().map(|o| f64::from(o.values[0].abs())))
        });
        let x0 = vec![amplitude, 0.0];
        let sys = Family::Pendulum.build(params).unwrap();
        let mut rng = stream_rng("bench/runtime/shots", 0, i as u64);
        let shots = system_shots(Family::Pendulum, sys.as_ref(), params, 10, &mut rng).unwrap();
        let z = adapt_latents(
            &m.params,
            &[shots],
            &m.mean_latent(),
            &AdaptConfig::for_model(&m.config, 10),
        )
        .latents
        .remove(0);
        adapted += ten_second_error(m, sys.as_ref(), &x0, latent);
        decoded += ten_second_error(m, sys.as_ref(), &x0, &z);
    }
    let n = sample.len().max(1) as f64;
    (adapted / n, decoded / n)
}

/// ‖q_learned − q_true‖ / ‖q_true‖ over 10 s sampled every 0.05 s.
fn ten_second_error(
    m: &NoetherModel,
    sys: &dyn noether::systems::System,
    x0: &[f64],
    latent: &[f32],
) -> f64 {
    position_error(&m.cpu, latent, sys, x0, 0.05, 200).unwrap()
}

/// Encoder-only latency: one forward pass per body on a full 1-s window.
fn encoder_latency(m: &NoetherModel) {
    let Some(encoder) = m.encoder.as_ref() else {
        println!("(the model has no encoder)\n");
        return;
    };
    let sys = Family::Pendulum.build(&[1.0, 1.2]).unwrap();
    let traj = simulate(sys.as_ref(), Integrator::Dopri, &[1.0, 0.0], 0.05, 25).unwrap();
    let window: Vec<Observation> = (0..=25)
        .map(|k| Observation {
            t: traj.t[k],
            values: [traj.state(k)[0] as f32][..].into(),
        })
        .collect();
    let seconds = time_per_call(Duration::from_secs(1), 3, || {
        std::hint::black_box(encoder.encode(&window));
    });
    println!(
        "encoder-only latency: {:.1} µs per body (one window of {} observations, one forward pass, one core)\n",
        seconds * 1e6,
        window.len()
    );
}

/// Frame time with and without adaptation, same observed bodies, one app, real-time
/// pacing, interleaved: chunks of `chunk` frames with the worker fitting (bodies whose fit ended
/// start over, so it never runs out of work) alternate with chunks with dispatch stopped
/// and no job in flight (the jobs still out are waited for, untimed, before the chunk).
fn adaptation_overhead(overhead_bodies: usize, seconds: f64, chunk: usize) {
    let m = model("pendulum-svd5");
    let mut app = headless_app(assets(), HZ);
    let handle = app
        .world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(m.clone());
    spawn(&mut app, &handle, &m, overhead_bodies, true);
    frames(&mut app, 64, true);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let (mut busy, mut counted) = (0usize, 0usize);
    let mut systems_ms = 0.0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        let mut ended = app.world_mut().query::<&mut Adaptation>();
        for mut a in ended.iter_mut(app.world_mut()) {
            if matches!(
                a.phase,
                AdaptPhase::Converged | AdaptPhase::Stalled | AdaptPhase::Diverged
            ) {
                a.restart();
            }
        }
        app.world_mut().resource_mut::<AdaptSettings>().enabled = true;
        for _ in 0..chunk {
            on.push(frames(&mut app, 1, true));
            busy += usize::from(app.world().resource::<AdaptationStats>().in_flight > 0);
            counted += 1;
            systems_ms += app.world().resource::<AdaptationStats>().frame_ms;
        }
        app.world_mut().resource_mut::<AdaptSettings>().enabled = false;
        while app.world().resource::<AdaptationStats>().in_flight > 0 {
            frames(&mut app, 1, true);
        }
        for _ in 0..chunk {
            off.push(frames(&mut app, 1, true));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let by_position = |v: &[f64]| -> Vec<Vec<f64>> {
        (0..chunk)
            .map(|k| v.iter().skip(k).step_by(chunk).copied().collect())
            .collect()
    };
    let (on_by_position, off_by_position) = (by_position(&on), by_position(&off));
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on_mean, off_mean) = (mean(&on), mean(&off));
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    println!(
        "| {overhead_bodies} observed bodies, real-time pacing, interleaved chunks of {chunk} frames | frame ms (mean) | frame ms (median) | frames |"
    );
    println!("|---|---|---|---|");
    println!(
        "| adaptation off (no job in flight; observations still recorded) | {off_mean:.2} | {off_median:.2} | {} |",
        off.len()
    );
    println!(
        "| adaptation on (worker fitting in {:.0} % of these frames) | {on_mean:.2} | {on_median:.2} | {} |",
        100.0 * busy as f64 / counted.max(1) as f64,
        on.len()
    );
    println!(
        "| ratio on / off | {:.3} | {:.3} | |",
        on_mean / off_mean,
        on_median / off_median
    );
    // Where in a chunk the frames differ: a chunk with adaptation on starts with the
    // dispatch of a fresh job (and the bodies restarted above).
    let lead = 4.min(chunk);
    for (name, v) in [("on", &on_by_position), ("off", &off_by_position)] {
        let (first, rest) = v.split_at(lead);
        println!(
            "adaptation {name}: the first {lead} frames of a chunk {:.2} ms, the rest {:.2} ms",
            mean(&first.concat()),
            mean(&rest.concat())
        );
    }
    println!(
        "\nmain-thread time in the adaptation systems per frame (adaptation on): {:.3} ms\n",
        systems_ms / counted.max(1) as f64
    );
}

/// Frames per chunk of the frame-overhead run: a second at 64 Hz. With 1000 observed bodies
/// the worker runs a job of 256 bodies every 0.5–1 s, back to back; each chunk with
/// adaptation on starts a job (after the off chunk), so a chunk of a second sees job starts
/// at about the rate a game does. (Shorter chunks weigh the first frames of a job — the
/// dispatch, and a few frames a few ms slower — several times over: `--chunk 16`.)
const CHUNK: usize = 64;

/// The value after `flag` on the command line, if it parses.
fn value_of<T: std::str::FromStr>(flag: &str) -> Option<T> {
    std::env::args()
        .skip_while(|a| a != flag)
        .nth(1)
        .and_then(|v| v.parse().ok())
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
        // `--seconds S`: a longer interleaved run, for a tighter ratio on a noisy machine.
        adaptation_overhead(
            1000,
            value_of("--seconds").unwrap_or(20.0),
            value_of("--chunk").unwrap_or(CHUNK).max(1),
        );
        return;
    }
    if std::env::args().any(|a| a == "--fit-only") {
        latent_updates(&model("pendulum-svd5"), &[1000]);
        return;
    }
    if std::env::args().any(|a| a == "--stepping-only") {
        stepping(sizes, budget);
        return;
    }
    if std::env::args().any(|a| a == "--adapt-only") {
        // `--bodies N`: only that population (and no frame-overhead run).
        match value_of::<usize>("--bodies") {
            Some(n) => adaptation(&[n], Duration::from_secs(300), 0),
            None => adaptation(&[1, 100, 1000], Duration::from_secs(300), 1000),
        }
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
