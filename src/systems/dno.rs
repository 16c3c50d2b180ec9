//! Damped nonlinear oscillator coupled to a heat bath (GENERIC).

use nalgebra::DMatrix;

use super::{Family, FamilySpec, Interval, Metriplectic, ParamSpec, Structure, System};
use crate::integrate::VectorField;

/// Mass m of protocol v1 (docs/protocol.md §3).
pub const MASS: f64 = 1.0;
/// Bath temperature T of protocol v1 (docs/protocol.md §3).
pub const TEMPERATURE: f64 = 1.0;

pub(super) static SPEC: FamilySpec = FamilySpec {
    state: &["q", "p", "S"],
    params: &[
        ParamSpec {
            name: "k",
            doc: "restoring strength k [J]",
            train: Interval::new(0.5, 2.0),
            valid: Interval::new(1e-3, 1e3),
            default: 1.0,
        },
        ParamSpec {
            name: "gamma",
            doc: "friction γ [1/s]",
            train: Interval::new(0.05, 0.5),
            valid: Interval::new(0.0, 1e3),
            default: 0.2,
        },
    ],
    structure: Structure::Generic,
    dt: 0.1,
    samples: 30,
    default_state: &[1.0, 0.0, 0.0],
};

/// Damped nonlinear oscillator with the dissipated energy going into a bath of entropy S:
///
/// ```text
/// E = p²/(2m) − k cos q + T S            S(x) = S
/// q̇ = p/m,  ṗ = −k sin q − γ p,  Ṡ = γ p² / (m T)
///
///     ⎡ 0  1  0 ⎤                        ⎡ 0 ⎤
/// L = ⎢−1  0  0 ⎥,   M = γ/(mT) w wᵀ,  w = ⎢mT⎥
///     ⎣ 0  0  0 ⎦                        ⎣−p ⎦
/// ```
///
/// with m = T = 1 (protocol v1). L∇S = 0 because ∇S = e₃ and L's last column is zero;
/// M∇E = 0 because w·∇E = mT·p/m − p·T = 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dno {
    /// Restoring strength k.
    pub k: f64,
    /// Friction γ.
    pub gamma: f64,
}

impl VectorField for Dno {
    fn dim(&self) -> usize {
        3
    }

    fn eval(&self, x: &[f64], dx: &mut [f64]) {
        let (q, p) = (x[0], x[1]);
        dx[0] = p / MASS;
        dx[1] = -self.k * q.sin() - self.gamma * p;
        dx[2] = self.gamma * p * p / (MASS * TEMPERATURE);
    }
}

impl Metriplectic for Dno {
    fn grad_energy(&self, x: &[f64], grad: &mut [f64]) {
        grad[0] = self.k * x[0].sin();
        grad[1] = x[1] / MASS;
        grad[2] = TEMPERATURE;
    }

    fn grad_entropy(&self, _x: &[f64], grad: &mut [f64]) {
        grad.copy_from_slice(&[0.0, 0.0, 1.0]);
    }

    fn poisson(&self, _x: &[f64]) -> DMatrix<f64> {
        DMatrix::from_row_slice(3, 3, &[0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    }

    fn friction(&self, x: &[f64]) -> DMatrix<f64> {
        let w = nalgebra::DVector::from_vec(vec![0.0, MASS * TEMPERATURE, -x[1]]);
        (&w * w.transpose()) * (self.gamma / (MASS * TEMPERATURE))
    }
}

impl System for Dno {
    fn family(&self) -> Family {
        Family::Dno
    }

    fn params(&self) -> Vec<f64> {
        vec![self.k, self.gamma]
    }

    fn energy(&self, x: &[f64]) -> f64 {
        x[1] * x[1] / (2.0 * MASS) - self.k * x[0].cos() + TEMPERATURE * x[2]
    }

    fn entropy(&self, x: &[f64]) -> Option<f64> {
        Some(x[2])
    }

    fn metriplectic(&self) -> Option<&dyn Metriplectic> {
        Some(self)
    }
}
