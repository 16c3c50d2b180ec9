//! The plugin is a thin map from ECS data to the core runtime: it steps, measures, builds
//! populations and adapts only through `noether::runtime`, and re-implements none of it.
//! (The core's own check, that it has no Bevy, is in the root crate's `tests/layering.rs`.)

use std::{fs, path::Path};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.display().to_string(),
                fs::read_to_string(&path).unwrap(),
            ));
        }
    }
}

#[test]
fn the_plugin_reimplements_no_stepping_or_runtime_logic() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 10, "found only {} source files", files.len());
    // The integrators, the fits and the population sampling: the runtime calls them, the
    // plugin calls the runtime.
    let forbidden = [
        "rk4_step",
        "euler_step",
        "verlet_step",
        "yoshida4_step",
        "symplectic_euler_step",
        "step_fixed_point",
        "ImplicitMidpoint",
        "DiscreteGradient::",
        "adapt_latents",
        "fit_step",
        "sample_initial_state",
        "Stepper::new",
        "stream_rng",
        "fn review",
        "fn gaussian",
    ];
    let mut found = Vec::new();
    for (path, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                // As a whole name: `GpuStepper::new` is not `Stepper::new`.
                let whole = code.match_indices(f).any(|(i, _)| {
                    !code[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if whole {
                    found.push(format!("{path}:{}: `{f}`", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the plugin re-implements runtime logic:\n{}",
        found.join("\n")
    );
    // And it does call the runtime for each of these.
    let all: String = files.iter().map(|(_, t)| t.as_str()).collect();
    for used in [
        "advance_isolating(",
        "FusedStepper::new(",
        "measure(&model.cpu",
        "resolve(",
        "plan_population",
        "fit_population",
        "run_job",
        "TruthSimulator::new",
    ] {
        assert!(all.contains(used), "the plugin does not use `{used}`");
    }
}
