//! The amortised start of online adaptation: every shipped model's encoder reads held-out
//! systems better than the mean latent does; the encoder section of a model file round-trips,
//! older files without one still load, and a damaged section is refused by name.

use std::path::{Path, PathBuf};

use noether::{
    data::{Dataset, DatasetSpec},
    io::{ModelFileError, load_encoder, save_encoder},
    meta::{
        AdaptConfig, EncoderTraining, TaskSet, adapt_latents, evaluate_encoder, latent_distance,
        train_encoder,
    },
    runtime::LearnedModel,
    systems::Structure,
};

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("assets/models/{name}.model.ron"))
}

#[test]
fn encoder_only_latents_beat_the_mean_latent_on_held_out_instances_of_every_shipped_family() {
    for name in [
        "pendulum-svd5",
        "mass_spring-svd5",
        "duffing-svd5",
        "dno-svd3",
        "tgc-svd5",
    ] {
        let model = LearnedModel::load(&model_path(name)).unwrap();
        let encoder = model
            .encoder
            .as_ref()
            .unwrap_or_else(|| panic!("{name} ships an encoder"));
        let config = &model.config;
        let data = Dataset::generate(&DatasetSpec::new(config.family, config.seed));
        let tasks = TaskSet::new(&data);
        // The paper's auto-decoding on 10 exact shots is the reference latent of each
        // held-out (meta-test) system.
        let shots: Vec<_> = tasks
            .meta_test()
            .into_iter()
            .map(|i| tasks.shots(i, 10))
            .collect();
        let decoded = adapt_latents(
            &model.params,
            &shots,
            &model.mean_latent(),
            &AdaptConfig::for_model(config, 10),
        )
        .latents;
        let eval = evaluate_encoder(
            &tasks,
            &model.cpu,
            encoder,
            &model.mean_latent(),
            0.01,
            0,
            0,
        )
        .unwrap();
        let std = &config.latents.std;
        let mean_distance: f64 = decoded
            .iter()
            .map(|z| latent_distance(&model.mean_latent(), z, std))
            .sum();
        let encoded_distance: f64 = decoded
            .iter()
            .zip(&eval.encoded_latents)
            .map(|(z, e)| latent_distance(e, z, std))
            .sum();
        eprintln!(
            "{name}: distance to auto-decoding {mean_distance:.3} (mean) → {encoded_distance:.3} (encoder); ε_traj {:.3e} → {:.3e}",
            eval.mean.traj_error().mean,
            eval.encoded.traj_error().mean
        );
        assert!(
            encoded_distance < mean_distance,
            "{name}: the encoder reads latents {encoded_distance:.3} from the systems' own, the mean latent is {mean_distance:.3} away"
        );
        // For the Hamiltonian families the latent decides the motion: the encoder's
        // trajectories are better too. (The GENERIC models' ε_traj barely depends on the
        // latent: auto-decoding does not beat the mean latent on it either.)
        if matches!(
            config.family.spec().structure,
            Structure::Hamiltonian { .. }
        ) {
            assert!(
                eval.encoded.traj_error().mean < eval.mean.traj_error().mean,
                "{name}: ε_traj {:.3e} (mean latent) → {:.3e} (encoder)",
                eval.mean.traj_error().mean,
                eval.encoded.traj_error().mean
            );
        }
    }
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("noether-encoder-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of a shipped model in a temporary directory.
fn copy_model(name: &str, dir: &Path) -> PathBuf {
    for ext in ["model.ron", "safetensors"] {
        let from =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("assets/models/{name}.{ext}"));
        std::fs::copy(from, dir.join(format!("{name}.{ext}"))).unwrap();
    }
    dir.join(format!("{name}.model.ron"))
}

#[test]
fn the_encoder_section_round_trips_and_old_files_still_load() {
    let dir = scratch("round-trip");
    let path = copy_model("pendulum-svd5", &dir);
    let shipped = LearnedModel::load(&path).unwrap();
    let settings = EncoderTraining {
        instances: 8,
        windows: 4,
        steps: 20,
        shots: 10,
        seed: 3,
        ..EncoderTraining::default()
    };
    let encoder =
        train_encoder(&shipped.config, &shipped.params, &settings, &mut |_, _| ()).unwrap();
    save_encoder(&path, &encoder).unwrap();
    let loaded = LearnedModel::load(&path).unwrap();
    assert_eq!(
        loaded.encoder.as_deref(),
        Some(&encoder),
        "the section round-trips"
    );
    assert_eq!(
        loaded.params, shipped.params,
        "the model's own tensors are untouched"
    );

    // A model file without the section (as written before encoders existed) loads, without
    // an encoder; adaptation then starts from the mean latent.
    let mut config = shipped.config.clone();
    config.encoder = None;
    let model = shipped
        .params
        .to_model::<burn::backend::Flex>(&config, &Default::default());
    let old = dir.join("old");
    noether::io::save_model(&model, &old).unwrap();
    let old = LearnedModel::load(&old).unwrap();
    assert!(old.encoder.is_none());
    assert_eq!(old.first_guess(&[]), old.mean_latent());
}

#[test]
fn a_damaged_encoder_section_is_refused_by_name() {
    let dir = scratch("damaged");
    let path = copy_model("pendulum-svd5", &dir);
    let model = LearnedModel::load(&path).unwrap();
    let weights = std::fs::read(dir.join("pendulum-svd5.safetensors")).unwrap();
    // A NaN in the first weight of the encoder.
    let mut encoder = (**model.encoder.as_ref().unwrap()).clone();
    encoder.tensors_mut()[0][0] = f32::NAN;
    save_encoder(&path, &encoder).unwrap();
    let damaged = std::fs::read(dir.join("pendulum-svd5.safetensors")).unwrap();
    match load_encoder(&model.config, &damaged, Path::new("m.safetensors")) {
        Err(ModelFileError::NonFinite { tensor, .. }) => assert_eq!(tensor, "encoder.0.weight"),
        other => panic!("{other:?}"),
    }
    assert!(LearnedModel::load(&path).is_err());
    // A config that promises an encoder over weights without one: a missing tensor.
    let mut config = model.config.clone();
    config.encoder.as_mut().unwrap().hidden = vec![64, 64, 64];
    match load_encoder(&config, &weights, Path::new("m.safetensors")) {
        Err(ModelFileError::ShapeMismatch { .. } | ModelFileError::MissingTensor { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fresh_body_waits_for_the_encoder_span_then_starts_from_its_reading_once() {
    use noether::{
        meta::ObservedPart,
        runtime::{AdaptState, ObservationWindow, Start, TruthSimulator, amortised_start},
        systems::Family,
    };
    let model = LearnedModel::load(&model_path("pendulum-svd5")).unwrap();
    let span = model.encoder.as_ref().unwrap().span();
    let mut truth = TruthSimulator::new(
        Family::Pendulum,
        &[1.0, 1.2],
        vec![1.0, 0.0],
        ObservedPart::Positions,
        0.05,
        0.0,
        0,
    )
    .unwrap();
    let (mut window, mut state) = (ObservationWindow::default(), AdaptState::default());
    let mut seen = Vec::new();
    for _ in 0..(2.0 * span * 64.0) as usize {
        if let Some(o) = truth.advance(1.0 / 64.0) {
            window.push(o.t, o.values).unwrap();
        }
        let start = amortised_start(&model, &mut state, &window, ObservedPart::Positions);
        let covered = window.span() + 1e-9 >= span;
        match &start {
            Start::Wait => assert!(!covered, "waits only while the window is short"),
            Start::Encoded(z) => {
                assert!(covered, "reads only a window that spans the encoder's span");
                assert_eq!(z.len(), model.d_latent());
                assert!(z.iter().all(|v| v.is_finite()));
            }
            Start::Ready => assert!(covered),
        }
        seen.push(std::mem::discriminant(&start));
    }
    let encoded = std::mem::discriminant(&Start::Encoded(Vec::new()));
    let waited = std::mem::discriminant(&Start::Wait);
    assert_eq!(
        seen.iter().filter(|d| **d == encoded).count(),
        1,
        "read once"
    );
    assert_eq!(seen[0], waited, "the first frame waits");
    assert!(!state.is_fresh(), "the fit has started from the reading");
}
