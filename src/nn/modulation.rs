//! Latent modulation of a dense layer by a linear hypernetwork (docs/protocol.md §4).
//!
//! A [`ModulatedLinear`] maps `h ↦ h W̃(z) + b̃(z)` where each batch row carries its own
//! latent code z ∈ ℝ^{d_z}. With z̃ = (z, 1) ∈ ℝ^K, K = d_z + 1:
//!
//! | method | layer map | hypernetwork output (linear in z or z̃) |
//! |---|---|---|
//! | [`Modulation::None`] | h W + b | — |
//! | [`Modulation::Shift`] | h W + b + s(z) | s = z A_s |
//! | [`Modulation::Fw`] | h (W + ΔW(z)) + b + s(z) | ΔW = Σₖ zₖ ΔWₖ, s = z A_s |
//! | [`Modulation::Mr`] (RO = rank 1) | h (W + V(z) U(z)ᵀ) + b + s(z) | V = Σₖ z̃ₖ Vₖ, U = Σₖ z̃ₖ Uₖ, s |
//! | [`Modulation::Svd`] | h (W + V_s diag(d(z)) U_sᵀ) + b + s(z) | d = ReLU(z̃ A_d), s; V_s, U_s shared bases |
//!
//! (Row convention: W is `[in, out]`, so the paper's W + U Vᵀ acting on column vectors is
//! W + V Uᵀ here, V `[in, r]`, U `[out, r]`.)
//!
//! No per-row weight matrix is ever formed. Every z-dependent term is a *z-map*
//!
//! ```text
//! zmap(x, P, z̃) = Σₖ z̃ₖ (x Pₖ) = reshape(x [P₀ | P₁ | … ], [B, K, n]) · z̃   (one GEMM)
//! ```
//!
//! so a heterogeneous batch costs one shared GEMM plus rank-r corrections. The input
//! gradient needs the transposed map δ ↦ δ W̃(z)ᵀ, written once per method in
//! [`ModulatedLinear::backward_input`] and used by every network's explicit ∇ₓ.

use std::{fmt, str::FromStr};

use burn::{
    module::{Module, Param},
    tensor::{Tensor, activation::relu, backend::Backend},
};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::init::{uniform, uniform_param};

/// How a layer's weights depend on the latent code (docs/protocol.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modulation {
    /// No modulation: every latent gives the same network.
    None,
    /// Bias shift s(z) per layer (CAVIA/FiLM-style).
    Shift,
    /// Full weight and bias modulation ΔW(z), Δb(z) (CoDA).
    Fw,
    /// Multi-rank modulation V(z) U(z)ᵀ of rank `rank`, plus a shift; rank 1 is RO.
    Mr {
        /// Rank r of the update.
        rank: usize,
    },
    /// SVD-like modulation Σᵢ dᵢ(z) vᵢ uᵢᵀ with shared, near-orthonormal bases, plus a shift.
    #[serde(alias = "svd_like")]
    Svd {
        /// Number r of basis pairs.
        rank: usize,
    },
}

impl Modulation {
    /// Rank-one modulation (RO = MR(1)).
    pub const RO: Modulation = Modulation::Mr { rank: 1 };

    /// The methods of the paper's tables with protocol-v1 ranks (docs/protocol.md §5).
    pub const PAPER: [Modulation; 5] = [
        Modulation::Shift,
        Modulation::Fw,
        Modulation::RO,
        Modulation::Mr { rank: 5 },
        Modulation::Svd { rank: 5 },
    ];

    /// Short name: `none`, `shift`, `fw`, `ro`, `mr5`, `svd5`, …
    pub fn name(self) -> String {
        match self {
            Modulation::None => "none".into(),
            Modulation::Shift => "shift".into(),
            Modulation::Fw => "fw".into(),
            Modulation::Mr { rank: 1 } => "ro".into(),
            Modulation::Mr { rank } => format!("mr{rank}"),
            Modulation::Svd { rank } => format!("svd{rank}"),
        }
    }

    /// Whether the hypernetwork takes z̃ = (z, 1) (methods with hypernetwork biases).
    fn uses_affine_latent(self) -> bool {
        matches!(self, Modulation::Mr { .. } | Modulation::Svd { .. })
    }
}

impl fmt::Display for Modulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Modulation {
    type Err = String;

    /// Parses `none`, `shift`, `fw`, `ro`, `mr`, `mr5`, `mr(5)`, `svd`, `svd3`, `svd(3)`
    /// (bare `mr`/`svd` take protocol v1's rank 5).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s
            .trim()
            .to_ascii_lowercase()
            .replace(['(', ')', '-', '_'], "");
        let rank = |digits: &str| -> Result<usize, String> {
            if digits.is_empty() {
                return Ok(5);
            }
            match digits.parse::<usize>() {
                Ok(r) if r >= 1 => Ok(r),
                _ => Err(format!("`{s}`: the rank must be a positive integer")),
            }
        };
        match t.as_str() {
            "none" => Ok(Modulation::None),
            "shift" => Ok(Modulation::Shift),
            "fw" | "coda" => Ok(Modulation::Fw),
            "ro" | "rankone" => Ok(Modulation::RO),
            _ if t.starts_with("mr") => Ok(Modulation::Mr {
                rank: rank(&t[2..])?,
            }),
            _ if t.starts_with("svd") => Ok(Modulation::Svd {
                rank: rank(&t[3..])?,
            }),
            _ => Err(format!(
                "unknown modulation `{s}`; expected none, shift, fw, ro, mr<r> or svd<r>"
            )),
        }
    }
}

/// Shape of a [`ModulatedLinear`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulatedLinearConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
    /// Latent dimension d_z.
    pub d_latent: usize,
    /// The method.
    pub modulation: Modulation,
}

impl ModulatedLinearConfig {
    /// Rank actually used in this layer: r capped at min(in, out) (an update of a 2→100
    /// layer has rank ≤ 2).
    pub fn effective_rank(&self) -> usize {
        match self.modulation {
            Modulation::Mr { rank } | Modulation::Svd { rank } => {
                rank.min(self.d_input).min(self.d_output)
            }
            _ => 0,
        }
    }

    /// Initialises the layer from `rng`:
    /// W, b ~ U(±1/√in) (PyTorch's default); hypernetwork maps ~ U(±0.1/√K); SVD bases
    /// ~ U(±√(3/n)) (unit expected column norm); the constant row of the SVD d-map at +0.1
    /// so every dᵢ starts active.
    pub fn init<B: Backend>(&self, device: &B::Device, rng: &mut impl Rng) -> ModulatedLinear<B> {
        let (i, o, dz) = (self.d_input, self.d_output, self.d_latent);
        let k = dz + 1;
        let base = 1.0 / (i as f64).sqrt();
        let hyper = 0.1 / (k as f64).sqrt();
        let r = self.effective_rank();
        let m = self.modulation;
        let shift = (m != Modulation::None).then(|| uniform_param([dz, o], hyper, rng, device));
        let fw = (m == Modulation::Fw).then(|| uniform_param([i, dz * o], hyper, rng, device));
        let (mr_v, mr_u) = match m {
            Modulation::Mr { .. } => (
                Some(uniform_param([i, k * r], hyper, rng, device)),
                Some(uniform_param([r, k * o], hyper, rng, device)),
            ),
            _ => (None, None),
        };
        let (svd_v, svd_u, svd_d) = match m {
            Modulation::Svd { .. } => {
                let v = uniform_param([i, r], (3.0 / i as f64).sqrt(), rng, device);
                let u = uniform_param([o, r], (3.0 / o as f64).sqrt(), rng, device);
                let d = uniform::<B, 2>([dz, r], hyper, rng, device);
                let d = Tensor::cat(vec![d, Tensor::full([1, r], 0.1, device)], 0);
                (Some(v), Some(u), Some(Param::from_tensor(d)))
            }
            _ => (None, None, None),
        };
        ModulatedLinear {
            weight: uniform_param([i, o], base, rng, device),
            bias: uniform_param([o], base, rng, device),
            shift,
            fw,
            mr_v,
            mr_u,
            svd_v,
            svd_u,
            svd_d,
            config: *self,
        }
    }
}

/// A dense layer whose weights are modulated per row by a latent code. See the module docs
/// for the maps; parameter shapes (K = d_z + 1, r the effective rank):
///
/// | field | shape | method |
/// |---|---|---|
/// | `weight`, `bias` | `[in, out]`, `[out]` | all |
/// | `shift` (A_s) | `[d_z, out]` | all but None |
/// | `fw` (ΔW₁ … ΔW_{d_z}) | `[in, d_z·out]` | FW |
/// | `mr_v` (V₀ … V_{d_z}), `mr_u` (U₀ᵀ … U_{d_z}ᵀ) | `[in, K·r]`, `[r, K·out]` | MR, RO |
/// | `svd_v`, `svd_u`, `svd_d` (A_d) | `[in, r]`, `[out, r]`, `[K, r]` | SVD |
#[derive(Module, Debug)]
pub struct ModulatedLinear<B: Backend> {
    /// Base weight W, `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// Base bias b, `[out]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Shift map A_s, `[d_z, out]`.
    pub shift: Option<Param<Tensor<B, 2>>>,
    /// FW weight maps, `[in, d_z·out]`.
    pub fw: Option<Param<Tensor<B, 2>>>,
    /// MR input-side maps, `[in, K·r]`.
    pub mr_v: Option<Param<Tensor<B, 2>>>,
    /// MR output-side maps, `[r, K·out]`.
    pub mr_u: Option<Param<Tensor<B, 2>>>,
    /// SVD input-side basis V_s, `[in, r]`.
    pub svd_v: Option<Param<Tensor<B, 2>>>,
    /// SVD output-side basis U_s, `[out, r]`.
    pub svd_u: Option<Param<Tensor<B, 2>>>,
    /// SVD coefficient map A_d, `[K, r]`.
    pub svd_d: Option<Param<Tensor<B, 2>>>,
    /// Shape and method.
    #[module(skip)]
    pub config: ModulatedLinearConfig,
}

/// What a layer needs from the latent codes of a batch, computed once per call by
/// [`ModulatedLinear::code`] and shared by the forward map and its transpose.
#[derive(Clone, Debug)]
pub struct LayerCode<B: Backend> {
    /// The latents z, `[B, d_z]`.
    z: Tensor<B, 2>,
    /// z̃ = (z, 1), `[B, K]` (MR and SVD).
    zt: Option<Tensor<B, 2>>,
    /// s(z), `[B, out]`.
    shift: Option<Tensor<B, 2>>,
    /// d(z), `[B, r]` (SVD).
    d: Option<Tensor<B, 2>>,
}

/// Σₖ cₖ (x Pₖ) with P = [P₀ | P₁ | …] `[m, K·n]`, c `[B, K]`, x `[B, m]` → `[B, n]`.
fn zmap<B: Backend>(x: Tensor<B, 2>, p: Tensor<B, 2>, c: Tensor<B, 2>) -> Tensor<B, 2> {
    let [b, _] = x.dims();
    let k = c.dims()[1];
    let n = p.dims()[1] / k;
    x.matmul(p)
        .reshape([b, k, n])
        .mul(c.unsqueeze_dim(2))
        .sum_dim(1)
        .reshape([b, n])
}

/// [P₀ | P₁ | …] `[m, K·n]` ↦ [P₀ᵀ | P₁ᵀ | …] `[n, K·m]`.
fn block_transpose<B: Backend>(p: Tensor<B, 2>, k: usize) -> Tensor<B, 2> {
    let [m, kn] = p.dims();
    let n = kn / k;
    p.reshape([m, k, n]).permute([2, 1, 0]).reshape([n, k * m])
}

impl<B: Backend> ModulatedLinear<B> {
    /// Computes the per-row modulation state of a batch of latents.
    ///
    /// # Shapes
    /// - z: `[B, d_z]`
    pub fn code(&self, z: &Tensor<B, 2>) -> LayerCode<B> {
        let m = self.config.modulation;
        let [b, dz] = z.dims();
        assert_eq!(
            dz, self.config.d_latent,
            "ModulatedLinear::code: latent width {dz}, layer expects {}",
            self.config.d_latent
        );
        let zt = m
            .uses_affine_latent()
            .then(|| Tensor::cat(vec![z.clone(), Tensor::ones([b, 1], &z.device())], 1));
        let shift = self.shift.as_ref().map(|a| z.clone().matmul(a.val()));
        let d = match (&self.svd_d, &zt) {
            (Some(a), Some(zt)) => Some(relu(zt.clone().matmul(a.val()))),
            _ => None,
        };
        LayerCode {
            z: z.clone(),
            zt,
            shift,
            d,
        }
    }

    /// y = h W̃(z) + b̃(z), each row with its own code.
    ///
    /// # Shapes
    /// - h: `[B, in]` → `[B, out]`
    pub fn forward(&self, h: Tensor<B, 2>, code: &LayerCode<B>) -> Tensor<B, 2> {
        let mut y = h.clone().matmul(self.weight.val()) + self.bias.val().unsqueeze_dim(0);
        if let Some(s) = &code.shift {
            y = y + s.clone();
        }
        if let Some(fw) = &self.fw {
            y = y + zmap(h.clone(), fw.val(), code.z.clone());
        }
        if let (Some(v), Some(u), Some(zt)) = (&self.mr_v, &self.mr_u, &code.zt) {
            let c = zmap(h.clone(), v.val(), zt.clone());
            y = y + zmap(c, u.val(), zt.clone());
        }
        if let (Some(v), Some(u), Some(d)) = (&self.svd_v, &self.svd_u, &code.d) {
            y = y + h.matmul(v.val()).mul(d.clone()).matmul(u.val().transpose());
        }
        y
    }

    /// The transposed map g = δ W̃(z)ᵀ: back-propagates a gradient with respect to the
    /// layer's output to its input (the bias and shift do not enter).
    ///
    /// # Shapes
    /// - delta: `[B, out]` → `[B, in]`
    pub fn backward_input(&self, delta: Tensor<B, 2>, code: &LayerCode<B>) -> Tensor<B, 2> {
        let mut g = delta.clone().matmul(self.weight.val().transpose());
        if let Some(fw) = &self.fw {
            let dz = self.config.d_latent;
            g = g + zmap(delta.clone(), block_transpose(fw.val(), dz), code.z.clone());
        }
        if let (Some(v), Some(u), Some(zt)) = (&self.mr_v, &self.mr_u, &code.zt) {
            let k = zt.dims()[1];
            let e = zmap(delta.clone(), block_transpose(u.val(), k), zt.clone());
            g = g + zmap(e, block_transpose(v.val(), k), zt.clone());
        }
        if let (Some(v), Some(u), Some(d)) = (&self.svd_v, &self.svd_u, &code.d) {
            g = g + delta
                .matmul(u.val())
                .mul(d.clone())
                .matmul(v.val().transpose());
        }
        g
    }

    /// ‖φ‖² of this layer's hypernetwork maps (shift, FW, MR maps, SVD d-map).
    pub fn hypernetwork_sq_norm(&self) -> Option<Tensor<B, 1>> {
        let terms: Vec<Tensor<B, 1>> = [&self.shift, &self.fw, &self.mr_v, &self.mr_u, &self.svd_d]
            .into_iter()
            .flatten()
            .map(|p| p.val().square().sum())
            .collect();
        terms.into_iter().reduce(|a, b| a + b)
    }

    /// ‖U_sᵀU_s − I‖²_F + ‖V_sᵀV_s − I‖²_F of the SVD bases (None for other methods).
    pub fn orthogonality(&self) -> Option<Tensor<B, 1>> {
        let (u, v) = (self.svd_u.as_ref()?, self.svd_v.as_ref()?);
        let r = self.config.effective_rank();
        let eye = Tensor::<B, 2>::eye(r, &u.device());
        let dev = |m: Tensor<B, 2>| {
            (m.clone().transpose().matmul(m) - eye.clone())
                .square()
                .sum()
        };
        Some(dev(u.val()) + dev(v.val()))
    }

    /// Number of base parameters (W, b, SVD bases) and hypernetwork parameters (the maps).
    pub fn param_split(&self) -> (usize, usize) {
        let n =
            |p: &Option<Param<Tensor<B, 2>>>| p.as_ref().map_or(0, |p| p.shape().num_elements());
        let base = self.weight.shape().num_elements()
            + self.bias.shape().num_elements()
            + n(&self.svd_u)
            + n(&self.svd_v);
        let hyper = n(&self.shift) + n(&self.fw) + n(&self.mr_v) + n(&self.mr_u) + n(&self.svd_d);
        (base, hyper)
    }

    /// The effective weight W̃(z) `[in, out]` and bias b̃(z) `[out]` for one latent `z`
    /// (`[1, d_z]`): what the homogeneous fast path folds into a plain layer.
    pub fn effective_weights(&self, z: &Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let [i, o] = self.weight.dims();
        let code = self.code(z);
        // I W̃ + b = forward(I) without the shift, so W̃ = forward(I) − b.
        let eye = Tensor::<B, 2>::eye(i, &z.device());
        let codes = LayerCode {
            z: z.clone().repeat_dim(0, i),
            zt: code.zt.as_ref().map(|t| t.clone().repeat_dim(0, i)),
            shift: None,
            d: code.d.as_ref().map(|t| t.clone().repeat_dim(0, i)),
        };
        let w = self.forward(eye, &codes) - self.bias.val().unsqueeze_dim(0);
        let b = self.bias.val()
            + code
                .shift
                .map_or_else(|| Tensor::zeros([o], &z.device()), |s| s.reshape([o]));
        (w, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        for m in [
            Modulation::None,
            Modulation::Shift,
            Modulation::Fw,
            Modulation::RO,
            Modulation::Mr { rank: 5 },
            Modulation::Svd { rank: 3 },
        ] {
            assert_eq!(m.name().parse::<Modulation>().unwrap(), m);
        }
        assert_eq!(
            "SVD(5)".parse::<Modulation>().unwrap(),
            Modulation::Svd { rank: 5 }
        );
        assert_eq!(
            "mr".parse::<Modulation>().unwrap(),
            Modulation::Mr { rank: 5 }
        );
        assert_eq!("MR(1)".parse::<Modulation>().unwrap(), Modulation::RO);
        assert!("mr0".parse::<Modulation>().is_err());
        assert!("lora".parse::<Modulation>().is_err());
    }

    #[test]
    fn effective_rank_is_capped_by_the_layer_shape() {
        let cfg = ModulatedLinearConfig {
            d_input: 2,
            d_output: 100,
            d_latent: 10,
            modulation: Modulation::Svd { rank: 5 },
        };
        assert_eq!(cfg.effective_rank(), 2);
    }
}
