//! Learned physics without an engine: read a population scene, build its bodies, and step
//! them in a plain loop — what a server, a batch job or another engine's integration does.
//!
//! ```text
//! cargo run --example plain_loop                                   # the oscillator zoo
//! cargo run --example plain_loop -- assets/scenes/thermodynamics.noether.ron 20
//! ```
//!
//! Arguments: a scene file (default: the shipped oscillator zoo) and the simulated seconds
//! (default 10). Each population's model is read from the path the scene gives, relative to
//! the scene file; every population is one [`BodyBatch`] stepped at 60 Hz; the loop prints
//! the energy drift (and for GENERIC populations the smallest entropy change) at the end.

use std::{path::Path, process::ExitCode, time::Instant};

use noether::runtime::{BodyBatch, LearnedModel, SceneDescription, build_population};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let scene_path = args
        .next()
        .unwrap_or_else(|| "assets/scenes/oscillator_zoo.noether.ron".into());
    let seconds: f64 = match args.next().map(|s| s.parse()) {
        None => 10.0,
        Some(Ok(s)) if s > 0.0 && s <= 3600.0 => s,
        Some(_) => {
            eprintln!("error: the seconds must be a number in (0, 3600]");
            return ExitCode::FAILURE;
        }
    };
    match run(Path::new(&scene_path), seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(scene_path: &Path, seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    let shown = scene_path.display().to_string();
    let text = std::fs::read_to_string(scene_path).map_err(|e| format!("{shown}: {e}"))?;
    let scene = SceneDescription::parse(&text, &shown)?;
    let dir = scene_path.parent().unwrap_or(Path::new("."));
    let started = Instant::now();
    let mut batches = Vec::new();
    for (index, spec) in scene.populations.iter().enumerate() {
        let model = LearnedModel::load(&dir.join(&spec.model))?;
        let bodies = build_population(spec, index, &model, &shown)?;
        let batch = BodyBatch::new(model, spec.integrator, &bodies)?;
        println!(
            "{}: {} {} bodies, stepped with {}",
            spec.name,
            batch.len(),
            spec.family,
            batch.method()
        );
        batches.push((spec.name.clone(), batch));
    }
    println!("built in {:.2} s", started.elapsed().as_secs_f64());
    let dt = 1.0 / 60.0;
    let ticks = (seconds / dt).round() as usize;
    let started = Instant::now();
    for _ in 0..ticks {
        for (_, batch) in &mut batches {
            batch.step(dt)?;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let bodies: usize = batches.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{ticks} ticks of {bodies} bodies in {wall:.2} s: {:.0} body-steps/s",
        (ticks * bodies) as f64 / wall.max(1e-9)
    );
    println!("| population | largest relative energy drift | smallest entropy change |");
    println!("|---|---|---|");
    for (name, batch) in &batches {
        let ds = (0..batch.len())
            .map(|i| batch.energy(i).min_entropy_change)
            .fold(f32::INFINITY, f32::min);
        let ds = if ds.is_finite() {
            format!("{ds:.2e}")
        } else {
            "—".into()
        };
        println!("| {name} | {:.2e} | {ds} |", batch.max_drift());
    }
    Ok(())
}
