//! Trained models as Bevy assets.
//!
//! A model is `NAME.ron` (its config) beside `NAME.safetensors` (its weights), as written
//! by `noether train`. Loading the `.ron` through the asset server reads both, checks them
//! (see [`noether::io`]) and lays the weights out for the CPU kernel.
//!
//! ```no_run
//! # use bevy::prelude::*;
//! # use bevy_noether::prelude::*;
//! fn load(server: Res<AssetServer>) {
//!     let model: Handle<NoetherModel> = server.load("assets/models/pendulum-svd5.ron");
//! }
//! ```

use std::sync::Arc;

use bevy::{
    app::{App, Plugin},
    asset::{Asset, AssetApp, AssetLoader, LoadContext, io::Reader},
    reflect::TypePath,
};
use burn::backend::Flex;
use noether::{
    io::{ModelFileError, load_weights, parse_config},
    nn::{
        ModelConfig,
        cpu::{CpuModel, ModelParams},
    },
};

/// A trained model: its config, its weights, and the CPU kernel built from them.
#[derive(Asset, TypePath, Debug, Clone)]
pub struct NoetherModel {
    /// What it is (family, architecture, modulation, latent statistics, training record).
    pub config: ModelConfig,
    /// Its weights on the host.
    pub params: Arc<ModelParams>,
    /// The CPU inference kernel.
    pub cpu: Arc<CpuModel>,
}

impl NoetherModel {
    /// Wraps host parameters of a model of `config`.
    pub fn new(config: ModelConfig, params: ModelParams) -> Self {
        let cpu = Arc::new(CpuModel::from_params(&params, &config));
        Self {
            config,
            params: Arc::new(params),
            cpu,
        }
    }

    /// State dimension.
    pub fn dim(&self) -> usize {
        self.config.family.dim()
    }

    /// The mean training latent as f32.
    pub fn mean_latent(&self) -> Vec<f32> {
        self.config
            .mean_latent()
            .iter()
            .map(|v| *v as f32)
            .collect()
    }
}

/// Why a model asset failed to load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelLoadError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Read {
        /// The asset path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The weights file beside the config could not be read.
    #[error("{path}: cannot read the weights beside it: {message}")]
    Weights {
        /// The asset path.
        path: String,
        /// What the asset server said.
        message: String,
    },
    /// The config or weights are invalid.
    #[error(transparent)]
    Model(#[from] ModelFileError),
}

/// Loads [`NoetherModel`]s from `.ron` configs.
#[derive(Default, TypePath)]
pub struct NoetherModelLoader;

impl AssetLoader for NoetherModelLoader {
    type Asset = NoetherModel;
    type Settings = ();
    type Error = ModelLoadError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        load_context: &mut LoadContext<'_>,
    ) -> Result<NoetherModel, ModelLoadError> {
        let path = load_context.path().clone();
        let shown = path.to_string();
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|source| ModelLoadError::Read {
                path: shown.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&bytes);
        let config = parse_config(&text, path.path())?;
        let weights_path = path.path().with_extension("safetensors");
        let weights = load_context
            .read_asset_bytes(weights_path.clone())
            .await
            .map_err(|e| ModelLoadError::Weights {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let model = load_weights::<Flex>(config, weights, &weights_path, &Default::default())?;
        Ok(NoetherModel::new(
            model.config.clone(),
            ModelParams::from_model(&model),
        ))
    }

    fn extensions(&self) -> &[&str] {
        &["ron"]
    }
}

/// Registers [`NoetherModel`] and its loader.
#[derive(Default)]
pub struct ModelPlugin;

impl Plugin for ModelPlugin {
    fn build(&self, app: &mut App) {
        init_model_assets(app);
        app.register_asset_loader(NoetherModelLoader);
    }
}

/// Registers the [`NoetherModel`] asset type unless it already is: the plugins that read
/// models call this, so each works with the loader plugin disabled or replaced (models then
/// come from `Assets::add` or another loader).
pub fn init_model_assets(app: &mut App) {
    if !app
        .world()
        .contains_resource::<bevy::asset::Assets<NoetherModel>>()
    {
        app.init_asset::<NoetherModel>();
    }
}
