//! Where the batched stepping runs: the CPU kernel (`noether::nn::cpu`) or the fused GPU
//! kernel (`noether::nn::gpu`) on a burn-wgpu device.
//!
//! [`NoetherBackend::Auto`] (the default) measures when the render app has a hardware
//! adapter (the device Bevy renders with is shared with burn: one wgpu stack): the first
//! tick of each batch, and again when a batch's size changes by 4×, times a few steps of
//! both backends on that batch and keeps the faster, logging both timings (shown by the
//! inspector). On a software adapter (lavapipe) or none, `Auto` is the CPU kernel.
//! [`NoetherBackend::Measure`] measures on any adapter; [`NoetherBackend::Cpu`] and
//! [`NoetherBackend::Gpu`] force one.
//!
//! On the GPU a batch lives on the device: states and latents are uploaded when the batch's
//! bodies change, bodies edited outside the stepper (Bevy change detection) are written row
//! by row, each tick is one launch, and the states come back by an asynchronous read-back
//! picked up on a later tick: **bodies on the GPU show the state of one or more ticks ago**
//! (one on a GPU that keeps up). A row whose fixed point failed is re-solved on the CPU by
//! Newton and written back; a row that turned non-finite is reported frozen. The energy of
//! each row comes back with its state (H computed in the same launch). Separable and GENERIC
//! models step on the CPU kernel.

use std::{collections::HashMap, sync::Arc, time::Instant};

use bevy::{
    asset::AssetId,
    ecs::entity::Entity,
    log::info,
    prelude::{Reflect, ReflectDefault, ReflectResource, Resource},
};
use burn::backend::wgpu::WgpuDevice;
use noether::{
    integrate::{Integrator, gather_rows},
    nn::{
        cpu::ModelParams,
        gpu::{
            DeviceBatch, DeviceModel, FusedStepper, GpuCounters, GpuStepError,
            kernel::{FLAG_NON_FINITE, FLAG_NOT_CONVERGED},
        },
    },
    runtime::{StepHistory, StepReport, StepSettings, advance_isolating},
};

use crate::model::NoetherModel;

/// Which device steps the bodies: a build-time knob of [`crate::NoetherPlugins`]
/// ([`crate::NoetherPlugins::with_backend`]); a resource of this type inserted before the
/// plugins are finished overrides it.
#[derive(Resource, Reflect, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[reflect(Resource, Default, Debug)]
pub enum NoetherBackend {
    /// Measure both on each batch when a hardware adapter is available to the render app;
    /// the CPU kernel otherwise.
    #[default]
    Auto,
    /// Measure both on each batch on any adapter (software ones included).
    Measure,
    /// The CPU kernel.
    Cpu,
    /// The fused GPU kernel (any adapter, software ones included).
    Gpu,
}

/// The backend in use, and why.
#[derive(Resource, Clone, Debug, PartialEq, Reflect)]
#[reflect(Resource, Debug)]
pub struct ActiveBackend {
    /// Whether the GPU may step the bodies (per batch: see [`ActiveBackend::choices`]).
    pub gpu: bool,
    /// A line for logs and the inspector.
    pub description: String,
    /// Per measured batch: (model family and integrator, bodies, GPU ms per step, CPU ms
    /// per step, whether the GPU won).
    pub choices: Vec<BackendChoice>,
}

/// One measurement of [`NoetherBackend::Auto`] / [`NoetherBackend::Measure`].
#[derive(Clone, Debug, PartialEq, Reflect)]
pub struct BackendChoice {
    /// Model family and integrator.
    pub batch: String,
    /// Bodies in the batch when measured.
    pub bodies: usize,
    /// GPU milliseconds per step (launch to result).
    pub gpu_ms: f64,
    /// CPU kernel milliseconds per step.
    pub cpu_ms: f64,
    /// Whether the batch steps on the GPU.
    pub gpu: bool,
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
            choices: Vec::new(),
        }
    }
}

/// A batch resident on the device.
struct Resident {
    entities: Vec<Entity>,
    batch: DeviceBatch,
    /// Launch count at which each row was last written from the host.
    edited: Vec<u64>,
    /// Launch count the read-back in flight was requested after.
    requested: u64,
}

/// Whether a batch steps on the GPU, measured on how many bodies.
#[derive(Clone, Copy)]
struct Decision {
    gpu: bool,
    rows: usize,
}

/// What one tick of a GPU batch produced.
#[derive(Debug, Default)]
pub struct GpuTick {
    /// States of the batch's rows as of the read-back that arrived this tick (host edits
    /// made after it was requested win), or `None` when none arrived.
    pub states: Option<Vec<f32>>,
    /// H at those states, computed in the same launch (rows edited on the host or re-solved
    /// on the CPU: NaN, to be measured on the CPU).
    pub energy: Option<Vec<f32>>,
    /// Non-converged rows re-solved on the CPU ([`StepReport::retries`]) and non-finite rows
    /// ([`StepReport::frozen`]) in that read-back.
    pub report: StepReport,
}

/// The fused GPU stepper: the device, models uploaded to it, resident batches, and the
/// [`NoetherBackend::Auto`] decisions.
#[derive(Resource)]
pub struct GpuStepper {
    fused: FusedStepper,
    models: HashMap<AssetId<NoetherModel>, (Arc<ModelParams>, DeviceModel)>,
    batches: HashMap<(AssetId<NoetherModel>, Integrator), Resident>,
    decisions: HashMap<(AssetId<NoetherModel>, Integrator), Decision>,
    /// Whether batches are measured before choosing ([`NoetherBackend::Auto`],
    /// [`NoetherBackend::Measure`]) or always stepped here ([`NoetherBackend::Gpu`]).
    measure: bool,
    launches: u64,
    /// Whole-batch uploads (new or re-formed batches; for tests and the inspector).
    pub uploads: u64,
}

impl GpuStepper {
    /// On `device`; `measure`: choose per batch by timing both backends.
    pub fn new(device: &WgpuDevice, measure: bool) -> Self {
        Self {
            fused: FusedStepper::new(device),
            models: HashMap::new(),
            batches: HashMap::new(),
            decisions: HashMap::new(),
            measure,
            launches: 0,
            uploads: 0,
        }
    }

    /// Launches, uploads and blocking syncs so far.
    pub fn counters(&self) -> GpuCounters {
        self.fused.counters()
    }

    /// Whether the fused kernel steps `model` with `method` (Hamiltonian networks with
    /// Euler, RK4 or implicit midpoint; separable ones also with symplectic Euler, Verlet or
    /// Yoshida; see [`noether::nn::gpu::fuses`]).
    pub fn supports(model: &NoetherModel, method: Integrator) -> bool {
        noether::nn::gpu::fuses(&model.params, method)
    }

    fn device_model(
        &mut self,
        id: AssetId<NoetherModel>,
        model: &NoetherModel,
    ) -> Result<&DeviceModel, GpuStepError> {
        let stale = self
            .models
            .get(&id)
            .is_none_or(|(params, _)| !Arc::ptr_eq(params, &model.params));
        if stale {
            // New or hot-reloaded: new weights on the device, batches formed again.
            let uploaded = self.fused.upload_model(&model.params)?;
            self.models.insert(id, (model.params.clone(), uploaded));
            self.batches.retain(|(m, _), _| *m != id);
        }
        Ok(&self.models[&id].1)
    }

    /// Whether the batch `(id, method)` of `rows` bodies steps on the GPU: always when
    /// forced; otherwise measured on its first tick and whenever its size has changed by 4×
    /// since (a few steps of each backend on the batch's own states; the GPU timing
    /// includes waiting for its result). Returns the new measurement when one was taken.
    #[expect(clippy::too_many_arguments, reason = "one batch and its step")]
    pub fn choose(
        &mut self,
        id: AssetId<NoetherModel>,
        model: &NoetherModel,
        method: Integrator,
        x: &[f32],
        z: &[f32],
        dt: f64,
        settings: &StepSettings,
    ) -> Result<(bool, Option<BackendChoice>), GpuStepError> {
        let rows = x.len() / model.dim().max(1);
        if !self.measure {
            return Ok((true, None));
        }
        if let Some(d) = self.decisions.get(&(id, method))
            && rows <= 4 * d.rows
            && 4 * rows >= d.rows
        {
            return Ok((d.gpu, None));
        }
        const TRIALS: u32 = 3;
        let device_model = self.device_model(id, model)?.clone();
        let mut probe = self.fused.upload_batch(&device_model, x, z)?;
        // The first launch compiles the kernel: not timed.
        self.fused
            .step(&device_model, &probe, method, dt, settings)?;
        self.fused.read_blocking(&mut probe)?;
        let start = Instant::now();
        for _ in 0..TRIALS {
            self.fused
                .step(&device_model, &probe, method, dt, settings)?;
        }
        self.fused.read_blocking(&mut probe)?;
        let gpu_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(TRIALS);
        // A failed solve costs what it costs: the timing is what matters here. The first
        // step, not timed, gives the midpoint its history, as in the game loop.
        let mut history = StepHistory::default();
        let _ = advance_isolating(&model.cpu, method, x, z, dt, settings, &mut history);
        let start = Instant::now();
        for _ in 0..TRIALS {
            let _ = advance_isolating(&model.cpu, method, x, z, dt, settings, &mut history);
        }
        let cpu_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(TRIALS);
        let gpu = gpu_ms < cpu_ms;
        self.decisions.insert((id, method), Decision { gpu, rows });
        let choice = BackendChoice {
            batch: format!("{} {method:?}", model.family()),
            bodies: rows,
            gpu_ms,
            cpu_ms,
            gpu,
        };
        info!(
            "noether: {} bodies of {}: GPU {gpu_ms:.3} ms/step, CPU kernel {cpu_ms:.3} ms/step → {}",
            rows,
            choice.batch,
            if gpu { "GPU" } else { "CPU kernel" }
        );
        Ok((gpu, Some(choice)))
    }

    /// One tick of the batch of `entities` ([`GpuStepper::supports`] it): `x`, `z` are the
    /// ECS's values and `edited[k]` says whether body k's state or latent was changed outside
    /// the stepper since its last tick (only those rows are uploaded). Launches the step and
    /// returns whatever read-back has arrived (see [`GpuTick`]).
    ///
    /// # Errors
    /// [`GpuStepError`] for a model or integrator the kernel lacks, or a failed read-back.
    #[expect(clippy::too_many_arguments, reason = "one batch and its step")]
    pub fn step(
        &mut self,
        id: AssetId<NoetherModel>,
        model: &NoetherModel,
        method: Integrator,
        entities: &[Entity],
        x: &[f32],
        z: &[f32],
        edited: &[bool],
        dt: f64,
        settings: &StepSettings,
    ) -> Result<GpuTick, GpuStepError> {
        let device_model = self.device_model(id, model)?.clone();
        let (n, dz) = (model.dim(), model.d_latent());
        let launch = self.launches + 1;
        let fresh = self
            .batches
            .get(&(id, method))
            .is_none_or(|b| b.entities != entities);
        if fresh {
            self.uploads += 1;
            let batch = self.fused.upload_batch(&device_model, x, z)?;
            self.batches.insert(
                (id, method),
                Resident {
                    entities: entities.to_vec(),
                    batch,
                    edited: vec![launch; entities.len()],
                    requested: 0,
                },
            );
        }
        let resident = self.batches.get_mut(&(id, method)).expect("inserted above");
        if !fresh {
            let rows: Vec<usize> = (0..entities.len()).filter(|&k| edited[k]).collect();
            if !rows.is_empty() {
                let index = as_index(&rows);
                self.fused
                    .write_states(&resident.batch, &index, &gather_rows(x, &rows, n));
                self.fused
                    .write_latents(&resident.batch, &index, &gather_rows(z, &rows, dz));
                for &k in &rows {
                    resident.edited[k] = launch;
                }
            }
        }
        self.fused
            .step(&device_model, &resident.batch, method, dt, settings)?;
        self.launches = launch;
        let mut tick = GpuTick::default();
        if let Some(back) = self.fused.poll_readback(&mut resident.batch)? {
            let (mut states, mut energy) = (back.states, back.energy);
            let mut retry = Vec::new();
            for (k, &flag) in back.flags.iter().enumerate() {
                let row = k * n..(k + 1) * n;
                if resident.edited[k] > resident.requested {
                    // Edited on the host after the read-back was requested: the edit wins,
                    // and its energy is measured on the CPU.
                    states[row.clone()].copy_from_slice(&x[row]);
                    energy[k] = f32::NAN;
                } else if flag & FLAG_NON_FINITE != 0 {
                    tick.report.frozen.push(k);
                } else if flag & FLAG_NOT_CONVERGED != 0 {
                    retry.push(k);
                    energy[k] = f32::NAN;
                }
            }
            if !retry.is_empty() {
                // Newton on the CPU for the rows whose fixed point failed, then back up.
                let (xs, zs) = (gather_rows(&states, &retry, n), gather_rows(z, &retry, dz));
                let mut history = StepHistory::default();
                if let Ok((solved, report)) =
                    advance_isolating(&model.cpu, method, &xs, &zs, dt, settings, &mut history)
                {
                    for (j, &k) in retry.iter().enumerate() {
                        if !report.frozen.contains(&j) {
                            states[k * n..(k + 1) * n].copy_from_slice(&solved[j * n..(j + 1) * n]);
                        }
                    }
                    self.fused
                        .write_states(&resident.batch, &as_index(&retry), &solved);
                }
                tick.report.retries += retry.len() as u64;
            }
            tick.states = Some(states);
            tick.energy = Some(energy);
        }
        if !resident.batch.reading() {
            self.fused.request_readback(&mut resident.batch);
            resident.requested = launch;
        }
        Ok(tick)
    }
}

/// Row indices as the device's u32 index buffer.
fn as_index(rows: &[usize]) -> Vec<u32> {
    rows.iter().map(|&k| k as u32).collect()
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
