//! Runs of the real `noether` binary as a user would run them: killed mid-run and resumed,
//! repeated with another thread count, given absurd arguments.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use noether::meta::CellResult;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("noether-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `noether reproduce` of three small mass_spring cells into `dir`.
fn reproduce(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_noether"));
    cmd.args([
        "reproduce",
        "--profile",
        "quick",
        "--systems",
        "mass_spring",
        "--methods",
        "shift,svd3,ro",
        "--iterations",
        "40",
        "--extras",
        "false",
    ])
    .arg("--out")
    .arg(dir.join("results"))
    .arg("--data")
    .arg(dir.join("data"));
    cmd
}

fn cells(dir: &Path) -> Vec<PathBuf> {
    // Cell files only: a write in progress is a hidden temporary with the same extension
    // (`noether::io::temp_beside`), and a cell exists once it is renamed into place.
    let mut cells: Vec<PathBuf> = std::fs::read_dir(dir.join("results/quick/cells"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| !noether::io::is_temporary(p))
                .collect()
        })
        .unwrap_or_default();
    cells.sort();
    cells
}

/// The part of a cell that must not depend on how the run went (not its timings).
fn outcome(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let cell: CellResult =
        ron::from_str(&text).unwrap_or_else(|e| panic!("{} is damaged: {e}", path.display()));
    format!("{:?} {:?} {:?}", cell.method, cell.diverged, cell.report)
}

#[test]
fn a_reproduce_killed_mid_run_resumes_to_the_same_results() {
    // Uninterrupted.
    let whole = scratch("reproduce-whole");
    let out = reproduce(&whole).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = cells(&whole);
    assert_eq!(expected.len(), 3);

    // Killed (SIGKILL) once the first cell is on disk, then run again.
    let cut = scratch("reproduce-cut");
    let mut child = reproduce(&cut)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while cells(&cut)
        .iter()
        .filter(|c| c.extension().is_some_and(|e| e == "ron"))
        .count()
        < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no cell was written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = cells(&cut);
    assert!(partial.len() < 3 + 1, "killed before the end: {partial:?}");
    for cell in partial
        .iter()
        .filter(|c| c.extension().is_some_and(|e| e == "ron"))
    {
        outcome(cell); // parses: no half-written cell
    }
    let out = reproduce(&cut).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("done earlier, skipped"), "{stdout}");
    let resumed: Vec<PathBuf> = cells(&cut)
        .into_iter()
        .filter(|c| c.extension().is_some_and(|e| e == "ron"))
        .collect();
    assert_eq!(resumed.len(), 3);
    for (a, b) in expected.iter().zip(&resumed) {
        assert_eq!(a.file_name(), b.file_name());
        assert_eq!(outcome(a), outcome(b), "{}", b.display());
    }
    let _ = std::fs::remove_dir_all(whole);
    let _ = std::fs::remove_dir_all(cut);
}

/// `noether train` of a small model with `threads` rayon threads; the model file's bytes.
fn train(dir: &Path, threads: &str) -> (Vec<u8>, Vec<u8>) {
    let out = dir.join(format!("model-{threads}"));
    let run = Command::new(env!("CARGO_BIN_EXE_noether"))
        .args([
            "train",
            "--system",
            "pendulum",
            "--method",
            "svd3",
            "--profile",
            "quick",
            "--iterations",
            "30",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--data")
        .arg(dir.join("data"))
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    (
        std::fs::read(out.with_extension("model.ron")).unwrap(),
        std::fs::read(out.with_extension("safetensors")).unwrap(),
    )
}

#[test]
fn training_is_bit_identical_across_runs_and_thread_counts() {
    let dir = scratch("determinism");
    let one = train(&dir, "1");
    let two = train(&dir, "2");
    let again = train(&dir, "2");
    // (`assert!` rather than `assert_eq!`: the files are hundreds of kilobytes.)
    assert!(
        two.0 == again.0,
        "the same seed and threads give the same config"
    );
    assert!(
        two.1 == again.1,
        "the same seed and threads give the same weights"
    );
    assert!(
        one.0 == two.0,
        "the config does not depend on the thread count"
    );
    assert!(
        one.1 == two.1,
        "the weights do not depend on the thread count"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn absurd_arguments_are_refused_with_exit_code_1() {
    let cases: [&[&str]; 8] = [
        &[
            "simulate",
            "--system",
            "pendulum",
            "--steps",
            "18446744073709551615",
        ],
        &[
            "simulate",
            "--system",
            "pendulum",
            "--steps",
            "100000000000",
        ],
        &["simulate", "--system", "pendulum", "--dt", "-1"],
        &["simulate", "--system", "pendulum", "--dt", "nan"],
        &["simulate", "--system", "pendulum", "--x0", "1e30,0"],
        &[
            "eval",
            "--model",
            "assets/models/pendulum-svd5",
            "--shots",
            "0",
        ],
        &[
            "train",
            "--system",
            "pendulum",
            "--iterations",
            "0",
            "--out",
            "/tmp/x",
        ],
        &["bench", "integrators", "--seconds", "1e300"],
    ];
    for args in cases {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_noether"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} was not refused at once"
        );
    }
}
