//! Test-time adaptation: fit latent codes to shots with the network frozen (docs/protocol.md §5).

use serde::{Deserialize, Serialize};

use super::{optim::AdamState, task::Points};
use crate::nn::cpu::{
    ModelParams,
    loss::{Batch, Objective},
};

/// Where the latent code starts before adaptation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatentStart {
    /// The mean of the meta-training latents (protocol v1).
    #[default]
    Mean,
    /// Zero.
    Zero,
}

/// Test-time adaptation settings (docs/protocol.md §5: 100 Adam steps at lr 1e-2 from the mean
/// latent; λ_z as in training).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaptConfig {
    /// Adam steps.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Shots per test instance.
    pub shots: usize,
    /// Initial latent.
    pub start: LatentStart,
}

impl AdaptConfig {
    /// The adaptation a trained model was validated with (its [`TrainingRecord`]), for
    /// `shots` shots; protocol defaults for an untrained model.
    ///
    /// [`TrainingRecord`]: crate::nn::TrainingRecord
    pub fn for_model(config: &crate::nn::ModelConfig, shots: usize) -> Self {
        let base = Self {
            shots,
            ..Self::default()
        };
        match &config.training {
            Some(t) => Self {
                steps: t.adapt_steps,
                lr: t.adapt_lr,
                lambda_z: t.lambda_z,
                ..base
            },
            None => base,
        }
    }
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            lr: 1e-2,
            lambda_z: 1e-2,
            shots: 10,
            start: LatentStart::Mean,
        }
    }
}

/// What adaptation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapted {
    /// One latent per task, `[d_z]` each.
    pub latents: Vec<Vec<f32>>,
    /// Shot loss (fit term) before the first step.
    pub initial_loss: f64,
    /// Shot loss (fit term) after the last step.
    pub final_loss: f64,
}

/// All `tasks` as one batch whose rows are tagged by task.
pub fn concat(tasks: &[Points]) -> Points {
    let mut all = Points::default();
    for (t, p) in tasks.iter().enumerate() {
        all.x.extend_from_slice(&p.x);
        all.dx.extend_from_slice(&p.dx);
        all.task.extend(std::iter::repeat_n(t, p.len()));
    }
    all
}

/// Adapts one latent per task to its shots, the network frozen: Adam on
/// mean ‖f(x; z) − ẋ‖² + λ_z mean_t ‖z_t‖². All tasks are adapted in one batch: Adam is
/// element-wise and each task's loss depends only on its own latent, so this equals adapting
/// them one by one (up to the scale of the mean), at the cost of one batched call per step.
pub fn adapt_latents(
    params: &ModelParams,
    tasks: &[Points],
    start: &[f32],
    cfg: &AdaptConfig,
) -> Adapted {
    let dz = start.len();
    let all = concat(tasks);
    let batch = Batch {
        x: &all.x,
        dx: &all.dx,
        task: &all.task,
    };
    let objective = Objective::new(params);
    let mut z: Vec<f32> = (0..tasks.len())
        .flat_map(|_| start.iter().copied())
        .collect();
    let mut adam = AdamState::default();
    let scale = (2.0 * cfg.lambda_z / tasks.len().max(1) as f64) as f32;
    let initial_loss = objective.loss_grad(batch, &z, false).loss;
    for _ in 0..cfg.steps {
        let mut g = objective.loss_grad(batch, &z, false).latents;
        g.iter_mut().zip(&z).for_each(|(g, z)| *g += scale * z);
        adam.update(&mut z, &g, cfg.lr);
    }
    let final_loss = objective.loss_grad(batch, &z, false).loss;
    Adapted {
        latents: z.chunks(dz.max(1)).map(<[f32]>::to_vec).collect(),
        initial_loss,
        final_loss,
    }
}
