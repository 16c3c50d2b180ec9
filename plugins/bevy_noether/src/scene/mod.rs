//! Population scenes as assets: `*.noether.ron` files that describe populations of learned
//! systems (the format and its checks: [`noether::runtime::SceneDescription`]).
//!
//! ```ron
//! NoetherScene(
//!     name: "pendulums",
//!     populations: [(
//!         name: "long and short",
//!         family: pendulum,
//!         model: "../models/pendulum-svd5.model.ron",
//!         count: 100,
//!         params: {"m": Uniform(0.5, 2.0), "l": List([0.5, 1.0, 2.0])},
//!         layout: Grid(columns: 10, spacing: 80.0, origin: (-400.0, 300.0)),
//!         latent: Fit(shots: 10),
//!     )],
//! )
//! ```
//!
//! A scene's model paths are relative to the scene file, and the models load as the scene's
//! asset dependencies: a scene is ready (`LoadedWithDependencies`) when its models are. Put
//! a [`NoetherSceneRoot`] on an entity to spawn the populations as its children
//! ([`ScenePlugin`]); each body of a `Fit` population steps from the model's mean latent
//! until its fit (test-time adaptation to shots of its hidden truth, on the async compute
//! pool) lands, and the root's [`SceneReady`] event fires when every fit has landed.
//!
//! A file is checked when it loads: a syntax error names the line and column; a value
//! that cannot be built names the population and the field. The app keeps running and
//! logs the error; fix the file and it reloads.

mod plugin;

pub use noether::runtime::{
    BodyInit, Distribution, InitialState, LatentInit, Layout, MAX_COUNT, ObserveSpec,
    PopulationSpec, SceneDescription, SceneError,
};
pub(crate) use plugin::load_error_message;
pub use plugin::{
    NoetherSceneRoot, Population, ScenePlugin, SceneReady, SceneStatus, SceneSystems,
};

use bevy::{
    asset::{Asset, AssetLoader, Handle, LoadContext, io::Reader},
    prelude::{Deref, DerefMut},
    reflect::TypePath,
    tasks::futures_lite::AsyncReadExt,
};

/// Largest scene file read (bytes); nothing beyond is read.
pub const MAX_SCENE_BYTES: u64 = 4 << 20;

use crate::model::NoetherModel;

/// A scene asset: its description and its models (asset dependencies, one per population,
/// in order).
#[derive(Asset, TypePath, Clone, Debug, Deref, DerefMut)]
pub struct NoetherScene {
    /// The populations.
    #[deref]
    pub description: SceneDescription,
    /// The model of each population, loaded with the scene.
    #[dependency]
    pub models: Vec<Handle<NoetherModel>>,
}

/// Loads `*.noether.ron` scenes and, as dependencies, the models they name (relative to
/// the scene file).
#[derive(Default, TypePath)]
pub struct NoetherSceneLoader;

impl AssetLoader for NoetherSceneLoader {
    type Asset = NoetherScene;
    type Settings = ();
    type Error = SceneError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        load_context: &mut LoadContext<'_>,
    ) -> Result<NoetherScene, SceneError> {
        let path = load_context.path().clone();
        let shown = path.to_string();
        let mut bytes = Vec::new();
        AsyncReadExt::take(reader, MAX_SCENE_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| SceneError::Read {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_SCENE_BYTES {
            return Err(SceneError::Read {
                path: shown,
                message: format!("larger than the {MAX_SCENE_BYTES} bytes a scene file may have"),
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| SceneError::Read {
            path: shown.clone(),
            message: format!("not UTF-8: {e}"),
        })?;
        let description = SceneDescription::parse(&text, &shown)?;
        let mut models = Vec::with_capacity(description.populations.len());
        for p in &description.populations {
            let model_path = path
                .resolve_embed_str(&p.model)
                .map_err(|e| SceneError::Invalid {
                    path: shown.clone(),
                    population: p.name.clone(),
                    field: "model".into(),
                    message: format!("`{}` is not an asset path: {e}", p.model),
                })?;
            models.push(load_context.load::<NoetherModel>(model_path));
        }
        Ok(NoetherScene {
            description,
            models,
        })
    }

    fn extensions(&self) -> &[&str] {
        &["noether.ron"]
    }
}
