//! Conservation checks along rollouts: energy drift and GENERIC residuals.

/// maxₜ |H(x̂ₜ) − H(x̂₀)| / |H(x̂₀)| over an energy series (docs/protocol.md §6); ∞ when a value is
/// not finite.
pub fn energy_drift(energies: &[f64]) -> f64 {
    let Some(&e0) = energies.first() else {
        return 0.0;
    };
    let mut drift = 0.0_f64;
    for &e in energies {
        let d = ((e - e0) / e0).abs();
        if !d.is_finite() && e != e0 {
            return f64::INFINITY;
        }
        drift = drift.max(if d.is_finite() { d } else { 0.0 });
    }
    drift
}

/// GENERIC degeneracy and thermodynamics residuals over a set of states (docs/protocol.md §6):
/// ẋ = L∇E + M∇S with dE/dt = ∇Eᵀẋ and dS/dt = ∇Sᵀẋ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenericResiduals {
    /// max ‖L∇S‖₂ (0 by construction).
    pub l_grad_s: f64,
    /// max ‖M∇E‖₂ (0 by construction).
    pub m_grad_e: f64,
    /// max ‖L + Lᵀ‖_F (0: L skew).
    pub l_skew: f64,
    /// max ‖M − Mᵀ‖_F (0: M symmetric).
    pub m_sym: f64,
    /// max |dE/dt| (0: energy conserved).
    pub max_abs_de_dt: f64,
    /// min dS/dt (≥ 0: entropy produced).
    pub min_ds_dt: f64,
    /// States seen.
    pub samples: usize,
}

impl Default for GenericResiduals {
    fn default() -> Self {
        Self {
            l_grad_s: 0.0,
            m_grad_e: 0.0,
            l_skew: 0.0,
            m_sym: 0.0,
            max_abs_de_dt: 0.0,
            min_ds_dt: f64::INFINITY,
            samples: 0,
        }
    }
}

impl GenericResiduals {
    /// Adds one state: `l`, `m` row-major `[n, n]`, gradients `[n]`.
    pub fn add(&mut self, l: &[f64], m: &[f64], grad_e: &[f64], grad_s: &[f64]) {
        let n = grad_e.len();
        let matvec = |a: &[f64], v: &[f64]| -> Vec<f64> {
            (0..n)
                .map(|i| (0..n).map(|j| a[i * n + j] * v[j]).sum())
                .collect()
        };
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let (lgs, mge) = (matvec(l, grad_s), matvec(m, grad_e));
        let (lge, mgs) = (matvec(l, grad_e), matvec(m, grad_s));
        let xdot: Vec<f64> = lge.iter().zip(&mgs).map(|(a, b)| a + b).collect();
        let (mut skew, mut sym) = (0.0, 0.0);
        for i in 0..n {
            for j in 0..n {
                skew += (l[i * n + j] + l[j * n + i]).powi(2);
                sym += (m[i * n + j] - m[j * n + i]).powi(2);
            }
        }
        self.l_grad_s = self.l_grad_s.max(norm(&lgs));
        self.m_grad_e = self.m_grad_e.max(norm(&mge));
        self.l_skew = self.l_skew.max(skew.sqrt());
        self.m_sym = self.m_sym.max(sym.sqrt());
        self.max_abs_de_dt = self.max_abs_de_dt.max(dot(grad_e, &xdot).abs());
        self.min_ds_dt = self.min_ds_dt.min(dot(grad_s, &xdot));
        self.samples += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::Family;

    #[test]
    fn energy_drift_is_max_relative_deviation() {
        assert_eq!(energy_drift(&[2.0, 2.0, 2.0]), 0.0);
        assert!((energy_drift(&[2.0, 2.1, 1.7, 2.0]) - 0.15).abs() < 1e-15);
        assert_eq!(energy_drift(&[2.0, f64::NAN]), f64::INFINITY);
        assert_eq!(energy_drift(&[]), 0.0);
    }

    /// The exact dno structure has zero residuals; a perturbed M that breaks M∇E = 0 is caught
    /// with the hand-computed value.
    #[test]
    fn residuals_of_exact_and_broken_structure() {
        let sys = Family::Dno.build(&[1.0, 0.3]).unwrap();
        let g = sys.metriplectic().unwrap();
        let x = [0.4, -0.7, 0.1];
        let (mut ge, mut gs) = ([0.0; 3], [0.0; 3]);
        g.grad_energy(&x, &mut ge);
        g.grad_entropy(&x, &mut gs);
        let (l, m) = (g.poisson(&x), g.friction(&x));
        let (l, m): (Vec<f64>, Vec<f64>) = (
            l.transpose().iter().copied().collect(),
            m.transpose().iter().copied().collect(),
        );
        let mut r = GenericResiduals::default();
        r.add(&l, &m, &ge, &gs);
        assert!(r.l_grad_s < 1e-15 && r.m_grad_e < 1e-15 && r.max_abs_de_dt < 1e-15);
        // dS/dt = γ p²/(mT) = 0.3 · 0.49.
        assert!((r.min_ds_dt - 0.147).abs() < 1e-15);
        // Add 0.1 to M₁₁ (q–q entry): M∇E gains 0.1·∂E/∂q = 0.1 k sin q in its first row.
        let mut broken = m.clone();
        broken[0] += 0.1;
        let mut r = GenericResiduals::default();
        r.add(&l, &broken, &ge, &gs);
        assert!((r.m_grad_e - 0.1 * 0.4_f64.sin()).abs() < 1e-15);
    }
}
