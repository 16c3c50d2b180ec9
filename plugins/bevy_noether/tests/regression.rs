//! Visual regression tests of energy conservation for every shipped scene, and proof that
//! the harness catches a broken integrator. Regenerate the goldens after an intended
//! change with `NOETHER_ACCEPT_GOLDEN=1 cargo test -p bevy_noether --test regression`.

mod common;

use std::path::PathBuf;

use bevy_noether::regression::{Bounds, Recording, RegressionRun};
use common::assets;
use noether::integrate::Integrator;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.png"))
}

fn record(scene: &str, steps: usize) -> Recording {
    let run = RegressionRun::scene(format!("scenes/{scene}.noether.ron")).steps(steps);
    let recording = run.run(assets()).expect("the shipped scene runs");
    for p in &recording.populations {
        eprintln!(
            "{scene}: `{}` ({} bodies): max drift {:.3e}, min dS per step {:.3e}",
            p.name,
            p.bodies,
            p.worst_drift(),
            p.worst_entropy_step()
        );
    }
    recording
}

fn check(scene: &str, steps: usize, bounds: Bounds) {
    record(scene, steps)
        .check(&bounds, golden(scene))
        .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn oscillator_zoo_conserves_energy() {
    check("oscillator_zoo", 192, Bounds::drift(5e-2));
}

#[test]
fn thermodynamics_conserves_energy_and_never_loses_entropy() {
    check("thermodynamics", 192, Bounds::drift(1e-4));
}

#[test]
fn adaptation_demo_conserves_energy_between_updates() {
    check("adaptation", 192, Bounds::drift(5e-2));
}

#[test]
fn stress_scene_conserves_energy() {
    check("stress", 48, Bounds::drift(5e-2));
}

#[test]
fn a_broken_integrator_fails_and_writes_the_diff_image() {
    // The zoo's golden was made with implicit midpoint; explicit Euler must not pass.
    let dir = std::env::temp_dir().join(format!("noether-regression-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("oscillator_zoo.png");
    std::fs::copy(golden("oscillator_zoo"), &copy).unwrap();
    let recording = RegressionRun::scene("scenes/oscillator_zoo.noether.ron")
        .steps(192)
        .integrator(Integrator::Euler)
        .run(assets())
        .unwrap();
    let failure = recording
        .check(&Bounds::drift(5e-2), &copy)
        .expect_err("explicit Euler drifts");
    eprintln!("{failure}");
    assert!(!failure.bounds.is_empty(), "the drift bound is broken");
    let image = failure.image.clone().expect("the picture differs");
    assert!(image.score < 0.995, "score {}", image.score);
    assert!(image.new.exists());
    assert!(image.diff.as_ref().is_some_and(|d| d.exists()));
    assert!(failure.to_string().contains("diff image"));
    let _ = std::fs::remove_dir_all(dir);
}
