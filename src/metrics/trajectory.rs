//! ε_traj: relative trajectory error of a rollout.

use crate::integrate::{FieldFlow, VectorField, rk4_step};

/// RK4 sub-steps per sample interval in [`rollout`] (RK4 at Δt/10, docs/protocol.md §6).
pub const ROLLOUT_SUBSTEPS: usize = 10;

/// ‖a − b‖₂ / ‖b‖₂ over all entries (b is the truth). NaN or ∞ in `a` gives ∞: a diverged
/// rollout scores as infinitely wrong, never as a small number.
///
/// # Panics
/// If the lengths differ.
pub fn relative_l2(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "relative_l2: lengths {} and {} differ",
        a.len(),
        b.len()
    );
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        num += (x - y) * (x - y);
        den += y * y;
    }
    let e = (num / den).sqrt();
    if e.is_nan() && num.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// ε_traj of one trajectory: [`relative_l2`] of predicted against true states, both
/// row-major `[samples, dim]`.
pub fn trajectory_error(predicted: &[f64], truth: &[f64]) -> f64 {
    relative_l2(predicted, truth)
}

/// Integrates `field` from `x0` with RK4 at Δt/[`ROLLOUT_SUBSTEPS`] and returns `samples`
/// states (the first is `x0`), row-major `[samples, dim]`. Once a state is non-finite the
/// remaining samples are NaN.
pub fn rollout<F: VectorField + ?Sized>(
    field: &F,
    x0: &[f64],
    dt: f64,
    samples: usize,
) -> Vec<f64> {
    let dim = x0.len();
    let flow = FieldFlow(field);
    let mut x = x0.to_vec();
    let mut out = Vec::with_capacity(samples * dim);
    out.extend_from_slice(&x);
    let h = dt / ROLLOUT_SUBSTEPS as f64;
    for _ in 1..samples {
        if x.iter().all(|v| v.is_finite()) {
            for _ in 0..ROLLOUT_SUBSTEPS {
                x = rk4_step(&flow, &x, h);
            }
        }
        if x.iter().any(|v| !v.is_finite()) {
            x.fill(f64::NAN);
        }
        out.extend_from_slice(&x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::{Family, MassSpring};

    #[test]
    fn identical_is_zero_and_scaling_is_exact() {
        let truth = [1.0, -2.0, 0.5, 3.0];
        assert_eq!(relative_l2(&truth, &truth), 0.0);
        let scaled: Vec<f64> = truth.iter().map(|v| v * 1.1).collect();
        assert!((relative_l2(&scaled, &truth) - 0.1).abs() < 1e-15);
        // Hand-computed: ‖(1, 0)‖ / ‖(3, 4)‖ = 1/5.
        assert!((relative_l2(&[4.0, 4.0], &[3.0, 4.0]) - 0.2).abs() < 1e-15);
        assert_eq!(relative_l2(&[f64::NAN, 0.0], &[1.0, 0.0]), f64::INFINITY);
    }

    #[test]
    fn rollout_of_the_true_field_reproduces_the_closed_form() {
        let sys = MassSpring { m: 2.0, k: 3.0 };
        let x0 = [0.5, 0.2];
        let pred = rollout(&sys, &x0, 0.1, 30);
        let truth: Vec<f64> = (0..30)
            .flat_map(|s| sys.exact(&x0, s as f64 * 0.1))
            .collect();
        assert!(trajectory_error(&pred, &truth) < 1e-7);
        let wrong = MassSpring { m: 2.0, k: 3.3 };
        let err = trajectory_error(&rollout(&wrong, &x0, 0.1, 30), &truth);
        assert!(err > 1e-2, "a 10% stiffer spring is visibly wrong: {err}");
    }

    #[test]
    fn diverging_rollout_is_infinite_error() {
        let sys = Family::Duffing.build(&[1.0, 1.0]).unwrap();
        let x0 = [1e30, 0.0];
        let pred = rollout(sys.as_ref(), &x0, 1.0, 5);
        assert!(pred[pred.len() - 1].is_nan());
        assert_eq!(trajectory_error(&pred, &[1.0; 10]), f64::INFINITY);
    }
}
