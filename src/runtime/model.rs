//! A trained model ready to step: its config, its host weights, and the CPU kernel built
//! from them, shared (`Arc`) between the stepping, the energy bookkeeping, population
//! fits and the adaptation worker.

use std::{path::Path, sync::Arc};

use burn::backend::Flex;

use crate::{
    io::{
        MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES, ModelFileError, load_encoder, load_weights,
        model_paths, parse_config, read_limited,
    },
    meta::Observation,
    nn::{
        ModelConfig,
        cpu::{CpuModel, Encoder, Guess, ModelParams},
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
    /// The amortised start of online adaptation, when the model file has one.
    pub encoder: Option<Arc<Encoder>>,
}

impl LearnedModel {
    /// Wraps host parameters of a model of `config`.
    pub fn new(config: ModelConfig, params: ModelParams) -> Self {
        let cpu = Arc::new(CpuModel::from_params(&params, &config));
        Self {
            config,
            params: Arc::new(params),
            cpu,
            encoder: None,
        }
    }

    /// With `encoder` as its amortised start.
    pub fn with_encoder(mut self, encoder: Option<Encoder>) -> Self {
        self.encoder = encoder.map(Arc::new);
        self
    }

    /// Reads a model file (`NAME.model.ron` beside `NAME.safetensors`, see
    /// [`crate::io::model_paths`]).
    ///
    /// # Errors
    /// Every [`ModelFileError`]: unreadable, malformed, mis-shaped or non-finite.
    pub fn load(path: &Path) -> Result<Self, ModelFileError> {
        let (config_path, weights_path) = model_paths(path);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ModelFileError::Io { path, source }
        };
        let text = read_limited(&config_path, MAX_CONFIG_BYTES).map_err(io(&config_path))?;
        let weights = read_limited(&weights_path, MAX_WEIGHTS_BYTES).map_err(io(&weights_path))?;
        Self::from_parts(
            &String::from_utf8_lossy(&text),
            &config_path,
            weights,
            &weights_path,
        )
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
        let encoder = load_encoder(&config, &weights, weights_path)?;
        let model = load_weights::<Flex>(config, weights, weights_path, &Default::default())?;
        Ok(Self::new(model.config.clone(), ModelParams::from_model(&model)).with_encoder(encoder))
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

    /// A first estimate of the latent code of a body seen doing `observations`: where a
    /// body starts, or starts over after its fit stalled. The encoder's reading of the
    /// window when the model has an encoder and the window is long enough, else the mean
    /// training latent.
    pub fn first_guess(&self, observations: &[Observation]) -> Vec<f32> {
        self.encode(observations)
            .map_or_else(|| self.mean_latent(), |g| g.latent)
    }

    /// The encoder's reading of a window: z and the unobserved start at its first
    /// observation. `None` without an encoder, or for a window shorter than its span.
    pub fn encode(&self, observations: &[Observation]) -> Option<Guess> {
        self.encoder.as_ref()?.encode(observations)
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
