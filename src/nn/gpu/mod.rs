//! The fused GPU step: one CubeCL kernel per (model shape, integrator) batch per tick, on a
//! burn-wgpu device (docs/protocol.md §4 for the network it evaluates).
//!
//! - [`kernel`]: the kernel, J∇H of the modulated network (every modulation, per-row
//!   latents) or a GENERIC model's L∇E + M∇S, and the integrator's stages or fixed-point
//!   iterations in one launch, with the energy (and entropy) and per-row flags;
//! - [`PackedNet`]: a model's weights as one buffer and a table of offsets; models of one
//!   network shape pack as a group ([`PackedNet::group`]) that one dispatch steps, each
//!   cube of rows with its own model's table;
//! - [`FusedStepper`]: device-resident batches, row-wise writes, asynchronous read-back,
//!   and [`GpuCounters`] of launches and blocking syncs.
//!
//! Every model runs here: general Hamiltonians H(q, p; z) with Euler, RK4 or implicit
//! midpoint, separable ones H = T(p; z) + V(q; z) with those or symplectic Euler, Verlet
//! and Yoshida, GENERIC models with the discrete gradient ([`fuses`]).

pub mod kernel;
mod pack;
mod stepper;

pub use pack::{NetShape, PackError, PackedNet};
pub use stepper::{
    BatchPart, DeviceBatch, DeviceModel, FusedStepper, GpuCounters, GpuStepError, Readback, fuses,
};
