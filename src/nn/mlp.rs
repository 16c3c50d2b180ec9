//! The scalar-valued modulated MLP with its explicit input gradient (docs/protocol.md §4).

use burn::{
    config::Config,
    module::{Module, Param},
    tensor::{Tensor, backend::Backend},
};
use rand::Rng;

use super::{
    activation::tanh,
    init::uniform_param,
    modulation::{LayerCode, ModulatedLinear, ModulatedLinearConfig, Modulation},
};

/// Shape of an [`Mlp`]: input n → hidden layers (tanh) → scalar.
#[derive(Config, Debug, PartialEq)]
pub struct MlpConfig {
    /// Input width n.
    pub d_input: usize,
    /// Hidden widths (docs/protocol.md §4: three layers of 100).
    #[config(default = "vec![100, 100, 100]")]
    pub hidden: Vec<usize>,
    /// Latent dimension d_z (docs/protocol.md §4: 10).
    #[config(default = 10)]
    pub d_latent: usize,
    /// How the hidden layers are modulated.
    #[config(default = "Modulation::Svd { rank: 5 }")]
    pub modulation: Modulation,
}

impl MlpConfig {
    /// Initialises the network from `rng` (see [`ModulatedLinearConfig::init`]; the readout
    /// is U(±1/√width)).
    pub fn init<B: Backend>(&self, device: &B::Device, rng: &mut impl Rng) -> Mlp<B> {
        let mut width = self.d_input;
        let mut layers = Vec::with_capacity(self.hidden.len());
        for &h in &self.hidden {
            let cfg = ModulatedLinearConfig {
                d_input: width,
                d_output: h,
                d_latent: self.d_latent,
                modulation: self.modulation,
            };
            layers.push(cfg.init(device, rng));
            width = h;
        }
        let bound = 1.0 / (width as f64).sqrt();
        Mlp {
            layers,
            readout: uniform_param([width], bound, rng, device),
            readout_bias: uniform_param([1], bound, rng, device),
        }
    }
}

/// f(x; z) = wᵀ a_L + c with a_ℓ = tanh(u_ℓ), u_ℓ = a_{ℓ−1} W̃_ℓ(z) + b̃_ℓ(z), a₀ = x.
///
/// [`Mlp::forward_grad`] returns f and ∇ₓf in one call by the explicit reverse pass
///
/// ```text
/// g_L = w,   δ_ℓ = g_ℓ ⊙ (1 − a_ℓ²),   g_{ℓ−1} = δ_ℓ W̃_ℓ(z)ᵀ,   ∇ₓf = g₀
/// ```
///
/// built from ordinary tensor ops, so burn's first-order autodiff differentiates ∇ₓf (and
/// any loss on it) with respect to every weight, hypernetwork parameter and latent.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Hidden layers.
    pub layers: Vec<ModulatedLinear<B>>,
    /// Readout weights w, `[width]`.
    pub readout: Param<Tensor<B, 1>>,
    /// Readout bias c, `[1]`.
    pub readout_bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Mlp<B> {
    /// Per-layer codes of a batch of latents, `[B, d_z]`.
    pub fn codes(&self, z: &Tensor<B, 2>) -> Vec<LayerCode<B>> {
        self.layers.iter().map(|l| l.code(z)).collect()
    }

    /// Hidden activations a₁ … a_L.
    fn activations(&self, x: Tensor<B, 2>, codes: &[LayerCode<B>]) -> Vec<Tensor<B, 2>> {
        let mut acts = Vec::with_capacity(self.layers.len());
        let mut a = x;
        for (layer, code) in self.layers.iter().zip(codes) {
            a = tanh(layer.forward(a, code));
            acts.push(a.clone());
        }
        acts
    }

    fn readout(&self, last: Tensor<B, 2>) -> Tensor<B, 1> {
        let [b, w] = last.dims();
        last.matmul(self.readout.val().reshape([w, 1])).reshape([b]) + self.readout_bias.val()
    }

    /// f(x; z) without the gradient.
    ///
    /// # Shapes
    /// - x: `[B, n]` → `[B]`
    pub fn value(&self, x: Tensor<B, 2>, codes: &[LayerCode<B>]) -> Tensor<B, 1> {
        let acts = self.activations(x, codes);
        self.readout(acts.last().expect("at least one hidden layer").clone())
    }

    /// f(x; z) and ∇ₓf(x; z).
    ///
    /// # Shapes
    /// - x: `[B, n]` → (`[B]`, `[B, n]`)
    pub fn forward_grad(
        &self,
        x: Tensor<B, 2>,
        codes: &[LayerCode<B>],
    ) -> (Tensor<B, 1>, Tensor<B, 2>) {
        let acts = self.activations(x, codes);
        let last = acts.last().expect("at least one hidden layer").clone();
        let [b, w] = last.dims();
        let value = self.readout(last);
        let mut g = self.readout.val().unsqueeze_dim::<2>(0).expand([b, w]);
        for ((layer, code), a) in self.layers.iter().zip(codes).zip(&acts).rev() {
            let delta = g * (a.clone().square().neg().add_scalar(1.0));
            g = layer.backward_input(delta, code);
        }
        (value, g)
    }

    /// λ-free regulariser terms: (‖φ‖² over all layers, Σ orthogonality of SVD bases).
    pub fn regularizers(&self) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        let sum = |v: Vec<Tensor<B, 1>>| v.into_iter().reduce(|a, b| a + b);
        (
            sum(self
                .layers
                .iter()
                .filter_map(|l| l.hypernetwork_sq_norm())
                .collect()),
            sum(self
                .layers
                .iter()
                .filter_map(|l| l.orthogonality())
                .collect()),
        )
    }

    /// (base, hypernetwork) parameter counts.
    pub fn param_split(&self) -> (usize, usize) {
        let readout = self.readout.shape().num_elements() + 1;
        self.layers.iter().fold((readout, 0), |(b, h), l| {
            let (lb, lh) = l.param_split();
            (b + lb, h + lh)
        })
    }
}
