//! A Hamiltonian network's weights packed for the fused kernel: one f32 buffer and a u32
//! table of per-layer shapes and offsets.
//!
//! The table holds [`LAYER_META`] entries per layer *slot*, then two per network (the
//! readout's offset and the readout bias's). A general HNN H(q, p; z) is one network of L
//! slots; a separable H = T(p; z) + V(q; z) is two of the same depth, T in slots 0…L−1 and
//! V in slots L…2L−1, each reading dof = n/2 inputs. A GENERIC model packs E(x; z) and
//! S(x; z) the same way (slots 0…L−1 and L…2L−1, each reading all n inputs), then the
//! dense A(x) and C(x) networks ([`DENSE_META`] entries per layer: d_in, d_out, the
//! offsets of W and b; A's layers, then C's) and the offsets of the skew tensors
//! ξₖ = Ξₖ − Ξₖᵀ and ζₖ = Zₖ − Zₖᵀ (`[K, n, n]`, formed here once).

use super::kernel::{DENSE_META, FW, LAYER_META, MR, NONE, SHIFT, SVD, table_len};
use crate::nn::{
    Modulation,
    cpu::{DenseParams, GenericParams, MlpParams, ModelParams, skew},
};

/// The compile-time shape of a packed network: what a kernel is specialised for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetShape {
    /// State dimension n (2·dof).
    pub n: usize,
    /// Networks: 1 for a general HNN H(q, p), 2 for a separable one (T(p), then V(q)).
    pub nets: usize,
    /// Hidden layers of each network.
    pub layers: usize,
    /// Widest layer input or output (the activation buffer's stride).
    pub width: usize,
    /// Method code (`kernel::NONE` … `kernel::SVD`).
    pub method: u32,
    /// Latent width d_z.
    pub d_latent: usize,
    /// Largest effective rank over the layers (at least 1).
    pub max_rank: usize,
    /// GENERIC models: the assembly rank K (0 for a Hamiltonian).
    pub assembly: usize,
    /// GENERIC models: layers of each of the dense A(x), C(x) networks (0 for a
    /// Hamiltonian).
    pub dense_layers: usize,
    /// GENERIC models: the widest A / C layer input or output (K² at least; 0 for a
    /// Hamiltonian).
    pub dense_width: usize,
}

impl NetShape {
    /// Whether the model is GENERIC (E and S networks, A and C, the assembly).
    pub fn is_generic(&self) -> bool {
        self.assembly > 0
    }

    /// Whether the model is a separable Hamiltonian T(p) + V(q).
    pub fn is_separable(&self) -> bool {
        self.nets == 2 && !self.is_generic()
    }

    /// u32 entries of one model's table ([`table_len`]).
    pub fn table_len(&self) -> usize {
        table_len(self.nets, self.layers, self.dense_layers)
    }
}

/// Weights and their table, ready to upload.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedNet {
    /// Every tensor, concatenated.
    pub weights: Vec<f32>,
    /// [`LAYER_META`] entries per layer slot, then each network's readout offset and
    /// readout bias offset.
    pub meta: Vec<u32>,
    /// The shape.
    pub shape: NetShape,
}

/// Why a model cannot run on the fused kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The two networks of a separable (T, V) or GENERIC (E, S; A, C) model differ in
    /// depth, method, latent width or (A, C) widths.
    #[error("the model's paired networks differ in {0}")]
    Mismatch(&'static str),
    /// An empty network.
    #[error("the network has no hidden layer")]
    NoLayers,
    /// Models packed into one group (one dispatch) must share a kernel shape.
    #[error(
        "model {index} of the group has another network shape than the first ({got:?} against {expected:?})"
    )]
    GroupShape {
        /// Its place in the group.
        index: usize,
        /// Its shape (boxed: it keeps every `Result` of the GPU path small).
        got: Box<NetShape>,
        /// The first model's.
        expected: Box<NetShape>,
    },
    /// Weights too large for 32-bit offsets.
    #[error("the network's {0} weights do not fit 32-bit offsets")]
    TooLarge(usize),
}

/// Whether entry `e` of a table of `shape` is a weight offset: a layer slot holds d_in,
/// d_out, 13 offsets and the rank; the per-network heads hold offsets only; a dense layer
/// holds d_in, d_out and two offsets; ξ and ζ are offsets.
fn is_offset(e: usize, shape: &NetShape) -> bool {
    let heads = shape.nets * shape.layers * LAYER_META;
    let dense = heads + 2 * shape.nets;
    if e < heads {
        (2..LAYER_META - 1).contains(&(e % LAYER_META))
    } else if e < dense {
        true
    } else {
        let d = e - dense;
        d >= 2 * shape.dense_layers * DENSE_META || d % DENSE_META >= 2
    }
}

/// Transpose of a row-major `[rows, cols]` matrix (empty stays empty).
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    permuted(m, rows * cols, |e| (e % rows) * cols + e / rows)
}

/// `out[e] = m[source(e)]` for `e < len`; empty when `m` is (a tensor the method lacks).
fn permuted(m: &[f32], len: usize, source: impl Fn(usize) -> usize) -> Vec<f32> {
    if m.is_empty() {
        return Vec::new();
    }
    (0..len).map(|e| m[source(e)]).collect()
}

impl PackedNet {
    /// Packs a model: its H network, T then V for a separable model, E, S, A, C, ξ and ζ
    /// for a GENERIC one.
    ///
    /// # Errors
    /// [`PackError`] for an empty network, or paired networks of different shapes.
    pub fn from_params(params: &ModelParams) -> Result<Self, PackError> {
        match params {
            ModelParams::Hnn(h) => Self::from_mlp(h),
            ModelParams::Separable { t, v } => {
                let dof = t.layers.first().map_or(0, |l| l.config.d_input);
                Self::from_mlps(&[t, v], 2 * dof)
            }
            ModelParams::Generic(g) => Self::from_generic(g),
        }
    }

    /// Packs a GENERIC model: E and S as two networks over the whole state, then A, C, ξ
    /// and ζ (see the module docs).
    ///
    /// # Errors
    /// [`PackError::NoLayers`], [`PackError::Mismatch`] when E and S differ in shape,
    /// [`PackError::TooLarge`].
    pub fn from_generic(g: &GenericParams) -> Result<Self, PackError> {
        let mut packed = Self::from_mlps(&[&g.energy, &g.entropy], g.dim)?;
        if g.a_net.sizes != g.c_net.sizes {
            return Err(PackError::Mismatch("assembly network widths"));
        }
        let (n, k) = (g.dim, g.k);
        let mut meta: Vec<usize> = Vec::new();
        let mut push = |t: &[f32]| {
            let at = packed.weights.len();
            packed.weights.extend_from_slice(t);
            at
        };
        for net in [&g.a_net, &g.c_net] {
            let DenseParams { layers, sizes } = net;
            for (l, (w, b)) in layers.iter().enumerate() {
                meta.extend([sizes[l], sizes[l + 1], push(w), push(b)]);
            }
        }
        // ξₖ = Ξₖ − Ξₖᵀ, ζₖ = Zₖ − Zₖᵀ, as the CPU kernel's assembly forms them.
        meta.push(push(&skew(&g.xi, k, n)));
        meta.push(push(&skew(&g.zeta, k, n)));
        for v in meta {
            packed
                .meta
                .push(u32::try_from(v).map_err(|_| PackError::TooLarge(packed.weights.len()))?);
        }
        packed.shape.assembly = k;
        packed.shape.dense_layers = g.a_net.layers.len();
        packed.shape.dense_width = g.a_net.sizes.iter().copied().max().unwrap_or(0);
        if packed.shape.dense_layers == 0 || k == 0 {
            return Err(PackError::NoLayers);
        }
        Ok(packed)
    }

    /// Packs several models of one [`NetShape`] as one: their weights concatenated and their
    /// tables one after the other ([`Self::models`] of [`super::kernel::table_len`] entries
    /// each), every offset shifted to where the model's weights now start. The fused kernel
    /// steps all of them in one dispatch, each cube reading its own model's table.
    ///
    /// # Errors
    /// [`PackError::GroupShape`] when a model's shape differs from the first's;
    /// [`PackError::TooLarge`]; [`PackError::NoLayers`] for an empty group.
    pub fn group(nets: &[Self]) -> Result<Self, PackError> {
        let first = nets.first().ok_or(PackError::NoLayers)?;
        let mut out = Self {
            weights: Vec::new(),
            meta: Vec::new(),
            shape: first.shape,
        };
        for (index, net) in nets.iter().enumerate() {
            if net.shape != first.shape {
                return Err(PackError::GroupShape {
                    index,
                    got: Box::new(net.shape),
                    expected: Box::new(first.shape),
                });
            }
            let base = u32::try_from(out.weights.len())
                .map_err(|_| PackError::TooLarge(out.weights.len()))?;
            out.weights.extend_from_slice(&net.weights);
            out.meta.extend(net.meta.iter().enumerate().map(|(e, &v)| {
                if is_offset(e, &first.shape) {
                    v + base
                } else {
                    v
                }
            }));
        }
        u32::try_from(out.weights.len()).map_err(|_| PackError::TooLarge(out.weights.len()))?;
        Ok(out)
    }

    /// Models in the pack: 1, or the size of a [`Self::group`].
    pub fn models(&self) -> usize {
        self.meta.len() / self.shape.table_len()
    }

    /// Packs one scalar MLP over the whole state.
    ///
    /// # Errors
    /// [`PackError::NoLayers`], [`PackError::TooLarge`].
    pub fn from_mlp(mlp: &MlpParams) -> Result<Self, PackError> {
        Self::from_mlps(&[mlp], mlp.layers.first().map_or(0, |l| l.config.d_input))
    }

    /// Packs scalar MLPs of one shape (depth, method, latent width) for a state of `n`
    /// values: every network's layer slots, then every network's readout and bias.
    fn from_mlps(mlps: &[&MlpParams], n: usize) -> Result<Self, PackError> {
        let first = mlps[0].layers.first().ok_or(PackError::NoLayers)?;
        let method = match first.config.modulation {
            Modulation::None => NONE,
            Modulation::Shift => SHIFT,
            Modulation::Fw => FW,
            Modulation::Mr { .. } => MR,
            Modulation::Svd { .. } => SVD,
        };
        for other in &mlps[1..] {
            let o = other.layers.first().ok_or(PackError::NoLayers)?;
            if other.layers.len() != mlps[0].layers.len() {
                return Err(PackError::Mismatch("depth"));
            }
            if o.config.modulation != first.config.modulation {
                return Err(PackError::Mismatch("modulation"));
            }
            if o.config.d_latent != first.config.d_latent {
                return Err(PackError::Mismatch("latent width"));
            }
        }
        let mut weights = Vec::new();
        let mut meta = Vec::with_capacity(mlps.len() * (mlps[0].layers.len() * LAYER_META + 2));
        let push = |weights: &mut Vec<f32>, t: &[f32]| {
            let at = weights.len();
            weights.extend_from_slice(t);
            at
        };
        let (mut width, mut max_rank) = (n, 1);
        for layer in mlps.iter().flat_map(|m| &m.layers) {
            let cfg = layer.config;
            width = width.max(cfg.d_input).max(cfg.d_output);
            max_rank = max_rank.max(cfg.effective_rank());
            let (i, o, dz) = (cfg.d_input, cfg.d_output, cfg.d_latent);
            let (k, r) = (dz + 1, cfg.effective_rank());
            // Transposed copies, laid out so consecutive units read consecutive weights in
            // the backward pass (see the kernel's docs).
            let fw_t = permuted(&layer.fw, dz * o * i, |e| {
                let (kk, oo, ii) = (e / (o * i), (e / i) % o, e % i);
                ii * (dz * o) + kk * o + oo
            });
            let mr_v_t = permuted(&layer.mr_v, k * r * i, |e| {
                let (kk, j, ii) = (e / (r * i), (e / i) % r, e % i);
                ii * (k * r) + kk * r + j
            });
            let offsets = [
                push(&mut weights, &layer.weight),
                push(&mut weights, &transpose(&layer.weight, i, o)),
                push(&mut weights, &layer.bias),
                push(&mut weights, &layer.shift),
                push(&mut weights, &layer.fw),
                push(&mut weights, &fw_t),
                push(&mut weights, &layer.mr_v),
                push(&mut weights, &mr_v_t),
                push(&mut weights, &layer.mr_u),
                push(&mut weights, &layer.svd_v),
                push(&mut weights, &transpose(&layer.svd_v, i, r)),
                push(&mut weights, &transpose(&layer.svd_u, o, r)),
                push(&mut weights, &layer.svd_d),
            ];
            meta.push(cfg.d_input);
            meta.push(cfg.d_output);
            meta.extend(offsets);
            meta.push(cfg.effective_rank());
        }
        for mlp in mlps {
            meta.push(push(&mut weights, &mlp.readout));
            meta.push(push(&mut weights, &[mlp.readout_bias]));
        }
        let meta = meta
            .into_iter()
            .map(u32::try_from)
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| PackError::TooLarge(weights.len()))?;
        Ok(Self {
            shape: NetShape {
                n,
                nets: mlps.len(),
                layers: mlps[0].layers.len(),
                width,
                method,
                d_latent: first.config.d_latent,
                max_rank,
                assembly: 0,
                dense_layers: 0,
                dense_width: 0,
            },
            weights,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::{nn::ModelConfig, systems::Family};

    fn packed(seed: u64, hidden: Vec<usize>) -> PackedNet {
        let config = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 3 })
            .with_hidden(hidden)
            .with_d_latent(4)
            .with_seed(seed);
        let params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
        PackedNet::from_params(&params).unwrap()
    }

    /// `group` of `a` then `b`: `a`'s table unchanged, every offset of `b`'s shifted by
    /// `a`'s weights and still pointing at the same value, nothing else changed.
    fn assert_grouped(a: &PackedNet, b: &PackedNet) {
        let group = PackedNet::group(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((group.models(), a.models()), (2, 1));
        assert_eq!(
            group.weights,
            [a.weights.clone(), b.weights.clone()].concat()
        );
        let (len, base) = (a.meta.len(), a.weights.len() as u32);
        assert_eq!(len, a.shape.table_len());
        assert_eq!(group.meta[..len], a.meta[..]);
        for (e, (&got, &own)) in group.meta[len..].iter().zip(&b.meta).enumerate() {
            let offset = is_offset(e, &a.shape);
            assert_eq!(got, if offset { own + base } else { own }, "entry {e}");
            if offset {
                // Each shifted offset still points at the same weights.
                assert_eq!(group.weights[got as usize], b.weights[own as usize]);
            }
        }
    }

    #[test]
    fn a_group_shifts_every_offset_of_its_later_models_and_nothing_else() {
        let (a, b) = (packed(1, vec![8, 6]), packed(2, vec![8, 6]));
        assert_grouped(&a, &b);
        // Layer widths are in the tables: another width below the widest still groups; another
        // depth does not.
        assert!(PackedNet::group(&[a.clone(), packed(3, vec![8, 5])]).is_ok());
        let other = packed(4, vec![8, 6, 4]);
        assert!(matches!(
            PackedNet::group(&[a, other]),
            Err(PackError::GroupShape { index: 1, .. })
        ));
    }

    #[test]
    fn a_generic_model_packs_its_assembly_and_groups_like_the_others() {
        let generic = |seed| {
            let mut config = ModelConfig::new(Family::Dno, Modulation::Shift)
                .with_hidden(vec![8, 6])
                .with_d_latent(3)
                .with_seed(seed);
            config.assembly_hidden = vec![5];
            let params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
            PackedNet::from_params(&params).unwrap()
        };
        let (a, b) = (generic(1), generic(2));
        let (n, k) = (Family::Dno.dim(), 4);
        assert!(a.shape.is_generic() && !a.shape.is_separable());
        assert_eq!(
            (
                a.shape.nets,
                a.shape.assembly,
                a.shape.dense_layers,
                a.shape.dense_width
            ),
            (2, k, 2, k * k)
        );
        // The dense table: A's two layers, C's two, then ξ and ζ — skew.
        let dense = super::super::kernel::dense_table(2, 2);
        assert_eq!(a.meta[dense..dense + 2], [n as u32, 5]);
        assert_eq!(a.meta[dense + 4..dense + 6], [5, (k * k) as u32]);
        let xi = a.meta[dense + 16] as usize;
        for (i, j) in [(0, 1), (1, 2), (0, 2)] {
            assert_eq!(a.weights[xi + i * n + j], -a.weights[xi + j * n + i]);
        }
        assert_eq!(a.weights[xi], 0.0);
        assert_grouped(&a, &b);
    }
}
