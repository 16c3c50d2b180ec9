//! Integrators over a generic vector field, in `f64`.
//!
//! | method | [`Integrator`] | order | symplectic | needs | conserves |
//! |---|---|---|---|---|---|
//! | explicit Euler | `euler` | 1 | no | any field | nothing (energy grows on oscillators) |
//! | classic Runge–Kutta | `rk4` | 4 | no | any field | nothing (energy drifts slowly) |
//! | Dormand–Prince 5(4), adaptive | `dopri` | 5 | no | any field | to its tolerance (reference) |
//! | symplectic Euler | `symplectic-euler` | 1 | yes | separable H | a modified energy (bounded error) |
//! | Störmer–Verlet (leapfrog) | `verlet` | 2 | yes | separable H | a modified energy (bounded error) |
//! | Yoshida 4th order | `yoshida4` | 4 | yes | separable H | a modified energy (bounded error) |
//! | implicit midpoint | `midpoint` | 2 | yes | any field | quadratic invariants exactly, any H to bounded error |
//! | discrete gradient ([`DiscreteGradient`]) | `discrete-gradient` | 2 | — | a learned GENERIC batch | E to solver tolerance, S never decreases |
//! | chosen for what is stepped | `auto` | — | — | — | see [`Integrator::Auto`] |
//!
//! The reference for datasets and tests is [`Dopri5`] at rtol = atol = 1e-10 (docs/protocol.md §3).
//! Every fixed-step method is written once, generic over the state representation
//! ([`space`]): the same function steps one f64 system, an f32 batch on the CPU and a burn
//! tensor batch on a GPU. For ground-truth systems the [`Stepper`] front end checks that a
//! method applies (Verlet needs a separable Hamiltonian) and reports failures instead of
//! returning garbage: a non-finite state or a non-converged implicit solve is an
//! [`IntegrateError`].

mod discrete_gradient;
mod dopri;
mod explicit;
mod midpoint;
pub mod space;
mod symplectic;

pub use discrete_gradient::{DiscreteGradient, MetriplecticRows};
pub use dopri::{Dopri5, DopriStats};
pub use explicit::{euler_step, rk4_step};
pub use midpoint::{ImplicitMidpoint, ImplicitSolver, NewtonFlow, RowFlow, RowStep};
pub use space::{
    FieldFlow, Flow, SMALL_DIM, SeparableFlow, SmallState, Space, SplitFlow, gather_rows,
};
pub use symplectic::{symplectic_euler_step, verlet_step, yoshida4_step, yoshida4_weights};

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::systems::{Family, System};

/// An autonomous vector field ẋ = f(x).
pub trait VectorField {
    /// State dimension.
    fn dim(&self) -> usize;

    /// Writes f(x) to `dx` (both of length [`VectorField::dim`]).
    fn eval(&self, x: &[f64], dx: &mut [f64]);

    /// Writes the Jacobian ∂f/∂x (row-major, `[dim, dim]`) at `x` to `jac`.
    ///
    /// The default uses central differences with step 1e-6 (1 + |xᵢ|), accurate to about
    /// 1e-9; fields with a closed form may override it.
    fn jacobian(&self, x: &[f64], jac: &mut [f64]) {
        let n = self.dim();
        let (mut xp, mut fp, mut fm) = (x.to_vec(), vec![0.0; n], vec![0.0; n]);
        for j in 0..n {
            let h = 1e-6 * (1.0 + x[j].abs());
            xp[j] = x[j] + h;
            self.eval(&xp, &mut fp);
            xp[j] = x[j] - h;
            self.eval(&xp, &mut fm);
            xp[j] = x[j];
            for i in 0..n {
                jac[i * n + j] = (fp[i] - fm[i]) / (2.0 * h);
            }
        }
    }
}

/// A separable Hamiltonian field H = T(p) + V(q) split into its two halves, with
/// x = (q, p), q and p each of length [`SeparableField::dof`].
pub trait SeparableField {
    /// Degrees of freedom (half the state dimension).
    fn dof(&self) -> usize;
    /// q̇ = ∂T/∂p.
    fn velocity(&self, p: &[f64], qdot: &mut [f64]);
    /// ṗ = −∂V/∂q.
    fn force(&self, q: &[f64], pdot: &mut [f64]);
}

/// The integrators, by name: `--integrator` on the command line, `integrator:` in scenes,
/// the method of a runtime batch ([`crate::runtime`]). One enum for every place a method is
/// chosen; not every method applies everywhere (see [`Integrator::applies_to_systems`] and
/// [`crate::runtime::resolve`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integrator {
    /// Chosen for what is stepped: for a learned model, from its structure (discrete
    /// gradient for GENERIC, Yoshida-4 for a separable H, implicit midpoint otherwise; see
    /// [`crate::runtime::resolve`]); for a ground-truth system, the reference [`Dopri5`].
    #[default]
    Auto,
    /// Explicit Euler, order 1.
    Euler,
    /// Classic Runge–Kutta, order 4.
    Rk4,
    /// Adaptive Dormand–Prince 5(4) at rtol = atol = 1e-10 between output times.
    Dopri,
    /// Symplectic Euler (p first), order 1, separable H only.
    SymplecticEuler,
    /// Störmer–Verlet, order 2, separable H only.
    Verlet,
    /// Yoshida's 4th-order composition of Verlet, separable H only.
    Yoshida4,
    /// Implicit midpoint, order 2, symplectic for any H.
    Midpoint,
    /// The average-vector-field discrete gradient of a learned GENERIC batch
    /// ([`DiscreteGradient`]): E conserved to solver tolerance, S never decreases.
    DiscreteGradient,
}

impl Integrator {
    /// Every integrator.
    pub const ALL: [Integrator; 9] = [
        Integrator::Auto,
        Integrator::Euler,
        Integrator::Rk4,
        Integrator::Dopri,
        Integrator::SymplecticEuler,
        Integrator::Verlet,
        Integrator::Yoshida4,
        Integrator::Midpoint,
        Integrator::DiscreteGradient,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Integrator::Auto => "auto",
            Integrator::Euler => "euler",
            Integrator::Rk4 => "rk4",
            Integrator::Dopri => "dopri",
            Integrator::SymplecticEuler => "symplectic-euler",
            Integrator::Verlet => "verlet",
            Integrator::Yoshida4 => "yoshida4",
            Integrator::Midpoint => "midpoint",
            Integrator::DiscreteGradient => "discrete-gradient",
        }
    }

    /// Order of accuracy (global error O(hᵖ)); 0 for [`Integrator::Auto`], which is not
    /// one method.
    pub fn order(self) -> u32 {
        match self {
            Integrator::Auto => 0,
            Integrator::Euler | Integrator::SymplecticEuler => 1,
            Integrator::Verlet | Integrator::Midpoint | Integrator::DiscreteGradient => 2,
            Integrator::Rk4 | Integrator::Yoshida4 => 4,
            Integrator::Dopri => 5,
        }
    }

    /// Whether the method is symplectic.
    pub fn is_symplectic(self) -> bool {
        matches!(
            self,
            Integrator::SymplecticEuler
                | Integrator::Verlet
                | Integrator::Yoshida4
                | Integrator::Midpoint
        )
    }

    /// Whether the method needs a separable Hamiltonian H = T(p) + V(q).
    pub fn needs_separable(self) -> bool {
        matches!(
            self,
            Integrator::SymplecticEuler | Integrator::Verlet | Integrator::Yoshida4
        )
    }

    /// Whether [`Stepper`] can step a ground-truth [`System`] with it (every method but the
    /// discrete gradient, which needs a learned GENERIC batch).
    pub fn applies_to_systems(self) -> bool {
        self != Integrator::DiscreteGradient
    }
}

impl fmt::Display for Integrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Integrator {
    type Err = IntegrateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().replace('_', "-").to_ascii_lowercase();
        let alias = match wanted.as_str() {
            "rk45" | "dopri5" | "dormand-prince" => "dopri",
            "leapfrog" | "stormer-verlet" => "verlet",
            "implicit-midpoint" => "midpoint",
            "yoshida" => "yoshida4",
            "dg" | "avf" => "discrete-gradient",
            other => other,
        };
        Integrator::ALL
            .into_iter()
            .find(|i| i.name() == alias)
            .ok_or_else(|| IntegrateError::UnknownIntegrator { name: s.to_owned() })
    }
}

/// Why an integration failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrateError {
    /// The name is not one of [`Integrator::ALL`].
    #[error(
        "unknown integrator `{name}`; known integrators: auto, euler, rk4, dopri, symplectic-euler, verlet, yoshida4, midpoint, discrete-gradient"
    )]
    UnknownIntegrator {
        /// The name given.
        name: String,
    },
    /// An explicit symplectic method asked of a field without a separable Hamiltonian.
    #[error(
        "{integrator} needs a separable Hamiltonian H = T(p) + V(q), which {family} does not have; use midpoint, rk4 or dopri"
    )]
    NotSeparable {
        /// The method asked for.
        integrator: Integrator,
        /// The family.
        family: Family,
    },
    /// The implicit solve did not reach its tolerance within its iteration cap.
    #[error(
        "implicit midpoint did not converge: residual {residual:.3e} > tolerance {tolerance:.1e} after {iterations} iterations of {solver:?}"
    )]
    NotConverged {
        /// The nonlinear solver.
        solver: ImplicitSolver,
        /// Iterations taken (the cap).
        iterations: usize,
        /// Last update size ‖Δy‖∞.
        residual: f64,
        /// The tolerance.
        tolerance: f64,
    },
    /// The adaptive step size fell below its floor (a stiff or singular field).
    #[error(
        "adaptive step size fell to {step:.3e} at t = {time}: the field is too stiff or singular there"
    )]
    StepSizeUnderflow {
        /// Time at which it happened.
        time: f64,
        /// The step size.
        step: f64,
    },
    /// More adaptive steps than the cap.
    #[error("more than {max_steps} adaptive steps between t = {from} and t = {to}")]
    TooManySteps {
        /// The cap.
        max_steps: usize,
        /// Start time.
        from: f64,
        /// End time.
        to: f64,
    },
    /// A method that cannot step this kind of field (the discrete gradient asked of a
    /// ground-truth system).
    #[error("{integrator} cannot step {what}")]
    NotApplicable {
        /// The method asked for.
        integrator: Integrator,
        /// What it was asked to step.
        what: String,
    },
    /// The state became NaN or infinite.
    #[error("the state became non-finite after step {step} (t = {time}): {state:?}")]
    NonFinite {
        /// Step index (1-based).
        step: usize,
        /// Time reached.
        time: f64,
        /// The state.
        state: Vec<f64>,
    },
    /// A non-positive or non-finite step size.
    #[error("step size must be positive and finite, found {dt}")]
    BadStep {
        /// The step size given.
        dt: f64,
    },
}

/// One stepping front end for every method on a ground-truth system (f64).
///
/// ```
/// use noether::{integrate::{Integrator, Stepper}, systems::Family};
/// let sys = Family::MassSpring.build(&[1.0, 1.0]).unwrap();
/// let mut stepper = Stepper::new(Integrator::Verlet, 2);
/// let mut x = vec![1.0, 0.0];
/// for _ in 0..100 {
///     stepper.step(sys.as_ref(), &mut x, 0.01).unwrap();
/// }
/// assert!((x[0] - 1.0_f64.cos()).abs() < 1e-4);
/// ```
#[derive(Clone, Debug)]
pub struct Stepper {
    method: Integrator,
    dopri: Dopri5,
    midpoint: ImplicitMidpoint,
}

impl Stepper {
    /// A stepper for states of dimension `dim`, with each method's default settings
    /// ([`Integrator::Auto`] is the reference Dormand–Prince).
    pub fn new(method: Integrator, dim: usize) -> Self {
        let method = match method {
            Integrator::Auto => Integrator::Dopri,
            m => m,
        };
        Self {
            method,
            dopri: Dopri5::new(dim),
            midpoint: ImplicitMidpoint::default(),
        }
    }

    /// The method.
    pub fn method(&self) -> Integrator {
        self.method
    }

    /// The implicit-midpoint settings (solver, tolerance, iteration cap).
    pub fn midpoint_mut(&mut self) -> &mut ImplicitMidpoint {
        &mut self.midpoint
    }

    /// Checks that the method applies to `system`.
    ///
    /// # Errors
    /// [`IntegrateError::NotSeparable`] for Verlet-type methods on a non-separable system,
    /// [`IntegrateError::NotApplicable`] for the discrete gradient.
    pub fn check(&self, system: &dyn System) -> Result<(), IntegrateError> {
        self.separable_of(system).map(|_| ())
    }

    fn separable_of<'a>(
        &self,
        system: &'a dyn System,
    ) -> Result<Option<&'a dyn SeparableField>, IntegrateError> {
        if !self.method.applies_to_systems() {
            return Err(IntegrateError::NotApplicable {
                integrator: self.method,
                what: format!("the ground-truth {} system", system.family()),
            });
        }
        if !self.method.needs_separable() {
            return Ok(None);
        }
        system
            .hamiltonian()
            .and_then(|h| h.separable())
            .map(Some)
            .ok_or(IntegrateError::NotSeparable {
                integrator: self.method,
                family: system.family(),
            })
    }

    /// Advances `x` by one step of size `h` (for `dopri`: adaptively from 0 to `h`).
    ///
    /// # Errors
    /// [`IntegrateError::NotSeparable`], [`IntegrateError::NotApplicable`],
    /// [`IntegrateError::NotConverged`] and the adaptive step errors; `x` is unchanged after
    /// a failed implicit solve.
    pub fn step(
        &mut self,
        system: &dyn System,
        x: &mut [f64],
        h: f64,
    ) -> Result<(), IntegrateError> {
        let separable = self.separable_of(system)?;
        if self.method == Integrator::Dopri {
            self.dopri.integrate(system, x, 0.0, h)?;
            return Ok(());
        }
        let flow = FieldFlow(system);
        let x0 = x.to_vec();
        let x1 = match (self.method, separable) {
            (Integrator::Euler, _) => euler_step(&flow, &x0, h),
            (Integrator::Rk4, _) => rk4_step(&flow, &x0, h),
            (Integrator::Midpoint, _) => self.midpoint.step(&flow, &x0, h)?.0,
            (Integrator::SymplecticEuler, Some(s)) => {
                symplectic_euler_step(&SeparableFlow(s), &x0, h)
            }
            (Integrator::Verlet, Some(s)) => verlet_step(&SeparableFlow(s), &x0, h),
            (Integrator::Yoshida4, Some(s)) => yoshida4_step(&SeparableFlow(s), &x0, h),
            (method, _) => {
                unreachable!("{method} is handled above or needs a separable field, checked above")
            }
        };
        x.copy_from_slice(&x1);
        Ok(())
    }
}

/// States sampled at equally spaced times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Sample times, `[samples]`.
    pub t: Vec<f64>,
    /// States, row-major `[samples, dim]`.
    pub x: Vec<f64>,
    /// State dimension.
    pub dim: usize,
}

impl Trajectory {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// The state at sample `i`.
    pub fn state(&self, i: usize) -> &[f64] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterator over the states.
    pub fn states(&self) -> impl Iterator<Item = &[f64]> {
        self.x.chunks_exact(self.dim)
    }
}

/// Integrates `system` from `x0` for `steps` steps of size `dt` (docs/protocol.md §3 sampling),
/// recording every step (so `steps + 1` samples).
///
/// # Errors
/// [`IntegrateError::BadStep`] for `dt ≤ 0`, [`IntegrateError::NonFinite`] when the state
/// blows up, and the method's own errors.
pub fn simulate(
    system: &dyn System,
    method: Integrator,
    x0: &[f64],
    dt: f64,
    steps: usize,
) -> Result<Trajectory, IntegrateError> {
    let dim = x0.len();
    // Capacity for the usual sizes only: a huge `steps` grows the vectors as it goes (and
    // fails on a real out-of-memory, not on a reservation up front).
    let reserve = (steps + 1).min(1 << 16);
    let mut out = Trajectory {
        t: Vec::with_capacity(reserve),
        x: Vec::with_capacity(reserve * dim),
        dim,
    };
    simulate_each(system, method, x0, dt, steps, |t, x| {
        out.t.push(t);
        out.x.extend_from_slice(x);
        Ok::<(), IntegrateError>(())
    })?;
    Ok(out)
}

/// [`simulate`] without keeping the trajectory: `visit(t, x)` sees each of the
/// `steps + 1` samples as it is computed (memory O(dim) whatever `steps`), and may stop the
/// run with its own error.
///
/// # Errors
/// As [`simulate`], or `visit`'s.
pub fn simulate_each<E: From<IntegrateError>>(
    system: &dyn System,
    method: Integrator,
    x0: &[f64],
    dt: f64,
    steps: usize,
    mut visit: impl FnMut(f64, &[f64]) -> Result<(), E>,
) -> Result<(), E> {
    if !(dt > 0.0 && dt.is_finite()) {
        return Err(IntegrateError::BadStep { dt }.into());
    }
    let mut stepper = Stepper::new(method, x0.len());
    stepper.check(system)?;
    let mut x = x0.to_vec();
    visit(0.0, &x)?;
    for step in 1..=steps {
        stepper.step(system, &mut x, dt)?;
        let time = step as f64 * dt;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(IntegrateError::NonFinite {
                step,
                time,
                state: x,
            }
            .into());
        }
        visit(time, &x)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
