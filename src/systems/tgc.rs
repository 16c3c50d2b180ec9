//! Two gas containers split by a moving, heat-conducting wall (GENERIC).

use nalgebra::DMatrix;

use super::{
    Family, FamilySpec, Interval, Metriplectic, ParamSpec, Structure, System, SystemError,
};
use crate::integrate::VectorField;

/// Box length: the wall at q splits it into volumes q and 2 − q (docs/protocol.md §3).
pub const BOX_LENGTH: f64 = 2.0;
/// Gas constant ĉ of protocol v1 (docs/protocol.md §3).
pub const GAS_CONSTANT: f64 = 1.0;

pub(super) static SPEC: FamilySpec = FamilySpec {
    state: &["q", "p", "S1", "S2"],
    params: &[ParamSpec {
        name: "alpha",
        doc: "wall heat conductivity α [J·K/s]",
        train: Interval::new(1.0, 10.0),
        valid: Interval::new(0.0, 1e3),
        default: 5.0,
    }],
    structure: Structure::Generic,
    dt: 0.08,
    samples: 100,
    default_state: &[0.6, 0.0, 2.5, 1.5],
};

/// Two ideal gases in a box of length 2, separated by a wall of unit mass at q that moves
/// and conducts heat:
///
/// ```text
/// E = p²/2 + E₁ + E₂,   E_i = (e^{S_i} / (ĉ V_i))^{2/3},   V₁ = q, V₂ = 2 − q
/// T_i = ∂E/∂S_i = (2/3) E_i,   ∂E/∂q = −(2/3) E₁/q + (2/3) E₂/(2 − q)
/// q̇ = p,  ṗ = −∂E/∂q,  Ṡ₁ = α (1/T₁)(1/T₁ − 1/T₂),  Ṡ₂ = α (1/T₂)(1/T₂ − 1/T₁)
///
/// L = e₁e₂ᵀ − e₂e₁ᵀ,   M = α w wᵀ,   w = (0, 0, 1/T₁, −1/T₂),   S = S₁ + S₂
/// ```
///
/// L∇S = 0 since ∇S = (0, 0, 1, 1); M∇E = α w (T₁/T₁ − T₂/T₂) = 0; and
/// dS/dt = α (1/T₁ − 1/T₂)² ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tgc {
    /// Heat conductivity α of the wall.
    pub alpha: f64,
}

impl Tgc {
    /// Internal energies (E₁, E₂).
    fn gas_energies(x: &[f64]) -> (f64, f64) {
        let (q, s1, s2) = (x[0], x[2], x[3]);
        let e = |s: f64, v: f64| (s.exp() / (GAS_CONSTANT * v)).powf(2.0 / 3.0);
        (e(s1, q), e(s2, BOX_LENGTH - q))
    }

    /// Temperatures (T₁, T₂) = (2/3)(E₁, E₂).
    pub fn temperatures(x: &[f64]) -> (f64, f64) {
        let (e1, e2) = Self::gas_energies(x);
        (2.0 / 3.0 * e1, 2.0 / 3.0 * e2)
    }
}

impl VectorField for Tgc {
    fn dim(&self) -> usize {
        4
    }

    fn eval(&self, x: &[f64], dx: &mut [f64]) {
        let q = x[0];
        let (e1, e2) = Self::gas_energies(x);
        let (t1, t2) = (2.0 / 3.0 * e1, 2.0 / 3.0 * e2);
        let flux = self.alpha * (1.0 / t1 - 1.0 / t2);
        dx[0] = x[1];
        dx[1] = 2.0 / 3.0 * (e1 / q - e2 / (BOX_LENGTH - q));
        dx[2] = flux / t1;
        dx[3] = -flux / t2;
    }
}

impl Metriplectic for Tgc {
    fn grad_energy(&self, x: &[f64], grad: &mut [f64]) {
        let q = x[0];
        let (e1, e2) = Self::gas_energies(x);
        grad[0] = -2.0 / 3.0 * (e1 / q - e2 / (BOX_LENGTH - q));
        grad[1] = x[1];
        grad[2] = 2.0 / 3.0 * e1;
        grad[3] = 2.0 / 3.0 * e2;
    }

    fn grad_entropy(&self, _x: &[f64], grad: &mut [f64]) {
        grad.copy_from_slice(&[0.0, 0.0, 1.0, 1.0]);
    }

    fn poisson(&self, _x: &[f64]) -> DMatrix<f64> {
        let mut l = DMatrix::zeros(4, 4);
        l[(0, 1)] = 1.0;
        l[(1, 0)] = -1.0;
        l
    }

    fn friction(&self, x: &[f64]) -> DMatrix<f64> {
        let (t1, t2) = Self::temperatures(x);
        let w = nalgebra::DVector::from_vec(vec![0.0, 0.0, 1.0 / t1, -1.0 / t2]);
        (&w * w.transpose()) * self.alpha
    }
}

impl System for Tgc {
    fn family(&self) -> Family {
        Family::Tgc
    }

    fn params(&self) -> Vec<f64> {
        vec![self.alpha]
    }

    fn energy(&self, x: &[f64]) -> f64 {
        let (e1, e2) = Self::gas_energies(x);
        0.5 * x[1] * x[1] + e1 + e2
    }

    fn entropy(&self, x: &[f64]) -> Option<f64> {
        Some(x[2] + x[3])
    }

    fn metriplectic(&self) -> Option<&dyn Metriplectic> {
        Some(self)
    }

    fn check_state(&self, x: &[f64]) -> Result<(), SystemError> {
        super::check_dim_and_finite(Family::Tgc, x)?;
        if !(x[0] > 0.0 && x[0] < BOX_LENGTH) {
            return Err(SystemError::InvalidState {
                family: Family::Tgc,
                reason: format!(
                    "the wall q = {} must lie strictly inside the box (0, {BOX_LENGTH})",
                    x[0]
                ),
            });
        }
        Ok(())
    }
}
