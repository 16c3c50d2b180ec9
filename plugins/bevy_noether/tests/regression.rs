//! Visual regression tests of energy conservation for every shipped scene, and proof that
//! the bounds have teeth: explicit Euler fails them at the scenes' step, RK4 fails them at a
//! coarse step over a long horizon (where its secular energy loss shows; at 1/64 s over a
//! few seconds RK4's error is below implicit midpoint's bounded oscillation, see
//! BENCHMARKS.md), and the adaptation demo keeps its energy between latent changes with
//! adaptation running. The drift is the runtime's offset-free one
//! (`noether::runtime::EnergyRecord::drift`). Regenerate the goldens after an intended
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

fn report(recording: &Recording) {
    for p in &recording.populations {
        eprintln!(
            "{}: `{}` ({} bodies): max drift {:.3e}, median drift {:.3e}, min dS per step {:.3e}",
            recording.scene,
            p.name,
            p.bodies,
            p.worst_drift(),
            p.worst_median_drift(),
            p.worst_entropy_step()
        );
    }
}

fn record(scene: &str, steps: usize) -> Recording {
    let run = RegressionRun::scene(format!("scenes/{scene}.noether.ron")).steps(steps);
    let recording = run.run(assets()).expect("the shipped scene runs");
    report(&recording);
    recording
}

fn check(scene: &str, steps: usize, bounds: Bounds) {
    eprintln!("{scene}: bounds {bounds:?}");
    record(scene, steps)
        .check(&bounds, golden(scene))
        .unwrap_or_else(|failure| panic!("{failure}"));
}

/// The zoo's bounds: implicit midpoint keeps every body within 1.5e-3 (BENCHMARKS.md).
fn zoo_bounds() -> Bounds {
    Bounds::drift(5e-3)
}

#[test]
fn oscillator_zoo_conserves_energy() {
    check("oscillator_zoo", 192, zoo_bounds());
}

#[test]
fn thermodynamics_conserves_energy_and_never_loses_entropy() {
    // The discrete gradient conserves E to its solver tolerance (about 1e-5 absolute over
    // 3 s): up to half a percent of the mechanical energy of the slowest oscillators.
    check("thermodynamics", 192, Bounds::drift(2e-2).median(1e-3));
}

#[test]
fn adaptation_demo_conserves_energy_with_adaptation_off() {
    check("adaptation", 192, Bounds::drift(5e-4));
}

#[test]
fn stress_scene_conserves_energy() {
    check("stress", 48, Bounds::drift(2e-3));
}

#[test]
fn adaptation_demo_conserves_energy_between_latent_changes_with_adaptation_on() {
    let recording = RegressionRun::scene("scenes/adaptation.noether.ron")
        .steps(640)
        .adaptation(true)
        .run(assets())
        .expect("the shipped scene runs");
    report(&recording);
    eprintln!("{} latent updates", recording.adaptation_updates);
    assert!(
        recording.adaptation_updates >= 20,
        "adaptation barely ran: {} updates",
        recording.adaptation_updates
    );
    let violations = recording.violations(&Bounds::drift(5e-3));
    assert!(violations.is_empty(), "{violations:#?}");
}

/// The zoo at a coarse step (h = 0.25 s, 8 simulated minutes): the bounds a symplectic
/// integrator meets there.
fn coarse(method: Integrator) -> Vec<String> {
    let recording = RegressionRun::scene("scenes/oscillator_zoo.noether.ron")
        .steps(1920)
        .step_size(0.25)
        .integrator(method)
        .run(assets())
        .expect("the shipped scene runs");
    report(&recording);
    recording.violations(&Bounds::drift(0.5).median(1e-2))
}

#[test]
fn at_a_coarse_step_midpoint_passes_and_rk4_and_euler_fail() {
    assert_eq!(coarse(Integrator::Midpoint), Vec::<String>::new());
    let rk4 = coarse(Integrator::Rk4);
    assert!(
        rk4.iter().any(|v| v.contains("secular")),
        "RK4's secular energy loss is caught: {rk4:#?}"
    );
    assert!(
        !coarse(Integrator::Euler).is_empty(),
        "explicit Euler is caught"
    );
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
        .check(&zoo_bounds(), &copy)
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
