//! A plain vector-valued MLP (tanh hidden layers, linear output), never modulated: the
//! A(x) and C(x) networks of the GENERIC assembly.

use burn::{
    module::{Module, Param},
    tensor::{Tensor, backend::Backend},
};
use rand::Rng;

use super::{activation::tanh, init::uniform_param};

/// x ↦ W_L tanh(… tanh(x W₁ + b₁) …) + b_L.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// Weights, `[in, out]` per layer.
    pub weights: Vec<Param<Tensor<B, 2>>>,
    /// Biases, `[out]` per layer.
    pub biases: Vec<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Dense<B> {
    /// Widths `sizes[0] → … → sizes[last]`, each layer U(±1/√in).
    pub fn init(sizes: &[usize], device: &B::Device, rng: &mut impl Rng) -> Self {
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for w in sizes.windows(2) {
            let bound = 1.0 / (w[0] as f64).sqrt();
            weights.push(uniform_param([w[0], w[1]], bound, rng, device));
            biases.push(uniform_param([w[1]], bound, rng, device));
        }
        Self { weights, biases }
    }

    /// # Shapes
    /// - x: `[B, in]` → `[B, out]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = self.weights.len();
        let mut a = x;
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            a = a.matmul(w.val()) + b.val().unsqueeze_dim(0);
            if i + 1 < n {
                a = tanh(a);
            }
        }
        a
    }
}
