//! The dedicated CPU kernel computes what the burn implementation computes: field, energy,
//! entropy and gradients for every method and architecture, on batches spanning several
//! tiles with a different latent per row; the folded (shared-latent) path equals the
//! heterogeneous one.

use burn::{
    backend::Flex,
    tensor::{Tensor, TensorData},
};
use noether::{
    data::stream_rng,
    nn::{
        Architecture, LatentField, Model, ModelConfig, Modulation,
        cpu::{CpuModel, TILE},
    },
    systems::Family,
};
use rand::RngExt;

type B = Flex;

const METHODS: [Modulation; 6] = [
    Modulation::None,
    Modulation::Shift,
    Modulation::Fw,
    Modulation::RO,
    Modulation::Mr { rank: 5 },
    Modulation::Svd { rank: 5 },
];

fn random(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("tests/cpu-kernel", seed, 0);
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

fn burn_eval(
    model: &Model<B>,
    x: &[f32],
    z: &[f32],
    rows: usize,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let dev = Default::default();
    let n = model.config.family.dim();
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [rows, n]), &dev);
    let zt = Tensor::<B, 2>::from_data(TensorData::new(z.to_vec(), [rows, 10]), &dev);
    let v = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().unwrap();
    (
        model
            .field(xt.clone(), &zt)
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        v(model.energy(xt.clone(), &zt)),
        model.entropy(xt, &zt).map(v),
    )
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (u, v)) in a.iter().zip(b).enumerate() {
        assert!(
            (u - v).abs() <= 2e-4 * scale,
            "{what}: entry {i}: kernel {u}, burn {v} (scale {scale})"
        );
    }
}

#[test]
fn kernel_matches_burn_for_every_method_and_architecture() {
    let dev = Default::default();
    let rows = 2 * TILE + 37;
    for (m, method) in METHODS.into_iter().enumerate() {
        for (family, arch) in [
            (Family::Pendulum, Architecture::Hnn),
            (Family::Duffing, Architecture::SeparableHnn),
            (Family::Dno, Architecture::Generic { k: 4 }),
            (Family::Tgc, Architecture::Generic { k: 3 }),
        ] {
            let model: Model<B> = ModelConfig::new(family, method)
                .with_architecture(arch)
                .with_seed(m as u64)
                .init(&dev);
            let cpu = CpuModel::from_model(&model);
            let n = family.dim();
            let x = random(rows * n, 1.2, 1 + m as u64);
            let z = random(rows * 10, 2.0, 2 + m as u64);
            let (field, energy, entropy) = burn_eval(&model, &x, &z, rows);
            let what = format!("{method} {family} {arch:?}");
            let mut out = vec![0.0; rows * n];
            cpu.field(&x, &z, &mut out);
            assert_close(&out, &field, &format!("{what} field"));
            let mut e = vec![0.0; rows];
            cpu.energy(&x, &z, &mut e);
            assert_close(&e, &energy, &format!("{what} energy"));
            let mut s = vec![0.0; rows];
            assert_eq!(cpu.entropy(&x, &z, &mut s), entropy.is_some());
            if let Some(entropy) = entropy {
                assert_close(&s, &entropy, &format!("{what} entropy"));
            }
        }
    }
}

/// Folding one latent into the weights (the homogeneous path) gives the heterogeneous
/// kernel's answer for a batch that shares that latent.
#[test]
fn folded_latent_equals_shared_latent_rows() {
    let dev = Default::default();
    let rows = TILE + 5;
    for (m, method) in METHODS.into_iter().enumerate() {
        for family in [Family::Pendulum, Family::Tgc] {
            let model: Model<B> = ModelConfig::new(family, method)
                .with_seed(10 + m as u64)
                .init(&dev);
            let cpu = CpuModel::from_model(&model);
            let n = family.dim();
            let x = random(rows * n, 1.0, 5);
            let z1 = random(10, 2.0, 6 + m as u64);
            let z: Vec<f32> = (0..rows).flat_map(|_| z1.iter().copied()).collect();
            let (mut hetero, mut homo) = (vec![0.0; rows * n], vec![0.0; rows * n]);
            cpu.field(&x, &z, &mut hetero);
            let folded = cpu.fold(&z1);
            assert_eq!(folded.row_latent(), 0);
            folded.field(&x, &[], &mut homo);
            assert_close(&homo, &hetero, &format!("{method} {family} folded"));
        }
    }
}

/// The separable split: q̇ = ∇ₚT and ṗ = −∇_qV assemble the full field.
#[test]
fn separable_velocity_and_force_assemble_the_field() {
    let dev = Default::default();
    let model: Model<B> = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 })
        .with_architecture(Architecture::SeparableHnn)
        .init(&dev);
    let cpu = CpuModel::from_model(&model);
    assert!(cpu.is_separable());
    let rows = 50;
    let x = random(rows * 2, 1.0, 7);
    let z = random(rows * 10, 1.0, 8);
    let mut field = vec![0.0; rows * 2];
    cpu.field(&x, &z, &mut field);
    let q: Vec<f32> = x.chunks(2).map(|r| r[0]).collect();
    let p: Vec<f32> = x.chunks(2).map(|r| r[1]).collect();
    let (mut qd, mut pd) = (vec![0.0; rows], vec![0.0; rows]);
    cpu.velocity(&p, &z, &mut qd).unwrap();
    cpu.force(&q, &z, &mut pd).unwrap();
    for r in 0..rows {
        assert_eq!([qd[r], pd[r]], [field[2 * r], field[2 * r + 1]]);
    }
    let general = CpuModel::from_model(
        &ModelConfig::new(Family::Pendulum, Modulation::Shift).init::<B>(&dev),
    );
    assert!(general.velocity(&p, &z, &mut qd).is_none());
}
