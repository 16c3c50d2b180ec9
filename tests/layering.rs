//! The core stays engine-agnostic: nothing in `noether`'s dependency tree is Bevy or
//! windowing (docs/protocol.md §1), and without its `cli` feature it pulls in no
//! command-line crates. Bevy lives in `plugins/bevy_noether` only.

use std::process::Command;

/// The crate names of `cargo tree -p noether` with `args` (one per line, no prefix).
fn cargo_tree(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "noether", "--prefix", "none"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        tree.lines().count() > 20,
        "an implausibly small tree:\n{tree}"
    );
    tree
}

/// The lines of `tree` that start with one of `names`.
fn matching<'a>(tree: &'a str, names: &[&str]) -> Vec<&'a str> {
    tree.lines()
        .filter(|l| names.iter().any(|k| l.starts_with(k)))
        .collect()
}

#[test]
fn the_core_does_not_depend_on_bevy() {
    let tree = cargo_tree(&["-e", "normal,build"]);
    let engine = matching(&tree, &["bevy", "winit", "egui"]);
    assert!(
        engine.is_empty(),
        "the core pulls in engine crates: {engine:?}"
    );
}

#[test]
fn the_library_builds_without_the_command_line_crates() {
    let tree = cargo_tree(&["--no-default-features", "-e", "normal"]);
    let cli = matching(&tree, &["clap ", "indicatif "]);
    assert!(
        cli.is_empty(),
        "without the `cli` feature the core still pulls in {cli:?}"
    );
    // With it (the default), they are there: the check above can fail.
    let full = cargo_tree(&["-e", "normal"]);
    assert_eq!(matching(&full, &["clap ", "indicatif "]).len(), 2);
}
