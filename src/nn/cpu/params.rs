//! Host-side parameters of a model, tensor by tensor in burn's shapes, for the CPU kernel's
//! inference and training paths. Gradients use the same containers.

use burn::{
    module::Param,
    tensor::{Tensor, TensorData, backend::Backend},
};

use super::mlp::host;
use crate::nn::{
    Dense, GenericNet, Hnn, Mlp, Model, ModelConfig, ModulatedLinear, ModulatedLinearConfig,
};

/// One modulated layer's tensors (empty vectors for what its method does not use).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// Shape and method.
    pub config: ModulatedLinearConfig,
    /// W `[in, out]`.
    pub weight: Vec<f32>,
    /// b `[out]`.
    pub bias: Vec<f32>,
    /// A_s `[d_z, out]`.
    pub shift: Vec<f32>,
    /// FW maps `[in, d_z·out]`.
    pub fw: Vec<f32>,
    /// MR input-side maps `[in, K·r]`.
    pub mr_v: Vec<f32>,
    /// MR output-side maps `[r, K·out]`.
    pub mr_u: Vec<f32>,
    /// SVD basis V_s `[in, r]`.
    pub svd_v: Vec<f32>,
    /// SVD basis U_s `[out, r]`.
    pub svd_u: Vec<f32>,
    /// SVD coefficient map A_d `[K, r]`.
    pub svd_d: Vec<f32>,
}

/// A scalar MLP's tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpParams {
    /// Hidden layers.
    pub layers: Vec<LayerParams>,
    /// Readout w `[width]`.
    pub readout: Vec<f32>,
    /// Readout bias c.
    pub readout_bias: f32,
}

/// A dense (unmodulated) MLP's tensors: (W `[in, out]`, b `[out]`) per layer.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseParams {
    /// Layers.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Widths: input, then each layer's output.
    pub sizes: Vec<usize>,
}

/// The GENERIC network's tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct GenericParams {
    /// E(x; z).
    pub energy: MlpParams,
    /// S(x; z).
    pub entropy: MlpParams,
    /// A(x).
    pub a_net: DenseParams,
    /// C(x).
    pub c_net: DenseParams,
    /// Ξ `[K, n, n]` (raw; ξ = Ξ − Ξᵀ).
    pub xi: Vec<f32>,
    /// Z `[K, n, n]` (raw; ζ = Z − Zᵀ).
    pub zeta: Vec<f32>,
    /// State dimension n.
    pub dim: usize,
    /// Assembly rank K.
    pub k: usize,
}

/// A whole model's tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelParams {
    /// H(q, p; z).
    Hnn(MlpParams),
    /// T(p; z) + V(q; z).
    Separable {
        /// T.
        t: MlpParams,
        /// V.
        v: MlpParams,
    },
    /// GENERIC.
    Generic(Box<GenericParams>),
}

/// Which tensors a parameter entry belongs to, for penalties and partial updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// Base weights and biases (including GENERIC assembly).
    Base,
    /// The readout vector of a scalar MLP (what ANIL adapts).
    Readout,
    /// Hypernetwork maps φ (shift, FW, MR maps, SVD d-map): penalised by λ_φ.
    Hyper,
    /// SVD shared bases: penalised by orthogonality.
    Basis,
}

impl LayerParams {
    fn from_burn<B: Backend>(l: &ModulatedLinear<B>) -> Self {
        let get =
            |p: &Option<Param<Tensor<B, 2>>>| p.as_ref().map(|p| host(p.val())).unwrap_or_default();
        Self {
            config: l.config,
            weight: host(l.weight.val()),
            bias: host(l.bias.val()),
            shift: get(&l.shift),
            fw: get(&l.fw),
            mr_v: get(&l.mr_v),
            mr_u: get(&l.mr_u),
            svd_v: get(&l.svd_v),
            svd_u: get(&l.svd_u),
            svd_d: get(&l.svd_d),
        }
    }

    fn write_burn<B: Backend>(&self, l: &mut ModulatedLinear<B>) {
        let dev = l.weight.device();
        let set2 = |p: &mut Param<Tensor<B, 2>>, v: &[f32]| {
            let shape: [usize; 2] = p.shape().dims();
            *p = Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), shape), &dev));
        };
        set2(&mut l.weight, &self.weight);
        l.bias = Param::from_tensor(Tensor::from_data(
            TensorData::new(self.bias.clone(), [self.bias.len()]),
            &dev,
        ));
        for (p, v) in [
            (&mut l.shift, &self.shift),
            (&mut l.fw, &self.fw),
            (&mut l.mr_v, &self.mr_v),
            (&mut l.mr_u, &self.mr_u),
            (&mut l.svd_v, &self.svd_v),
            (&mut l.svd_u, &self.svd_u),
            (&mut l.svd_d, &self.svd_d),
        ] {
            if let Some(p) = p {
                set2(p, v);
            }
        }
    }

    /// Every tensor with its role, in a fixed order.
    pub fn tensors(&self) -> [(&Vec<f32>, ParamRole); 9] {
        use ParamRole::*;
        [
            (&self.weight, Base),
            (&self.bias, Base),
            (&self.shift, Hyper),
            (&self.fw, Hyper),
            (&self.mr_v, Hyper),
            (&self.mr_u, Hyper),
            (&self.svd_v, Basis),
            (&self.svd_u, Basis),
            (&self.svd_d, Hyper),
        ]
    }

    fn tensors_mut(&mut self) -> [(&mut Vec<f32>, ParamRole); 9] {
        use ParamRole::*;
        [
            (&mut self.weight, Base),
            (&mut self.bias, Base),
            (&mut self.shift, Hyper),
            (&mut self.fw, Hyper),
            (&mut self.mr_v, Hyper),
            (&mut self.mr_u, Hyper),
            (&mut self.svd_v, Basis),
            (&mut self.svd_u, Basis),
            (&mut self.svd_d, Hyper),
        ]
    }
}

impl MlpParams {
    /// Copies a burn MLP.
    pub fn from_burn<B: Backend>(m: &Mlp<B>) -> Self {
        Self {
            layers: m.layers.iter().map(LayerParams::from_burn).collect(),
            readout: host(m.readout.val()),
            readout_bias: host(m.readout_bias.val())[0],
        }
    }

    fn write_burn<B: Backend>(&self, m: &mut Mlp<B>) {
        for (p, l) in self.layers.iter().zip(&mut m.layers) {
            p.write_burn(l);
        }
        let dev = m.readout.device();
        m.readout = Param::from_tensor(Tensor::from_data(
            TensorData::new(self.readout.clone(), [self.readout.len()]),
            &dev,
        ));
        m.readout_bias = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![self.readout_bias], [1]),
            &dev,
        ));
    }

    /// Input width.
    pub fn d_input(&self) -> usize {
        self.layers[0].config.d_input
    }

    /// Latent width.
    pub fn d_latent(&self) -> usize {
        self.layers[0].config.d_latent
    }
}

impl DenseParams {
    fn from_burn<B: Backend>(d: &Dense<B>) -> Self {
        let mut sizes = Vec::new();
        let layers = d
            .weights
            .iter()
            .zip(&d.biases)
            .map(|(w, b)| {
                let [i, o] = w.dims();
                if sizes.is_empty() {
                    sizes.push(i);
                }
                sizes.push(o);
                (host(w.val()), host(b.val()))
            })
            .collect();
        Self { layers, sizes }
    }

    fn write_burn<B: Backend>(&self, d: &mut Dense<B>) {
        for (l, ((w, b), (pw, pb))) in self
            .layers
            .iter()
            .zip(d.weights.iter_mut().zip(d.biases.iter_mut()))
            .enumerate()
        {
            let dev = pw.device();
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            *pw = Param::from_tensor(Tensor::from_data(TensorData::new(w.clone(), [i, o]), &dev));
            *pb = Param::from_tensor(Tensor::from_data(TensorData::new(b.clone(), [o]), &dev));
        }
    }
}

impl ModelParams {
    /// Copies a burn model's weights.
    pub fn from_model<B: Backend>(model: &Model<B>) -> Self {
        match (&model.hnn, &model.generic) {
            (Some(h), _) => Self::from_hnn(h),
            (_, Some(g)) => Self::from_generic(g),
            _ => unreachable!("a model holds one network"),
        }
    }

    fn from_hnn<B: Backend>(h: &Hnn<B>) -> Self {
        match (&h.h, &h.t, &h.v) {
            (Some(h), _, _) => Self::Hnn(MlpParams::from_burn(h)),
            (None, Some(t), Some(v)) => Self::Separable {
                t: MlpParams::from_burn(t),
                v: MlpParams::from_burn(v),
            },
            _ => unreachable!("an Hnn holds H or (T, V)"),
        }
    }

    fn from_generic<B: Backend>(g: &GenericNet<B>) -> Self {
        Self::Generic(Box::new(GenericParams {
            energy: MlpParams::from_burn(&g.energy),
            entropy: MlpParams::from_burn(&g.entropy),
            a_net: DenseParams::from_burn(&g.a_net),
            c_net: DenseParams::from_burn(&g.c_net),
            xi: host(g.xi.val()),
            zeta: host(g.zeta.val()),
            dim: g.dim,
            k: g.k,
        }))
    }

    /// A burn model of `config` holding these weights.
    pub fn to_model<B: Backend>(&self, config: &ModelConfig, device: &B::Device) -> Model<B> {
        let mut model: Model<B> = config.init(device);
        match (self, &mut model.hnn, &mut model.generic) {
            (Self::Hnn(p), Some(h), _) => p.write_burn(h.h.as_mut().expect("general HNN")),
            (Self::Separable { t, v }, Some(h), _) => {
                t.write_burn(h.t.as_mut().expect("separable HNN"));
                v.write_burn(h.v.as_mut().expect("separable HNN"));
            }
            (Self::Generic(p), _, Some(g)) => {
                p.energy.write_burn(&mut g.energy);
                p.entropy.write_burn(&mut g.entropy);
                p.a_net.write_burn(&mut g.a_net);
                p.c_net.write_burn(&mut g.c_net);
                let dev = g.xi.device();
                g.xi = Param::from_tensor(Tensor::from_data(
                    TensorData::new(p.xi.clone(), [p.k, p.dim, p.dim]),
                    &dev,
                ));
                g.zeta = Param::from_tensor(Tensor::from_data(
                    TensorData::new(p.zeta.clone(), [p.k, p.dim, p.dim]),
                    &dev,
                ));
            }
            _ => panic!(
                "ModelParams::to_model: the parameters do not match the config's architecture"
            ),
        }
        model
    }

    /// Every tensor with its role, in a fixed order (for optimisers and penalties).
    pub fn tensors(&self) -> Vec<(&Vec<f32>, ParamRole)> {
        fn push_mlp<'a>(m: &'a MlpParams, out: &mut Vec<(&'a Vec<f32>, ParamRole)>) {
            for l in &m.layers {
                out.extend(l.tensors());
            }
            out.push((&m.readout, ParamRole::Readout));
        }
        let mut out = Vec::new();
        match self {
            Self::Hnn(m) => push_mlp(m, &mut out),
            Self::Separable { t, v } => {
                push_mlp(t, &mut out);
                push_mlp(v, &mut out);
            }
            Self::Generic(g) => {
                push_mlp(&g.energy, &mut out);
                push_mlp(&g.entropy, &mut out);
                for (w, b) in g.a_net.layers.iter().chain(&g.c_net.layers) {
                    out.push((w, ParamRole::Base));
                    out.push((b, ParamRole::Base));
                }
                out.push((&g.xi, ParamRole::Base));
                out.push((&g.zeta, ParamRole::Base));
            }
        }
        out
    }

    /// Mutable [`ModelParams::tensors`], same order.
    pub fn tensors_mut(&mut self) -> Vec<(&mut Vec<f32>, ParamRole)> {
        fn push_mlp<'a>(m: &'a mut MlpParams, out: &mut Vec<(&'a mut Vec<f32>, ParamRole)>) {
            for l in &mut m.layers {
                out.extend(l.tensors_mut());
            }
            out.push((&mut m.readout, ParamRole::Readout));
        }
        let mut out = Vec::new();
        match self {
            Self::Hnn(m) => push_mlp(m, &mut out),
            Self::Separable { t, v } => {
                push_mlp(t, &mut out);
                push_mlp(v, &mut out);
            }
            Self::Generic(g) => {
                let g = &mut **g;
                push_mlp(&mut g.energy, &mut out);
                push_mlp(&mut g.entropy, &mut out);
                for (w, b) in g.a_net.layers.iter_mut().chain(g.c_net.layers.iter_mut()) {
                    out.push((w, ParamRole::Base));
                    out.push((b, ParamRole::Base));
                }
                out.push((&mut g.xi, ParamRole::Base));
                out.push((&mut g.zeta, ParamRole::Base));
            }
        }
        out
    }

    /// The same structure filled with zeros (a gradient accumulator).
    pub fn zeros_like(&self) -> Self {
        let mut z = self.clone();
        for (t, _) in z.tensors_mut() {
            t.fill(0.0);
        }
        z.for_each_bias(|b| *b = 0.0);
        z
    }

    /// self += other, tensor by tensor.
    pub fn add_assign(&mut self, other: &Self) {
        for ((a, _), (b, _)) in self.tensors_mut().into_iter().zip(other.tensors()) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
    }

    /// Whether every entry is finite.
    pub fn all_finite(&self) -> bool {
        // A fold, not `all`: without the early exit the check vectorises.
        self.tensors()
            .iter()
            .all(|(t, _)| t.iter().fold(true, |ok, v| ok & v.is_finite()))
    }

    /// Total number of entries in [`ModelParams::tensors`].
    pub fn len(&self) -> usize {
        self.tensors().iter().map(|(t, _)| t.len()).sum()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scalar readout biases (they carry no gradient in a field loss).
    fn for_each_bias(&mut self, mut f: impl FnMut(&mut f32)) {
        match self {
            Self::Hnn(m) => f(&mut m.readout_bias),
            Self::Separable { t, v } => {
                f(&mut t.readout_bias);
                f(&mut v.readout_bias);
            }
            Self::Generic(g) => {
                f(&mut g.energy.readout_bias);
                f(&mut g.entropy.readout_bias);
            }
        }
    }
}
