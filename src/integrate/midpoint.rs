//! Implicit midpoint rule for any vector field.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::{
    IntegrateError, VectorField,
    space::{FieldFlow, Flow, Space, gather_rows},
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

/// A batch of independent systems, each a row of f32 values, whose field can be evaluated on
/// any subset of its rows: what the row-wise solve [`ImplicitMidpoint::step_rows`] needs.
pub trait RowFlow {
    /// Row width n.
    fn row_dim(&self) -> usize;
    /// f at the states `x` (`[rows.len()·n]`) of the batch rows `rows` (ascending).
    fn rate_rows(&self, rows: &[usize], x: &[f32]) -> Vec<f32>;
}

/// What one [`ImplicitMidpoint::step_rows`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RowStep {
    /// x₁ `[B·n]`; rows in [`RowStep::failed`] hold x₀.
    pub x1: Vec<f32>,
    /// The step's slope (x₁ − x₀)/h = f(y) per row `[B·n]` (NaN rows where it failed): what
    /// the next step's predictor is extrapolated from.
    pub slope: Vec<f32>,
    /// Rows whose iteration did not converge within the cap or became non-finite.
    pub failed: Vec<usize>,
    /// Field evaluations summed over rows (the predictor's included): a batch whose rows all
    /// converge after k iterations from a guess costs k·B.
    pub row_evaluations: usize,
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

    /// One fixed-point step of a batch, row by row: a row stops iterating as soon as its own
    /// update meets the tolerance, ‖Δyᵣ‖∞ ≤ `tolerance`·(1 + ‖yᵣ‖∞), so one stiff row does
    /// not make every row iterate; the field is evaluated on the rows still iterating only.
    ///
    /// Each row starts from y⁰ = x₀ + (h/2) k̂ with k̂ its row of `guess` (a predicted
    /// midpoint slope, e.g. extrapolated from the previous steps' slopes: no evaluation), or,
    /// where `guess` is `None` or the row holds a NaN, from the explicit half step
    /// y⁰ = x₀ + (h/2) f(x₀). A row that has not converged after `max_iterations`, or whose
    /// update is not finite, is listed in [`RowStep::failed`] and keeps x₀: the caller
    /// re-solves it (Newton) or reports it.
    pub fn step_rows<F: RowFlow + ?Sized>(
        &self,
        f: &F,
        x0: &[f32],
        h: f64,
        guess: Option<&[f32]>,
    ) -> RowStep {
        let n = f.row_dim().max(1);
        let rows = x0.len() / n;
        let half = (0.5 * h) as f32;
        let mut y = x0.to_vec();
        let mut row_evaluations = 0;
        let guessed =
            |r: usize| guess.is_some_and(|g| g[r * n..(r + 1) * n].iter().all(|v| !v.is_nan()));
        let cold: Vec<usize> = (0..rows).filter(|&r| !guessed(r)).collect();
        if let Some(g) = guess {
            for r in (0..rows).filter(|&r| guessed(r)) {
                for i in r * n..(r + 1) * n {
                    y[i] = x0[i] + half * g[i];
                }
            }
        }
        if !cold.is_empty() {
            let k = f.rate_rows(&cold, &gather_rows(x0, &cold, n));
            row_evaluations += cold.len();
            for (j, &r) in cold.iter().enumerate() {
                for i in 0..n {
                    y[r * n + i] = x0[r * n + i] + half * k[j * n + i];
                }
            }
        }
        let mut slope = vec![f32::NAN; x0.len()];
        let mut failed = Vec::new();
        let mut active: Vec<usize> = (0..rows).collect();
        for _ in 0..self.max_iterations {
            if active.is_empty() {
                break;
            }
            let k = f.rate_rows(&active, &gather_rows(&y, &active, n));
            row_evaluations += active.len();
            let mut still = Vec::with_capacity(active.len());
            for (j, &r) in active.iter().enumerate() {
                let (mut du, mut ymax) = (0.0f64, 0.0f64);
                for i in 0..n {
                    let (at, kv) = (r * n + i, k[j * n + i]);
                    let next = x0[at] + half * kv;
                    // `max` would skip a NaN: fold it in explicitly.
                    du = crate::metrics::worst([du, f64::from((next - y[at]).abs())]);
                    ymax = ymax.max(f64::from(next.abs()));
                    y[at] = next;
                    slope[at] = kv;
                }
                if !du.is_finite() {
                    failed.push(r);
                } else if du > self.tolerance * (1.0 + ymax) {
                    still.push(r);
                }
            }
            active = still;
        }
        failed.extend(active);
        failed.sort_unstable();
        let mut x1 = x0.to_vec();
        for r in 0..rows {
            if failed.binary_search(&r).is_ok() {
                slope[r * n..(r + 1) * n].fill(f32::NAN);
            } else {
                // x₁ = 2y − x₀
                for i in r * n..(r + 1) * n {
                    x1[i] = 2.0 * y[i] - x0[i];
                }
            }
        }
        RowStep {
            x1,
            slope,
            failed,
            row_evaluations,
        }
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
