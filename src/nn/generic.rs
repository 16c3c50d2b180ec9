//! GENERIC (metriplectic) networks with the degeneracy conditions built in (docs/protocol.md §4).

use burn::{
    module::{Module, Param},
    tensor::{Tensor, backend::Backend},
};
use rand::Rng;

use super::{
    LatentField,
    dense::Dense,
    hnn::sum_regularizers,
    init::uniform_param,
    mlp::{Mlp, MlpConfig},
};

/// ẋ = L(x)∇E(x; z) + M(x)∇S(x; z), GFINN-style (Zhang, Shin, Karniadakis 2022):
///
/// ```text
/// L = B_Sᵀ (A − Aᵀ) B_S,   (B_S)ₖ = (∇S)ᵀ ξₖ,   ξₖ = Ξₖ − Ξₖᵀ
/// M = B_Eᵀ C Cᵀ B_E,       (B_E)ₖ = (∇E)ᵀ ζₖ,   ζₖ = Zₖ − Zₖᵀ
/// ```
///
/// with A(x), C(x) ∈ ℝ^{K×K} from unmodulated MLPs and k = 1 … K. Because every ξₖ is skew,
/// B_S∇S = 0, hence L∇S = 0; likewise B_E∇E = 0, hence M∇E = 0; L is skew and M = (CᵀB_E)ᵀ(CᵀB_E)
/// is symmetric PSD. So dE/dt = ∇Eᵀ(L∇E + M∇S) = 0 and dS/dt = ∇Sᵀ M ∇S ≥ 0 for every weight
/// and every latent code. Only E and S are modulated by z; the assembly (A, C, Ξ, Z) is
/// shared by all instances.
#[derive(Module, Debug)]
pub struct GenericNet<B: Backend> {
    /// Energy E(x; z).
    pub energy: Mlp<B>,
    /// Entropy S(x; z).
    pub entropy: Mlp<B>,
    /// A(x), `[B, K·K]`.
    pub a_net: Dense<B>,
    /// C(x), `[B, K·K]`.
    pub c_net: Dense<B>,
    /// Ξ, `[K, n, n]` (ξₖ = Ξₖ − Ξₖᵀ).
    pub xi: Param<Tensor<B, 3>>,
    /// Z, `[K, n, n]` (ζₖ = Zₖ − Zₖᵀ).
    pub zeta: Param<Tensor<B, 3>>,
    /// State dimension n.
    pub dim: usize,
    /// Rank K of the assembly.
    pub k: usize,
    /// Latent width.
    pub d_latent: usize,
}

/// L, M, ∇E and ∇S of a batch, for checks and diagnostics.
#[derive(Clone, Debug)]
pub struct GenericStructure<B: Backend> {
    /// L, `[B, n, n]`.
    pub l: Tensor<B, 3>,
    /// M, `[B, n, n]`.
    pub m: Tensor<B, 3>,
    /// ∇E, `[B, n]`.
    pub grad_energy: Tensor<B, 2>,
    /// ∇S, `[B, n]`.
    pub grad_entropy: Tensor<B, 2>,
}

impl<B: Backend> GenericNet<B> {
    /// A GENERIC network for an `dim`-dimensional state: E and S shaped by `mlp`, A and C
    /// MLPs with hidden widths `assembly_hidden`, rank `k`.
    pub fn init(
        dim: usize,
        k: usize,
        mlp: &MlpConfig,
        assembly_hidden: &[usize],
        device: &B::Device,
        rng: &mut impl Rng,
    ) -> Self {
        let cfg = MlpConfig {
            d_input: dim,
            ..mlp.clone()
        };
        let energy = cfg.init(device, rng);
        let entropy = cfg.init(device, rng);
        let sizes: Vec<usize> = std::iter::once(dim)
            .chain(assembly_hidden.iter().copied())
            .chain([k * k])
            .collect();
        let a_net = Dense::init(&sizes, device, rng);
        let c_net = Dense::init(&sizes, device, rng);
        let bound = 1.0 / (dim as f64).sqrt();
        Self {
            energy,
            entropy,
            a_net,
            c_net,
            xi: uniform_param([k, dim, dim], bound, rng, device),
            zeta: uniform_param([k, dim, dim], bound, rng, device),
            dim,
            k,
            d_latent: mlp.d_latent,
        }
    }

    /// ξ `[K, n, n]` ↦ the matrix `[n, K·n]` whose block k is ξₖ, skew by construction.
    fn skew_blocks(&self, raw: &Param<Tensor<B, 3>>) -> Tensor<B, 2> {
        let (k, n) = (self.k, self.dim);
        let raw = raw.val();
        let skew = raw.clone() - raw.swap_dims(1, 2);
        skew.permute([1, 0, 2]).reshape([n, k * n])
    }

    /// Rows (∇f)ᵀ ξₖ for every k: `[B, K, n]`.
    fn b_matrix(&self, grad: Tensor<B, 2>, raw: &Param<Tensor<B, 3>>) -> Tensor<B, 3> {
        let [b, _] = grad.dims();
        grad.matmul(self.skew_blocks(raw))
            .reshape([b, self.k, self.dim])
    }

    /// (B_S, A − Aᵀ, B_E, C Cᵀ, ∇E, ∇S) of a batch.
    #[expect(
        clippy::type_complexity,
        reason = "private helper returning the assembly pieces"
    )]
    fn assembly(
        &self,
        x: Tensor<B, 2>,
        z: &Tensor<B, 2>,
    ) -> (
        Tensor<B, 3>,
        Tensor<B, 3>,
        Tensor<B, 3>,
        Tensor<B, 3>,
        Tensor<B, 2>,
        Tensor<B, 2>,
    ) {
        let [b, _] = x.dims();
        let k = self.k;
        let (_, ge) = self.energy.forward_grad(x.clone(), &self.energy.codes(z));
        let (_, gs) = self.entropy.forward_grad(x.clone(), &self.entropy.codes(z));
        let a = self.a_net.forward(x.clone()).reshape([b, k, k]);
        let skew_a = a.clone() - a.swap_dims(1, 2);
        let c = self.c_net.forward(x).reshape([b, k, k]);
        let cc = c.clone().matmul(c.swap_dims(1, 2));
        let bs = self.b_matrix(gs.clone(), &self.xi);
        let be = self.b_matrix(ge.clone(), &self.zeta);
        (bs, skew_a, be, cc, ge, gs)
    }

    /// L, M, ∇E, ∇S at a batch of states.
    ///
    /// # Shapes
    /// - x: `[B, n]`, z: `[B, d_z]`
    pub fn structure(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> GenericStructure<B> {
        let (bs, skew_a, be, cc, ge, gs) = self.assembly(x, z);
        GenericStructure {
            l: bs.clone().swap_dims(1, 2).matmul(skew_a).matmul(bs),
            m: be.clone().swap_dims(1, 2).matmul(cc).matmul(be),
            grad_energy: ge,
            grad_entropy: gs,
        }
    }

    /// Sum of E's and S's (‖φ‖², orthogonality) terms.
    pub fn regularizers(&self) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        sum_regularizers([&self.energy, &self.entropy].into_iter())
    }

    /// (base, hypernetwork) parameter counts; the assembly counts as base.
    pub fn param_split(&self) -> (usize, usize) {
        let (eb, eh) = self.energy.param_split();
        let (sb, sh) = self.entropy.param_split();
        let assembly =
            self.a_net.num_params() + self.c_net.num_params() + 2 * self.k * self.dim * self.dim;
        (eb + sb + assembly, eh + sh)
    }
}

impl<B: Backend> LatentField<B> for GenericNet<B> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn d_latent(&self) -> usize {
        self.d_latent
    }

    /// ẋ = B_Sᵀ (A − Aᵀ)(B_S ∇E) + B_Eᵀ C Cᵀ (B_E ∇S), matrix-free.
    fn field(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2> {
        let [b, n] = x.dims();
        let (bs, skew_a, be, cc, ge, gs) = self.assembly(x, z);
        let l_ge = bs
            .clone()
            .swap_dims(1, 2)
            .matmul(skew_a.matmul(bs.matmul(ge.reshape([b, n, 1]))));
        let m_gs = be
            .clone()
            .swap_dims(1, 2)
            .matmul(cc.matmul(be.matmul(gs.reshape([b, n, 1]))));
        (l_ge + m_gs).reshape([b, n])
    }

    fn energy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 1> {
        self.energy.value(x, &self.energy.codes(z))
    }

    fn entropy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Option<Tensor<B, 1>> {
        Some(self.entropy.value(x, &self.entropy.codes(z)))
    }
}
