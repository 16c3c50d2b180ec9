//! The CPU kernel's hand-written training gradients equal burn's autodiff of the burn
//! implementation: the loss L = mean ‖f(x; θ, z) − ẋ‖² and ∂L/∂θ for every tensor and
//! ∂L/∂z for every latent, for every method and architecture, on a batch mixing several
//! latents; and the regularisers' values and gradients.

use burn::{
    backend::{Autodiff, Flex},
    module::{Module, ModuleMapper, Param},
    tensor::{Int, Tensor, TensorData, backend::AutodiffBackend},
};
use noether::{
    data::stream_rng,
    nn::{
        Architecture, LatentField, Model, ModelConfig, Modulation,
        cpu::{
            ModelParams,
            loss::{Batch, Objective, add_regularizers},
        },
    },
    systems::Family,
};
use rand::RngExt;

type AD = Autodiff<Flex>;

const METHODS: [Modulation; 6] = [
    Modulation::None,
    Modulation::Shift,
    Modulation::Fw,
    Modulation::RO,
    Modulation::Mr { rank: 3 },
    Modulation::Svd { rank: 3 },
];

fn random(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("tests/cpu-training", seed, 0);
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// Replaces every parameter by its gradient.
struct ToGrads<'a> {
    grads: &'a <AD as AutodiffBackend>::Gradients,
}

impl ModuleMapper<AD> for ToGrads<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AD, D>>) -> Param<Tensor<AD, D>> {
        let value = param.val();
        let grad = value
            .grad(self.grads)
            .unwrap_or_else(|| value.clone().inner().zeros_like());
        Param::from_tensor(Tensor::from_inner(grad))
    }
}

fn assert_close(kernel: &[f32], burn: &[f32], what: &str) {
    assert_eq!(kernel.len(), burn.len(), "{what}: lengths");
    let scale = burn.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in kernel.iter().zip(burn).enumerate() {
        assert!(
            (a - b).abs() <= 2e-3 * scale + 1e-7,
            "{what}[{i}]: kernel {a:e}, burn {b:e} (scale {scale:e})"
        );
    }
}

#[test]
fn kernel_gradients_equal_burn_autodiff() {
    let dev = Default::default();
    let (rows, tasks) = (150, 3);
    for (m, method) in METHODS.into_iter().enumerate() {
        for (family, arch) in [
            (Family::Pendulum, Architecture::Hnn),
            (Family::Duffing, Architecture::SeparableHnn),
            (Family::Dno, Architecture::Generic { k: 3 }),
        ] {
            let config = ModelConfig::new(family, method)
                .with_architecture(arch)
                .with_hidden(vec![16, 12, 8])
                .with_seed(m as u64);
            let model: Model<AD> = config.init(&dev);
            let n = family.dim();
            let x = random(rows * n, 1.2, 1 + m as u64);
            let dx = random(rows * n, 2.0, 2 + m as u64);
            let task: Vec<usize> = (0..rows).map(|r| r * tasks / rows).collect();
            let latents = random(tasks * 10, 1.5, 3 + m as u64);
            let what = format!("{method} {family} {arch:?}");

            // burn: L = mean((f − ẋ)²) with one latent Param per task block.
            let zt =
                Tensor::<AD, 2>::from_data(TensorData::new(latents.clone(), [tasks, 10]), &dev)
                    .require_grad();
            let idx = Tensor::<AD, 1, Int>::from_data(
                TensorData::new(task.iter().map(|&t| t as i64).collect::<Vec<_>>(), [rows]),
                &dev,
            );
            let xt = Tensor::<AD, 2>::from_data(TensorData::new(x.clone(), [rows, n]), &dev);
            let dxt = Tensor::<AD, 2>::from_data(TensorData::new(dx.clone(), [rows, n]), &dev);
            let loss = (model.field(xt, &zt.clone().select(0, idx)) - dxt)
                .square()
                .mean();
            let burn_loss = loss.clone().into_scalar();
            let grads = loss.backward();
            let burn_z: Vec<f32> = zt.grad(&grads).map_or_else(
                || vec![0.0; tasks * 10],
                |g| g.into_data().to_vec().unwrap(),
            );
            let grad_model = model.clone().map(&mut ToGrads { grads: &grads });
            let burn_params = ModelParams::from_model(&grad_model);

            // kernel
            let params = ModelParams::from_model(&model);
            let out = Objective::new(&params).loss_grad(
                Batch {
                    x: &x,
                    dx: &dx,
                    task: &task,
                },
                &latents,
                true,
            );
            assert!(
                (out.loss as f32 - burn_loss).abs() <= 1e-4 * burn_loss.abs(),
                "{what}: loss {} vs {burn_loss}",
                out.loss
            );
            assert_close(&out.latents, &burn_z, &format!("{what} ∂L/∂z"));
            assert_eq!(
                method == Modulation::None,
                burn_z.iter().all(|v| *v == 0.0),
                "{what}: latent gradient present iff modulated"
            );
            let kernel_params = out.params.expect("asked for parameter gradients");
            let mut checked = 0;
            for (t, ((k, role), (b, _))) in kernel_params
                .tensors()
                .into_iter()
                .zip(burn_params.tensors())
                .enumerate()
            {
                assert_close(k, b, &format!("{what} tensor {t} ({role:?})"));
                if !b.is_empty() {
                    assert!(
                        b.iter().any(|v| *v != 0.0),
                        "{what} tensor {t} ({role:?}): a gradient of zeros checks nothing"
                    );
                    checked += 1;
                }
            }
            assert!(checked >= 7, "{what}: only {checked} tensors checked");
            // Latent-only requests give the same latent gradient.
            let z_only = Objective::new(&params).loss_grad(
                Batch {
                    x: &x,
                    dx: &dx,
                    task: &task,
                },
                &latents,
                false,
            );
            assert!(z_only.params.is_none());
            assert_eq!(z_only.latents, out.latents);
            // Rows of different tasks interleaved (FW folds per task; the others go by
            // tiles of rows): the same loss and latent gradient.
            let order: Vec<usize> = (0..rows).map(|r| (r * 7) % rows).collect();
            let pick = |v: &[f32]| -> Vec<f32> {
                order
                    .iter()
                    .flat_map(|&r| v[r * n..(r + 1) * n].to_vec())
                    .collect()
            };
            let shuffled_task: Vec<usize> = order.iter().map(|&r| task[r]).collect();
            let shuffled = Objective::new(&params).loss_grad(
                Batch {
                    x: &pick(&x),
                    dx: &pick(&dx),
                    task: &shuffled_task,
                },
                &latents,
                false,
            );
            assert!(
                (shuffled.loss - out.loss).abs() <= 1e-5 * out.loss.abs(),
                "{what}: interleaved loss {} vs {}",
                shuffled.loss,
                out.loss
            );
            assert_close(
                &shuffled.latents,
                &out.latents,
                &format!("{what} interleaved ∂L/∂z"),
            );
        }
    }
}

#[test]
fn regularizer_gradients_equal_burn_autodiff() {
    let dev = Default::default();
    for method in [
        Modulation::Svd { rank: 3 },
        Modulation::Mr { rank: 2 },
        Modulation::Fw,
    ] {
        let config = ModelConfig::new(Family::Pendulum, method).with_hidden(vec![10, 9]);
        let model: Model<AD> = config.init(&dev);
        let (lp, lo) = (1e-3, 1e-2);
        let (phi, orth) = model.regularizers();
        let mut loss = phi.unwrap().mul_scalar(lp);
        if let Some(orth) = orth {
            loss = loss + orth.mul_scalar(lo);
        }
        let value = loss.clone().into_scalar();
        let grads = loss.backward();
        let burn_params =
            ModelParams::from_model(&model.clone().map(&mut ToGrads { grads: &grads }));
        let params = ModelParams::from_model(&model);
        let mut kernel = params.zeros_like();
        let penalty = add_regularizers(&params, &mut kernel, lp, lo);
        assert!(
            (penalty as f32 - value).abs() <= 1e-4 * value.abs(),
            "{method}: penalty {penalty} vs {value}"
        );
        for (t, ((k, role), (b, _))) in kernel
            .tensors()
            .into_iter()
            .zip(burn_params.tensors())
            .enumerate()
        {
            assert_close(k, b, &format!("{method} regulariser tensor {t} ({role:?})"));
        }
    }
}

/// ∂f/∂z per row from the objective's adjoint ([`Objective::field_latent_jacobian`], what
/// Gauss–Newton test-time adaptation uses) equals central differences of the field, for
/// every architecture, each row with its own latent; the field it returns is
/// [`Objective::field`].
#[test]
fn latent_jacobian_equals_finite_differences() {
    let dev = Default::default();
    for (family, arch) in [
        (Family::Pendulum, Architecture::Hnn),
        (Family::MassSpring, Architecture::SeparableHnn),
        (Family::Dno, Architecture::Generic { k: 2 }),
    ] {
        for modulation in [Modulation::Svd { rank: 3 }, Modulation::Fw] {
            let config = ModelConfig::new(family, modulation)
                .with_architecture(arch)
                .with_hidden(vec![16, 16]);
            let params = ModelParams::from_model(&config.init::<Flex>(&dev));
            let objective = Objective::new(&params);
            let (rows, n, dz) = (5, family.dim(), config.d_latent);
            let x = random(rows * n, 1.0, 41);
            let z = random(rows * dz, 1.0, 42);
            let (f, jac) = objective.field_latent_jacobian(&x, &z);
            assert_eq!(f, objective.field(&x, &z), "{family} {modulation}");
            let eps = 1e-2f32;
            let mut fd = vec![0.0f32; rows * n * dz];
            for k in 0..dz {
                let (mut plus, mut minus) = (z.clone(), z.clone());
                for r in 0..rows {
                    plus[r * dz + k] += eps;
                    minus[r * dz + k] -= eps;
                }
                let (fp, fm) = (objective.field(&x, &plus), objective.field(&x, &minus));
                for r in 0..rows {
                    for i in 0..n {
                        fd[r * n * dz + i * dz + k] = (fp[r * n + i] - fm[r * n + i]) / (2.0 * eps);
                    }
                }
            }
            let scale =
                (noether::metrics::worst(fd.iter().map(|v| f64::from(v.abs()))) as f32).max(1e-3);
            for (a, b) in jac.iter().zip(&fd) {
                assert!(
                    (a - b).abs() <= 2e-2 * scale,
                    "{family} {modulation}: adjoint {a} vs differences {b} (scale {scale})"
                );
            }
        }
    }
}
