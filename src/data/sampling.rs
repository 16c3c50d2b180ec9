//! Parameter and initial-state sampling of protocol v1 (docs/protocol.md §3).

use std::f64::consts::TAU;

use rand::{Rng, RngExt};

use super::{DataError, Split};
use crate::systems::Family;

/// Draws a parameter vector uniformly from the split's ranges.
///
/// # Errors
/// [`DataError::NoOodSplit`].
pub fn sample_params(
    family: Family,
    split: Split,
    rng: &mut impl Rng,
) -> Result<Vec<f64>, DataError> {
    (0..family.spec().params.len())
        .map(|i| Ok(split.param_range(family, i)?.lerp(rng.random::<f64>())))
        .collect()
}

/// Draws an initial state of protocol v1 for an instance with parameters `params`:
///
/// | family | x₀ |
/// |---|---|
/// | mass_spring | radius r ∈ [0.1, 1] in (q, p/√m), uniform angle |
/// | pendulum | r ∈ [1.3, 2.3] in (q, p), uniform angle |
/// | duffing | r ∈ [0.1, 1.5] in (q, p), uniform angle |
/// | dno | q₀ ∈ [−2, 2], p₀ ∈ [−1, 1], S₀ = 0 |
/// | tgc | (1, 0, 2, 2) + U(−1, 1)·(0.8, 1, 1, 1), so 0.2 ≤ q ≤ 1.8 |
///
/// The radius and the angle are uniform (so the samples are denser near the inner radius).
pub fn sample_initial_state(family: Family, params: &[f64], rng: &mut impl Rng) -> Vec<f64> {
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.random::<f64>();
    let mut ring = |lo: f64, hi: f64, p_scale: f64| {
        let (r, theta) = (u(lo, hi), u(0.0, TAU));
        vec![r * theta.cos(), p_scale * r * theta.sin()]
    };
    match family {
        Family::MassSpring => ring(0.1, 1.0, params[0].sqrt()),
        Family::Pendulum => ring(1.3, 2.3, 1.0),
        Family::Duffing => ring(0.1, 1.5, 1.0),
        Family::Dno => vec![u(-2.0, 2.0), u(-1.0, 1.0), 0.0],
        Family::Tgc => {
            let centre = [1.0, 0.0, 2.0, 2.0];
            let spread = [0.8, 1.0, 1.0, 1.0];
            centre
                .iter()
                .zip(spread)
                .map(|(c, s)| c + s * u(-1.0, 1.0))
                .collect()
        }
    }
}
