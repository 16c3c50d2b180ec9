//! [`AdaptPlugin`]: ground-truth observation, job dispatch, result review — the core's
//! adaptation state machine ([`noether::runtime::AdaptState`]) on ECS data.

use std::{collections::BTreeMap, time::Instant};

use bevy::{
    app::{App, Plugin},
    asset::{AssetId, Assets},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    log::{error, info, warn},
    prelude::*,
};
use noether::runtime::{AdaptEvent, Applied, Job, Start, amortised_start, waits_for_encoder};

use super::{
    AdaptSettings, Adaptation, AdaptationConverged, AdaptationDiverged, AdaptationStalled,
    ObservationBuffer, ObservationSource, Observed,
    worker::{WorkItem, WorkOutcome, Worker},
};
use crate::{
    dynamics::{EnergySystems, HiddenTruth, LatentCode, NoetherBody, PhaseState},
    model::NoetherModel,
    scene::SceneSystems,
    schedule::{ClockSystems, NoetherSystems, Simulation},
};

/// The adaptation systems, all in the noether schedule: `Apply` in
/// [`NoetherSystems::Prepare`], `Observe` then `Dispatch` in [`NoetherSystems::Writeback`]
/// (after the step, so observations and jobs see this tick's states).
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdaptSystems {
    /// Finished jobs are reviewed and applied.
    Apply,
    /// Ground-truth simulators advance and are sampled.
    Observe,
    /// Observed bodies are sent to the worker.
    Dispatch,
}

/// The ground truth beside a body observed through [`ObservationSource::HiddenTruth`]
/// ([`noether::runtime::TruthSimulator`]: the true system, started from the body's state
/// when observation began).
#[derive(Component, Reflect, Deref, DerefMut)]
#[reflect(Component, from_reflect = false)]
pub struct TruthSimulator(#[reflect(ignore)] pub noether::runtime::TruthSimulator);

/// The adaptation worker's threads: a build-time knob of [`AdaptPlugin`] (and of
/// [`crate::NoetherPlugins::with_adaptation_worker`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptWorkerConfig {
    /// Rayon threads of the worker (default: one per logical CPU; they compute only while
    /// the frame is idle, see [`noether::runtime::FrameGate`]).
    pub threads: usize,
    /// Fraction of the time the worker may be busy (1: always). On a machine with few
    /// cores the worker competes with the frame's own threads; a lower duty trades
    /// convergence speed for frame time.
    pub duty: f64,
    /// Run the worker's threads at the lowest scheduling priority (nice 19 on Linux), so
    /// they use only CPU time the frame leaves idle.
    pub background: bool,
}

impl Default for AdaptWorkerConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            duty: 1.0,
            background: true,
        }
    }
}

/// Counters and timings of adaptation, for diagnostics, the inspector and benchmarks.
#[derive(Resource, Reflect, Clone, Debug, Default)]
#[reflect(Resource, Default, Debug)]
pub struct AdaptationStats {
    /// Jobs sent to the worker.
    pub jobs_sent: u64,
    /// Jobs finished.
    pub jobs_done: u64,
    /// Jobs that failed at the worker (a panic; their bodies' updates were rejected).
    pub jobs_failed: u64,
    /// Jobs at the worker now.
    pub in_flight: usize,
    /// Latent updates accepted.
    pub updates: u64,
    /// Updates rejected.
    pub rejected: u64,
    /// Results dropped because their body was despawned.
    pub dropped: u64,
    /// Core-seconds the worker computed (waits at the frame gate excluded).
    pub worker_seconds: f64,
    /// Frame-loop milliseconds spent in the adaptation systems in the last tick.
    pub frame_ms: f64,
    /// Bodies in each phase, indexed by `AdaptPhase as usize` (observing, adapting,
    /// converged, diverged, stalled; [`AdaptPhase::ALL`](noether::runtime::AdaptPhase::ALL)).
    pub phases: [usize; 5],
    /// Stalled bodies started over from a fresh latent.
    pub retries: u64,
    /// Bodies started from their model's encoder.
    pub encoded: u64,
    /// Bodies refused at dispatch (a latent of the wrong length).
    pub refused: u64,
}

/// The worker handle, owned by the world; dropping it stops the thread.
#[derive(Resource)]
struct AdaptWorker(Worker);

/// Online adaptation of observed bodies (see the [module docs](super)).
pub struct AdaptPlugin {
    /// The schedule of [`NoetherSystems`] (ground truth advances with the dynamics).
    pub schedule: Interned<dyn ScheduleLabel>,
    /// The worker's threads.
    pub worker: AdaptWorkerConfig,
}

impl Plugin for AdaptPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        // The clock the systems read; it advances only with the schedule plugin.
        app.init_resource::<Time<Simulation>>();
        app.register_type::<Observed>()
            .register_type::<ObservationBuffer>()
            .register_type::<Adaptation>()
            .register_type::<TruthSimulator>()
            .register_type::<AdaptSettings>()
            .register_type::<AdaptationStats>()
            .init_resource::<AdaptSettings>()
            .init_resource::<AdaptationStats>()
            .insert_resource(AdaptWorker(Worker::spawn(&self.worker)))
            .configure_sets(
                self.schedule,
                (
                    AdaptSystems::Apply
                        .in_set(NoetherSystems::Prepare)
                        .after(ClockSystems)
                        .after(SceneSystems::Spawn),
                    (AdaptSystems::Observe, AdaptSystems::Dispatch)
                        .chain()
                        .in_set(NoetherSystems::Writeback)
                        .before(EnergySystems),
                ),
            )
            .add_systems(
                self.schedule,
                (
                    raise_gate.before(NoetherSystems::Prepare),
                    lower_gate.after(NoetherSystems::Writeback),
                    apply_results.in_set(AdaptSystems::Apply),
                    observe_truth.in_set(AdaptSystems::Observe),
                    dispatch.in_set(AdaptSystems::Dispatch),
                ),
            );
        // The whole update, too: the worker computes while the frame is idle (pacing,
        // waiting for the GPU or the display). The inner pair above still guards the
        // stepping when its schedule runs outside the main loop.
        app.add_systems(First, raise_gate)
            .add_systems(Last, lower_gate);
    }
}

/// The frame starts stepping: the worker pauses at its next checkpoint.
fn raise_gate(worker: Res<AdaptWorker>) {
    worker.0.gate.raise();
}

/// The frame has stepped: the worker goes on.
fn lower_gate(worker: Res<AdaptWorker>) {
    worker.0.gate.lower();
}

type TruthQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static PhaseState,
        &'static HiddenTruth,
        &'static Observed,
        &'static mut ObservationBuffer,
        Option<&'static mut TruthSimulator>,
    ),
>;

/// Advances each ground-truth simulator by the tick and samples it on its interval. A
/// body starts its simulator from its own state the first time it is seen.
fn observe_truth(
    sim: Res<Time<Simulation>>,
    models: Res<Assets<NoetherModel>>,
    mut bodies: TruthQuery,
    mut commands: Commands,
) {
    let tick = sim.context().tick();
    for (entity, body, state, truth, observed, mut buffer, simulator) in &mut bodies {
        let ObservationSource::HiddenTruth { interval, noise } = observed.source else {
            continue;
        };
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        let observation = match simulator {
            Some(mut s) if tick > 0.0 => s.advance(tick),
            Some(_) => None,
            None => {
                let started = noether::runtime::TruthSimulator::new(
                    model.family(),
                    &truth.params,
                    state.iter().map(|v| f64::from(*v)).collect(),
                    observed.components,
                    interval,
                    noise,
                    entity.to_bits(),
                );
                match started {
                    Ok(mut s) => {
                        let first = s.advance(0.0);
                        commands.entity(entity).insert(TruthSimulator(s));
                        first
                    }
                    Err(e) => {
                        warn!(
                            "noether: {entity}: its hidden truth cannot be simulated, it stops observing: {e}"
                        );
                        commands.entity(entity).remove::<Observed>();
                        None
                    }
                }
            }
        };
        if let Some(o) = observation
            && let Err(e) = buffer.push(o.t, o.values)
        {
            warn!("noether: {entity}: an observation of its hidden truth was refused: {e}");
        }
    }
}

type DispatchQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static mut LatentCode,
        &'static Observed,
        &'static ObservationBuffer,
        &'static mut Adaptation,
    ),
>;

/// Starts stalled bodies over when they are due, refuses bodies whose latent code does not
/// fit their model (an error naming the entity; the refusals diverge the body), and sends
/// the others with enough observations to the worker, one job per model, the
/// least-updated bodies first, within the per-tick budget. A fresh body of a model with an
/// encoder waits until its window spans what the encoder reads, and is read by it as it
/// goes into a job ([`amortised_start`]).
fn dispatch(
    mut commands: Commands,
    settings: Res<AdaptSettings>,
    worker: Res<AdaptWorker>,
    models: Res<Assets<NoetherModel>>,
    mut stats: ResMut<AdaptationStats>,
    mut bodies: DispatchQuery,
) {
    let clock = Instant::now();
    let mut phases = [0; 5];
    let mut groups: BTreeMap<AssetId<NoetherModel>, Vec<(u32, Entity)>> = BTreeMap::new();
    for (entity, body, mut latent, _, buffer, mut adaptation) in &mut bodies {
        let Some(model) = models.get(&body.model) else {
            phases[adaptation.phase as usize] += 1;
            continue;
        };
        if settings.enabled && adaptation.retry_due(buffer) {
            adaptation.retry();
            // The mean latent; a model with an encoder replaces it with the encoder's
            // reading just below (the body is fresh again), one reading per retry.
            latent.0 = model.mean_latent();
            stats.retries += 1;
        }
        phases[adaptation.phase as usize] += 1;
        if !settings.enabled || !adaptation.wants_job(buffer.len(), &settings) {
            continue;
        }
        if latent.len() != model.d_latent() {
            // An empty code is the mean latent the stepping fills in; wait for it.
            if !latent.is_empty() {
                let reason = format!(
                    "its latent code has {} values; its model's has {}",
                    latent.len(),
                    model.d_latent()
                );
                error!("noether: {entity}: refused for adaptation: {reason}");
                stats.refused += 1;
                let applied = adaptation.refuse(reason, &settings);
                report(&mut commands, entity, &adaptation, applied);
            }
            continue;
        }
        if waits_for_encoder(model, &adaptation.0, buffer) {
            continue;
        }
        groups
            .entry(body.model.id())
            .or_default()
            .push((adaptation.updates, entity));
    }
    stats.phases = phases;
    if settings.enabled {
        // Models whose bodies have had the fewest updates go first, so no population
        // starves while another adapts.
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by_key(|(id, g)| (g.iter().map(|(u, _)| *u).min(), *id));
        for (id, mut group) in groups {
            if stats.in_flight >= settings.max_jobs_in_flight {
                break;
            }
            let Some(model) = models.get(id) else {
                continue;
            };
            group.sort_unstable();
            let mut job = Job::new(&settings);
            job.gate = Some(worker.0.gate.clone());
            for (_, entity) in group.into_iter().take(settings.max_bodies_per_job.max(1)) {
                let Ok((_, _, mut latent, observed, buffer, mut adaptation)) =
                    bodies.get_mut(entity)
                else {
                    continue;
                };
                // The encoder reads only the windows that go into this job: a population
                // whose windows reach the encoder's span in one frame is read a job at a
                // time, not all in that frame.
                match amortised_start(model, &mut adaptation.0, buffer, observed.components) {
                    Start::Wait => continue,
                    Start::Encoded(z) => {
                        latent.0 = z;
                        stats.encoded += 1;
                    }
                    Start::Ready => {}
                }
                job.bodies
                    .push(adaptation.begin_job(entity, buffer, observed.components, &latent));
            }
            let entities: Vec<Entity> = job.bodies.iter().map(|b| b.key).collect();
            let item = WorkItem {
                model: model.cpu.clone(),
                job,
            };
            match worker.0.send(item) {
                Ok(()) => {
                    stats.jobs_sent += 1;
                    stats.in_flight += 1;
                }
                Err(_) => {
                    warn!("noether: the adaptation worker has stopped");
                    for e in entities {
                        if let Ok(mut b) = bodies.get_mut(e) {
                            b.5.cancel_job();
                        }
                    }
                    break;
                }
            }
        }
    }
    stats.frame_ms += clock.elapsed().as_secs_f64() * 1e3;
}

type ApplyQuery<'w, 's> = Query<
    'w,
    's,
    (
        &'static mut LatentCode,
        &'static ObservationBuffer,
        &'static mut Adaptation,
        &'static NoetherBody,
        &'static mut PhaseState,
        Option<&'static TruthSimulator>,
    ),
>;

/// Takes every finished job, drops results of despawned bodies, and applies each body's
/// result through its state machine: a new latent, a phase change, an event.
fn apply_results(
    mut commands: Commands,
    sim: Res<Time<Simulation>>,
    settings: Res<AdaptSettings>,
    worker: Res<AdaptWorker>,
    models: Res<Assets<NoetherModel>>,
    mut stats: ResMut<AdaptationStats>,
    mut bodies: ApplyQuery,
) {
    let clock = Instant::now();
    stats.frame_ms = 0.0;
    while let Some(outcome) = worker.0.try_recv() {
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.jobs_done += 1;
        let (results, refused) = match outcome {
            WorkOutcome::Done(result) => {
                stats.worker_seconds += result.compute_seconds;
                (result.bodies, result.invalid)
            }
            WorkOutcome::Failed(entities, message) => {
                stats.jobs_failed += 1;
                warn!("noether: an adaptation job failed at the worker: {message}");
                let reason = format!("the adaptation job failed: {message}");
                (
                    Vec::new(),
                    entities.into_iter().map(|e| (e, reason.clone())).collect(),
                )
            }
        };
        for (entity, reason) in refused {
            if let Ok((_, _, mut a, ..)) = bodies.get_mut(entity) {
                warn!("noether: {entity}: observations cannot be fitted: {reason}");
                stats.rejected += 1;
                let applied = a.0.refuse(reason, &settings);
                report(&mut commands, entity, &a, applied);
            }
        }
        for r in results {
            let entity = r.key;
            let Ok((mut latent, buffer, mut a, body, mut state, truth)) = bodies.get_mut(entity)
            else {
                stats.dropped += 1;
                continue;
            };
            let (updates, rejected) = (a.updates, a.rejected);
            let applied = a.0.apply(r, buffer, &settings);
            stats.updates += u64::from(a.updates - updates);
            stats.rejected += u64::from(a.rejected - rejected);
            if let Some(z) = &applied.latent {
                latent.0.clone_from(z);
            }
            // In step with what it observes: the fitted start, carried along the learned
            // flow to the present — the hidden truth's clock, or for pushed observations the
            // simulation clock when their times are on it (the last one at most one window
            // span ago).
            let present = match truth {
                Some(truth) => Some(truth.time()),
                None => a.fit.as_ref().and_then(|fit| {
                    let now = sim.elapsed_secs_f64();
                    (now >= fit.t_end && now - fit.t_end <= (fit.t_end - fit.t0).max(1.0))
                        .then_some(now)
                }),
            };
            if matches!(applied.event, Some(AdaptEvent::Converged { .. }))
                && settings.sync_on_converge
                && let (Some(present), Some(model), Some(fit)) =
                    (present, models.get(&body.model), a.fit.as_ref())
                && let Some(now) = fit.state_at(&model.cpu, &latent.0, present)
            {
                state.0 = now;
            }
            report(&mut commands, entity, &a, applied);
        }
    }
    stats.frame_ms += clock.elapsed().as_secs_f64() * 1e3;
}

/// Fires the event a state change asks for on its body.
fn report(commands: &mut Commands, entity: Entity, a: &Adaptation, applied: Applied) {
    match applied.event {
        Some(AdaptEvent::Converged { loss, updates }) => {
            commands.trigger(AdaptationConverged {
                entity,
                loss,
                updates,
            });
        }
        Some(AdaptEvent::Diverged { reason }) => {
            warn!(
                "noether: {entity}: adaptation diverged after {} rejected updates: {reason}",
                a.rejected
            );
            commands.trigger(AdaptationDiverged { entity, reason });
        }
        Some(AdaptEvent::Stalled {
            misfit,
            floor,
            retry_at,
        }) => {
            info!(
                "noether: {entity}: adaptation stalled at an RMS misfit of {misfit:.3e} above \
                 its noise floor {floor:.3e}; it starts over at t = {retry_at:.2} s"
            );
            commands.trigger(AdaptationStalled {
                entity,
                misfit,
                floor,
            });
        }
        None => {}
    }
}
