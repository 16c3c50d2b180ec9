//! Explicit symplectic methods for a separable Hamiltonian H = T(p) + V(q).
//!
//! All three are compositions of the exact flows of T (drift) and V (kick), hence
//! symplectic: they conserve a modified Hamiltonian H̃ = H + O(hᵖ), so the energy error stays
//! bounded (no drift) over exponentially long times (Hairer, Lubich, Wanner, *Geometric
//! Numerical Integration*, §IX.8).

use super::space::SplitFlow;

/// Symplectic Euler (kick then drift): p₁ = p₀ − h ∇V(q₀), q₁ = q₀ + h ∇T(p₁).
/// Order 1, symplectic.
pub fn symplectic_euler_step<S, F: SplitFlow<S> + ?Sized>(f: &F, x: &S, h: f64) -> S {
    f.drift(&f.kick(x, h), h)
}

/// Störmer–Verlet (leapfrog, kick–drift–kick): order 2, symplectic and time-reversible.
pub fn verlet_step<S, F: SplitFlow<S> + ?Sized>(f: &F, x: &S, h: f64) -> S {
    f.kick(&f.drift(&f.kick(x, 0.5 * h), h), 0.5 * h)
}

/// Yoshida's triple-jump weights (w₁, w₀, w₁) (Yoshida 1990, Phys. Lett. A 150, 262):
///
/// ```text
/// w₁ = 1 / (2 − 2^{1/3}),   w₀ = −2^{1/3} / (2 − 2^{1/3}),   2w₁ + w₀ = 1
/// ```
pub fn yoshida4_weights() -> [f64; 3] {
    let c = 2f64.cbrt();
    let w1 = 1.0 / (2.0 - c);
    [w1, -c * w1, w1]
}

/// Yoshida's 4th-order composition of Störmer–Verlet steps of w₁h, w₀h, w₁h: order 4,
/// symplectic and time-reversible.
pub fn yoshida4_step<S, F: SplitFlow<S> + ?Sized>(f: &F, x: &S, h: f64) -> S {
    let [a, b, c] = yoshida4_weights();
    verlet_step(f, &verlet_step(f, &verlet_step(f, x, a * h), b * h), c * h)
}
