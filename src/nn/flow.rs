//! A batch of learned systems on a burn backend as a flow, so the integrators of
//! [`crate::integrate`] step it on any device (the GPU path of the runtime).

use burn::tensor::{Tensor, backend::Backend};

use super::{LatentField, Model};
use crate::integrate::{Flow, SplitFlow};

/// The model with one latent per row; states `[B, n]` stay on the model's device.
pub struct BurnFlow<'a, B: Backend> {
    /// The model.
    pub model: &'a Model<B>,
    /// Latents `[B, d_z]`.
    pub latents: Tensor<B, 2>,
}

impl<B: Backend> Flow<Tensor<B, 2>> for BurnFlow<'_, B> {
    fn rate(&self, x: &Tensor<B, 2>) -> Tensor<B, 2> {
        self.model.field(x.clone(), &self.latents)
    }
}

impl<B: Backend> SplitFlow<Tensor<B, 2>> for BurnFlow<'_, B> {
    /// q ← q + h ∇ₚT(p; z).
    ///
    /// # Panics
    /// For a model that is not a separable HNN.
    fn drift(&self, x: &Tensor<B, 2>, h: f64) -> Tensor<B, 2> {
        let hnn = self
            .model
            .hnn
            .as_ref()
            .expect("drift needs a separable HNN");
        let n = hnn.dof;
        let (q, p) = (x.clone().narrow(1, 0, n), x.clone().narrow(1, n, n));
        let q = q + hnn.velocity(p.clone(), &self.latents).mul_scalar(h);
        Tensor::cat(vec![q, p], 1)
    }

    /// p ← p − h ∇_qV(q; z).
    ///
    /// # Panics
    /// For a model that is not a separable HNN.
    fn kick(&self, x: &Tensor<B, 2>, h: f64) -> Tensor<B, 2> {
        let hnn = self.model.hnn.as_ref().expect("kick needs a separable HNN");
        let n = hnn.dof;
        let (q, p) = (x.clone().narrow(1, 0, n), x.clone().narrow(1, n, n));
        let p = p + hnn.force(q.clone(), &self.latents).mul_scalar(h);
        Tensor::cat(vec![q, p], 1)
    }
}
