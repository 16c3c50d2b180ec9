//! The amortised start of online adaptation: a small MLP that maps an observed window of a
//! body to its latent code z and the unobserved part u of its starting state, in one
//! forward pass.
//!
//! ```text
//!  observations (tᵢ, qᵢ) ──resample──▶ q(t₀ + k·span/(G−1)), k = 0..G ──standardise──▶ a₀
//!  aₗ = tanh(aₗ₋₁ Wₗ + bₗ)  (hidden layers)        y = a_L W_out + b_out
//!  (z, u) = y ⊙ σ_out + μ_out
//! ```
//!
//! Observations may be irregular: they are interpolated linearly onto G evenly spaced
//! times over the first `span` seconds. Only positions feed the encoder (full-state
//! observations are cut to their positions), so one encoder serves both kinds of window.
//! The encoder is an optional section of a model file ([`EncoderSpec`] in the config, its
//! weights as `encoder.*` tensors beside the model's); it is trained by
//! [`crate::meta::encoder`].

use rand::RngExt as _;
use serde::{Deserialize, Serialize};

use super::{
    gemm::{MatRef, matmul},
    simd::{mul_dtanh, tanh_rows},
};
use crate::{data::stream_rng, meta::Observation, systems::Family};

/// How an encoder reads a window and how it was trained: the `encoder` section of a model
/// config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    /// Seconds of observations it reads, from the first one.
    pub span: f64,
    /// Evenly spaced times the window is resampled at (G ≥ 2).
    pub grid: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Per-input mean and standard deviation (G · dof each).
    pub input_mean: Vec<f64>,
    /// See `input_mean`.
    pub input_std: Vec<f64>,
    /// Per-output mean and standard deviation (d_z + n − dof each).
    pub output_mean: Vec<f64>,
    /// See `output_mean`.
    pub output_std: Vec<f64>,
    /// How it was trained.
    #[serde(default)]
    pub record: Option<EncoderRecord>,
}

/// How an encoder was trained ([`crate::meta::encoder::EncoderTraining`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderRecord {
    /// Systems drawn from the training distribution, each with its auto-decoded latent.
    pub instances: usize,
    /// Observed windows per system.
    pub windows: usize,
    /// Adam steps.
    pub steps: usize,
    /// Largest relative observation noise of the training windows.
    pub max_noise: f64,
    /// Seed of the draws.
    pub seed: u64,
    /// Mean squared error of the standardised outputs on held-out systems.
    pub validation_loss: f64,
}

/// What an encoder reads from a window: z, and u at the window's first observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Guess {
    /// The latent code.
    pub latent: Vec<f32>,
    /// The unobserved components of the state at the first observation (momenta, and
    /// entropies for GENERIC families).
    pub hidden: Vec<f32>,
}

/// One dense layer, weights `[d_in, d_out]` row-major.
#[derive(Clone, Debug, PartialEq)]
struct Layer {
    d_in: usize,
    d_out: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

/// The encoder network with its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoder {
    spec: EncoderSpec,
    family: Family,
    d_latent: usize,
    layers: Vec<Layer>,
}

/// The gradient of a loss with respect to every weight and bias, layer by layer.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderGrads {
    /// (∂L/∂W, ∂L/∂b) per layer.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Encoder {
    /// A fresh encoder for `family` and latent dimension `d_latent`: Glorot-uniform weights
    /// from `seed`, zero biases, and `spec`'s standardisation (lengths must match
    /// [`Encoder::input_width`] and [`Encoder::output_width`]).
    pub fn new(spec: EncoderSpec, family: Family, d_latent: usize, seed: u64) -> Self {
        let mut rng = stream_rng("nn/encoder", seed, 0);
        let mut enc = Self {
            spec,
            family,
            d_latent,
            layers: Vec::new(),
        };
        let widths = enc.widths();
        enc.layers = widths
            .windows(2)
            .map(|w| {
                let bound = (6.0 / (w[0] + w[1]) as f64).sqrt();
                Layer {
                    d_in: w[0],
                    d_out: w[1],
                    w: (0..w[0] * w[1])
                        .map(|_| (bound * (2.0 * rng.random::<f64>() - 1.0)) as f32)
                        .collect(),
                    b: vec![0.0; w[1]],
                }
            })
            .collect();
        enc
    }

    /// Inputs: G resampled positions.
    pub fn input_width(spec: &EncoderSpec, family: Family) -> usize {
        spec.grid * family.dof()
    }

    /// Outputs: z and the unobserved start.
    pub fn output_width(family: Family, d_latent: usize) -> usize {
        d_latent + family.dim() - family.dof()
    }

    fn widths(&self) -> Vec<usize> {
        let mut w = vec![Self::input_width(&self.spec, self.family)];
        w.extend(&self.spec.hidden);
        w.push(Self::output_width(self.family, self.d_latent));
        w
    }

    /// Its spec.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Its spec, to update the standardisation or the training record.
    pub fn spec_mut(&mut self) -> &mut EncoderSpec {
        &mut self.spec
    }

    /// Seconds of observations it needs.
    pub fn span(&self) -> f64 {
        self.spec.span
    }

    /// Whether observations spanning `seconds` (first to last) are long enough to read.
    pub fn covers(&self, seconds: f64) -> bool {
        seconds + 1e-9 >= self.spec.span
    }

    /// The tensors of its weights, `(name, shape, values)`, in a fixed order: the
    /// `encoder.*` section of a weights file.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    (
                        format!("encoder.{i}.weight"),
                        vec![l.d_in, l.d_out],
                        &l.w[..],
                    ),
                    (format!("encoder.{i}.bias"), vec![l.d_out], &l.b[..]),
                ]
            })
            .collect()
    }

    /// The tensors' values, mutable, in the order of [`Encoder::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.w, &mut l.b])
            .collect()
    }

    /// Names and shapes it expects, in order.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors().into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// The standardised encoder input of a window: its positions interpolated linearly at
    /// G evenly spaced times over `[t₀, t₀ + span]`. `None` when the window spans less
    /// than `span` seconds (or holds a non-finite value).
    pub fn features(&self, observations: &[Observation]) -> Option<Vec<f32>> {
        let dof = self.family.dof();
        let first = observations.first()?;
        if !self.covers(observations.last()?.t - first.t) || first.values.len() < dof {
            return None;
        }
        let mut out = Vec::with_capacity(self.spec.grid * dof);
        let mut k = 0;
        for g in 0..self.spec.grid {
            let t = first.t + self.spec.span * g as f64 / (self.spec.grid - 1) as f64;
            while k + 2 < observations.len() && observations[k + 1].t < t {
                k += 1;
            }
            let (a, b) = (
                &observations[k],
                &observations[(k + 1).min(observations.len() - 1)],
            );
            let s = if b.t > a.t {
                ((t - a.t) / (b.t - a.t)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            for c in 0..dof {
                let v = f64::from(a.values[c]) * (1.0 - s) + f64::from(b.values[c]) * s;
                let i = out.len();
                out.push(((v - self.spec.input_mean[i]) / self.spec.input_std[i]) as f32);
            }
        }
        out.iter().all(|v| v.is_finite()).then_some(out)
    }

    /// Forward pass over `rows` standardised inputs; returns every layer's activations
    /// (the input first, the standardised output last).
    fn activations(&self, inputs: &[f32], rows: usize) -> Vec<Vec<f32>> {
        let mut acts = vec![inputs.to_vec()];
        for (i, l) in self.layers.iter().enumerate() {
            let mut pre = vec![0.0f32; rows * l.d_out];
            matmul(
                &mut pre,
                rows,
                l.d_out,
                l.d_out,
                MatRef::rows(&acts[i], rows, l.d_in),
                MatRef::rows(&l.w, l.d_in, l.d_out),
                false,
            );
            if i + 1 < self.layers.len() {
                let mut a = vec![0.0f32; rows * l.d_out];
                tanh_rows(&pre, l.d_out, &l.b, &mut a, l.d_out, rows, l.d_out);
                acts.push(a);
            } else {
                for row in pre.chunks_mut(l.d_out) {
                    row.iter_mut().zip(&l.b).for_each(|(v, b)| *v += b);
                }
                acts.push(pre);
            }
        }
        acts
    }

    /// Standardised outputs of `rows` standardised inputs.
    pub fn forward(&self, inputs: &[f32], rows: usize) -> Vec<f32> {
        self.activations(inputs, rows).pop().unwrap_or_default()
    }

    /// The mean squared error of the standardised outputs against `targets`, and its
    /// gradient by the reverse pass: δ_L = 2 (y − t) / (rows · d_out),
    /// ∂L/∂Wₗ = aₗ₋₁ᵀ δₗ, ∂L/∂bₗ = Σ_rows δₗ, δₗ₋₁ = (δₗ Wₗᵀ) ⊙ (1 − aₗ₋₁²).
    pub fn loss_grad(&self, inputs: &[f32], targets: &[f32], rows: usize) -> (f64, EncoderGrads) {
        let acts = self.activations(inputs, rows);
        let out = &acts[acts.len() - 1];
        let width = out.len() / rows.max(1);
        let scale = 1.0 / (rows * width).max(1) as f32;
        let mut loss = 0.0f64;
        let mut delta: Vec<f32> = out
            .iter()
            .zip(targets)
            .map(|(y, t)| {
                loss += f64::from(y - t).powi(2);
                2.0 * (y - t) * scale
            })
            .collect();
        let mut layers = vec![(Vec::new(), Vec::new()); self.layers.len()];
        for (i, l) in self.layers.iter().enumerate().rev() {
            let mut gw = vec![0.0f32; l.d_in * l.d_out];
            matmul(
                &mut gw,
                l.d_in,
                l.d_out,
                l.d_out,
                MatRef::rows(&acts[i], rows, l.d_in).t(),
                MatRef::rows(&delta, rows, l.d_out),
                false,
            );
            let mut gb = vec![0.0f32; l.d_out];
            for row in delta.chunks(l.d_out) {
                gb.iter_mut().zip(row).for_each(|(g, d)| *g += d);
            }
            if i > 0 {
                let mut back = vec![0.0f32; rows * l.d_in];
                matmul(
                    &mut back,
                    rows,
                    l.d_in,
                    l.d_in,
                    MatRef::rows(&delta, rows, l.d_out),
                    MatRef::rows(&l.w, l.d_in, l.d_out).t(),
                    false,
                );
                let mut next = vec![0.0f32; rows * l.d_in];
                mul_dtanh(
                    &back, l.d_in, &acts[i], l.d_in, &mut next, l.d_in, rows, l.d_in,
                );
                delta = next;
            }
            layers[i] = (gw, gb);
        }
        (loss * f64::from(scale), EncoderGrads { layers })
    }

    /// The standardised training target of a latent and an unobserved start.
    pub fn standardise_output(&self, latent: &[f32], hidden: &[f32]) -> Vec<f32> {
        latent
            .iter()
            .chain(hidden)
            .enumerate()
            .map(|(i, v)| {
                ((f64::from(*v) - self.spec.output_mean[i]) / self.spec.output_std[i]) as f32
            })
            .collect()
    }

    /// Reads z and u from a window (see the module docs); `None` when the window is too
    /// short ([`Encoder::features`]) or the output is not finite.
    pub fn encode(&self, observations: &[Observation]) -> Option<Guess> {
        let x = self.features(observations)?;
        let y = self.forward(&x, 1);
        let out: Vec<f32> = y
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (f64::from(*v) * self.spec.output_std[i] + self.spec.output_mean[i]) as f32
            })
            .collect();
        if !out.iter().all(|v| v.is_finite()) {
            return None;
        }
        let (latent, hidden) = out.split_at(self.d_latent);
        Some(Guess {
            latent: latent.to_vec(),
            hidden: hidden.to_vec(),
        })
    }
}

/// Adam over an encoder's tensors.
#[derive(Clone, Debug, Default)]
pub struct EncoderAdam {
    states: Vec<crate::meta::optim::AdamState>,
}

impl EncoderAdam {
    /// One Adam step of every tensor.
    pub fn step(&mut self, encoder: &mut Encoder, grads: &EncoderGrads, lr: f64) {
        let grads: Vec<&Vec<f32>> = grads.layers.iter().flat_map(|(w, b)| [w, b]).collect();
        let tensors = encoder.tensors_mut();
        self.states.resize_with(tensors.len(), Default::default);
        for ((t, g), s) in tensors.into_iter().zip(grads).zip(&mut self.states) {
            s.update(t, g, lr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(grid: usize) -> EncoderSpec {
        let (d_in, d_out) = (grid, 5 + 1);
        EncoderSpec {
            span: 1.0,
            grid,
            hidden: vec![8, 8],
            input_mean: vec![0.1; d_in],
            input_std: vec![0.5; d_in],
            output_mean: vec![0.0; d_out],
            output_std: vec![1.0; d_out],
            record: None,
        }
    }

    #[test]
    fn the_reverse_pass_matches_central_differences() {
        let mut enc = Encoder::new(spec(6), Family::Pendulum, 5, 3);
        let mut rng = stream_rng("test/encoder", 0, 0);
        let rows = 4;
        let x: Vec<f32> = (0..rows * 6).map(|_| rng.random::<f32>() - 0.5).collect();
        let t: Vec<f32> = (0..rows * 6).map(|_| rng.random::<f32>() - 0.5).collect();
        let (_, grads) = enc.loss_grad(&x, &t, rows);
        let analytic: Vec<f32> = grads
            .layers
            .iter()
            .flat_map(|(w, b)| w.iter().chain(b))
            .copied()
            .collect();
        let mut k = 0;
        for ti in 0..enc.tensors_mut().len() {
            let len = enc.tensors_mut()[ti].len();
            for j in (0..len).step_by(7) {
                let h = 1e-2f32;
                let v = enc.tensors_mut()[ti][j];
                enc.tensors_mut()[ti][j] = v + h;
                let up = enc.loss_grad(&x, &t, rows).0;
                enc.tensors_mut()[ti][j] = v - h;
                let down = enc.loss_grad(&x, &t, rows).0;
                enc.tensors_mut()[ti][j] = v;
                let fd = (up - down) / (2.0 * f64::from(h));
                let a = f64::from(analytic[k + j]);
                assert!(
                    (fd - a).abs() <= 1e-3 * a.abs().max(1e-2),
                    "tensor {ti} [{j}]: {a} vs {fd}"
                );
            }
            k += len;
        }
    }

    #[test]
    fn irregular_windows_are_resampled_and_short_ones_refused() {
        let enc = Encoder::new(spec(5), Family::Pendulum, 5, 0);
        let obs = |ts: &[f64]| -> Vec<Observation> {
            ts.iter()
                .map(|&t| Observation {
                    t,
                    values: [(2.0 * t) as f32][..].into(),
                })
                .collect()
        };
        // A linear motion is resampled exactly, whatever the timestamps.
        let x = enc
            .features(&obs(&[3.0, 3.1, 3.45, 3.5, 3.9, 4.0, 4.3]))
            .unwrap();
        for (g, v) in x.iter().enumerate() {
            let q = 2.0 * (3.0 + 0.25 * g as f64);
            assert!((f64::from(*v) * 0.5 + 0.1 - q).abs() < 1e-5, "{g}: {v}");
        }
        assert!(
            enc.features(&obs(&[0.0, 0.5, 0.9])).is_none(),
            "0.9 s < 1 s"
        );
        assert!(enc.encode(&obs(&[0.0, 0.5, 1.0])).is_some());
    }
}
