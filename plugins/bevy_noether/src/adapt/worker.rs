//! The adaptation worker: a thread that takes jobs (batches of observed bodies of one
//! model) over a crossbeam channel, runs them ([`noether::runtime::run_job`]), and sends the
//! results back. It owns a small rayon pool so it never takes every core from the frame.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    thread,
};

use bevy::prelude::Entity;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, unbounded};
use noether::{
    nn::cpu::CpuModel,
    runtime::{Job, JobResult, run_job},
};

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
}

impl Worker {
    /// Starts the worker with `config.threads` rayon threads, busy at most a fraction
    /// `config.duty` of the time (after a job of t seconds it rests t·(1 − duty)/duty), its
    /// threads at the lowest scheduling priority when `config.background` (so they take
    /// only the CPU time the frame leaves idle).
    pub(crate) fn spawn(config: &AdaptWorkerConfig) -> Self {
        let duty = if config.duty.is_finite() {
            config.duty.clamp(0.01, 1.0)
        } else {
            1.0
        };
        let background = config.background;
        let lower = move || {
            if background {
                // Best effort: a platform that refuses keeps the normal priority.
                let _ = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                );
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
                        Some(pool) => pool.install(|| run_job(&model, job)),
                        None => run_job(&model, job),
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
        Self { jobs, results }
    }

    /// Hands a job over without waiting; gives it back if the worker is gone.
    pub(crate) fn send(&self, item: WorkItem) -> Result<(), WorkItem> {
        self.jobs.try_send(item).map_err(|e| match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        })
    }

    /// A finished job, if one is ready.
    pub(crate) fn try_recv(&self) -> Option<WorkOutcome> {
        match self.results.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }
}
