//! Learned dynamics in the ECS: an entity with a [`NoetherBody`] is one physical system,
//! its behaviour set by its [`LatentCode`], its state a [`PhaseState`].
//!
//! 1. Load a model: `let model = server.load::<NoetherModel>("models/pendulum-svd5.model.ron")`.
//! 2. Spawn bodies: `commands.spawn((NoetherBody::new(model), PhaseState(vec![1.0, 0.0])))`.
//!    Without a [`LatentCode`] (or with an empty one) a body takes its model's mean latent
//!    once the model has loaded; give one to choose its physics.
//! 3. Every fixed tick, [`DynamicsPlugin`] gathers all bodies of one model (and method)
//!    into one batch, steps it with a structure-preserving integrator in one batched call
//!    per evaluation ([`noether::runtime::advance`]), and scatters the states back;
//!    [`BodyEnergy`] follows.
//!
//! A body whose state or latent does not fit its model (a wrong length) is not stepped: it
//! gets an [`InvalidBody`] marker with the reason, and a warning is logged once. Fix the
//! component and the marker goes away at the next tick. A body whose state is or becomes
//! non-finite is frozen at its last finite state with a [`FrozenBody`] marker and a warning
//! naming it; the rest of its batch steps on. Setting its [`PhaseState`] thaws it.
//!
//! | component | meaning |
//! |---|---|
//! | [`NoetherBody`] | the model (a `Handle<NoetherModel>`) |
//! | [`PhaseState`] | the state x, e.g. (q, p) or (q, p, S) |
//! | [`LatentCode`] | the latent z that selects this body's physics (empty: the model's mean) |
//! | [`BodyIntegrator`] | the integrator (default `auto`: chosen from the model's structure) |
//! | [`HiddenTruth`] | optional true parameters (for adaptation and comparison) |
//! | [`BodyEnergy`] | learned energy (and entropy) now and at the first step |
//! | [`StepMemory`] | the last steps' slopes: the implicit midpoint's warm start |
//! | [`InvalidBody`] | why the body is not stepped (it does not fit its model) |
//! | [`FrozenBody`] | the body's state stopped being finite; it is held at its last finite state |
//!
//! Integrators (all from [`noether::integrate`], chosen by [`noether::runtime::resolve`]):
//!
//! | [`Integrator`] | for | guarantees |
//! |---|---|---|
//! | `midpoint` | any Hamiltonian model | symplectic, order 2; non-convergence reported |
//! | `verlet`, `yoshida4` | separable models H = T(p) + V(q) | explicit, symplectic, order 2 / 4 |
//! | `discrete_gradient` | GENERIC models | E conserved to solver tolerance, S never decreases |
//! | `rk4` | any | order 4, not structure-preserving (for comparison) |
//! | `euler` | any | order 1, energy drifts: a deliberately broken integrator for regression tests |

mod backend;
mod plugin;
#[cfg(feature = "render")]
mod render_device;

pub use backend::{ActiveBackend, GpuBatch, GpuStepper, GpuTick, NoetherBackend, standalone_gpu};
pub use plugin::{
    DynamicsPlugin, DynamicsSettings, DynamicsSystems, EnergySystems, StepDiagnostics,
};

use bevy::prelude::{
    Component, Deref, DerefMut, Handle, Reflect, ReflectComponent, ReflectDefault,
};
use noether::{integrate::Integrator, runtime::EnergyRecord};

use crate::{
    model::NoetherModel,
    reflect::{EnergyRecordReflect, IntegratorReflect},
};

/// The body's state x (length n of its model's family).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct PhaseState(pub Vec<f32>);

/// The latent code z that selects this body's physics (length d_z of its model). Empty
/// means "the model's mean latent": filled in once the model has loaded.
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct LatentCode(pub Vec<f32>);

/// The integrator of a body ([`Integrator::Auto`]: discrete gradient for GENERIC models,
/// Yoshida-4 for separable Hamiltonians, implicit midpoint otherwise).
#[derive(Component, Reflect, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct BodyIntegrator(#[reflect(remote = IntegratorReflect)] pub Integrator);

/// A learned system: its model. Requires the state, latent, integrator and energy
/// components (inserted with defaults when absent).
#[derive(Component, Reflect, Clone, Debug, Default)]
#[reflect(Component, Default, Debug)]
#[require(PhaseState, LatentCode, BodyIntegrator, BodyEnergy, StepMemory)]
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

/// The body's learned energy E (and entropy S for GENERIC models), now and at the first
/// step after its latent was last set ([`EnergyRecord`]).
#[derive(Component, Reflect, Clone, Copy, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct BodyEnergy(#[reflect(remote = EnergyRecordReflect)] pub EnergyRecord);

/// What the body's last steps leave for its next one: the implicit midpoint's last two
/// slopes and step sizes (a row of [`noether::runtime::StepHistory`]), from which the next
/// step's predictor is extrapolated instead of evaluated. Kept by [`DynamicsPlugin`] on the
/// CPU kernel; empty, or forgotten when the game edits the body's [`PhaseState`] or
/// [`LatentCode`] (the old slopes belong to other physics).
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq, Deref, DerefMut)]
#[reflect(Component, Default, Debug)]
pub struct StepMemory(pub Vec<f32>);

/// The body's state before the last fixed step, kept for views that interpolate between
/// fixed steps ([`crate::transform`], the visuals). Add it to a body (the views do) and
/// [`DynamicsPlugin`] keeps it current.
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq)]
#[reflect(Component, Default, Debug)]
pub struct PreviousState(pub Vec<f32>);

impl PreviousState {
    /// (1 − α) x_prev + α x, component by component: the state a fraction `alpha` ∈ [0, 1]
    /// of the way through the current fixed step (the current state when the lengths
    /// differ, e.g. before the first step).
    pub fn lerp(&self, current: &PhaseState, alpha: f32) -> Vec<f32> {
        if self.0.len() == current.0.len() {
            self.0
                .iter()
                .zip(&current.0)
                .map(|(a, b)| a + alpha * (b - a))
                .collect()
        } else {
            current.0.clone()
        }
    }
}

/// A body whose state was or became non-finite (NaN, ±∞): it is held at its last finite
/// state and not stepped, counted by the `noether/nonfinite_bodies` diagnostic and reported
/// once with its entity. Inserted by [`DynamicsPlugin`]; removed when the game sets a new
/// [`PhaseState`].
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq)]
#[reflect(Component, Default, Debug)]
pub struct FrozenBody {
    /// What happened, and when (simulation ticks).
    pub reason: String,
}

/// Why a body is not stepped: its state or latent does not fit its model. Inserted (with a
/// warning, once) by [`DynamicsPlugin`]; removed when the body is fixed.
#[derive(Component, Reflect, Clone, Debug, Default, PartialEq)]
#[reflect(Component, Default, Debug)]
pub struct InvalidBody {
    /// What is wrong.
    pub reason: String,
}
