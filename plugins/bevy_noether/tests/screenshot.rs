//! The window renders: `noether-play` under Xvfb (software Vulkan via lavapipe) saves two
//! screenshots 40 frames apart; both show the scene (not just the clear color) and differ
//! (the bodies moved).

#![cfg(feature = "render")]

use std::{path::Path, process::Command, time::Duration};

use image::RgbaImage;

fn shot(path: &Path) -> RgbaImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgba8()
}

#[test]
fn the_window_draws_the_scene_and_it_moves() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::temp_dir().join(format!("noether-screenshot-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let runtime = out.join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let (a, b) = (out.join("a.png"), out.join("b.png"));
    let mut child = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x800x24"])
        .arg(env!("CARGO_BIN_EXE_noether-play"))
        .arg("scenes/oscillator_zoo.noether.ron")
        .arg("--root")
        .arg(repo.join("assets"))
        .arg("--screenshot")
        .arg(&a)
        .arg("--screenshot")
        .arg(&b)
        .args(["--frames", "40"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .spawn()
        .expect("xvfb-run is needed for this test: apt-get install xvfb xauth (see .ci/run)");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("noether-play did not finish its screenshots within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "noether-play exited with {status}");
    let (first, second) = (shot(&a), shot(&b));
    assert_eq!(first.dimensions(), second.dimensions());
    // The clear color is the most common pixel; the scene must cover a visible share.
    let background = *first.get_pixel(0, 0);
    let drawn = first.pixels().filter(|p| **p != background).count();
    let total = first.pixels().len();
    assert!(
        drawn * 200 > total,
        "only {drawn} of {total} pixels differ from the background"
    );
    let changed = first
        .pixels()
        .zip(second.pixels())
        .filter(|(x, y)| x != y)
        .count();
    assert!(
        changed * 1000 > total,
        "the two frames differ in only {changed} pixels"
    );
    let _ = std::fs::remove_dir_all(&out);
}
