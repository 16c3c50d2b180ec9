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
//! by row, and the states come back by an asynchronous read-back picked up on a later tick:
//! **bodies on the GPU show the state of one or more ticks ago** (one on a GPU that keeps
//! up). The populations of every model of one kernel shape (network widths, depth,
//! modulation, latent width) stepped by one integrator are one batch on the device, stepped
//! by **one launch per tick** (each cube of rows reads its own model's weights): a scene of
//! five families trained with one architecture is one dispatch, not five. A row whose fixed
//! point failed is re-solved on the CPU by Newton and written back; a row that turned
//! non-finite is reported frozen. The energy of each Hamiltonian row comes back with its
//! state (H computed in the same launch); GENERIC models step by the discrete gradient in
//! the same kernel, and E, S and ∇E (the temperatures ∂E/∂Sᵢ) come back the same way.

use std::{collections::HashMap, ops::Range, sync::Arc, time::Instant};

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
            BatchPart, DeviceBatch, DeviceModel, FusedStepper, GpuCounters, GpuStepError, NetShape,
            PackedNet, Readback,
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

/// One model's batch handed to [`GpuStepper::step`]: the ECS's values of its bodies.
pub struct GpuBatch<'a> {
    /// The model.
    pub id: AssetId<NoetherModel>,
    /// Its asset.
    pub model: &'a NoetherModel,
    /// The integrator ([`GpuStepper::supports`] it for this model).
    pub method: Integrator,
    /// The bodies, one row each.
    pub entities: &'a [Entity],
    /// States `[rows·n]`.
    pub x: &'a [f32],
    /// Latents `[rows·d_z]`.
    pub z: &'a [f32],
    /// Per body: whether its state or latent was changed outside the stepper since its
    /// last tick (only those rows are uploaded).
    pub edited: &'a [bool],
}

/// Models of one kernel shape stepped by one integrator: their bodies are one batch on the
/// device, stepped by one launch per tick ([`FusedStepper::upload_models`]).
struct Group {
    /// The models in the order of the group's tables (by asset id), and the weights
    /// uploaded for each (a hot-reloaded model has new ones: the group is uploaded again).
    members: Vec<(AssetId<NoetherModel>, Arc<ModelParams>)>,
    model: DeviceModel,
    resident: Option<Resident>,
}

/// A group's batch resident on the device.
struct Resident {
    /// Each part's model and bodies, in the batch's order ([`DeviceBatch::parts`]).
    parts: Vec<(AssetId<NoetherModel>, Vec<Entity>)>,
    batch: DeviceBatch,
    /// Launch count at which each device row was last written from the host.
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
    /// S at those states (GENERIC models), from the same launch.
    pub entropy: Option<Vec<f32>>,
    /// ∇E at those states `[rows·n]` (GENERIC models: their temperatures), from the same
    /// launch.
    pub energy_grad: Option<Vec<f32>>,
    /// Non-converged rows re-solved on the CPU ([`StepReport::retries`]) and non-finite rows
    /// ([`StepReport::frozen`]) in that read-back.
    pub report: StepReport,
}

/// The key of a [`Group`]: models of one kernel shape, one integrator.
type GroupKey = (NetShape, Integrator);

/// The fused GPU stepper: the device, models uploaded to it, resident batches (one per
/// kernel shape and integrator: the populations of every model of that shape step in one
/// launch), and the [`NoetherBackend::Auto`] decisions.
#[derive(Resource)]
pub struct GpuStepper {
    fused: FusedStepper,
    /// Single models, uploaded to measure their batches.
    models: HashMap<AssetId<NoetherModel>, (Arc<ModelParams>, DeviceModel)>,
    /// Each model's kernel shape, for the weights it was found for.
    shapes: HashMap<AssetId<NoetherModel>, (Arc<ModelParams>, NetShape)>,
    groups: HashMap<GroupKey, Group>,
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
            shapes: HashMap::new(),
            groups: HashMap::new(),
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

    /// Batches resident on the device: one per kernel shape and integrator in use.
    pub fn resident_batches(&self) -> usize {
        self.groups
            .values()
            .filter(|g| g.resident.is_some())
            .count()
    }

    /// Whether the fused kernel steps `model` with `method` (Hamiltonian networks with
    /// Euler, RK4 or implicit midpoint; separable ones also with symplectic Euler, Verlet or
    /// Yoshida; GENERIC ones with the discrete gradient; see [`noether::nn::gpu::fuses`]).
    pub fn supports(model: &NoetherModel, method: Integrator) -> bool {
        noether::nn::gpu::fuses(&model.params, method)
    }

    /// `model` alone on the device (to measure its batch).
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
            let uploaded = self.fused.upload_model(&model.params)?;
            self.models.insert(id, (model.params.clone(), uploaded));
        }
        Ok(&self.models[&id].1)
    }

    /// The kernel shape of `model` (packed once per set of weights).
    fn shape(
        &mut self,
        id: AssetId<NoetherModel>,
        model: &NoetherModel,
    ) -> Result<NetShape, GpuStepError> {
        match self.shapes.get(&id) {
            Some((params, shape)) if Arc::ptr_eq(params, &model.params) => Ok(*shape),
            _ => {
                let shape = PackedNet::from_params(&model.params)?.shape;
                self.shapes.insert(id, (model.params.clone(), shape));
                Ok(shape)
            }
        }
    }

    /// Whether `batch` steps on the GPU: always when forced; otherwise measured on its
    /// first tick and whenever its size has changed by 4× since (a few steps of each
    /// backend on the batch's own states, the model alone; the GPU timing includes waiting
    /// for its result). Returns the new measurement when one was taken.
    ///
    /// # Errors
    /// [`GpuStepError`] when the model cannot be uploaded or the probe fails.
    pub fn choose(
        &mut self,
        batch: &GpuBatch<'_>,
        dt: f64,
        settings: &StepSettings,
    ) -> Result<(bool, Option<BackendChoice>), GpuStepError> {
        let GpuBatch {
            id,
            model,
            method,
            x,
            z,
            ..
        } = *batch;
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

    /// One tick of every GPU batch ([`GpuStepper::supports`] each): the batches of models
    /// of one kernel shape and integrator are one batch on the device, stepped by one
    /// launch. Launches the steps and returns, per batch in `batches`' order, whatever
    /// read-back has arrived (see [`GpuTick`]). A group that is no longer stepped leaves
    /// the device.
    ///
    /// # Errors
    /// Per batch: [`GpuStepError`] for a model or integrator the kernel lacks, or a failed
    /// upload or read-back (every batch of that group gets the error).
    pub fn step(
        &mut self,
        batches: &[GpuBatch<'_>],
        dt: f64,
        settings: &StepSettings,
    ) -> Vec<Result<GpuTick, GpuStepError>> {
        let mut ticks: Vec<Option<Result<GpuTick, GpuStepError>>> =
            batches.iter().map(|_| None).collect();
        let mut groups: HashMap<GroupKey, Vec<usize>> = HashMap::new();
        for (k, batch) in batches.iter().enumerate() {
            match self.shape(batch.id, batch.model) {
                Ok(shape) => groups.entry((shape, batch.method)).or_default().push(k),
                Err(err) => ticks[k] = Some(Err(err)),
            }
        }
        self.groups.retain(|key, _| groups.contains_key(key));
        for (key, mut members) in groups {
            // A stable order (by asset id) keeps the batch on the device from tick to tick.
            members.sort_by_key(|&k| batches[k].id);
            let parts: Vec<&GpuBatch<'_>> = members.iter().map(|&k| &batches[k]).collect();
            match self.step_group(key, &parts, dt, settings) {
                Ok(results) => {
                    for (&k, tick) in members.iter().zip(results) {
                        ticks[k] = Some(Ok(tick));
                    }
                }
                Err(err) => {
                    self.groups.remove(&key);
                    for &k in &members {
                        ticks[k] = Some(Err(err.clone()));
                    }
                }
            }
        }
        ticks
            .into_iter()
            .map(|tick| tick.expect("every batch is in a group or refused"))
            .collect()
    }

    /// One launch for the batches of one group (`parts`, sorted by model id).
    fn step_group(
        &mut self,
        key: GroupKey,
        parts: &[&GpuBatch<'_>],
        dt: f64,
        settings: &StepSettings,
    ) -> Result<Vec<GpuTick>, GpuStepError> {
        let (shape, method) = key;
        let (n, dz) = (shape.n, shape.d_latent);
        let launch = self.launches + 1;
        let same_models = |g: &Group| {
            g.members.len() == parts.len()
                && g.members
                    .iter()
                    .zip(parts)
                    .all(|((id, params), b)| *id == b.id && Arc::ptr_eq(params, &b.model.params))
        };
        if !self.groups.get(&key).is_some_and(same_models) {
            // New models, or one hot-reloaded: new weights on the device, the batch formed
            // again.
            let params: Vec<&ModelParams> = parts.iter().map(|b| &*b.model.params).collect();
            let model = self.fused.upload_models(&params)?;
            let members = parts
                .iter()
                .map(|b| (b.id, b.model.params.clone()))
                .collect();
            self.groups.insert(
                key,
                Group {
                    members,
                    model,
                    resident: None,
                },
            );
        }
        let group = self.groups.get_mut(&key).expect("inserted above");
        let same_bodies = |r: &Resident| {
            r.parts.len() == parts.len()
                && r.parts
                    .iter()
                    .zip(parts)
                    .all(|((id, entities), b)| *id == b.id && entities == b.entities)
        };
        match &group.resident {
            Some(resident) if same_bodies(resident) => {
                // Only rows edited outside the stepper go up, all parts in one write.
                let (mut index, mut xs, mut zs) = (Vec::new(), Vec::new(), Vec::new());
                for (range, b) in resident.batch.parts().iter().zip(parts) {
                    let rows: Vec<usize> = (0..b.entities.len()).filter(|&k| b.edited[k]).collect();
                    index.extend(rows.iter().map(|&k| (range.start + k) as u32));
                    xs.extend(gather_rows(b.x, &rows, n));
                    zs.extend(gather_rows(b.z, &rows, dz));
                }
                if !index.is_empty() {
                    self.fused.write_states(&resident.batch, &index, &xs);
                    self.fused.write_latents(&resident.batch, &index, &zs);
                    let resident = group.resident.as_mut().expect("matched above");
                    for &row in &index {
                        resident.edited[row as usize] = launch;
                    }
                }
            }
            _ => {
                self.uploads += 1;
                let uploads: Vec<BatchPart<'_>> = parts
                    .iter()
                    .enumerate()
                    .map(|(model, b)| BatchPart {
                        model,
                        states: b.x,
                        latents: b.z,
                    })
                    .collect();
                let batch = self.fused.upload_parts(&group.model, &uploads)?;
                group.resident = Some(Resident {
                    parts: parts.iter().map(|b| (b.id, b.entities.to_vec())).collect(),
                    edited: vec![launch; batch.rows()],
                    batch,
                    requested: 0,
                });
            }
        }
        let resident = group.resident.as_mut().expect("formed above");
        self.fused
            .step(&group.model, &resident.batch, method, dt, settings)?;
        self.launches = launch;
        let mut ticks: Vec<GpuTick> = parts.iter().map(|_| GpuTick::default()).collect();
        if let Some(back) = self.fused.poll_readback(&mut resident.batch)? {
            for ((range, b), tick) in resident.batch.parts().iter().zip(parts).zip(&mut ticks) {
                let edited_late: Vec<bool> = resident.edited[range.clone()]
                    .iter()
                    .map(|&at| at > resident.requested)
                    .collect();
                let solved = settle(tick, b, &back, range.clone(), &edited_late, dt, settings);
                if !solved.is_empty() {
                    let (index, states): (Vec<u32>, Vec<Vec<f32>>) = solved.into_iter().unzip();
                    self.fused
                        .write_states(&resident.batch, &index, &states.concat());
                }
            }
        }
        if !resident.batch.reading() {
            self.fused.request_readback(&mut resident.batch);
            resident.requested = launch;
        }
        Ok(ticks)
    }
}

/// Fills `tick` with the part `b`'s rows (`range` of the device batch) of a read-back:
/// rows edited on the host since the read-back was requested (`edited_late`) keep the
/// host's state, non-finite rows are reported frozen, rows whose fixed point failed are
/// re-solved on the CPU by Newton. Returns those re-solved rows (device row, state) to
/// write back.
fn settle(
    tick: &mut GpuTick,
    b: &GpuBatch<'_>,
    back: &Readback,
    range: Range<usize>,
    edited_late: &[bool],
    dt: f64,
    settings: &StepSettings,
) -> Vec<(u32, Vec<f32>)> {
    let (n, dz) = (b.model.dim(), b.model.d_latent());
    let mut states = back.states[range.start * n..range.end * n].to_vec();
    let mut energy = back.energy[range.clone()].to_vec();
    let mut retry = Vec::new();
    for (k, &flag) in back.flags[range.clone()].iter().enumerate() {
        let row = k * n..(k + 1) * n;
        if edited_late[k] {
            // Edited on the host after the read-back was requested: the edit wins, and its
            // energy is measured on the CPU.
            states[row.clone()].copy_from_slice(&b.x[row]);
            energy[k] = f32::NAN;
        } else if flag & FLAG_NON_FINITE != 0 {
            tick.report.frozen.push(k);
        } else if flag & FLAG_NOT_CONVERGED != 0 {
            retry.push(k);
            energy[k] = f32::NAN;
        }
    }
    let mut solved_rows = Vec::new();
    if !retry.is_empty() {
        // Newton on the CPU for the rows whose fixed point failed, then back up.
        let (xs, zs) = (
            gather_rows(&states, &retry, n),
            gather_rows(b.z, &retry, dz),
        );
        let mut history = StepHistory::default();
        if let Ok((solved, report)) =
            advance_isolating(&b.model.cpu, b.method, &xs, &zs, dt, settings, &mut history)
        {
            for (j, &k) in retry.iter().enumerate() {
                let row = &solved[j * n..(j + 1) * n];
                if !report.frozen.contains(&j) {
                    states[k * n..(k + 1) * n].copy_from_slice(row);
                }
                solved_rows.push(((range.start + k) as u32, row.to_vec()));
            }
        }
        tick.report.retries += retry.len() as u64;
    }
    tick.states = Some(states);
    tick.energy = Some(energy);
    if !back.entropy.is_empty() {
        tick.entropy = Some(back.entropy[range.clone()].to_vec());
        tick.energy_grad = Some(back.energy_grad[range.start * n..range.end * n].to_vec());
    }
    solved_rows
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
