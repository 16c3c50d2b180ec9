//! Simple pendulum: H = p²/(2 m l²) + m g l (1 − cos q), g = 9.81.

use super::{Family, FamilySpec, Hamiltonian, Interval, ParamSpec, Structure, System};
use crate::integrate::{SeparableField, VectorField};

/// Gravitational acceleration g [m/s²] of protocol v1 (docs/protocol.md §3).
pub const GRAVITY: f64 = 9.81;

pub(super) static SPEC: FamilySpec = FamilySpec {
    state: &["q", "p"],
    params: &[
        ParamSpec {
            name: "m",
            doc: "bob mass [kg]",
            train: Interval::new(0.5, 2.0),
            valid: Interval::new(1e-3, 1e3),
            default: 1.0,
        },
        ParamSpec {
            name: "l",
            doc: "rod length [m]",
            train: Interval::new(0.5, 2.0),
            valid: Interval::new(1e-3, 1e3),
            default: 1.0,
        },
    ],
    structure: Structure::Hamiltonian { separable: true },
    dt: 0.1,
    samples: 30,
    default_state: &[1.0, 0.0],
};

/// Pendulum with angle q and angular momentum p: q̇ = p/(m l²), ṗ = −m g l sin q.
///
/// Small-angle period 2π√(l/g); at amplitude q₀ the exact period is 4√(l/g) K(sin(q₀/2)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pendulum {
    /// Bob mass m.
    pub m: f64,
    /// Rod length l.
    pub l: f64,
}

impl VectorField for Pendulum {
    fn dim(&self) -> usize {
        2
    }

    fn eval(&self, x: &[f64], dx: &mut [f64]) {
        dx[0] = x[1] / (self.m * self.l * self.l);
        dx[1] = -self.m * GRAVITY * self.l * x[0].sin();
    }
}

impl SeparableField for Pendulum {
    fn dof(&self) -> usize {
        1
    }

    fn velocity(&self, p: &[f64], qdot: &mut [f64]) {
        qdot[0] = p[0] / (self.m * self.l * self.l);
    }

    fn force(&self, q: &[f64], pdot: &mut [f64]) {
        pdot[0] = -self.m * GRAVITY * self.l * q[0].sin();
    }
}

impl Hamiltonian for Pendulum {
    fn grad_h(&self, x: &[f64], grad: &mut [f64]) {
        grad[0] = self.m * GRAVITY * self.l * x[0].sin();
        grad[1] = x[1] / (self.m * self.l * self.l);
    }

    fn separable(&self) -> Option<&dyn SeparableField> {
        Some(self)
    }
}

impl System for Pendulum {
    fn family(&self) -> Family {
        Family::Pendulum
    }

    fn params(&self) -> Vec<f64> {
        vec![self.m, self.l]
    }

    fn energy(&self, x: &[f64]) -> f64 {
        x[1] * x[1] / (2.0 * self.m * self.l * self.l)
            + self.m * GRAVITY * self.l * (1.0 - x[0].cos())
    }

    fn hamiltonian(&self) -> Option<&dyn Hamiltonian> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrate::Dopri5;

    /// Time of the first downward zero crossing of q, from rest at q₀ > 0: a quarter period.
    fn quarter_period(sys: &Pendulum, q0: f64) -> f64 {
        let (mut x, h) = (vec![q0, 0.0], 1e-3);
        let mut dopri = Dopri5::new(2);
        let mut t = 0.0;
        loop {
            let prev = x.clone();
            dopri.integrate(sys, &mut x, t, t + h).unwrap();
            if x[0] <= 0.0 {
                // Refine by bisection on the reference integrator.
                let (mut lo, mut hi, start) = (t, t + h, prev);
                for _ in 0..60 {
                    let mid = 0.5 * (lo + hi);
                    let mut y = start.clone();
                    dopri.integrate(sys, &mut y, t, mid).unwrap();
                    if y[0] > 0.0 { lo = mid } else { hi = mid }
                }
                return 0.5 * (lo + hi);
            }
            t += h;
        }
    }

    /// Complete elliptic integral of the first kind K(k) = π / (2 AGM(1, √(1 − k²))).
    fn elliptic_k(k: f64) -> f64 {
        let (mut a, mut b) = (1.0_f64, (1.0 - k * k).sqrt());
        while (a - b).abs() > 1e-15 {
            (a, b) = (0.5 * (a + b), (a * b).sqrt());
        }
        std::f64::consts::PI / (2.0 * a)
    }

    #[test]
    fn small_angle_period_is_two_pi_sqrt_l_over_g() {
        let sys = Pendulum { m: 1.3, l: 0.7 };
        let t0 = 2.0 * std::f64::consts::PI * (sys.l / GRAVITY).sqrt();
        let period = 4.0 * quarter_period(&sys, 1e-3);
        // Amplitude correction T₀ q₀²/16 ≈ 6e-8 T₀ at q₀ = 1e-3.
        assert!((period - t0).abs() < 1e-6 * t0, "period {period} vs {t0}");
    }

    #[test]
    fn large_angle_period_matches_elliptic_integral() {
        let sys = Pendulum { m: 0.8, l: 1.6 };
        let q0: f64 = 2.0;
        let exact = 4.0 * (sys.l / GRAVITY).sqrt() * elliptic_k((q0 / 2.0).sin());
        let period = 4.0 * quarter_period(&sys, q0);
        assert!(
            (period - exact).abs() < 1e-8 * exact,
            "period {period} vs {exact}"
        );
    }
}
