//! A whole model: the family's network plus the config that rebuilds it.

use burn::{
    module::Module,
    tensor::{Tensor, backend::Backend},
};
use serde::{Deserialize, Serialize};

use super::{LatentField, generic::GenericNet, hnn::Hnn, mlp::MlpConfig, modulation::Modulation};
use crate::{
    PROTOCOL_VERSION,
    data::stream_rng,
    systems::{Family, Structure},
};

/// Which structure-preserving network a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ẋ = J∇H with one MLP H(q, p; z).
    Hnn,
    /// ẋ = J∇H with H = T(p; z) + V(q; z): explicit symplectic integrators apply.
    SeparableHnn,
    /// ẋ = L∇E + M∇S (GFINN assembly of rank `k`).
    Generic {
        /// Rank K of the L and M assembly (docs/protocol.md §4: 4).
        k: usize,
    },
}

/// Statistics of the meta-training latents, stored with a trained model: test-time
/// adaptation starts from `mean` (docs/protocol.md §5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatentStats {
    /// Mean training latent (empty: zero).
    pub mean: Vec<f64>,
    /// Per-component standard deviation of the training latents.
    pub std: Vec<f64>,
    /// Number of training latents.
    pub count: usize,
}

/// How test-time adaptation minimises the shot loss (`crate::meta::adapt_latents`); the
/// default, for records written before it existed, is the paper's Adam.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdaptSolver {
    /// `AdaptConfig::steps` Adam steps at the constant rate `AdaptConfig::lr` (protocol
    /// v1; the paper's).
    #[default]
    Adam,
    /// The Adam steps, then Levenberg–Marquardt on each task's shot residuals with the exact
    /// ∂f/∂z (`Objective::field_latent_jacobian`) from where they end, at most
    /// `AdaptConfig::steps` more steps, each task stopping on its own at the loss's floor
    /// (see `crate::meta::adapt_latents`). Protocol v2's.
    GaussNewton,
}

impl std::str::FromStr for AdaptSolver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "adam" => Ok(Self::Adam),
            "gauss-newton" | "gn" | "lm" => Ok(Self::GaussNewton),
            other => Err(format!(
                "unknown adaptation solver `{other}` (adam, gauss-newton)"
            )),
        }
    }
}

/// How a model was trained and how it adapts: saved with it so evaluation and the runtime
/// adapt exactly as validation did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// Method name (`svd5`, `maml`, …).
    pub method: String,
    /// Outer iterations run.
    pub iterations: usize,
    /// Seed of the dataset and batch sampling.
    pub data_seed: u64,
    /// λ_z of training; test-time adaptation uses the same.
    pub lambda_z: f64,
    /// λ_φ of training.
    pub lambda_phi: f64,
    /// Test-time adaptation: Adam steps.
    pub adapt_steps: usize,
    /// Test-time adaptation: Adam learning rate.
    pub adapt_lr: f64,
    /// Test-time adaptation: the solver (records written before it existed: Adam).
    #[serde(default)]
    pub adapt_solver: AdaptSolver,
    /// Iteration of the kept checkpoint.
    pub best_iteration: usize,
    /// Its validation error (relative derivative error on held-out instances).
    pub best_validation: f64,
    /// Wall time of training, seconds. Not written to model files (a file is a function of
    /// its seed and settings, bit for bit); files that carry it still load.
    #[serde(default, skip_serializing)]
    pub seconds: f64,
}

/// Everything that defines a model apart from its weights; saved as RON next to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Protocol version of docs/protocol.md the model was made under.
    pub protocol: u32,
    /// The family it models.
    pub family: Family,
    /// Its network.
    pub architecture: Architecture,
    /// Latent modulation of the scalar networks.
    pub modulation: Modulation,
    /// Latent dimension d_z (docs/protocol.md §4: 10).
    pub d_latent: usize,
    /// Hidden widths of each scalar network (docs/protocol.md §4: 3 × 100).
    pub hidden: Vec<usize>,
    /// Hidden widths of the GENERIC A(x), C(x) networks.
    pub assembly_hidden: Vec<usize>,
    /// Seed of the initial weights.
    pub seed: u64,
    /// Training latents' statistics (empty for an untrained model).
    #[serde(default)]
    pub latents: LatentStats,
    /// How it was trained (absent for an untrained model).
    #[serde(default)]
    pub training: Option<TrainingRecord>,
    /// The optional encoder section: the amortised start of online adaptation (its
    /// weights are the `encoder.*` tensors of the weights file). Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<super::cpu::EncoderSpec>,
}

impl ModelConfig {
    /// Protocol-v1 model for `family` with `modulation`: general HNN for Hamiltonian
    /// families, GENERIC with K = 4 otherwise; d_z = 10; 3 × 100 hidden; seed 0.
    pub fn new(family: Family, modulation: Modulation) -> Self {
        let architecture = match family.spec().structure {
            Structure::Hamiltonian { .. } => Architecture::Hnn,
            Structure::Generic => Architecture::Generic { k: 4 },
        };
        Self {
            protocol: PROTOCOL_VERSION,
            family,
            architecture,
            modulation,
            d_latent: 10,
            hidden: vec![100, 100, 100],
            assembly_hidden: vec![32, 32],
            seed: 0,
            latents: LatentStats::default(),
            training: None,
            encoder: None,
        }
    }

    /// With another architecture.
    pub fn with_architecture(mut self, architecture: Architecture) -> Self {
        self.architecture = architecture;
        self
    }

    /// With other hidden widths.
    pub fn with_hidden(mut self, hidden: Vec<usize>) -> Self {
        self.hidden = hidden;
        self
    }

    /// With another latent dimension.
    pub fn with_d_latent(mut self, d_latent: usize) -> Self {
        self.d_latent = d_latent;
        self
    }

    /// With another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The scalar networks' shape (input width set by the architecture).
    pub fn mlp(&self) -> MlpConfig {
        MlpConfig {
            d_input: 0,
            hidden: self.hidden.clone(),
            d_latent: self.d_latent,
            modulation: self.modulation,
        }
    }

    /// The mean training latent (zero when none is stored).
    pub fn mean_latent(&self) -> Vec<f64> {
        if self.latents.mean.len() == self.d_latent {
            self.latents.mean.clone()
        } else {
            vec![0.0; self.d_latent]
        }
    }

    /// Builds the model with weights drawn from stream `model/init` of `seed`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        let mut rng = stream_rng("model/init", self.seed, 0);
        let dim = self.family.dim();
        let mlp = self.mlp();
        let (hnn, generic) = match self.architecture {
            Architecture::Hnn => (Some(Hnn::general(dim / 2, &mlp, device, &mut rng)), None),
            Architecture::SeparableHnn => {
                (Some(Hnn::separable(dim / 2, &mlp, device, &mut rng)), None)
            }
            Architecture::Generic { k } => (
                None,
                Some(GenericNet::init(
                    dim,
                    k,
                    &mlp,
                    &self.assembly_hidden,
                    device,
                    &mut rng,
                )),
            ),
        };
        Model {
            hnn,
            generic,
            config: self.clone(),
        }
    }
}

/// A structure-preserving network with its config: the unit that is trained, saved, loaded
/// and stepped.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    /// The Hamiltonian network (Hamiltonian architectures).
    pub hnn: Option<Hnn<B>>,
    /// The GENERIC network (GENERIC architecture).
    pub generic: Option<GenericNet<B>>,
    /// What it is.
    #[module(skip)]
    pub config: ModelConfig,
}

impl<B: Backend> Model<B> {
    /// The network as a [`LatentField`].
    pub fn as_field(&self) -> &dyn LatentField<B> {
        match (&self.hnn, &self.generic) {
            (Some(h), _) => h,
            (_, Some(g)) => g,
            _ => unreachable!("a model holds one network"),
        }
    }

    /// Σ (‖φ‖², orthogonality) over the model's scalar networks.
    pub fn regularizers(&self) -> (Option<Tensor<B, 1>>, Option<Tensor<B, 1>>) {
        match (&self.hnn, &self.generic) {
            (Some(h), _) => h.regularizers(),
            (_, Some(g)) => g.regularizers(),
            _ => (None, None),
        }
    }

    /// (base, hypernetwork) parameter counts.
    pub fn param_split(&self) -> (usize, usize) {
        match (&self.hnn, &self.generic) {
            (Some(h), _) => h.param_split(),
            (_, Some(g)) => g.param_split(),
            _ => (0, 0),
        }
    }
}

impl<B: Backend> LatentField<B> for Model<B> {
    fn dim(&self) -> usize {
        self.as_field().dim()
    }

    fn d_latent(&self) -> usize {
        self.config.d_latent
    }

    fn field(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 2> {
        self.as_field().field(x, z)
    }

    fn energy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Tensor<B, 1> {
        self.as_field().energy(x, z)
    }

    fn entropy(&self, x: Tensor<B, 2>, z: &Tensor<B, 2>) -> Option<Tensor<B, 1>> {
        self.as_field().entropy(x, z)
    }
}
