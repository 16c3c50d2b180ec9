//! A trained model ready to step: its config, its host weights, and the CPU kernel built
//! from them, shared (`Arc`) between the stepping, the energy bookkeeping, population
//! fits and the adaptation worker.

use std::{path::Path, sync::Arc};

use burn::backend::Flex;

use crate::{
    meta::{Observation, ObservedPart},
    io::{ModelFileError, load_model, load_weights, parse_config},
    nn::{
        ModelConfig,
        cpu::{CpuModel, ModelParams},
    },
    systems::Family,
};

/// A trained model: config, host weights, CPU kernel.
#[derive(Clone, Debug)]
pub struct LearnedModel {
    /// What it is (family, architecture, modulation, latent statistics, training record).
    pub config: ModelConfig,
    /// Its weights on the host (population fits, GPU upload).
    pub params: Arc<ModelParams>,
    /// The CPU inference kernel.
    pub cpu: Arc<CpuModel>,
}

impl LearnedModel {
    /// Wraps host parameters of a model of `config`.
    pub fn new(config: ModelConfig, params: ModelParams) -> Self {
        let cpu = Arc::new(CpuModel::from_params(&params, &config));
        Self {
            config,
            params: Arc::new(params),
            cpu,
        }
    }

    /// Reads a model file (`NAME.model.ron` beside `NAME.safetensors`, see
    /// [`crate::io::model_paths`]).
    ///
    /// # Errors
    /// Every [`ModelFileError`]: unreadable, malformed, mis-shaped or non-finite.
    pub fn load(path: &Path) -> Result<Self, ModelFileError> {
        let model = load_model::<Flex>(path, &Default::default())?;
        Ok(Self::new(model.config.clone(), ModelParams::from_model(&model)))
    }

    /// Builds a model from the text of its config (read from `config_path`, named in
    /// errors) and the bytes of its weights file (`weights_path`).
    ///
    /// # Errors
    /// As [`LearnedModel::load`].
    pub fn from_parts(
        config_text: &str,
        config_path: &Path,
        weights: Vec<u8>,
        weights_path: &Path,
    ) -> Result<Self, ModelFileError> {
        let config = parse_config(config_text, config_path)?;
        let model = load_weights::<Flex>(config, weights, weights_path, &Default::default())?;
        Ok(Self::new(model.config.clone(), ModelParams::from_model(&model)))
    }

    /// The family it models.
    pub fn family(&self) -> Family {
        self.config.family
    }

    /// State dimension n.
    pub fn dim(&self) -> usize {
        self.config.family.dim()
    }

    /// Latent dimension d_z.
    pub fn d_latent(&self) -> usize {
        self.config.d_latent
    }

    /// A first estimate of the latent code of a body seen doing `observations` (`part` of
    /// its state): where a body starts, or starts over after its fit stalled. The mean
    /// training latent.
    pub fn first_guess(&self, observations: &[Observation], part: ObservedPart) -> Vec<f32> {
        let _ = (observations, part);
        self.mean_latent()
    }

    /// The mean training latent as f32: where a body starts before anything is known about
    /// it (docs/protocol.md §5).
    pub fn mean_latent(&self) -> Vec<f32> {
        self.config
            .mean_latent()
            .iter()
            .map(|v| *v as f32)
            .collect()
    }
}
