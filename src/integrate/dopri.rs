//! Adaptive Dormand–Prince 5(4), the reference integrator (docs/protocol.md §3).

use super::{IntegrateError, VectorField};

/// Counters of one or more [`Dopri5::integrate`] calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DopriStats {
    /// Accepted steps.
    pub accepted: usize,
    /// Rejected steps.
    pub rejected: usize,
    /// Vector-field evaluations.
    pub evaluations: usize,
}

/// Dormand–Prince 5(4) with FSAL and the classic step-size controller (Dormand & Prince
/// 1980, J. Comput. Appl. Math. 6, 19; coefficients as in Hairer, Nørsett, Wanner,
/// *Solving ODEs I*, Table II.5.2). The 5th-order solution is propagated; the embedded
/// 4th-order one estimates the local error, and a step is accepted when
///
/// ```text
/// err = √( (1/n) Σᵢ (eᵢ / (atol + rtol·max(|x₀ᵢ|, |x₁ᵢ|)))² ) ≤ 1
/// h_new = h · clamp(0.9 · err^{−1/5}, 0.2, 5)
/// ```
///
/// Tableau (c | A, then b; b̂ for the error estimate):
///
/// ```text
///   0   |
///  1/5  | 1/5
///  3/10 | 3/40        9/40
///  4/5  | 44/45      −56/15      32/9
///  8/9  | 19372/6561 −25360/2187 64448/6561 −212/729
///   1   | 9017/3168  −355/33     46732/5247  49/176  −5103/18656
///   1   | 35/384      0          500/1113    125/192 −2187/6784   11/84
/// ------+---------------------------------------------------------------------
///   b   | 35/384      0          500/1113    125/192 −2187/6784   11/84    0
///   b̂   | 5179/57600  0          7571/16695  393/640 −92097/339200 187/2100 1/40
/// ```
#[derive(Clone, Debug)]
pub struct Dopri5 {
    /// Relative tolerance (protocol v1: 1e-10).
    pub rtol: f64,
    /// Absolute tolerance (protocol v1: 1e-10).
    pub atol: f64,
    /// Maximum accepted + rejected steps per [`Dopri5::integrate`] call.
    pub max_steps: usize,
    /// Counters, accumulated over calls.
    pub stats: DopriStats,
    h: Option<f64>,
    k: [Vec<f64>; 7],
    y: Vec<f64>,
}

const A: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// b − b̂.
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

impl Dopri5 {
    /// The reference integrator of protocol v1: rtol = atol = 1e-10.
    pub fn new(dim: usize) -> Self {
        Self::with_tolerance(dim, 1e-10, 1e-10)
    }

    /// With explicit tolerances.
    pub fn with_tolerance(dim: usize, rtol: f64, atol: f64) -> Self {
        Self {
            rtol,
            atol,
            max_steps: 1_000_000,
            stats: DopriStats::default(),
            h: None,
            k: std::array::from_fn(|_| vec![0.0; dim]),
            y: vec![0.0; dim],
        }
    }

    /// Integrates `x` from `t0` to exactly `t1` (> t0), adapting the step; the last
    /// accepted step size is kept for the next call.
    ///
    /// # Errors
    /// [`IntegrateError::TooManySteps`], and [`IntegrateError::StepSizeUnderflow`] (also when
    /// the field returns NaN/∞, which shrinks the step until it underflows).
    pub fn integrate<F: VectorField + ?Sized>(
        &mut self,
        f: &F,
        x: &mut [f64],
        t0: f64,
        t1: f64,
    ) -> Result<DopriStats, IntegrateError> {
        let before = self.stats;
        let n = x.len();
        let mut t = t0;
        if t1 <= t0 {
            return Ok(DopriStats::default());
        }
        // The field is autonomous, so the nodes c of the tableau are not needed.
        f.eval(x, &mut self.k[0]);
        self.stats.evaluations += 1;
        let mut h = self
            .h
            .unwrap_or_else(|| initial_step(x, &self.k[0], self.rtol, self.atol));
        let mut steps = 0;
        loop {
            if steps >= self.max_steps {
                return Err(IntegrateError::TooManySteps {
                    max_steps: self.max_steps,
                    from: t0,
                    to: t1,
                });
            }
            steps += 1;
            let last = t + h >= t1;
            let h_step = if last { t1 - t } else { h };
            if !last && h_step <= 1e-14 * t.abs().max(1.0) {
                return Err(IntegrateError::StepSizeUnderflow {
                    time: t,
                    step: h_step,
                });
            }
            for (s, a_s) in A.iter().enumerate() {
                for i in 0..n {
                    let acc: f64 = a_s.iter().zip(&self.k).map(|(a, k)| a * k[i]).sum();
                    self.y[i] = x[i] + h_step * acc;
                }
                f.eval(&self.y, &mut self.k[s + 1]);
            }
            self.stats.evaluations += 6;
            // y holds the 5th-order solution and k₇ = f(y) (first-same-as-last).
            let mut err = 0.0;
            for i in 0..n {
                let e: f64 = E.iter().zip(&self.k).map(|(e, k)| e * k[i]).sum();
                let scale = self.atol + self.rtol * x[i].abs().max(self.y[i].abs());
                err += (h_step * e / scale).powi(2);
            }
            let err = (err / n as f64).sqrt();
            if !err.is_finite() {
                // NaN/∞ in a stage: shrink until the underflow check gives up.
                self.stats.rejected += 1;
                h = 0.2 * h_step;
                continue;
            }
            let factor = (0.9 * err.powf(-0.2)).clamp(0.2, 5.0);
            if err > 1.0 {
                self.stats.rejected += 1;
                h = h_step * factor;
                continue;
            }
            self.stats.accepted += 1;
            x.copy_from_slice(&self.y);
            self.k.swap(0, 6);
            let h_next = h_step * factor;
            if last {
                // A truncated last step says little about the next one: keep the larger.
                self.h = Some(h.max(h_next));
                break;
            }
            t += h_step;
            h = h_next;
        }
        Ok(DopriStats {
            accepted: self.stats.accepted - before.accepted,
            rejected: self.stats.rejected - before.rejected,
            evaluations: self.stats.evaluations - before.evaluations,
        })
    }
}

/// Starting step h₀ = 0.01 ‖x‖/‖f(x)‖ in the tolerance-weighted norm (Hairer, Nørsett,
/// Wanner, §II.4, first two steps of the heuristic), floored at 1e-6.
fn initial_step(x: &[f64], fx: &[f64], rtol: f64, atol: f64) -> f64 {
    let n = x.len() as f64;
    let (mut d0, mut d1) = (0.0, 0.0);
    for (xi, fi) in x.iter().zip(fx) {
        let scale = atol + rtol * xi.abs();
        d0 += (xi / scale).powi(2);
        d1 += (fi / scale).powi(2);
    }
    let (d0, d1) = ((d0 / n).sqrt(), (d1 / n).sqrt());
    if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    }
}
