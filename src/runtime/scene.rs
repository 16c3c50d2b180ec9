//! Population scenes: the `*.noether.ron` files that describe populations of learned
//! systems, parsed and checked here so every runtime (the Bevy plugin, a server, a plain
//! loop) reads them the same way.
//!
//! ```ron
//! NoetherScene(
//!     name: "pendulums",
//!     populations: [(
//!         name: "long and short",
//!         family: pendulum,
//!         model: "../models/pendulum-svd5.model.ron",
//!         count: 100,
//!         params: {"m": Uniform(0.5, 2.0), "l": List([0.5, 1.0, 2.0])},
//!         initial: Protocol,
//!         layout: Grid(columns: 10, spacing: 80.0, origin: (-400.0, 300.0)),
//!         latent: Fit(shots: 10),
//!     )],
//! )
//! ```
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `family` | `mass_spring`, `pendulum`, `duffing`, `dno`, `tgc` (checked against the model) | required |
//! | `model` | model config (`*.model.ron`), relative to the scene file | required |
//! | `count` | bodies, 1 … 200 000 | required |
//! | `params` | a [`Distribution`] per parameter (unset: the family's default) | `{}` |
//! | `initial` | [`InitialState`]: the protocol's sampling, or a distribution per component | `Protocol` |
//! | `layout` | [`Layout`]: `Grid`, `Line` or `Ring` of the bodies' positions | a grid |
//! | `integrator` | [`Integrator`] (`auto`: chosen from the model's structure) | `auto` |
//! | `latent` | [`LatentInit`]: fit to the hidden truth, mean, sampled, or given | `Fit(shots: 10)` |
//! | `hidden_truth` | whether bodies carry their true parameters | `true` |
//! | `observe` | [`ObserveSpec`]: adapt online from observations of the hidden truth | `None` |
//! | `seed` | random stream of the population | `0` |
//!
//! [`SceneDescription::parse`] checks a file: a syntax error names the line and column; a value
//! that cannot be built (unknown parameter, parameter outside the model's training range,
//! count 0 or absurd, NaN, an empty list) names the population and the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{integrate::Integrator, meta::ObservedPart, systems::Family};

/// The most bodies one population may ask for.
pub const MAX_COUNT: usize = 200_000;

/// The most populations one scene may hold.
pub const MAX_POPULATIONS: usize = 256;

/// The most bodies one scene may ask for (over all populations).
pub const MAX_SCENE_BODIES: usize = 1_000_000;

/// The most observations one scene may keep (count × window over its observed
/// populations; each is a timestamp and a few floats, about 64 bytes).
pub const MAX_SCENE_OBSERVATIONS: usize = 2_000_000;

/// A scene: populations of learned systems (the `NoetherScene(…)` of a scene file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "NoetherScene")]
pub struct SceneDescription {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The populations.
    pub populations: Vec<PopulationSpec>,
}

/// One population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationSpec {
    /// Display name.
    pub name: String,
    /// Family.
    pub family: Family,
    /// The model's config file (`*.model.ron`), relative to the scene file.
    pub model: String,
    /// Number of bodies.
    pub count: usize,
    /// Parameter distributions by name.
    #[serde(default)]
    pub params: BTreeMap<String, Distribution>,
    /// Initial states.
    #[serde(default)]
    pub initial: InitialState,
    /// Where the bodies are drawn.
    #[serde(default)]
    pub layout: Layout,
    /// Integrator (`auto`: chosen from the model's structure).
    #[serde(default)]
    pub integrator: Integrator,
    /// How each body's latent code is chosen.
    #[serde(default)]
    pub latent: LatentInit,
    /// Whether bodies carry their true parameters (for adaptation and comparison).
    #[serde(default = "yes")]
    pub hidden_truth: bool,
    /// Online adaptation from the hidden truth (needs `hidden_truth: true`).
    #[serde(default)]
    pub observe: Option<ObserveSpec>,
    /// Seed of the population's random stream.
    #[serde(default)]
    pub seed: u64,
}

/// How a population watches its hidden truth to adapt online ([`super::AdaptationSettings`],
/// [`super::run_job`]).
///
/// ```ron
/// observe: Some((components: positions, interval: 0.05, noise: 0.01, window: 60)),
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSpec {
    /// What each observation holds.
    #[serde(default)]
    pub components: ObservedPart,
    /// Seconds between observations.
    #[serde(default = "ObserveSpec::default_interval")]
    pub interval: f64,
    /// Relative Gaussian noise (0.01: 1% of the amplitude).
    #[serde(default)]
    pub noise: f32,
    /// Observations kept per body.
    #[serde(default = "ObserveSpec::default_window")]
    pub window: usize,
}

impl ObserveSpec {
    fn default_interval() -> f64 {
        0.05
    }

    fn default_window() -> usize {
        super::adaptation::DEFAULT_WINDOW
    }
}

fn yes() -> bool {
    true
}

/// A distribution of one value over a population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Distribution {
    /// Always this value.
    Fixed(f64),
    /// Uniform on [lo, hi].
    Uniform(f64, f64),
    /// The listed values in turn (body i gets entry i mod len).
    List(Vec<f64>),
}

impl Distribution {
    /// The values it can produce: (lowest, highest).
    pub fn bounds(&self) -> Option<(f64, f64)> {
        match self {
            Distribution::Fixed(v) => Some((*v, *v)),
            Distribution::Uniform(lo, hi) => Some((*lo, *hi)),
            Distribution::List(v) => v.iter().copied().fold(None, |acc, x| match acc {
                None => Some((x, x)),
                Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
            }),
        }
    }

    /// Checks finiteness and shape; a message for the field on failure.
    fn check(&self) -> Result<(), String> {
        match self {
            Distribution::Fixed(v) if !v.is_finite() => Err(format!("Fixed({v}) is not finite")),
            Distribution::Uniform(lo, hi) if !(lo.is_finite() && hi.is_finite()) => {
                Err(format!("Uniform({lo}, {hi}) is not finite"))
            }
            Distribution::Uniform(lo, hi) if lo > hi => Err(format!(
                "Uniform({lo}, {hi}): the lower bound is above the upper"
            )),
            Distribution::List(v) if v.is_empty() => Err("List([]) is empty".into()),
            Distribution::List(v) if v.iter().any(|x| !x.is_finite()) => {
                Err(format!("List({v:?}) holds a non-finite value"))
            }
            _ => Ok(()),
        }
    }

    /// The value for body `index` with uniform draw `u ∈ [0, 1)`.
    pub fn sample(&self, index: usize, u: f64) -> f64 {
        match self {
            Distribution::Fixed(v) => *v,
            Distribution::Uniform(lo, hi) => lo + u * (hi - lo),
            Distribution::List(v) => v[index % v.len()],
        }
    }
}

/// How initial states are drawn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum InitialState {
    /// The dataset protocol's distribution for the family (docs/protocol.md §3).
    #[default]
    Protocol,
    /// A distribution per state component, by name (`q`, `p`, `S`, `S1`, `S2`).
    Components(BTreeMap<String, Distribution>),
}

/// Where the bodies of a population are drawn (world units; the y axis points up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layout {
    /// Rows of `columns` bodies, `spacing` apart, starting at `origin` (top left).
    Grid {
        /// Bodies per row.
        columns: usize,
        /// Distance between neighbours.
        spacing: f32,
        /// Position of the first body.
        origin: (f32, f32),
    },
    /// One row, `spacing` apart, starting at `origin`.
    Line {
        /// Distance between neighbours.
        spacing: f32,
        /// Position of the first body.
        origin: (f32, f32),
    },
    /// A circle of `radius` around `center`.
    Ring {
        /// Radius.
        radius: f32,
        /// Centre.
        center: (f32, f32),
    },
}

impl Default for Layout {
    fn default() -> Self {
        Layout::Grid {
            columns: 20,
            spacing: 60.0,
            origin: (-570.0, 300.0),
        }
    }
}

impl Layout {
    /// Position of body `i` of `count`.
    pub fn position(&self, i: usize, count: usize) -> (f32, f32) {
        match self {
            Layout::Grid {
                columns,
                spacing,
                origin,
            } => {
                let c = (*columns).max(1);
                (
                    origin.0 + (i % c) as f32 * spacing,
                    origin.1 - (i / c) as f32 * spacing,
                )
            }
            Layout::Line { spacing, origin } => (origin.0 + i as f32 * spacing, origin.1),
            Layout::Ring { radius, center } => {
                let a = std::f32::consts::TAU * i as f32 / count.max(1) as f32;
                (center.0 + radius * a.cos(), center.1 + radius * a.sin())
            }
        }
    }
}

/// How each body's latent code is chosen at spawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LatentInit {
    /// Adapted to `shots` samples of the body's true system (test-time adaptation, batched
    /// over the population).
    Fit {
        /// Shots per body.
        shots: usize,
    },
    /// The mean training latent (every body alike until adapted online).
    Mean,
    /// Mean ± the training latents' standard deviation, per component (varied behaviours
    /// without fitting: fast for very large populations).
    Sample,
    /// Given codes, used in turn.
    Explicit(Vec<Vec<f32>>),
}

impl Default for LatentInit {
    fn default() -> Self {
        LatentInit::Fit { shots: 10 }
    }
}

/// Why a scene could not be loaded or spawned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SceneError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The scene file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Not valid RON for a scene (including unknown fields and unknown families).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The scene file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// A value that cannot be built.
    #[error("{path}: population `{population}`: {field}: {message}")]
    Invalid {
        /// The scene file.
        path: String,
        /// Population name (or index).
        population: String,
        /// The field, e.g. `params.m` or `count`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl SceneDescription {
    /// Parses and checks a scene file's text.
    ///
    /// # Errors
    /// [`SceneError::Syntax`] and [`SceneError::Invalid`].
    pub fn parse(text: &str, path: &str) -> Result<Self, SceneError> {
        let scene: SceneDescription = ron::from_str(text).map_err(|e| SceneError::Syntax {
            path: path.to_owned(),
            line: e.span.start.line,
            column: e.span.start.col,
            message: e.code.to_string(),
        })?;
        scene.validate(path)?;
        Ok(scene)
    }

    /// Checks every value that RON's types do not.
    ///
    /// # Errors
    /// [`SceneError::Invalid`] naming the population and field.
    pub fn validate(&self, path: &str) -> Result<(), SceneError> {
        let whole = |field: &str, message: String| {
            Err(SceneError::Invalid {
                path: path.into(),
                population: "—".into(),
                field: field.into(),
                message,
            })
        };
        if self.populations.is_empty() {
            return whole("populations", "no populations".into());
        }
        if self.populations.len() > MAX_POPULATIONS {
            return whole(
                "populations",
                format!(
                    "{} populations: at most {MAX_POPULATIONS}",
                    self.populations.len()
                ),
            );
        }
        let bodies: usize = self
            .populations
            .iter()
            .map(|p| p.count.min(MAX_COUNT + 1))
            .sum();
        if bodies > MAX_SCENE_BODIES {
            return whole(
                "populations",
                format!("{bodies} bodies in all: at most {MAX_SCENE_BODIES} per scene"),
            );
        }
        let observations: usize = self
            .populations
            .iter()
            .filter_map(|p| {
                p.observe
                    .map(|o| p.count.min(MAX_COUNT) * o.window.min(100_000))
            })
            .sum();
        if observations > MAX_SCENE_OBSERVATIONS {
            return whole(
                "observe",
                format!(
                    "observed bodies × window = {observations} observations kept: at most {MAX_SCENE_OBSERVATIONS} per scene (shorten `window` or observe fewer bodies)"
                ),
            );
        }
        for (i, p) in self.populations.iter().enumerate() {
            let pop = if p.name.is_empty() {
                format!("#{i}")
            } else {
                p.name.clone()
            };
            let bad = |field: String, message: String| {
                Err(SceneError::Invalid {
                    path: path.into(),
                    population: pop.clone(),
                    field,
                    message,
                })
            };
            if p.count == 0 {
                return bad(
                    "count".into(),
                    "is 0; a population needs at least one body".into(),
                );
            }
            if p.count > MAX_COUNT {
                return bad(
                    "count".into(),
                    format!(
                        "{} is absurd: at most {MAX_COUNT} bodies per population",
                        p.count
                    ),
                );
            }
            if p.model.trim().is_empty() {
                return bad("model".into(), "is empty".into());
            }
            let spec = p.family.spec();
            for (name, dist) in &p.params {
                let Some(ps) = spec.params.iter().find(|s| s.name == name) else {
                    let known = spec
                        .params
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ");
                    return bad(
                        format!("params.{name}"),
                        format!(
                            "{} has no parameter `{name}`; its parameters are {known}",
                            p.family
                        ),
                    );
                };
                if let Err(m) = dist.check() {
                    return bad(format!("params.{name}"), m);
                }
                let (lo, hi) = dist.bounds().expect("checked non-empty");
                if !(ps.train.contains(lo) && ps.train.contains(hi)) {
                    return bad(
                        format!("params.{name}"),
                        format!(
                            "values {lo}..{hi} leave the model's training range {} (the learned physics is valid only there)",
                            ps.train
                        ),
                    );
                }
            }
            if let InitialState::Components(map) = &p.initial {
                for (name, dist) in map {
                    if !spec.state.contains(&name.as_str()) {
                        return bad(
                            format!("initial.{name}"),
                            format!(
                                "{} has no state component `{name}`; its state is ({})",
                                p.family,
                                spec.state.join(", ")
                            ),
                        );
                    }
                    if let Err(m) = dist.check() {
                        return bad(format!("initial.{name}"), m);
                    }
                }
                if let Some(missing) = spec.state.iter().find(|s| !map.contains_key(**s)) {
                    return bad(
                        "initial".into(),
                        format!("component `{missing}` has no distribution"),
                    );
                }
                // Every value a distribution can draw must be a valid state of the family
                // (the others at their typical values).
                if let Ok(system) = p.family.build(&p.family.default_params()) {
                    for (i, name) in spec.state.iter().enumerate() {
                        let (lo, hi) = map[*name].bounds().expect("checked non-empty");
                        for v in [lo, hi] {
                            let mut x = spec.default_state.to_vec();
                            x[i] = v;
                            if let Err(e) = system.check_state(&x) {
                                return bad(format!("initial.{name}"), e.to_string());
                            }
                        }
                    }
                }
            }
            if let Some(o) = &p.observe {
                if !p.hidden_truth {
                    return bad(
                        "observe".into(),
                        "observes the hidden truth, but `hidden_truth` is false".into(),
                    );
                }
                if !(o.interval.is_finite() && o.interval > 0.0) {
                    return bad(
                        "observe.interval".into(),
                        format!("{} is not a positive number of seconds", o.interval),
                    );
                }
                if !(o.noise.is_finite() && (0.0..=1.0).contains(&o.noise)) {
                    return bad(
                        "observe.noise".into(),
                        format!("{} is outside 0 … 1 (a fraction of the amplitude)", o.noise),
                    );
                }
                if !(3..=100_000).contains(&o.window) {
                    return bad(
                        "observe.window".into(),
                        format!("{} observations: keep between 3 and 100000", o.window),
                    );
                }
            }
            match &p.layout {
                Layout::Grid {
                    columns,
                    spacing,
                    origin,
                } if *columns == 0
                    || !spacing.is_finite()
                    || !origin.0.is_finite()
                    || !origin.1.is_finite() =>
                {
                    return bad(
                        "layout".into(),
                        "Grid needs columns ≥ 1 and finite spacing and origin".into(),
                    );
                }
                Layout::Line { spacing, origin }
                    if !spacing.is_finite() || !origin.0.is_finite() || !origin.1.is_finite() =>
                {
                    return bad(
                        "layout".into(),
                        "Line needs a finite spacing and origin".into(),
                    );
                }
                Layout::Ring { radius, center }
                    if !(radius.is_finite()
                        && *radius >= 0.0
                        && center.0.is_finite()
                        && center.1.is_finite()) =>
                {
                    return bad(
                        "layout".into(),
                        "Ring needs a finite radius ≥ 0 and a finite centre".into(),
                    );
                }
                _ => {}
            }
            match &p.latent {
                LatentInit::Fit { shots } if *shots == 0 || *shots > 1000 => {
                    return bad(
                        "latent".into(),
                        format!("Fit(shots: {shots}): shots must lie in 1..=1000"),
                    );
                }
                LatentInit::Explicit(list) if list.is_empty() => {
                    return bad("latent".into(), "Explicit([]) is empty".into());
                }
                LatentInit::Explicit(list) if list.iter().flatten().any(|v| !v.is_finite()) => {
                    return bad("latent".into(), "Explicit holds a non-finite value".into());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_place_bodies() {
        let g = Layout::Grid {
            columns: 3,
            spacing: 10.0,
            origin: (0.0, 0.0),
        };
        assert_eq!(g.position(4, 9), (10.0, -10.0));
        let r = Layout::Ring {
            radius: 2.0,
            center: (1.0, 1.0),
        };
        let (x, y) = r.position(1, 4);
        assert!((x - 1.0).abs() < 1e-5 && (y - 3.0).abs() < 1e-5);
    }

    #[test]
    fn distributions_sample_in_bounds() {
        assert_eq!(Distribution::List(vec![1.0, 2.0]).sample(3, 0.9), 2.0);
        assert_eq!(Distribution::Uniform(1.0, 3.0).sample(0, 0.5), 2.0);
        assert_eq!(Distribution::Uniform(1.0, 3.0).bounds(), Some((1.0, 3.0)));
    }
}
