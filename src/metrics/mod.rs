//! Evaluation metrics of docs/protocol.md §6, as functions over plain arrays so that the same code
//! scores ground truth, learned fields and rollouts.
//!
//! | metric | function | definition |
//! |---|---|---|
//! | ε_traj | [`trajectory_error`] | ‖X̂ − X‖₂ / ‖X‖₂ over the sample times of one trajectory |
//! | ε_field | [`field_error`] | ‖F̂ − F‖₂ / ‖F‖₂ over a [`FieldGrid`] |
//! | SSIM | [`ssim`], [`field_ssim`] | mean structural similarity, Gaussian window 7 (σ = 1.5) |
//! | energy drift | [`energy_drift`] | maxₜ \|H(x̂ₜ) − H(x̂₀)\| / \|H(x̂₀)\| |
//! | GENERIC residuals | [`GenericResiduals`] | ‖L∇S‖, ‖M∇E‖, \|dE/dt\|, min dS/dt |
//!
//! Rollouts for ε_traj integrate the learned field from the true x₀ with RK4 at Δt/10
//! ([`rollout`]).

mod conservation;
mod field;
mod ssim;
mod trajectory;

pub use conservation::{GenericResiduals, energy_drift};
pub use field::{FIELD_GRID_RANGE, FIELD_GRID_SIZE, FieldGrid, field_error, field_ssim};
pub use ssim::{SSIM_SIGMA, SSIM_WINDOW, ssim};
pub use trajectory::{ROLLOUT_SUBSTEPS, relative_l2, rollout, trajectory_error};
