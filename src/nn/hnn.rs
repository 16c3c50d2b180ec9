//! Hamiltonian neural networks: ẋ = J ∇H(x; z) (docs/protocol.md §4).

use burn::{
    module::Module,
    tensor::{Tensor, backend::Backend},
};
use rand::Rng;

use super::{
    LatentField,
    mlp::{Mlp, MlpConfig},
};

/// A Hamiltonian network: either one MLP H(q, p; z), or a separable pair
/// H = T(p; z) + V(q; z) whose split field (q̇ = ∇ₚT, ṗ = −∇_qV) admits explicit symplectic
/// integrators.
///
/// dH/dt = ∇Hᵀ J ∇H = 0 because J = [[0, I], [−I, 0]] is skew: energy is conserved by the
/// continuous field for every weight and every latent code.
#[derive(Module, Debug)]
pub struct Hnn<B: Backend> {
    /// H(q, p; z), input `2·dof` (general form).
    pub h: Option<Mlp<B>>,
    /// T(p; z), input `dof` (separable form).
    pub t: Option<Mlp<B>>,
    /// V(q; z), input `dof` (separable form).
    pub v: Option<Mlp<B>>,
    /// Degrees of freedom n (state is 2n).
    pub dof: usize,
    /// Latent width.
    pub d_latent: usize,
}

impl<B: Backend> Hnn<B> {
    /// A general HNN with H's MLP shaped by `mlp` (`mlp.d_input` is set to 2·dof).
    pub fn general(dof: usize, mlp: &MlpConfig, device: &B::Device, rng: &mut impl Rng) -> Self {
        let cfg = MlpConfig {
            d_input: 2 * dof,
            ..mlp.clone()
        };
        Self {
            h: Some(cfg.init(device, rng)),
            t: None,
            v: None,
            dof,
            d_latent: mlp.d_latent,
        }
    }

    /// A separable HNN H = T(p) + V(q), both MLPs shaped by `mlp` with input `dof`.
    pub fn separable(dof: usize, mlp: &MlpConfig, device: &B::Device, rng: &mut impl Rng) -> Self {
        let cfg = MlpConfig {
            d_input: dof,
            ..mlp.clone()
        };
        let t = cfg.init(device, rng);
        let v = cfg.init(device, rng);
        Self {
            h: None,
            t: Some(t),
            v: Some(v),
            dof,
            d_latent: mlp.d_latent,
        }
    }

    /// Whether H = T(p) + V(q).
    pub fn is_separable(&self) -> bool {
        self.h.is_none()
    }

    fn split(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let n = self.dof;
        (x.clone().narrow(1, 0, n), x.narrow(1, n, n))
    }

    /// H(x; z) and ∇ₓH.
    ///
    /// # Shapes
    /// - x: `[B, 2n]`, z: `[B, d_z]` → (`[B]`, `[B, 2n]`)
    pub fn energy_grad(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> (Tensor<B, 1>, Tensor<B, 2>) {
        if let Some(h) = &self.h {
            return h.forward_grad(x, &h.codes(z));
        }
        let (q, p) = self.split(x);
        let (t, v) = (
            self.t.as_ref().expect("separable"),
            self.v.as_ref().expect("separable"),
        );
        let (tv, tg) = t.forward_grad(p, &t.codes(z));
        let (vv, vg) = v.forward_grad(q, &v.codes(z));
        (tv + vv, Tensor::cat(vec![vg, tg], 1))
    }

    /// q̇ = ∂H/∂p for the separable form (T's gradient at p).
    ///
    /// # Shapes
    /// - p: `[B, n]`, z: `[B, d_z]` → `[B, n]`
    ///
    /// # Panics
    /// On a general (non-separable) HNN.
    pub fn velocity(&self, p: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2> {
        let t = self
            .t
            .as_ref()
            .expect("Hnn::velocity needs the separable form");
        t.forward_grad(p, &t.codes(z)).1
    }

    /// ṗ = −∂H/∂q for the separable form (minus V's gradient at q).
    ///
    /// # Shapes
    /// - q: `[B, n]`, z: `[B, d_z]` → `[B, n]`
    ///
    /// # Panics
    /// On a general (non-separable) HNN.
    pub fn force(&self, q: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2> {
        let v = self
            .v
            .as_ref()
            .expect("Hnn::force needs the separable form");
        v.forward_grad(q, &v.codes(z)).1.neg()
    }

    /// Sum of the sub-networks' (‖φ‖², orthogonality) terms.
    pub fn regularizers(&self) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        sum_regularizers([&self.h, &self.t, &self.v].into_iter().flatten())
    }

    /// (base, hypernetwork) parameter counts.
    pub fn param_split(&self) -> (usize, usize) {
        [&self.h, &self.t, &self.v]
            .into_iter()
            .flatten()
            .map(Mlp::param_split)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// Adds up the regularisers of several MLPs.
pub(super) fn sum_regularizers<'a, B: Backend>(
    nets: impl Iterator<Item = &'a Mlp<B>>,
) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
    let add = |a: Option<Tensor<B, 1>>, b: Option<Tensor<B, 1>>| match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    nets.map(Mlp::regularizers)
        .fold((None, None), |acc, r| (add(acc.0, r.0), add(acc.1, r.1)))
}

impl<B: Backend> LatentField<B> for Hnn<B> {
    fn dim(&self) -> usize {
        2 * self.dof
    }

    fn d_latent(&self) -> usize {
        self.d_latent
    }

    /// ẋ = J∇H = (∂H/∂p, −∂H/∂q).
    fn field(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2> {
        let (_, g) = self.energy_grad(x, z);
        let n = self.dof;
        Tensor::cat(vec![g.clone().narrow(1, n, n), g.narrow(1, 0, n).neg()], 1)
    }

    fn energy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 1> {
        if let Some(h) = &self.h {
            return h.value(x, &h.codes(z));
        }
        let (q, p) = self.split(x);
        let (t, v) = (
            self.t.as_ref().expect("separable"),
            self.v.as_ref().expect("separable"),
        );
        t.value(p, &t.codes(z)) + v.value(q, &v.codes(z))
    }
}
