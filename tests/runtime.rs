//! The engine-free runtime: a scene's populations built and stepped in a plain loop, bad
//! rows isolated from their batch, populations deterministic in their seed.

use std::path::PathBuf;

use noether::{
    integrate::Integrator,
    nn::cpu::CpuFlow,
    runtime::{
        BodyBatch, LearnedModel, SceneDescription, StepHistory, StepSettings, advance,
        advance_isolating, advance_with_history, build_population, plan_population,
    },
};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn pendulum() -> LearnedModel {
    LearnedModel::load(&assets().join("models/pendulum-svd5.model.ron")).expect("shipped model")
}

#[test]
fn a_bad_row_is_frozen_and_the_rest_of_the_batch_steps_as_without_it() {
    let model = pendulum();
    let z = model.mean_latent();
    let rows: Vec<Vec<f32>> = vec![
        vec![1.0, 0.0],
        vec![f32::NAN, 0.0],
        vec![0.5, 0.3],
        vec![f32::INFINITY, 0.0],
        vec![-0.7, 0.1],
    ];
    let x: Vec<f32> = rows.concat();
    let zs: Vec<f32> = z.repeat(rows.len());
    let settings = StepSettings::default();
    for method in [Integrator::Midpoint, Integrator::Rk4] {
        let mut history = StepHistory::default();
        let (x1, report) = advance_isolating(
            &model.cpu,
            method,
            &x,
            &zs,
            1.0 / 64.0,
            &settings,
            &mut history,
        )
        .unwrap();
        assert_eq!(
            report.frozen,
            vec![1, 3],
            "{method}: the NaN and the infinite rows"
        );
        // A frozen row keeps its state, bit for bit (NaN included).
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x1[2..4]), bits(&x[2..4]));
        assert_eq!(bits(&x1[6..8]), bits(&x[6..8]));
        // The good rows step exactly as a batch of only them.
        let good: Vec<f32> = [0usize, 2, 4]
            .iter()
            .flat_map(|&k| rows[k].clone())
            .collect();
        let flow = CpuFlow {
            model: &model.cpu,
            latents: &z.repeat(3),
        };
        let (alone, _) = advance(&flow, method, good, 1.0 / 64.0, &settings).unwrap();
        for (g, k) in [0usize, 2, 4].into_iter().enumerate() {
            assert_eq!(
                &x1[k * 2..k * 2 + 2],
                &alone[g * 2..g * 2 + 2],
                "{method} row {k}"
            );
        }
    }
    // Without isolation, the NaN row stops the whole batch's implicit solve: the failure
    // isolation exists for.
    let flow = CpuFlow {
        model: &model.cpu,
        latents: &zs,
    };
    assert!(advance(&flow, Integrator::Midpoint, x, 1.0 / 64.0, &settings).is_err());
}

/// Random rows in [−1, 1]ⁿ with latents around the model's mean.
fn population(model: &LearnedModel, rows: usize) -> (Vec<f32>, Vec<f32>) {
    use rand::RngExt;
    let mut rng = noether::data::stream_rng("tests/runtime", rows as u64, 0);
    let x = (0..rows * model.dim())
        .map(|_| 2.0 * rng.random::<f32>() - 1.0)
        .collect();
    let mean = model.mean_latent();
    let z = (0..rows * mean.len())
        .map(|i| mean[i % mean.len()] + 0.1 * (2.0 * rng.random::<f32>() - 1.0))
        .collect();
    (x, z)
}

#[test]
fn midpoint_rows_converge_on_their_own_and_start_from_their_history() {
    let model = pendulum();
    let (mut x, z) = population(&model, 64);
    let flow = CpuFlow {
        model: &model.cpu,
        latents: &z,
    };
    let settings = StepSettings::default();
    let dt = 1.0 / 64.0;
    // The same trajectory as the whole-batch iteration from the explicit half step (the
    // default of `BatchFlow::midpoint`), to the solve's tolerance.
    let mut reference = x.clone();
    let (mut cold, mut warm, steps) = (0, 0, 100);
    let mut history = StepHistory::default();
    for step in 0..steps {
        let (x1, report) = advance(&flow, Integrator::Midpoint, x.clone(), dt, &settings).unwrap();
        cold += report.row_evaluations;
        let (x1w, report) = advance_with_history(
            &flow,
            Integrator::Midpoint,
            x.clone(),
            dt,
            &settings,
            &mut history,
        )
        .unwrap();
        warm += report.row_evaluations;
        assert_eq!(report.retries, 0);
        for (a, b) in x1.iter().zip(&x1w) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "step {step}: {a} vs {b}"
            );
        }
        reference = noether::integrate::ImplicitMidpoint::default()
            .with_tolerance(1e-6)
            .step_fixed_point(&flow, &reference, dt)
            .unwrap()
            .0;
        x = x1w;
    }
    // `worst`: a NaN must not read as a small difference.
    let drift = noether::metrics::worst(
        x.iter()
            .zip(&reference)
            .map(|(a, b)| f64::from((a - b).abs())),
    );
    assert!(
        drift < 1e-4,
        "100 steps apart from the batch-wide solve by {drift}"
    );
    let per_row = |evals: usize| evals as f64 / (64 * steps) as f64;
    // From the explicit half step every row pays one evaluation for the predictor; the
    // extrapolated slopes need none and start closer.
    assert!(
        per_row(warm) <= per_row(cold) - 1.0,
        "evaluations per body-step: {:.2} with history, {:.2} without",
        per_row(warm),
        per_row(cold)
    );
}

#[test]
fn a_slow_row_does_not_make_the_others_iterate() {
    // The two-gas container's learned field is steep around q = 2 (by probing: 7
    // iterations at h = 1/32 where rows near it take 3 to 4).
    let model = LearnedModel::load(&assets().join("models/tgc-svd5.model.ron")).unwrap();
    let x: Vec<f32> = (0..32)
        .flat_map(|k| {
            [
                if k == 0 { 2.0 } else { 0.5 + k as f32 / 64.0 },
                0.3,
                0.3,
                0.3,
            ]
        })
        .collect();
    let z = model.mean_latent().repeat(32);
    let flow = CpuFlow {
        model: &model.cpu,
        latents: &z,
    };
    let settings = StepSettings::default();
    let midpoint = settings.midpoint;
    let h = 1.0 / 32.0;
    let rows = midpoint.step_rows(&flow, &x, h, None);
    let whole = midpoint.step_fixed_point(&flow, &x, h).unwrap();
    let (n, dz) = (model.dim(), model.d_latent());
    let alone = |k: usize| {
        let f = CpuFlow {
            model: &model.cpu,
            latents: &z[k * dz..(k + 1) * dz],
        };
        midpoint
            .step_rows(&f, &x[k * n..(k + 1) * n], h, None)
            .row_evaluations
    };
    let summed: usize = (0..32).map(alone).sum();
    assert_eq!(
        rows.row_evaluations, summed,
        "each row iterates as if alone"
    );
    assert!(
        3 * rows.row_evaluations < 2 * (whole.1 + 1) * 32,
        "row-wise {} evaluations, batch-wide {}",
        rows.row_evaluations,
        (whole.1 + 1) * 32
    );
    assert!(rows.failed.is_empty());
    for (a, b) in rows.x1.iter().zip(&whole.0) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn a_scene_steps_in_a_plain_loop_and_conserves_energy() {
    let path = assets().join("scenes/oscillator_zoo.noether.ron");
    let scene = SceneDescription::parse(&std::fs::read_to_string(&path).unwrap(), "zoo").unwrap();
    let spec = &scene.populations[1];
    let model = LearnedModel::load(&path.parent().unwrap().join(&spec.model)).unwrap();
    let bodies = build_population(spec, 1, &model, "zoo").unwrap();
    assert_eq!(bodies.len(), 100);
    // Fitted latents differ from body to body and from the mean.
    assert!(bodies.iter().any(|b| b.latent != bodies[0].latent));
    assert!(bodies.iter().all(|b| b.latent != model.mean_latent()));
    let mut batch = BodyBatch::new(model, spec.integrator, &bodies).unwrap();
    assert_eq!(batch.method(), Integrator::Midpoint);
    let start = batch.states().to_vec();
    for _ in 0..120 {
        let report = batch.step(1.0 / 60.0).unwrap();
        assert!(report.frozen.is_empty());
    }
    assert_ne!(batch.states(), &start[..]);
    assert!(batch.max_drift() < 5e-3, "drift {:e}", batch.max_drift());
}

#[test]
fn populations_are_a_function_of_their_seed() {
    let path = assets().join("scenes/stress.noether.ron");
    let mut scene =
        SceneDescription::parse(&std::fs::read_to_string(&path).unwrap(), "stress").unwrap();
    scene.populations[0].count = 50;
    let model = pendulum();
    let a = plan_population(&scene.populations[0], 0, &model, "stress").unwrap();
    let b = plan_population(&scene.populations[0], 0, &model, "stress").unwrap();
    assert_eq!(a, b);
    scene.populations[0].seed += 1;
    let c = plan_population(&scene.populations[0], 0, &model, "stress").unwrap();
    assert_ne!(a, c, "another seed, other bodies");
}
