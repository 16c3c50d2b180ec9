//! Online adaptation in a headless app: hidden-truth pendulums learn their physics from
//! observed positions, with and without noise; pushed samples; despawns mid-job; a
//! divergent update is rejected; the frame loop never waits on the worker.

mod common;

use std::time::{Duration, Instant};

use bevy::{asset::Assets, prelude::*};
use bevy_noether::{
    adapt::{AdaptSettings, AdaptationStats},
    prelude::*,
};
use common::{add_model, create_app, loaded};
use noether::{
    integrate::{Integrator, simulate},
    meta::observed::position_error,
    systems::Family,
};

/// Events seen by the test (observed globally, as a game would).
#[derive(Resource, Default)]
struct Seen {
    converged: Vec<Entity>,
    diverged: Vec<(Entity, String)>,
    stalled: Vec<Entity>,
}

fn app() -> App {
    let mut app = create_app();
    app.init_resource::<Seen>()
        .add_observer(|e: On<AdaptationConverged>, mut seen: ResMut<Seen>| {
            seen.converged.push(e.entity);
        })
        .add_observer(|e: On<AdaptationDiverged>, mut seen: ResMut<Seen>| {
            seen.diverged.push((e.entity, e.reason.clone()));
        })
        .add_observer(|e: On<AdaptationStalled>, mut seen: ResMut<Seen>| {
            seen.stalled.push(e.entity);
        });
    app
}

/// Pendulum parameters spread over the training range, and starting angles.
fn pendulum(i: usize) -> (Vec<f64>, Vec<f32>) {
    let u = |k: usize, n: usize| (k % n) as f64 / (n - 1) as f64;
    let m = 0.5 + 1.5 * u(i, 4);
    let l = 0.5 + 1.5 * u(i * 7 + 3, 5);
    let q0 = 0.6 + 0.8 * u(i * 3 + 1, 6);
    (vec![m, l], vec![q0 as f32, 0.0])
}

fn spawn_observed(
    app: &mut App,
    model: &Handle<NoetherModel>,
    count: usize,
    observed: &Observed,
) -> Vec<Entity> {
    let mean = loaded(app, model).mean_latent();
    (0..count)
        .map(|i| {
            let (params, x0) = pendulum(i);
            app.world_mut()
                .spawn((
                    NoetherBody::new(model.clone()),
                    PhaseState(x0),
                    LatentCode(mean.clone()),
                    HiddenTruth { params },
                    observed.clone(),
                ))
                .id()
        })
        .collect()
}

/// Updates in real time (one fixed tick per 1/HZ s, as a game would) until every body is
/// converged, stalled or diverged, or `limit` passes; returns the frames run and how many of them
/// ran while a job was at the worker.
fn run_until_settled(app: &mut App, bodies: &[Entity], limit: Duration) -> (usize, usize) {
    run_until(app, bodies, limit, |phase| {
        matches!(
            phase,
            AdaptPhase::Converged | AdaptPhase::Stalled | AdaptPhase::Diverged
        )
    })
}

/// [`run_until_settled`], done when every body's phase passes `done`.
fn run_until(
    app: &mut App,
    bodies: &[Entity],
    limit: Duration,
    done: impl Fn(AdaptPhase) -> bool,
) -> (usize, usize) {
    let started = Instant::now();
    let (mut frames, mut busy) = (0, 0);
    while started.elapsed() < limit {
        app.update();
        frames += 1;
        let due = started + Duration::from_secs_f64(frames as f64 / common::HZ);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if app.world().resource::<AdaptationStats>().in_flight > 0 {
            busy += 1;
        }
        let settled = bodies.iter().all(|e| {
            app.world()
                .get::<Adaptation>(*e)
                .is_some_and(|a| done(a.phase))
        });
        if settled {
            break;
        }
    }
    (frames, busy)
}

/// Relative 10-second position error of the learned pendulum with `latent` against the
/// truth, from the body's spawn state.
fn prediction_error(model: &NoetherModel, params: &[f64], x0: &[f32], latent: &[f32]) -> f64 {
    let sys = Family::Pendulum.build(params).unwrap();
    let x0: Vec<f64> = x0.iter().map(|v| f64::from(*v)).collect();
    position_error(&model.cpu, latent, sys.as_ref(), &x0, 0.05, 200).unwrap()
}

/// The mean-latent and adapted 10-s errors over `bodies`.
fn errors(app: &App, model: &Handle<NoetherModel>, bodies: &[Entity]) -> (f64, f64) {
    let m = loaded(app, model);
    let mean = m.mean_latent();
    let (mut before, mut after) = (0.0, 0.0);
    for (i, e) in bodies.iter().enumerate() {
        let (params, x0) = pendulum(i);
        let z = &app.world().get::<LatentCode>(*e).unwrap().0;
        before += prediction_error(m, &params, &x0, &mean);
        after += prediction_error(m, &params, &x0, z);
    }
    let n = bodies.len() as f64;
    (before / n, after / n)
}

#[test]
fn twenty_pendulums_learn_their_hidden_physics_from_positions() {
    let mut app = app();
    let model = add_model(&mut app, "pendulum-svd5");
    let bodies = spawn_observed(&mut app, &model, 20, &Observed::hidden_truth(0.05));
    let (frames, busy) = run_until_settled(&mut app, &bodies, Duration::from_secs(90));
    let (before, after) = errors(&app, &model, &bodies);
    let stats = app.world().resource::<AdaptationStats>().clone();
    let max_updates = bodies
        .iter()
        .map(|e| app.world().get::<Adaptation>(*e).unwrap().updates)
        .max()
        .unwrap();
    eprintln!(
        "20 pendulums: 10-s position error {before:.3e} (mean latent) → {after:.3e} (adapted), \
         {frames} frames ({busy} with the worker busy), {} updates, at most {max_updates} per body, \
         phases {:?}, {:.2} worker s",
        stats.updates, stats.phases, stats.worker_seconds
    );
    let seen = app.world().resource::<Seen>();
    assert_eq!(
        seen.converged.len(),
        20,
        "every body converges: {:?}",
        stats.phases
    );
    assert!(seen.diverged.is_empty(), "{:?}", seen.diverged);
    assert!(
        after * 5.0 <= before,
        "error {before:.3e} → {after:.3e}: less than 5×"
    );
    assert!(max_updates <= 100, "{max_updates} updates for one body");
    // The frame loop ran on while jobs were at the worker, and the dynamics kept stepping.
    assert!(busy >= 10, "only {busy} frames while the worker was busy");
    let ticks = app
        .world()
        .resource::<bevy_noether::dynamics::StepDiagnostics>()
        .ticks;
    assert!(
        ticks as usize >= frames - 2,
        "{ticks} ticks in {frames} frames"
    );
}

#[test]
fn noisy_positions_still_converge() {
    let mut app = app();
    let model = add_model(&mut app, "pendulum-svd5");
    let observed = Observed {
        components: ObservedPart::Positions,
        source: bevy_noether::adapt::ObservationSource::HiddenTruth {
            interval: 0.05,
            noise: 0.01,
        },
    };
    let bodies = spawn_observed(&mut app, &model, 8, &observed);
    // A body may stall on an unlucky window (more so on a loaded machine, where the worker
    // sees the observations later); it is retried from a fresh start and must converge then.
    run_until(&mut app, &bodies, Duration::from_secs(90), |phase| {
        matches!(phase, AdaptPhase::Converged | AdaptPhase::Diverged)
    });
    let (before, after) = errors(&app, &model, &bodies);
    eprintln!("8 pendulums, 1% noise: 10-s error {before:.3e} → {after:.3e}");
    for e in &bodies {
        let a = app.world().get::<Adaptation>(*e).unwrap();
        eprintln!(
            "{e}: {:?} misfit {:.3e} floor {:.3e} stalls {} updates {} horizon {}",
            a.phase, a.misfit, a.floor, a.stalls, a.updates, a.horizon
        );
    }
    let seen = app.world().resource::<Seen>();
    assert_eq!(seen.converged.len(), 8);
    assert!(after * 5.0 <= before, "error {before:.3e} → {after:.3e}");
}

#[test]
fn pushed_full_states_at_irregular_times_are_fitted() {
    let mut app = app();
    let model = add_model(&mut app, "pendulum-svd5");
    let bodies = spawn_observed(&mut app, &model, 4, &Observed::pushed(ObservedPart::States));
    // The game pushes what it saw: irregular times over 3 s, full states.
    for (i, e) in bodies.iter().enumerate() {
        let (params, x0) = pendulum(i);
        let sys = Family::Pendulum.build(&params).unwrap();
        let x0d: Vec<f64> = x0.iter().map(|v| f64::from(*v)).collect();
        let truth = simulate(sys.as_ref(), Integrator::Dopri, &x0d, 0.01, 300).unwrap();
        let mut buffer = app.world_mut().get_mut::<ObservationBuffer>(*e).unwrap();
        let mut k = 0;
        while k <= 300 {
            let x = truth.state(k);
            buffer
                .push(k as f64 * 0.01, vec![x[0] as f32, x[1] as f32])
                .unwrap();
            k += 3 + (k * 7 + i) % 5;
        }
        assert!(buffer.push(0.0, vec![0.0, 0.0]).is_err(), "out of order");
    }
    app.world_mut()
        .resource_mut::<Time<Simulation>>()
        .toggle_pause();
    run_until_settled(&mut app, &bodies, Duration::from_secs(120));
    let (before, after) = errors(&app, &model, &bodies);
    eprintln!("4 pushed pendulums: 10-s error {before:.3e} → {after:.3e}");
    assert_eq!(app.world().resource::<Seen>().converged.len(), 4);
    assert!(after * 5.0 <= before, "error {before:.3e} → {after:.3e}");
}

#[test]
fn despawning_a_body_mid_adaptation_is_safe() {
    let mut app = app();
    let model = add_model(&mut app, "pendulum-svd5");
    let bodies = spawn_observed(&mut app, &model, 12, &Observed::hidden_truth(0.05));
    let started = Instant::now();
    // Run until jobs are at the worker, then despawn every other body.
    while app.world().resource::<AdaptationStats>().in_flight == 0 {
        app.update();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no job was sent"
        );
    }
    for e in bodies.iter().step_by(2) {
        app.world_mut().despawn(*e);
    }
    let kept: Vec<Entity> = bodies.iter().skip(1).step_by(2).copied().collect();
    run_until_settled(&mut app, &kept, Duration::from_secs(90));
    let stats = app.world().resource::<AdaptationStats>();
    assert!(
        stats.dropped >= 6,
        "{} stale results dropped",
        stats.dropped
    );
    assert_eq!(app.world().resource::<Seen>().converged.len(), 6);
}

#[test]
fn a_divergent_update_is_rejected_and_the_last_good_latent_kept() {
    let mut app = app();
    // A model whose field is NaN: every rollout of the fit explodes.
    let good = add_model(&mut app, "pendulum-svd5");
    let broken = {
        let assets = app.world().resource::<Assets<NoetherModel>>();
        let m = assets.get(&good).unwrap();
        let mut params = (*m.params).clone();
        for (t, _) in params.tensors_mut() {
            if let Some(v) = t.first_mut() {
                *v = f32::NAN;
            }
        }
        NoetherModel::new(m.config.clone(), params)
    };
    let broken = app
        .world_mut()
        .resource_mut::<Assets<NoetherModel>>()
        .add(broken);
    let bodies = spawn_observed(
        &mut app,
        &broken,
        2,
        &Observed::pushed(ObservedPart::Positions),
    );
    let before: Vec<Vec<f32>> = bodies
        .iter()
        .map(|e| app.world().get::<LatentCode>(*e).unwrap().0.clone())
        .collect();
    for e in &bodies {
        let mut buffer = app.world_mut().get_mut::<ObservationBuffer>(*e).unwrap();
        for k in 0..20 {
            let t = f64::from(k) * 0.05;
            buffer.push(t, vec![(t * 3.0).cos() as f32]).unwrap();
        }
    }
    // Pause the (equally broken) dynamics; adaptation runs every fixed tick regardless.
    app.world_mut()
        .resource_mut::<Time<Simulation>>()
        .toggle_pause();
    run_until_settled(&mut app, &bodies, Duration::from_secs(60));
    let max = app.world().resource::<AdaptSettings>().max_rejections;
    for (e, z) in bodies.iter().zip(&before) {
        let a = app.world().get::<Adaptation>(*e).unwrap();
        assert_eq!(a.phase, AdaptPhase::Diverged);
        assert!(a.rejected >= max);
        assert_eq!(a.updates, 0);
        assert_eq!(
            &app.world().get::<LatentCode>(*e).unwrap().0,
            z,
            "latent kept"
        );
    }
    let seen = app.world().resource::<Seen>();
    assert_eq!(seen.diverged.len(), 2);
    assert!(
        seen.diverged[0].1.contains("not finite"),
        "{}",
        seen.diverged[0].1
    );
}

/// An app with two pendulums observed through pushed positions, from the mean latent.
fn two_pushed_pendulums() -> (App, Vec<Entity>) {
    let mut app = app();
    let model = add_model(&mut app, "pendulum-svd5");
    let observed = Observed::pushed(ObservedPart::Positions);
    let bodies = spawn_observed(&mut app, &model, 2, &observed);
    (app, bodies)
}

/// Pushes `count` samples of `q(t)` every 0.05 s into each body's buffer and pauses the
/// dynamics (adaptation runs every fixed tick regardless).
fn push_and_pause(app: &mut App, bodies: &[Entity], count: u32, q: impl Fn(f64) -> f64) {
    for e in bodies {
        let mut buffer = app.world_mut().get_mut::<ObservationBuffer>(*e).unwrap();
        for k in 0..count {
            let t = f64::from(k) * 0.05;
            buffer.push(t, vec![q(t) as f32]).unwrap();
        }
    }
    app.world_mut()
        .resource_mut::<Time<Simulation>>()
        .toggle_pause();
}

#[test]
fn a_fit_that_cannot_reach_the_noise_floor_is_stalled_not_converged() {
    let (mut app, bodies) = two_pushed_pendulums();
    // Two incommensurate tones: no pendulum swings like this, and the samples are exact,
    // so the noise floor is far below any misfit a pendulum can reach.
    push_and_pause(&mut app, &bodies, 60, |t| {
        0.8 * (3.0 * t).cos() + 0.3 * (11.0 * t).sin()
    });
    run_until_settled(&mut app, &bodies, Duration::from_secs(90));
    for e in &bodies {
        let a = app.world().get::<Adaptation>(*e).unwrap();
        assert_eq!(a.phase, AdaptPhase::Stalled, "{e}: {:?}", a.0);
        assert!(
            a.misfit > a.floor,
            "stalled above the floor: misfit {} floor {}",
            a.misfit,
            a.floor
        );
        assert_eq!(a.stalls, 1);
    }
    let seen = app.world().resource::<Seen>();
    assert_eq!(
        seen.stalled.len(),
        2,
        "AdaptationStalled fired on each body"
    );
    assert!(seen.converged.is_empty(), "nothing converged");

    // Observations past `retry_after`: each body starts over from its encoder's reading of
    // the window.
    let (encoded, retries) = {
        let stats = app.world().resource::<AdaptationStats>();
        (stats.encoded, stats.retries)
    };
    let retry_after = app.world().resource::<AdaptSettings>().retry_after;
    for e in &bodies {
        let mut buffer = app.world_mut().get_mut::<ObservationBuffer>(*e).unwrap();
        let last = buffer.samples().last().unwrap().t;
        for k in 1..=(retry_after / 0.05).ceil() as u32 + 1 {
            let t = last + f64::from(k) * 0.05;
            buffer
                .push(t, vec![(0.8 * (3.0 * t).cos()) as f32])
                .unwrap();
        }
    }
    let started = Instant::now();
    while app.world().resource::<AdaptationStats>().retries - retries < 2
        && started.elapsed() < Duration::from_secs(10)
    {
        app.update();
        std::thread::sleep(Duration::from_secs_f64(1.0 / common::HZ));
    }
    let stats = app.world().resource::<AdaptationStats>();
    assert_eq!(stats.retries - retries, 2, "both bodies start over");
    assert_eq!(
        stats.encoded - encoded,
        2,
        "each retry starts from the encoder's reading"
    );
    for e in &bodies {
        let a = app.world().get::<Adaptation>(*e).unwrap();
        assert_ne!(a.phase, AdaptPhase::Stalled, "{e} started over");
    }
}

#[test]
fn a_latent_of_the_wrong_length_is_refused_at_dispatch() {
    let (mut app, bodies) = two_pushed_pendulums();
    app.world_mut()
        .get_mut::<LatentCode>(bodies[0])
        .unwrap()
        .0
        .truncate(2);
    push_and_pause(&mut app, &bodies, 60, |t| (3.0 * t).cos());
    run_until_settled(&mut app, &bodies, Duration::from_secs(90));
    let refused = app.world().get::<Adaptation>(bodies[0]).unwrap();
    assert_eq!(refused.phase, AdaptPhase::Diverged);
    assert_eq!(refused.updates, 0);
    let stats = app.world().resource::<AdaptationStats>();
    assert!(stats.refused >= 1, "{} refused", stats.refused);
    assert_eq!(
        stats.jobs_failed, 0,
        "nothing reached the worker to fail there"
    );
    let seen = app.world().resource::<Seen>();
    assert!(
        seen.diverged
            .iter()
            .any(|(e, reason)| *e == bodies[0] && reason.contains("2 values")),
        "{:?}",
        seen.diverged
    );
    // The worker carried on with the other body.
    let fine = app.world().get::<Adaptation>(bodies[1]).unwrap();
    assert!(fine.updates > 0, "{:?}", fine.0);
}
