//! The crate-wide error: one variant per concern, each wrapping that concern's error enum.

use crate::{data::DataError, integrate::IntegrateError, io::ModelFileError, systems::SystemError};

/// Anything that can go wrong in `noether`, by concern.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A family, parameter set or state was rejected.
    #[error(transparent)]
    System(#[from] SystemError),
    /// An integrator failed (non-convergence, non-finite state, unsupported structure).
    #[error(transparent)]
    Integrate(#[from] IntegrateError),
    /// A dataset could not be generated, read or written.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model file could not be read or written.
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
}
