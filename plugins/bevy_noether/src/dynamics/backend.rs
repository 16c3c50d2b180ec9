//! Where the batched stepping runs: the CPU kernel (Flex layout, `noether::nn::cpu`) or
//! burn-wgpu on a GPU.
//!
//! [`NoetherBackend::Auto`] (the default) uses the GPU when the render app has a hardware
//! adapter (the device Bevy renders with is shared with burn: one wgpu stack, no copies
//! between two device contexts) and the CPU kernel otherwise (headless apps, software
//! adapters such as lavapipe, machines without a GPU). Insert [`NoetherBackend::Cpu`] or
//! [`NoetherBackend::Gpu`] to override; the choice is logged once at startup and kept in
//! [`ActiveBackend`].
//!
//! On the GPU, each batch's states and latents stay resident on the device between steps;
//! they are uploaded again only when the batch's bodies change or their state or latent was
//! edited outside the stepper, and the new states are read back once per tick for the ECS.

use std::collections::HashMap;

use bevy::{
    asset::AssetId,
    ecs::entity::Entity,
    log::info,
    prelude::{Reflect, ReflectDefault, ReflectResource, Resource},
};
use burn::{
    backend::{Wgpu, wgpu::WgpuDevice},
    tensor::{Tensor, TensorData},
};
use noether::{
    integrate::{IntegrateError, Integrator},
    nn::{BurnFlow, Model},
    runtime::{StepReport, StepSettings, advance},
};

use crate::model::NoetherModel;

/// Which device steps the bodies: a build-time knob of [`crate::NoetherPlugins`]
/// ([`crate::NoetherPlugins::with_backend`]); a resource of this type inserted before the
/// plugins are finished overrides it.
#[derive(Resource, Reflect, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[reflect(Resource, Default, Debug)]
pub enum NoetherBackend {
    /// GPU when a hardware adapter is available to the render app, CPU otherwise.
    #[default]
    Auto,
    /// The CPU kernel.
    Cpu,
    /// burn-wgpu (any adapter, software ones included).
    Gpu,
}

/// The backend in use, and why.
#[derive(Resource, Clone, Debug, PartialEq, Eq, Reflect)]
#[reflect(Resource, Debug)]
pub struct ActiveBackend {
    /// Whether the GPU steps the bodies.
    pub gpu: bool,
    /// A line for logs and the inspector.
    pub description: String,
}

impl Default for ActiveBackend {
    /// The CPU kernel: what an app steps on until [`DynamicsPlugin`](super::DynamicsPlugin)'s
    /// `finish` (run by `App::run`, or by hand in tests) has made its choice.
    fn default() -> Self {
        Self {
            gpu: false,
            description: format!(
                "CPU kernel ({} threads)",
                bevy::tasks::available_parallelism()
            ),
        }
    }
}

/// A batch resident on the GPU.
struct GpuBatch {
    entities: Vec<Entity>,
    /// What the ECS held after the last read-back (to detect outside edits).
    host_state: Vec<f32>,
    host_latent: Vec<f32>,
    x: Tensor<Wgpu, 2>,
    z: Tensor<Wgpu, 2>,
}

/// The GPU device, models moved to it, and resident batches.
#[derive(Resource)]
pub struct GpuStepper {
    device: WgpuDevice,
    models: HashMap<AssetId<NoetherModel>, Model<Wgpu>>,
    batches: HashMap<(AssetId<NoetherModel>, Integrator), GpuBatch>,
    /// Host→device uploads of batches (for tests and the inspector).
    pub uploads: u64,
}

impl GpuStepper {
    /// On `device`.
    pub fn new(device: WgpuDevice) -> Self {
        Self {
            device,
            models: HashMap::new(),
            batches: HashMap::new(),
            uploads: 0,
        }
    }

    /// Advances the batch of `entities` by `dt` with `method` ([`advance`] on burn
    /// tensors): `x`, `z` are the ECS's current values (compared with the resident copy,
    /// uploaded only if they differ). Returns the new states, read back; rows that came
    /// back non-finite keep their state from before the step and are listed in
    /// [`StepReport::frozen`] (the batch is uploaded again next tick without them).
    ///
    /// # Errors
    /// A non-converged implicit solve.
    #[expect(clippy::too_many_arguments, reason = "one batch and its step")]
    pub fn step(
        &mut self,
        id: AssetId<NoetherModel>,
        model: &NoetherModel,
        method: Integrator,
        entities: &[Entity],
        x: Vec<f32>,
        z: Vec<f32>,
        dt: f64,
        settings: &StepSettings,
    ) -> Result<(Vec<f32>, StepReport), IntegrateError> {
        let device = self.device.clone();
        let gpu_model = self
            .models
            .entry(id)
            .or_insert_with(|| model.params.to_model::<Wgpu>(&model.config, &device));
        let (n, dz, rows) = (model.dim(), model.d_latent(), entities.len());
        let batch = self.batches.get(&(id, method));
        let fresh =
            batch.is_none_or(|b| b.entities != entities || b.host_state != x || b.host_latent != z);
        if fresh {
            self.uploads += 1;
            let xt = Tensor::<Wgpu, 2>::from_data(TensorData::new(x.clone(), [rows, n]), &device);
            let zt = Tensor::<Wgpu, 2>::from_data(TensorData::new(z.clone(), [rows, dz]), &device);
            self.batches.insert(
                (id, method),
                GpuBatch {
                    entities: entities.to_vec(),
                    host_state: x,
                    host_latent: z,
                    x: xt,
                    z: zt,
                },
            );
        }
        let batch = self.batches.get_mut(&(id, method)).expect("inserted above");
        let flow = BurnFlow {
            model: gpu_model,
            latents: batch.z.clone(),
        };
        let (xt, mut report) = advance(&flow, method, batch.x.clone(), dt, settings)?;
        let mut out = xt
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 states");
        for k in 0..rows {
            let row = k * n..(k + 1) * n;
            if out[row.clone()].iter().any(|v| !v.is_finite()) {
                out[row.clone()].copy_from_slice(&batch.host_state[row]);
                report.frozen.push(k);
            }
        }
        batch.x = xt;
        batch.host_state.clone_from(&out);
        Ok((out, report))
    }
}

/// Initialises burn-wgpu on its own default adapter (headless apps); `None` when there is no
/// adapter. Returns the device and the adapter's description.
pub fn standalone_gpu() -> Option<(WgpuDevice, String)> {
    match noether::device::probe_wgpu() {
        Ok(found) => Some(found),
        Err(reason) => {
            info!("noether: no GPU for the dynamics: {reason}");
            None
        }
    }
}
