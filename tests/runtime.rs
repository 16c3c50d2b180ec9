//! The engine-free runtime: a scene's populations built and stepped in a plain loop, bad
//! rows isolated from their batch, populations deterministic in their seed.

use std::path::PathBuf;

use noether::{
    integrate::Integrator,
    nn::cpu::CpuFlow,
    runtime::{
        BodyBatch, LearnedModel, SceneDescription, StepSettings, advance, advance_isolating,
        build_population, plan_population,
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
        let (x1, report) =
            advance_isolating(&model.cpu, method, &x, &zs, 1.0 / 64.0, &settings).unwrap();
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
