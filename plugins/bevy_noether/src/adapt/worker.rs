//! The adaptation worker: a thread that takes jobs (batches of observed bodies of one
//! model) over a crossbeam channel, runs them ([`noether::runtime::run_job`]), and sends the
//! results back. It owns a rayon pool (a thread per logical CPU by default) whose threads
//! run at the lowest normal priority, and every job waits at the frame's [`FrameGate`]
//! before each stage of its rollouts, so the worker computes only while the app's update
//! is not running.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    thread,
};

use bevy::prelude::Entity;
use crossbeam_channel::{Receiver, Sender, TrySendError, unbounded};
use noether::{
    nn::cpu::CpuModel,
    runtime::{FrameGate, Job, JobResult, run_job},
};

/// What runs a job: [`run_job`], or a stand-in in tests.
pub(crate) type Runner = fn(&CpuModel, Job<Entity>) -> JobResult<Entity>;

use super::AdaptWorkerConfig;

/// A job and the model it fits with.
pub(crate) struct WorkItem {
    pub(crate) model: Arc<CpuModel>,
    pub(crate) job: Job<Entity>,
}

/// What comes back: the result, or why the job failed (every body of it then fails).
pub(crate) enum WorkOutcome {
    /// The job ran.
    Done(JobResult<Entity>),
    /// The job panicked; its bodies and the panic message.
    Failed(Vec<Entity>, String),
}

/// The worker thread's channels. Dropping this ends the thread.
pub(crate) struct Worker {
    jobs: Sender<WorkItem>,
    results: Receiver<WorkOutcome>,
    /// Raised by the frame while it steps; every job waits at it.
    pub(crate) gate: Arc<FrameGate>,
}

impl Worker {
    /// Starts the worker with `config.threads` rayon threads, busy at most a fraction
    /// `config.duty` of the time (after a job of t seconds it rests t·(1 − duty)/duty), its
    /// threads at the lowest scheduling priority when `config.background` (so they take
    /// only the CPU time the frame leaves idle).
    pub(crate) fn spawn(config: &AdaptWorkerConfig) -> Self {
        Self::spawn_with(config, run_job)
    }

    /// [`Worker::spawn`] with another job runner.
    pub(crate) fn spawn_with(config: &AdaptWorkerConfig, runner: Runner) -> Self {
        let duty = if config.duty.is_finite() {
            config.duty.clamp(0.01, 1.0)
        } else {
            1.0
        };
        let background = config.background;
        let lower = move || {
            if background {
                lower_priority();
            }
        };
        let (jobs, job_rx) = unbounded::<WorkItem>();
        let (result_tx, results) = unbounded();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.max(1))
            .thread_name(|i| format!("noether-adapt-{i}"))
            .start_handler(move |_| lower())
            .build()
            .ok();
        thread::Builder::new()
            .name("noether-adapt".into())
            .spawn(move || {
                lower();
                while let Ok(WorkItem { model, job }) = job_rx.recv() {
                    let bodies: Vec<Entity> = job.bodies.iter().map(|b| b.key).collect();
                    let started = std::time::Instant::now();
                    // A job that panics fails its bodies; the worker goes on.
                    let pool = pool.as_ref();
                    let run = AssertUnwindSafe(move || match pool {
                        Some(pool) => pool.install(|| runner(&model, job)),
                        None => runner(&model, job),
                    });
                    let out = match catch_unwind(run) {
                        Ok(result) => WorkOutcome::Done(result),
                        Err(panic) => {
                            let message = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                                .unwrap_or_else(|| "a panic without a message".into());
                            WorkOutcome::Failed(bodies, message)
                        }
                    };
                    let seconds = started.elapsed().as_secs_f64();
                    if result_tx.send(out).is_err() {
                        break;
                    }
                    let rest = seconds * (1.0 - duty) / duty;
                    if rest > 0.0 {
                        thread::sleep(std::time::Duration::from_secs_f64(rest));
                    }
                }
            })
            .expect("spawning the adaptation worker thread");
        Self {
            jobs,
            results,
            gate: Arc::default(),
        }
    }

    /// Hands a job over without waiting; gives it back if the worker is gone.
    #[expect(
        clippy::result_large_err,
        reason = "a refused job comes back whole, to be kept for the next tick"
    )]
    pub(crate) fn send(&self, item: WorkItem) -> Result<(), WorkItem> {
        self.jobs.try_send(item).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// A finished job, if one is ready.
    pub(crate) fn try_recv(&self) -> Option<WorkOutcome> {
        // Empty or disconnected alike: a dead worker is found by `send`, which gets its job back.
        self.results.try_recv().ok()
    }
}

/// Puts the calling thread at the lowest priority of the normal scheduling policy (nice 19
/// on Linux). Not `SCHED_IDLE`: under a sustained load from other processes (a build, the
/// test harness's parallel tests) an idle-class thread gets almost no CPU and adaptation
/// would silently stop; the frame is protected by the [`FrameGate`] instead. Best effort: a
/// platform that refuses keeps the normal priority.
fn lower_priority() {
    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use noether::runtime::{AdaptationSettings, Job, JobResult, LearnedModel};

    use super::*;

    /// Panics on a job of one body, fits nothing otherwise.
    fn fragile(_: &CpuModel, job: Job<Entity>) -> JobResult<Entity> {
        assert!(job.bodies.len() != 1, "a job of one body is poison");
        JobResult {
            bodies: Vec::new(),
            invalid: Vec::new(),
            seconds: 0.0,
            compute_seconds: 0.0,
        }
    }

    fn item(model: &Arc<CpuModel>, bodies: usize) -> WorkItem {
        let mut job = Job::new(&AdaptationSettings::default());
        job.bodies = (0..bodies)
            .map(|i| noether::runtime::JobBody {
                key: Entity::from_raw_u32(i as u32 + 1).unwrap(),
                window: Vec::new(),
                horizon: 0,
                part: noether::meta::ObservedPart::Positions,
                latent: Vec::new(),
                carried: None,
            })
            .collect();
        WorkItem {
            model: model.clone(),
            job,
        }
    }

    fn next(worker: &Worker) -> WorkOutcome {
        let start = Instant::now();
        loop {
            if let Some(outcome) = worker.try_recv() {
                return outcome;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the worker answered"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_worker_survives_a_panicking_job() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/pendulum-svd5.model.ron");
        let model = LearnedModel::load(&path).unwrap().cpu;
        let worker = Worker::spawn_with(&AdaptWorkerConfig::default(), fragile);
        worker.send(item(&model, 1)).ok().unwrap();
        match next(&worker) {
            WorkOutcome::Failed(bodies, message) => {
                assert_eq!(bodies.len(), 1, "the job's body fails with it");
                assert!(message.contains("poison"), "{message}");
            }
            WorkOutcome::Done(_) => panic!("the poison job succeeded"),
        }
        worker.send(item(&model, 2)).ok().unwrap();
        assert!(
            matches!(next(&worker), WorkOutcome::Done(_)),
            "the next job still runs"
        );
    }
}
