//! `noether-play SCENE`: open a population scene in a window, or step it headless.
//!
//! ```text
//! noether-play scenes/oscillator_zoo.noether.ron                      # window
//! noether-play scenes/oscillator_zoo.noether.ron --headless --seconds 10
//! noether-play assets/scenes/thermodynamics.noether.ron               # a path from here works too
//! ```
//!
//! | key | action |
//! |---|---|
//! | Space | pause / resume the dynamics |
//! | S | one step (pauses) |
//! | + / − | double / halve the simulation speed |
//! | Esc | quit |
//!
//! The scene is an asset path under `--root` (default `assets`, as Bevy's `DefaultPlugins`
//! read it), or a file path that lies inside the root; its models are named relative to it.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use bevy::{app::AppExit, asset::AssetPlugin, prelude::*};
use bevy_noether::{
    adapt::AdaptationStats,
    diagnostics::summarize_populations,
    dynamics::{ActiveBackend, FrozenBody, NoetherBackend, StepDiagnostics},
    headless::{headless_app_with, load_scene},
    prelude::*,
};
use clap::Parser;
use noether::io::args::number_in;

/// Open a noether population scene.
#[derive(Parser, Debug)]
#[command(name = "noether-play", version, about)]
struct Args {
    /// Scene file (`*.noether.ron`): an asset path under `--root`, or a file path inside it.
    #[arg(default_value = "scenes/oscillator_zoo.noether.ron")]
    scene: String,
    /// Step without a window and print a summary.
    #[arg(long)]
    headless: bool,
    /// Simulated seconds to run headless, 0 … 10⁶.
    #[arg(long, default_value_t = 10.0, value_parser = number_in(0.0, 1e6, false))]
    seconds: f64,
    /// Headless: pace the ticks at wall-clock speed, as a game would (online adaptation
    /// then sees observations arrive in real time), instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// Fixed timestep rate, 1 … 1000 Hz.
    #[arg(long, default_value_t = 64.0, value_parser = number_in(1.0, 1000.0, false))]
    hz: f64,
    /// Asset root holding the scene and its models.
    #[arg(long, default_value = "assets")]
    root: PathBuf,
    /// With a window: save a screenshot to this PNG after `--frames` frames (repeat the flag
    /// for more shots, `--frames` apart), then quit.
    #[arg(long)]
    screenshot: Vec<PathBuf>,
    /// Which device steps the bodies: `auto` (measure both per batch on a hardware GPU, CPU
    /// kernel otherwise), `measure` (measure on any adapter), `cpu`, `gpu`.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Frames before each screenshot, 1 … 10⁶.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    frames: u32,
}

/// `--backend`, mapped onto [`NoetherBackend`].
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BackendArg {
    Auto,
    Measure,
    Cpu,
    Gpu,
}

impl From<BackendArg> for NoetherBackend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => NoetherBackend::Auto,
            BackendArg::Measure => NoetherBackend::Measure,
            BackendArg::Cpu => NoetherBackend::Cpu,
            BackendArg::Gpu => NoetherBackend::Gpu,
        }
    }
}

/// This process's resident memory, MiB (Linux; `None` elsewhere).
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // Out-of-range and malformed values exit with 1, like every bad input.
            return match e.kind() {
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue => {
                    ExitCode::FAILURE
                }
                _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
            };
        }
    };
    let root = match std::fs::canonicalize(&args.root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: asset root {}: {e}", args.root.display());
            return ExitCode::FAILURE;
        }
    };
    let scene = match scene_asset_path(&root, &args.scene) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.headless {
        headless(&args, root, &scene)
    } else {
        windowed(&args, root, &scene)
    }
}

/// The scene's asset path under `root`: `scene` itself when it names a file there, or, when
/// it is a file path (relative to the working directory, or absolute) inside the root, the
/// part below the root.
fn scene_asset_path(root: &std::path::Path, scene: &str) -> Result<String, String> {
    if std::path::Path::new(scene).is_relative() && root.join(scene).is_file() {
        return Ok(scene.replace('\\', "/"));
    }
    let file = std::fs::canonicalize(scene)
        .map_err(|_| format!("scene {scene} not found under {} or here", root.display()))?;
    let inside = file.strip_prefix(root).map_err(|_| {
        format!(
            "scene {} lies outside the asset root {}; pass --root with a folder that holds it and its models",
            file.display(),
            root.display()
        )
    })?;
    Ok(inside.to_string_lossy().replace('\\', "/"))
}

fn asset_plugin(root: &std::path::Path, watch: bool) -> AssetPlugin {
    AssetPlugin {
        file_path: root.display().to_string(),
        watch_for_changes_override: Some(watch),
        ..default()
    }
}

fn headless(args: &Args, root: PathBuf, scene: &str) -> ExitCode {
    let mut app = headless_app_with(
        &root,
        args.hz,
        NoetherPlugins::default().with_backend(args.backend.into()),
    );
    // What `App::run` would do first: plugins make their final choices (the backend).
    app.finish();
    app.cleanup();
    let loading = Instant::now();
    if let Err(e) = load_scene(&mut app, scene, Duration::from_secs(120)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let load_seconds = loading.elapsed().as_secs_f64();
    let rss_loaded = resident_mib();
    let start_steps = app.world().resource::<Time<Simulation>>().context().steps();
    let started = Instant::now();
    let ticks = (args.seconds * args.hz).round() as u64;
    for tick in 1..=ticks {
        app.update();
        if args.realtime {
            let due = started + Duration::from_secs_f64(tick as f64 / args.hz);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let rss_end = resident_mib();
    let world = app.world_mut();
    let steps = world.resource::<Time<Simulation>>().context().steps() - start_steps;
    let simulated = world.resource::<Time<Simulation>>().elapsed_secs_f64();
    let diag = world.resource::<StepDiagnostics>().clone();
    let adapt = world.get_resource::<AdaptationStats>().cloned();
    let mut q = world.query::<(Entity, &Population, &BodyEnergy, Has<FrozenBody>)>();
    let summary = summarize_populations(q.iter(world));
    let bodies: usize = summary.iter().map(|p| p.bodies).sum();
    println!("scene {scene} — {bodies} bodies, loaded in {load_seconds:.2} s");
    let active = world.resource::<ActiveBackend>();
    println!("dynamics: {}", active.description);
    for c in &active.choices {
        println!(
            "  {} ({} bodies): GPU {:.3} ms, CPU kernel {:.3} ms per step → {}",
            c.batch,
            c.bodies,
            c.gpu_ms,
            c.cpu_ms,
            if c.gpu { "GPU" } else { "CPU kernel" }
        );
    }
    println!(
        "{steps} fixed steps ({simulated:.2} s simulated) in {wall:.2} s wall: {:.0} body-steps/s, last step {:.2} ms, unconverged solves {}",
        bodies as f64 * steps as f64 / wall.max(1e-9),
        diag.step_ms,
        diag.non_converged
    );
    if diag.frozen > 0 {
        println!(
            "{} bodies are frozen: their state stopped being finite (see the log)",
            diag.frozen
        );
    }
    if diag.invalid > 0 {
        println!(
            "{} bodies were not stepped: they do not fit their model (see the log)",
            diag.invalid
        );
    }
    println!(
        "| population | bodies | frozen (non-finite) | relative energy drift: median | max | min per-step dS |"
    );
    println!("|---|---|---|---|---|---|");
    for p in summary {
        let ds = if p.min_entropy_change.is_finite() {
            format!("{:.2e}", p.min_entropy_change)
        } else {
            "—".into()
        };
        println!(
            "| {} ({}) | {} | {} | {:.2e} | {:.2e} | {ds} |",
            p.name, p.family, p.bodies, p.frozen, p.median_drift, p.max_drift
        );
    }
    if let (Some(a), Some(b)) = (rss_loaded, rss_end) {
        println!("memory: {a:.1} MiB resident after loading, {b:.1} MiB at the end");
    }
    if let Some(a) = adapt.filter(|a| a.jobs_sent > 0) {
        println!(
            "adaptation: {} observing, {} adapting, {} converged, {} stalled, {} diverged; {} latent updates ({} rejected) in {} jobs, {:.2} worker s",
            a.phases[0],
            a.phases[1],
            a.phases[2],
            a.phases[4],
            a.phases[3],
            a.updates,
            a.rejected,
            a.jobs_done,
            a.worker_seconds
        );
    }
    ExitCode::SUCCESS
}

/// Screenshots to take, one every `every` frames, then quit.
#[cfg(feature = "render")]
#[derive(Resource)]
struct Screenshots {
    paths: Vec<PathBuf>,
    every: u32,
    countdown: u32,
    /// The shot in flight: its index in `paths`.
    pending: Option<usize>,
    taken: usize,
}

/// Takes the next screenshot when its frame comes, and quits after the last one is written.
#[cfg(feature = "render")]
fn screenshot(
    mut commands: Commands,
    mut shots: ResMut<Screenshots>,
    mut exit: MessageWriter<AppExit>,
) {
    use bevy::render::view::screenshot::{Screenshot, save_to_disk};
    if let Some(i) = shots.pending {
        // `save_to_disk` writes the whole file inside the observer, so existing means done.
        if shots.paths[i].exists() {
            shots.pending = None;
            shots.taken += 1;
            shots.countdown = shots.every;
        }
        return;
    }
    if shots.taken == shots.paths.len() {
        exit.write(AppExit::Success);
        return;
    }
    if shots.countdown > 0 {
        shots.countdown -= 1;
        return;
    }
    let i = shots.taken;
    shots.pending = Some(i);
    commands
        .spawn(Screenshot::primary_window())
        .observe(save_to_disk(shots.paths[i].clone()));
}

#[cfg(feature = "render")]
fn windowed(args: &Args, root: PathBuf, scene: &str) -> ExitCode {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(asset_plugin(&root, true))
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: format!("noether — {scene}"),
                    resolution: (1280, 800).into(),
                    ..default()
                }),
                ..default()
            }),
    )
    .insert_resource(Time::<Fixed>::from_hz(args.hz))
    .insert_resource(ClearColor(Color::srgb(0.06, 0.07, 0.09)))
    .add_plugins((
        NoetherPlugins::default().with_backend(args.backend.into()),
        VisualsPlugin,
        SimulationControlsPlugin,
    ));
    #[cfg(feature = "egui")]
    app.add_plugins(InspectorPlugin);
    if !args.screenshot.is_empty() {
        for path in &args.screenshot {
            let _ = std::fs::remove_file(path);
        }
        app.insert_resource(Screenshots {
            paths: args.screenshot.clone(),
            every: args.frames,
            countdown: args.frames,
            pending: None,
            taken: 0,
        })
        .add_systems(Update, screenshot);
    }
    let scene = app.world().resource::<AssetServer>().load(scene.to_owned());
    app.world_mut().spawn(NoetherSceneRoot(scene));
    match app.run() {
        AppExit::Success => ExitCode::SUCCESS,
        AppExit::Error(_) => ExitCode::FAILURE,
    }
}

#[cfg(not(feature = "render"))]
fn windowed(_args: &Args, _root: PathBuf, _scene: &str) -> ExitCode {
    eprintln!("error: this build has no window (feature `render` is off); use --headless");
    ExitCode::FAILURE
}
