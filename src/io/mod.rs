//! Files: trained models (safetensors + RON config) and figures.

mod model_file;
pub mod plot;

pub use model_file::{
    FORMAT as MODEL_FORMAT, ModelFileError, config_to_ron, load_model, load_weights, model_paths,
    parse_config, save_model,
};
