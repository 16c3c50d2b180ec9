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
pub use field::{
    FIELD_GRID_RANGE, FIELD_GRID_SIZE, FieldGrid, TGC_FIELD_SAMPLES, field_error, field_ssim,
};
pub use ssim::{SSIM_SIGMA, SSIM_WINDOW, ssim};
pub use trajectory::{ROLLOUT_SUBSTEPS, relative_l2, rollout, trajectory_error};

/// The largest of `values` (0 for none), **NaN if any is NaN**. `f64::max` skips NaN, so a
/// fold with it reads a non-finite value as small: a NaN row would look converged and a NaN
/// body would vanish from a maximum. Every "worst of" in noether goes through here.
///
/// ```
/// use noether::metrics::worst;
/// assert_eq!(worst([1.0, 3.0, 2.0]), 3.0);
/// assert!(worst([1.0, f64::NAN, 2.0]).is_nan());
/// assert_eq!(worst([1.0, f64::INFINITY]), f64::INFINITY);
/// ```
pub fn worst(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().fold(0.0, |m: f64, v| {
        if m.is_nan() || v.is_nan() {
            f64::NAN
        } else {
            m.max(v)
        }
    })
}
