//! Fitting latent codes to observed motion: the trajectory loss behind online adaptation.
//!
//! A game sees bodies move; it rarely sees their momenta. Given observations yₖ of one body
//! at times t₀ < t₁ < … < t_M (positions q or full states x; irregular spacing and noise
//! allowed), we look for the latent code z — the network stays frozen — whose learned flow
//! Φ reproduces them:
//!
//! ```text
//! L(z, u) = 1/(M·m) Σₖ₌₁ᴹ ‖P Φ_{tₖ−t₀}(x₀; z) − yₖ‖² + λ_z ‖z‖²,   x₀ = (y₀, u)
//! ```
//!
//! P keeps the m observed components. The start x₀ is the first observation; when only
//! positions are observed, its unobserved part u (momenta, and entropies for GENERIC
//! models) is unknown and is fitted together with z, starting from the momentum whose
//! learned velocity ∂H/∂p matches the finite-difference velocity of the first samples.
//! Positions alone may not pin every parameter: a pendulum's q(t) depends on its length
//! only, its mass just scales p = m l² q̇, so (z, u) are then determined up to that scale —
//! and the predicted positions, which is what was observed, are not affected.
//!
//! L is a sum of squares of a residual r(θ), θ = (z, u), so it is minimised by
//! Levenberg–Marquardt: δ = −(JᵀJ + μ(diag JᵀJ + εI))⁻¹ Jᵀr with the exact Jacobian J of
//! the discrete rollout (forward sensitivities, [`rollout_sensitivities`]) for Hamiltonian
//! models and forward differences of rollouts for GENERIC ones. Every rollout of one step —
//! the bodies' base points with their sensitivities (or perturbations), then each round of
//! damping trials — is one batch of
//! rows of the CPU kernel (each row its own latent) stepped in lockstep by the shared RK4
//! ([`rk4_step`]): interval k of row r spans its own Δt_{r,k}, so the batch integrates
//! ẋ = Δt_{r,k} f(x; z_r) over a unit of "interval time", which lets bodies with different
//! timestamps share one batched call per RK4 stage.

use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::{
    integrate::{Flow, Space, rk4_step},
    nn::cpu::{CpuFlow, CpuModel},
};

/// Which part of the state an observation holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedPart {
    /// The generalized positions q only (what a game usually sees).
    #[default]
    Positions,
    /// The full state x.
    States,
}

impl ObservedPart {
    /// Number of observed components of a state of dimension `dim` for a family with
    /// `dof` degrees of freedom.
    pub fn width(self, dim: usize, dof: usize) -> usize {
        match self {
            Self::Positions => dof,
            Self::States => dim,
        }
    }
}

/// The values of one observation, held inline up to [`INLINE_VALUES`] (every shipped
/// family observes at most four): copying a window of them, as every adaptation job does,
/// allocates nothing per sample. Serialised as a plain sequence.
pub type Values = SmallVec<[f32; INLINE_VALUES]>;

/// Observed values held without a heap allocation ([`Values`]).
pub const INLINE_VALUES: usize = 4;

/// One observation: time and the observed values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Time in seconds.
    pub t: f64,
    /// Observed values (q, or the full state).
    pub values: Values,
}

/// Settings of the trajectory fit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// λ_z of the ‖z‖² penalty.
    pub lambda_z: f64,
    /// Longest RK4 sub-step of a rollout, in seconds.
    pub max_substep: f64,
    /// Relative forward-difference step of the Jacobian.
    pub fd_step: f64,
    /// Initial Levenberg–Marquardt damping μ.
    pub initial_damping: f64,
    /// An accepted step that lowers the loss by less than this fraction converges the fit.
    pub rel_tol: f64,
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            lambda_z: 1e-4,
            max_substep: 0.05,
            fd_step: 1e-3,
            initial_damping: 1e-1,
            rel_tol: 1e-3,
        }
    }
}

impl FitConfig {
    /// Whether a step from `before` to `after` means the fit has converged.
    pub fn converged(&self, before: f64, after: f64) -> bool {
        after.is_finite() && after <= before && before - after <= self.rel_tol * before
    }
}

/// The observations of one body and what they hold.
#[derive(Clone, Copy, Debug)]
pub struct Track<'a> {
    /// Observations, by increasing time (at least two).
    pub observations: &'a [Observation],
    /// What each observation holds.
    pub part: ObservedPart,
}

/// What the fit of one body carries from step to step.
#[derive(Clone, Debug, PartialEq)]
pub struct FitState {
    /// The latent code z.
    pub latent: Vec<f32>,
    /// The unobserved part u of the first observed state (empty for full states).
    pub hidden: Vec<f32>,
    /// Levenberg–Marquardt damping μ.
    pub damping: f64,
}

impl FitState {
    /// Starts a fit from `latent`, with the unobserved part of the start inferred from the
    /// first samples' velocity under that latent.
    pub fn new(model: &CpuModel, track: Track<'_>, latent: Vec<f32>, config: &FitConfig) -> Self {
        let hidden = initial_hidden(model, &[track], std::slice::from_ref(&latent))
            .pop()
            .unwrap_or_default();
        Self {
            latent,
            hidden,
            damping: config.initial_damping,
        }
    }
}

/// What one Levenberg–Marquardt step did to one body.
#[derive(Clone, Debug, PartialEq)]
pub struct FitStep {
    /// Loss at the start of the step (+∞ when the rollout was not finite).
    pub loss_before: f64,
    /// Loss after the step (equal to `loss_before` when the step was rejected).
    pub loss: f64,
    /// Whether the step lowered the loss and was taken.
    pub accepted: bool,
    /// Where the rollout of the step taken ended: the full state at the track's last
    /// observation (`None` when the step was rejected). [`extended_loss`] goes on from it.
    pub end: Option<Vec<f32>>,
}

/// Why observations cannot be fitted.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ObservedError {
    /// Fewer than three observations.
    #[error("need at least 3 observations to fit a trajectory, got {0}")]
    TooFew(usize),
    /// An observation has the wrong number of values.
    #[error("observation {index} has {got} values, expected {expected} ({part:?} of this model)")]
    Width {
        /// Index of the observation.
        index: usize,
        /// Values it has.
        got: usize,
        /// Values expected.
        expected: usize,
        /// What was observed.
        part: ObservedPart,
    },
    /// Times do not increase.
    #[error("observation {index}: time {t} does not increase")]
    Time {
        /// Index of the observation.
        index: usize,
        /// Its time.
        t: f64,
    },
    /// A value is NaN or infinite.
    #[error("observation {index} holds a non-finite value")]
    NonFinite {
        /// Index of the observation.
        index: usize,
    },
}

/// Checks that `track` can be fitted by `model`.
///
/// # Errors
/// [`ObservedError`] naming the first bad observation.
pub fn validate(model: &CpuModel, track: Track<'_>) -> Result<(), ObservedError> {
    let obs = track.observations;
    if obs.len() < 3 {
        return Err(ObservedError::TooFew(obs.len()));
    }
    let expected = track.part.width(model.dim(), model.config().family.dof());
    for (index, o) in obs.iter().enumerate() {
        if o.values.len() != expected {
            return Err(ObservedError::Width {
                index,
                got: o.values.len(),
                expected,
                part: track.part,
            });
        }
        if !o.t.is_finite() || o.values.iter().any(|v| !v.is_finite()) {
            return Err(ObservedError::NonFinite { index });
        }
        if index > 0 && o.t <= obs[index - 1].t {
            return Err(ObservedError::Time { index, t: o.t });
        }
    }
    Ok(())
}

/// ẋ = Δt_r f(x; z_r): the learned flow in units of each row's own interval.
struct IntervalFlow<'a> {
    flow: CpuFlow<'a>,
    dt: &'a [f64],
    dim: usize,
}

impl Flow<Vec<f32>> for IntervalFlow<'_> {
    fn rate(&self, x: &Vec<f32>) -> Vec<f32> {
        let mut r = self.flow.rate(x);
        for (row, dt) in r.chunks_exact_mut(self.dim).zip(self.dt) {
            let dt = *dt as f32;
            row.iter_mut().for_each(|v| *v *= dt);
        }
        r
    }
}

thread_local! {
    /// The hook [`with_checkpoint`] installs on this thread.
    static CHECKPOINT: std::cell::RefCell<Option<std::sync::Arc<dyn Fn() + Send + Sync>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `hook` called at every checkpoint of the rollouts it makes on this thread
/// (before each observation interval of a rollout, and before each RK4 stage of a rollout
/// with sensitivities, whose stages cost ~6× more): a background fit yields there to a frame that needs
/// the cores ([`crate::runtime::FrameGate`]), a few hundred microseconds apart instead of
/// once per Levenberg–Marquardt step.
pub fn with_checkpoint<R>(
    hook: std::sync::Arc<dyn Fn() + Send + Sync>,
    f: impl FnOnce() -> R,
) -> R {
    let previous = CHECKPOINT.with(|c| c.replace(Some(hook)));
    let out = f();
    CHECKPOINT.with(|c| *c.borrow_mut() = previous);
    out
}

/// Calls this thread's checkpoint hook, if one is installed (work outside the rollouts
/// that runs under [`with_checkpoint`] calls it too, between units of work).
pub fn checkpoint() {
    let hook = CHECKPOINT.with(|c| c.borrow().clone());
    if let Some(hook) = hook {
        hook();
    }
}

/// RK4 substeps of an interval whose longest row spans `longest` seconds: at most
/// `max_substep` seconds each. The ratio is taken with a relative tolerance of 10⁻⁹, so an
/// interval of exactly k substeps (0.05 s at 0.05, three ticks of 1/64 s at 3/64) is not
/// split into k + 1 by rounding.
pub fn substeps(longest: f64, max_substep: f64) -> usize {
    ((longest / max_substep) * (1.0 - 1e-9)).ceil().max(1.0) as usize
}

/// Rolls rows `x0` (`[R·n]`, latents `[R·d_z]`) through intervals: `dt[k][r]` is the length
/// of interval k for row r in seconds (0 leaves the row where it is). Returns the rows after
/// each interval. RK4 sub-steps are at most `max_substep` long for every row.
pub fn rollout_intervals(
    model: &CpuModel,
    latents: &[f32],
    x0: &[f32],
    dt: &[Vec<f64>],
    max_substep: f64,
) -> Vec<Vec<f32>> {
    let dim = model.dim();
    let mut x = x0.to_vec();
    let mut out = Vec::with_capacity(dt.len());
    for step in dt {
        checkpoint();
        let substeps = substeps(crate::metrics::worst(step.iter().copied()), max_substep);
        let flow = IntervalFlow {
            flow: CpuFlow { model, latents },
            dt: step,
            dim,
        };
        for _ in 0..substeps {
            x = rk4_step(&flow, &x, 1.0 / substeps as f64);
        }
        out.push(x.clone());
    }
    out
}

/// [`rollout_intervals`] with forward sensitivities: each row also carries S = ∂x/∂θ
/// (`n × p`, row-major, `s0` `[R·n·p]`), θ's first d_z columns being the latent, and every
/// RK4 stage advances it with the same coefficients as x:
///
/// ```text
/// kᵢ = Δt f(xᵢ; z)        Kᵢ = Δt (f_x(xᵢ) Sᵢ + [f_z(xᵢ) | 0])
/// xᵢ = x + cᵢ h kᵢ₋₁      Sᵢ = S + cᵢ h Kᵢ₋₁
/// ```
///
/// with f, f_x, f_z from one recorded pass of the network ([`CpuModel::field_jacobian`]; the
/// frame gate's checkpoint is before each stage). S is then
/// the exact derivative of the discrete rollout (not of the ODE), so a Gauss–Newton step on
/// the loss computed from these states uses the loss's true Jacobian. Returns (states, S)
/// after each interval; `None` for models without a reverse Jacobian (GENERIC).
pub fn rollout_sensitivities(
    model: &CpuModel,
    latents: &[f32],
    x0: &[f32],
    s0: &[f32],
    p: usize,
    dt: &[Vec<f64>],
    max_substep: f64,
) -> Option<Vec<(Vec<f32>, Vec<f32>)>> {
    if !model.has_field_jacobian() {
        return None;
    }
    let (n, dz) = (model.dim(), model.row_latent());
    let rows = x0.len() / n;
    // (k, K) = the rates of (x, S) at (x, S) for interval lengths `step`.
    let rates = |x: &[f32], s: &[f32], step: &[f64]| -> Option<(Vec<f32>, Vec<f32>)> {
        checkpoint();
        let jac = model.field_jacobian(x, latents)?;
        let mut f = jac.f;
        let mut ds = vec![0.0f32; s.len()];
        for r in 0..rows {
            let h = step[r] as f32;
            f[r * n..(r + 1) * n].iter_mut().for_each(|v| *v *= h);
            let (fx, fz) = (
                &jac.fx[r * n * n..(r + 1) * n * n],
                &jac.fz[r * n * dz..(r + 1) * n * dz],
            );
            let (sr, dr) = (
                &s[r * n * p..(r + 1) * n * p],
                &mut ds[r * n * p..(r + 1) * n * p],
            );
            for i in 0..n {
                for c in 0..p {
                    let mut acc = if c < dz { fz[i * dz + c] } else { 0.0 };
                    for j in 0..n {
                        acc += fx[i * n + j] * sr[j * p + c];
                    }
                    dr[i * p + c] = h * acc;
                }
            }
        }
        Some((f, ds))
    };
    // The stages and weights of `rk4_step`, in the same arithmetic, so the states are the
    // ones `rollout_intervals` gives bit for bit.
    let (mut x, mut s) = (x0.to_vec(), s0.to_vec());
    let mut out = Vec::with_capacity(dt.len());
    for step in dt {
        let substeps = substeps(crate::metrics::worst(step.iter().copied()), max_substep);
        let h = 1.0 / substeps as f64;
        for _ in 0..substeps {
            let (k1, q1) = rates(&x, &s, step)?;
            let (k2, q2) = rates(
                &x.add_scaled(0.5 * h, &k1),
                &s.add_scaled(0.5 * h, &q1),
                step,
            )?;
            let (k3, q3) = rates(
                &x.add_scaled(0.5 * h, &k2),
                &s.add_scaled(0.5 * h, &q2),
                step,
            )?;
            let (k4, q4) = rates(&x.add_scaled(h, &k3), &s.add_scaled(h, &q3), step)?;
            let weights = |a, b, c, d| [(h / 6.0, a), (h / 3.0, b), (h / 3.0, c), (h / 6.0, d)];
            x = x.lincomb(&weights(&k1, &k2, &k3, &k4));
            s = s.lincomb(&weights(&q1, &q2, &q3, &q4));
        }
        out.push((x.clone(), s.clone()));
    }
    Some(out)
}

/// Predicts the states of one body at `times` (the first is the time of `x0`).
pub fn predict(
    model: &CpuModel,
    latent: &[f32],
    x0: &[f32],
    times: &[f64],
    max_substep: f64,
) -> Vec<Vec<f32>> {
    let dt: Vec<Vec<f64>> = times.windows(2).map(|w| vec![w[1] - w[0]]).collect();
    let mut out = vec![x0.to_vec()];
    out.extend(rollout_intervals(model, latent, x0, &dt, max_substep));
    out
}

/// Relative position error of a learned prediction against the true `system` over
/// `steps` samples `dt` apart, both from `x0`:
///
/// ```text
/// ε = √( Σₖ ‖q̂ₖ − qₖ‖² / Σₖ ‖qₖ‖² )
/// ```
///
/// q the first `dof` components; the truth by [`Integrator::Dopri`], the prediction by RK4
/// at ≤ 0.01 s ([`predict`]). How well an adapted latent predicts what comes next (online
/// adaptation's tests and benchmarks).
///
/// # Errors
/// The truth's integration failed (a non-finite state).
///
/// [`Integrator::Dopri`]: crate::integrate::Integrator::Dopri
pub fn position_error(
    model: &CpuModel,
    latent: &[f32],
    system: &dyn crate::systems::System,
    x0: &[f64],
    dt: f64,
    steps: usize,
) -> Result<f64, crate::integrate::IntegrateError> {
    let truth =
        crate::integrate::simulate(system, crate::integrate::Integrator::Dopri, x0, dt, steps)?;
    let times: Vec<f64> = (0..=steps).map(|k| k as f64 * dt).collect();
    let start: Vec<f32> = x0.iter().map(|v| *v as f32).collect();
    let dof = model.config().family.dof();
    let (mut num, mut den) = (0.0, 0.0);
    for (k, x) in predict(model, latent, &start, &times, 0.01)
        .iter()
        .enumerate()
    {
        for (p, q) in x[..dof].iter().zip(&truth.state(k)[..dof]) {
            num += (f64::from(*p) - q).powi(2);
            den += q * q;
        }
    }
    Ok((num / den).sqrt())
}

/// The start state x₀ = (y₀, u) of a track.
fn start_state(track: Track<'_>, hidden: &[f32]) -> Vec<f32> {
    [&track.observations[0].values[..], hidden].concat()
}

/// Velocity at t₀ from the quadratic through the first three samples.
fn initial_velocity(obs: &[Observation]) -> Vec<f32> {
    let (t0, t1, t2) = (obs[0].t, obs[1].t, obs[2].t);
    let c0 = (2.0 * t0 - t1 - t2) / ((t0 - t1) * (t0 - t2));
    let c1 = (t0 - t2) / ((t1 - t0) * (t1 - t2));
    let c2 = (t0 - t1) / ((t2 - t0) * (t2 - t1));
    (0..obs[0].values.len())
        .map(|i| {
            let v = c0 * f64::from(obs[0].values[i])
                + c1 * f64::from(obs[1].values[i])
                + c2 * f64::from(obs[2].values[i]);
            v as f32
        })
        .collect()
}

/// The unobserved part u of each track's start: for positions, the u whose learned
/// velocity P f((q₀, u); z) matches the finite-difference velocity of the first samples
/// (a few damped Gauss–Newton steps, all tracks in one batch); empty for full states.
pub fn initial_hidden(
    model: &CpuModel,
    tracks: &[Track<'_>],
    latents: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let dim = model.dim();
    let mut hidden: Vec<Vec<f32>> = tracks
        .iter()
        .map(|t| vec![0.0; dim - t.observations[0].values.len()])
        .collect();
    let targets: Vec<Vec<f32>> = tracks
        .iter()
        .map(|t| match t.part {
            ObservedPart::Positions => initial_velocity(t.observations),
            ObservedPart::States => Vec::new(),
        })
        .collect();
    let eps = 1e-3f32;
    for _ in 0..8 {
        // Rows: per track, the base point and one perturbation per hidden component.
        let (mut xs, mut zs) = (Vec::new(), Vec::new());
        for ((track, u), z) in tracks.iter().zip(&hidden).zip(latents) {
            for j in 0..=u.len() {
                let mut uj = u.clone();
                if j > 0 {
                    uj[j - 1] += eps;
                }
                xs.extend(start_state(*track, &uj));
                zs.extend_from_slice(z);
            }
        }
        let mut f = vec![0.0f32; xs.len()];
        model.field(&xs, &zs, &mut f);
        let mut row = 0;
        for (u, v) in hidden.iter_mut().zip(&targets) {
            let (h, m) = (u.len(), v.len());
            if h > 0 && m > 0 {
                let base = &f[row * dim..row * dim + m];
                let r = DVector::from_fn(m, |i, _| f64::from(base[i] - v[i]));
                let jac = DMatrix::from_fn(m, h, |i, j| {
                    let pert = &f[(row + 1 + j) * dim..];
                    f64::from(pert[i] - base[i]) / f64::from(eps)
                });
                let a = jac.transpose() * &jac + DMatrix::identity(h, h) * 1e-6;
                if let Some(d) = a.lu().solve(&(jac.transpose() * r)) {
                    u.iter_mut()
                        .zip(d.iter())
                        .for_each(|(u, d)| *u -= *d as f32);
                }
            }
            row += h + 1;
        }
    }
    hidden
}

/// Residuals of one row against its track: observed misfit / √(M·m), then √λ_z z.
fn residual(
    track: Track<'_>,
    states: &[Vec<f32>],
    row: usize,
    dim: usize,
    latent: &[f32],
    lambda_z: f64,
) -> Vec<f64> {
    let obs = &track.observations[1..];
    let width = obs[0].values.len();
    let scale = 1.0 / ((obs.len() * width) as f64).sqrt();
    let mut r = Vec::with_capacity(obs.len() * width + latent.len());
    for (k, o) in obs.iter().enumerate() {
        let x = &states[k][row * dim..row * dim + width];
        r.extend(
            x.iter()
                .zip(&o.values)
                .map(|(p, y)| f64::from(p - y) * scale),
        );
    }
    r.extend(latent.iter().map(|z| f64::from(*z) * lambda_z.sqrt()));
    r
}

fn sum_sq(r: &[f64]) -> f64 {
    let s: f64 = r.iter().map(|v| v * v).sum();
    if s.is_finite() { s } else { f64::INFINITY }
}

/// The interval lengths of a batch of tracks, interval by interval: `dt[k][r]` is the
/// length of interval k of track r in seconds, 0 past its end (the row then stands still),
/// as [`rollout_intervals`] takes them.
fn interval_table<'a>(
    tracks: impl ExactSizeIterator<Item = &'a [Observation]> + Clone,
) -> Vec<Vec<f64>> {
    let rows = tracks.len();
    let intervals = tracks
        .clone()
        .map(|o| o.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let mut dt = vec![Vec::with_capacity(rows); intervals];
    for obs in tracks {
        for (k, step) in dt.iter_mut().enumerate() {
            step.push(obs.get(k + 1).map_or(0.0, |o| o.t - obs[k].t));
        }
    }
    dt
}

/// Rolls out one parameter vector θ = (z, u) per row for the given tracks (`owner[r]` is
/// the track of row r) and returns each row's residual and the state it ended in (at its
/// track's last observation).
fn residuals(
    model: &CpuModel,
    tracks: &[Track<'_>],
    owner: &[usize],
    thetas: &[Vec<f32>],
    config: &FitConfig,
) -> Vec<(Vec<f64>, Vec<f32>)> {
    let (dim, dz) = (model.dim(), model.row_latent());
    let (mut xs, mut zs) = (Vec::new(), Vec::new());
    for (&e, theta) in owner.iter().zip(thetas) {
        zs.extend_from_slice(&theta[..dz]);
        xs.extend(start_state(tracks[e], &theta[dz..]));
    }
    let dt = interval_table(owner.iter().map(|&e| tracks[e].observations));
    let states = rollout_intervals(model, &zs, &xs, &dt, config.max_substep);
    // A row stands still through the intervals past its track's end (length 0).
    let last = states.last().unwrap_or(&xs);
    owner
        .iter()
        .zip(thetas)
        .enumerate()
        .map(|(row, (&e, theta))| {
            (
                residual(tracks[e], &states, row, dim, &theta[..dz], config.lambda_z),
                last[row * dim..(row + 1) * dim].to_vec(),
            )
        })
        .collect()
}

/// The trajectory loss L(z, u) of each body at its current fit state.
pub fn trajectory_loss(
    model: &CpuModel,
    tracks: &[Track<'_>],
    states: &[FitState],
    config: &FitConfig,
) -> Vec<f64> {
    trajectory_rollout(model, tracks, states, config)
        .into_iter()
        .map(|(loss, _)| loss)
        .collect()
}

/// [`trajectory_loss`] with the state each body's rollout ended in (the full state at its
/// track's last observation), from which [`extended_loss`] goes on.
pub fn trajectory_rollout(
    model: &CpuModel,
    tracks: &[Track<'_>],
    states: &[FitState],
    config: &FitConfig,
) -> Vec<(f64, Vec<f32>)> {
    let owner: Vec<usize> = (0..tracks.len()).collect();
    let thetas: Vec<Vec<f32>> = states
        .iter()
        .map(|s| [s.latent.clone(), s.hidden.clone()].concat())
        .collect();
    residuals(model, tracks, &owner, &thetas, config)
        .into_iter()
        .map(|(r, end)| (sum_sq(&r), end))
        .collect()
}

/// The trajectory loss of each body over a longer track, going on from where a rollout over
/// its first `from[i]` observations ended (`ends[i]`, the full state at observation
/// `from[i] − 1`, with that rollout's loss `losses[i]`): only the new intervals are rolled.
/// With m = M·(n − 1) observed values over n observations and the penalty P = λ_z‖z‖²,
///
/// ```text
/// L_long = ((L_short − P)·m_short + Σ_new ‖q̂ₖ − qₖ‖²) / m_long + P
/// ```
///
/// the loss [`trajectory_loss`] gives over the longer track (the same states, up to the
/// substeps a different batch may take). Returns the loss and the new end state. Each
/// `from[i]` is at least 2 and at most its track's length.
pub fn extended_loss(
    model: &CpuModel,
    tracks: &[Track<'_>],
    from: &[usize],
    ends: &[Vec<f32>],
    losses: &[f64],
    latents: &[&[f32]],
    config: &FitConfig,
) -> Vec<(f64, Vec<f32>)> {
    let dim = model.dim();
    // The new part of each track, from the observation its rollout ended at.
    let rest: Vec<Track<'_>> = tracks
        .iter()
        .zip(from)
        .map(|(t, &f)| Track {
            observations: &t.observations[f - 1..],
            ..*t
        })
        .collect();
    let zs: Vec<f32> = latents.concat();
    let xs: Vec<f32> = ends.concat();
    let dt = interval_table(rest.iter().map(|t| t.observations));
    let states = rollout_intervals(model, &zs, &xs, &dt, config.max_substep);
    let last = states.last().unwrap_or(&xs);
    tracks
        .iter()
        .zip(&rest)
        .enumerate()
        .map(|(row, (track, rest))| {
            let width = track.observations[0].values.len();
            let penalty = config.lambda_z
                * latents[row]
                    .iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>();
            // The new part's squared misfit: its mean from `residual`, times its count.
            let (short, new, long) = (
                ((from[row] - 1) * width) as f64,
                ((rest.observations.len() - 1) * width) as f64,
                ((track.observations.len() - 1) * width) as f64,
            );
            let new_sq = if new > 0.0 {
                sum_sq(&residual(*rest, &states, row, dim, &[], 0.0)) * new
            } else {
                0.0
            };
            let loss = ((losses[row] - penalty) * short + new_sq) / long + penalty;
            let loss = if loss.is_finite() {
                loss
            } else {
                f64::INFINITY
            };
            (loss, last[row * dim..(row + 1) * dim].to_vec())
        })
        .collect()
}

/// The damping factors tried by each step, relative to the current μ. A step taken keeps
/// the μ it was taken with, so a first-trial success halves μ for the next step and each
/// failed trial multiplies it by 8. (The Gauss–Newton step of a rollout loss overshoots
/// often: against 0.25×, 1×, 8× with μ halved after a success, these trials took a fifth
/// fewer rollouts to the noise floor in a replay of 1 000 pendulum bodies; BENCHMARKS.md.)
const DAMPING_TRIALS: [f64; 3] = [0.5, 4.0, 32.0];

/// Each body's residual r(θ) and Jacobian ∂r/∂θ at its current θ = (z, u).
type Linearization = (Vec<f64>, Option<DMatrix<f64>>);

/// The residuals and exact Jacobians of every body, from one rollout with forward
/// sensitivities ([`rollout_sensitivities`]); `None` for models without a reverse
/// Jacobian (GENERIC).
fn exact_linearization(
    model: &CpuModel,
    tracks: &[Track<'_>],
    thetas: &[Vec<f32>],
    config: &FitConfig,
) -> Option<Vec<Linearization>> {
    let (dim, dz) = (model.dim(), model.row_latent());
    if !model.has_field_jacobian() {
        return None;
    }
    // Columns: the latent, then up to n unobserved start components (unused ones stay 0).
    let p = dz + dim;
    let (mut xs, mut zs, mut s0) = (Vec::new(), Vec::new(), Vec::new());
    for (track, theta) in tracks.iter().zip(thetas) {
        zs.extend_from_slice(&theta[..dz]);
        xs.extend(start_state(*track, &theta[dz..]));
        // ∂x₀/∂θ: the latent does not move the start; u is its unobserved components.
        let width = track.observations[0].values.len();
        let mut s = vec![0.0f32; dim * p];
        for j in 0..theta.len() - dz {
            s[(width + j) * p + dz + j] = 1.0;
        }
        s0.extend(s);
    }
    let dt = interval_table(tracks.iter().map(|t| t.observations));
    let rolled = rollout_sensitivities(model, &zs, &xs, &s0, p, &dt, config.max_substep)?;
    let states: Vec<Vec<f32>> = rolled.iter().map(|(x, _)| x.clone()).collect();
    Some(
        tracks
            .iter()
            .zip(thetas)
            .enumerate()
            .map(|(row, (track, theta))| {
                let r = residual(*track, &states, row, dim, &theta[..dz], config.lambda_z);
                let obs = &track.observations[1..];
                let width = obs[0].values.len();
                let scale = 1.0 / ((obs.len() * width) as f64).sqrt();
                let cols = theta.len();
                let jac = DMatrix::from_fn(r.len(), cols, |i, j| {
                    if i < obs.len() * width {
                        let (k, c) = (i / width, i % width);
                        f64::from(rolled[k].1[row * dim * p + c * p + j]) * scale
                    } else if i - obs.len() * width == j {
                        config.lambda_z.sqrt()
                    } else {
                        0.0
                    }
                });
                (r, Some(jac))
            })
            .collect(),
    )
}

/// The residuals of every body and their Jacobians by forward differences: one rollout per
/// parameter (the fallback for GENERIC models).
fn difference_linearization(
    model: &CpuModel,
    tracks: &[Track<'_>],
    thetas: &[Vec<f32>],
    config: &FitConfig,
) -> Vec<Linearization> {
    let (mut owner, mut rows, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    for (e, theta) in thetas.iter().enumerate() {
        owner.push(e);
        rows.push(theta.clone());
        let mut hs = Vec::with_capacity(theta.len());
        for j in 0..theta.len() {
            let h = (config.fd_step * f64::from(theta[j].abs()).max(1.0)) as f32;
            let mut tj = theta.clone();
            tj[j] += h;
            hs.push(f64::from(tj[j] - theta[j]));
            owner.push(e);
            rows.push(tj);
        }
        steps.push(hs);
    }
    let res = residuals(model, tracks, &owner, &rows, config);
    let mut row = 0;
    steps
        .iter()
        .map(|hs| {
            let base = res[row].0.clone();
            let jac = DMatrix::from_fn(base.len(), hs.len(), |i, j| {
                (res[row + 1 + j].0[i] - base[i]) / hs[j]
            });
            row += hs.len() + 1;
            (base, Some(jac))
        })
        .collect()
}

/// One Levenberg–Marquardt step for every track at once (tracks must be valid, see
/// [`validate`]). Updates `states` in place where a step lowers the loss; otherwise the
/// damping grows and the state is kept.
///
/// The Jacobian is exact for Hamiltonian models: one rollout carries the sensitivities of
/// the states to (z, u) through the RK4 stages ([`rollout_sensitivities`]); GENERIC models
/// take forward differences (one rollout per parameter). Then up to three damping trials,
/// lightest first: each round is one batched rollout of the bodies still without descent,
/// and a body takes the first trial that lowers its loss (most take the first).
pub fn fit_step(
    model: &CpuModel,
    tracks: &[Track<'_>],
    states: &mut [FitState],
    config: &FitConfig,
) -> Vec<FitStep> {
    let dz = model.row_latent();
    let thetas: Vec<Vec<f32>> = states
        .iter()
        .map(|s| [s.latent.clone(), s.hidden.clone()].concat())
        .collect();
    let linear = exact_linearization(model, tracks, &thetas, config)
        .unwrap_or_else(|| difference_linearization(model, tracks, &thetas, config));

    // Solve the damped normal equations for each damping trial.
    let mut trials: Vec<Vec<(Vec<f32>, f64)>> = vec![Vec::new(); states.len()];
    let mut before = Vec::with_capacity(states.len());
    for (e, (base, jac)) in linear.iter().enumerate() {
        let loss = sum_sq(base);
        before.push(loss);
        let theta = &thetas[e];
        let p = theta.len();
        if let (true, Some(jac)) = (loss.is_finite(), jac)
            && jac.iter().all(|v| v.is_finite())
        {
            let r = DVector::from_column_slice(base);
            let a = jac.transpose() * jac;
            let g = jac.transpose() * r;
            for f in DAMPING_TRIALS {
                let mu = states[e].damping * f;
                let mut m = a.clone();
                for i in 0..p {
                    m[(i, i)] += mu * (a[(i, i)] + 1e-6);
                }
                if let Some(d) = m.cholesky().map(|c| c.solve(&g)) {
                    let t: Vec<f32> = theta
                        .iter()
                        .zip(d.iter())
                        .map(|(t, d)| t - *d as f32)
                        .collect();
                    if t.iter().all(|v| v.is_finite()) {
                        trials[e].push((t, mu));
                    }
                }
            }
        }
    }

    // Try the dampings in order, lightest first, each round one batch of the bodies that
    // have not found descent yet; the first trial that lowers a body's loss is its step.
    let mut out: Vec<FitStep> = before
        .iter()
        .map(|&loss| FitStep {
            loss_before: loss,
            loss,
            accepted: false,
            end: None,
        })
        .collect();
    for round in 0..DAMPING_TRIALS.len() {
        let owner: Vec<usize> = (0..states.len())
            .filter(|&e| !out[e].accepted && trials[e].len() > round)
            .collect();
        if owner.is_empty() {
            break;
        }
        let candidates: Vec<Vec<f32>> = owner.iter().map(|&e| trials[e][round].0.clone()).collect();
        let res = residuals(model, tracks, &owner, &candidates, config);
        for ((&e, (r, end)), theta) in owner.iter().zip(res).zip(candidates) {
            let loss = sum_sq(&r);
            if loss < out[e].loss_before {
                let mu = trials[e][round].1;
                states[e].latent = theta[..dz].to_vec();
                states[e].hidden = theta[dz..].to_vec();
                states[e].damping = mu.max(1e-9);
                out[e].loss = loss;
                out[e].accepted = true;
                out[e].end = Some(end);
            }
        }
    }
    for (state, step) in states.iter_mut().zip(&out) {
        if !step.accepted {
            state.damping = (state.damping * 16.0).min(1e9);
        }
    }
    out
}

/// The result of an offline fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOutcome {
    /// The fitted state (latent, unobserved start, damping).
    pub state: FitState,
    /// Loss at the start.
    pub initial_loss: f64,
    /// Loss at the end.
    pub loss: f64,
    /// Levenberg–Marquardt steps taken, over all horizons.
    pub steps: usize,
    /// Whether the fit of the whole track met [`FitConfig::rel_tol`] before running out of
    /// steps.
    pub converged: bool,
}

/// Observations in the first stage of a growing-horizon fit.
pub const FIRST_HORIZON: usize = 5;

/// Fits a latent code to one recorded track, starting from `latent`, with at most
/// `max_steps` Levenberg–Marquardt steps per horizon.
///
/// The trajectory loss of a long horizon is far from convex in z (a wrong frequency wraps
/// the phase), so the fit grows its horizon: first the [`FIRST_HORIZON`] earliest
/// observations, then twice as many, until the whole track is fitted — the same way an
/// online fit sees its observations arrive.
///
/// # Errors
/// [`ObservedError`] for observations that cannot be fitted.
pub fn fit_latent(
    model: &CpuModel,
    track: Track<'_>,
    latent: Vec<f32>,
    config: &FitConfig,
    max_steps: usize,
) -> Result<FitOutcome, ObservedError> {
    validate(model, track)?;
    let all = track.observations;
    let first = Track {
        observations: &all[..FIRST_HORIZON.min(all.len())],
        ..track
    };
    let mut state = FitState::new(model, first, latent, config);
    let initial_loss = trajectory_loss(model, &[track], std::slice::from_ref(&state), config)[0];
    let (mut steps, mut horizon, mut loss) = (0, FIRST_HORIZON, initial_loss);
    let mut converged;
    loop {
        let part = Track {
            observations: &all[..horizon.min(all.len())],
            ..track
        };
        converged = false;
        for _ in 0..max_steps {
            let step = fit_step(model, &[part], std::slice::from_mut(&mut state), config).remove(0);
            steps += 1;
            loss = step.loss;
            // Converged: a small accepted improvement, or no descent left at any damping.
            converged = (step.accepted && config.converged(step.loss_before, step.loss))
                || (!step.accepted && state.damping >= 1e6);
            if converged {
                break;
            }
        }
        if horizon >= all.len() {
            break;
        }
        horizon *= 2;
        state.damping = config.initial_damping;
    }
    // The last horizon is the whole track, so its last step's loss is the track's loss.
    Ok(FitOutcome {
        state,
        initial_loss,
        loss,
        steps,
        converged,
    })
}
