//! Energy bookkeeping of stepped bodies: the learned energy E (and entropy S of GENERIC
//! models) measured in one batched call per model, and per body the record a runtime
//! reports (drift since the first measurement, the smallest per-tick change of S).

use serde::{Deserialize, Serialize};

use crate::nn::cpu::CpuModel;

/// One body's learned energy, entropy and temperatures at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnergySample {
    /// E(x; z) (H for Hamiltonian models).
    pub energy: f32,
    /// S(x; z) (NaN for Hamiltonian models).
    pub entropy: f32,
    /// Learned temperatures ∂E/∂Sᵢ of the entropy components (dno's bath, tgc's two
    /// gases; NaN where a model has none).
    pub temperatures: [f32; 2],
}

/// Measures every row of the batch `x` `[B·n]` with latents `z` `[B·d_z]`: E, S and
/// ∂E/∂S, in one batched call per quantity.
pub fn measure(model: &CpuModel, x: &[f32], z: &[f32]) -> Vec<EnergySample> {
    let n = model.dim();
    let rows = x.len() / n.max(1);
    let mut e = vec![0.0; rows];
    model.energy(x, z, &mut e);
    let mut s = vec![f32::NAN; rows];
    let has_entropy = model.entropy(x, z, &mut s);
    let mut grad = Vec::new();
    if has_entropy {
        grad = vec![0.0; x.len()];
        model.energy_grad(x, z, &mut grad);
    }
    (0..rows)
        .map(|k| EnergySample {
            energy: e[k],
            entropy: s[k],
            // The entropy components follow (q, p): dno's S is x[2], tgc's S₁, S₂ are
            // x[2], x[3].
            temperatures: if has_entropy {
                let g = &grad[k * n..(k + 1) * n];
                [
                    g.get(2).copied().unwrap_or(f32::NAN),
                    g.get(3).copied().unwrap_or(f32::NAN),
                ]
            } else {
                [f32::NAN; 2]
            },
        })
        .collect()
}

/// A body's learned energy (and entropy) now and at its first measurement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyRecord {
    /// E at the first measurement (NaN until then).
    pub initial: f32,
    /// E now.
    pub energy: f32,
    /// S at the first measurement (NaN for Hamiltonian models).
    pub initial_entropy: f32,
    /// S now (NaN for Hamiltonian models).
    pub entropy: f32,
    /// Largest [`EnergyRecord::drift`] seen.
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
    /// |E − E₀| / max(|E₀|, 1e-6).
    pub fn drift(&self) -> f32 {
        (self.energy - self.initial).abs() / self.initial.abs().max(1e-6)
    }

    /// Takes a new measurement: the first sets E₀ and S₀; later ones update the drift and
    /// the smallest entropy change.
    pub fn record(&mut self, sample: EnergySample) {
        if self.initial.is_nan() {
            self.initial = sample.energy;
            self.initial_entropy = sample.entropy;
        } else if sample.entropy.is_finite() || self.entropy.is_finite() {
            self.min_entropy_change = self.min_entropy_change.min(sample.entropy - self.entropy);
        }
        self.energy = sample.energy;
        self.entropy = sample.entropy;
        self.temperatures = sample.temperatures;
        let drift = self.drift();
        if drift.is_finite() {
            self.max_drift = self.max_drift.max(drift);
        }
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
            entropy,
            temperatures: [f32::NAN; 2],
        };
        r.record(sample(2.0, 1.0));
        r.record(sample(2.2, 1.5));
        r.record(sample(2.0, 1.6));
        assert_eq!((r.initial, r.initial_entropy), (2.0, 1.0));
        assert!((r.max_drift - 0.1).abs() < 1e-6);
        assert!((r.min_entropy_change - 0.1).abs() < 1e-6);
        r.restart();
        assert!(r.initial.is_nan());
    }
}
