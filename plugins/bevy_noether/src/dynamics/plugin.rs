//! [`DynamicsPlugin`]: batched stepping of every population, and energy bookkeeping.

use std::{collections::HashMap, time::Instant};

use bevy::{
    app::{App, Plugin},
    asset::{AssetId, Assets},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    log::{info, warn},
    prelude::*,
};
use noether::{
    integrate::{
        DiscreteGradient, ImplicitMidpoint, ImplicitSolver, IntegrateError, euler_step, rk4_step,
        verlet_step, yoshida4_step,
    },
    nn::{Architecture, cpu::CpuFlow},
};

use super::{
    BodyEnergy, HiddenTruth, LatentCode, NoetherBody, PhaseState, StepMethod,
    backend::{ActiveBackend, GpuStepper, NoetherBackend, standalone_gpu},
};
use crate::{
    model::NoetherModel,
    schedule::{NoetherSystems, Simulation},
};

/// The energy bookkeeping system, inside [`NoetherSystems::Writeback`]: order readers of
/// [`BodyEnergy`] after it.
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnergySystems;

/// Counters and timings of the last step, for diagnostics and the inspector.
#[derive(Resource, Reflect, Clone, Debug, Default)]
#[reflect(Resource, Default, Debug)]
pub struct StepDiagnostics {
    /// Bodies stepped in the last tick.
    pub bodies: usize,
    /// Batches (model × method) in the last tick.
    pub batches: usize,
    /// Wall time of the last tick's stepping, milliseconds.
    pub step_ms: f64,
    /// Implicit solves that did not converge (the batch was re-solved by Newton, or left
    /// unchanged for that tick if Newton failed too), since startup.
    pub non_converged: u64,
    /// Ticks stepped since startup.
    pub ticks: u64,
}

/// Longest integrator substep, seconds: a tick longer than this (high speed, slow
/// frames) is split into equal substeps.
pub const MAX_SUBSTEP: f64 = 1.0 / 60.0;

/// The integrator a body will use.
fn resolve(method: StepMethod, model: &NoetherModel) -> StepMethod {
    match (method, model.config.architecture) {
        (StepMethod::Auto, Architecture::Generic { .. }) => StepMethod::DiscreteGradient,
        (StepMethod::Auto, Architecture::SeparableHnn) => StepMethod::Yoshida4,
        (StepMethod::Auto, Architecture::Hnn) => StepMethod::Midpoint,
        // Methods that do not apply to the model fall back to what does.
        (StepMethod::Verlet | StepMethod::Yoshida4, Architecture::Hnn) => StepMethod::Midpoint,
        (
            StepMethod::Verlet | StepMethod::Yoshida4 | StepMethod::Midpoint,
            Architecture::Generic { .. },
        ) => StepMethod::DiscreteGradient,
        (StepMethod::DiscreteGradient, Architecture::Hnn | Architecture::SeparableHnn) => {
            StepMethod::Midpoint
        }
        (m, _) => m,
    }
}

/// Advances a batch `x` `[B·n]` with latents `z` `[B·d_z]` by `dt` in `substeps` equal
/// substeps of `method` (already resolved). This is the function the runtime calls; tests
/// compare it with the core integrators directly.
///
/// # Errors
/// The integrator's, when an implicit solve fails even with Newton.
pub fn gather_and_step(
    model: &NoetherModel,
    method: StepMethod,
    x: Vec<f32>,
    z: &[f32],
    dt: f64,
    substeps: usize,
) -> Result<(Vec<f32>, u64), IntegrateError> {
    let flow = CpuFlow {
        model: &model.cpu,
        latents: z,
    };
    let h = dt / substeps as f64;
    let mut x = x;
    let mut retries = 0;
    let midpoint = ImplicitMidpoint::default()
        .with_tolerance(1e-6)
        .with_solver(ImplicitSolver::FixedPoint);
    for _ in 0..substeps {
        x = match method {
            StepMethod::Rk4 => rk4_step(&flow, &x, h),
            StepMethod::Euler => euler_step(&flow, &x, h),
            StepMethod::Verlet => verlet_step(&flow, &x, h),
            StepMethod::Yoshida4 => yoshida4_step(&flow, &x, h),
            StepMethod::Midpoint | StepMethod::Auto => {
                match midpoint.step_fixed_point(&flow, &x, h) {
                    Ok((x1, _)) => x1,
                    Err(_) => {
                        retries += 1;
                        midpoint
                            .with_solver(ImplicitSolver::Newton)
                            .step(&flow, &x, h)?
                            .0
                    }
                }
            }
            StepMethod::DiscreteGradient => DiscreteGradient::default().step(&flow, &x, h)?.0,
        };
    }
    Ok((x, retries))
}

type BodyQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static mut PhaseState,
        &'static LatentCode,
        &'static StepMethod,
    ),
>;

/// Groups bodies by (model, resolved method), steps each group as one batch (on the GPU
/// for Hamiltonian batches when [`ActiveBackend::gpu`]; GENERIC batches always take the
/// discrete-gradient step on the CPU kernel), scatters back.
fn step_bodies(
    sim: Res<Time<Simulation>>,
    models: Res<Assets<NoetherModel>>,
    active: Res<ActiveBackend>,
    mut gpu: Option<ResMut<GpuStepper>>,
    mut bodies: BodyQuery,
    mut diag: ResMut<StepDiagnostics>,
) {
    let dt = sim.context().tick;
    if dt <= 0.0 {
        diag.bodies = 0;
        return;
    }
    let started = Instant::now();
    let substeps = (dt / MAX_SUBSTEP).ceil().max(1.0) as usize;
    let mut groups: HashMap<(AssetId<NoetherModel>, StepMethod), Vec<Entity>> = HashMap::new();
    for (entity, body, state, latent, method) in &bodies {
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        if state.len() != model.dim() || latent.len() != model.config.d_latent {
            continue;
        }
        groups
            .entry((body.model.id(), resolve(*method, model)))
            .or_default()
            .push(entity);
    }
    let (mut count, batches) = (0, groups.len());
    for ((id, method), entities) in groups {
        let model = models.get(id).expect("checked above");
        let (n, dz) = (model.dim(), model.config.d_latent);
        let mut x = Vec::with_capacity(entities.len() * n);
        let mut z = Vec::with_capacity(entities.len() * dz);
        for &e in &entities {
            let (_, _, state, latent, _) = bodies.get(e).expect("grouped above");
            x.extend_from_slice(&state.0);
            z.extend_from_slice(&latent.0);
        }
        let on_gpu = active.gpu && method != StepMethod::DiscreteGradient;
        let result = match (on_gpu, gpu.as_deref_mut()) {
            (true, Some(g)) => g
                .step(id, model, method, &entities, x, z, dt, substeps)
                .map(|x1| (x1, 0)),
            _ => gather_and_step(model, method, x, &z, dt, substeps),
        };
        match result {
            Ok((x1, retries)) => {
                diag.non_converged += retries;
                for (k, &e) in entities.iter().enumerate() {
                    let (_, _, mut state, _, _) = bodies.get_mut(e).expect("grouped above");
                    state.0.copy_from_slice(&x1[k * n..(k + 1) * n]);
                }
                count += entities.len();
            }
            Err(err) => {
                diag.non_converged += 1;
                warn!(
                    "noether: a batch of {} {} bodies was not stepped this tick: {err}",
                    entities.len(),
                    model.config.family
                );
            }
        }
    }
    diag.bodies = count;
    diag.batches = batches;
    diag.step_ms = started.elapsed().as_secs_f64() * 1e3;
    diag.ticks += 1;
}

/// Recomputes [`BodyEnergy`] in one batched call per model. A body whose latent code
/// changed (adaptation, the inspector, game code) has different learned physics from then
/// on: its energy bookkeeping starts over from the new E₀.
fn update_energies(
    models: Res<Assets<NoetherModel>>,
    mut bodies: Query<(
        Entity,
        &NoetherBody,
        &PhaseState,
        Ref<LatentCode>,
        &mut BodyEnergy,
    )>,
) {
    let mut groups: HashMap<AssetId<NoetherModel>, Vec<Entity>> = HashMap::new();
    for (_, _, _, latent, mut energy) in &mut bodies {
        if latent.is_changed() && !latent.is_added() {
            *energy = BodyEnergy::default();
        }
    }
    for (entity, body, state, latent, _) in &bodies {
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        if state.len() == model.dim() && latent.len() == model.config.d_latent {
            groups.entry(body.model.id()).or_default().push(entity);
        }
    }
    for (id, entities) in groups {
        let model = models.get(id).expect("checked above");
        let (mut x, mut z) = (Vec::new(), Vec::new());
        for &e in &entities {
            let (_, _, s, l, _) = bodies.get(e).expect("grouped above");
            x.extend_from_slice(&s.0);
            z.extend_from_slice(&l.0);
        }
        let mut e = vec![0.0; entities.len()];
        model.cpu.energy(&x, &z, &mut e);
        let mut s = vec![f32::NAN; entities.len()];
        let has_entropy = model.cpu.entropy(&x, &z, &mut s);
        let n = model.dim();
        let mut grad = Vec::new();
        if has_entropy {
            grad = vec![0.0; x.len()];
            model.cpu.energy_grad(&x, &z, &mut grad);
        }
        for (k, &entity) in entities.iter().enumerate() {
            let (_, _, _, _, mut be) = bodies.get_mut(entity).expect("grouped above");
            if be.initial.is_nan() {
                be.initial = e[k];
                be.initial_entropy = s[k];
            } else if has_entropy {
                let change = s[k] - be.entropy;
                be.min_entropy_change = be.min_entropy_change.min(change);
            }
            be.energy = e[k];
            be.entropy = s[k];
            if has_entropy {
                // The entropy components follow (q, p): dno's S is x[2], tgc's S₁, S₂ are x[2], x[3].
                let g = &grad[k * n..(k + 1) * n];
                be.temperatures = [g[2], g.get(3).copied().unwrap_or(f32::NAN)];
            }
            let drift = be.drift();
            if drift.is_finite() {
                be.max_drift = be.max_drift.max(drift);
            }
        }
    }
}

/// Steps every [`NoetherBody`] in [`NoetherSystems::Step`] and keeps [`BodyEnergy`]
/// current in [`NoetherSystems::Writeback`].
pub struct DynamicsPlugin {
    /// The schedule of [`NoetherSystems`].
    pub schedule: Interned<dyn ScheduleLabel>,
}

impl Plugin for DynamicsPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        app.register_type::<NoetherBackend>()
            .register_type::<ActiveBackend>()
            .register_type::<NoetherBody>()
            .register_type::<PhaseState>()
            .register_type::<LatentCode>()
            .register_type::<StepMethod>()
            .register_type::<HiddenTruth>()
            .register_type::<BodyEnergy>()
            .register_type::<StepDiagnostics>()
            .init_resource::<StepDiagnostics>()
            .init_resource::<ActiveBackend>()
            .add_systems(self.schedule, step_bodies.in_set(NoetherSystems::Step))
            .configure_sets(
                self.schedule,
                EnergySystems.in_set(NoetherSystems::Writeback),
            )
            .add_systems(self.schedule, update_energies.in_set(EnergySystems));
    }

    /// Chooses the backend once the render app (if any) exists, and reports the choice.
    fn finish(&self, app: &mut App) {
        let wanted = app
            .world()
            .get_resource::<NoetherBackend>()
            .copied()
            .unwrap_or_default();
        let cpu = ActiveBackend::default();
        #[cfg(feature = "render")]
        let shared = if wanted == NoetherBackend::Cpu {
            None
        } else {
            super::render_device::share(app)
        };
        #[cfg(not(feature = "render"))]
        let shared: Option<(burn::backend::wgpu::WgpuDevice, String, bool)> = None;
        let chosen = match (wanted, shared) {
            (NoetherBackend::Cpu, _) => None,
            (NoetherBackend::Auto, Some((dev, name, true)))
            | (NoetherBackend::Gpu, Some((dev, name, _))) => Some((dev, name)),
            (NoetherBackend::Auto, _) => None,
            (NoetherBackend::Gpu, None) => {
                standalone_gpu().map(|(d, name)| (d, format!("{name}, burn-wgpu's own device")))
            }
        };
        let active = match chosen {
            Some((device, name)) => {
                app.insert_resource(GpuStepper::new(device));
                ActiveBackend {
                    gpu: true,
                    description: format!("GPU: {name}"),
                }
            }
            None => {
                if wanted == NoetherBackend::Gpu {
                    warn!(
                        "noether: a GPU backend was asked for but no adapter is usable; stepping on the CPU"
                    );
                }
                cpu
            }
        };
        info!("noether: dynamics step on the {}", active.description);
        app.insert_resource(active);
    }
}
