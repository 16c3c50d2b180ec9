//! Mass on a spring: H = p²/(2m) + k q²/2.

use super::{Family, FamilySpec, Hamiltonian, Interval, ParamSpec, Structure, System};
use crate::integrate::{SeparableField, VectorField};

pub(super) static SPEC: FamilySpec = FamilySpec {
    state: &["q", "p"],
    params: &[
        ParamSpec {
            name: "m",
            doc: "mass [kg]",
            train: Interval::new(1.0, 5.0),
            valid: Interval::new(1e-3, 1e3),
            default: 1.0,
        },
        ParamSpec {
            name: "k",
            doc: "spring stiffness [N/m]",
            train: Interval::new(1.0, 5.0),
            valid: Interval::new(1e-3, 1e3),
            default: 1.0,
        },
    ],
    structure: Structure::Hamiltonian { separable: true },
    dt: 0.1,
    samples: 30,
    default_state: &[1.0, 0.0],
};

/// Harmonic oscillator H = p²/(2m) + k q²/2; q̇ = p/m, ṗ = −k q.
///
/// Exact solution: q(t) = q₀ cos ωt + p₀/(mω) sin ωt with ω = √(k/m), period 2π√(m/k).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MassSpring {
    /// Mass m.
    pub m: f64,
    /// Stiffness k.
    pub k: f64,
}

impl MassSpring {
    /// The exact state at time `t` from `x0 = (q₀, p₀)`.
    pub fn exact(&self, x0: &[f64], t: f64) -> [f64; 2] {
        let w = (self.k / self.m).sqrt();
        let (c, s) = ((w * t).cos(), (w * t).sin());
        let (q0, p0) = (x0[0], x0[1]);
        [q0 * c + p0 / (self.m * w) * s, p0 * c - q0 * self.m * w * s]
    }
}

impl VectorField for MassSpring {
    fn dim(&self) -> usize {
        2
    }

    fn eval(&self, x: &[f64], dx: &mut [f64]) {
        dx[0] = x[1] / self.m;
        dx[1] = -self.k * x[0];
    }
}

impl SeparableField for MassSpring {
    fn dof(&self) -> usize {
        1
    }

    fn velocity(&self, p: &[f64], qdot: &mut [f64]) {
        qdot[0] = p[0] / self.m;
    }

    fn force(&self, q: &[f64], pdot: &mut [f64]) {
        pdot[0] = -self.k * q[0];
    }
}

impl Hamiltonian for MassSpring {
    fn grad_h(&self, x: &[f64], grad: &mut [f64]) {
        grad[0] = self.k * x[0];
        grad[1] = x[1] / self.m;
    }

    fn separable(&self) -> Option<&dyn SeparableField> {
        Some(self)
    }
}

impl System for MassSpring {
    fn family(&self) -> Family {
        Family::MassSpring
    }

    fn params(&self) -> Vec<f64> {
        vec![self.m, self.k]
    }

    fn energy(&self, x: &[f64]) -> f64 {
        x[1] * x[1] / (2.0 * self.m) + 0.5 * self.k * x[0] * x[0]
    }

    fn hamiltonian(&self) -> Option<&dyn Hamiltonian> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrate::Dopri5;

    /// The reference integrator reproduces the closed form, and the period is 2π√(m/k).
    #[test]
    fn matches_closed_form_and_period() {
        let sys = MassSpring { m: 2.0, k: 3.0 };
        let x0 = [0.7, -0.4];
        let mut x = x0.to_vec();
        Dopri5::new(2).integrate(&sys, &mut x, 0.0, 1.7).unwrap();
        let exact = sys.exact(&x0, 1.7);
        assert!(
            (x[0] - exact[0]).abs() < 1e-9 && (x[1] - exact[1]).abs() < 1e-9,
            "{x:?} vs {exact:?}"
        );

        let period = 2.0 * std::f64::consts::PI * (sys.m / sys.k).sqrt();
        let mut x = x0.to_vec();
        Dopri5::new(2).integrate(&sys, &mut x, 0.0, period).unwrap();
        assert!((x[0] - x0[0]).abs() < 1e-9 && (x[1] - x0[1]).abs() < 1e-9);
    }
}
