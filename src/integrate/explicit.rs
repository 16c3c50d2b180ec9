//! Explicit one-step methods: Euler and classic Runge–Kutta.

use super::space::{Flow, Space};

/// Explicit Euler, x₁ = x₀ + h f(x₀): order 1, not symplectic; on an oscillator the energy
/// grows by a factor 1 + (hω)² per step.
pub fn euler_step<S: Space, F: Flow<S> + ?Sized>(f: &F, x: &S, h: f64) -> S {
    x.add_scaled(h, &f.rate(x))
}

/// Classic Runge–Kutta (Kutta 1901): order 4, not symplectic; energy drifts secularly.
///
/// ```text
///  0  |
/// 1/2 | 1/2
/// 1/2 |  0   1/2
///  1  |  0    0    1
/// ----+--------------------
///     | 1/6  1/3  1/3  1/6
/// ```
pub fn rk4_step<S: Space, F: Flow<S> + ?Sized>(f: &F, x: &S, h: f64) -> S {
    let k1 = f.rate(x);
    let k2 = f.rate(&x.add_scaled(0.5 * h, &k1));
    let k3 = f.rate(&x.add_scaled(0.5 * h, &k2));
    let k4 = f.rate(&x.add_scaled(h, &k3));
    x.lincomb(&[
        (h / 6.0, &k1),
        (h / 3.0, &k2),
        (h / 3.0, &k3),
        (h / 6.0, &k4),
    ])
}
