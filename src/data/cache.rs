//! The on-disk dataset format and the cache that regenerates stale files.
//!
//! A dataset file is a [safetensors](https://github.com/huggingface/safetensors) file with
//! four little-endian `F64` tensors and a string header:
//!
//! | tensor | shape | content |
//! |---|---|---|
//! | `params` | `[80, n_params]` | μ per instance, in [`crate::systems::FamilySpec::params`] order |
//! | `t` | `[samples]` | sample times |
//! | `x` | `[80, 10, samples, dim]` | states |
//! | `dx` | `[80, 10, samples, dim]` | exact derivatives ẋ |
//!
//! | header key | value |
//! |---|---|
//! | `format` | `noether-dataset` |
//! | `protocol` | [`crate::PROTOCOL_VERSION`] |
//! | `family`, `seed`, `split` | the [`DatasetSpec`] |
//! | `crc32` | CRC-32 (IEEE) of the tensor bytes in the order `params`, `t`, `x`, `dx` |
//!
//! In Python: `safetensors.numpy.load_file(path)["x"]`.
//!
//! [`load_or_generate`] regenerates a file whose header names another family, seed, split
//! or protocol version; a file that is truncated, is not safetensors, lacks a tensor, has
//! inconsistent shapes or fails its checksum is a [`DataError::Corrupt`]: it is never
//! silently used or overwritten.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{DataError, Dataset, DatasetSpec, INSTANCES, Split, TRAJECTORIES};
use crate::{PROTOCOL_VERSION, systems::Family};

/// Value of the `format` header key.
pub const FORMAT: &str = "noether-dataset";

/// What [`load_or_generate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// A valid file for this spec was read.
    Hit,
    /// No file existed; one was generated and written.
    Generated,
    /// A file for another spec or protocol version was replaced.
    Regenerated,
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_f64(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
        .collect()
}

fn checksum(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    parts.iter().for_each(|p| h.update(p));
    h.finalize()
}

impl Dataset {
    /// Writes the dataset to `path` (atomically: a temporary file renamed into place, so an
    /// interrupted write never leaves a truncated file).
    ///
    /// # Errors
    /// [`DataError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let io = |source| DataError::Io {
            path: path.to_owned(),
            source,
        };
        let (dim, np) = (self.dim(), self.n_params());
        let parts = [
            ("params", f64_bytes(&self.params), vec![INSTANCES, np]),
            ("t", f64_bytes(&self.times()), vec![self.samples]),
            (
                "x",
                f64_bytes(&self.x),
                vec![INSTANCES, TRAJECTORIES, self.samples, dim],
            ),
            (
                "dx",
                f64_bytes(&self.dx),
                vec![INSTANCES, TRAJECTORIES, self.samples, dim],
            ),
        ];
        let crc = checksum(&parts.iter().map(|p| p.1.as_slice()).collect::<Vec<_>>());
        let header = HashMap::from([
            ("format".to_owned(), FORMAT.to_owned()),
            ("protocol".to_owned(), PROTOCOL_VERSION.to_string()),
            ("family".to_owned(), self.spec.family.to_string()),
            ("seed".to_owned(), self.spec.seed.to_string()),
            ("split".to_owned(), self.spec.split.to_string()),
            ("crc32".to_owned(), crc.to_string()),
        ]);
        let views: Vec<(&str, TensorView<'_>)> = parts
            .iter()
            .map(|(name, bytes, shape)| {
                (
                    *name,
                    TensorView::new(Dtype::F64, shape.clone(), bytes)
                        .expect("shape matches the data"),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(header)).expect("valid tensors serialise");
        crate::io::write_atomic(path, bytes).map_err(io)
    }

    /// Reads a dataset file, checking everything the format promises.
    ///
    /// # Errors
    /// [`DataError::Io`] and [`DataError::Corrupt`].
    pub fn load(path: &Path) -> Result<Dataset, DataError> {
        let bytes = fs::read(path).map_err(|source| DataError::Io {
            path: path.to_owned(),
            source,
        })?;
        let (spec, protocol) = read_header(path, &bytes)?;
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if protocol != PROTOCOL_VERSION {
            return Err(corrupt(format!(
                "protocol version {protocol}, this build reads {PROTOCOL_VERSION}"
            )));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let family = spec.family;
        let fs = family.spec();
        let (dim, np) = (family.dim(), fs.params.len());
        let tensor = |name: &str, shape: &[usize]| -> Result<&[u8], DataError> {
            let view = st
                .tensor(name)
                .map_err(|_| corrupt(format!("missing tensor `{name}`")))?;
            if view.dtype() != Dtype::F64 {
                return Err(corrupt(format!(
                    "tensor `{name}` has dtype {:?}, expected F64",
                    view.dtype()
                )));
            }
            if view.shape() != shape {
                return Err(corrupt(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            Ok(view.data())
        };
        let params = tensor("params", &[INSTANCES, np])?;
        let t = tensor("t", &[fs.samples])?;
        let x = tensor("x", &[INSTANCES, TRAJECTORIES, fs.samples, dim])?;
        let dx = tensor("dx", &[INSTANCES, TRAJECTORIES, fs.samples, dim])?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let stored: u32 = header_value(path, meta.metadata(), "crc32")?;
        let actual = checksum(&[params, t, x, dx]);
        if stored != actual {
            return Err(corrupt(format!(
                "checksum mismatch: header says {stored}, data gives {actual}"
            )));
        }
        let data = Dataset {
            spec,
            dt: fs.dt,
            samples: fs.samples,
            params: bytes_f64(params),
            x: bytes_f64(x),
            dx: bytes_f64(dx),
        };
        if bytes_f64(t) != data.times() {
            return Err(corrupt(format!(
                "sample times differ from protocol v1 (Δt = {})",
                fs.dt
            )));
        }
        Ok(data)
    }
}

fn header_value<T: std::str::FromStr>(
    path: &Path,
    meta: &Option<HashMap<String, String>>,
    key: &str,
) -> Result<T, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let raw = meta
        .as_ref()
        .and_then(|m| m.get(key))
        .ok_or_else(|| corrupt(format!("header has no `{key}`")))?;
    raw.parse()
        .map_err(|_| corrupt(format!("header `{key}` = `{raw}` is not valid")))
}

/// Parses and checks the header; returns the spec and protocol version it declares.
fn read_header(path: &Path, bytes: &[u8]) -> Result<(DatasetSpec, u32), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| corrupt(format!("not a complete safetensors file ({e})")))?;
    let meta = meta.metadata();
    let format: String = header_value(path, meta, "format")?;
    if format != FORMAT {
        return Err(corrupt(format!("format `{format}`, expected `{FORMAT}`")));
    }
    let family: String = header_value(path, meta, "family")?;
    let family: Family = family.parse().map_err(|e| corrupt(format!("{e}")))?;
    let split: String = header_value(path, meta, "split")?;
    let split: Split = split.parse().map_err(corrupt)?;
    let spec = DatasetSpec {
        family,
        seed: header_value(path, meta, "seed")?,
        split,
    };
    Ok((spec, header_value(path, meta, "protocol")?))
}

/// Path of `spec`'s cache file in `dir`.
pub fn cache_path(dir: &Path, spec: &DatasetSpec) -> PathBuf {
    dir.join(spec.file_name())
}

/// Reads `spec`'s dataset from `dir`, or generates and writes it when the file is missing or
/// its header names another spec or protocol version.
///
/// # Errors
/// [`DataError::Corrupt`] for a file that exists but cannot be trusted (it is left in place
/// for inspection), [`DataError::Io`], and generation errors.
pub fn load_or_generate(
    dir: &Path,
    spec: &DatasetSpec,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<(Dataset, CacheStatus), DataError> {
    let path = cache_path(dir, spec);
    let status = match fs::read(&path) {
        Ok(bytes) => {
            let (found, protocol) = read_header(&path, &bytes)?;
            if found == *spec && protocol == PROTOCOL_VERSION {
                return Ok((Dataset::load(&path)?, CacheStatus::Hit));
            }
            CacheStatus::Regenerated
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::Generated,
        Err(source) => return Err(DataError::Io { path, source }),
    };
    let data = Dataset::try_generate(spec, progress)?;
    data.save(&path)?;
    Ok((data, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("noether-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_hit_and_regeneration() {
        let dir = temp_dir("roundtrip");
        let spec = DatasetSpec::new(Family::Duffing, 3);
        let (a, status) = load_or_generate(&dir, &spec, &|_| ()).unwrap();
        assert_eq!(status, CacheStatus::Generated);
        let (b, status) = load_or_generate(&dir, &spec, &|_| ()).unwrap();
        assert_eq!(status, CacheStatus::Hit);
        assert_eq!(a, b);
        // A file whose header names another seed is regenerated in place.
        let other = DatasetSpec::new(Family::Duffing, 4);
        Dataset::generate(&other)
            .save(&cache_path(&dir, &spec))
            .unwrap();
        let (c, status) = load_or_generate(&dir, &spec, &|_| ()).unwrap();
        assert_eq!(status, CacheStatus::Regenerated);
        assert_eq!(c, a);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_corrupt_files_are_clear_errors() {
        let dir = temp_dir("corrupt");
        let spec = DatasetSpec::new(Family::MassSpring, 0);
        let path = cache_path(&dir, &spec);
        Dataset::generate(&spec).save(&path).unwrap();
        let good = fs::read(&path).unwrap();

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("empty", Vec::new()),
            (
                "not safetensors",
                b"hello world, this is not a dataset".to_vec(),
            ),
            ("flipped payload byte", {
                let mut b = good.clone();
                let n = b.len();
                b[n - 100] ^= 0x40;
                b
            }),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let err = load_or_generate(&dir, &spec, &|_| ()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, DataError::Corrupt { .. }), "{what}: {msg}");
            assert!(
                msg.contains(&spec.file_name()),
                "{what}: the message names the file: {msg}"
            );
            // Left in place for inspection, not overwritten.
            assert_eq!(fs::read(&path).unwrap(), bytes, "{what}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
