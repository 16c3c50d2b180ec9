//! An energy-conservation regression test of your own scene.
//!
//! Copy this into your game's `tests/` as a `#[test]` (the body of `main` is the test):
//! it runs the scene headless for a fixed number of steps, checks the drift and entropy
//! bounds of every population, renders a PNG report and compares it with a committed golden
//! image. The first run has no golden: it fails and writes `NAME.new.png` beside where the
//! golden goes; look at it, and accept it with `NOETHER_ACCEPT_GOLDEN=1`.
//!
//! ```text
//! cargo run -p bevy_noether --example scene_regression                 # the zoo vs its golden
//! cargo run -p bevy_noether --example scene_regression -- scenes/my_scene.noether.ron /tmp/my_scene.png
//! NOETHER_ACCEPT_GOLDEN=1 cargo run -p bevy_noether --example scene_regression -- …   # accept
//! ```
//!
//! Arguments: the scene (asset path under the workspace's `assets/`) and the golden image
//! (default: the plugin's own golden of the oscillator zoo).

use std::process::ExitCode;

use bevy_noether::regression::{Bounds, RegressionRun};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let scene = args
        .next()
        .unwrap_or_else(|| "scenes/oscillator_zoo.noether.ron".into());
    let golden = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/oscillator_zoo.png"
        )
        .into()
    });
    let assets = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets");
    let recording = match RegressionRun::scene(&scene).steps(192).run(assets) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in &recording.populations {
        println!(
            "{}: {} bodies, worst relative energy drift {:.2e}",
            p.name,
            p.bodies,
            p.worst_drift()
        );
    }
    // The bound also fixes the report's drift axis, so it is part of the golden.
    match recording.check(&Bounds::drift(5e-2), &golden) {
        Ok(()) => {
            println!("{scene}: within bounds and matching {golden}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
