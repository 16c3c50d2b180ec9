//! The adaptation worker: a thread that takes batches of observed bodies over a crossbeam
//! channel, runs Levenberg–Marquardt steps of the trajectory fit on them, and sends the
//! results back. It owns a small rayon pool so it never takes every core from the frame.

use std::{sync::Arc, thread, time::Instant};

use bevy::prelude::Entity;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, unbounded};
use noether::{
    meta::{
        FitConfig, FitState, Observation, ObservedPart, Track, fit_step,
        observed::{predict, validate},
    },
    nn::cpu::CpuModel,
};

/// What a body's fit carries from one job to the next: the fit state and the start it
/// belongs to (time and full state x₀ = (y₀, u)).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CarriedFit {
    pub(crate) state: FitState,
    pub(crate) t0: f64,
    /// Time of the last observation the fit covered.
    pub(crate) t_end: f64,
    pub(crate) start: Vec<f32>,
}

/// One body of a job.
pub(crate) struct JobBody {
    pub(crate) entity: Entity,
    pub(crate) observations: Vec<Observation>,
    pub(crate) part: ObservedPart,
    pub(crate) latent: Vec<f32>,
    pub(crate) carried: Option<CarriedFit>,
}

/// Bodies of one model to fit.
pub(crate) struct Job {
    pub(crate) model: Arc<CpuModel>,
    pub(crate) bodies: Vec<JobBody>,
    pub(crate) config: FitConfig,
    pub(crate) steps: usize,
    /// A job that lowers a body's loss by less than this fraction settles its fit.
    pub(crate) settle_tol: f64,
    /// So does an RMS misfit at most this fraction of the observations' RMS spread.
    pub(crate) settle_misfit: f64,
}

/// What the worker found for one body.
pub(crate) struct BodyResult {
    pub(crate) entity: Entity,
    pub(crate) fit: CarriedFit,
    pub(crate) loss_before: f64,
    pub(crate) loss: f64,
    /// A step lowered the loss.
    pub(crate) improved: bool,
    /// The last step met the convergence test on this window.
    pub(crate) settled: bool,
    /// Observations the fit covered.
    pub(crate) window: usize,
}

/// A finished job.
pub(crate) struct JobResult {
    pub(crate) bodies: Vec<BodyResult>,
    /// Bodies whose observations could not be fitted, with the reason.
    pub(crate) invalid: Vec<(Entity, String)>,
    pub(crate) seconds: f64,
}

/// The worker thread's channels. Dropping this ends the thread.
pub(crate) struct Worker {
    jobs: Sender<Job>,
    results: Receiver<JobResult>,
}

impl Worker {
    /// Starts the worker with a rayon pool of `threads` threads, busy at most a fraction
    /// `duty` of the time (after a job of t seconds it rests t·(1 − duty)/duty), its
    /// threads at the lowest scheduling priority when `background` (so they take only the
    /// CPU time the frame leaves idle).
    pub(crate) fn spawn(threads: usize, duty: f64, background: bool) -> Self {
        let duty = if duty.is_finite() {
            duty.clamp(0.01, 1.0)
        } else {
            1.0
        };
        let lower = move || {
            if background {
                // Best effort: a platform that refuses keeps the normal priority.
                let _ = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                );
            }
        };
        let (jobs, job_rx) = unbounded::<Job>();
        let (result_tx, results) = unbounded();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("noether-adapt-{i}"))
            .start_handler(move |_| lower())
            .build()
            .ok();
        thread::Builder::new()
            .name("noether-adapt".into())
            .spawn(move || {
                lower();
                while let Ok(job) = job_rx.recv() {
                    let out = match &pool {
                        Some(pool) => pool.install(|| run(job)),
                        None => run(job),
                    };
                    let rest = out.seconds * (1.0 - duty) / duty;
                    if result_tx.send(out).is_err() {
                        break;
                    }
                    if rest > 0.0 {
                        thread::sleep(std::time::Duration::from_secs_f64(rest));
                    }
                }
            })
            .expect("spawning the adaptation worker thread");
        Self { jobs, results }
    }

    /// Hands a job over without waiting; gives it back if the worker is gone.
    pub(crate) fn send(&self, job: Job) -> Result<(), Job> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// A finished job, if one is ready.
    pub(crate) fn try_recv(&self) -> Option<JobResult> {
        match self.results.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}

/// The fit state a body starts this job from: its current latent (the game may have
/// edited it), and the unobserved start carried forward along the learned flow when the
/// window has slid within the span the last fit covered, or inferred afresh.
fn starting_state(model: &CpuModel, body: &JobBody, config: &FitConfig) -> FitState {
    let track = Track {
        observations: &body.observations,
        part: body.part,
    };
    let width = body.observations[0].values.len();
    let t0 = body.observations[0].t;
    match &body.carried {
        Some(c) if c.t0 <= t0 && t0 <= c.t_end && c.state.latent == body.latent => {
            let hidden = if c.t0 == t0 {
                c.state.hidden.clone()
            } else {
                predict(
                    model,
                    &c.state.latent,
                    &c.start,
                    &[c.t0, t0],
                    config.max_substep,
                )[1][width..]
                    .to_vec()
            };
            if hidden.iter().all(|v| v.is_finite()) {
                return FitState {
                    hidden,
                    ..c.state.clone()
                };
            }
            FitState::new(model, track, body.latent.clone(), config)
        }
        Some(c) if c.state.latent == body.latent => FitState {
            damping: c.state.damping,
            ..FitState::new(model, track, body.latent.clone(), config)
        },
        _ => FitState::new(model, track, body.latent.clone(), config),
    }
}

/// RMS deviation of the observed values from their means.
fn spread(observations: &[Observation]) -> f64 {
    let width = observations[0].values.len();
    let n = observations.len() as f64;
    ((0..width)
        .map(|c| {
            let mean = observations
                .iter()
                .map(|o| f64::from(o.values[c]))
                .sum::<f64>()
                / n;
            observations
                .iter()
                .map(|o| (f64::from(o.values[c]) - mean).powi(2))
                .sum::<f64>()
                / n
        })
        .sum::<f64>()
        .max(0.0)
        / width as f64)
        .sqrt()
}

/// Runs `job.steps` batched Levenberg–Marquardt steps over the job's bodies.
fn run(job: Job) -> JobResult {
    let clock = Instant::now();
    let model = job.model.as_ref();
    let mut invalid = Vec::new();
    let bodies: Vec<JobBody> = job
        .bodies
        .into_iter()
        .filter(|b| {
            let track = Track {
                observations: &b.observations,
                part: b.part,
            };
            match validate(model, track) {
                Ok(()) => true,
                Err(e) => {
                    invalid.push((b.entity, e.to_string()));
                    false
                }
            }
        })
        .collect();
    let tracks: Vec<Track<'_>> = bodies
        .iter()
        .map(|b| Track {
            observations: &b.observations,
            part: b.part,
        })
        .collect();
    let mut states: Vec<FitState> = bodies
        .iter()
        .map(|b| starting_state(model, b, &job.config))
        .collect();
    let mut first: Vec<f64> = Vec::new();
    let mut last = Vec::new();
    let mut improved = vec![false; bodies.len()];
    for step in 0..job.steps.max(1) {
        let out = fit_step(model, &tracks, &mut states, &job.config);
        for (i, s) in out.iter().enumerate() {
            improved[i] |= s.accepted;
        }
        if step == 0 {
            first = out.iter().map(|s| s.loss_before).collect();
        }
        last = out.iter().map(|s| s.loss).collect();
    }
    // Settled: the latent the body came with predicted this window nearly as well as
    // the refit does, or the misfit is small against the motion itself (with noisy
    // observations a refit keeps fitting some noise), or no descent is left.
    let settled: Vec<bool> = (0..bodies.len())
        .map(|i| {
            let (before, after) = (first[i], last[i]);
            let spread = spread(&bodies[i].observations);
            (before.is_finite() && before - after <= job.settle_tol * before)
                || (after.is_finite() && after.max(0.0).sqrt() <= job.settle_misfit * spread)
                || states[i].damping >= 1e6
        })
        .collect();
    let bodies = bodies
        .into_iter()
        .zip(states)
        .enumerate()
        .map(|(i, (b, state))| {
            let mut start = b.observations[0].values.clone();
            start.extend_from_slice(&state.hidden);
            BodyResult {
                entity: b.entity,
                fit: CarriedFit {
                    state,
                    t0: b.observations[0].t,
                    t_end: b.observations[b.observations.len() - 1].t,
                    start,
                },
                loss_before: first[i],
                loss: last[i],
                improved: improved[i],
                settled: settled[i],
                window: b.observations.len(),
            }
        })
        .collect();
    JobResult {
        bodies,
        invalid,
        seconds: clock.elapsed().as_secs_f64(),
    }
}
