//! Explicit symplectic methods for a separable Hamiltonian H = T(p) + V(q).
//!
//! All three are compositions of the exact flows of T (drift) and V (kick), hence
//! symplectic: they conserve a modified Hamiltonian H̃ = H + O(hᵖ), so the energy error stays
//! bounded (no drift) over exponentially long times (Hairer, Lubich, Wanner, *Geometric
//! Numerical Integration*, §IX.8).

use super::SeparableField;

/// Scratch shared by the kick and drift sub-steps.
#[derive(Clone, Debug, Default)]
struct Split {
    buf: Vec<f64>,
}

impl Split {
    /// p ← p + a·(−∇V(q)).
    fn kick(&mut self, f: &dyn SeparableField, x: &mut [f64], a: f64) {
        let n = f.dof();
        self.buf.resize(n, 0.0);
        let (q, p) = x.split_at_mut(n);
        f.force(q, &mut self.buf);
        p.iter_mut().zip(&self.buf).for_each(|(pi, fi)| *pi += a * fi);
    }

    /// q ← q + a·∇T(p).
    fn drift(&mut self, f: &dyn SeparableField, x: &mut [f64], a: f64) {
        let n = f.dof();
        self.buf.resize(n, 0.0);
        let (q, p) = x.split_at_mut(n);
        f.velocity(p, &mut self.buf);
        q.iter_mut().zip(&self.buf).for_each(|(qi, vi)| *qi += a * vi);
    }

    fn verlet(&mut self, f: &dyn SeparableField, x: &mut [f64], h: f64) {
        self.kick(f, x, 0.5 * h);
        self.drift(f, x, h);
        self.kick(f, x, 0.5 * h);
    }
}

/// Symplectic Euler (kick then drift): p₁ = p₀ − h ∇V(q₀), q₁ = q₀ + h ∇T(p₁).
/// Order 1, symplectic.
#[derive(Clone, Debug, Default)]
pub struct SymplecticEuler(Split);

impl SymplecticEuler {
    /// One step of size `h`.
    pub fn step(&mut self, f: &dyn SeparableField, x: &mut [f64], h: f64) {
        self.0.kick(f, x, h);
        self.0.drift(f, x, h);
    }
}

/// Störmer–Verlet (leapfrog, kick–drift–kick): order 2, symplectic and time-reversible.
#[derive(Clone, Debug, Default)]
pub struct StormerVerlet(Split);

impl StormerVerlet {
    /// One step of size `h`.
    pub fn step(&mut self, f: &dyn SeparableField, x: &mut [f64], h: f64) {
        self.0.verlet(f, x, h);
    }
}

/// Yoshida's 4th-order triple-jump composition of Störmer–Verlet (Yoshida 1990,
/// Phys. Lett. A 150, 262): Verlet steps of w₁h, w₀h, w₁h with
///
/// ```text
/// w₁ = 1 / (2 − 2^{1/3}),   w₀ = −2^{1/3} / (2 − 2^{1/3})
/// ```
///
/// Order 4, symplectic and time-reversible.
#[derive(Clone, Debug, Default)]
pub struct Yoshida4(Split);

impl Yoshida4 {
    /// The triple-jump weights (w₁, w₀, w₁); they sum to 1.
    pub fn weights() -> [f64; 3] {
        let c = 2f64.cbrt();
        let w1 = 1.0 / (2.0 - c);
        [w1, -c * w1, w1]
    }

    /// One step of size `h`.
    pub fn step(&mut self, f: &dyn SeparableField, x: &mut [f64], h: f64) {
        for w in Self::weights() {
            self.0.verlet(f, x, w * h);
        }
    }
}
