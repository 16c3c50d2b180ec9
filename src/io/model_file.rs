//! Model files: `NAME.model.ron` (the [`ModelConfig`], human-readable) beside
//! `NAME.safetensors` (the weights, written by burn-store). The double extension lets an
//! asset loader claim model configs without claiming every `.ron` file; configs written
//! before it (`NAME.ron`) still load.
//!
//! The weights file also carries the config it was saved with (header key
//! `noether.config`), so a `.ron` edited into a different architecture, or a weights file
//! copied beside the wrong config, is caught before any tensor is applied. Loading rebuilds
//! the model from the config, then applies the weights; every tensor must be present, used,
//! of the right shape and finite.
//!
//! ```no_run
//! use burn::backend::Flex;
//! let model = noether::io::load_model::<Flex>("assets/models/pendulum-svd5.model.ron".as_ref(), &Default::default())?;
//! # Ok::<(), noether::io::ModelFileError>(())
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use burn::store::{ApplyError, ModuleSnapshot, SafetensorsStore};
use burn::tensor::backend::Backend;

use crate::{
    PROTOCOL_VERSION,
    nn::{Architecture, Model, ModelConfig, Modulation, cpu::Encoder},
    systems::Structure,
};

/// Value of the `noether.format` header key of a weights file.
pub const FORMAT: &str = "noether-model";

/// Why a model file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `.ron` config is not valid RON for a [`ModelConfig`].
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// A config field with a value noether cannot build.
    #[error("{path}: field `{field}`: {message}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The weights file is not a noether model, or is damaged.
    #[error("{path}: not a valid noether weights file: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The config beside the weights describes another network than the weights were saved with.
    #[error(
        "{path}: config field `{field}` is {in_config} but the weights were saved with {in_weights}"
    )]
    ConfigMismatch {
        /// The weights file.
        path: PathBuf,
        /// The field that differs.
        field: &'static str,
        /// Its value in the `.ron`.
        in_config: String,
        /// Its value when the weights were saved.
        in_weights: String,
    },
    /// A tensor the config calls for is not in the weights file.
    #[error("{path}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// Tensor path.
        tensor: String,
    },
    /// A tensor in the weights file that the config has no place for.
    #[error("{path}: unused tensor `{tensor}` (the weights belong to another configuration)")]
    UnusedTensor {
        /// The weights file.
        path: PathBuf,
        /// Tensor path.
        tensor: String,
    },
    /// A tensor of the wrong shape.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// Tensor path.
        tensor: String,
        /// Shape the config calls for.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A weight that is NaN or infinite.
    #[error("{path}: tensor `{tensor}` holds a non-finite value")]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// Tensor path.
        tensor: String,
    },
}

/// Extension of a model config file.
pub const CONFIG_EXTENSION: &str = "model.ron";

/// `NAME.model.ron` and `NAME.safetensors` for a path given as `NAME`, `NAME.model.ron`,
/// `NAME.ron` or `NAME.safetensors`. When `NAME.model.ron` does not exist but a config of
/// the older naming `NAME.ron` does, that one is returned (it loads as before).
pub fn model_paths(path: &Path) -> (PathBuf, PathBuf) {
    let (config, legacy) = (named(path, CONFIG_EXTENSION), named(path, "ron"));
    let config = if !config.exists() && legacy.exists() {
        legacy
    } else {
        config
    };
    (config, named(path, "safetensors"))
}

/// `NAME.ext` for a model path given with any of its extensions or none.
fn named(path: &Path, ext: &str) -> PathBuf {
    let text = path.as_os_str().to_string_lossy();
    let stem = [".model.ron", ".ron", ".safetensors"]
        .iter()
        .find_map(|e| text.strip_suffix(e))
        .map_or_else(|| path.as_os_str().to_owned(), Into::into);
    let mut s = stem;
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The config as RON.
pub fn config_to_ron(config: &ModelConfig) -> String {
    let pretty = ron::ser::PrettyConfig::new()
        .depth_limit(3)
        .struct_names(true);
    ron::ser::to_string_pretty(config, pretty).expect("a ModelConfig serialises")
}

/// Parses a config, with line and column on error.
///
/// # Errors
/// [`ModelFileError::Syntax`] and [`ModelFileError::InvalidConfig`].
pub fn parse_config(text: &str, path: &Path) -> Result<ModelConfig, ModelFileError> {
    let config: ModelConfig = ron::from_str(text).map_err(|e| ModelFileError::Syntax {
        path: path.to_owned(),
        line: e.span.start.line,
        column: e.span.start.col,
        message: e.code.to_string(),
    })?;
    validate(&config, path)?;
    Ok(config)
}

/// Checks the values a [`ModelConfig`] may take.
/// Hidden layers a model file may declare per network.
pub const MAX_LAYERS: usize = 32;

/// Parameters a model file may ask for (2²⁵ f32: 128 MiB), checked on the config before the
/// network is built.
pub const MAX_PARAMETERS: u128 = 1 << 25;

/// Largest config file read (bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Largest weights file read (bytes): the parameters above, with room for the header.
pub const MAX_WEIGHTS_BYTES: u64 = 4 * (1 << 25) + (1 << 20);

/// An upper bound on the parameters of `c`'s network: every layer a → b of every scalar
/// network (and the GENERIC assembly networks) counted with its base weights and the most a
/// modulation adds, (a·b + b + r·(a + b))·(1 + d_z), r the rank.
fn parameter_bound(c: &ModelConfig) -> u128 {
    let n = c.family.dim() as u128;
    let dz = c.d_latent as u128;
    let rank = match c.modulation {
        Modulation::Mr { rank } | Modulation::Svd { rank } => rank as u128,
        _ => 0,
    };
    let network = |hidden: &[usize], out: u128| -> u128 {
        let widths: Vec<u128> = std::iter::once(n)
            .chain(hidden.iter().map(|&h| h as u128))
            .chain(std::iter::once(out))
            .collect();
        widths
            .windows(2)
            .map(|w| (w[0] * w[1] + w[1] + rank * (w[0] + w[1])) * (1 + dz))
            .sum()
    };
    let (scalar_nets, assembly) = match c.architecture {
        Architecture::Hnn => (1, 0),
        Architecture::SeparableHnn => (2, 0),
        Architecture::Generic { k } => (2, 2 * network(&c.assembly_hidden, (k * k) as u128)),
    };
    scalar_nets * network(&c.hidden, 1) + assembly
}

fn validate(c: &ModelConfig, path: &Path) -> Result<(), ModelFileError> {
    let bad = |field, message: String| {
        Err(ModelFileError::InvalidConfig {
            path: path.to_owned(),
            field,
            message,
        })
    };
    if c.protocol != PROTOCOL_VERSION {
        return bad(
            "protocol",
            format!(
                "{} is not the protocol of this build ({PROTOCOL_VERSION})",
                c.protocol
            ),
        );
    }
    if !(1..=256).contains(&c.d_latent) {
        return bad("d_latent", format!("{} is outside 1..=256", c.d_latent));
    }
    if c.hidden.len() > MAX_LAYERS || c.assembly_hidden.len() > MAX_LAYERS {
        return bad(
            "hidden",
            format!(
                "{} hidden layers (assembly: {}): at most {MAX_LAYERS}",
                c.hidden.len(),
                c.assembly_hidden.len()
            ),
        );
    }
    if c.hidden.is_empty() || c.hidden.iter().any(|&h| !(1..=4096).contains(&h)) {
        return bad(
            "hidden",
            format!(
                "{:?}: need at least one layer, each of width 1..=4096",
                c.hidden
            ),
        );
    }
    if c.assembly_hidden.iter().any(|&h| !(1..=4096).contains(&h)) {
        return bad(
            "assembly_hidden",
            format!("{:?}: widths must lie in 1..=4096", c.assembly_hidden),
        );
    }
    if let Modulation::Mr { rank } | Modulation::Svd { rank } = c.modulation
        && !(1..=256).contains(&rank)
    {
        return bad("modulation", format!("rank {rank} is outside 1..=256"));
    }
    let estimate = parameter_bound(c);
    if estimate > MAX_PARAMETERS {
        return bad(
            "hidden",
            format!(
                "the network would hold up to {estimate} parameters; at most {MAX_PARAMETERS} ({} MiB) are allowed before anything is allocated",
                (MAX_PARAMETERS * 4) >> 20
            ),
        );
    }
    if let Some(e) = &c.encoder {
        let (d_in, d_out) = (
            Encoder::input_width(e, c.family),
            Encoder::output_width(c.family, c.d_latent),
        );
        let problem = if !(e.span.is_finite() && e.span > 0.0 && e.span <= 60.0) {
            Some(format!("span {} s is outside (0, 60]", e.span))
        } else if !(2..=1024).contains(&e.grid) {
            Some(format!("grid {} is outside 2..=1024", e.grid))
        } else if e.hidden.len() > MAX_LAYERS || e.hidden.iter().any(|&h| !(1..=4096).contains(&h))
        {
            Some(format!(
                "hidden {:?}: at most {MAX_LAYERS} layers of width 1..=4096",
                e.hidden
            ))
        } else if e.input_mean.len() != d_in || e.input_std.len() != d_in {
            Some(format!("input_mean and input_std need {d_in} values each"))
        } else if e.output_mean.len() != d_out || e.output_std.len() != d_out {
            Some(format!(
                "output_mean and output_std need {d_out} values each"
            ))
        } else if e
            .input_mean
            .iter()
            .chain(&e.output_mean)
            .any(|v| !v.is_finite())
            || e.input_std
                .iter()
                .chain(&e.output_std)
                .any(|v| !(v.is_finite() && *v > 0.0))
        {
            Some("means must be finite and standard deviations finite and positive".into())
        } else {
            None
        };
        if let Some(message) = problem {
            return bad("encoder", message);
        }
    }
    let generic = c.family.spec().structure == Structure::Generic;
    match c.architecture {
        Architecture::Generic { k } if !generic => {
            return bad(
                "architecture",
                format!(
                    "{} is Hamiltonian; use Hnn or SeparableHnn, not Generic(k: {k})",
                    c.family
                ),
            );
        }
        Architecture::Generic { k } if !(1..=64).contains(&k) => {
            return bad(
                "architecture",
                format!("assembly rank k = {k} is outside 1..=64"),
            );
        }
        Architecture::Hnn | Architecture::SeparableHnn if generic => {
            return bad(
                "architecture",
                format!("{} is a GENERIC family; use Generic(k: 4)", c.family),
            );
        }
        _ => {}
    }
    if !c.latents.mean.is_empty() && c.latents.mean.len() != c.d_latent {
        return bad(
            "latents",
            format!(
                "mean has {} components, d_latent is {}",
                c.latents.mean.len(),
                c.d_latent
            ),
        );
    }
    if c.latents
        .mean
        .iter()
        .chain(&c.latents.std)
        .any(|v| !v.is_finite())
    {
        return bad("latents", "mean and std must be finite".into());
    }
    Ok(())
}

/// Writes `NAME.model.ron` and `NAME.safetensors`.
///
/// # Errors
/// [`ModelFileError::Io`].
pub fn save_model<B: Backend>(model: &Model<B>, path: &Path) -> Result<(), ModelFileError> {
    let (ron_path, weights_path) = (named(path, CONFIG_EXTENSION), named(path, "safetensors"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelFileError::Io { path, source }
    };
    if let Some(dir) = ron_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let ron = config_to_ron(&model.config);
    let compact = ron::to_string(&model.config).expect("a ModelConfig serialises");
    let mut store = SafetensorsStore::from_bytes(None)
        .metadata("noether.format", FORMAT)
        .metadata("noether.config", compact);
    model
        .save_into(&mut store)
        .map_err(|e| ModelFileError::Weights {
            path: weights_path.clone(),
            message: e.to_string(),
        })?;
    let bytes = store.get_bytes().map_err(|e| ModelFileError::Weights {
        path: weights_path.clone(),
        message: e.to_string(),
    })?;
    let bytes = sorted_header(&bytes).map_err(|message| ModelFileError::Weights {
        path: weights_path.clone(),
        message,
    })?;
    // Weights first, then the config: a run killed between the two leaves a config that
    // disagrees with the weights' own copy of it, which loading reports.
    super::write_atomic(&weights_path, bytes).map_err(io(&weights_path))?;
    super::write_atomic(
        &ron_path,
        format!(
            "// noether model config (docs/protocol.md §4); weights in the .safetensors beside it\n{ron}\n"
        ),
    )
    .map_err(io(&ron_path))
}

/// The safetensors file `bytes` with its JSON header's keys (and the metadata's) in sorted
/// order: the writer keeps metadata in a hash map, whose order changes from run to run, and
/// a model file must be a function of its seed and settings, bit for bit. The header stays
/// padded to 8 bytes, as the format asks.
fn sorted_header(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let bad = |e: &dyn std::fmt::Display| format!("rewriting the header: {e}");
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(|| bad(&"no header"))?;
    let header = bytes
        .get(8..8 + len)
        .ok_or_else(|| bad(&"truncated header"))?;
    let mut top: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&e))?;
    if let Some(meta) = top.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> =
            serde_json::from_value(meta.take()).map_err(|e| bad(&e))?;
        *meta = serde_json::to_value(sorted).map_err(|e| bad(&e))?;
    }
    let mut text = serde_json::to_string(&top).map_err(|e| bad(&e))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Reads `NAME.model.ron` (or an older `NAME.ron`) and `NAME.safetensors` and rebuilds
/// the model on `device`.
///
/// # Errors
/// Every [`ModelFileError`] variant but `Io` on write.
pub fn load_model<B: Backend>(path: &Path, device: &B::Device) -> Result<Model<B>, ModelFileError> {
    let (ron_path, weights_path) = model_paths(path);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelFileError::Io { path, source }
    };
    let text = super::read_limited(&ron_path, MAX_CONFIG_BYTES).map_err(io(&ron_path))?;
    let config = parse_config(&String::from_utf8_lossy(&text), &ron_path)?;
    let bytes = super::read_limited(&weights_path, MAX_WEIGHTS_BYTES).map_err(io(&weights_path))?;
    load_weights(config, bytes, &weights_path, device)
}

/// Builds the model of `config` and applies the weights in `bytes` (a safetensors file).
///
/// # Errors
/// [`ModelFileError::Weights`], [`ModelFileError::ConfigMismatch`],
/// [`ModelFileError::MissingTensor`], [`ModelFileError::UnusedTensor`],
/// [`ModelFileError::ShapeMismatch`], [`ModelFileError::NonFinite`].
pub fn load_weights<B: Backend>(
    config: ModelConfig,
    bytes: Vec<u8>,
    weights_path: &Path,
    device: &B::Device,
) -> Result<Model<B>, ModelFileError> {
    let path = weights_path.to_owned();
    let weights_err = |message: String| ModelFileError::Weights {
        path: path.clone(),
        message,
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| weights_err(e.to_string()))?;
    let header = meta.metadata().clone().unwrap_or_default();
    if header.get("noether.format").map(String::as_str) != Some(FORMAT) {
        return Err(weights_err(format!(
            "header `noether.format` is not `{FORMAT}`"
        )));
    }
    let saved = header
        .get("noether.config")
        .ok_or_else(|| weights_err("header has no `noether.config`".into()))?;
    let saved: ModelConfig =
        ron::from_str(saved).map_err(|e| weights_err(format!("embedded config: {e}")))?;
    check_same_network(&config, &saved, &path)?;

    let mut model = config.init::<B>(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .validate(false)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| weights_err(e.to_string()))?;
    if let Some(e) = result.errors.first() {
        return Err(match e {
            ApplyError::ShapeMismatch {
                path: tensor,
                expected,
                found,
            } => ModelFileError::ShapeMismatch {
                path,
                tensor: tensor.clone(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            },
            other => weights_err(other.to_string()),
        });
    }
    if let Some((tensor, _)) = result.missing.first() {
        return Err(ModelFileError::MissingTensor {
            path,
            tensor: tensor.clone(),
        });
    }
    // The encoder section is read by `load_encoder`.
    if let Some(tensor) = result
        .unused
        .iter()
        .find(|t| !t.starts_with(ENCODER_PREFIX))
    {
        return Err(ModelFileError::UnusedTensor {
            path,
            tensor: tensor.clone(),
        });
    }
    for snapshot in model.collect(None, None, false) {
        let data = snapshot
            .to_data()
            .map_err(|e| weights_err(format!("{e:?}")))?;
        let finite = data.iter::<f64>().all(f64::is_finite);
        if !finite {
            return Err(ModelFileError::NonFinite {
                path,
                tensor: snapshot.full_path(),
            });
        }
    }
    Ok(model)
}

/// The fields that shape the network must agree between the `.ron` and the weights.
fn check_same_network(
    config: &ModelConfig,
    saved: &ModelConfig,
    path: &Path,
) -> Result<(), ModelFileError> {
    let fields: [(&'static str, String, String); 6] = [
        (
            "family",
            config.family.to_string(),
            saved.family.to_string(),
        ),
        (
            "architecture",
            format!("{:?}", config.architecture),
            format!("{:?}", saved.architecture),
        ),
        (
            "modulation",
            config.modulation.to_string(),
            saved.modulation.to_string(),
        ),
        (
            "d_latent",
            config.d_latent.to_string(),
            saved.d_latent.to_string(),
        ),
        (
            "hidden",
            format!("{:?}", config.hidden),
            format!("{:?}", saved.hidden),
        ),
        (
            "assembly_hidden",
            format!("{:?}", config.assembly_hidden),
            format!("{:?}", saved.assembly_hidden),
        ),
    ];
    for (field, in_config, in_weights) in fields {
        if in_config != in_weights {
            return Err(ModelFileError::ConfigMismatch {
                path: path.to_owned(),
                field,
                in_config,
                in_weights,
            });
        }
    }
    Ok(())
}

/// Names of the encoder section's tensors start with this.
pub const ENCODER_PREFIX: &str = "encoder.";

/// The encoder section of a model file: the network `config.encoder` describes, with its
/// weights from the `encoder.*` tensors of the weights file `bytes`. `None` for a model
/// without one (older files).
///
/// # Errors
/// [`ModelFileError::Weights`] for an unreadable file or a tensor that is not f32,
/// [`ModelFileError::MissingTensor`], [`ModelFileError::ShapeMismatch`],
/// [`ModelFileError::NonFinite`], [`ModelFileError::UnusedTensor`] for an `encoder.*`
/// tensor the section has no place for.
pub fn load_encoder(
    config: &ModelConfig,
    bytes: &[u8],
    weights_path: &Path,
) -> Result<Option<Encoder>, ModelFileError> {
    let path = weights_path.to_owned();
    let Some(spec) = &config.encoder else {
        return Ok(None);
    };
    let file =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| ModelFileError::Weights {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let mut encoder = Encoder::new(spec.clone(), config.family, config.d_latent, 0);
    let shapes = encoder.shapes();
    for ((name, shape), values) in shapes.iter().zip(encoder.tensors_mut()) {
        let tensor = file
            .tensor(name)
            .map_err(|_| ModelFileError::MissingTensor {
                path: path.clone(),
                tensor: name.clone(),
            })?;
        if tensor.shape() != shape.as_slice() {
            return Err(ModelFileError::ShapeMismatch {
                path,
                tensor: name.clone(),
                expected: shape.clone(),
                found: tensor.shape().to_vec(),
            });
        }
        if tensor.dtype() != safetensors::Dtype::F32 {
            return Err(ModelFileError::Weights {
                path,
                message: format!("tensor `{name}` is {:?}, not F32", tensor.dtype()),
            });
        }
        for (v, b) in values.iter_mut().zip(tensor.data().chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if !values.iter().all(|v| v.is_finite()) {
            return Err(ModelFileError::NonFinite {
                path,
                tensor: name.clone(),
            });
        }
    }
    if let Some(extra) = file
        .names()
        .into_iter()
        .find(|n| n.starts_with(ENCODER_PREFIX) && !shapes.iter().any(|(s, _)| s == *n))
    {
        return Err(ModelFileError::UnusedTensor {
            path,
            tensor: extra.to_owned(),
        });
    }
    Ok(Some(encoder))
}

/// Adds (or replaces) the encoder section of the model file at `path`: its spec goes into
/// the config (both the `.model.ron` and the weights file's embedded copy), its weights
/// beside the model's as `encoder.*` tensors. The model's own tensors are kept bit for
/// bit; both files are written atomically, weights first.
///
/// # Errors
/// Every error of reading the model file, and [`ModelFileError::Io`] on write.
pub fn save_encoder(path: &Path, encoder: &Encoder) -> Result<(), ModelFileError> {
    let (ron_path, weights_path) = model_paths(path);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelFileError::Io { path, source }
    };
    let text = super::read_limited(&ron_path, MAX_CONFIG_BYTES).map_err(io(&ron_path))?;
    let mut config = parse_config(&String::from_utf8_lossy(&text), &ron_path)?;
    let bytes = super::read_limited(&weights_path, MAX_WEIGHTS_BYTES).map_err(io(&weights_path))?;
    let weights_err = |message: String| ModelFileError::Weights {
        path: weights_path.clone(),
        message,
    };
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| weights_err(e.to_string()))?;
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| weights_err(e.to_string()))?;
    let mut header = meta.metadata().clone().unwrap_or_default();
    config.encoder = Some(encoder.spec().clone());
    header.insert(
        "noether.config".into(),
        ron::to_string(&config).expect("a ModelConfig serialises"),
    );
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = encoder
        .tensors()
        .into_iter()
        .map(|(name, shape, values)| {
            (
                name,
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with(ENCODER_PREFIX))
        .collect();
    for (name, shape, data) in &raw {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map_err(|e| weights_err(e.to_string()))?;
        views.push((name.clone(), view));
    }
    let out =
        safetensors::serialize(views, Some(header)).map_err(|e| weights_err(e.to_string()))?;
    let out = sorted_header(&out).map_err(weights_err)?;
    super::write_atomic(&weights_path, out).map_err(io(&weights_path))?;
    super::write_atomic(
        &ron_path,
        format!(
            "// noether model config (docs/protocol.md §4); weights in the .safetensors beside it\n{}\n",
            config_to_ron(&config)
        ),
    )
    .map_err(io(&ron_path))
}
