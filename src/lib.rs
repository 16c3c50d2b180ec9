#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

pub mod data;
pub mod device;
pub mod error;
pub mod integrate;
pub mod io;
pub mod meta;
pub mod metrics;
pub mod nn;
pub mod runtime;
pub mod systems;

pub use error::Error;

/// Protocol version of docs/protocol.md: every dataset, model file and results table carries it.
///
/// Change it only together with the tables that depend on a protocol value.
pub const PROTOCOL_VERSION: u32 = 1;

/// The most used items, by name.
pub mod prelude {
    pub use crate::Error;
    pub use crate::data::{Dataset, DatasetSpec, Split};
    pub use crate::integrate::{IntegrateError, Integrator, Trajectory, VectorField};
    pub use crate::systems::{Family, System, SystemError};
}
