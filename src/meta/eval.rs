//! Evaluation of adapted models on the meta-test instances (docs/protocol.md §6).
//!
//! For each test instance, an adapted learned field (a model with the instance's latent, or
//! a baseline's per-instance weights) is scored by
//!
//! - ε_traj: the query trajectories rolled out from their true x₀ with RK4 at Δt/10, against
//!   the reference trajectories;
//! - ε_field: the field against the instance's exact field on two grids, over the box of
//!   the training data ([`training_box`], the primary column) and on the fixed
//!   [−3, 3]² grid ([`FieldGrid::for_family`], out of distribution for families trained on
//!   smaller orbits), with SSIM on the latter;
//! - structure along the rollouts: the relative drift of the *learned* energy (Hamiltonian
//!   models), or the GENERIC residuals ‖L∇S‖, ‖M∇E‖, |dE/dt| and min dS/dt.

use serde::{Deserialize, Serialize};

use super::task::{QUERY, TRAIN_TRAJECTORIES, TaskSet};
use crate::{
    integrate::rk4_step,
    metrics::{
        FieldGrid, GenericResiduals, ROLLOUT_SUBSTEPS, energy_drift, field_error, field_ssim,
        trajectory_error,
    },
    nn::cpu::{CpuFlow, CpuModel},
};

/// Metrics of one test instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetrics {
    /// Dataset instance index.
    pub instance: usize,
    /// ε_traj averaged over the query trajectories (∞ when a rollout diverged).
    pub traj_error: f64,
    /// ε_field on the fixed [−3, 3]² grid ([`FieldGrid::for_family`]): out of distribution
    /// for families trained on smaller orbits.
    pub field_error: f64,
    /// ε_field on the grid over the training data's box ([`training_box`]); `None`
    /// in results written before it was measured.
    #[serde(default)]
    pub field_error_train: Option<f64>,
    /// Mean SSIM of the field components (grid families only).
    pub ssim: Option<f64>,
    /// Max relative drift of the learned energy along the rollouts (Hamiltonian models).
    pub energy_drift: Option<f64>,
    /// max ‖L∇S‖ along the rollouts (GENERIC models).
    pub l_grad_s: Option<f64>,
    /// max ‖M∇E‖ along the rollouts (GENERIC models).
    pub m_grad_e: Option<f64>,
    /// max |dE/dt| along the rollouts (GENERIC models).
    pub max_abs_de_dt: Option<f64>,
    /// min dS/dt along the rollouts (GENERIC models).
    pub min_ds_dt: Option<f64>,
}

/// Mean and standard deviation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
}

impl Stat {
    /// Of a sample (NaN for an empty one; ∞ if any value is ∞).
    pub fn of(values: &[f64]) -> Stat {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        Stat { mean, std }
    }
}

/// Metrics over the test instances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Per instance.
    pub instances: Vec<InstanceMetrics>,
}

impl EvalReport {
    fn stat(&self, f: impl Fn(&InstanceMetrics) -> Option<f64>) -> Option<Stat> {
        let v: Vec<f64> = self.instances.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| Stat::of(&v))
    }

    /// ε_traj over instances.
    pub fn traj_error(&self) -> Stat {
        self.stat(|m| Some(m.traj_error))
            .expect("at least one instance")
    }

    /// ε_field over instances.
    pub fn field_error(&self) -> Stat {
        self.stat(|m| Some(m.field_error))
            .expect("at least one instance")
    }

    /// ε_field over the training data's box ([`training_box`]), over instances (`None` for results
    /// written before it was measured).
    pub fn field_error_train(&self) -> Option<Stat> {
        self.stat(|m| m.field_error_train)
    }

    /// SSIM over instances.
    pub fn ssim(&self) -> Option<Stat> {
        self.stat(|m| m.ssim)
    }

    /// Learned-energy drift over instances.
    pub fn energy_drift(&self) -> Option<Stat> {
        self.stat(|m| m.energy_drift)
    }

    /// Worst GENERIC residuals over instances: (‖L∇S‖, ‖M∇E‖, |dE/dt|, min dS/dt).
    pub fn generic_worst(&self) -> Option<(f64, f64, f64, f64)> {
        let get = |f: &dyn Fn(&InstanceMetrics) -> Option<f64>| {
            self.instances.iter().filter_map(f).collect::<Vec<_>>()
        };
        let (a, b, c, d) = (
            get(&|m| m.l_grad_s),
            get(&|m| m.m_grad_e),
            get(&|m| m.max_abs_de_dt),
            get(&|m| m.min_ds_dt),
        );
        (!a.is_empty()).then(|| {
            let max = |v: &[f64]| crate::metrics::worst(v.iter().copied());
            (
                max(&a),
                max(&b),
                max(&c),
                d.iter().copied().fold(f64::INFINITY, f64::min),
            )
        })
    }
}

/// Rolls out `x0` rows (`[B·n]`) for `samples` samples of spacing `dt` with RK4 at
/// Δt/[`ROLLOUT_SUBSTEPS`]; returns `[samples, B·n]` flattened. Rows that become non-finite
/// stay NaN.
pub fn rollout_batch(
    model: &CpuModel,
    latents: &[f32],
    x0: &[f32],
    dt: f64,
    samples: usize,
) -> Vec<Vec<f32>> {
    let flow = CpuFlow { model, latents };
    let h = dt / ROLLOUT_SUBSTEPS as f64;
    let mut x = x0.to_vec();
    let mut out = vec![x.clone()];
    for _ in 1..samples {
        for _ in 0..ROLLOUT_SUBSTEPS {
            x = rk4_step(&flow, &x, h);
        }
        out.push(x.clone());
    }
    out
}

/// Fraction of the training states left out of [`training_box`] at each end, per component.
pub const TRAINING_BOX_TAIL: f64 = 0.01;

/// The grid over the box where the meta-training instances' trajectories are
/// ([`FieldGrid::over_box`]): per state component, from the 1st to the 99th percentile of
/// every training state ([`TRAINING_BOX_TAIL`]). Percentiles, not the extremes: a few
/// training pendulums swing over the top and rotate, which stretches the raw bounding box
/// to q ∈ [−15.8, 2.6], p ∈ [−22.8, 22.9] (seed 0), mostly empty of data.
pub fn training_box(tasks: &TaskSet<'_>) -> FieldGrid {
    let n = tasks.dim();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); n];
    for i in tasks.meta_train() {
        let (data, local) = tasks.locate(i);
        for j in TRAIN_TRAJECTORIES {
            for x in data.trajectory(local, j).chunks_exact(n) {
                for c in 0..n {
                    values[c].push(x[c]);
                }
            }
        }
    }
    let (mut lo, mut hi) = (vec![0.0; n], vec![0.0; n]);
    for (c, v) in values.iter_mut().enumerate() {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (lo[c], hi[c]) = (at(TRAINING_BOX_TAIL), at(1.0 - TRAINING_BOX_TAIL));
    }
    FieldGrid::over_box(tasks.family(), &lo, &hi)
}

/// Scores one instance's adapted field: `model` with `latent` (empty for a model without
/// latent input, such as a folded or baseline model); `training` is [`training_box`] of
/// the task set.
pub fn evaluate_instance(
    tasks: &TaskSet<'_>,
    instance: usize,
    model: &CpuModel,
    latent: &[f32],
    training: &FieldGrid,
) -> InstanceMetrics {
    let (data, local) = tasks.locate(instance);
    let family = data.spec.family;
    let n = family.dim();
    let sys = family
        .build(data.params_of(local))
        .expect("dataset parameters are valid");
    let per_row =
        |rows: usize| -> Vec<f32> { (0..rows).flat_map(|_| latent.iter().copied()).collect() };

    // ε_traj over the query trajectories, rolled out together.
    let traj: Vec<&[f64]> = QUERY.map(|j| data.trajectory(local, j)).collect();
    let rows = traj.len();
    let x0: Vec<f32> = traj
        .iter()
        .flat_map(|t| t[..n].iter().map(|v| *v as f32))
        .collect();
    let z_rows = per_row(rows);
    let states = rollout_batch(model, &z_rows, &x0, data.dt, data.samples);
    let mut errors = Vec::with_capacity(rows);
    for (r, truth) in traj.iter().enumerate() {
        let pred: Vec<f64> = states
            .iter()
            .flat_map(|s| s[r * n..(r + 1) * n].iter().map(|v| f64::from(*v)))
            .collect();
        errors.push(trajectory_error(&pred, truth));
    }
    let traj_error = errors.iter().sum::<f64>() / rows as f64;

    // ε_field on both grids, SSIM on the fixed one.
    let on = |grid: &FieldGrid| {
        let truth = grid.evaluate(&|x, dx| sys.eval(x, dx));
        let gx: Vec<f32> = grid.points.iter().map(|v| *v as f32).collect();
        let mut gf = vec![0.0f32; gx.len()];
        model.field(&gx, &per_row(grid.len()), &mut gf);
        let pred: Vec<f64> = gf.iter().map(|v| f64::from(*v)).collect();
        (field_error(&pred, &truth), field_ssim(grid, &pred, &truth))
    };
    let (field_error, ssim) = on(&FieldGrid::for_family(family));
    let field_error_train = Some(on(training).0);

    // Structure along the rollouts.
    let all: Vec<f32> = states.iter().flatten().copied().collect();
    let finite = all.iter().all(|v| v.is_finite());
    let mut m = InstanceMetrics {
        instance,
        traj_error,
        field_error,
        field_error_train,
        ssim,
        energy_drift: None,
        l_grad_s: None,
        m_grad_e: None,
        max_abs_de_dt: None,
        min_ds_dt: None,
    };
    let steps = states.len();
    if model.is_generic() {
        if finite {
            let st = model
                .generic_structure(&all, &per_row(steps * rows))
                .expect("GENERIC model");
            let mut res = GenericResiduals::default();
            let f64s = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
            for b in 0..steps * rows {
                res.add(
                    &f64s(&st.l[b * n * n..(b + 1) * n * n]),
                    &f64s(&st.m[b * n * n..(b + 1) * n * n]),
                    &f64s(&st.grad_energy[b * n..(b + 1) * n]),
                    &f64s(&st.grad_entropy[b * n..(b + 1) * n]),
                );
            }
            (m.l_grad_s, m.m_grad_e, m.max_abs_de_dt, m.min_ds_dt) = (
                Some(res.l_grad_s),
                Some(res.m_grad_e),
                Some(res.max_abs_de_dt),
                Some(res.min_ds_dt),
            );
        }
    } else {
        let mut e = vec![0.0f32; steps * rows];
        model.energy(&all, &per_row(steps * rows), &mut e);
        let drift = (0..rows).map(|r| {
            energy_drift(
                &(0..steps)
                    .map(|s| f64::from(e[s * rows + r]))
                    .collect::<Vec<_>>(),
            )
        });
        let drift = crate::metrics::worst(drift);
        m.energy_drift = Some(if finite { drift } else { f64::INFINITY });
    }
    m
}

/// Scores every meta-test instance; `adapted(k, i)` gives the model and latent of the k-th
/// test instance, global id `i`.
pub fn evaluate<'m>(
    tasks: &TaskSet<'_>,
    adapted: impl Fn(usize, usize) -> (&'m CpuModel, Vec<f32>),
) -> EvalReport {
    let training = training_box(tasks);
    EvalReport {
        instances: tasks
            .meta_test()
            .into_iter()
            .enumerate()
            .map(|(k, i)| {
                let (model, z) = adapted(k, i);
                evaluate_instance(tasks, i, model, &z, &training)
            })
            .collect(),
    }
}
