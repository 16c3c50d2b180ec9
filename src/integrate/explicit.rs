//! Explicit one-step methods: Euler and classic Runge–Kutta.

use super::VectorField;

/// Explicit Euler, x₁ = x₀ + h f(x₀): order 1, not symplectic; on an oscillator the energy
/// grows by a factor 1 + (hω)² per step.
#[derive(Clone, Debug)]
pub struct Euler {
    k: Vec<f64>,
}

impl Euler {
    /// Scratch for states of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self { k: vec![0.0; dim] }
    }

    /// One step of size `h`.
    pub fn step<F: VectorField + ?Sized>(&mut self, f: &F, x: &mut [f64], h: f64) {
        f.eval(x, &mut self.k);
        for (xi, ki) in x.iter_mut().zip(&self.k) {
            *xi += h * ki;
        }
    }
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
#[derive(Clone, Debug)]
pub struct Rk4 {
    k: [Vec<f64>; 4],
    tmp: Vec<f64>,
}

impl Rk4 {
    /// Scratch for states of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        Self { k: std::array::from_fn(|_| vec![0.0; dim]), tmp: vec![0.0; dim] }
    }

    /// One step of size `h`.
    pub fn step<F: VectorField + ?Sized>(&mut self, f: &F, x: &mut [f64], h: f64) {
        let [k1, k2, k3, k4] = &mut self.k;
        let tmp = &mut self.tmp;
        f.eval(x, k1);
        axpy(tmp, x, 0.5 * h, k1);
        f.eval(tmp, k2);
        axpy(tmp, x, 0.5 * h, k2);
        f.eval(tmp, k3);
        axpy(tmp, x, h, k3);
        f.eval(tmp, k4);
        for i in 0..x.len() {
            x[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
        }
    }
}

/// `out = x + a k`.
pub(super) fn axpy(out: &mut [f64], x: &[f64], a: f64, k: &[f64]) {
    for ((o, xi), ki) in out.iter_mut().zip(x).zip(k) {
        *o = xi + a * ki;
    }
}
