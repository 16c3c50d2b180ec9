//! Networks in f32 (the dtype models are trained, saved and stepped in): model files round
//! trip bit-for-bit and reject damaged or mismatched files with a clear error; GENERIC
//! structure holds to f32 round-off; burn-wgpu (lavapipe in CI) matches Flex.

use std::{fs, path::PathBuf};

use burn::{
    backend::Flex,
    tensor::{Tensor, TensorData, backend::Backend},
};
use noether::{
    data::stream_rng,
    io::{ModelFileError, load_model, model_paths, save_model},
    nn::{LatentField, Model, ModelConfig, Modulation},
    systems::Family,
};
use rand::RngExt;

type B = Flex;

fn batch<BB: Backend>(
    rows: usize,
    n: usize,
    seed: u64,
    device: &BB::Device,
) -> (Tensor<BB, 2>, Tensor<BB, 2>) {
    let mut rng = stream_rng("tests/nn-f32", seed, 0);
    let mut draw = |k: usize, s: f64| {
        (0..k)
            .map(|_| s * (2.0 * rng.random::<f64>() - 1.0))
            .collect::<Vec<f64>>()
    };
    let x = Tensor::from_data(TensorData::new(draw(rows * n, 1.5), [rows, n]), device);
    let z = Tensor::from_data(TensorData::new(draw(rows * 10, 2.0), [rows, 10]), device);
    (x, z)
}

fn floats<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("noether-nn-f32-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const METHODS: [Modulation; 6] = [
    Modulation::None,
    Modulation::Shift,
    Modulation::Fw,
    Modulation::RO,
    Modulation::Mr { rank: 5 },
    Modulation::Svd { rank: 3 },
];

#[test]
fn save_load_round_trip_is_bit_identical() {
    let dev = Default::default();
    for (i, method) in METHODS.into_iter().enumerate() {
        for family in [Family::Pendulum, Family::Tgc] {
            let model: Model<B> = ModelConfig::new(family, method)
                .with_seed(i as u64)
                .with_hidden(vec![24, 24, 24])
                .init(&dev);
            let path = temp(&format!("{family}-{method}"));
            save_model(&model, &path).unwrap();
            let loaded: Model<B> = load_model(&path.with_extension("ron"), &dev).unwrap();
            assert_eq!(loaded.config, model.config);
            let (x, z) = batch::<B>(9, family.dim(), 1, &dev);
            assert_eq!(
                floats(model.field(x.clone(), &z)),
                floats(loaded.field(x.clone(), &z)),
                "{method} {family}"
            );
            assert_eq!(
                floats(model.energy(x.clone(), &z)),
                floats(loaded.energy(x, &z))
            );
        }
    }
}

/// Writes a valid model and returns its (ron, weights) paths.
fn saved(name: &str, config: ModelConfig) -> (PathBuf, PathBuf) {
    let model: Model<B> = config.init(&Default::default());
    let path = temp(name);
    save_model(&model, &path).unwrap();
    model_paths(&path)
}

fn load_err(ron: &std::path::Path) -> ModelFileError {
    load_model::<B>(ron, &Default::default()).expect_err("a damaged model must not load")
}

/// Rewrites one tensor of a weights file, keeping its header.
fn rewrite_tensor(weights: &std::path::Path, name: &str, shape: Vec<usize>, values: Vec<f32>) {
    let bytes = fs::read(weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let replacement: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = Vec::new();
    for (n, view) in st.tensors() {
        if n == name {
            views.push((
                n,
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    &replacement,
                )
                .unwrap(),
            ));
        } else {
            views.push((n, view));
        }
    }
    let out = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    fs::write(weights, out).unwrap();
}

#[test]
fn damaged_and_mismatched_files_are_clear_errors() {
    let config =
        ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 }).with_hidden(vec![16, 16]);

    // RON syntax error: line and column.
    let (ron, _) = saved("syntax", config.clone());
    let text = fs::read_to_string(&ron)
        .unwrap()
        .replace("d_latent: 10", "d_latent: [10");
    fs::write(&ron, text).unwrap();
    let err = load_err(&ron);
    assert!(
        matches!(err, ModelFileError::Syntax { line, .. } if line > 1),
        "{err}"
    );
    assert!(err.to_string().contains("syntax.model.ron:"), "{err}");

    // Unknown field.
    let (ron, _) = saved("unknown", config.clone());
    let text = fs::read_to_string(&ron)
        .unwrap()
        .replace("d_latent:", "latent_dim: 3, d_latent:");
    fs::write(&ron, text).unwrap();
    assert!(load_err(&ron).to_string().contains("latent_dim"));

    // A value that cannot be built.
    let (ron, _) = saved("invalid", config.clone());
    let text = fs::read_to_string(&ron)
        .unwrap()
        .replace("d_latent: 10", "d_latent: 0");
    fs::write(&ron, text).unwrap();
    assert!(matches!(
        load_err(&ron),
        ModelFileError::InvalidConfig {
            field: "d_latent",
            ..
        }
    ));

    // A GENERIC architecture for a Hamiltonian family.
    let (ron, _) = saved("arch", config.clone());
    let text = fs::read_to_string(&ron)
        .unwrap()
        .replace("architecture: hnn", "architecture: generic(k: 4)");
    fs::write(&ron, text).unwrap();
    assert!(matches!(
        load_err(&ron),
        ModelFileError::InvalidConfig {
            field: "architecture",
            ..
        }
    ));

    // The config says another method than the weights were saved with.
    let (ron, _) = saved("method", config.clone());
    let text = fs::read_to_string(&ron).unwrap().replace("svd(", "mr(");
    fs::write(&ron, text).unwrap();
    let err = load_err(&ron);
    assert!(
        matches!(
            err,
            ModelFileError::ConfigMismatch {
                field: "modulation",
                ..
            }
        ),
        "{err}"
    );

    // Truncated weights.
    let (ron, weights) = saved("truncated", config.clone());
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_err(&ron), ModelFileError::Weights { .. }));

    // Missing weights file.
    let (ron, weights) = saved("missing-file", config.clone());
    fs::remove_file(&weights).unwrap();
    assert!(matches!(load_err(&ron), ModelFileError::Io { .. }));

    // A tensor of the wrong shape, a NaN weight.
    let (ron, weights) = saved("shape", config.clone());
    let name = "hnn.h.layers.1.weight";
    rewrite_tensor(&weights, name, vec![16, 15], vec![0.0; 240]);
    let err = load_err(&ron);
    assert!(
        matches!(&err, ModelFileError::ShapeMismatch { tensor, expected, found, .. }
        if tensor == name && expected == &vec![16, 16] && found == &vec![16, 15]),
        "{err}"
    );
    let (ron, weights) = saved("nan", config.clone());
    let mut values = vec![0.1; 256];
    values[17] = f32::NAN;
    rewrite_tensor(&weights, name, vec![16, 16], values);
    assert!(matches!(load_err(&ron), ModelFileError::NonFinite { tensor, .. } if tensor == name));

    // A tensor that is not in the file.
    let (ron, weights) = saved("missing-tensor", config);
    let bytes = fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "hnn.h.readout")
        .collect();
    fs::write(
        &weights,
        safetensors::serialize(kept, meta.metadata().clone()).unwrap(),
    )
    .unwrap();
    assert!(
        matches!(load_err(&ron), ModelFileError::MissingTensor { tensor, .. } if tensor == "hnn.h.readout")
    );
}

/// GENERIC structure in f32: round-off-level residuals and M ⪰ 0 to −1e-6.
#[test]
fn generic_structure_holds_in_f32() {
    let dev = Default::default();
    for method in METHODS {
        let model: Model<B> = ModelConfig::new(Family::Tgc, method).init(&dev);
        let net = model.generic.as_ref().unwrap();
        let n = 4;
        let (x, z) = batch::<B>(32, n, 2, &dev);
        let st = net.structure(x.clone(), &z);
        let (l, m, ge, gs) = (
            floats(st.l),
            floats(st.m),
            floats(st.grad_energy),
            floats(st.grad_entropy),
        );
        let field = floats(model.field(x, &z));
        for r in 0..32 {
            let mat = |v: &[f32]| {
                nalgebra::DMatrix::from_fn(n, n, |i, j| f64::from(v[r * n * n + i * n + j]))
            };
            let vec = |v: &[f32]| nalgebra::DVector::from_fn(n, |i, _| f64::from(v[r * n + i]));
            let (l, m, ge, gs, xdot) = (mat(&l), mat(&m), vec(&ge), vec(&gs), vec(&field));
            let scale = 1.0 + (l.norm() + m.norm()) * (ge.norm() + gs.norm());
            let tol = 1e-5 * scale;
            assert!(
                (&l * &gs).norm() <= tol && (&m * &ge).norm() <= tol,
                "{method}: degeneracy"
            );
            assert!((&l + l.transpose()).norm() <= tol && (&m - m.transpose()).norm() <= tol);
            assert!(
                m.clone().symmetric_eigenvalues().min() >= -1e-6 * scale,
                "{method}: M not PSD"
            );
            assert!(
                ge.dot(&xdot).abs() <= tol && gs.dot(&xdot) >= -tol,
                "{method}: dE/dt, dS/dt"
            );
        }
    }
}

/// The same forward + ∇ₓ on burn-wgpu matches Flex to 1e-4 relative (one small case).
#[test]
fn wgpu_matches_flex() {
    use burn::backend::Wgpu;
    let Some(gpu) = noether::device::wgpu_for_test("wgpu_matches_flex") else {
        return;
    };
    let cpu = Default::default();
    for (family, method) in [
        (Family::Pendulum, Modulation::Svd { rank: 5 }),
        (Family::Dno, Modulation::Mr { rank: 2 }),
    ] {
        let config = ModelConfig::new(family, method).with_hidden(vec![32, 32, 32]);
        let on_cpu: Model<B> = config.init(&cpu);
        let on_gpu: Model<Wgpu> = config.init(&gpu);
        let (x, z) = batch::<B>(16, family.dim(), 4, &cpu);
        let (xg, zg) = (
            Tensor::<Wgpu, 2>::from_data(x.to_data(), &gpu),
            Tensor::<Wgpu, 2>::from_data(z.to_data(), &gpu),
        );
        let a = floats(on_cpu.field(x, &z));
        let b = floats(on_gpu.field(xg, &zg));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (u, v)) in a.iter().zip(&b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-4 * scale.max(1.0),
                "{family} {method}: entry {i}: flex {u}, wgpu {v}"
            );
        }
    }
}
