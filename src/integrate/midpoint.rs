//! Implicit midpoint rule for any vector field.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::{
    IntegrateError, VectorField,
    space::{FieldFlow, Flow, Space},
};

/// Nonlinear solver for the implicit midpoint stage equation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImplicitSolver {
    /// y ← x₀ + (h/2) f(y): linear convergence at rate ≈ (h/2)‖∂f/∂x‖, no Jacobian.
    FixedPoint,
    /// Newton on G(y) = y − x₀ − (h/2) f(y) with the field's Jacobian: quadratic convergence.
    #[default]
    Newton,
}

/// A flow whose stage equation can be linearised: what Newton's method needs.
pub trait NewtonFlow<S>: Flow<S> {
    /// Solves (I − (h/2) ∂f/∂x(y)) Δ = r for Δ (row by row for batches); `None` when the
    /// matrix is singular.
    fn solve_linearized(&self, y: &S, h: f64, r: &S) -> Option<S>;
}

impl<F: VectorField + ?Sized> NewtonFlow<Vec<f64>> for FieldFlow<'_, F> {
    fn solve_linearized(&self, y: &Vec<f64>, h: f64, r: &Vec<f64>) -> Option<Vec<f64>> {
        let n = y.len();
        let mut jac = vec![0.0; n * n];
        self.0.jacobian(y, &mut jac);
        let m = DMatrix::from_fn(n, n, |i, j| {
            f64::from(u8::from(i == j)) - 0.5 * h * jac[i * n + j]
        });
        m.lu()
            .solve(&DVector::from_column_slice(r))
            .map(|d| d.iter().copied().collect())
    }
}

/// Implicit midpoint, x₁ = x₀ + h f((x₀ + x₁)/2): order 2, symplectic and symmetric for any
/// Hamiltonian (not only separable ones), conserves every quadratic invariant exactly, and
/// keeps the error of any other energy bounded.
///
/// The stage y = (x₀ + x₁)/2 solves y = x₀ + (h/2) f(y); then x₁ = 2y − x₀. The solve stops
/// when the update ‖Δy‖∞ ≤ `tolerance`·(1 + ‖y‖∞) (over every row of a batch); a solve that
/// has not converged after `max_iterations` is an [`IntegrateError::NotConverged`], never a
/// silently wrong step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImplicitMidpoint {
    /// The nonlinear solver.
    pub solver: ImplicitSolver,
    /// Relative tolerance on the stage update (default 1e-12; use ~1e-6 in f32).
    pub tolerance: f64,
    /// Iteration cap per step (default 50).
    pub max_iterations: usize,
}

impl Default for ImplicitMidpoint {
    fn default() -> Self {
        Self {
            solver: ImplicitSolver::Newton,
            tolerance: 1e-12,
            max_iterations: 50,
        }
    }
}

impl ImplicitMidpoint {
    /// The same with another solver.
    pub fn with_solver(mut self, solver: ImplicitSolver) -> Self {
        self.solver = solver;
        self
    }

    /// The same with another tolerance.
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// One step of size `h` with the configured solver; returns x₁ and the iterations taken.
    ///
    /// # Errors
    /// [`IntegrateError::NotConverged`] when the cap is reached, the update is not finite, or
    /// the Newton matrix is singular.
    pub fn step<S: Space, F: NewtonFlow<S> + ?Sized>(
        &self,
        f: &F,
        x0: &S,
        h: f64,
    ) -> Result<(S, usize), IntegrateError> {
        match self.solver {
            ImplicitSolver::FixedPoint => self.step_fixed_point(f, x0, h),
            ImplicitSolver::Newton => self.solve(
                x0,
                h,
                |y| {
                    let g = y.lincomb(&[(-1.0, x0), (-0.5 * h, &f.rate(y))]);
                    f.solve_linearized(y, h, &g)
                        .map(|delta| (y.add_scaled(-1.0, &delta), delta.max_abs()))
                },
                f,
            ),
        }
    }

    /// One step with fixed-point iteration (any [`Flow`], no Jacobian).
    ///
    /// # Errors
    /// As [`ImplicitMidpoint::step`].
    pub fn step_fixed_point<S: Space, F: Flow<S> + ?Sized>(
        &self,
        f: &F,
        x0: &S,
        h: f64,
    ) -> Result<(S, usize), IntegrateError> {
        self.solve(
            x0,
            h,
            |y| {
                let next = x0.add_scaled(0.5 * h, &f.rate(y));
                let update = next.max_abs_diff(y);
                Some((next, update))
            },
            f,
        )
    }

    /// Iterates `update(y) → (y', ‖Δy‖∞)` from the explicit-Euler half step.
    fn solve<S: Space, F: Flow<S> + ?Sized>(
        &self,
        x0: &S,
        h: f64,
        mut update: impl FnMut(&S) -> Option<(S, f64)>,
        f: &F,
    ) -> Result<(S, usize), IntegrateError> {
        let mut y = x0.add_scaled(0.5 * h, &f.rate(x0));
        let mut residual = f64::INFINITY;
        for it in 1..=self.max_iterations {
            let Some((next, du)) = update(&y) else { break };
            y = next;
            residual = du;
            if !du.is_finite() {
                break;
            }
            if du <= self.tolerance * (1.0 + y.max_abs()) {
                // x₁ = 2y − x₀
                return Ok((x0.lincomb(&[(2.0, &y), (-2.0, x0)]), it));
            }
        }
        Err(IntegrateError::NotConverged {
            solver: self.solver,
            iterations: self.max_iterations,
            residual,
            tolerance: self.tolerance,
        })
    }
}
