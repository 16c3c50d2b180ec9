//! A server: a population scene stepped without a window, reporting once a second.
//!
//! A multiplayer server or a batch job runs the same plugins on `MinimalPlugins`: no
//! window, no renderer, the fixed timestep driven one tick per `App::update` (here paced
//! to wall-clock time, as a server would). Every simulated second it prints the bodies
//! stepped, the step time and the largest energy drift from Bevy's diagnostics store.
//!
//! ```text
//! cargo run -p bevy_noether --example headless_server                 # 10 s of the zoo
//! cargo run -p bevy_noether --example headless_server -- scenes/stress.noether.ron 5
//! ```
//!
//! Arguments: the scene (asset path under the workspace's `assets/`) and the seconds to
//! run (default 10).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use bevy::diagnostic::DiagnosticsStore;
use bevy_noether::{
    diagnostics::NoetherDiagnosticsPlugin,
    headless::{headless_app, load_scene},
};

const HZ: f64 = 60.0;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let scene = args
        .next()
        .unwrap_or_else(|| "scenes/oscillator_zoo.noether.ron".into());
    let seconds: u32 = match args.next().map(|s| s.parse()) {
        None => 10,
        Some(Ok(s)) if s <= 3600 => s,
        Some(_) => {
            eprintln!("error: the seconds must be a whole number up to 3600");
            return ExitCode::FAILURE;
        }
    };
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");
    let mut app = headless_app(assets, HZ);
    if let Err(e) = load_scene(&mut app, &scene, Duration::from_secs(120)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    for second in 1..=seconds {
        for tick in 0..HZ as u32 {
            app.update();
            let due = started
                + Duration::from_secs_f64((f64::from(second - 1) * HZ + f64::from(tick + 1)) / HZ);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let store = app.world().resource::<DiagnosticsStore>();
        let value = |path| store.get(path).and_then(|d| d.value()).unwrap_or(f64::NAN);
        println!(
            "t = {second:>4} s | {:>6.0} bodies | step {:>6.2} ms | max energy drift {:.2e}",
            value(&NoetherDiagnosticsPlugin::BODIES),
            value(&NoetherDiagnosticsPlugin::STEP_MS),
            value(&NoetherDiagnosticsPlugin::MAX_ENERGY_DRIFT),
        );
    }
    ExitCode::SUCCESS
}
