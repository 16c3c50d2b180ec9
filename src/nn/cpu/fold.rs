//! Full-weight (FW) modulation folded once per latent: what makes FW training cost about
//! what an unmodulated network costs.
//!
//! An FW layer maps h to h (W + Σₖ zₖΔWₖ) + b + Σₖ zₖ aₖ (aₖ the rows of A_s). Evaluated row
//! by row, every row carries its own W̃(z): the kernel appends h ⊗ z to each row's input
//! (d_in·d_z extra columns, 10× the GEMM of the layer at d_z = 10). But the rows of a
//! training batch come in tasks that share a latent, so the layer can be folded once per
//! task,
//!
//! ```text
//! W̃ = W + Σₖ zₖ ΔWₖ        b̃ = b + Σₖ zₖ aₖ
//! ```
//!
//! (d_z·d_in·d_out multiply-adds per task), the task's rows evaluated and differentiated as
//! an unmodulated network, and the gradient of the folded weights (Ḡ = ∂L/∂W̃, ḡ = ∂L/∂b̃)
//! carried back by the chain rule:
//!
//! ```text
//! ∂L/∂W = Ḡ     ∂L/∂ΔWₖ = zₖ Ḡ     ∂L/∂b = ḡ     ∂L/∂aₖ = zₖ ḡ     ∂L/∂zₖ = ⟨ΔWₖ, Ḡ⟩ + aₖ·ḡ
//! ```
//!
//! summed over tasks. [`super::loss::Objective::loss_grad`] takes this path for FW models.

use rayon::prelude::*;

use super::params::{LayerParams, MlpParams, ModelParams};
use crate::nn::Modulation;

impl LayerParams {
    /// This FW layer with the latent `z` folded in, as an unmodulated layer (latent width 0).
    fn fold_fw(&self, z: &[f32]) -> LayerParams {
        let (i, o) = (self.config.d_input, self.config.d_output);
        let dz = z.len();
        let mut weight = self.weight.clone();
        for ii in 0..i {
            let row = &mut weight[ii * o..(ii + 1) * o];
            for (k, zk) in z.iter().enumerate() {
                let delta = &self.fw[ii * dz * o + k * o..ii * dz * o + (k + 1) * o];
                row.iter_mut().zip(delta).for_each(|(w, d)| *w += zk * d);
            }
        }
        let mut bias = self.bias.clone();
        for (k, zk) in z.iter().enumerate() {
            let a = &self.shift[k * o..(k + 1) * o];
            bias.iter_mut().zip(a).for_each(|(b, a)| *b += zk * a);
        }
        let mut config = self.config;
        config.modulation = Modulation::None;
        config.d_latent = 0;
        LayerParams {
            config,
            weight,
            bias,
            shift: Vec::new(),
            fw: Vec::new(),
            mr_v: Vec::new(),
            mr_u: Vec::new(),
            svd_v: Vec::new(),
            svd_u: Vec::new(),
            svd_d: Vec::new(),
        }
    }

    /// ∂L/∂zₖ += ⟨ΔWₖ, Ḡ⟩ + aₖ·ḡ for the folded layer's gradient `g` (`zbar` `[d_z]`).
    fn add_fw_latent_grad(&self, g: &LayerParams, zbar: &mut [f32]) {
        let (i, o) = (self.config.d_input, self.config.d_output);
        let dz = zbar.len();
        for ii in 0..i {
            let gw = &g.weight[ii * o..(ii + 1) * o];
            for (k, zb) in zbar.iter_mut().enumerate() {
                let at = ii * dz * o + k * o;
                *zb += dot(&self.fw[at..at + o], gw);
            }
        }
        for (k, zb) in zbar.iter_mut().enumerate() {
            *zb += dot(&self.shift[k * o..(k + 1) * o], &g.bias);
        }
    }

    /// Adds the parameter part of the chain rule of [`LayerParams::fold_fw`] into `out`
    /// (this layer's gradient) for every task's (z, folded gradient), in task order:
    /// ∂L/∂W = Σ Ḡ, ∂L/∂ΔWₖ = Σ zₖḠ, ∂L/∂b = Σ ḡ, ∂L/∂aₖ = Σ zₖḡ. The ΔW rows run in
    /// parallel; every element still sums its tasks in order (deterministic).
    fn add_unfolded_fw(&self, tasks: &[(&[f32], &LayerParams)], out: &mut LayerParams) {
        let o = self.config.d_output;
        let dz = self.config.d_latent;
        for (_, g) in tasks {
            out.weight
                .iter_mut()
                .zip(&g.weight)
                .for_each(|(a, b)| *a += b);
            out.bias.iter_mut().zip(&g.bias).for_each(|(a, b)| *a += b);
        }
        out.fw
            .par_chunks_mut((dz * o).max(1))
            .with_min_len(8)
            .enumerate()
            .for_each(|(ii, row)| {
                for (z, g) in tasks {
                    let gw = &g.weight[ii * o..(ii + 1) * o];
                    for (zk, dw) in z.iter().zip(row.chunks_exact_mut(o)) {
                        dw.iter_mut().zip(gw).for_each(|(a, g)| *a += zk * g);
                    }
                }
            });
        for (z, g) in tasks {
            for (zk, a) in z.iter().zip(out.shift.chunks_exact_mut(o)) {
                a.iter_mut().zip(&g.bias).for_each(|(a, g)| *a += zk * g);
            }
        }
    }
}

/// a·b with sixteen partial sums, so that it vectorises (a plain `sum` adds in order).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; 16];
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl MlpParams {
    fn fold_fw(&self, z: &[f32]) -> MlpParams {
        MlpParams {
            layers: self.layers.iter().map(|l| l.fold_fw(z)).collect(),
            readout: self.readout.clone(),
            readout_bias: self.readout_bias,
        }
    }

    fn add_fw_latent_grad(&self, g: &MlpParams, zbar: &mut [f32]) {
        for (l, gl) in self.layers.iter().zip(&g.layers) {
            l.add_fw_latent_grad(gl, zbar);
        }
    }

    fn add_unfolded_fw(&self, tasks: &[(&[f32], &MlpParams)], out: &mut MlpParams) {
        for (at, (l, ol)) in self.layers.iter().zip(&mut out.layers).enumerate() {
            let layer: Vec<_> = tasks.iter().map(|(z, g)| (*z, &g.layers[at])).collect();
            l.add_unfolded_fw(&layer, ol);
        }
        for (_, g) in tasks {
            out.readout
                .iter_mut()
                .zip(&g.readout)
                .for_each(|(a, b)| *a += b);
        }
    }

    fn is_full_weight(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.config.modulation == Modulation::Fw)
    }
}

impl ModelParams {
    /// Whether the modulated networks are full-weight (FW) in every layer: then training
    /// folds the latent per task ([`ModelParams::fold_fw`]).
    pub fn is_full_weight(&self) -> bool {
        match self {
            Self::Hnn(m) => m.is_full_weight(),
            Self::Separable { t, v } => t.is_full_weight() && v.is_full_weight(),
            Self::Generic(g) => g.energy.is_full_weight() && g.entropy.is_full_weight(),
        }
    }

    /// An FW model with the latent `z` folded into its modulated networks: an unmodulated
    /// model (latent width 0) with the same field at `z` (see the module docs).
    pub fn fold_fw(&self, z: &[f32]) -> ModelParams {
        match self {
            Self::Hnn(m) => Self::Hnn(m.fold_fw(z)),
            Self::Separable { t, v } => Self::Separable {
                t: t.fold_fw(z),
                v: v.fold_fw(z),
            },
            Self::Generic(g) => {
                let mut folded = g.clone();
                folded.energy = g.energy.fold_fw(z);
                folded.entropy = g.entropy.fold_fw(z);
                Self::Generic(folded)
            }
        }
    }

    /// ∂L/∂z (`zbar`, `[d_z]`, added to) from the gradient `g` of this model folded at one
    /// latent ([`ModelParams::fold_fw`]): ∂L/∂zₖ = Σ_layers ⟨ΔWₖ, Ḡ⟩ + aₖ·ḡ.
    pub fn add_fw_latent_grad(&self, g: &ModelParams, zbar: &mut [f32]) {
        match (self, g) {
            (Self::Hnn(m), Self::Hnn(gm)) => m.add_fw_latent_grad(gm, zbar),
            (Self::Separable { t, v }, Self::Separable { t: gt, v: gv }) => {
                t.add_fw_latent_grad(gt, zbar);
                v.add_fw_latent_grad(gv, zbar);
            }
            (Self::Generic(p), Self::Generic(gp)) => {
                p.energy.add_fw_latent_grad(&gp.energy, zbar);
                p.entropy.add_fw_latent_grad(&gp.entropy, zbar);
            }
            _ => panic!("add_fw_latent_grad: gradients of another architecture"),
        }
    }

    /// Adds the parameter part of the chain rule of [`ModelParams::fold_fw`] into `out`
    /// (this model's gradient) for every task's (latent, folded model's gradient), summed
    /// in task order.
    pub fn add_unfolded_fw(&self, tasks: &[(&[f32], &ModelParams)], out: &mut ModelParams) {
        /// Every task's (latent, network picked from its gradient).
        fn nets<'a>(
            tasks: &[(&'a [f32], &'a ModelParams)],
            pick: impl Fn(&'a ModelParams) -> Option<&'a MlpParams>,
        ) -> Vec<(&'a [f32], &'a MlpParams)> {
            tasks
                .iter()
                .map(|&(z, g)| {
                    let net = pick(g).expect("add_unfolded_fw: gradients of another architecture");
                    (z, net)
                })
                .collect()
        }
        match (self, out) {
            (Self::Hnn(m), Self::Hnn(om)) => {
                m.add_unfolded_fw(
                    &nets(tasks, |g| match g {
                        Self::Hnn(h) => Some(h),
                        _ => None,
                    }),
                    om,
                );
            }
            (Self::Separable { t, v }, Self::Separable { t: ot, v: ov }) => {
                t.add_unfolded_fw(
                    &nets(tasks, |g| match g {
                        Self::Separable { t, .. } => Some(t),
                        _ => None,
                    }),
                    ot,
                );
                v.add_unfolded_fw(
                    &nets(tasks, |g| match g {
                        Self::Separable { v, .. } => Some(v),
                        _ => None,
                    }),
                    ov,
                );
            }
            (Self::Generic(p), Self::Generic(op)) => {
                p.energy.add_unfolded_fw(
                    &nets(tasks, |g| match g {
                        Self::Generic(g) => Some(&g.energy),
                        _ => None,
                    }),
                    &mut op.energy,
                );
                p.entropy.add_unfolded_fw(
                    &nets(tasks, |g| match g {
                        Self::Generic(g) => Some(&g.entropy),
                        _ => None,
                    }),
                    &mut op.entropy,
                );
                // The unmodulated parts are shared: their gradients add as they are.
                for (_, g) in tasks {
                    let Self::Generic(gp) = g else {
                        panic!("add_unfolded_fw: gradients of another architecture")
                    };
                    for ((ow, ob), (gw, gb)) in op
                        .a_net
                        .layers
                        .iter_mut()
                        .chain(op.c_net.layers.iter_mut())
                        .zip(gp.a_net.layers.iter().chain(&gp.c_net.layers))
                    {
                        ow.iter_mut().zip(gw).for_each(|(a, b)| *a += b);
                        ob.iter_mut().zip(gb).for_each(|(a, b)| *a += b);
                    }
                    op.xi.iter_mut().zip(&gp.xi).for_each(|(a, b)| *a += b);
                    op.zeta.iter_mut().zip(&gp.zeta).for_each(|(a, b)| *a += b);
                }
            }
            _ => panic!("add_unfolded_fw: gradients of another architecture"),
        }
    }
}
