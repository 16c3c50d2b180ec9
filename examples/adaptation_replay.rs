//! Online adaptation without an engine and without a wall clock: the app's dispatch loop
//! (`bevy_noether`'s adaptation systems) replayed on a virtual clock, so the pipeline's own
//! cost can be compared between builds and settings without the frame's noise.
//!
//! ```text
//! cargo run --release --example adaptation_replay                  # 1000 bodies, 1 core
//! cargo run --release --example adaptation_replay -- 1000 0.7 3    # bodies, core share, seed
//! ```
//!
//! Pendulums with m, l uniform in [0.5, 2] and q₀ in [0.6, 1.4] rad, observed by position
//! every 0.05 s with 1 % noise (a [`TruthSimulator`] each), 3-s windows, the shipped
//! pendulum SVD(5) model and its encoder, default [`AdaptationSettings`]. The clock ticks
//! at 64 Hz. Each tick the bodies are observed, a finished job's results are applied
//! ([`AdaptState::apply`]), and, when no job is in flight, the next job is formed as the
//! plugin forms it (stalled bodies due a retry start over, fresh bodies wait for the
//! encoder's span, the least-updated bodies first, at most `max_bodies_per_job`, a fresh
//! body taking the encoder's reading as it goes in).
//! The job runs at once on one thread; its results arrive after its measured compute time
//! divided by the core share the worker is assumed to get (the frame leaves the worker
//! about one core of two at 7-ms frames). Prints when all bodies had converged, how many
//! had by 5, 10 and 20 s, stalls, and the worker's core-seconds. With `REPLAY_TRACE=1` in
//! the environment it also prints one line per job to stderr: when it was formed, its
//! bodies, how many settled, reached their floor and covered every observation they were
//! given, the mean horizon and window, its compute seconds, and the bodies converged so far.

use std::{path::Path, process::ExitCode};

use noether::{
    meta::ObservedPart,
    runtime::{
        AdaptEvent, AdaptPhase, AdaptState, AdaptationSettings, Job, JobResult, LearnedModel,
        ObservationWindow, Start, TruthSimulator, amortised_start, run_job, waits_for_encoder,
    },
    systems::Family,
};

const HZ: f64 = 64.0;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut next = |default: f64| args.next().map_or(Ok(default), |a| a.parse::<f64>());
    let (Ok(count), Ok(share), Ok(seed)) = (next(1000.0), next(1.0), next(0.0)) else {
        eprintln!("usage: adaptation_replay [bodies] [core share] [seed]");
        return ExitCode::FAILURE;
    };
    let (count, seed) = (count as usize, seed as u64);
    if count == 0 || share <= 0.0 {
        eprintln!("adaptation_replay: need at least one body and a positive core share");
        return ExitCode::FAILURE;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/pendulum-svd5.model.ron");
    let model = match LearnedModel::load(&path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("adaptation_replay: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let settings = AdaptationSettings::default();
    let part = ObservedPart::Positions;

    // xorshift64: the same population for the same seed, on every machine.
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut uniform = move |lo: f64, hi: f64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lo + (hi - lo) * (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut truths = Vec::with_capacity(count);
    let mut windows = Vec::with_capacity(count);
    for i in 0..count {
        let params = [uniform(0.5, 2.0), uniform(0.5, 2.0)];
        let x0 = vec![uniform(0.6, 1.4), 0.0];
        let mut truth =
            TruthSimulator::new(Family::Pendulum, &params, x0, part, 0.05, 0.01, i as u64)
                .expect("pendulum parameters in range");
        let mut window = ObservationWindow::with_capacity(60);
        if let Some(o) = truth.advance(0.0) {
            window.push(o.t, o.values).expect("a finite first sample");
        }
        truths.push(truth);
        windows.push(window);
    }
    let mut adapt = vec![AdaptState::default(); count];
    let mut latents = vec![model.mean_latent(); count];

    let mut pending: Option<(f64, JobResult<usize>)> = None;
    let (mut worker_seconds, mut stalls, mut jobs) = (0.0, 0usize, 0usize);
    let mut by = [(5.0, 0usize), (10.0, 0), (20.0, 0)];
    let mut tick = 0u64;
    let done = loop {
        tick += 1;
        let t = tick as f64 / HZ;
        for (truth, window) in truths.iter_mut().zip(&mut windows) {
            if let Some(o) = truth.advance(1.0 / HZ) {
                window.push(o.t, o.values).expect("finite samples");
            }
        }
        if pending.as_ref().is_some_and(|(at, _)| t >= *at) {
            let (_, result) = pending.take().expect("checked above");
            for body in result.bodies {
                let i = body.key;
                let applied = adapt[i].apply(body, &windows[i], &settings);
                if let Some(z) = applied.latent {
                    latents[i] = z;
                }
                stalls += usize::from(matches!(applied.event, Some(AdaptEvent::Stalled { .. })));
            }
        }
        let converged = adapt
            .iter()
            .filter(|a| a.phase == AdaptPhase::Converged)
            .count();
        for (at, n) in &mut by {
            if t <= *at {
                *n = converged;
            }
        }
        if converged == count {
            break Some(t);
        }
        if t > 120.0 {
            break None;
        }
        if pending.is_some() {
            continue;
        }
        let mut group = Vec::new();
        for i in 0..count {
            if adapt[i].retry_due(&windows[i]) {
                adapt[i].retry();
                latents[i] = model.mean_latent();
            }
            if !adapt[i].wants_job(windows[i].len(), &settings) {
                continue;
            }
            if waits_for_encoder(&model, &adapt[i], &windows[i]) {
                continue;
            }
            group.push((adapt[i].updates, i));
        }
        if group.is_empty() {
            continue;
        }
        group.sort_unstable();
        let mut job = Job::new(&settings);
        for &(_, i) in group.iter().take(settings.max_bodies_per_job) {
            match amortised_start(&model, &mut adapt[i], &windows[i], part) {
                Start::Wait => continue,
                Start::Encoded(z) => latents[i] = z,
                Start::Ready => {}
            }
            job.bodies
                .push(adapt[i].begin_job(i, &windows[i], part, &latents[i]));
        }
        let result = pool().install(|| run_job(&model.cpu, job));
        worker_seconds += result.compute_seconds;
        jobs += 1;
        if std::env::var_os("REPLAY_TRACE").is_some() {
            let n = result.bodies.len();
            let settled = result.bodies.iter().filter(|b| b.settled).count();
            let mean_w =
                result.bodies.iter().map(|b| b.window).sum::<usize>() as f64 / n.max(1) as f64;
            let floor = result.bodies.iter().filter(|b| b.misfit <= b.floor).count();
            let covers = result
                .bodies
                .iter()
                .filter(|b| b.misfit <= b.floor && b.window >= b.observations)
                .count();
            let mean_o = result.bodies.iter().map(|b| b.observations).sum::<usize>() as f64
                / n.max(1) as f64;
            eprintln!(
                "t {t:.2} job {jobs} bodies {n} settled {settled} floor {floor} covers {covers} mean_window {mean_w:.1} obs {mean_o:.1} compute {:.3} converged {converged}",
                result.compute_seconds
            );
        }
        pending = Some((t + result.compute_seconds / share, result));
    };
    let wall = done.map_or("> 120 (stopped)".to_string(), |t| format!("{t:.2}"));
    println!(
        "| bodies | core share | seed | all converged at s | by 5 / 10 / 20 s | stalls | jobs | worker core-s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {count} | {share} | {seed} | {wall} | {} / {} / {} | {stalls} | {jobs} | {worker_seconds:.2} |",
        by[0].1, by[1].1, by[2].1
    );
    if done.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One worker thread: the job's compute time is then its cost on one core.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool")
    })
}
