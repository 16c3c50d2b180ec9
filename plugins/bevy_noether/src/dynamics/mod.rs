//! Learned dynamics in the ECS: an entity with a [`NoetherBody`] is one physical system,
//! its behaviour set by its [`LatentCode`], its state a [`PhaseState`].
//!
//! 1. Load a model: `let model = server.load::<NoetherModel>("assets/models/pendulum-svd5.ron")`.
//! 2. Spawn bodies: `commands.spawn((NoetherBody::new(model), PhaseState(vec![1.0, 0.0]), LatentCode(z)))`.
//! 3. Every fixed tick, [`DynamicsPlugin`] gathers all bodies of one model (and method)
//!    into one batch, steps it with a structure-preserving integrator in one batched call
//!    per evaluation, and scatters the states back; [`BodyEnergy`] follows.
//!
//! | component | meaning |
//! |---|---|
//! | [`NoetherBody`] | the model (a `Handle<NoetherModel>`) |
//! | [`PhaseState`] | the state x, e.g. (q, p) or (q, p, S) |
//! | [`LatentCode`] | the latent z that selects this body's physics |
//! | [`StepMethod`] | the integrator (default: chosen from the model's structure) |
//! | [`HiddenTruth`] | optional true parameters (for adaptation and comparison) |
//! | [`BodyEnergy`] | learned energy (and entropy) now and at spawn |
//!
//! Integrators (all from [`noether::integrate`]):
//!
//! | [`StepMethod`] | for | guarantees |
//! |---|---|---|
//! | `Midpoint` | any Hamiltonian model | symplectic, order 2; non-convergence reported |
//! | `Verlet`, `Yoshida4` | separable models H = T(p) + V(q) | explicit, symplectic, order 2 / 4 |
//! | `DiscreteGradient` | GENERIC models | E conserved to solver tolerance, S never decreases |
//! | `Rk4` | any | order 4, not structure-preserving (for comparison) |
//! | `Euler` | any | order 1, energy drifts: a deliberately broken integrator for regression tests |

mod backend;
mod plugin;
#[cfg(feature = "render")]
mod render_device;

pub use backend::{ActiveBackend, GpuStepper, NoetherBackend, standalone_gpu};
pub use plugin::{DynamicsPlugin, EnergySystems, MAX_SUBSTEP, StepDiagnostics, gather_and_step};

use bevy::prelude::{
    Component, Deref, DerefMut, Handle, Reflect, ReflectComponent, ReflectDefault,
};

use crate::model::NoetherModel;

/// The body's state x (length n of its model's family).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct PhaseState(pub Vec<f32>);

/// The latent code z that selects this body's physics (length d_z of its model).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct LatentCode(pub Vec<f32>);

/// The integrator of a body. `Auto` picks from the model: discrete gradient for GENERIC,
/// Yoshida-4 for separable Hamiltonians, implicit midpoint otherwise.
#[derive(
    Component,
    Reflect,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[reflect(Component, Default, Debug)]
#[serde(rename_all = "snake_case")]
pub enum StepMethod {
    /// Chosen from the model's structure.
    #[default]
    Auto,
    /// Implicit midpoint (fixed point, Newton on failure).
    Midpoint,
    /// Störmer–Verlet (separable models).
    Verlet,
    /// Yoshida 4th order (separable models).
    Yoshida4,
    /// Discrete gradient (GENERIC models).
    DiscreteGradient,
    /// Classic Runge–Kutta (not structure-preserving).
    Rk4,
    /// Explicit Euler: order 1, the energy drifts. Only for comparisons and for checking
    /// that a regression test catches a broken integrator.
    Euler,
}

/// A learned system: its model. Requires the state, latent, integrator and energy
/// components (inserted with defaults when absent).
#[derive(Component, Reflect, Clone, Debug, Default)]
#[reflect(Component, Default, Debug)]
#[require(PhaseState, LatentCode, StepMethod, BodyEnergy)]
pub struct NoetherBody {
    /// The model.
    pub model: Handle<NoetherModel>,
}

impl NoetherBody {
    /// A body of `model`.
    pub fn new(model: Handle<NoetherModel>) -> Self {
        Self { model }
    }
}

/// True physical parameters of a body, in the order of its family's parameter list
/// (hidden from the model; used by adaptation and to compare against the truth).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq)]
#[reflect(Component, Default, Debug)]
pub struct HiddenTruth {
    /// Parameter values.
    pub params: Vec<f64>,
}

/// The body's learned energy E (and entropy S for GENERIC models), now and at spawn.
#[derive(Component, Reflect, Clone, Copy, Debug, PartialEq)]
#[reflect(Component, Default, Debug)]
pub struct BodyEnergy {
    /// E at the first evaluation (NaN until then).
    pub initial: f32,
    /// E now.
    pub energy: f32,
    /// S at the first evaluation (NaN for Hamiltonian models).
    pub initial_entropy: f32,
    /// S now (NaN for Hamiltonian models).
    pub entropy: f32,
    /// Largest |E − E₀|/|E₀| seen.
    pub max_drift: f32,
    /// Smallest per-tick change of S seen (GENERIC models; +∞ before two evaluations).
    pub min_entropy_change: f32,
    /// Learned temperatures ∂E/∂Sᵢ of the entropy components (GENERIC models: dno's bath,
    /// tgc's two gases; NaN otherwise).
    pub temperatures: [f32; 2],
}

impl Default for BodyEnergy {
    fn default() -> Self {
        Self {
            initial: f32::NAN,
            energy: f32::NAN,
            initial_entropy: f32::NAN,
            entropy: f32::NAN,
            max_drift: 0.0,
            min_entropy_change: f32::INFINITY,
            temperatures: [f32::NAN; 2],
        }
    }
}

impl BodyEnergy {
    /// |E − E₀| / max(|E₀|, 1e-6).
    pub fn drift(&self) -> f32 {
        (self.energy - self.initial).abs() / self.initial.abs().max(1e-6)
    }
}
