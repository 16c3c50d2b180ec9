//! The core stays engine-agnostic: nothing in `noether`'s dependency tree is Bevy or
//! windowing (DESIGN.md §1). Bevy lives in `plugins/bevy_noether` only.

use std::process::Command;

#[test]
fn the_core_does_not_depend_on_bevy() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "noether",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.lines().count() > 20,
        "an implausibly small tree:\n{tree}"
    );
    let engine: Vec<&str> = tree
        .lines()
        .filter(|l| ["bevy", "winit", "egui"].iter().any(|k| l.starts_with(k)))
        .collect();
    assert!(
        engine.is_empty(),
        "the core pulls in engine crates: {engine:?}"
    );
}
