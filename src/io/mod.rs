//! Files: trained models (safetensors + RON config), recorded observations (CSV), and
//! figures.

mod model_file;
mod observations;
pub mod plot;

pub use model_file::{
    CONFIG_EXTENSION as MODEL_CONFIG_EXTENSION, FORMAT as MODEL_FORMAT, ModelFileError, config_to_ron,
    load_model, load_weights, model_paths,
    parse_config, save_model,
};
pub use observations::{ObservationsFileError, parse_observations, read_observations};
