//! Network identities in f64 on random weights and random latents: the explicit ∇ₓ against
//! central differences for every modulation method, training-loss gradients against
//! finite differences, the structure of HNN and GENERIC fields to round-off, and
//! mixed-latent batches against rows evaluated alone.
//!
//! This binary switches the Flex device to f64 before any tensor exists (one process per
//! test file), so every tensor below is f64.

use std::sync::Once;

use burn::{
    backend::{Autodiff, Flex},
    module::Param,
    tensor::{DType, Tensor, TensorData, backend::Backend},
};
use nalgebra::DMatrix;
use noether::{
    data::stream_rng,
    nn::{Architecture, LatentField, Mlp, MlpConfig, Model, ModelConfig, Modulation, uniform},
    systems::Family,
};
use rand::RngExt;

type B = Flex;
type AD = Autodiff<Flex>;

fn device() -> burn::backend::flex::FlexDevice {
    static F64: Once = Once::new();
    let device = Default::default();
    F64.call_once(|| {
        burn::tensor::backend::set_default_float_dtype::<B>(&device, DType::F64)
            .expect("set f64 before any tensor exists");
    });
    device
}

const METHODS: [Modulation; 6] = [
    Modulation::None,
    Modulation::Shift,
    Modulation::Fw,
    Modulation::RO,
    Modulation::Mr { rank: 5 },
    Modulation::Svd { rank: 5 },
];

fn to_vec<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f64> {
    let data = t.into_data();
    assert_eq!(data.dtype, DType::F64, "tests run in f64");
    data.to_vec::<f64>().unwrap()
}

fn tensor2<BB: Backend>(rows: &[Vec<f64>], device: &BB::Device) -> Tensor<BB, 2> {
    let cols = rows[0].len();
    Tensor::from_data(TensorData::new(rows.concat(), [rows.len(), cols]), device)
}

/// Random states and a *different* random latent for every row (a mixed batch).
fn random_batch(rows: usize, n: usize, dz: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut rng = stream_rng("tests/nn", seed, 0);
    let mut draw = |k: usize, scale: f64| {
        (0..k)
            .map(|_| scale * (2.0 * rng.random::<f64>() - 1.0))
            .collect::<Vec<_>>()
    };
    let x = (0..rows).map(|_| draw(n, 1.5)).collect();
    let z = (0..rows).map(|_| draw(dz, 2.0)).collect();
    (x, z)
}

fn mlp(method: Modulation, n: usize, hidden: Vec<usize>, seed: u64) -> Mlp<B> {
    let cfg = MlpConfig {
        d_input: n,
        hidden,
        d_latent: 10,
        modulation: method,
    };
    cfg.init::<B>(&device(), &mut stream_rng("tests/mlp", seed, 0))
}

/// ∇ₓf from the explicit reverse pass matches central differences of f to 1e-6 relative,
/// for every method, on a batch where every row has its own latent.
#[test]
fn explicit_input_gradient_matches_central_differences() {
    let dev = device();
    for (m, method) in METHODS.into_iter().enumerate() {
        for n in [2, 4] {
            let net = mlp(method, n, vec![100, 100, 100], m as u64);
            let (x, z) = random_batch(6, n, 10, 7 + m as u64);
            let zt = tensor2::<B>(&z, &dev);
            let codes = net.codes(&zt);
            let (_, grad) = net.forward_grad(tensor2(&x, &dev), &codes);
            let grad = to_vec(grad);
            let h = 1e-5;
            for i in 0..n {
                let shifted = |sign: f64| {
                    let xs: Vec<Vec<f64>> = x
                        .iter()
                        .map(|r| {
                            let mut r = r.clone();
                            r[i] += sign * h;
                            r
                        })
                        .collect();
                    to_vec(net.value(tensor2(&xs, &dev), &codes))
                };
                let (fp, fm) = (shifted(1.0), shifted(-1.0));
                for r in 0..x.len() {
                    let fd = (fp[r] - fm[r]) / (2.0 * h);
                    let an = grad[r * n + i];
                    let rel = (fd - an).abs() / an.abs().max(1e-3);
                    assert!(
                        rel < 1e-6,
                        "{method} n={n} row {r} ∂/∂x{i}: explicit {an:e}, central {fd:e}, rel {rel:e}"
                    );
                }
            }
        }
    }
}

/// A mixed-latent batch gives, row for row, what each row gives alone.
#[test]
fn mixed_latent_batch_equals_rows_alone() {
    let dev = device();
    for method in METHODS {
        for family in [Family::Pendulum, Family::Dno] {
            let model = ModelConfig::new(family, method)
                .with_hidden(vec![32, 32, 32])
                .init::<B>(&dev);
            let n = family.dim();
            let (x, z) = random_batch(5, n, 10, 3);
            let batch = to_vec(model.field(tensor2(&x, &dev), &tensor2(&z, &dev)));
            for r in 0..x.len() {
                let alone =
                    to_vec(model.field(tensor2(&x[r..=r], &dev), &tensor2(&z[r..=r], &dev)));
                for i in 0..n {
                    let (a, b) = (batch[r * n + i], alone[i]);
                    assert!(
                        (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                        "{method} {family} row {r}: {a} vs {b}"
                    );
                }
            }
            // And the latent matters: two rows with the same state but different codes differ.
            if method != Modulation::None {
                let same_x = vec![x[0].clone(), x[0].clone()];
                let out = to_vec(model.field(tensor2(&same_x, &dev), &tensor2(&z[..2], &dev)));
                assert!(
                    (0..n).any(|i| (out[i] - out[n + i]).abs() > 1e-9),
                    "{method} {family}: latent has no effect"
                );
            }
        }
    }
}

/// HNN: dH/dt = ∇Hᵀ J ∇H = 0 to round-off, general and separable, every method.
#[test]
fn hnn_conserves_energy_to_round_off() {
    let dev = device();
    for method in METHODS {
        for arch in [Architecture::Hnn, Architecture::SeparableHnn] {
            let model = ModelConfig::new(Family::Duffing, method)
                .with_architecture(arch)
                .init::<B>(&dev);
            let hnn = model.hnn.as_ref().unwrap();
            let (x, z) = random_batch(16, 2, 10, 11);
            let (xt, zt) = (tensor2::<B>(&x, &dev), tensor2::<B>(&z, &dev));
            let (_, grad) = hnn.energy_grad(xt.clone(), &zt);
            let (grad, field) = (to_vec(grad), to_vec(model.field(xt, &zt)));
            for r in 0..16 {
                let g = &grad[2 * r..2 * r + 2];
                let f = &field[2 * r..2 * r + 2];
                let dh_dt = g[0] * f[0] + g[1] * f[1];
                let scale = g[0].abs() * g[1].abs();
                assert!(
                    dh_dt.abs() <= 1e-15 * (1.0 + scale),
                    "{method} {arch:?}: dH/dt = {dh_dt:e}"
                );
                assert_eq!(f[0], g[1]);
                assert_eq!(f[1], -g[0]);
            }
        }
    }
}

fn matrix(values: &[f64], b: usize, n: usize) -> DMatrix<f64> {
    DMatrix::from_row_slice(n, n, &values[b * n * n..(b + 1) * n * n])
}

/// GENERIC: L skew, M symmetric PSD, L∇S = 0, M∇E = 0 to round-off; dE/dt ≈ 0 and
/// dS/dt ≥ 0; the matrix-free field equals L∇E + M∇S — for random weights and latents.
#[test]
fn generic_degeneracy_holds_to_round_off() {
    let dev = device();
    for method in METHODS {
        for (family, seed) in [(Family::Dno, 0), (Family::Tgc, 1), (Family::Dno, 2)] {
            let model = ModelConfig::new(family, method)
                .with_seed(seed)
                .init::<B>(&dev);
            let net = model.generic.as_ref().unwrap();
            let n = family.dim();
            let (x, z) = random_batch(16, n, 10, 5 + seed);
            let (xt, zt) = (tensor2::<B>(&x, &dev), tensor2::<B>(&z, &dev));
            let st = net.structure(xt.clone(), &zt);
            let (l, m) = (to_vec(st.l), to_vec(st.m));
            let (ge, gs) = (to_vec(st.grad_energy), to_vec(st.grad_entropy));
            let field = to_vec(model.field(xt, &zt));
            for r in 0..16 {
                let (l, m) = (matrix(&l, r, n), matrix(&m, r, n));
                let ge = nalgebra::DVector::from_column_slice(&ge[r * n..(r + 1) * n]);
                let gs = nalgebra::DVector::from_column_slice(&gs[r * n..(r + 1) * n]);
                let scale =
                    1.0 + l.norm() * (ge.norm() + gs.norm()) + m.norm() * (ge.norm() + gs.norm());
                let tol = 1e-13 * scale;
                assert!(
                    (&l + l.transpose()).norm() <= tol,
                    "{method} {family}: L not skew"
                );
                assert!(
                    (&m - m.transpose()).norm() <= tol,
                    "{method} {family}: M not symmetric"
                );
                assert!(
                    (&l * &gs).norm() <= tol,
                    "{method} {family}: ‖L∇S‖ = {:e}",
                    (&l * &gs).norm()
                );
                assert!(
                    (&m * &ge).norm() <= tol,
                    "{method} {family}: ‖M∇E‖ = {:e}",
                    (&m * &ge).norm()
                );
                let min_eig = m.clone().symmetric_eigenvalues().min();
                assert!(
                    min_eig >= -1e-12 * scale,
                    "{method} {family}: min eig M = {min_eig:e}"
                );
                let xdot = nalgebra::DVector::from_column_slice(&field[r * n..(r + 1) * n]);
                let assembled = &l * &ge + &m * &gs;
                assert!(
                    (&xdot - &assembled).norm() <= tol,
                    "{method} {family}: matrix-free field differs"
                );
                let (de, ds) = (ge.dot(&xdot), gs.dot(&xdot));
                assert!(de.abs() <= tol, "{method} {family}: dE/dt = {de:e}");
                assert!(ds >= -tol, "{method} {family}: dS/dt = {ds:e}");
            }
        }
    }
}

/// Loss L = mean ‖f(x; z) − y‖² on a tiny model; burn's autodiff gradient with respect to a
/// latent, base weights and hypernetwork maps matches central differences.
#[test]
fn training_loss_gradients_match_finite_differences() {
    let dev = device();
    for method in METHODS {
        for family in [Family::Pendulum, Family::Dno] {
            let model: Model<AD> = ModelConfig::new(family, method)
                .with_hidden(vec![6, 5])
                .with_seed(3)
                .init(&dev);
            let n = family.dim();
            let (x, z) = random_batch(4, n, 10, 9);
            let (y, _) = random_batch(4, n, 10, 10);
            let loss_of = |model: &Model<AD>, z: Tensor<AD, 2>| -> Tensor<AD, 1> {
                (model.field(tensor2(&x, &dev), &z) - tensor2::<AD>(&y, &dev))
                    .square()
                    .mean()
            };
            let zt = tensor2::<AD>(&z, &dev).require_grad();
            let grads = loss_of(&model, zt.clone()).backward();
            let h = 1e-6;
            let scalar = |t: Tensor<AD, 1>| to_vec(t)[0];

            // Latent: entries of z (an unmodulated network does not depend on z at all).
            let gz = zt.grad(&grads).map_or_else(|| vec![0.0; 40], to_vec);
            assert_eq!(
                method == Modulation::None,
                gz.iter().all(|g| *g == 0.0),
                "{method}: latent gradient"
            );
            for idx in [0, 7, 13, 39] {
                let mut zp = z.concat();
                zp[idx] += h;
                let mut zm = z.concat();
                zm[idx] -= h;
                let f = |v: Vec<f64>| {
                    scalar(loss_of(
                        &model,
                        Tensor::from_data(TensorData::new(v, [4, 10]), &dev),
                    ))
                };
                let fd = (f(zp) - f(zm)) / (2.0 * h);
                assert_close(gz[idx], fd, &format!("{method} {family} ∂L/∂z[{idx}]"));
            }

            // Parameters: every parameter tensor of the first scalar network's first hidden
            // layers, the readout, and (GENERIC) the assembly.
            let mut checked = 0;
            for (name, param) in params_of(&model) {
                let Some(g) = param.grad(&grads) else {
                    panic!("{method} {family}: no gradient for {name}")
                };
                let g = to_vec(g);
                let values = to_vec(param.clone());
                let shape = param.shape().dims::<2>();
                for idx in [0, values.len() / 2, values.len() - 1] {
                    let perturbed = |delta: f64| {
                        let mut v = values.clone();
                        v[idx] += delta;
                        let t = Tensor::<AD, 2>::from_data(TensorData::new(v, shape), &dev);
                        scalar(loss_of(&with_param(&model, &name, t), tensor2(&z, &dev)))
                    };
                    let fd = (perturbed(h) - perturbed(-h)) / (2.0 * h);
                    assert_close(g[idx], fd, &format!("{method} {family} ∂L/∂{name}[{idx}]"));
                    checked += 1;
                }
            }
            assert!(
                checked >= 6,
                "{method} {family}: only {checked} parameter entries checked"
            );
        }
    }
}

fn assert_close(analytic: f64, fd: f64, what: &str) {
    // The floor keeps round-off of the difference quotient (≈ 1e-16 · L / h) out of tiny entries.
    let rel = (analytic - fd).abs() / fd.abs().max(analytic.abs()).max(1e-3);
    assert!(
        rel < 1e-5,
        "{what}: autodiff {analytic:e}, central {fd:e}, rel {rel:e}"
    );
}

/// The 2-D parameters checked by the gradient test, by name.
fn params_of(model: &Model<AD>) -> Vec<(String, Tensor<AD, 2>)> {
    let net = match (&model.hnn, &model.generic) {
        (Some(h), _) => h.h.as_ref().unwrap(),
        (_, Some(g)) => &g.energy,
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    for (l, layer) in net.layers.iter().enumerate() {
        out.push((format!("layers.{l}.weight"), layer.weight.val()));
        for (name, p) in [
            ("shift", &layer.shift),
            ("fw", &layer.fw),
            ("mr_v", &layer.mr_v),
            ("mr_u", &layer.mr_u),
            ("svd_v", &layer.svd_v),
            ("svd_u", &layer.svd_u),
            ("svd_d", &layer.svd_d),
        ] {
            if let Some(p) = p {
                out.push((format!("layers.{l}.{name}"), p.val()));
            }
        }
    }
    if let Some(g) = &model.generic {
        out.push(("a_net.0".into(), g.a_net.weights[0].val()));
        out.push(("c_net.1".into(), g.c_net.weights[1].val()));
    }
    out
}

/// A copy of `model` with the named parameter replaced.
fn with_param(model: &Model<AD>, name: &str, value: Tensor<AD, 2>) -> Model<AD> {
    let mut m = model.clone();
    let p = Param::from_tensor(value);
    if let Some(rest) = name.strip_prefix("a_net.") {
        m.generic.as_mut().unwrap().a_net.weights[rest.parse::<usize>().unwrap()] = p;
        return m;
    }
    if let Some(rest) = name.strip_prefix("c_net.") {
        m.generic.as_mut().unwrap().c_net.weights[rest.parse::<usize>().unwrap()] = p;
        return m;
    }
    let net = match (&mut m.hnn, &mut m.generic) {
        (Some(h), _) => h.h.as_mut().unwrap(),
        (_, Some(g)) => &mut g.energy,
        _ => unreachable!(),
    };
    let mut parts = name.split('.');
    let (_, l, field) = (
        parts.next(),
        parts.next().unwrap().parse::<usize>().unwrap(),
        parts.next().unwrap(),
    );
    let layer = &mut net.layers[l];
    match field {
        "weight" => layer.weight = p,
        "shift" => layer.shift = Some(p),
        "fw" => layer.fw = Some(p),
        "mr_v" => layer.mr_v = Some(p),
        "mr_u" => layer.mr_u = Some(p),
        "svd_v" => layer.svd_v = Some(p),
        "svd_u" => layer.svd_u = Some(p),
        "svd_d" => layer.svd_d = Some(p),
        other => panic!("unknown parameter {other}"),
    }
    m
}

/// Regularisers: ‖φ‖² is the sum of squares of the hypernetwork maps, orthogonality is zero
/// for orthonormal bases and positive otherwise.
#[test]
fn regularizers_measure_what_they_claim() {
    let dev = device();
    let model = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 3 })
        .with_hidden(vec![8, 8])
        .init::<B>(&dev);
    let net = model.hnn.as_ref().unwrap().h.as_ref().unwrap();
    let (phi, orth) = model.regularizers();
    let expected: f64 = net
        .layers
        .iter()
        .flat_map(|l| [&l.shift, &l.svd_d])
        .flatten()
        .map(|p| to_vec(p.val()).iter().map(|v| v * v).sum::<f64>())
        .sum();
    assert!((to_vec(phi.unwrap())[0] - expected).abs() < 1e-12);
    assert!(to_vec(orth.unwrap())[0] > 0.0);
    // Orthonormal bases: zero penalty.
    let mut m = model.clone();
    for layer in &mut m.hnn.as_mut().unwrap().h.as_mut().unwrap().layers {
        let r = layer.config.effective_rank();
        let [i, o] = layer.weight.dims();
        layer.svd_v = Some(Param::from_tensor(
            Tensor::<B, 2>::eye(i, &dev).narrow(1, 0, r),
        ));
        layer.svd_u = Some(Param::from_tensor(
            Tensor::<B, 2>::eye(o, &dev).narrow(1, 0, r),
        ));
    }
    assert!(to_vec(m.regularizers().1.unwrap())[0].abs() < 1e-15);
    let _ = uniform::<B, 1>([1], 1.0, &mut stream_rng("unused", 0, 0), &dev);
}

/// Parameter counts by hand for the protocol pendulum model: 2→100→100→100→1.
#[test]
fn parameter_counts_match_hand_computation() {
    let dev = device();
    let base = (2 * 100 + 100) + 2 * (100 * 100 + 100) + 100 + 1;
    let count = |m: Modulation| {
        ModelConfig::new(Family::Pendulum, m)
            .init::<B>(&dev)
            .param_split()
    };
    assert_eq!(count(Modulation::None), (base, 0));
    assert_eq!(count(Modulation::Shift), (base, 3 * 10 * 100));
    assert_eq!(
        count(Modulation::Fw),
        (base, 3 * 10 * 100 + (2 * 1000 + 2 * 100 * 1000))
    );
    // RO: per layer shift + V maps [in, 11·1] + U maps [1, 11·out].
    assert_eq!(
        count(Modulation::RO),
        (base, 3000 + (2 * 11 + 1100) + 2 * (1100 + 1100))
    );
    // SVD(5): bases count as base (first layer rank 2), d-map [11, r] as hypernetwork.
    let svd_base = base + (2 * 2 + 100 * 2) + 2 * (100 * 5 + 100 * 5);
    assert_eq!(
        count(Modulation::Svd { rank: 5 }),
        (svd_base, 3000 + 11 * 2 + 2 * 11 * 5)
    );
}
