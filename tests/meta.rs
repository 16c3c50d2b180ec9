//! Meta-learning behaviours at tiny budgets: training lowers the loss, test-time
//! adaptation beats the unadapted mean latent, modulation beats Scratch on mass_spring at 10
//! shots, a diverging baseline is reported as diverged, training is deterministic, and a
//! second `reproduce` skips the cells the first finished (a run killed mid-way is
//! `tests/reliability.rs`).

use std::process::Command;

use burn::backend::Flex;
use noether::{
    data::{Dataset, DatasetSpec},
    meta::{
        AdaptConfig, AdaptSolver, Baseline, BaselineConfig, LatentStart, MetaConfig, TaskSet,
        adapt_latents, baseline_validation_error, evaluate_baseline, evaluate_modulated,
        meta_train, query_error, train_baseline, tune_baseline,
    },
    nn::{ModelConfig, Modulation, cpu::ModelParams},
    systems::Family,
};

fn small(family: Family, modulation: Modulation) -> ModelConfig {
    ModelConfig::new(family, modulation).with_hidden(vec![48, 48, 48])
}

fn quick_cfg(iterations: usize) -> MetaConfig {
    MetaConfig {
        iterations,
        validate_every: iterations,
        ..MetaConfig::default()
    }
}

#[test]
fn training_lowers_the_loss_and_is_deterministic() {
    let data = Dataset::generate(&DatasetSpec::new(Family::MassSpring, 0));
    let tasks = TaskSet::new(&data);
    let run = || {
        let mut losses = Vec::new();
        let out = meta_train::<Flex>(
            &small(Family::MassSpring, Modulation::Svd { rank: 3 }),
            &tasks,
            &quick_cfg(300),
            &Default::default(),
            &mut |_, l| losses.push(l),
        );
        (losses, ModelParams::from_model(&out.model))
    };
    let (losses, params) = run();
    let first: f64 = losses[..20].iter().sum::<f64>() / 20.0;
    let last: f64 = losses[losses.len() - 20..].iter().sum::<f64>() / 20.0;
    assert!(last < 0.3 * first, "loss {first:e} → {last:e}");
    let (again, params_again) = run();
    assert_eq!(losses, again, "same seed, same losses");
    assert_eq!(params, params_again, "same seed, same weights");
}

#[test]
fn adaptation_beats_the_unadapted_mean_latent() {
    let data = Dataset::generate(&DatasetSpec::new(Family::Pendulum, 0));
    let tasks = TaskSet::new(&data);
    let out = meta_train::<Flex>(
        &small(Family::Pendulum, Modulation::Svd { rank: 5 }),
        &tasks,
        &quick_cfg(600),
        &Default::default(),
        &mut |_, _| {},
    );
    let params = ModelParams::from_model(&out.model);
    let config = &out.model.config;
    let mean: Vec<f32> = config.mean_latent().iter().map(|v| *v as f32).collect();
    let test = tasks.meta_test();
    let shots: Vec<_> = test.iter().map(|&i| tasks.shots(i, 10)).collect();
    let adapted = adapt_latents(&params, &shots, &mean, &AdaptConfig::for_model(config, 10));
    assert!(
        adapted.final_loss < adapted.initial_loss,
        "shot loss {} → {}",
        adapted.initial_loss,
        adapted.final_loss
    );
    let unadapted = vec![mean.clone(); test.len()];
    let (before, after) = (
        query_error(&params, config, &tasks, &test, &unadapted),
        query_error(&params, config, &tasks, &test, &adapted.latents),
    );
    assert!(
        after < 0.8 * before,
        "query error {before:e} with the mean latent, {after:e} adapted"
    );
}

/// Gauss–Newton test-time adaptation reaches the shot loss's floor (what 1000 Adam steps
/// reach) where the protocol's 100 constant-rate Adam steps stop short, on the shipped
/// mass-spring model.
#[test]
fn gauss_newton_adaptation_reaches_the_floor_adam_approaches() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = noether::runtime::LearnedModel::load(&root.join("assets/models/mass_spring-svd5"))
        .expect("shipped model");
    let config = &model.config;
    let data = Dataset::generate(&DatasetSpec::new(config.family, config.seed));
    let tasks = TaskSet::new(&data);
    let test = tasks.meta_test();
    let shots: Vec<_> = test.iter().map(|&i| tasks.shots(i, 10)).collect();
    let mean = model.mean_latent();
    let with = |solver, steps| {
        let cfg = AdaptConfig {
            solver,
            steps,
            ..AdaptConfig::for_model(config, 10)
        };
        adapt_latents(&model.params, &shots, &mean, &cfg)
    };
    let (adam, long, gn) = (
        with(AdaptSolver::Adam, 100),
        with(AdaptSolver::Adam, 1000),
        with(AdaptSolver::GaussNewton, 100),
    );
    assert!(
        gn.final_loss <= 1.01 * long.final_loss && gn.final_loss < 0.95 * adam.final_loss,
        "shot loss: Gauss–Newton {:.4e}, Adam ×100 {:.4e}, Adam ×1000 {:.4e}",
        gn.final_loss,
        adam.final_loss,
        long.final_loss
    );
    let error = |latents: &[Vec<f32>]| query_error(&model.params, config, &tasks, &test, latents);
    assert!(
        error(&gn.latents) < error(&adam.latents),
        "query error: Gauss–Newton {:.4e}, Adam ×100 {:.4e}",
        error(&gn.latents),
        error(&adam.latents)
    );
}

#[test]
fn modulation_beats_scratch_on_mass_spring_at_ten_shots() {
    let data = Dataset::generate(&DatasetSpec::new(Family::MassSpring, 0));
    let tasks = TaskSet::new(&data);
    let dev = Default::default();
    let config = ModelConfig::new(Family::MassSpring, Modulation::Svd { rank: 5 });
    let out = meta_train::<Flex>(&config, &tasks, &quick_cfg(1500), &dev, &mut |_, _| {});
    let svd = evaluate_modulated(
        &ModelParams::from_model(&out.model),
        &out.model.config,
        &tasks,
        10,
        LatentStart::Mean,
    );
    let cfg = BaselineConfig {
        scratch_steps: 300,
        ..BaselineConfig::default()
    };
    let scratch = train_baseline::<Flex>(
        &config,
        Baseline::Scratch,
        &tasks,
        &cfg,
        &dev,
        &mut |_, _| {},
    );
    let scratch = evaluate_baseline::<Flex>(&scratch, Baseline::Scratch, &cfg, &tasks, 10, &dev);
    let (a, b) = (svd.traj_error().mean, scratch.traj_error().mean);
    assert!(a < 0.5 * b, "SVD(5) ε_traj {a:e} vs Scratch {b:e}");
}

#[test]
fn a_diverging_baseline_is_reported_as_diverged() {
    let data = Dataset::generate(&DatasetSpec::new(Family::Pendulum, 0));
    let tasks = TaskSet::new(&data);
    // An inner step of 1e4 sends the adapted weights, and so the query loss, to infinity.
    let cfg = BaselineConfig {
        iterations: 50,
        inner_lr: 1e4,
        ..BaselineConfig::default()
    };
    let out = train_baseline::<Flex>(
        &small(Family::Pendulum, Modulation::None),
        Baseline::Maml,
        &tasks,
        &cfg,
        &Default::default(),
        &mut |_, _| {},
    );
    let reason = out.diverged.expect("diverged");
    assert!(reason.contains("maml"), "{reason}");
    assert!(
        out.params.all_finite(),
        "the kept weights are the last finite ones"
    );
}

/// The baselines' fair budget: the inner loop's learning rate and steps chosen by the lowest
/// pilot validation error, and the returned weights the best validated ones.
#[test]
fn baselines_are_tuned_and_checkpointed_on_validation() {
    let data = Dataset::generate(&DatasetSpec::new(Family::MassSpring, 0));
    let tasks = TaskSet::new(&data);
    let config = small(Family::MassSpring, Modulation::None);
    let dev = Default::default();
    let cfg = BaselineConfig {
        iterations: 60,
        validate_every: 20,
        tune: vec![(1e-3, 5), (1e-1, 5), (1e4, 5)],
        pilot_iterations: 20,
        ..BaselineConfig::default()
    };
    let tuning = tune_baseline::<Flex>(&config, Baseline::Maml, &tasks, &cfg, &dev).unwrap();
    assert_eq!(tuning.tried.len(), 3);
    let best = tuning
        .tried
        .iter()
        .map(|t| t.2)
        .fold(f64::INFINITY, f64::min);
    let chosen = tuning
        .tried
        .iter()
        .find(|t| (t.0, t.1) == tuning.chosen)
        .unwrap();
    assert_eq!(chosen.2, best, "{tuning:?}");
    assert_ne!(
        tuning.chosen.0, 1e4,
        "the diverging candidate is not chosen: {tuning:?}"
    );
    assert!(tune_baseline::<Flex>(&config, Baseline::Scratch, &tasks, &cfg, &dev).is_none());
    let tuned = BaselineConfig {
        inner_lr: tuning.chosen.0,
        inner_steps: tuning.chosen.1,
        ..cfg
    };
    let out = train_baseline::<Flex>(
        &config,
        Baseline::Maml,
        &tasks,
        &tuned,
        &dev,
        &mut |_, _| {},
    );
    let record = out.config.training.clone().unwrap();
    assert!([20, 40, 60].contains(&record.best_iteration), "{record:?}");
    let again = baseline_validation_error(&out.params, &out.config, Baseline::Maml, &tasks, &tuned);
    assert_eq!(
        again, record.best_validation,
        "the kept weights are the best validated ones"
    );
}

/// `noether reproduce --profile quick ARGS` into `dir` (results and dataset cache); its
/// stdout, after asserting that it succeeded.
fn reproduce(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_noether"))
        .args(["reproduce", "--profile", "quick"])
        .args(args)
        .arg("--out")
        .arg(dir.join("results"))
        .arg("--data")
        .arg(dir.join("data"))
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn reproduce_resumes_without_redoing_finished_cells() {
    let dir = std::env::temp_dir().join(format!("noether-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        reproduce(
            &dir,
            &[
                "--systems",
                "mass_spring",
                "--methods",
                "svd3,maml",
                "--iterations",
                "20",
                "--extras",
                "false",
            ],
        )
    };
    let first = run();
    assert!(first.contains("mass_spring-svd3-seed0: ε_traj"), "{first}");
    let cell = dir.join("results/quick/cells/mass_spring-svd3-seed0.ron");
    let written = std::fs::read_to_string(&cell).unwrap();
    assert!(
        dir.join("results/quick/models/mass_spring-maml-seed0.safetensors")
            .exists()
    );
    let second = run();
    assert!(
        second.contains("mass_spring-svd3-seed0: done earlier, skipped"),
        "{second}"
    );
    assert!(
        second.contains("mass_spring-maml-seed0: done earlier, skipped"),
        "{second}"
    );
    assert_eq!(
        std::fs::read_to_string(&cell).unwrap(),
        written,
        "a finished cell is not rewritten"
    );
    let report = std::fs::read_to_string(dir.join("results/quick/RESULTS.md")).unwrap();
    assert!(
        report.contains("| SVD(3) |") && report.contains("not yet run"),
        "{report}"
    );
    // A cell of an older protocol (written before cells recorded one) is run again, and
    // listed apart in the report until then.
    let old = written.replace(&format!("    protocol: {},\n", noether::meta::PROTOCOL), "");
    assert_ne!(old, written, "the cell records its protocol");
    std::fs::write(&cell, &old).unwrap();
    let report_only = Command::new(env!("CARGO_BIN_EXE_noether"))
        .args(["reproduce", "--systems", "mass_spring", "--report-only"])
        .arg("--out")
        .arg(dir.join("results"))
        .arg("--data")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(report_only.status.success());
    let report = std::fs::read_to_string(dir.join("results/quick/RESULTS.md")).unwrap();
    assert!(
        report.contains("## Superseded") && report.contains("| mass_spring | SVD(3) | 0 | v1 |"),
        "{report}"
    );
    let third = run();
    assert!(
        third.contains("mass_spring-svd3-seed0: done earlier under protocol v1, running again"),
        "{third}"
    );
    assert!(
        std::fs::read_to_string(&cell)
            .unwrap()
            .contains("protocol: 2")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_latent_dimension_ablation_trains_pendulum_svd5_at_three_latent_sizes() {
    let dir = std::env::temp_dir().join(format!("noether-dz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The other extras are there already (empty), so only the ablation runs.
    let extras = dir.join("results/quick/extras");
    std::fs::create_dir_all(&extras).unwrap();
    for name in [
        "ood-mass_spring",
        "locality-mr5",
        "locality-svd5",
        "joint-svd5",
    ] {
        std::fs::write(
            extras.join(format!("{name}.ron")),
            format!("(name: \"{name}\", rows: [])"),
        )
        .unwrap();
    }
    let args = [
        "--systems",
        "pendulum",
        "--methods",
        "svd5",
        "--iterations",
        "10",
        "--extras",
        "true",
    ];
    let first = reproduce(&dir, &args);
    assert!(
        first.contains("dz20.ron (d_z = 20): ε_traj"),
        "each training of a sweep is reported as it lands: {first}"
    );
    #[derive(serde::Deserialize)]
    struct Extra {
        name: String,
        rows: Vec<(String, f64, f64, f64)>,
    }
    let read = || {
        let text = std::fs::read_to_string(extras.join("dz-svd5.ron")).unwrap();
        ron::from_str::<Extra>(&text).unwrap_or_else(|e| panic!("dz-svd5.ron parses ({e}): {text}"))
    };
    let Extra { name, rows } = read();
    assert_eq!(name, "dz-svd5");
    let labels: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(labels, ["d_z = 5", "d_z = 10", "d_z = 20"]);
    for (label, traj, _, field) in &rows {
        assert!(
            traj.is_finite() && field.is_finite(),
            "{label}: {traj} {field}"
        );
    }
    // An interrupted sweep resumes from its finished rows: with the result gone and one
    // row's file marked, the next run assembles the result from the row files, training
    // nothing again.
    let row = extras.join("dz-svd5.rows-10it/dz20.ron");
    let (label, _, std, field): (String, f64, f64, f64) =
        ron::from_str(&std::fs::read_to_string(&row).unwrap()).unwrap();
    std::fs::write(&row, ron::to_string(&(label, 123.0, std, field)).unwrap()).unwrap();
    std::fs::remove_file(extras.join("dz-svd5.ron")).unwrap();
    let again = reproduce(&dir, &args);
    assert!(
        again.contains("dz20.ron: done earlier, read back"),
        "{again}"
    );
    let resumed = read().rows;
    assert_eq!(
        resumed[2].1, 123.0,
        "the marked row was read back, not trained again"
    );
    assert_eq!(resumed[..2], rows[..2], "the other rows too");
    let report = std::fs::read_to_string(dir.join("results/quick/RESULTS.md")).unwrap();
    assert!(
        report.contains("### dz-svd5"),
        "the report shows the ablation"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
