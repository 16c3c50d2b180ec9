//! Files: trained models (safetensors + RON config), recorded observations (CSV), and
//! figures.
//!
//! Every file noether writes (model files, dataset caches, grid cells, reports, figures,
//! golden images) is written to a temporary file beside its destination and renamed over
//! it ([`write_atomic`], [`temp_beside`]): a run killed at any moment leaves either the old
//! file or the new one, never half of one.

pub mod args;
mod model_file;
mod observations;
pub mod plot;

pub use model_file::{
    CONFIG_EXTENSION as MODEL_CONFIG_EXTENSION, ENCODER_PREFIX, FORMAT as MODEL_FORMAT,
    MAX_CONFIG_BYTES, MAX_LAYERS, MAX_PARAMETERS, MAX_WEIGHTS_BYTES, ModelFileError, config_to_ron,
    load_encoder, load_model, load_weights, model_paths, parse_config, save_encoder, save_model,
};
pub use observations::{ObservationsFileError, parse_observations, read_observations};

/// Reads at most `limit` bytes of the file at `path`: a larger file is an
/// [`std::io::ErrorKind::InvalidData`] error that gives its size, and nothing beyond the
/// limit is read or allocated.
///
/// # Errors
/// The file's I/O errors, or the size error.
pub fn read_limited(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {limit} bytes such a file may have"),
        ));
    }
    Ok(bytes)
}

/// A temporary path beside `path`, unique to this process and keeping the extension
/// (`DIR/.NAME.PID.tmp.EXT`), so format-by-extension writers (PNG) can write to it before it
/// is renamed over `path`.
pub fn temp_beside(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    path.with_file_name(format!(".{stem}.{}.tmp{ext}", std::process::id()))
}

/// Whether `path` is one of [`temp_beside`]'s temporaries (hidden: its name starts with a
/// dot): readers of a directory of results skip them, as a write killed before its rename
/// leaves one behind with the target's extension.
pub fn is_temporary(path: &std::path::Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Writes `bytes` to `path` atomically: to [`temp_beside`] first (created with its
/// directory, flushed to disk), then renamed over `path`.
///
/// # Errors
/// The I/O errors of writing or renaming (the temporary file is removed on failure).
pub fn write_atomic(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_beside(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes.as_ref())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("noether-io-{}", std::process::id()));
        let path = dir.join("sub/report.md");
        write_atomic(&path, "one").unwrap();
        write_atomic(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let left: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file itself");
        assert!(temp_beside(&path).to_string_lossy().ends_with(".tmp.md"));
        assert!(read_limited(&path, 2).is_err() && read_limited(&path, 3).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
