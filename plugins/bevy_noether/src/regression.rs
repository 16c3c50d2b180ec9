//! Visual regression tests of energy conservation, for your own `tests/` (feature
//! `regression`).
//!
//! Run a scene headless for a fixed number of steps, record every population's energy
//! (and entropy) series, assert numeric bounds, and render a PNG report — relative energy
//! drift and entropy change against time, and phase portraits — that is compared with a
//! committed golden image by a perceptual score ([`image_compare`]'s hybrid RGB metric).
//! On a mismatch the new image and a diff image are written next to the golden and the
//! check fails with their paths; set `NOETHER_ACCEPT_GOLDEN=1` to accept the new image as
//! the golden.
//!
//! The pictures depend only on the data: text uses the font embedded in noether (no
//! system fonts), plots are drawn by plotters' software bitmap backend (no GPU), the
//! drift axes are fixed by the bounds rather than fitted to round-off, and the run is
//! deterministic tick for tick (manual fixed time, online adaptation off).
//!
//! ```no_run
//! use bevy_noether::regression::{Bounds, RegressionRun};
//!
//! let report = RegressionRun::scene("scenes/oscillator_zoo.noether.ron")
//!     .steps(192)
//!     .run("assets")
//!     .expect("the scene runs");
//! report
//!     .check(&Bounds::drift(0.05), "tests/golden/oscillator_zoo.png")
//!     .unwrap_or_else(|failure| panic!("{failure}"));
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use bevy::prelude::*;
use image::RgbImage;
use noether::integrate::Integrator;
use plotters::{prelude::*, style::Color as _};

use crate::{
    adapt::{AdaptSettings, AdaptationStats},
    dynamics::{BodyEnergy, BodyIntegrator, DynamicsSettings, FrozenBody, PhaseState},
    headless::{headless_app, load_scene},
    scene::Population,
    schedule::{Simulation, SimulationControl},
};

/// The environment variable that accepts new images as goldens.
pub const ACCEPT_ENV: &str = "NOETHER_ACCEPT_GOLDEN";

/// Bodies per population whose phase portraits are drawn.
const PORTRAITS: usize = 6;

/// A headless run of a scene to record.
#[derive(Clone, Debug, PartialEq)]
pub struct RegressionRun {
    scene: String,
    steps: usize,
    hz: f64,
    integrator: Option<Integrator>,
    step_size: Option<f64>,
    adaptation: bool,
}

impl RegressionRun {
    /// The scene at `path` (relative to the asset root), 128 steps at 64 Hz.
    pub fn scene(path: impl Into<String>) -> Self {
        Self {
            scene: path.into(),
            steps: 128,
            hz: 64.0,
            integrator: None,
            step_size: None,
            adaptation: false,
        }
    }

    /// Fixed steps to run.
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Fixed steps per second.
    pub fn hz(mut self, hz: f64) -> Self {
        self.hz = hz;
        self
    }

    /// Runs online adaptation too, paced at wall-clock speed (one fixed step per 1/hz s) so
    /// the worker's updates land during the run as they would in a game. Latent changes
    /// restart a body's energy bookkeeping, so the drift is measured between them. The
    /// run is then not reproducible tick for tick: check its bounds
    /// ([`Recording::violations`]), not a golden image.
    pub fn adaptation(mut self, on: bool) -> Self {
        self.adaptation = on;
        self
    }

    /// Each fixed step advances the simulation by `h` seconds in one integrator step
    /// (instead of 1/hz): a coarse step over a long horizon, where an integrator that is
    /// not structure-preserving shows its secular energy drift.
    pub fn step_size(mut self, h: f64) -> Self {
        self.step_size = Some(h);
        self
    }

    /// Steps every body with `method` instead of the scene's integrators.
    pub fn integrator(mut self, method: Integrator) -> Self {
        self.integrator = Some(method);
        self
    }

    /// Loads the scene from `asset_root`, runs it, and records every population.
    ///
    /// # Errors
    /// The scene's own error (file, line, field), or a timeout while loading.
    pub fn run(&self, asset_root: impl AsRef<Path>) -> Result<Recording, String> {
        let mut app = headless_app(asset_root, self.hz);
        app.world_mut().resource_mut::<AdaptSettings>().enabled = self.adaptation;
        load_scene(&mut app, &self.scene, Duration::from_secs(120))?;
        if let Some(h) = self.step_size {
            app.world_mut()
                .resource_mut::<DynamicsSettings>()
                .max_substep = h;
            app.world_mut()
                .resource_mut::<Time<Simulation>>()
                .set_speed(h * self.hz);
        }
        if let Some(method) = self.integrator {
            let mut q = app.world_mut().query::<&mut BodyIntegrator>();
            for mut m in q.iter_mut(app.world_mut()) {
                m.0 = method;
            }
        }
        let mut q = app
            .world_mut()
            .query::<(&Population, &BodyEnergy, &PhaseState, Has<FrozenBody>)>();
        let mut populations: BTreeMap<usize, PopulationSeries> = BTreeMap::new();
        let mut previous: BTreeMap<(usize, usize), f32> = BTreeMap::new();
        let started = std::time::Instant::now();
        for tick in 1..=self.steps {
            app.update();
            if self.adaptation {
                let due = started + Duration::from_secs_f64(tick as f64 / self.hz);
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            }
            // Per population: relative drifts, S − S₀, and per-step changes of S.
            let mut step: BTreeMap<usize, StepSeries> = BTreeMap::new();
            for (pop, energy, state, frozen) in q.iter(app.world()) {
                let series = populations
                    .entry(pop.index)
                    .or_insert_with(|| PopulationSeries::new(pop));
                let (drift, entropy, entropy_step) = step.entry(pop.index).or_default();
                if frozen {
                    series.frozen.insert(pop.member);
                }
                // The runtime's one, offset-free definition of the drift.
                drift.push(energy.relative_change());
                if energy.entropy.is_finite() {
                    series.generic = true;
                    entropy.push(energy.entropy - energy.initial_entropy);
                    let prev = previous.insert((pop.index, pop.member), energy.entropy);
                    entropy_step.push(prev.map_or(0.0, |p| energy.entropy - p));
                }
                if pop.member < PORTRAITS && state.len() >= 2 {
                    if series.portraits.len() <= pop.member {
                        series.portraits.resize(pop.member + 1, Vec::new());
                    }
                    series.portraits[pop.member].push((state[0], state[1]));
                }
            }
            for (index, (mut drift, entropy, entropy_step)) in step {
                let s = populations.get_mut(&index).expect("recorded above");
                s.bodies = drift.len();
                drift.sort_by(f32::total_cmp);
                let worst = drift
                    .iter()
                    .map(|v| {
                        if v.is_finite() {
                            v.abs()
                        } else {
                            f32::INFINITY
                        }
                    })
                    .fold(0.0, f32::max);
                s.max_drift.push(worst);
                s.median_drift.push(drift[drift.len() / 2]);
                if !entropy.is_empty() {
                    s.entropy_change
                        .push(entropy.iter().sum::<f32>() / entropy.len() as f32);
                    s.min_entropy_step.push(
                        entropy_step
                            .iter()
                            .map(|v| if v.is_nan() { f32::NEG_INFINITY } else { *v })
                            .fold(f32::INFINITY, f32::min),
                    );
                }
            }
        }
        let adaptation_updates = app
            .world()
            .get_resource::<AdaptationStats>()
            .map_or(0, |s| s.updates);
        Ok(Recording {
            scene: self.scene.clone(),
            adaptation_updates,
            dt: self.step_size.unwrap_or(1.0 / self.hz),
            populations: populations.into_values().collect(),
        })
    }
}

/// The series recorded for one population, one entry per step.
#[derive(Clone, Debug, PartialEq)]
pub struct PopulationSeries {
    /// Population name.
    pub name: String,
    /// Family name.
    pub family: String,
    /// Bodies.
    pub bodies: usize,
    /// Whether the model is GENERIC (entropy series are recorded).
    pub generic: bool,
    /// Members frozen during the run because their state stopped being finite (a
    /// recording with any fails its check).
    pub frozen: std::collections::BTreeSet<usize>,
    /// Largest offset-free relative drift over the bodies
    /// ([`noether::runtime::EnergyRecord::drift`]; +∞ for a non-finite one).
    pub max_drift: Vec<f32>,
    /// Median signed relative change (E − E₀)/(E₀ − E_rest) over the bodies.
    pub median_drift: Vec<f32>,
    /// Mean S − S₀ over the bodies (GENERIC).
    pub entropy_change: Vec<f32>,
    /// Smallest per-step change of S over the bodies (GENERIC).
    pub min_entropy_step: Vec<f32>,
    /// (q, p) of the first bodies, per step.
    pub portraits: Vec<Vec<(f32, f32)>>,
}

impl PopulationSeries {
    fn new(pop: &Population) -> Self {
        Self {
            name: pop.name.clone(),
            family: pop.family.to_string(),
            bodies: 0,
            generic: false,
            frozen: Default::default(),
            max_drift: Vec::new(),
            median_drift: Vec::new(),
            entropy_change: Vec::new(),
            min_entropy_step: Vec::new(),
            portraits: Vec::new(),
        }
    }

    /// Largest relative energy drift over the run.
    pub fn worst_drift(&self) -> f32 {
        noether::metrics::worst(self.max_drift.iter().map(|v| f64::from(*v))) as f32
    }

    /// Largest |median relative energy change| over the run (the typical body's drift).
    pub fn worst_median_drift(&self) -> f32 {
        noether::metrics::worst(self.median_drift.iter().map(|v| f64::from(v.abs()))) as f32
    }

    /// Smallest per-step entropy change over the run (+∞ for Hamiltonian models).
    pub fn worst_entropy_step(&self) -> f32 {
        self.min_entropy_step
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
    }
}

/// Numeric bounds a recording must meet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Largest allowed offset-free relative drift
    /// ([`noether::runtime::EnergyRecord::drift`]) of any body at any step.
    pub max_drift: f32,
    /// Largest allowed |median over bodies of (E − E₀)/scale| at any step: the typical
    /// body's secular drift. A structure-preserving integrator's energy error oscillates
    /// and its median stays near zero; a secular loss or gain (RK4 at a coarse step,
    /// explicit Euler) moves every body the same way.
    pub max_median_drift: f32,
    /// Smallest allowed per-step change of S (a small negative round-off allowance).
    pub min_entropy_step: f32,
}

impl Bounds {
    /// Drift at most `max_drift` (the median too), entropy never falling by more than
    /// 1e-5 per step.
    pub fn drift(max_drift: f32) -> Self {
        Self {
            max_drift,
            max_median_drift: max_drift,
            min_entropy_step: -1e-5,
        }
    }

    /// The same with the typical body's drift bounded by `max_median_drift`.
    pub fn median(mut self, max_median_drift: f32) -> Self {
        self.max_median_drift = max_median_drift;
        self
    }
}

/// A recorded run.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// Latent updates that online adaptation applied during the run (0 unless
    /// [`RegressionRun::adaptation`]).
    pub adaptation_updates: u64,
    /// The scene.
    pub scene: String,
    /// Step, seconds.
    pub dt: f64,
    /// Populations in scene order.
    pub populations: Vec<PopulationSeries>,
}

/// One tick's samples of a population: relative energy drifts, S − S₀, and per-step
/// changes of S.
type StepSeries = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Why a regression check failed. Its message lists every failed bound and, for an image
/// mismatch, the paths of the new and diff images.
#[derive(Clone, Debug, PartialEq)]
pub struct RegressionFailure {
    /// Bounds that were broken, one line each.
    pub bounds: Vec<String>,
    /// The image comparison, when it failed.
    pub image: Option<ImageMismatch>,
}

/// A report that differs from its golden.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageMismatch {
    /// The golden image.
    pub golden: PathBuf,
    /// The new image, written next to it.
    pub new: PathBuf,
    /// The diff image (absent when there was no golden to compare with).
    pub diff: Option<PathBuf>,
    /// Similarity score (1 = identical), NaN without a golden.
    pub score: f64,
    /// Why it failed.
    pub reason: String,
}

impl fmt::Display for RegressionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "energy regression check failed")?;
        for b in &self.bounds {
            writeln!(f, "  bound: {b}")?;
        }
        if let Some(m) = &self.image {
            writeln!(f, "  image: {} ({})", m.reason, m.golden.display())?;
            writeln!(f, "    new image:  {}", m.new.display())?;
            if let Some(d) = &m.diff {
                writeln!(f, "    diff image: {}", d.display())?;
            }
            writeln!(
                f,
                "    if the change is intended, rerun with {ACCEPT_ENV}=1 to accept it"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for RegressionFailure {}

/// Similarity below which a report differs from its golden, by default.
pub const DEFAULT_MIN_SCORE: f64 = 0.995;

impl Recording {
    /// The broken bounds, one message each (empty when all hold).
    pub fn violations(&self, bounds: &Bounds) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.populations {
            if !p.frozen.is_empty() {
                out.push(format!(
                    "{}: `{}`: {} bodies became non-finite and were frozen (members {:?})",
                    self.scene,
                    p.name,
                    p.frozen.len(),
                    p.frozen.iter().take(8).collect::<Vec<_>>()
                ));
            }
            let drift = p.worst_drift();
            if drift.is_nan() || drift > bounds.max_drift {
                out.push(format!(
                    "{}: `{}`: max relative energy drift {drift:.3e} > {:.1e}",
                    self.scene, p.name, bounds.max_drift
                ));
            }
            let median = p.worst_median_drift();
            if median.is_nan() || median > bounds.max_median_drift {
                out.push(format!(
                    "{}: `{}`: median relative energy drift {median:.3e} > {:.1e} (a secular drift)",
                    self.scene, p.name, bounds.max_median_drift
                ));
            }
            let ds = p.worst_entropy_step();
            if p.generic && (ds.is_nan() || ds < bounds.min_entropy_step) {
                out.push(format!(
                    "{}: `{}`: entropy fell by {:.3e} in one step (allowed {:.1e})",
                    self.scene, p.name, -ds, -bounds.min_entropy_step
                ));
            }
        }
        out
    }

    /// Checks the bounds and compares the report with `golden` at the default score
    /// ([`DEFAULT_MIN_SCORE`]); see [`Recording::check_with`].
    ///
    /// # Errors
    /// [`RegressionFailure`] listing broken bounds and the image mismatch.
    #[expect(
        clippy::result_large_err,
        reason = "built once, when a check fails, and carries the whole report"
    )]
    pub fn check(
        &self,
        bounds: &Bounds,
        golden: impl AsRef<Path>,
    ) -> Result<(), RegressionFailure> {
        self.check_with(bounds, golden, DEFAULT_MIN_SCORE)
    }

    /// Checks the bounds, renders the report and compares it with `golden`: a score
    /// below `min_score`, a different size or a missing golden fails and writes
    /// `NAME.new.png` (and `NAME.diff.png`) next to the golden. With
    /// `NOETHER_ACCEPT_GOLDEN=1` the report replaces the golden instead.
    ///
    /// # Errors
    /// [`RegressionFailure`] listing broken bounds and the image mismatch.
    #[expect(
        clippy::result_large_err,
        reason = "built once, when a check fails, and carries the whole report"
    )]
    pub fn check_with(
        &self,
        bounds: &Bounds,
        golden: impl AsRef<Path>,
        min_score: f64,
    ) -> Result<(), RegressionFailure> {
        let golden = golden.as_ref();
        let image = self.render(bounds);
        let accept = std::env::var(ACCEPT_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        let mismatch = if accept {
            write_png(&image, golden).err().map(|reason| ImageMismatch {
                golden: golden.to_path_buf(),
                new: golden.to_path_buf(),
                diff: None,
                score: f64::NAN,
                reason,
            })
        } else {
            compare_with_golden(&image, golden, min_score).err()
        };
        let violations = self.violations(bounds);
        if violations.is_empty() && mismatch.is_none() {
            Ok(())
        } else {
            Err(RegressionFailure {
                bounds: violations,
                image: mismatch,
            })
        }
    }

    /// The report: one row per population with its relative energy drift (axis fixed at
    /// the bound), its entropy change (GENERIC), and the phase portraits of its first
    /// bodies.
    pub fn render(&self, bounds: &Bounds) -> RgbImage {
        noether::io::plot::fonts();
        let (w, row_h) = (1200u32, 300u32);
        let h = 40 + row_h * self.populations.len().max(1) as u32;
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            let _ = root.fill(&WHITE);
            let (title, body) = root.split_vertically(40);
            let _ = title.titled(
                &format!(
                    "{} — {} steps of {:.4} s",
                    self.scene,
                    self.populations.first().map_or(0, |p| p.max_drift.len()),
                    self.dt
                ),
                ("sans-serif", 20),
            );
            let rows = body.split_evenly((self.populations.len().max(1), 1));
            for (p, area) in self.populations.iter().zip(rows) {
                draw_population(p, &area, self.dt, bounds);
            }
            let _ = root.present();
        }
        RgbImage::from_raw(w, h, buf).expect("buffer of w·h·3 bytes")
    }
}

fn draw_population<DB: DrawingBackend>(
    p: &PopulationSeries,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    dt: f64,
    bounds: &Bounds,
) {
    let panels = area.split_evenly((1, 3));
    let t = |k: usize| (k + 1) as f64 * dt;
    let t_end = t(p.max_drift.len().max(1));
    let limit = f64::from(bounds.max_drift) * 1.25;
    let clamp = |v: f32, lo: f64, hi: f64| {
        if v.is_finite() {
            f64::from(v).clamp(lo, hi)
        } else {
            hi
        }
    };
    // Relative energy drift: worst body and median, axis fixed by the bound.
    if let Ok(mut chart) = ChartBuilder::on(&panels[0])
        .caption(
            format!(
                "{} ({}, {} bodies): energy drift",
                p.name, p.family, p.bodies
            ),
            ("sans-serif", 15),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(62)
        .build_cartesian_2d(0.0..t_end, -limit..limit)
    {
        let _ = chart
            .configure_mesh()
            .x_desc("t (s)")
            .y_desc("(E − E₀)/(E₀ − E_rest)")
            .y_label_formatter(&|v| label(*v, 0))
            .light_line_style(WHITE)
            .label_style(("sans-serif", 11))
            .draw();
        let bound = f64::from(bounds.max_drift);
        for y in [-bound, bound] {
            let _ = chart.draw_series(LineSeries::new(
                [(0.0, y), (t_end, y)],
                RGBColor(200, 0, 0).stroke_width(1),
            ));
        }
        let _ = chart.draw_series(LineSeries::new(
            p.max_drift
                .iter()
                .enumerate()
                .map(|(k, v)| (t(k), clamp(*v, -limit, limit))),
            noether::io::plot::palette(1).stroke_width(2),
        ));
        let _ = chart.draw_series(LineSeries::new(
            p.median_drift
                .iter()
                .enumerate()
                .map(|(k, v)| (t(k), clamp(*v, -limit, limit))),
            noether::io::plot::palette(0).stroke_width(2),
        ));
    }
    // Entropy: mean S − S₀ (GENERIC), or a note for Hamiltonian models.
    if p.generic {
        let top = p
            .entropy_change
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f32, f32::max);
        let top = nice_ceiling(f64::from(top));
        if let Ok(mut chart) = ChartBuilder::on(&panels[1])
            .caption("mean S − S₀", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(62)
            .build_cartesian_2d(0.0..t_end, -0.05 * top..top)
        {
            let _ = chart
                .configure_mesh()
                .x_desc("t (s)")
                .light_line_style(WHITE)
                .label_style(("sans-serif", 11))
                .y_label_formatter(&|v| label(*v, 1))
                .draw();
            let _ = chart.draw_series(LineSeries::new(
                p.entropy_change
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (t(k), clamp(*v, -0.05 * top, top))),
                noether::io::plot::palette(2).stroke_width(2),
            ));
        }
    } else {
        let _ = panels[1].draw_text(
            "Hamiltonian model: no entropy",
            &("sans-serif", 14).into_text_style(&panels[1]),
            (20, 140),
        );
    }
    // Phase portraits of the first bodies, on ranges rounded outward.
    let (mut q0, mut q1, mut p0, mut p1) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (q, pp) in p.portraits.iter().flatten() {
        if q.is_finite() && pp.is_finite() {
            (q0, q1) = (q0.min(f64::from(*q)), q1.max(f64::from(*q)));
            (p0, p1) = (p0.min(f64::from(*pp)), p1.max(f64::from(*pp)));
        }
    }
    let (q0, q1) = (-nice_ceiling(-q0), nice_ceiling(q1));
    let (p0, p1) = (-nice_ceiling(-p0), nice_ceiling(p1));
    if let Ok(mut chart) = ChartBuilder::on(&panels[2])
        .caption("phase portraits (q, p)", ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(50)
        .build_cartesian_2d(q0..q1.max(q0 + 1e-3), p0..p1.max(p0 + 1e-3))
    {
        let _ = chart
            .configure_mesh()
            .x_desc("q")
            .y_desc("p")
            .light_line_style(WHITE)
            .label_style(("sans-serif", 11))
            .draw();
        for (i, trace) in p.portraits.iter().enumerate() {
            let _ = chart.draw_series(LineSeries::new(
                trace
                    .iter()
                    .filter(|(q, pp)| q.is_finite() && pp.is_finite())
                    .map(|(q, pp)| (f64::from(*q), f64::from(*pp))),
                noether::io::plot::palette(i).stroke_width(1),
            ));
        }
    }
}

/// The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10ᵏ at or above `v` (0 for v ≤ 0): axis ends that do not
/// move with round-off.
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 0.0;
    }
    let k = v.log10().floor();
    let base = 10f64.powf(k);
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * base)
}

/// An axis label in scientific notation, and a plain 0 for round-off around zero.
fn label(v: f64, digits: usize) -> String {
    if v.abs() < 1e-12 {
        "0".into()
    } else {
        format!("{v:.digits$e}")
    }
}

/// Writes a PNG atomically (a temporary file beside it, renamed over it).
fn write_png(image: &RgbImage, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = noether::io::temp_beside(path);
    image
        .save(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(image::ImageError::IoError))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `NAME.new.png` and `NAME.diff.png` beside `NAME.png`.
fn sibling(golden: &Path, suffix: &str) -> PathBuf {
    let stem = golden
        .file_stem()
        .map_or("report".into(), |s| s.to_string_lossy().into_owned());
    golden.with_file_name(format!("{stem}.{suffix}.png"))
}

/// Compares `image` with the PNG at `golden` by image-compare's hybrid RGB score; on a
/// score below `min_score`, a size change or a missing/unreadable golden, writes the new
/// image (and a diff image) next to the golden.
///
/// # Errors
/// [`ImageMismatch`] with the paths written.
pub fn compare_with_golden(
    image: &RgbImage,
    golden: &Path,
    min_score: f64,
) -> Result<f64, ImageMismatch> {
    let new = sibling(golden, "new");
    let fail = |reason: String, diff: Option<PathBuf>, score: f64| {
        let reason = match write_png(image, &new) {
            Ok(()) => reason,
            Err(e) => format!("{reason}; writing the new image failed: {e}"),
        };
        Err(ImageMismatch {
            golden: golden.to_path_buf(),
            new: new.clone(),
            diff,
            score,
            reason,
        })
    };
    let expected = match image::open(golden) {
        Ok(g) => g.to_rgb8(),
        Err(e) => return fail(format!("no usable golden image: {e}"), None, f64::NAN),
    };
    if expected.dimensions() != image.dimensions() {
        return fail(
            format!(
                "size {:?} differs from the golden's {:?}",
                image.dimensions(),
                expected.dimensions()
            ),
            None,
            f64::NAN,
        );
    }
    let similarity = match image_compare::rgb_hybrid_compare(&expected, image) {
        Ok(s) => s,
        Err(e) => return fail(format!("comparison failed: {e}"), None, f64::NAN),
    };
    if similarity.score >= min_score {
        return Ok(similarity.score);
    }
    let diff = sibling(golden, "diff");
    let written = write_png(&similarity.image.to_color_map().into_rgb8(), &diff)
        .map(|()| diff.clone())
        .ok();
    fail(
        format!(
            "similarity {:.5} < {min_score} against the golden",
            similarity.score
        ),
        written,
        similarity.score,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_are_stable() {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert_eq!(nice_ceiling(0.0), 0.0);
        assert!(close(nice_ceiling(0.73), 0.8));
        assert!(close(nice_ceiling(1.0), 1.0));
        assert!(close(nice_ceiling(1.3), 1.5));
        assert!(close(nice_ceiling(3.1e-3), 4e-3));
        assert!(close(nice_ceiling(9.5), 10.0));
        assert_eq!(nice_ceiling(f64::NAN), 0.0);
    }

    #[test]
    fn a_missing_golden_fails_and_writes_the_new_image() {
        let dir = std::env::temp_dir().join(format!("noether-golden-{}", std::process::id()));
        let golden = dir.join("missing.png");
        let image = RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]));
        let err = compare_with_golden(&image, &golden, 0.99).unwrap_err();
        assert!(err.new.exists(), "{err:?}");
        assert!(err.reason.contains("no usable golden"));
        // The same image as golden passes with score 1.
        write_png(&image, &golden).unwrap();
        assert_eq!(compare_with_golden(&image, &golden, 0.99).unwrap(), 1.0);
        let other = RgbImage::from_pixel(8, 8, image::Rgb([250, 2, 3]));
        let err = compare_with_golden(&other, &golden, 0.99).unwrap_err();
        assert!(err.diff.as_ref().is_some_and(|d| d.exists()), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
