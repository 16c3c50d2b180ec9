//! Building a population's bodies from its [`PopulationSpec`]: true parameters, initial
//! states, layout positions and latent codes, deterministic in the population's seed.
//!
//! Building is split in two so a runtime can show bodies at once and fit later:
//! [`plan_population`] draws everything but fitted latents (microseconds per body; a
//! `Fit` population starts from the model's mean latent), [`fit_population`] adapts the
//! latents of a `Fit` population to shots of each body's true system (test-time adaptation,
//! batched over the population: seconds for hundreds of bodies, off the frame in the Bevy
//! plugin). [`build_population`] does both.

use rand::RngExt as _;

use super::{
    LearnedModel,
    scene::{InitialState, LatentInit, PopulationSpec, SceneError},
};
use crate::{
    data::{sample_initial_state, stream_rng},
    meta::{AdaptConfig, Points, adapt_latents, system_shots},
};

/// What one body starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct BodyInit {
    /// Initial state x₀.
    pub state: Vec<f32>,
    /// Latent code z (the mean latent for a `Fit` population until [`fit_population`]).
    pub latent: Vec<f32>,
    /// True parameters μ, in the family's order.
    pub params: Vec<f64>,
    /// Layout position (world units, y up).
    pub position: (f32, f32),
}

/// The random-stream tag of population `index`.
fn tag(spec: &PopulationSpec, index: usize) -> String {
    format!("scene/{}/{index}", spec.name)
}

/// Draws population `index`'s bodies: parameters, initial states, positions, and latents
/// (mean, sampled or given; the mean for `Fit`, see [`fit_population`]).
///
/// # Errors
/// [`SceneError::Invalid`] when the model does not fit the population (family, latent
/// width).
pub fn plan_population(
    spec: &PopulationSpec,
    index: usize,
    model: &LearnedModel,
    scene_path: &str,
) -> Result<Vec<BodyInit>, SceneError> {
    let invalid = |field: &str, message: String| SceneError::Invalid {
        path: scene_path.into(),
        population: spec.name.clone(),
        field: field.into(),
        message,
    };
    let family = spec.family;
    if model.family() != family {
        return Err(invalid(
            "model",
            format!(
                "`{}` models {}, the population is {family}",
                spec.model,
                model.family()
            ),
        ));
    }
    let fs = family.spec();
    let mut rng = stream_rng(&tag(spec, index), spec.seed, 0);
    let mut bodies = Vec::with_capacity(spec.count);
    for i in 0..spec.count {
        let params: Vec<f64> = fs
            .params
            .iter()
            .map(|p| {
                spec.params
                    .get(p.name)
                    .map_or(p.default, |d| d.sample(i, rng.random::<f64>()))
            })
            .collect();
        let state: Vec<f64> = match &spec.initial {
            InitialState::Protocol => sample_initial_state(family, &params, &mut rng),
            InitialState::Components(map) => fs
                .state
                .iter()
                .map(|c| map[*c].sample(i, rng.random::<f64>()))
                .collect(),
        };
        bodies.push(BodyInit {
            state: state.iter().map(|v| *v as f32).collect(),
            latent: Vec::new(),
            params,
            position: spec.layout.position(i, spec.count),
        });
    }
    let dz = model.d_latent();
    let mean = model.mean_latent();
    match &spec.latent {
        LatentInit::Mean | LatentInit::Fit { .. } => {
            bodies.iter_mut().for_each(|b| b.latent.clone_from(&mean));
        }
        LatentInit::Sample => {
            let std: Vec<f32> = model.config.latents.std.iter().map(|v| *v as f32).collect();
            for b in &mut bodies {
                // Uniform with the training latents' standard deviation: ±√3 σ.
                b.latent = (0..dz)
                    .map(|k| {
                        mean[k]
                            + std.get(k).copied().unwrap_or(0.0)
                                * (2.0 * rng.random::<f32>() - 1.0)
                                * 3f32.sqrt()
                    })
                    .collect();
            }
        }
        LatentInit::Explicit(list) => {
            if let Some(bad) = list.iter().find(|z| z.len() != dz) {
                return Err(invalid(
                    "latent",
                    format!(
                        "Explicit code of {} values; the model's latent has {dz}",
                        bad.len()
                    ),
                ));
            }
            for (i, b) in bodies.iter_mut().enumerate() {
                b.latent = list[i % list.len()].clone();
            }
        }
    }
    Ok(bodies)
}

/// The latent codes of a `Fit { shots }` population, one per body of `bodies` (as
/// [`plan_population`] drew them): each adapted to `shots` samples of its true system, all
/// in one batch ([`adapt_latents`], the model frozen). `None` for other latent choices.
///
/// # Errors
/// [`SceneError::Invalid`] when a body's true system cannot be simulated.
pub fn fit_population(
    spec: &PopulationSpec,
    index: usize,
    model: &LearnedModel,
    bodies: &[BodyInit],
    scene_path: &str,
) -> Result<Option<Vec<Vec<f32>>>, SceneError> {
    let LatentInit::Fit { shots } = spec.latent else {
        return Ok(None);
    };
    let invalid = |message: String| SceneError::Invalid {
        path: scene_path.into(),
        population: spec.name.clone(),
        field: "params".into(),
        message,
    };
    let family = spec.family;
    let tag = tag(spec, index);
    let mut tasks: Vec<Points> = Vec::with_capacity(bodies.len());
    for (i, b) in bodies.iter().enumerate() {
        let sys = family
            .build(&b.params)
            .map_err(|e| invalid(e.to_string()))?;
        let mut r = stream_rng(&format!("{tag}/shots"), spec.seed, i as u64);
        tasks.push(
            system_shots(family, sys.as_ref(), &b.params, shots, &mut r)
                .map_err(|e| invalid(e.to_string()))?,
        );
    }
    let adapted = adapt_latents(
        &model.params,
        &tasks,
        &model.mean_latent(),
        &AdaptConfig::for_model(&model.config, shots),
    );
    Ok(Some(adapted.latents))
}

/// [`plan_population`] then [`fit_population`]: every body with its final latent.
///
/// # Errors
/// As the two.
pub fn build_population(
    spec: &PopulationSpec,
    index: usize,
    model: &LearnedModel,
    scene_path: &str,
) -> Result<Vec<BodyInit>, SceneError> {
    let mut bodies = plan_population(spec, index, model, scene_path)?;
    if let Some(latents) = fit_population(spec, index, model, &bodies, scene_path)? {
        for (b, z) in bodies.iter_mut().zip(latents) {
            b.latent = z;
        }
    }
    Ok(bodies)
}
