//! Trained models as Bevy assets.
//!
//! A model is `NAME.model.ron` (its config) beside `NAME.safetensors` (its weights), as
//! written by `noether train`. [`NoetherModelLoader`] claims the `model.ron` extension only
//! (other `.ron` files are left to their own loaders); loading reads both files, checks them
//! (see [`noether::io`]: every tensor present, used, of the right shape and finite) and lays
//! the weights out for the CPU kernel.
//!
//! ```no_run
//! # use bevy::prelude::*;
//! # use bevy_noether::prelude::*;
//! fn load(server: Res<AssetServer>) {
//!     let model: Handle<NoetherModel> = server.load("models/pendulum-svd5.model.ron");
//! }
//! # bevy::ecs::system::assert_is_system(load);
//! ```

use bevy::tasks::futures_lite::AsyncReadExt;
use bevy::{
    app::{App, Plugin},
    asset::{Asset, AssetApp, AssetLoader, LoadContext, io::Reader},
    prelude::{Deref, DerefMut},
    reflect::TypePath,
};
use noether::{
    io::{MAX_CONFIG_BYTES, MODEL_CONFIG_EXTENSION, ModelFileError},
    nn::{ModelConfig, cpu::ModelParams},
    runtime::LearnedModel,
};

/// A trained model ([`LearnedModel`]: config, host weights, CPU kernel) as an asset.
#[derive(Asset, TypePath, Debug, Clone, Deref, DerefMut)]
pub struct NoetherModel(pub LearnedModel);

impl NoetherModel {
    /// Wraps host parameters of a model of `config`.
    pub fn new(config: ModelConfig, params: ModelParams) -> Self {
        Self(LearnedModel::new(config, params))
    }
}

impl From<LearnedModel> for NoetherModel {
    fn from(model: LearnedModel) -> Self {
        Self(model)
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

/// Loads [`NoetherModel`]s from `*.model.ron` configs and the weights beside them.
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
        AsyncReadExt::take(reader, MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|source| ModelLoadError::Read {
                path: shown.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ModelLoadError::Read {
                path: shown,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("larger than the {MAX_CONFIG_BYTES} bytes a model config may have"),
                ),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let (_, weights_path) = noether::io::model_paths(path.path());
        let weights = load_context
            .read_asset_bytes(weights_path.clone())
            .await
            .map_err(|e| ModelLoadError::Weights {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        Ok(LearnedModel::from_parts(&text, path.path(), weights, &weights_path)?.into())
    }

    fn extensions(&self) -> &[&str] {
        &[MODEL_CONFIG_EXTENSION]
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
