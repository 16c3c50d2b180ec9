//! Adam (Kingma & Ba 2015) on host parameters: one implementation for the network, the
//! latent table and test-time latents.
//!
//! ```text
//! m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²,   x ← x − lr · m̂ / (√v̂ + ε)
//! m̂ = m / (1 − β₁ᵗ),     v̂ = v / (1 − β₂ᵗ)
//! ```

use rayon::prelude::*;

use crate::nn::cpu::{ModelParams, ParamRole};

/// β₁.
pub const BETA1: f32 = 0.9;
/// β₂.
pub const BETA2: f32 = 0.999;
/// ε.
pub const EPSILON: f32 = 1e-8;

/// Parameter vectors at least this long are updated in parallel, in chunks of this size.
const PARALLEL_FROM: usize = 1 << 14;

/// Adam moments of one parameter vector, with its own step count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamState {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamState {
    /// One Adam step on `x` with gradient `g`.
    pub fn update(&mut self, x: &mut [f32], g: &[f32], lr: f64) {
        if self.m.len() != x.len() {
            self.m = vec![0.0; x.len()];
            self.v = vec![0.0; x.len()];
            self.t = 0;
        }
        self.t += 1;
        let (c1, c2) = (1.0 - BETA1.powi(self.t), 1.0 - BETA2.powi(self.t));
        let lr = lr as f32;
        let step = |x: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((x, g), m), v) in x.iter_mut().zip(g).zip(m).zip(v) {
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                *x -= lr * (*m / c1) / ((*v / c2).sqrt() + EPSILON);
            }
        };
        if x.len() < PARALLEL_FROM {
            step(x, g, &mut self.m, &mut self.v);
        } else {
            // Element by element, so the split changes nothing but the time (an FW
            // network's 200 k parameters took a tenth of its training step on one thread).
            x.par_chunks_mut(PARALLEL_FROM)
                .zip(g.par_chunks(PARALLEL_FROM))
                .zip(self.m.par_chunks_mut(PARALLEL_FROM))
                .zip(self.v.par_chunks_mut(PARALLEL_FROM))
                .for_each(|(((x, g), m), v)| step(x, g, m, v));
        }
    }
}

/// Adam over every tensor of a model, one state per tensor.
#[derive(Clone, Debug, Default)]
pub struct ParamsAdam {
    states: Vec<AdamState>,
}

impl ParamsAdam {
    /// One step on the tensors whose role passes `filter`.
    pub fn step(
        &mut self,
        params: &mut ModelParams,
        grads: &ModelParams,
        lr: f64,
        filter: impl Fn(ParamRole) -> bool,
    ) {
        let tensors = params.tensors_mut();
        if self.states.len() != tensors.len() {
            self.states = vec![AdamState::default(); tensors.len()];
        }
        for (((p, role), (g, _)), state) in tensors
            .into_iter()
            .zip(grads.tensors())
            .zip(&mut self.states)
        {
            if filter(role) && !p.is_empty() {
                state.update(p, g, lr);
            }
        }
    }
}

/// Adam over the rows of a latent table: a row's moments and step count advance only when
/// it is in the batch (one `Param` per latent, docs/protocol.md §5).
#[derive(Clone, Debug)]
pub struct RowsAdam {
    states: Vec<AdamState>,
    width: usize,
}

impl RowsAdam {
    /// For `rows` latents of width `width`.
    pub fn new(rows: usize, width: usize) -> Self {
        Self {
            states: vec![AdamState::default(); rows],
            width,
        }
    }

    /// Updates the rows `ids` of `table` (`[rows, width]`) with gradients `grads`
    /// (`[ids.len(), width]`, in the order of `ids`).
    pub fn step(&mut self, table: &mut [f32], ids: &[usize], grads: &[f32], lr: f64) {
        let w = self.width;
        for (k, &i) in ids.iter().enumerate() {
            self.states[i].update(
                &mut table[i * w..(i + 1) * w],
                &grads[k * w..(k + 1) * w],
                lr,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam minimises a convex quadratic, and its first step has size lr in every coordinate.
    #[test]
    fn adam_first_step_is_lr_and_it_converges() {
        let mut x = vec![3.0f32, -2.0];
        let mut s = AdamState::default();
        s.update(&mut x, &[6.0, -4.0], 0.1);
        assert!((x[0] - 2.9).abs() < 1e-6 && (x[1] + 1.9).abs() < 1e-6);
        for _ in 0..2000 {
            let g: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
            s.update(&mut x, &g, 0.05);
        }
        assert!(x.iter().all(|v| v.abs() < 1e-2), "{x:?}");
    }

    #[test]
    fn rows_outside_the_batch_are_untouched() {
        let mut table = vec![1.0f32; 6];
        let mut adam = RowsAdam::new(3, 2);
        adam.step(&mut table, &[2], &[1.0, -1.0], 0.5);
        assert_eq!(&table[..4], &[1.0; 4]);
        assert!((table[4] - 0.5).abs() < 1e-6 && (table[5] - 1.5).abs() < 1e-6);
    }
}
