//! Fuzzing on stable Rust (proptest): every parser of user input — scene files, model files
//! (RON config and safetensors weights), observation CSVs — and the command line get
//! arbitrary bytes and structure-aware mutations of the shipped files. The property is the
//! same everywhere: an error or a valid value, never a panic, never more than
//! [`MEMORY_LIMIT_MB`] of memory. Cases per target are the `CASES_*` constants (thousands
//! for the in-process parsers, hundreds for the command line, which runs the real binary).
//!
//! A case that ever fails is kept under `tests/fuzz/` (the input file itself) and replayed
//! by [`crash_cases_stay_fixed`]; proptest's seeds go to `tests/fuzz.proptest-regressions`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use noether::{
    io::{load_weights, parse_config, parse_observations},
    runtime::{LearnedModel, SceneDescription, plan_population},
};
use proptest::{prelude::*, test_runner::Config};

/// Peak resident memory a fuzz run may reach, MiB.
const MEMORY_LIMIT_MB: u64 = 1024;
const CASES_SCENE: u32 = 20_000;
const CASES_CONFIG: u32 = 10_000;
const CASES_WEIGHTS: u32 = 2_000;
const CASES_CSV: u32 = 20_000;
const CASES_CLI: u32 = 500;

/// `cases` scaled by `NOETHER_FUZZ_SCALE` (default 1): a longer campaign than CI's, e.g.
/// `NOETHER_FUZZ_SCALE=50 cargo test --test fuzz`.
fn cases(cases: u32) -> Config {
    let scale: u32 = std::env::var("NOETHER_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Config::with_cases(cases.saturating_mul(scale.max(1)))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap()
}

/// Peak resident set size of this process, MiB (Linux; 0 elsewhere).
fn peak_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn assert_memory() {
    let peak = peak_memory_mb();
    assert!(
        peak <= MEMORY_LIMIT_MB,
        "peak memory {peak} MiB > {MEMORY_LIMIT_MB} MiB"
    );
}

/// Tokens that matter to the formats: delimiters, extreme and non-finite numbers, names.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "//",
    "/*",
    "\n",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "-1e308",
    "1e-320",
    "0",
    "-0",
    "-1",
    "18446744073709551615",
    "99999999999",
    "200000",
    "1000000",
    "Some(",
    "None",
    "Fit(shots: 0)",
    "List([])",
    "Uniform(2.0, 1.0)",
    "Fixed(NaN)",
    "pendulum",
    "tgc",
    "dno",
    "mass_spring",
    "count",
    "window",
    "hidden",
    "d_latent",
    "rank",
    "é",
    "\u{0}",
    "\u{feff}",
];

/// One structure-aware mutation of `input`.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..200, any::<usize>())
            .prop_map(|(i, n, j)| Mutation::Duplicate(i, n, j)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut v = input.to_vec();
    for m in mutations {
        let len = v.len().max(1);
        match *m {
            Mutation::Flip(i, b) if !v.is_empty() => v[i % len] ^= b,
            Mutation::Insert(i, t) => {
                let at = i % (v.len() + 1);
                v.splice(at..at, TOKENS[t].bytes());
            }
            Mutation::Delete(i, n) if !v.is_empty() => {
                let at = i % len;
                let end = (at + n).min(v.len());
                v.drain(at..end);
            }
            Mutation::Duplicate(i, n, j) if !v.is_empty() => {
                let at = i % len;
                let span: Vec<u8> = v[at..(at + n).min(v.len())].to_vec();
                let to = j % (v.len() + 1);
                v.splice(to..to, span);
            }
            Mutation::Truncate(i) => v.truncate(i % (v.len() + 1)),
            _ => {}
        }
    }
    v
}

/// Arbitrary bytes, or a shipped file with up to eight mutations.
fn input_from(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        4 => (0..seeds.len(), proptest::collection::vec(mutation(), 1..8))
            .prop_map(move |(k, m)| mutate(&seeds[k], &m)),
    ]
}

/// Parses a scene and, when it is valid, plans its populations against the shipped models.
fn scene_case(bytes: &[u8], models: &[(noether::systems::Family, LearnedModel)]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(scene) = SceneDescription::parse(&text, "fuzz.noether.ron") else {
        return;
    };
    for (i, spec) in scene.populations.iter().enumerate() {
        if let Some((_, model)) = models.iter().find(|(f, _)| *f == spec.family) {
            let _ = plan_population(spec, i, model, "fuzz.noether.ron");
        }
    }
}

fn models() -> Vec<(noether::systems::Family, LearnedModel)> {
    [
        "mass_spring-svd5",
        "pendulum-svd5",
        "duffing-svd5",
        "dno-svd3",
        "tgc-svd5",
    ]
    .iter()
    .map(|name| {
        let m = LearnedModel::load(&repo().join("assets/models").join(name)).unwrap();
        (m.family(), m)
    })
    .collect()
}

fn scenes() -> Vec<Vec<u8>> {
    ["adaptation", "oscillator_zoo", "stress", "thermodynamics"]
        .iter()
        .map(|s| shipped(&format!("assets/scenes/{s}.noether.ron")))
        .collect()
}

#[test]
fn scene_files_never_panic() {
    let models = models();
    proptest!(cases(CASES_SCENE), |(bytes in input_from(scenes()))| {
        scene_case(&bytes, &models);
    });
    assert_memory();
}

fn configs() -> Vec<Vec<u8>> {
    ["pendulum-svd5", "dno-svd3", "tgc-svd5"]
        .iter()
        .map(|s| shipped(&format!("assets/models/{s}.model.ron")))
        .collect()
}

#[test]
fn model_configs_never_panic() {
    proptest!(cases(CASES_CONFIG), |(bytes in input_from(configs()))| {
        let _ = parse_config(&String::from_utf8_lossy(&bytes), Path::new("fuzz.model.ron"));
    });
    assert_memory();
}

#[test]
fn weights_files_never_panic() {
    let text = String::from_utf8(shipped("assets/models/pendulum-svd5.model.ron")).unwrap();
    let config = parse_config(&text, Path::new("pendulum-svd5.model.ron")).unwrap();
    let weights = shipped("assets/models/pendulum-svd5.safetensors");
    // Mutations only (arbitrary bytes are rarely a header): flips, cuts and splices land in
    // the header length, the JSON header and the tensor data.
    let strategy =
        (proptest::collection::vec(mutation(), 1..4)).prop_map(move |m| mutate(&weights, &m));
    proptest!(cases(CASES_WEIGHTS), |(bytes in strategy)| {
        let _ = load_weights::<burn::backend::Flex>(
            config.clone(),
            bytes,
            Path::new("fuzz.safetensors"),
            &Default::default(),
        );
    });
    assert_memory();
}

/// A short ground-truth recording, as `noether simulate` prints it.
fn recordings() -> Vec<Vec<u8>> {
    let mut csv = String::from("t,q,p,energy\n");
    for k in 0..40 {
        let t = f64::from(k) * 0.05;
        csv.push_str(&format!("{t},{},{},0.5\n", t.cos(), -t.sin()));
    }
    vec![csv.into_bytes(), b"t,q\n0,1\n0.1,0.9\n0.2,0.7\n".to_vec()]
}

#[test]
fn observation_files_never_panic() {
    proptest!(cases(CASES_CSV), |(bytes in input_from(recordings()))| {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_observations(&text, 2, 1, None);
        let _ = parse_observations(&text, 3, 1, Some(noether::meta::ObservedPart::Positions));
    });
    assert_memory();
}

/// Words of the command line: subcommands, flags, and values that probe every bound. The
/// commands that do long work when their arguments are valid (`train`, `eval` of a real
/// model, `bench`, `data`) appear only with arguments they must refuse, so every case is
/// quick: the work itself is tested elsewhere.
const ARGS: &[&str] = &[
    "simulate",
    "systems",
    "params",
    "eval",
    "adapt",
    "train",
    "nope",
    "--system",
    "--param",
    "--x0",
    "--dt",
    "--steps",
    "--integrator",
    "--model",
    "--shots",
    "--observations",
    "--observed",
    "--method",
    "--rank",
    "--iterations",
    "--lambda-z",
    "pendulum",
    "dno",
    "tgc",
    "spring",
    "m=1",
    "m=nan",
    "l=-1",
    "k=1e308",
    "0",
    "1",
    "7",
    "100",
    "-1",
    "nan",
    "inf",
    "1e308",
    "18446744073709551615",
    "10000001",
    "1,0",
    "1e30,0",
    "1,2,3,4,5",
    "midpoint",
    "discrete-gradient",
    "verlet",
    "svd5",
    "mr0",
    "positions",
    "/nonexistent/model",
    "/dev/null",
    "",
];

#[test]
fn the_command_line_never_panics_or_hangs() {
    // Relative outputs land in a scratch directory, never in the repository.
    let out = std::env::temp_dir().join(format!("noether-fuzz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let strategy = proptest::collection::vec(0..ARGS.len(), 1..7);
    proptest!(cases(CASES_CLI), |(words in strategy)| {
        let args: Vec<&str> = words.iter().map(|&w| ARGS[w]).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_noether"))
            .args(&args)
            .current_dir(&out)
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        use std::io::Read as _;
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        prop_assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let status = status.ok_or_else(|| TestCaseError::fail(format!("{args:?} ran past 20 s")))?;
        prop_assert!(
            matches!(status.code(), Some(0..=2)),
            "{args:?} exited with {status}: {stderr}"
        );
    });
    let _ = std::fs::remove_dir_all(out);
}

/// Every input that ever broke a parser, replayed (`tests/fuzz/<target>-<name>`).
#[test]
fn crash_cases_stay_fixed() {
    let dir = repo().join("tests/fuzz");
    let models = models();
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match name.split('-').next() {
            Some("scene") => scene_case(&bytes, &models),
            Some("config") => {
                let _ = parse_config(&String::from_utf8_lossy(&bytes), &path);
            }
            Some("csv") => {
                let _ = parse_observations(&String::from_utf8_lossy(&bytes), 2, 1, None);
            }
            _ => panic!("{name}: unknown fuzz target (scene-, config-, csv-)"),
        }
        replayed += 1;
    }
    assert!(replayed > 0, "no crash cases in {}", dir.display());
}
