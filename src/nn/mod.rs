//! Structure-preserving networks with latent modulation (docs/protocol.md §4), generic over
//! `B: Backend` (Flex on the CPU, burn-wgpu on a GPU).
//!
//! | piece | type | role |
//! |---|---|---|
//! | modulated dense layer | [`ModulatedLinear`] | W̃(z) for Shift, FW, RO/MR(r), SVD(r); its transpose for ∇ₓ |
//! | scalar MLP | [`Mlp`] | f(x; z) and ∇ₓf by the explicit reverse pass |
//! | Hamiltonian network | [`Hnn`] | ẋ = J ∇H, general or separable H = T(p) + V(q) |
//! | GENERIC network | [`GenericNet`] | ẋ = L∇E + M∇S with L∇S = 0, M∇E = 0, M ⪰ 0 built in |
//! | a whole model | [`Model`], [`ModelConfig`] | the family's network plus its RON-serialisable config |
//!
//! Every network implements [`LatentField`]: a batch of states `[B, n]` and a batch of latent
//! codes `[B, d_z]` (one per row, so one call serves thousands of different systems) give
//! the vector field `[B, n]`, the energy `[B]` and, for GENERIC models, the entropy.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use noether::nn::{LatentField, Modulation, ModelConfig};
//! use noether::systems::Family;
//!
//! let device = Default::default();
//! let model = ModelConfig::new(Family::Pendulum, Modulation::Svd { rank: 5 }).init::<Flex>(&device);
//! let x = Tensor::<Flex, 2>::from_floats([[0.5, 0.0], [1.0, -0.3]], &device);
//! let z = Tensor::<Flex, 2>::zeros([2, 10], &device);
//! let xdot = model.field(x, &z);
//! assert_eq!(xdot.dims(), [2, 2]);
//! ```

mod activation;
pub mod cpu;
mod dense;
mod flow;
mod generic;
pub mod gpu;
mod hnn;
mod init;
mod mlp;
mod model;
mod modulation;

pub use activation::tanh;
pub use dense::Dense;
pub use flow::BurnFlow;
pub use generic::{GenericNet, GenericStructure};
pub use hnn::Hnn;
pub use init::{uniform, uniform_param};
pub use mlp::{Mlp, MlpConfig};
pub use model::{AdaptSolver, Architecture, LatentStats, Model, ModelConfig, TrainingRecord};
pub use modulation::{LayerCode, ModulatedLinear, ModulatedLinearConfig, Modulation};

use burn::tensor::{Tensor, backend::Backend};

/// A learned vector field whose behaviour is selected per row by a latent code.
pub trait LatentField<B: Backend> {
    /// State dimension n.
    fn dim(&self) -> usize;

    /// Latent dimension d_z.
    fn d_latent(&self) -> usize;

    /// ẋ = f(x; z).
    ///
    /// # Shapes
    /// - x: `[B, n]`, z: `[B, d_z]` → `[B, n]`
    fn field(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2>;

    /// Energy H (Hamiltonian) or E (GENERIC).
    ///
    /// # Shapes
    /// - x: `[B, n]`, z: `[B, d_z]` → `[B]`
    fn energy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 1>;

    /// Entropy S (GENERIC models only).
    ///
    /// # Shapes
    /// - x: `[B, n]`, z: `[B, d_z]` → `[B]`
    fn entropy(&self, _x: Tensor<B, 2>, _z: &Tensor<B, 2>) -> Option<Tensor<B, 1>> {
        None
    }
}
