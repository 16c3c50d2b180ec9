//! Device-resident batches stepped by the fused kernel, with asynchronous read-back.
//!
//! A [`FusedStepper`] owns a compute client on a burn-wgpu device (the one Bevy renders
//! with, when an app shares it). Models ([`DeviceModel`]) and batches ([`DeviceBatch`]) are
//! buffers on that device: states and latents stay there across ticks, bodies edited on the
//! host are written row by row ([`FusedStepper::write_states`], one scatter launch), a tick
//! is one launch ([`FusedStepper::step`]), and the results come back by
//! [`FusedStepper::request_readback`] + [`FusedStepper::poll_readback`]: the copy is queued
//! behind the step and mapped by the runtime's poll thread, and the host picks it up on a
//! later frame. Models of one network shape may share a batch: uploaded as a group
//! ([`FusedStepper::upload_models`]) with one [`BatchPart`] per model
//! ([`FusedStepper::upload_parts`]), they step in one launch. Nothing in a step waits for
//! the device; the only blocking reads are
//! [`FusedStepper::read_blocking`] (tests, benchmarks; [`GpuCounters`] counts them) and
//! dropping a batch whose read-back is still in flight (it finishes that copy first).

use std::{
    future::Future,
    ops::Range,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use burn::backend::wgpu::{WgpuDevice, WgpuRuntime};
use cubecl::{
    Runtime,
    prelude::{ArrayArg, ComputeClient, CubeCount, CubeDim, CubeElement},
    server::Handle,
};

use super::{
    kernel::{self, DISCRETE_GRADIENT, EULER, MIDPOINT, RK4, SYMPLECTIC_EULER, VERLET, YOSHIDA4},
    pack::{NetShape, PackError, PackedNet},
};
use crate::{integrate::Integrator, nn::cpu::ModelParams, runtime::StepSettings};

/// Units per cube (workgroup) of the kernels.
const CUBE_UNITS: u32 = 64;

/// Most rows one cube of the step kernel takes. (16 compiled to shaders that took lavapipe
/// four times as long to build — the row loops are unrolled — and was not measured on a GPU.)
const MAX_TILE_ROWS: usize = 8;

/// Rows per cube: as many as fit three quarters of the device's workgroup memory (at most
/// [`MAX_TILE_ROWS`], at least 1). Every weight a unit loads serves every row of its tile,
/// so larger tiles load the weights fewer times; WebGPU guarantees 16 KiB, which holds 8
/// rows of a 3×100 network.
fn tile_rows(s: &NetShape, shared_bytes: usize) -> u32 {
    // The cube's model table, then per row: acts, z̃, SVD coefficients of every layer
    // slot, pre-products, ∇H and five state vectors, and a flag; a GENERIC model's ∇E,
    // ∇S, dense activations, A and C besides.
    let table = 4 * s.table_len();
    let generic = if s.is_generic() {
        2 * s.n + 2 * s.dense_width + 2 * s.assembly * s.assembly
    } else {
        0
    };
    let per_row = 4
        * (s.n
            + s.layers * s.width
            + s.d_latent
            + 1
            + (s.nets * s.layers + 1) * s.max_rank
            + 6 * s.n
            + generic)
        + 8;
    ((shared_bytes * 3 / 4).saturating_sub(table) / per_row).clamp(1, MAX_TILE_ROWS) as u32
}

/// What the GPU path did, for tests, benchmarks and the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Kernel launches (step and scatter).
    pub dispatches: u64,
    /// Host waits on the device (blocking reads). Zero for a game loop that only steps and
    /// polls.
    pub blocking_syncs: u64,
    /// Host→device writes (models, batches, scattered rows).
    pub uploads: u64,
    /// Asynchronous read-backs requested.
    pub readbacks: u64,
    /// Steps launched.
    pub steps: u64,
}

/// Why a batch cannot be stepped on the fused kernel.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GpuStepError {
    /// The model cannot be packed (an empty network, mismatched paired networks, weights
    /// past 32-bit offsets).
    #[error(transparent)]
    Pack(#[from] PackError),
    /// An integrator the kernel does not implement for this model: Euler, RK4 and implicit
    /// midpoint for every Hamiltonian network, symplectic Euler, Verlet and Yoshida for
    /// separable ones, the discrete gradient for GENERIC ones.
    #[error(
        "the fused GPU kernel has no {0:?} step for this model (Euler, RK4, implicit midpoint; symplectic Euler, Verlet, Yoshida for separable H; discrete gradient for GENERIC models)"
    )]
    Integrator(Integrator),
    /// A non-positive or non-finite tick.
    #[error("bad time step {0}")]
    BadStep(f64),
    /// Batch and model disagree.
    #[error("{what}: the batch has {got}, the model expects {expected}")]
    Shape {
        /// Which width.
        what: &'static str,
        /// The batch's.
        got: usize,
        /// The model's.
        expected: usize,
    },
    /// The device failed a read.
    #[error("GPU read-back failed: {0}")]
    Read(String),
}

/// A packed model on the device, or a group of models of one shape
/// ([`FusedStepper::upload_models`]) that one dispatch steps together.
#[derive(Clone)]
pub struct DeviceModel {
    weights: Handle,
    meta: Handle,
    shape: NetShape,
    models: usize,
}

impl DeviceModel {
    /// The network's shape.
    pub fn shape(&self) -> NetShape {
        self.shape
    }

    /// Models in it (1 unless uploaded as a group).
    pub fn models(&self) -> usize {
        self.models
    }
}

/// One model's rows of a batch ([`FusedStepper::upload_parts`]).
#[derive(Clone, Copy, Debug)]
pub struct BatchPart<'a> {
    /// The model, by its place in the group the batch is stepped with.
    pub model: usize,
    /// States `[rows·n]`.
    pub states: &'a [f32],
    /// Latents `[rows·d_z]`.
    pub latents: &'a [f32],
}

type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<cubecl::bytes::Bytes>, String>> + Send>>;

/// A batch's results, read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readback {
    /// States `[rows·n]` after the last step launched before the request.
    pub states: Vec<f32>,
    /// H at those states `[rows]` (E for a GENERIC model).
    pub energy: Vec<f32>,
    /// S at those states `[rows]` (GENERIC models; empty for Hamiltonian batches).
    pub entropy: Vec<f32>,
    /// ∇E at those states `[rows·n]` (GENERIC models; empty for Hamiltonian batches).
    pub energy_grad: Vec<f32>,
    /// Per-row flags of that step (`kernel::FLAG_*`).
    pub flags: Vec<u32>,
}

/// A batch resident on the device.
pub struct DeviceBatch {
    rows: usize,
    n: usize,
    d_latent: usize,
    /// Rows per cube the batch was laid out for, and each cube's table start.
    tile: usize,
    cube_table: Handle,
    /// Models the parts name (the largest index + 1).
    models: usize,
    /// Each part's rows.
    parts: Vec<Range<usize>>,
    states: Handle,
    latents: Handle,
    energy: Handle,
    /// S per row (GENERIC batches; one unused element otherwise).
    entropy: Handle,
    /// ∇E per row (GENERIC batches; one unused element otherwise).
    energy_grad: Handle,
    generic: bool,
    flags: Handle,
    /// The read-back in flight (a mutex only to make the batch `Sync`; never contended).
    pending: Option<std::sync::Mutex<ReadFuture>>,
}

impl Drop for DeviceBatch {
    /// A read-back still in flight is finished before the batch goes: its staging buffer is
    /// mapped until the copy is read, and the runtime's pool would hand it out again still
    /// mapped (wgpu then refuses the next submit that copies into it). Only a batch dropped
    /// within a tick of its last request waits, for that one copy.
    fn drop(&mut self) {
        self.finish_pending();
    }
}

impl DeviceBatch {
    /// Waits for the read-back in flight, if any, and discards it.
    fn finish_pending(&mut self) {
        if let Some(future) = self.pending.take() {
            let future = future
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            drop(cubecl::future::block_on(future));
        }
    }

    /// Rows, the padding between parts included.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The rows of each part, in upload order: its bodies' places in the states, energies
    /// and flags read back and in [`FusedStepper::write_states`]. A part after the first
    /// starts on a cube boundary, so the rows between parts are padding (zero states,
    /// stepped and ignored).
    pub fn parts(&self) -> &[Range<usize>] {
        &self.parts
    }

    /// The buffers a read-back copies, in [`decode`]'s order: states, energies, flags, and
    /// the entropies and energy gradients of a GENERIC batch.
    fn results(&self) -> Vec<Handle> {
        let mut handles = vec![self.states.clone(), self.energy.clone(), self.flags.clone()];
        if self.generic {
            handles.push(self.entropy.clone());
            handles.push(self.energy_grad.clone());
        }
        handles
    }

    /// Whether a read-back is in flight.
    pub fn reading(&self) -> bool {
        self.pending.is_some()
    }
}

/// Launches the fused kernel on one device. See the module docs.
pub struct FusedStepper {
    client: ComputeClient<WgpuRuntime>,
    counters: GpuCounters,
}

fn f32_handle(client: &ComputeClient<WgpuRuntime>, values: &[f32]) -> Handle {
    // A zero-length buffer is not a valid binding: keep one element.
    let values: &[f32] = if values.is_empty() { &[0.0] } else { values };
    client.create_from_slice(f32::as_bytes(values))
}

fn u32_handle(client: &ComputeClient<WgpuRuntime>, values: &[u32]) -> Handle {
    let values: &[u32] = if values.is_empty() { &[0] } else { values };
    client.create_from_slice(u32::as_bytes(values))
}

impl FusedStepper {
    /// A stepper on `device`.
    pub fn new(device: &WgpuDevice) -> Self {
        Self {
            client: WgpuRuntime::client(device),
            counters: GpuCounters::default(),
        }
    }

    /// What was launched, uploaded and waited for so far.
    pub fn counters(&self) -> GpuCounters {
        self.counters
    }

    /// Packs and uploads a model (again, for a hot-reloaded one: the returned handle
    /// replaces the old one).
    ///
    /// # Errors
    /// [`GpuStepError::Pack`] for models the kernel does not fuse.
    pub fn upload_model(&mut self, params: &ModelParams) -> Result<DeviceModel, GpuStepError> {
        self.upload_models(&[params])
    }

    /// Packs and uploads models of one network shape as a group ([`PackedNet::group`]):
    /// a batch of [`BatchPart`]s of any of them steps in one dispatch.
    ///
    /// # Errors
    /// [`GpuStepError::Pack`]: a model the kernel does not fuse, or one whose shape
    /// differs from the first's ([`PackError::GroupShape`]).
    pub fn upload_models(&mut self, params: &[&ModelParams]) -> Result<DeviceModel, GpuStepError> {
        let nets = params
            .iter()
            .map(|p| PackedNet::from_params(p))
            .collect::<Result<Vec<_>, _>>()?;
        let packed = PackedNet::group(&nets)?;
        self.counters.uploads += 2;
        Ok(DeviceModel {
            weights: f32_handle(&self.client, &packed.weights),
            meta: u32_handle(&self.client, &packed.meta),
            shape: packed.shape,
            models: packed.models(),
        })
    }

    /// Uploads a batch of one model's rows: states `[rows·n]`, latents `[rows·d_z]`.
    ///
    /// # Errors
    /// [`GpuStepError::Shape`] when the lengths do not split into rows.
    pub fn upload_batch(
        &mut self,
        model: &DeviceModel,
        states: &[f32],
        latents: &[f32],
    ) -> Result<DeviceBatch, GpuStepError> {
        self.upload_parts(
            model,
            &[BatchPart {
                model: 0,
                states,
                latents,
            }],
        )
    }

    /// Uploads a batch of several models' rows for a group `model`
    /// ([`FusedStepper::upload_models`]): each part starts on a cube boundary, so every
    /// cube steps rows of one model with that model's weights ([`DeviceBatch::parts`]).
    ///
    /// # Errors
    /// [`GpuStepError::Shape`] when a part's lengths do not split into rows or it names a
    /// model the group lacks.
    pub fn upload_parts(
        &mut self,
        model: &DeviceModel,
        parts: &[BatchPart<'_>],
    ) -> Result<DeviceBatch, GpuStepError> {
        let s = model.shape;
        let (n, dz) = (s.n, s.d_latent);
        let tile = tile_rows(&s, self.client.properties().hardware.max_shared_memory_size) as usize;
        let table = s.table_len();
        let (mut states, mut latents, mut cube_table) = (Vec::new(), Vec::new(), Vec::new());
        let mut ranges = Vec::with_capacity(parts.len());
        for part in parts {
            let rows = part.states.len() / n.max(1);
            if part.states.len() != rows * n {
                return Err(GpuStepError::Shape {
                    what: "state values",
                    got: part.states.len(),
                    expected: rows * n,
                });
            }
            if part.latents.len() != rows * dz {
                return Err(GpuStepError::Shape {
                    what: "latent values",
                    got: part.latents.len(),
                    expected: rows * dz,
                });
            }
            if part.model >= model.models {
                return Err(GpuStepError::Shape {
                    what: "model index of a part",
                    got: part.model,
                    expected: model.models,
                });
            }
            // Pad the previous part to a whole cube.
            let start = (states.len() / n.max(1)).next_multiple_of(tile);
            states.resize(start * n, 0.0);
            latents.resize(start * dz, 0.0);
            states.extend_from_slice(part.states);
            latents.extend_from_slice(part.latents);
            let end = start + rows;
            cube_table.resize(end.div_ceil(tile), (part.model * table) as u32);
            ranges.push(start..end);
        }
        let rows = states.len() / n.max(1);
        self.counters.uploads += 3;
        Ok(DeviceBatch {
            rows,
            n,
            d_latent: dz,
            tile,
            cube_table: u32_handle(&self.client, &cube_table),
            models: parts.iter().map(|p| p.model + 1).max().unwrap_or(1),
            parts: ranges,
            states: f32_handle(&self.client, &states),
            latents: f32_handle(&self.client, &latents),
            energy: f32_handle(&self.client, &vec![0.0; rows]),
            entropy: f32_handle(
                &self.client,
                &vec![0.0; if s.is_generic() { rows } else { 1 }],
            ),
            energy_grad: f32_handle(
                &self.client,
                &vec![0.0; if s.is_generic() { rows * n } else { 1 }],
            ),
            generic: s.is_generic(),
            flags: u32_handle(&self.client, &vec![0; rows]),
            pending: None,
        })
    }

    fn scatter(&mut self, target: &Handle, len: usize, width: usize, rows: &[u32], values: &[f32]) {
        if rows.is_empty() {
            return;
        }
        assert_eq!(
            values.len(),
            rows.len() * width,
            "one row of values per index"
        );
        let index = u32_handle(&self.client, rows);
        let values_h = f32_handle(&self.client, values);
        let count = rows.len() as u32;
        self.counters.uploads += 1;
        self.counters.dispatches += 1;
        // SAFETY: the lengths are the buffers' own; the kernel bounds-checks `count`.
        #[expect(unsafe_code, reason = "CubeCL's raw buffer arguments")]
        unsafe {
            kernel::scatter_rows::launch_unchecked::<WgpuRuntime>(
                &self.client,
                CubeCount::Static(count.div_ceil(CUBE_UNITS), 1, 1),
                CubeDim::new_1d(CUBE_UNITS),
                ArrayArg::from_raw_parts(target.clone(), len),
                ArrayArg::from_raw_parts(index, rows.len()),
                ArrayArg::from_raw_parts(values_h, values.len()),
                count,
                width,
            );
        }
    }

    /// Writes new states for some rows (`rows[i]`'s state is `states[i·n..(i+1)·n]`): one
    /// small upload and one scatter launch, the rest of the batch stays where it is.
    pub fn write_states(&mut self, batch: &DeviceBatch, rows: &[u32], states: &[f32]) {
        let handle = batch.states.clone();
        self.scatter(&handle, batch.rows * batch.n, batch.n, rows, states);
    }

    /// Writes new latent codes for some rows.
    pub fn write_latents(&mut self, batch: &DeviceBatch, rows: &[u32], latents: &[f32]) {
        let handle = batch.latents.clone();
        let width = batch.d_latent;
        self.scatter(&handle, batch.rows * width, width, rows, latents);
    }

    /// Launches one tick of `dt` seconds (in [`StepSettings::substeps`] substeps) for every
    /// row: returns at once, nothing is read back.
    ///
    /// # Errors
    /// [`GpuStepError::Integrator`] for an integrator the kernel lacks ([`fuses`]),
    /// [`GpuStepError::BadStep`], [`GpuStepError::Shape`].
    pub fn step(
        &mut self,
        model: &DeviceModel,
        batch: &DeviceBatch,
        method: Integrator,
        dt: f64,
        settings: &StepSettings,
    ) -> Result<(), GpuStepError> {
        let scheme =
            scheme(Kind::of(&model.shape), method).ok_or(GpuStepError::Integrator(method))?;
        if !(dt > 0.0 && dt.is_finite()) {
            return Err(GpuStepError::BadStep(dt));
        }
        let s = model.shape;
        if batch.n != s.n || batch.d_latent != s.d_latent {
            return Err(GpuStepError::Shape {
                what: "state and latent widths",
                got: batch.n * 1000 + batch.d_latent,
                expected: s.n * 1000 + s.d_latent,
            });
        }
        if batch.rows == 0 {
            return Ok(());
        }
        let substeps = settings.substeps(dt);
        let h = (dt / substeps as f64) as f32;
        let rows = batch.rows as u32;
        let (tolerance, max_iter) = if scheme == DISCRETE_GRADIENT {
            let dg = &settings.discrete_gradient;
            (dg.tolerance, dg.max_iterations)
        } else {
            (
                settings.midpoint.tolerance,
                settings.midpoint.max_iterations,
            )
        };
        let tile = tile_rows(&s, self.client.properties().hardware.max_shared_memory_size);
        if tile as usize != batch.tile || batch.models > model.models {
            return Err(GpuStepError::Shape {
                what: "layout (the batch was uploaded for another network shape or group)",
                got: batch.tile * 1000 + batch.models,
                expected: tile as usize * 1000 + model.models,
            });
        }
        self.counters.dispatches += 1;
        self.counters.steps += 1;
        // SAFETY: every length is the buffer's own; the kernel bounds-checks `rows`.
        #[expect(unsafe_code, reason = "CubeCL's raw buffer arguments")]
        unsafe {
            kernel::step_batch::launch_unchecked::<WgpuRuntime>(
                &self.client,
                CubeCount::Static(rows.div_ceil(tile), 1, 1),
                CubeDim::new_1d(CUBE_UNITS),
                ArrayArg::from_raw_parts(model.weights.clone(), model_len(&model.weights)),
                ArrayArg::from_raw_parts(model.meta.clone(), model_len(&model.meta)),
                ArrayArg::from_raw_parts(batch.cube_table.clone(), model_len(&batch.cube_table)),
                ArrayArg::from_raw_parts(batch.states.clone(), batch.rows * batch.n),
                ArrayArg::from_raw_parts(
                    batch.latents.clone(),
                    (batch.rows * batch.d_latent).max(1),
                ),
                ArrayArg::from_raw_parts(batch.energy.clone(), batch.rows),
                ArrayArg::from_raw_parts(batch.entropy.clone(), model_len(&batch.entropy)),
                ArrayArg::from_raw_parts(batch.energy_grad.clone(), model_len(&batch.energy_grad)),
                ArrayArg::from_raw_parts(batch.flags.clone(), batch.rows),
                rows,
                h,
                substeps as u32,
                tolerance as f32,
                kernel::Shape {
                    n: s.n,
                    nets: s.nets,
                    layers: s.layers,
                    width: s.width,
                    method: s.method,
                    dz: s.d_latent,
                    rmax: s.max_rank,
                    k: s.assembly,
                    dense_layers: s.dense_layers,
                    dense_width: s.dense_width,
                    scheme,
                    max_iter: max_iter as u32,
                    tile: tile as usize,
                    units: CUBE_UNITS as usize,
                },
            );
        }
        Ok(())
    }

    /// Queues a copy of the batch's states, energies and flags behind the launches so far;
    /// [`FusedStepper::poll_readback`] returns it once the device has finished. A request
    /// while one is in flight is ignored (the earlier one comes back first).
    pub fn request_readback(&mut self, batch: &mut DeviceBatch) {
        if batch.pending.is_some() {
            return;
        }
        self.counters.readbacks += 1;
        let client = self.client.clone();
        let handles = batch.results();
        let mut future: ReadFuture = Box::pin(async move {
            client
                .read_async(handles)
                .await
                .map_err(|e| format!("{e:?}"))
        });
        // The first poll runs `read_async` up to its first wait: the copy is queued now,
        // behind the launches so far, not when the host next looks.
        let mut cx = Context::from_waker(Waker::noop());
        batch.pending = Some(std::sync::Mutex::new(match future.as_mut().poll(&mut cx) {
            Poll::Pending => future,
            Poll::Ready(result) => Box::pin(async move { result }),
        }));
    }

    /// The read-back requested earlier, if the device has delivered it; never waits.
    ///
    /// # Errors
    /// [`GpuStepError::Read`] when the device failed the copy.
    pub fn poll_readback(
        &mut self,
        batch: &mut DeviceBatch,
    ) -> Result<Option<Readback>, GpuStepError> {
        let Some(future) = batch.pending.as_mut() else {
            return Ok(None);
        };
        let future = future
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cx = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Pending => Ok(None),
            Poll::Ready(result) => {
                batch.pending = None;
                decode(batch, result).map(Some)
            }
        }
    }

    /// Waits for the device and reads the batch back: a blocking sync, counted in
    /// [`GpuCounters::blocking_syncs`] (tests and benchmarks; a game polls instead).
    ///
    /// # Errors
    /// [`GpuStepError::Read`].
    pub fn read_blocking(&mut self, batch: &mut DeviceBatch) -> Result<Readback, GpuStepError> {
        self.counters.blocking_syncs += 1;
        // Drain the earlier request first so the answer is the latest state.
        batch.finish_pending();
        self.counters.readbacks += 1;
        let result = cubecl::future::block_on(self.client.read_async(batch.results()))
            .map_err(|e| format!("{e:?}"));
        decode(batch, result)
    }
}

/// Whether the fused kernel steps a model of `params` with `method`: Euler, RK4 and
/// implicit midpoint for every Hamiltonian network; symplectic Euler, Verlet and Yoshida
/// for a separable one (they need the split H = T(p) + V(q)); the discrete gradient for a
/// GENERIC model.
pub fn fuses(params: &ModelParams, method: Integrator) -> bool {
    let kind = match params {
        ModelParams::Hnn(_) => Kind::General,
        ModelParams::Separable { .. } => Kind::Separable,
        ModelParams::Generic(_) => Kind::Generic,
    };
    scheme(kind, method).is_some()
}

/// What the kernel steps: which integrators apply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// H(q, p; z).
    General,
    /// T(p; z) + V(q; z).
    Separable,
    /// E, S, L, M.
    Generic,
}

impl Kind {
    fn of(shape: &NetShape) -> Self {
        if shape.is_generic() {
            Self::Generic
        } else if shape.is_separable() {
            Self::Separable
        } else {
            Self::General
        }
    }
}

/// The kernel's code for `method` on a model of `kind` (see [`fuses`]).
fn scheme(kind: Kind, method: Integrator) -> Option<u32> {
    let separable = kind == Kind::Separable;
    match (kind, method) {
        (Kind::Generic, Integrator::DiscreteGradient) => Some(DISCRETE_GRADIENT),
        (Kind::Generic, _) => None,
        (_, Integrator::Euler) => Some(EULER),
        (_, Integrator::Rk4) => Some(RK4),
        (_, Integrator::Midpoint) => Some(MIDPOINT),
        (_, Integrator::SymplecticEuler) if separable => Some(SYMPLECTIC_EULER),
        (_, Integrator::Verlet) if separable => Some(VERLET),
        (_, Integrator::Yoshida4) if separable => Some(YOSHIDA4),
        _ => None,
    }
}

fn model_len(h: &Handle) -> usize {
    (h.size_in_used() as usize / 4).max(1)
}

fn decode(
    batch: &DeviceBatch,
    result: Result<Vec<cubecl::bytes::Bytes>, String>,
) -> Result<Readback, GpuStepError> {
    let bytes = result.map_err(GpuStepError::Read)?;
    let (states, energy, flags, generic) = match bytes.as_slice() {
        [states, energy, flags] => (states, energy, flags, None),
        [states, energy, flags, entropy, grad] => (states, energy, flags, Some((entropy, grad))),
        _ => return Err(GpuStepError::Read(format!("{} buffers", bytes.len()))),
    };
    let take_f32 = |b: &[u8], len: usize| f32::from_bytes(b)[..len].to_vec();
    let (rows, n) = (batch.rows, batch.n);
    Ok(Readback {
        states: take_f32(states, rows * n),
        energy: take_f32(energy, rows),
        entropy: generic.map_or_else(Vec::new, |(s, _)| take_f32(s, rows)),
        energy_grad: generic.map_or_else(Vec::new, |(_, g)| take_f32(g, rows * n)),
        flags: u32::from_bytes(flags)[..batch.rows].to_vec(),
    })
}
