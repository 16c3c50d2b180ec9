//! [`DynamicsPlugin`]: body checks, batched stepping of every population, and energy
//! bookkeeping — ECS data mapped to [`noether::runtime`] and back.

use std::{collections::HashMap, time::Instant};

use bevy::{
    app::{App, Plugin},
    asset::{AssetId, AssetServer, Assets, LoadState},
    ecs::{intern::Interned, schedule::ScheduleLabel},
    log::{info, warn},
    prelude::*,
};
use noether::{
    integrate::Integrator,
    nn::gpu::GpuStepError,
    runtime::{
        EnergySample, StepHistory, StepSettings, advance_isolating, measure, resolve, temperatures,
    },
};

use super::{
    BodyEnergy, BodyIntegrator, FrozenBody, HiddenTruth, InvalidBody, LatentCode, NoetherBody,
    PhaseState, PreviousState, StepMemory,
    backend::{ActiveBackend, GpuBatch, GpuStepper, GpuTick, NoetherBackend, standalone_gpu},
};
use crate::{
    model::NoetherModel,
    schedule::{NoetherSystems, Simulation},
};

/// The dynamics systems: `Check` in [`NoetherSystems::Prepare`] (after scenes and
/// adaptation have written this tick's latents), `Step` in [`NoetherSystems::Step`].
#[derive(SystemSet, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DynamicsSystems {
    /// Bodies are checked against their models; empty latents become the mean.
    Check,
    /// Every batch is stepped.
    Step,
}

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
    /// Bodies not stepped because they do not fit their model ([`InvalidBody`]).
    pub invalid: usize,
    /// Bodies held at their last finite state ([`FrozenBody`]).
    pub frozen: usize,
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

/// Energies (and a GENERIC body's entropy and temperatures) the GPU step computed this tick
/// for the bodies it stepped (NaN energy: measure on the CPU), and the bodies stepped on the device without a read-back this tick (their state
/// did not change, so neither did their energy).
#[derive(Resource, Default)]
struct DeviceEnergies {
    arrived: HashMap<Entity, EnergySample>,
    unchanged: std::collections::HashSet<Entity>,
}

/// How the plugin steps batches (substeps, solver tolerances): see [`StepSettings`].
#[derive(Resource, Clone, Copy, Debug, Default, PartialEq, Deref, DerefMut)]
pub struct DynamicsSettings(pub StepSettings);

/// What is wrong with a body, if anything, against its loaded model.
fn misfit(state: &[f32], latent: &[f32], model: &NoetherModel) -> Option<String> {
    let (n, dz) = (model.dim(), model.d_latent());
    if state.len() != n {
        Some(format!(
            "its PhaseState has {} values; {} states have {n} ({})",
            state.len(),
            model.family(),
            model.family().spec().state.join(", ")
        ))
    } else if latent.len() != dz {
        Some(format!(
            "its LatentCode has {} values; the model's latent has {dz}",
            latent.len()
        ))
    } else {
        None
    }
}

type CheckQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        Ref<'static, PhaseState>,
        &'static mut LatentCode,
        Option<&'static InvalidBody>,
        Option<&'static FrozenBody>,
    ),
>;

/// Fills empty latents with the model's mean once it has loaded; marks bodies that do not
/// fit their model (or whose model failed to load) with [`InvalidBody`], warning once, and
/// clears the mark when they are fixed; freezes bodies spawned with a non-finite state, and
/// thaws a frozen body whose state the game has set.
fn check_bodies(
    mut commands: Commands,
    models: Res<Assets<NoetherModel>>,
    server: Option<Res<AssetServer>>,
    sim: Res<Time<Simulation>>,
    mut bodies: CheckQuery,
) {
    for (entity, body, state, mut latent, invalid, frozen) in &mut bodies {
        let finite = state.iter().all(|v| v.is_finite());
        match frozen {
            None if !finite => {
                let reason = format!(
                    "its state {:?} is not finite at tick {}",
                    state.0,
                    sim.context().steps()
                );
                warn!("noether: body {entity} is frozen: {reason}");
                commands.entity(entity).insert(FrozenBody { reason });
            }
            Some(_) if finite && state.is_changed() => {
                info!("noether: body {entity} has a new finite state and steps again");
                commands.entity(entity).remove::<FrozenBody>();
            }
            _ => {}
        }
        let reason = match models.get(&body.model) {
            Some(model) => {
                if latent.is_empty() {
                    latent.0 = model.mean_latent();
                }
                misfit(&state, &latent, model)
            }
            None => match server.as_ref().map(|s| s.load_state(body.model.id())) {
                Some(LoadState::Failed(e)) => Some(format!(
                    "its model failed to load: {}",
                    crate::scene::load_error_message(&e)
                )),
                _ => continue,
            },
        };
        match (reason, invalid) {
            (Some(reason), Some(old)) if old.reason == reason => {}
            (Some(reason), _) => {
                warn!("noether: body {entity} is not stepped: {reason}");
                commands.entity(entity).insert(InvalidBody { reason });
            }
            (None, Some(_)) => {
                info!("noether: body {entity} fits its model again and steps");
                commands.entity(entity).remove::<InvalidBody>();
            }
            (None, None) => {}
        }
    }
}

/// Keeps [`PreviousState`] (where a view asked for it) at the state before this tick's step.
fn remember_previous(mut bodies: Query<(&PhaseState, &mut PreviousState), With<NoetherBody>>) {
    for (state, mut previous) in &mut bodies {
        if previous.0 != state.0 {
            previous.0.clone_from(&state.0);
        }
    }
}

type StepQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static mut PhaseState,
        Ref<'static, LatentCode>,
        &'static BodyIntegrator,
        &'static mut StepMemory,
    ),
    (Without<InvalidBody>, Without<FrozenBody>),
>;

/// One (model, integrator) batch of [`step_bodies`]: its bodies' rows as the ECS holds them.
struct Gathered {
    id: AssetId<NoetherModel>,
    method: Integrator,
    entities: Vec<Entity>,
    x: Vec<f32>,
    z: Vec<f32>,
    /// Per body: changed outside the stepper since its last tick.
    edited: Vec<bool>,
    history: StepHistory,
    on_gpu: bool,
}

impl Gathered {
    /// The batch as the GPU stepper takes it.
    fn view<'a>(&'a self, model: &'a NoetherModel) -> GpuBatch<'a> {
        GpuBatch {
            id: self.id,
            model,
            method: self.method,
            entities: &self.entities,
            x: &self.x,
            z: &self.z,
            edited: &self.edited,
        }
    }
}

/// Groups bodies by (model, resolved method), steps each group as one batch and scatters
/// back: on the fused GPU kernel for Hamiltonian batches (general or separable,
/// [`GpuStepper::supports`]) when [`ActiveBackend::gpu`] and the batch's measurement chose
/// it (states resident on the device, results arriving a tick or more later; the batches of
/// models of one kernel shape and integrator share one launch; GENERIC models by the
/// discrete gradient), on the CPU kernel otherwise.
#[expect(
    clippy::too_many_arguments,
    reason = "a system: its parameters are the resources and queries it reads"
)]
fn step_bodies(
    sim: Res<Time<Simulation>>,
    models: Res<Assets<NoetherModel>>,
    settings: Res<DynamicsSettings>,
    mut gpu: Option<ResMut<GpuStepper>>,
    mut active_mut: ResMut<ActiveBackend>,
    mut device_energies: ResMut<DeviceEnergies>,
    mut bodies: StepQuery,
    invalid: Query<(), (With<NoetherBody>, With<InvalidBody>)>,
    frozen: Query<(), (With<NoetherBody>, With<FrozenBody>)>,
    mut commands: Commands,
    mut diag: ResMut<StepDiagnostics>,
) {
    let dt = sim.context().tick();
    diag.invalid = invalid.iter().count();
    diag.frozen = frozen.iter().count();
    if dt <= 0.0 {
        diag.bodies = 0;
        return;
    }
    let started = Instant::now();
    device_energies.arrived.clear();
    device_energies.unchanged.clear();
    let mut groups: HashMap<(AssetId<NoetherModel>, Integrator), Vec<Entity>> = HashMap::new();
    for (entity, body, state, latent, method, _) in &bodies {
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        // Checked in `check_bodies`; a body edited since then waits for the next check.
        if misfit(state, &latent.0, model).is_some() {
            continue;
        }
        let method = resolve(method.0, model.config.architecture, model.cpu.is_generic());
        groups
            .entry((body.model.id(), method))
            .or_default()
            .push(entity);
    }
    let batches = groups.len();
    // Gather each batch's rows and decide where it steps.
    let mut gathered = Vec::with_capacity(batches);
    for ((id, method), entities) in groups {
        let model = models.get(id).expect("checked above");
        let n = model.dim();
        let mut batch = Gathered {
            id,
            method,
            x: Vec::with_capacity(entities.len() * n),
            z: Vec::with_capacity(entities.len() * model.d_latent()),
            edited: Vec::with_capacity(entities.len()),
            history: StepHistory::new(entities.len(), n),
            entities,
            on_gpu: false,
        };
        for (k, &e) in batch.entities.iter().enumerate() {
            let (_, _, state, latent, _, memory) = bodies.get_mut(e).expect("grouped above");
            batch.x.extend_from_slice(&state.0);
            batch.z.extend_from_slice(&latent.0);
            // Changes by this system (the scatter below) do not count: only outside edits.
            let outside = state.is_changed() || latent.is_changed();
            batch.edited.push(outside);
            if !outside && memory.len() == StepHistory::width(n) {
                batch.history.set_row(k, &memory.0);
            }
        }
        batch.on_gpu = match gpu.as_deref_mut() {
            Some(g) if active_mut.gpu && GpuStepper::supports(model, method) => {
                match g.choose(&batch.view(model), dt, &settings) {
                    Ok((chosen, measured)) => {
                        if let Some(choice) = measured {
                            active_mut.choices.retain(|c| c.batch != choice.batch);
                            active_mut.choices.push(choice);
                        }
                        chosen
                    }
                    Err(err) => {
                        warn!("noether: GPU measurement failed, stepping on the CPU: {err}");
                        false
                    }
                }
            }
            _ => false,
        };
        gathered.push(batch);
    }
    // Every GPU batch at once: models of one kernel shape share a launch.
    let mut gpu_ticks: Vec<Option<Result<GpuTick, GpuStepError>>> =
        gathered.iter().map(|_| None).collect();
    if let Some(g) = gpu.as_deref_mut() {
        let on_gpu: Vec<usize> = (0..gathered.len())
            .filter(|&k| gathered[k].on_gpu)
            .collect();
        let views: Vec<GpuBatch<'_>> = on_gpu
            .iter()
            .map(|&k| gathered[k].view(models.get(gathered[k].id).expect("checked above")))
            .collect();
        for (k, tick) in on_gpu.into_iter().zip(g.step(&views, dt, &settings)) {
            gpu_ticks[k] = Some(tick);
        }
    }
    let mut count = 0;
    for (mut batch, tick) in gathered.into_iter().zip(gpu_ticks) {
        let model = models.get(batch.id).expect("checked above");
        let method = batch.method;
        let n = model.dim();
        let on_cpu = |batch: &mut Gathered| {
            advance_isolating(
                &model.cpu,
                method,
                &batch.x,
                &batch.z,
                dt,
                &settings,
                &mut batch.history,
            )
            .map(|(x1, r)| (Some(x1), r))
        };
        let result = match tick {
            Some(Ok(tick)) => {
                match &tick.energy {
                    Some(energy) => {
                        device_energies
                            .arrived
                            .extend(batch.entities.iter().enumerate().map(|(k, &e)| {
                                let sample = EnergySample {
                                    energy: energy[k],
                                    rest: f32::NAN,
                                    entropy: tick.entropy.as_ref().map_or(f32::NAN, |s| s[k]),
                                    temperatures: tick
                                        .energy_grad
                                        .as_ref()
                                        .map_or([f32::NAN; 2], |g| {
                                            temperatures(&g[k * n..(k + 1) * n])
                                        }),
                                };
                                (e, sample)
                            }))
                    }
                    None => device_energies
                        .unchanged
                        .extend(batch.entities.iter().copied()),
                }
                Ok((tick.states, tick.report))
            }
            Some(Err(err)) => {
                warn!("noether: a GPU batch failed, stepping it on the CPU: {err}");
                on_cpu(&mut batch)
            }
            None => on_cpu(&mut batch),
        };
        let entities = &batch.entities;
        match result {
            Ok((states, report)) => {
                diag.non_converged += report.retries;
                // GPU batches: nothing new until a read-back arrives (the bodies were
                // stepped on the device all the same).
                let x1 = states.unwrap_or(batch.x);
                for &k in &report.frozen {
                    let e = entities[k];
                    let reason = format!(
                        "its state became non-finite in tick {} ({method}); held at {:?}",
                        sim.context().steps(),
                        &x1[k * n..(k + 1) * n]
                    );
                    warn!("noether: body {e} is frozen: {reason}");
                    commands.entity(e).insert(FrozenBody { reason });
                }
                for (k, &e) in entities.iter().enumerate() {
                    let (_, _, mut state, _, _, mut memory) =
                        bodies.get_mut(e).expect("grouped above");
                    let row = &x1[k * n..(k + 1) * n];
                    if state.0 != row {
                        state.0.copy_from_slice(row);
                    }
                    // The CPU kernel's slopes (the GPU path keeps none: NaN rows).
                    memory.0.clear();
                    memory.0.extend_from_slice(batch.history.row(k));
                }
                count += entities.len() - report.frozen.len();
                diag.frozen += report.frozen.len();
            }
            Err(err) => {
                diag.non_converged += 1;
                warn!(
                    "noether: a batch of {} {} bodies was not stepped this tick: {err}",
                    entities.len(),
                    model.family()
                );
            }
        }
    }
    diag.bodies = count;
    diag.batches = batches;
    diag.step_ms = started.elapsed().as_secs_f64() * 1e3;
    diag.ticks += 1;
}

type EnergyQuery<'w, 's> = Query<
    'w,
    's,
    (
        Entity,
        &'static NoetherBody,
        &'static PhaseState,
        Ref<'static, LatentCode>,
        &'static mut BodyEnergy,
    ),
    (Without<InvalidBody>, Without<FrozenBody>),
>;

/// Measures [`BodyEnergy`] in one batched call per model ([`noether::runtime::measure`]).
/// A body whose latent code changed (adaptation, the inspector, game code) has different
/// learned physics from then on: its energy bookkeeping starts over from the new E₀.
fn update_energies(
    models: Res<Assets<NoetherModel>>,
    device: Res<DeviceEnergies>,
    mut bodies: EnergyQuery,
) {
    let mut groups: HashMap<AssetId<NoetherModel>, Vec<Entity>> = HashMap::new();
    // Bodies the GPU stepped need no CPU pass: H came with the read-back, or none arrived
    // and nothing moved.
    let mut from_device = std::collections::HashSet::new();
    for (entity, _, _, latent, mut energy) in &mut bodies {
        if latent.is_changed() && !latent.is_added() {
            energy.restart();
            continue;
        }
        if energy.initial.is_nan() {
            continue;
        }
        if device.unchanged.contains(&entity) {
            from_device.insert(entity);
        } else if let Some(&sample) = device.arrived.get(&entity)
            && !sample.energy.is_nan()
        {
            energy.record(sample);
            from_device.insert(entity);
        }
    }
    for (entity, body, state, latent, _) in &bodies {
        let Some(model) = models.get(&body.model) else {
            continue;
        };
        if !from_device.contains(&entity) && misfit(state, &latent, model).is_none() {
            groups.entry(body.model.id()).or_default().push(entity);
        }
    }
    for (id, entities) in groups {
        let model = models.get(id).expect("checked above");
        let (mut x, mut z, mut first) = (Vec::new(), Vec::new(), Vec::new());
        for &e in &entities {
            let (_, _, s, l, energy) = bodies.get(e).expect("grouped above");
            x.extend_from_slice(&s.0);
            z.extend_from_slice(&l.0);
            first.push(energy.initial.is_nan());
        }
        for (sample, &entity) in measure(&model.cpu, &x, &z, &first)
            .into_iter()
            .zip(&entities)
        {
            let (_, _, _, _, mut be) = bodies.get_mut(entity).expect("grouped above");
            be.record(sample);
        }
    }
}

/// Steps every [`NoetherBody`] in [`NoetherSystems::Step`] and keeps [`BodyEnergy`]
/// current in [`NoetherSystems::Writeback`].
pub struct DynamicsPlugin {
    /// The schedule of [`NoetherSystems`].
    pub schedule: Interned<dyn ScheduleLabel>,
    /// Which device steps the bodies (chosen once, when the app is finished).
    pub backend: NoetherBackend,
}

impl Plugin for DynamicsPlugin {
    fn build(&self, app: &mut App) {
        crate::model::init_model_assets(app);
        // The clock the systems read; it advances only with the schedule plugin.
        app.init_resource::<Time<Simulation>>();
        app.register_type::<NoetherBackend>()
            .register_type::<ActiveBackend>()
            .register_type::<NoetherBody>()
            .register_type::<PhaseState>()
            .register_type::<LatentCode>()
            .register_type::<BodyIntegrator>()
            .register_type::<HiddenTruth>()
            .register_type::<BodyEnergy>()
            .register_type::<InvalidBody>()
            .register_type::<FrozenBody>()
            .register_type::<PreviousState>()
            .register_type::<StepMemory>()
            .register_type::<StepDiagnostics>()
            .init_resource::<StepDiagnostics>()
            .init_resource::<DeviceEnergies>()
            .init_resource::<DynamicsSettings>()
            .init_resource::<ActiveBackend>()
            .configure_sets(
                self.schedule,
                (
                    DynamicsSystems::Check
                        .in_set(NoetherSystems::Prepare)
                        .after(crate::schedule::ClockSystems)
                        .after(crate::scene::SceneSystems::Spawn)
                        .after(crate::adapt::AdaptSystems::Apply),
                    DynamicsSystems::Step.in_set(NoetherSystems::Step),
                    EnergySystems.in_set(NoetherSystems::Writeback),
                ),
            )
            .add_systems(
                self.schedule,
                (
                    (check_bodies, remember_previous).in_set(DynamicsSystems::Check),
                    step_bodies.in_set(DynamicsSystems::Step),
                    update_energies.in_set(EnergySystems),
                ),
            );
    }

    /// Chooses the backend once the render app (if any) exists, and reports the choice.
    fn finish(&self, app: &mut App) {
        let wanted = app
            .world()
            .get_resource::<NoetherBackend>()
            .copied()
            .unwrap_or(self.backend);
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
            (NoetherBackend::Auto, Some((dev, name, true))) => Some((dev, name, true)),
            (NoetherBackend::Gpu | NoetherBackend::Measure, Some((dev, name, _))) => {
                Some((dev, name, wanted == NoetherBackend::Measure))
            }
            (NoetherBackend::Auto, _) => None,
            (NoetherBackend::Gpu | NoetherBackend::Measure, None) => {
                standalone_gpu().map(|(d, name)| {
                    (
                        d,
                        format!("{name}, burn-wgpu's own device"),
                        wanted == NoetherBackend::Measure,
                    )
                })
            }
        };
        let active = match chosen {
            Some((device, name, measure)) => {
                app.insert_resource(GpuStepper::new(&device, measure));
                ActiveBackend {
                    gpu: true,
                    description: if measure {
                        format!("GPU or CPU kernel per batch, measured: {name}")
                    } else {
                        format!("GPU: {name}")
                    },
                    choices: Vec::new(),
                }
            }
            None => {
                if wanted != NoetherBackend::Cpu && wanted != NoetherBackend::Auto {
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
