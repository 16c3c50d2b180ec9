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

    /// Adds the chain rule of [`LayerParams::fold_fw`] for the folded layer's gradient `g`
    /// into `out` (this layer's gradient) and `zbar` (∂L/∂z).
    fn unfold_fw_grad(&self, g: &LayerParams, z: &[f32], out: &mut LayerParams, zbar: &mut [f32]) {
        let (i, o) = (self.config.d_input, self.config.d_output);
        let dz = z.len();
        out.weight
            .iter_mut()
            .zip(&g.weight)
            .for_each(|(a, b)| *a += b);
        out.bias.iter_mut().zip(&g.bias).for_each(|(a, b)| *a += b);
        for ii in 0..i {
            let gw = &g.weight[ii * o..(ii + 1) * o];
            for (k, zk) in z.iter().enumerate() {
                let at = ii * dz * o + k * o;
                let delta = &self.fw[at..at + o];
                zbar[k] += dot(delta, gw);
                out.fw[at..at + o]
                    .iter_mut()
                    .zip(gw)
                    .for_each(|(a, g)| *a += zk * g);
            }
        }
        for (k, zk) in z.iter().enumerate() {
            let a = &self.shift[k * o..(k + 1) * o];
            zbar[k] += dot(a, &g.bias);
            out.shift[k * o..(k + 1) * o]
                .iter_mut()
                .zip(&g.bias)
                .for_each(|(a, g)| *a += zk * g);
        }
    }
}

/// a·b with sixteen partial sums, so that it vectorises (a plain `sum` adds in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
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

    fn unfold_fw_grad(&self, g: &MlpParams, z: &[f32], out: &mut MlpParams, zbar: &mut [f32]) {
        for ((l, gl), ol) in self.layers.iter().zip(&g.layers).zip(&mut out.layers) {
            l.unfold_fw_grad(gl, z, ol, zbar);
        }
        out.readout
            .iter_mut()
            .zip(&g.readout)
            .for_each(|(a, b)| *a += b);
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

    /// Adds the chain rule of [`ModelParams::fold_fw`] for the folded model's gradient `g`
    /// into `out` (this model's gradient) and `zbar` (∂L/∂z, `[d_z]`).
    pub fn unfold_fw_grad(
        &self,
        g: &ModelParams,
        z: &[f32],
        out: &mut ModelParams,
        zbar: &mut [f32],
    ) {
        match (self, g, out) {
            (Self::Hnn(m), Self::Hnn(gm), Self::Hnn(om)) => m.unfold_fw_grad(gm, z, om, zbar),
            (
                Self::Separable { t, v },
                Self::Separable { t: gt, v: gv },
                Self::Separable { t: ot, v: ov },
            ) => {
                t.unfold_fw_grad(gt, z, ot, zbar);
                v.unfold_fw_grad(gv, z, ov, zbar);
            }
            (Self::Generic(p), Self::Generic(gp), Self::Generic(op)) => {
                p.energy.unfold_fw_grad(&gp.energy, z, &mut op.energy, zbar);
                p.entropy
                    .unfold_fw_grad(&gp.entropy, z, &mut op.entropy, zbar);
                // The unmodulated parts are shared: their gradients add as they are.
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
            _ => panic!("unfold_fw_grad: gradients of another architecture"),
        }
    }
}
