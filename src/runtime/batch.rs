//! Batch stepping: one call advances every body of one model and method, on any backend.
//!
//! A runtime (the Bevy plugin, a server, a plain loop) gathers the states x `[B·n]` and
//! latents z `[B·d_z]` of all bodies that share a model and a method, resolves the method
//! against the model's structure ([`resolve`]), and calls [`advance`] once per tick. The
//! tick is split into equal substeps no longer than [`StepSettings::max_substep`]. The
//! implicit midpoint ([`BatchFlow::midpoint`]) is where the backends differ:
//!
//! | backend | state | flow | midpoint iterates | predictor | Newton retry | discrete gradient |
//! |---|---|---|---|---|---|---|
//! | CPU kernel | `Vec<f32>` rows | [`CpuFlow`] | each row until it converges | extrapolated slopes ([`StepHistory`]) | failed rows only | yes |
//! | burn (e.g. wgpu) | `Tensor<B, 2>` | [`BurnFlow`] | the batch until all converge | explicit half step | no | no (midpoint instead) |

use std::collections::BTreeSet;

use burn::tensor::{Tensor, backend::Backend};

use super::StepHistory;
use crate::{
    integrate::{
        DiscreteGradient, Flow, ImplicitMidpoint, ImplicitSolver, IntegrateError, Integrator,
        Space, SplitFlow, euler_step, gather_rows, rk4_step, symplectic_euler_step, verlet_step,
        yoshida4_step,
    },
    nn::{
        Architecture, BurnFlow,
        cpu::{CpuFlow, CpuModel},
    },
};

/// A batched flow a runtime can step: f(x) ([`Flow`]), the drift/kick halves of separable
/// models ([`SplitFlow`]), and what only some backends have.
pub trait BatchFlow<S: Space>: Flow<S> + SplitFlow<S> {
    /// Whether [`BatchFlow::discrete_gradient`] is available (it decides what
    /// [`resolve`] picks for GENERIC models).
    fn has_discrete_gradient(&self) -> bool {
        false
    }

    /// One implicit-midpoint step of size `h` with the settings' fixed-point iteration.
    ///
    /// The default iterates the whole batch until its largest update meets the tolerance,
    /// from the explicit half step, and has no fallback. The CPU kernel overrides it: rows
    /// iterate until each converges on its own, start from the slopes `history` extrapolates
    /// (and record theirs in it), and rows that fail are re-solved by Newton (counted in
    /// [`StepReport::retries`]).
    ///
    /// # Errors
    /// [`IntegrateError::NotConverged`] when the solve (and its fallback) fails.
    fn midpoint(
        &self,
        settings: &ImplicitMidpoint,
        x: &S,
        h: f64,
        history: &mut StepHistory,
        report: &mut StepReport,
    ) -> Result<S, IntegrateError> {
        let _ = (history, report);
        settings.step_fixed_point(self, x, h).map(|(x1, _)| x1)
    }

    /// One discrete-gradient step of a GENERIC batch; `None` when unavailable.
    fn discrete_gradient(
        &self,
        _dg: &DiscreteGradient,
        _x: &S,
        _h: f64,
    ) -> Option<Result<S, IntegrateError>> {
        None
    }
}

impl BatchFlow<Vec<f32>> for CpuFlow<'_> {
    fn has_discrete_gradient(&self) -> bool {
        self.model.is_generic()
    }

    fn midpoint(
        &self,
        settings: &ImplicitMidpoint,
        x: &Vec<f32>,
        h: f64,
        history: &mut StepHistory,
        report: &mut StepReport,
    ) -> Result<Vec<f32>, IntegrateError> {
        let n = self.model.dim();
        let guess = history.predictor(x.len() / n.max(1), n, h);
        let mut step = settings.step_rows(self, x, h, guess.as_deref());
        report.row_evaluations += step.row_evaluations;
        if !step.failed.is_empty() {
            // Newton for the rows whose fixed point failed, and only for them.
            let dz = self.model.row_latent();
            let rows = &step.failed;
            let latents = gather_rows(self.latents, rows, dz);
            let sub = CpuFlow {
                model: self.model,
                latents: &latents,
            };
            let x0 = gather_rows(x, rows, n);
            let (x1, _) = settings
                .with_solver(ImplicitSolver::Newton)
                .step(&sub, &x0, h)?;
            for (j, &k) in rows.iter().enumerate() {
                for i in 0..n {
                    let (at, from) = (k * n + i, j * n + i);
                    step.x1[at] = x1[from];
                    step.slope[at] = ((f64::from(x1[from]) - f64::from(x0[from])) / h) as f32;
                }
            }
            report.retries += rows.len() as u64;
        }
        history.push(&step.slope, n, h);
        Ok(step.x1)
    }

    fn discrete_gradient(
        &self,
        dg: &DiscreteGradient,
        x: &Vec<f32>,
        h: f64,
    ) -> Option<Result<Vec<f32>, IntegrateError>> {
        self.model
            .is_generic()
            .then(|| dg.step(self, x, h).map(|(x1, _)| x1))
    }
}

impl<B: Backend> BatchFlow<Tensor<B, 2>> for BurnFlow<'_, B> {}

/// The method a batch of `architecture` is stepped with when `method` is asked for.
///
/// ```text
/// asked                         Hnn        SeparableHnn   Generic (DG available / not)
/// auto                          midpoint   yoshida4       discrete_gradient / midpoint
/// verlet, yoshida4, sympl. Euler midpoint  as asked       discrete_gradient / midpoint
/// midpoint                      midpoint   midpoint       discrete_gradient / midpoint
/// discrete_gradient             midpoint   midpoint       discrete_gradient / midpoint
/// dopri                         rk4        rk4            rk4  (no adaptive batch stepping)
/// rk4, euler                    as asked   as asked       as asked
/// ```
///
/// A method that does not apply falls back to the structure-preserving one that does.
pub fn resolve(
    method: Integrator,
    architecture: Architecture,
    discrete_gradient: bool,
) -> Integrator {
    let structured = match architecture {
        Architecture::Generic { .. } if discrete_gradient => Integrator::DiscreteGradient,
        Architecture::Generic { .. } | Architecture::Hnn => Integrator::Midpoint,
        Architecture::SeparableHnn => Integrator::Yoshida4,
    };
    match (method, architecture) {
        (Integrator::Auto, _) => structured,
        (Integrator::Dopri, _) => Integrator::Rk4,
        (Integrator::Rk4 | Integrator::Euler, _) => method,
        (
            Integrator::Verlet | Integrator::Yoshida4 | Integrator::SymplecticEuler,
            Architecture::SeparableHnn,
        ) => method,
        (Integrator::Midpoint | Integrator::DiscreteGradient, Architecture::SeparableHnn) => {
            Integrator::Midpoint
        }
        (_, Architecture::Hnn | Architecture::Generic { .. }) => structured,
    }
}

/// How [`advance`] steps a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepSettings {
    /// Longest substep, seconds: a tick longer than this (high speed, slow frames) is
    /// split into equal substeps. 1/60 s keeps the learned fields' fastest oscillations
    /// (pendulum periods ≳ 1 s) resolved by ≥ 60 midpoint steps per period.
    pub max_substep: f64,
    /// Implicit midpoint: fixed-point iteration to 1e-6 (the f32 round-off of the states,
    /// relative), Newton on failure where the backend has it.
    pub midpoint: ImplicitMidpoint,
    /// The discrete-gradient step of GENERIC batches.
    pub discrete_gradient: DiscreteGradient,
}

impl Default for StepSettings {
    fn default() -> Self {
        Self {
            max_substep: MAX_SUBSTEP,
            midpoint: ImplicitMidpoint::default()
                .with_tolerance(1e-6)
                .with_solver(ImplicitSolver::FixedPoint),
            discrete_gradient: DiscreteGradient::default(),
        }
    }
}

/// Default [`StepSettings::max_substep`], seconds.
pub const MAX_SUBSTEP: f64 = 1.0 / 60.0;

impl StepSettings {
    /// Equal substeps a tick of `dt` seconds is split into (at least one).
    pub fn substeps(&self, dt: f64) -> usize {
        (dt / self.max_substep).ceil().max(1.0) as usize
    }
}

/// What one [`advance`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Substeps taken.
    pub substeps: usize,
    /// Rows whose implicit-midpoint fixed-point iteration failed and were re-solved by
    /// Newton (summed over substeps).
    pub retries: u64,
    /// Field evaluations of the CPU kernel's implicit-midpoint solves summed over rows and
    /// substeps (0 for other methods and backends): per row and substep, the iterations it
    /// took, plus one where it had no history to start from.
    pub row_evaluations: usize,
    /// Rows that were or became non-finite and were kept at their last finite state
    /// ([`advance_isolating`]; always empty from [`advance`]).
    pub frozen: Vec<usize>,
}

/// Advances the batch `x` by `dt` seconds with `method` (resolved by [`resolve`]; `Auto`
/// and `Dopri` are resolved here for a Hamiltonian model without a discrete gradient) in
/// [`StepSettings::substeps`] equal substeps, with no history before this tick: see
/// [`advance_with_history`].
///
/// # Errors
/// [`IntegrateError::NotConverged`] when an implicit solve fails (after the Newton retry
/// where there is one); [`IntegrateError::BadStep`] for a non-positive or non-finite `dt`.
pub fn advance<S: Space, F: BatchFlow<S> + ?Sized>(
    flow: &F,
    method: Integrator,
    x: S,
    dt: f64,
    settings: &StepSettings,
) -> Result<(S, StepReport), IntegrateError> {
    advance_with_history(flow, method, x, dt, settings, &mut StepHistory::default())
}

/// [`advance`] continuing from the rows' previous steps: the implicit midpoint's predictor
/// is extrapolated from `history` and each substep's slopes are recorded in it (a history
/// of another shape, e.g. the default, starts over).
///
/// # Errors
/// As [`advance`].
pub fn advance_with_history<S: Space, F: BatchFlow<S> + ?Sized>(
    flow: &F,
    method: Integrator,
    x: S,
    dt: f64,
    settings: &StepSettings,
    history: &mut StepHistory,
) -> Result<(S, StepReport), IntegrateError> {
    if !(dt > 0.0 && dt.is_finite()) {
        return Err(IntegrateError::BadStep { dt });
    }
    let substeps = settings.substeps(dt);
    let h = dt / substeps as f64;
    let mut report = StepReport {
        substeps,
        ..StepReport::default()
    };
    let mut x = x;
    for _ in 0..substeps {
        x = match method {
            Integrator::Rk4 | Integrator::Dopri => rk4_step(flow, &x, h),
            Integrator::Euler => euler_step(flow, &x, h),
            Integrator::SymplecticEuler => symplectic_euler_step(flow, &x, h),
            Integrator::Verlet => verlet_step(flow, &x, h),
            Integrator::Yoshida4 => yoshida4_step(flow, &x, h),
            Integrator::DiscreteGradient if flow.has_discrete_gradient() => flow
                .discrete_gradient(&settings.discrete_gradient, &x, h)
                .expect("has_discrete_gradient")?,
            Integrator::Midpoint | Integrator::Auto | Integrator::DiscreteGradient => {
                flow.midpoint(&settings.midpoint, &x, h, history, &mut report)?
            }
        };
    }
    Ok((x, report))
}

/// Rows of `x` (`[B·n]`) that hold a non-finite value.
fn nonfinite_rows(x: &[f32], n: usize) -> impl Iterator<Item = usize> + '_ {
    x.chunks_exact(n.max(1))
        .enumerate()
        .filter(|(_, row)| row.iter().any(|v| !v.is_finite()))
        .map(|(k, _)| k)
}

/// [`advance_with_history`] on the CPU kernel, with bad rows isolated: a row that is not
/// finite, whose field is not finite (it cannot converge), or that comes out of the step
/// non-finite keeps its last finite state and is listed in [`StepReport::frozen`] (its
/// history forgotten); the other rows step on, as if the bad ones were not in the batch.
/// `x` is `[B·n]`, `z` `[B·d_z]`, `history` the rows' [`StepHistory`] (any other shape
/// starts over).
///
/// # Errors
/// As [`advance`], for a failure no bad row explains (a stiff, finite batch).
pub fn advance_isolating(
    model: &CpuModel,
    method: Integrator,
    x: &[f32],
    z: &[f32],
    dt: f64,
    settings: &StepSettings,
    history: &mut StepHistory,
) -> Result<(Vec<f32>, StepReport), IntegrateError> {
    let n = model.dim();
    let rows = x.len() / n.max(1);
    let dz = z.len() / rows.max(1);
    if history.rows() != rows {
        *history = StepHistory::new(rows, n);
    }
    let mut bad: BTreeSet<usize> = nonfinite_rows(x, n).collect();
    let mut retries = 0;
    // Each attempt either succeeds or finds new bad rows; a third failure is the batch's.
    for attempt in 0..3 {
        let good: Vec<usize> = (0..rows).filter(|k| !bad.contains(k)).collect();
        if good.is_empty() {
            break;
        }
        let (xg, zg, mut hg) = if bad.is_empty() {
            (x.to_vec(), z.to_vec(), history.clone())
        } else {
            (
                gather_rows(x, &good, n),
                gather_rows(z, &good, dz),
                history.select(&good),
            )
        };
        let flow = CpuFlow {
            model,
            latents: &zg,
        };
        let newly: Vec<usize> =
            match advance_with_history(&flow, method, xg.clone(), dt, settings, &mut hg) {
                Ok((x1, report)) => {
                    retries += report.retries;
                    let newly: Vec<usize> = nonfinite_rows(&x1, n).map(|g| good[g]).collect();
                    if newly.is_empty() {
                        let mut out = x.to_vec();
                        for (g, &k) in good.iter().enumerate() {
                            out[k * n..(k + 1) * n].copy_from_slice(&x1[g * n..(g + 1) * n]);
                        }
                        history.scatter(&good, &hg);
                        for &k in &bad {
                            history.forget(k);
                        }
                        return Ok((
                            out,
                            StepReport {
                                retries,
                                frozen: bad.into_iter().collect(),
                                ..report
                            },
                        ));
                    }
                    newly
                }
                Err(e) => {
                    let newly: Vec<usize> = nonfinite_rows(&flow.rate(&xg), n)
                        .map(|g| good[g])
                        .collect();
                    if newly.is_empty() || attempt == 2 {
                        return Err(e);
                    }
                    newly
                }
            };
        bad.extend(newly);
    }
    for k in 0..rows {
        history.forget(k);
    }
    Ok((
        x.to_vec(),
        StepReport {
            substeps: settings.substeps(dt),
            retries,
            frozen: bad.into_iter().collect(),
            ..StepReport::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_resolves_to_one_that_applies() {
        let generic = Architecture::Generic { k: 4 };
        for method in Integrator::ALL {
            for arch in [Architecture::Hnn, Architecture::SeparableHnn, generic] {
                for dg in [true, false] {
                    let r = resolve(method, arch, dg);
                    assert_ne!(r, Integrator::Auto);
                    assert_ne!(r, Integrator::Dopri);
                    if r.needs_separable() {
                        assert_eq!(arch, Architecture::SeparableHnn, "{method} → {r}");
                    }
                    if r == Integrator::DiscreteGradient {
                        assert!(dg && matches!(arch, Architecture::Generic { .. }));
                    }
                }
            }
        }
        assert_eq!(
            resolve(Integrator::Auto, generic, true),
            Integrator::DiscreteGradient
        );
        assert_eq!(
            resolve(Integrator::Auto, Architecture::SeparableHnn, true),
            Integrator::Yoshida4
        );
        assert_eq!(
            resolve(Integrator::Verlet, Architecture::Hnn, true),
            Integrator::Midpoint
        );
    }

    #[test]
    fn a_tick_is_split_into_equal_substeps() {
        let s = StepSettings::default();
        assert_eq!(s.substeps(1.0 / 64.0), 1);
        assert_eq!(s.substeps(1.0 / 60.0), 1);
        assert_eq!(s.substeps(0.05), 3);
    }
}
