//! Undamped Duffing oscillator: H = p²/2 + α q²/2 + β q⁴/4.

use super::{Family, FamilySpec, Hamiltonian, Interval, ParamSpec, Structure, System};
use crate::integrate::{SeparableField, VectorField};

pub(super) static SPEC: FamilySpec = FamilySpec {
    state: &["q", "p"],
    params: &[
        ParamSpec {
            name: "alpha",
            doc: "linear stiffness α [1/s²]",
            train: Interval::new(0.5, 2.0),
            valid: Interval::new(-1e3, 1e3),
            default: 1.0,
        },
        ParamSpec {
            name: "beta",
            doc: "cubic stiffness β [1/(m² s²)]",
            train: Interval::new(0.1, 1.0),
            valid: Interval::new(0.0, 1e3),
            default: 0.5,
        },
    ],
    structure: Structure::Hamiltonian { separable: true },
    dt: 0.1,
    samples: 30,
    default_state: &[1.0, 0.0],
};

/// Duffing oscillator with unit mass: q̇ = p, ṗ = −α q − β q³.
///
/// α < 0 gives the double well V = α q²/2 + β q⁴/4 (β > 0 keeps it bounded).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Duffing {
    /// Linear stiffness α.
    pub alpha: f64,
    /// Cubic stiffness β.
    pub beta: f64,
}

impl VectorField for Duffing {
    fn dim(&self) -> usize {
        2
    }

    fn eval(&self, x: &[f64], dx: &mut [f64]) {
        let q = x[0];
        dx[0] = x[1];
        dx[1] = -self.alpha * q - self.beta * q * q * q;
    }
}

impl SeparableField for Duffing {
    fn dof(&self) -> usize {
        1
    }

    fn velocity(&self, p: &[f64], qdot: &mut [f64]) {
        qdot[0] = p[0];
    }

    fn force(&self, q: &[f64], pdot: &mut [f64]) {
        let q = q[0];
        pdot[0] = -self.alpha * q - self.beta * q * q * q;
    }
}

impl Hamiltonian for Duffing {
    fn grad_h(&self, x: &[f64], grad: &mut [f64]) {
        let q = x[0];
        grad[0] = self.alpha * q + self.beta * q * q * q;
        grad[1] = x[1];
    }

    fn separable(&self) -> Option<&dyn SeparableField> {
        Some(self)
    }
}

impl System for Duffing {
    fn family(&self) -> Family {
        Family::Duffing
    }

    fn params(&self) -> Vec<f64> {
        vec![self.alpha, self.beta]
    }

    fn energy(&self, x: &[f64]) -> f64 {
        let q2 = x[0] * x[0];
        0.5 * x[1] * x[1] + 0.5 * self.alpha * q2 + 0.25 * self.beta * q2 * q2
    }

    fn hamiltonian(&self) -> Option<&dyn Hamiltonian> {
        Some(self)
    }
}
