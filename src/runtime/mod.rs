//! The runtime: everything a game engine, a server or a plain loop needs to run learned
//! physics, with no engine in it. `bevy_noether` maps ECS data to these pieces and back;
//! another engine would do the same.
//!
//! | piece | what it does |
//! |---|---|
//! | [`LearnedModel`] | a trained model ready to step (config, host weights, CPU kernel) |
//! | [`resolve`], [`advance`], [`StepSettings`], [`StepHistory`] | batch stepping of every body of one model and method, on the CPU kernel or a burn backend: method resolution, substeps, the midpoint's warm start and Newton fallback |
//! | [`measure`], [`EnergyRecord`] | learned energy / entropy of a batch, and each body's drift record |
//! | [`SceneDescription`] | a `*.noether.ron` population scene, parsed and checked |
//! | [`plan_population`], [`fit_population`] | a population's bodies: parameters, states, positions, latents |
//! | [`AdaptState`], [`run_job`], [`TruthSimulator`] | online adaptation of observed bodies |
//! | [`BodyBatch`] | all of the above for one population in a plain loop |
//!
//! A plain loop (the `plain_loop` example of this crate does this with a shipped scene):
//!
//! ```no_run
//! use noether::runtime::{BodyBatch, LearnedModel, SceneDescription, build_population};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = std::fs::read_to_string("assets/scenes/oscillator_zoo.noether.ron")?;
//! let scene = SceneDescription::parse(&text, "oscillator_zoo.noether.ron")?;
//! let spec = &scene.populations[1];
//! let model = LearnedModel::load("assets/models/pendulum-svd5.model.ron".as_ref())?;
//! let bodies = build_population(spec, 1, &model, "oscillator_zoo.noether.ron")?;
//! let mut batch = BodyBatch::new(model, spec.integrator, &bodies)?;
//! for _ in 0..600 {
//!     batch.step(1.0 / 60.0)?;
//! }
//! println!("largest energy drift {:.2e}", batch.max_drift());
//! # Ok(())
//! # }
//! ```

mod adaptation;
mod batch;
mod energy;
mod history;
mod model;
mod population;
mod scene;

pub use adaptation::{
    AdaptEvent, AdaptPhase, AdaptState, AdaptationSettings, Applied, BodyResult, CarriedFit,
    DEFAULT_FIT_SUBSTEP, DEFAULT_WINDOW, FrameGate, HISTORY, Job, JobBody, JobResult,
    MAX_RETRY_BACKOFF, NOISE_MULTIPLE, NOISE_WINDOW, ObservationWindow, PushError, Start,
    TILE_BODIES, TruthSimulator, Verdict, amortised_start, noise_floor, review, run_job,
    waits_for_encoder,
};
pub use batch::{
    BatchFlow, MAX_SUBSTEP, StepReport, StepSettings, advance, advance_isolating,
    advance_with_history, resolve,
};
pub use energy::{EnergyRecord, EnergySample, RESOLUTION, measure, temperatures};
pub use history::StepHistory;
pub use model::LearnedModel;
pub use population::{BodyInit, build_population, fit_population, plan_population};
pub use scene::{
    Distribution, InitialState, LatentInit, Layout, MAX_COUNT, ObserveSpec, PopulationSpec,
    SceneDescription, SceneError,
};

use crate::integrate::{IntegrateError, Integrator};

/// Why a [`BodyBatch`] cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A body's state or latent has the wrong length for the model.
    #[error("body {body}: {what} has {got} values, the model needs {expected}")]
    Width {
        /// Index of the body.
        body: usize,
        /// `state` or `latent`.
        what: &'static str,
        /// Values given.
        got: usize,
        /// Values needed.
        expected: usize,
    },
}

/// The bodies of one population stepped together: states `[B·n]`, latents `[B·d_z]`, one
/// [`EnergyRecord`] each. What a runtime without an engine holds per model.
#[derive(Clone, Debug)]
pub struct BodyBatch {
    model: LearnedModel,
    method: Integrator,
    states: Vec<f32>,
    latents: Vec<f32>,
    energies: Vec<EnergyRecord>,
    history: StepHistory,
    /// How steps are taken.
    pub settings: StepSettings,
}

impl BodyBatch {
    /// `bodies` of `model`, stepped with `method` (resolved against the model's structure).
    ///
    /// # Errors
    /// [`BatchError::Width`] for a state or latent of the wrong length.
    pub fn new(
        model: LearnedModel,
        method: Integrator,
        bodies: &[BodyInit],
    ) -> Result<Self, BatchError> {
        let (n, dz) = (model.dim(), model.d_latent());
        let mut states = Vec::with_capacity(bodies.len() * n);
        let mut latents = Vec::with_capacity(bodies.len() * dz);
        for (body, b) in bodies.iter().enumerate() {
            for (what, got, expected) in
                [("state", b.state.len(), n), ("latent", b.latent.len(), dz)]
            {
                if got != expected {
                    return Err(BatchError::Width {
                        body,
                        what,
                        got,
                        expected,
                    });
                }
            }
            states.extend_from_slice(&b.state);
            latents.extend_from_slice(&b.latent);
        }
        let method = resolve(method, model.config.architecture, model.cpu.is_generic());
        let mut batch = Self {
            energies: vec![EnergyRecord::default(); bodies.len()],
            history: StepHistory::default(),
            model,
            method,
            states,
            latents,
            settings: StepSettings::default(),
        };
        batch.measure_energies();
        Ok(batch)
    }

    /// Bodies.
    pub fn len(&self) -> usize {
        self.energies.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.energies.is_empty()
    }

    /// The method the batch steps with (resolved).
    pub fn method(&self) -> Integrator {
        self.method
    }

    /// The model.
    pub fn model(&self) -> &LearnedModel {
        &self.model
    }

    /// Body `i`'s state.
    pub fn state(&self, i: usize) -> &[f32] {
        let n = self.model.dim();
        &self.states[i * n..(i + 1) * n]
    }

    /// Every state, `[B·n]`.
    pub fn states(&self) -> &[f32] {
        &self.states
    }

    /// Body `i`'s energy record.
    pub fn energy(&self, i: usize) -> &EnergyRecord {
        &self.energies[i]
    }

    /// Largest energy drift of any body so far (NaN-propagating: see
    /// [`crate::metrics::worst`]).
    pub fn max_drift(&self) -> f32 {
        crate::metrics::worst(self.energies.iter().map(|e| f64::from(e.max_drift))) as f32
    }

    /// Replaces body `i`'s latent code (its physics changes: its energy record restarts).
    ///
    /// # Panics
    /// When `latent` does not have the model's d_z values.
    pub fn set_latent(&mut self, i: usize, latent: &[f32]) {
        let dz = self.model.d_latent();
        assert_eq!(
            latent.len(),
            dz,
            "set_latent: latent of {} values, d_z = {dz}",
            latent.len()
        );
        self.latents[i * dz..(i + 1) * dz].copy_from_slice(latent);
        self.energies[i].restart();
        if self.history.rows() > i {
            self.history.forget(i);
        }
    }

    /// Advances every body by `dt` seconds and updates the energy records. A body that
    /// is or becomes non-finite keeps its last finite state and is listed in
    /// [`StepReport::frozen`] ([`advance_isolating`]).
    ///
    /// # Errors
    /// The integrator's (a failed implicit solve of finite bodies); the states are then
    /// unchanged.
    pub fn step(&mut self, dt: f64) -> Result<StepReport, IntegrateError> {
        let (x, report) = advance_isolating(
            &self.model.cpu,
            self.method,
            &self.states,
            &self.latents,
            dt,
            &self.settings,
            &mut self.history,
        )?;
        self.states = x;
        self.measure_energies();
        Ok(report)
    }

    fn measure_energies(&mut self) {
        let first: Vec<bool> = self.energies.iter().map(|e| e.initial.is_nan()).collect();
        let samples = measure(&self.model.cpu, &self.states, &self.latents, &first);
        for (record, sample) in self.energies.iter_mut().zip(samples) {
            record.record(sample);
        }
    }
}
