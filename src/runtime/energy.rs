//! Energy bookkeeping of stepped bodies: the learned energy E (and entropy S of GENERIC
//! models) measured in one batched call per model, and per body the record a runtime
//! reports (drift since the first measurement, the smallest per-tick change of S).
//!
//! # One drift, offset-free
//!
//! A learned energy has an arbitrary additive constant, so |E − E₀|/|E₀| means little: it
//! explodes for a body whose E₀ happens to sit near zero and hides a blow-up where E₀ is
//! large. Every drift in noether (runtime, diagnostics, inspector, `noether-play`, the
//! regression harness) is instead
//!
//! ```text
//! drift = |E − E₀| / max(|E₀ − E_rest|, 10⁻⁴ · max(|E₀|, |E_rest|))
//! ```
//!
//! with E_rest the energy of the body's rest state at its first measurement
//! ([`Family::rest_state`]: positions at rest, momenta 0, the same entropies): the body's
//! mechanical energy, in which the constant cancels. The floor is the resolution of a
//! learned f32 energy: network round-off and the implicit solves' 10⁻⁶ tolerance move E by
//! about 10⁻⁵ of |E| over a few hundred steps (measured on the shipped pendulum model), so
//! a body with less mechanical energy than that, one practically at rest, is measured
//! against the floor instead. A body whose energy stops being finite reads as an infinite
//! drift.
//!
//! [`Family::rest_state`]: crate::systems::Family::rest_state

use serde::{Deserialize, Serialize};

use crate::nn::cpu::CpuModel;

/// Relative resolution of a learned f32 energy: the floor of [`EnergyRecord::scale`].
pub const RESOLUTION: f32 = 1e-4;

/// One body's learned energy, entropy and temperatures at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnergySample {
    /// E(x; z) (H for Hamiltonian models).
    pub energy: f32,
    /// E at the rest state of x (NaN when not asked for, see [`measure`]).
    pub rest: f32,
    /// S(x; z) (NaN for Hamiltonian models).
    pub entropy: f32,
    /// Learned temperatures ∂E/∂Sᵢ of the entropy components (dno's bath, tgc's two
    /// gases; NaN where a model has none).
    pub temperatures: [f32; 2],
}

/// Measures every row of the batch `x` `[B·n]` with latents `z` `[B·d_z]`: E, S and
/// ∂E/∂S in one batched call per quantity, and for the rows where `first` is true (a body's
/// first measurement) also E at the rest state (see the module docs).
///
/// # Panics
/// When `first` does not have one entry per row.
pub fn measure(model: &CpuModel, x: &[f32], z: &[f32], first: &[bool]) -> Vec<EnergySample> {
    let n = model.dim();
    let rows = x.len() / n.max(1);
    assert_eq!(
        first.len(),
        rows,
        "measure: {} flags for {rows} rows",
        first.len()
    );
    let mut e = vec![0.0; rows];
    model.energy(x, z, &mut e);
    let mut s = vec![f32::NAN; rows];
    let has_entropy = model.entropy(x, z, &mut s);
    let mut grad = Vec::new();
    if has_entropy {
        grad = vec![0.0; x.len()];
        model.energy_grad(x, z, &mut grad);
    }
    let mut rest = vec![f32::NAN; rows];
    let wanted: Vec<usize> = (0..rows).filter(|&k| first[k]).collect();
    if !wanted.is_empty() {
        let family = model.config().family;
        let dz = z.len() / rows.max(1);
        let (mut xr, mut zr) = (Vec::new(), Vec::new());
        for &k in &wanted {
            xr.extend(family.rest_state(&x[k * n..(k + 1) * n]));
            zr.extend_from_slice(&z[k * dz..(k + 1) * dz]);
        }
        let mut er = vec![0.0; wanted.len()];
        model.energy(&xr, &zr, &mut er);
        for (&k, v) in wanted.iter().zip(er) {
            rest[k] = v;
        }
    }
    (0..rows)
        .map(|k| EnergySample {
            energy: e[k],
            rest: rest[k],
            entropy: s[k],
            temperatures: if has_entropy {
                temperatures(&grad[k * n..(k + 1) * n])
            } else {
                [f32::NAN; 2]
            },
        })
        .collect()
}

/// The learned temperatures ∂E/∂Sᵢ of a GENERIC state from its ∇E (`[n]`): the entropy
/// components follow (q, p) — dno's S is x[2], tgc's S₁, S₂ are x[2], x[3]; NaN where the
/// state has no such component.
pub fn temperatures(energy_grad: &[f32]) -> [f32; 2] {
    [
        energy_grad.get(2).copied().unwrap_or(f32::NAN),
        energy_grad.get(3).copied().unwrap_or(f32::NAN),
    ]
}

/// A body's learned energy (and entropy) now and at its first measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// E at the first measurement (NaN until then).
    pub initial: f32,
    /// E at the rest state of the first measured state (see the module docs).
    pub rest: f32,
    /// E now.
    pub energy: f32,
    /// S at the first measurement (NaN for Hamiltonian models).
    pub initial_entropy: f32,
    /// S now (NaN for Hamiltonian models).
    pub entropy: f32,
    /// Largest [`EnergyRecord::drift`] seen (+∞ once the energy was not finite).
    pub max_drift: f32,
    /// Smallest change of S between two measurements (GENERIC models; +∞ before two).
    pub min_entropy_change: f32,
    /// Learned temperatures ∂E/∂Sᵢ (NaN where the model has none).
    pub temperatures: [f32; 2],
}

impl Default for EnergyRecord {
    fn default() -> Self {
        Self {
            initial: f32::NAN,
            rest: f32::NAN,
            energy: f32::NAN,
            initial_entropy: f32::NAN,
            entropy: f32::NAN,
            max_drift: 0.0,
            min_entropy_change: f32::INFINITY,
            temperatures: [f32::NAN; 2],
        }
    }
}

impl EnergyRecord {
    /// The energy scale drifts are measured against: the mechanical energy |E₀ − E_rest|,
    /// floored at the resolution of E, [`RESOLUTION`] · max(|E₀|, |E_rest|) (see the module
    /// docs).
    pub fn scale(&self) -> f32 {
        let resolution = RESOLUTION * self.initial.abs().max(self.rest.abs());
        (self.initial - self.rest)
            .abs()
            .max(resolution)
            .max(f32::MIN_POSITIVE)
    }

    /// (E − E₀) / [`EnergyRecord::scale`]: the signed relative change of the energy.
    pub fn relative_change(&self) -> f32 {
        (self.energy - self.initial) / self.scale()
    }

    /// |E − E₀| / [`EnergyRecord::scale`]: offset-free relative drift (NaN before the
    /// first measurement or once E is not finite).
    pub fn drift(&self) -> f32 {
        self.relative_change().abs()
    }

    /// Takes a new measurement: the first sets E₀, E_rest and S₀; later ones update the
    /// drift and the smallest entropy change. A non-finite energy makes the drift +∞.
    pub fn record(&mut self, sample: EnergySample) {
        if self.initial.is_nan() {
            self.initial = sample.energy;
            self.rest = sample.rest;
            self.initial_entropy = sample.entropy;
        } else if sample.entropy.is_finite() || self.entropy.is_finite() {
            let change = sample.entropy - self.entropy;
            // A NaN change is the worst change there is.
            self.min_entropy_change = if change.is_nan() {
                f32::NEG_INFINITY
            } else {
                self.min_entropy_change.min(change)
            };
        }
        self.energy = sample.energy;
        self.entropy = sample.entropy;
        self.temperatures = sample.temperatures;
        let drift = self.drift();
        self.max_drift = if drift.is_finite() {
            self.max_drift.max(drift)
        } else {
            f32::INFINITY
        };
    }

    /// Starts over: the body's physics changed (a new latent code), so its energy is a
    /// different function from now on and the next measurement is the new E₀.
    pub fn restart(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_keeps_the_first_value_and_the_worst_drift() {
        let mut r = EnergyRecord::default();
        let sample = |energy, entropy| EnergySample {
            energy,
            rest: 1.0,
            entropy,
            temperatures: [f32::NAN; 2],
        };
        r.record(sample(2.0, 1.0));
        r.record(sample(2.2, 1.5));
        r.record(sample(2.0, 1.6));
        assert_eq!((r.initial, r.rest, r.initial_entropy), (2.0, 1.0, 1.0));
        // Against the mechanical energy E₀ − E_rest = 1, not E₀ = 2.
        assert!((r.max_drift - 0.2).abs() < 1e-6, "{}", r.max_drift);
        assert!((r.min_entropy_change - 0.1).abs() < 1e-6);
        r.restart();
        assert!(r.initial.is_nan());
    }

    #[test]
    fn the_drift_ignores_the_energy_offset_and_a_blow_up_stands_out() {
        let record = |offset: f32| {
            let mut r = EnergyRecord::default();
            for e in [1.0, 1.01, 0.99] {
                r.record(EnergySample {
                    energy: e + offset,
                    rest: offset,
                    entropy: f32::NAN,
                    temperatures: [f32::NAN; 2],
                });
            }
            r.max_drift
        };
        // The same physics with energies shifted by a constant: the same drift, also when
        // the shift puts E₀ at zero.
        assert!((record(0.0) - 0.01).abs() < 1e-5);
        assert!((record(-1.0) - 0.01).abs() < 1e-5);
        // Far out (E₀ ≈ 100 against a mechanical energy of 1) still the same, until the
        // mechanical energy falls below 10⁻⁴ of |E|.
        assert!((record(100.0) - 0.01).abs() < 1e-3);
        assert!(record(1e5) < 0.01);
        let mut r = EnergyRecord::default();
        for e in [1.0, f32::NAN, 1.0] {
            r.record(EnergySample {
                energy: e,
                rest: 0.0,
                entropy: f32::NAN,
                temperatures: [f32::NAN; 2],
            });
        }
        assert_eq!(
            r.max_drift,
            f32::INFINITY,
            "a NaN energy is the worst drift"
        );
    }
}
