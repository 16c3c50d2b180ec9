//! The `noether` binary: output formats, and clear errors with a non-zero exit for bad input.

use std::process::{Command, Output};

fn noether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noether"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn simulate_prints_csv_with_energy() {
    let out = noether(&[
        "simulate",
        "--system",
        "pendulum",
        "--param",
        "m=1.3",
        "--param",
        "l=0.7",
        "--x0",
        "1.0,0.0",
        "--dt",
        "0.1",
        "--steps",
        "100",
        "--integrator",
        "midpoint",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("t,q,p,energy"));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 101);
    assert_eq!(&rows[0][..3], &[0.0, 1.0, 0.0]);
    let e0 = rows[0][3];
    // H = m g l (1 − cos 1) at rest.
    assert!((e0 - 1.3 * 9.81 * 0.7 * (1.0 - 1f64.cos())).abs() < 1e-12);
    assert!(
        rows.iter().all(|r| ((r[3] - e0) / e0).abs() < 1e-2),
        "implicit midpoint keeps the energy"
    );
}

#[test]
fn simulate_generic_family_prints_entropy() {
    let out = noether(&["simulate", "--system", "dno", "--steps", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("t,q,p,S,energy,entropy\n"));
    assert_eq!(csv.lines().count(), 12);
}

#[test]
fn bad_input_is_a_clear_error_and_a_non_zero_exit() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["simulate", "--system", "pendulm"],
            "unknown system `pendulm`",
        ),
        (
            &["simulate", "--system", "pendulum", "--param", "m=-1"],
            "outside its valid range",
        ),
        (
            &["simulate", "--system", "pendulum", "--param", "m=nan"],
            "NaN",
        ),
        (
            &["simulate", "--system", "pendulum", "--param", "g=9"],
            "has no parameter `g`",
        ),
        (
            &["simulate", "--system", "pendulum", "--x0", "1,2,3"],
            "2-dimensional state",
        ),
        (
            &["simulate", "--system", "pendulum", "--x0", "1,nan"],
            "not finite",
        ),
        (
            &["simulate", "--system", "pendulum", "--dt", "-0.1"],
            "--dt <DT>': -0.1 is outside (0, 1000]",
        ),
        (
            &["simulate", "--system", "dno", "--integrator", "verlet"],
            "separable",
        ),
        (
            &["simulate", "--system", "pendulum", "--integrator", "rk5"],
            "unknown integrator",
        ),
        (
            &[
                "data",
                "--system",
                "pendulum",
                "--split",
                "ood",
                "--out",
                "/tmp/noether-cli-ood",
            ],
            "out-of-distribution",
        ),
    ];
    for (args, expected) in cases {
        let out = noether(args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
}

#[test]
fn data_writes_a_dataset_and_reuses_it() {
    let dir = std::env::temp_dir().join(format!("noether-cli-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.to_str().unwrap();
    let out = noether(&["data", "--system", "dno", "--seed", "0", "--out", dir_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("generated"));
    let data = noether::data::Dataset::load(&dir.join("dno-standard-seed0.safetensors")).unwrap();
    assert_eq!(
        data,
        noether::data::Dataset::generate(&noether::data::DatasetSpec::new(
            noether::systems::Family::Dno,
            0
        ))
    );
    let again = noether(&["data", "--system", "dno", "--seed", "0", "--out", dir_s]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already up to date"));
    std::fs::remove_dir_all(&dir).unwrap();
}
