//! [`AdaptPlugin`]: ground-truth observation, job dispatch, result review.

use std::{collections::BTreeMap, time::Instant};

use bevy::{
    app::{App, Plugin, Update},
    asset::{AssetId, Assets},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    log::warn,
    prelude::*,
};
use noether::{
    integrate::{Integrator, Stepper},
    meta::{FitConfig, observed::predict},
};

use super::{
    AdaptSettings, Adaptation, AdaptationConverged, AdaptationDiverged, AdaptationPhase, HISTORY,
    ObservationBuffer, ObservationSource, Observed, ObservedComponents, Verdict, review,
    worker::{Job, JobBody, Worker},
};
use crate::{
    dynamics::{EnergySystems, HiddenTruth, LatentCode, NoetherBody, PhaseState},
    model::NoetherModel,
    schedule::{NoetherSystems, Simulation},
};

/// The adaptation systems. `Observe` runs in the noether schedule after the step; the
/// others run in `Update`, every frame, `Collect` before `Dispatch`.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdaptSystems {
    /// Ground-truth simulators advance and are sampled.
    Observe,
    /// Finished jobs are reviewed and applied.
    Collect,
    /// Observed bodies are sent to the worker.
    Dispatch,
}

/// The ground truth beside a body observed through [`ObservationSource::HiddenTruth`]:
/// the true system, started from the body's state when observation began.
#[derive(Component, Clone, Debug, PartialEq, Reflect)]
#[reflect(Component, Debug)]
pub struct TruthSimulator {
    /// True state.
    pub x: Vec<f64>,
    /// Simulated seconds since observation began.
    pub t: f64,
    /// Time of the next sample.
    pub next_sample: f64,
    /// Largest |value| each component has shown (the noise scale).
    pub amplitude: Vec<f64>,
    rng: u64,
}

impl TruthSimulator {
    /// Starts at `x` with noise stream `seed`.
    pub fn new(x: Vec<f64>, seed: u64) -> Self {
        Self {
            amplitude: x.iter().map(|v| v.abs()).collect(),
            x,
            t: 0.0,
            next_sample: 0.0,
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A standard normal sample (Box–Muller on a splitmix64 stream).
    fn gaussian(&mut self) -> f64 {
        let mut uniform = || {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let (u1, u2) = (uniform(), uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// The observed values now, with noise of `noise ×` each component's amplitude.
    fn sample(&mut self, width: usize, noise: f32) -> Vec<f32> {
        for (a, v) in self.amplitude.iter_mut().zip(&self.x) {
            *a = a.max(v.abs());
        }
        (0..width)
            .map(|i| {
                let n = if noise > 0.0 {
                    f64::from(noise) * self.amplitude[i] * self.gaussian()
                } else {
                    0.0
                };
                (self.x[i] + n) as f32
            })
            .collect()
    }
}

/// Longest ground-truth RK4 substep, seconds.
const TRUTH_SUBSTEP: f64 = 0.005;

/// Counters and timings of adaptation, for diagnostics, the inspector and benchmarks.
#[derive(Resource, Reflect, Clone, Debug, Default)]
#[reflect(Resource, Default, Debug)]
pub struct AdaptationStats {
    /// Jobs sent to the worker.
    pub jobs_sent: u64,
    /// Jobs finished.
    pub jobs_done: u64,
    /// Jobs at the worker now.
    pub in_flight: usize,
    /// Latent updates accepted.
    pub updates: u64,
    /// Updates rejected.
    pub rejected: u64,
    /// Results dropped because their body was despawned.
    pub dropped: u64,
    /// Worker seconds spent on jobs.
    pub worker_seconds: f64,
    /// Frame-loop milliseconds spent in the adaptation systems in the last frame.
    pub frame_ms: f64,
    /// Bodies in each phase: observing, adapting, converged, diverged.
    pub phases: [usize; 4],
}

/// The worker handle, owned by the world; dropping it stops the thread.
#[derive(Resource)]
struct AdaptWorker(Worker);

/// Online adaptation of observed bodies (see the [module docs](super)).
pub struct AdaptPlugin {
    /// The schedule of [`NoetherSystems`] (ground truth advances with the dynamics).
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl Plugin for AdaptPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        let settings = app
            .world()
            .get_resource::<AdaptSettings>()
            .cloned()
            .unwrap_or_default();
        app.register_type::<Observed>()
            .register_type::<ObservationBuffer>()
            .register_type::<Adaptation>()
            .register_type::<TruthSimulator>()
            .register_type::<AdaptSettings>()
            .register_type::<AdaptationStats>()
            .insert_resource(settings.clone())
            .init_resource::<AdaptationStats>()
            .insert_resource(AdaptWorker(Worker::spawn(
                settings.worker_threads,
                settings.worker_duty,
                settings.worker_background,
            )))
            .add_message::<AdaptationConverged>()
            .add_message::<AdaptationDiverged>()
            .configure_sets(
                self.schedule,
                AdaptSystems::Observe
                    .in_set(NoetherSystems::Writeback)
                    .before(EnergySystems),
            )
            .add_systems(self.schedule, observe_truth.in_set(AdaptSystems::Observe))
            .configure_sets(
                Update,
                (AdaptSystems::Collect, AdaptSystems::Dispatch).chain(),
            )
            .add_systems(Update, collect.in_set(AdaptSystems::Collect))
            .add_systems(Update, dispatch.in_set(AdaptSystems::Dispatch));
    }
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
    let tick = sim.context().tick;
    for (entity, body, state, truth, observed, mut buffer, simulator) in &mut bodies {
        let ObservationSource::HiddenTruth { interval, noise } = observed.source else {
            continue;
        };
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        let family = model.config.family;
        let width = match observed.components {
            ObservedComponents::Positions => family.dof(),
            ObservedComponents::States => family.dim(),
        };
        let Some(mut simulator) = simulator else {
            let mut s = TruthSimulator::new(
                state.iter().map(|v| f64::from(*v)).collect(),
                entity.to_bits(),
            );
            let _ = buffer.push(0.0, s.sample(width, noise));
            s.next_sample = interval;
            commands.entity(entity).insert(s);
            continue;
        };
        if tick <= 0.0 {
            continue;
        }
        let system = match family.build(&truth.params) {
            Ok(s) => s,
            Err(e) => {
                warn!("noether: {entity}: hidden truth cannot be simulated: {e}");
                commands.entity(entity).remove::<Observed>();
                continue;
            }
        };
        let substeps = (tick / TRUTH_SUBSTEP).ceil().max(1.0) as usize;
        let h = tick / substeps as f64;
        let mut stepper = Stepper::new(Integrator::Rk4, family.dim());
        let s = simulator.as_mut();
        for _ in 0..substeps {
            if stepper.step(system.as_ref(), &mut s.x, h).is_err() {
                break;
            }
        }
        s.t += tick;
        if s.t + 1e-9 >= s.next_sample && s.x.iter().all(|v| v.is_finite()) {
            let t = s.t;
            let values = s.sample(width, noise);
            if buffer.push(t, values).is_ok() {
                s.next_sample = (s.next_sample + interval).max(t + 0.5 * interval);
            }
        }
    }
}

type DispatchQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static LatentCode,
        &'static Observed,
        &'static ObservationBuffer,
        &'static mut Adaptation,
    ),
>;

/// Sends observed bodies with enough observations to the worker, one job per model, the
/// least-updated bodies first, within the per-frame budget.
fn dispatch(
    settings: Res<AdaptSettings>,
    worker: Res<AdaptWorker>,
    models: Res<Assets<NoetherModel>>,
    mut stats: ResMut<AdaptationStats>,
    mut bodies: DispatchQuery,
) {
    let clock = Instant::now();
    let mut phases = [0; 4];
    let mut groups: BTreeMap<AssetId<NoetherModel>, Vec<(u32, Entity)>> = BTreeMap::new();
    for (entity, body, _, _, buffer, adaptation) in &bodies {
        phases[adaptation.phase as usize] += 1;
        let waiting = matches!(
            adaptation.phase,
            AdaptationPhase::Observing | AdaptationPhase::Adapting
        );
        if waiting && !adaptation.in_flight && buffer.len() >= settings.min_observations.max(3) {
            groups
                .entry(body.model.id())
                .or_default()
                .push((adaptation.updates, entity));
        }
    }
    stats.phases = phases;
    if settings.enabled {
        let config = FitConfig {
            lambda_z: settings.lambda_z,
            ..FitConfig::default()
        };
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
            let mut job = Job {
                model: model.cpu.clone(),
                bodies: Vec::new(),
                config,
                steps: settings.steps_per_job,
                settle_tol: settings.settle_tol,
                settle_misfit: settings.settle_misfit,
            };
            for (_, entity) in group.into_iter().take(settings.max_bodies_per_job.max(1)) {
                let Ok((_, _, latent, observed, buffer, mut adaptation)) = bodies.get_mut(entity)
                else {
                    continue;
                };
                let window = adaptation.horizon.clamp(3, buffer.len());
                job.bodies.push(JobBody {
                    entity,
                    observations: buffer.window(window),
                    part: observed.components.into(),
                    latent: latent.0.clone(),
                    carried: adaptation.fit.clone(),
                });
                adaptation.in_flight = true;
                adaptation.phase = AdaptationPhase::Adapting;
            }
            let entities: Vec<Entity> = job.bodies.iter().map(|b| b.entity).collect();
            match worker.0.send(job) {
                Ok(()) => {
                    stats.jobs_sent += 1;
                    stats.in_flight += 1;
                }
                Err(_) => {
                    warn!("noether: the adaptation worker has stopped");
                    for e in entities {
                        if let Ok(mut b) = bodies.get_mut(e) {
                            b.5.in_flight = false;
                        }
                    }
                    break;
                }
            }
        }
    }
    stats.frame_ms += clock.elapsed().as_secs_f64() * 1e3;
}

type CollectQuery<'w, 's> = Query<
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

/// Takes every finished job, drops results of despawned bodies, reviews each update and
/// applies it or keeps the last good latent, and moves bodies between phases.
fn collect(
    settings: Res<AdaptSettings>,
    worker: Res<AdaptWorker>,
    models: Res<Assets<NoetherModel>>,
    mut stats: ResMut<AdaptationStats>,
    mut bodies: CollectQuery,
    mut converged: MessageWriter<AdaptationConverged>,
    mut diverged: MessageWriter<AdaptationDiverged>,
) {
    let clock = Instant::now();
    stats.frame_ms = 0.0;
    while let Some(result) = worker.0.try_recv() {
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.jobs_done += 1;
        stats.worker_seconds += result.seconds;
        for (entity, reason) in result.invalid {
            if let Ok((_, _, mut a, ..)) = bodies.get_mut(entity) {
                a.in_flight = false;
                warn!("noether: {entity}: observations cannot be fitted: {reason}");
            }
        }
        for r in result.bodies {
            let Ok((mut latent, buffer, mut a, body, mut state, truth)) = bodies.get_mut(r.entity)
            else {
                stats.dropped += 1;
                continue;
            };
            a.in_flight = false;
            if a.initial_loss.is_nan() {
                a.initial_loss = r.loss_before as f32;
            }
            let verdict = review(
                &r.fit.state.latent,
                r.loss_before,
                r.loss,
                settings.explode_factor,
            );
            match verdict {
                Verdict::Reject(reason) => {
                    stats.rejected += 1;
                    a.rejected += 1;
                    a.rejected_in_a_row += 1;
                    if a.rejected_in_a_row >= settings.max_rejections
                        && a.phase != AdaptationPhase::Diverged
                    {
                        a.phase = AdaptationPhase::Diverged;
                        diverged.write(AdaptationDiverged {
                            entity: r.entity,
                            reason,
                        });
                    }
                }
                Verdict::Accept => {
                    a.rejected_in_a_row = 0;
                    a.loss = r.loss as f32;
                    if r.improved {
                        stats.updates += 1;
                        a.updates += 1;
                        if a.history.len() == HISTORY {
                            a.history.remove(0);
                        }
                        a.history.push(r.loss as f32);
                    }
                    latent.0.clone_from(&r.fit.state.latent);
                    let span = r.fit.t_end - r.fit.t0;
                    a.fit = Some(r.fit);
                    if r.settled {
                        let covers_buffer = r.window >= buffer.len();
                        let enough = buffer.is_full() || span >= settings.converge_span;
                        if !covers_buffer || !enough {
                            a.horizon = (a.horizon * 2).min(buffer.capacity());
                        } else if a.phase != AdaptationPhase::Converged {
                            // In step with the truth: the fitted start, carried along the
                            // learned flow to the truth's present.
                            if settings.sync_on_converge
                                && let (Some(truth), Some(model), Some(fit)) =
                                    (truth, models.get(&body.model), a.fit.as_ref())
                                && truth.t >= fit.t0
                                && fit.start.len() == state.len()
                            {
                                let now = predict(
                                    &model.cpu,
                                    &latent.0,
                                    &fit.start,
                                    &[fit.t0, truth.t],
                                    FitConfig::default().max_substep,
                                );
                                if now[1].iter().all(|v| v.is_finite()) {
                                    state.0.clone_from(&now[1]);
                                }
                            }
                            a.phase = AdaptationPhase::Converged;
                            converged.write(AdaptationConverged {
                                entity: r.entity,
                                loss: a.loss,
                                updates: a.updates,
                            });
                        }
                    }
                }
            }
        }
    }
    stats.frame_ms += clock.elapsed().as_secs_f64() * 1e3;
}
