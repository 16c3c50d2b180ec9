//! A game that records a real object and lets a learned body learn its physics.
//!
//! The "real object" here is a pendulum the game moves itself (its own physics code, with
//! a length the learned model is never told); the game only sees its angle. Every 0.05 s
//! it pushes that angle, with a timestamp, into the [`ObservationBuffer`] of a learned
//! body that started from the model's mean latent — the same physics for every pendulum.
//! The adaptation worker fits the body's latent code (and the momentum nobody observes) to
//! those positions; [`AdaptationConverged`] fires on it once its misfit is at the noise
//! floor, and (`sync_on_converge`, which this game asks for) the body's swing is moved into
//! step with the real one.
//!
//! ```text
//! cargo run -p bevy_noether --example pushed_observations
//! ```
//!
//! It runs headless at 64 Hz paced to wall-clock time (observations arrive as they would
//! in a game) and prints, every second, the adaptation phase, the trajectory loss and the
//! gap between the real angle and the body's.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use bevy::prelude::*;
use bevy_noether::{
    adapt::{AdaptationSettings, ObservationBuffer},
    headless::headless_app,
    prelude::*,
};
use noether::{
    integrate::Stepper,
    systems::{Family, System},
};

const HZ: f64 = 64.0;
/// Seconds between two recorded positions.
const INTERVAL: f64 = 0.05;

/// The object the game tracks: a pendulum stepped by the game's own physics.
#[derive(Resource)]
struct RealObject {
    system: Box<dyn System>,
    stepper: Stepper,
    x: Vec<f64>,
    next_record: f64,
}

/// The learned body that watches it.
#[derive(Resource)]
struct Watcher(Entity);

fn main() -> ExitCode {
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");
    let mut app = headless_app(assets, HZ);
    // m = 1 kg, l = 0.7 m: a short pendulum, faster than the mean latent's.
    let system = match Family::Pendulum.build(&[1.0, 0.7]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.insert_resource(RealObject {
        system,
        stepper: Stepper::new(Integrator::Rk4, 2),
        x: vec![1.0, 0.0],
        next_record: 0.0,
    })
    // The body should swing with the object once it has learned it.
    .insert_resource(AdaptSettings(AdaptationSettings {
        sync_on_converge: true,
        ..default()
    }))
    .add_systems(FixedUpdate, record_real_object)
    .add_observer(|converged: On<AdaptationConverged>| {
        println!(
            "body {} converged after {} updates (loss {:.2e})",
            converged.entity, converged.updates, converged.loss
        );
    });
    let model = app
        .world()
        .resource::<AssetServer>()
        .load::<NoetherModel>("models/pendulum-svd5.model.ron");
    let body = app
        .world_mut()
        .spawn((
            NoetherBody::new(model),
            PhaseState(vec![1.0, 0.0]),
            Observed::pushed(ObservedPart::Positions),
        ))
        .id();
    app.insert_resource(Watcher(body));
    let started = Instant::now();
    for tick in 1..=(20.0 * HZ) as u32 {
        app.update();
        std::thread::sleep(
            (started + Duration::from_secs_f64(f64::from(tick) / HZ))
                .saturating_duration_since(Instant::now()),
        );
        if tick % HZ as u32 == 0 {
            let world = app.world();
            let real = world.resource::<RealObject>().x[0];
            let learned = world.get::<PhaseState>(body).map_or(f32::NAN, |s| s.0[0]);
            let Some(a) = world.get::<Adaptation>(body) else {
                continue;
            };
            println!(
                "t = {:>2} s | {:?} | loss {:.2e} | real angle {real:+.3}, learned {learned:+.3}",
                tick / HZ as u32,
                a.phase,
                a.loss,
            );
        }
    }
    ExitCode::SUCCESS
}

/// The game's own physics step, and a recorded position every [`INTERVAL`] seconds of
/// simulated time.
fn record_real_object(
    time: Res<Time<Simulation>>,
    fixed: Res<Time<Fixed>>,
    watcher: Res<Watcher>,
    mut real: ResMut<RealObject>,
    mut buffers: Query<&mut ObservationBuffer>,
) {
    if time.context().is_paused() {
        return;
    }
    let RealObject {
        system,
        stepper,
        x,
        next_record,
    } = real.as_mut();
    let now = time.elapsed_secs_f64();
    if now + 1e-9 >= *next_record
        && let Ok(mut buffer) = buffers.get_mut(watcher.0)
    {
        if let Err(e) = buffer.push(now, vec![x[0] as f32]) {
            warn!("a recorded position was refused: {e}");
        }
        *next_record = now + INTERVAL;
    }
    if let Err(e) = stepper.step(system.as_ref(), x, fixed.timestep().as_secs_f64()) {
        warn!("the real object's physics failed: {e}");
    }
}
