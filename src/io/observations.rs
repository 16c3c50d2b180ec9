//! Recorded observations as CSV: a header naming the columns, `t` first, one row per sample.
//!
//! ```text
//! t,q,p,energy
//! 0,1,0,4.10
//! 0.1,0.941,-0.741,4.10
//! ```
//!
//! This is exactly what `noether simulate` prints, so a recorded trajectory and a simulated
//! one read the same way. Columns named `energy` or `entropy` are ignored; of the others,
//! the first `dof` are positions and the first `dim` a full state.

use std::{path::Path, path::PathBuf};

use crate::meta::{Observation, ObservedPart};

/// Why an observations file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservationsFileError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A problem at one line of the file.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads observations for a model with state dimension `dim` and `dof` positions. `part`
/// selects what to read; `None` reads full states when the file has `dim` state columns and
/// positions when it has exactly `dof`.
///
/// # Errors
/// [`ObservationsFileError`] with the line of the first problem: missing header or `t`
/// column, too few columns, a value that is not a finite number, times that do not
/// increase, fewer than three rows.
pub fn read_observations(
    path: &Path,
    dim: usize,
    dof: usize,
    part: Option<ObservedPart>,
) -> Result<(Vec<Observation>, ObservedPart), ObservationsFileError> {
    let bytes = super::read_limited(path, MAX_OBSERVATIONS_BYTES).map_err(|source| {
        ObservationsFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let text = String::from_utf8_lossy(&bytes);
    parse_observations(&text, dim, dof, part).map_err(|(line, message)| {
        ObservationsFileError::Line {
            path: path.to_path_buf(),
            line,
            message,
        }
    })
}

/// Largest observations file read (bytes).
pub const MAX_OBSERVATIONS_BYTES: u64 = 64 << 20;

/// Most observations (rows) one recording may hold.
pub const MAX_OBSERVATIONS: usize = 1_000_000;

/// [`read_observations`] on text; errors are (1-based line, message).
///
/// # Errors
/// As [`read_observations`].
pub fn parse_observations(
    text: &str,
    dim: usize,
    dof: usize,
    part: Option<ObservedPart>,
) -> Result<(Vec<Observation>, ObservedPart), (usize, String)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (hline, header) = lines
        .next()
        .ok_or((1, "empty file: expected a header `t,…`".to_owned()))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    if names.first() != Some(&"t") {
        return Err((
            hline,
            format!("the first column must be `t`, found `{}`", names[0]),
        ));
    }
    let state_cols: Vec<usize> = (1..names.len())
        .filter(|&i| !matches!(names[i].to_ascii_lowercase().as_str(), "energy" | "entropy"))
        .collect();
    let part = match part {
        Some(p) => p,
        None if state_cols.len() >= dim => ObservedPart::States,
        None if state_cols.len() == dof => ObservedPart::Positions,
        None => {
            return Err((
                hline,
                format!(
                    "{} state columns: expected {dof} (positions) or {dim} (full states)",
                    state_cols.len()
                ),
            ));
        }
    };
    let width = part.width(dim, dof);
    if state_cols.len() < width {
        return Err((
            hline,
            format!(
                "{:?} need {width} columns after `t`, found {}",
                part,
                state_cols.len()
            ),
        ));
    }
    let mut out: Vec<Observation> = Vec::new();
    for (line, row) in lines {
        if out.len() == MAX_OBSERVATIONS {
            return Err((
                line,
                format!("more than {MAX_OBSERVATIONS} observations: split the recording"),
            ));
        }
        let cells: Vec<&str> = row.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            return Err((
                line,
                format!("{} values, the header has {}", cells.len(), names.len()),
            ));
        }
        let number = |i: usize| -> Result<f64, (usize, String)> {
            match cells[i].parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err((
                    line,
                    format!(
                        "column `{}`: `{}` is not a finite number",
                        names[i], cells[i]
                    ),
                )),
            }
        };
        let t = number(0)?;
        if out.last().is_some_and(|o| t <= o.t) {
            return Err((line, format!("time {t} does not increase")));
        }
        let values = state_cols[..width]
            .iter()
            .map(|&i| match number(i)? as f32 {
                v if v.is_finite() => Ok(v),
                _ => Err((
                    line,
                    format!(
                        "column `{}`: `{}` is beyond the f32 range the fit works in",
                        names[i], cells[i]
                    ),
                )),
            })
            .collect::<Result<_, _>>()?;
        out.push(Observation { t, values });
    }
    if out.len() < 3 {
        return Err((hline, format!("{} rows: a fit needs at least 3", out.len())));
    }
    Ok((out, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULATED: &str = "t,q,p,energy\n0,1,0,4.1\n0.1,0.94,-0.74,4.1\n0.2,0.77,-1.42,4.1\n";

    #[test]
    fn reads_simulate_output_as_states_or_positions() {
        let (obs, part) = parse_observations(SIMULATED, 2, 1, None).unwrap();
        assert_eq!(part, ObservedPart::States);
        assert_eq!(obs[1].values[..], [0.94, -0.74]);
        let (obs, part) =
            parse_observations(SIMULATED, 2, 1, Some(ObservedPart::Positions)).unwrap();
        assert_eq!(part, ObservedPart::Positions);
        assert_eq!(obs[2].values[..], [0.77]);
        assert_eq!(obs[2].t, 0.2);
    }

    #[test]
    fn names_the_bad_line() {
        let bad = "t,q\n0,1\n0.1,NaN\n0.2,3\n";
        let err = parse_observations(bad, 2, 1, None).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("`q`"), "{}", err.1);
        let back = "t,q\n0,1\n0.1,2\n0.1,3\n";
        assert_eq!(parse_observations(back, 2, 1, None).unwrap_err().0, 4);
        let header = "time,q\n0,1\n";
        assert_eq!(parse_observations(header, 2, 1, None).unwrap_err().0, 1);
        let short = "t,q\n0,1\n0.1,2\n";
        assert!(
            parse_observations(short, 2, 1, None)
                .unwrap_err()
                .1
                .contains("at least 3")
        );
        let ragged = "t,q\n0,1\n0.1\n";
        assert_eq!(parse_observations(ragged, 2, 1, None).unwrap_err().0, 3);
    }
}
