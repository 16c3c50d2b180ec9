//! `noether adapt`: fit a latent code to a new parameter set of a family from a few shots,
//! then report how well the adapted model predicts that system.

use std::path::PathBuf;

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::stream_rng,
    io::load_model,
    meta::{AdaptConfig, adapt_latents, eval::rollout_batch, system_shots, system_trajectories},
    metrics::{FieldGrid, field_error, trajectory_error},
    nn::cpu::{CpuModel, ModelParams},
};

use super::{CliResult, outln, parse_key_value};

/// Arguments of `noether adapt`.
#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// Model file (PATH.ron beside PATH.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// A parameter of the system to adapt to, `name=value` (repeatable; unset: default).
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, f64)>,
    /// Shots: (x, ẋ) samples of trajectories of that system.
    #[arg(long, default_value_t = 10)]
    shots: usize,
    /// Seed of the shot trajectories.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `noether adapt`.
pub fn run(args: AdaptArgs) -> CliResult {
    let model = load_model::<Flex>(&args.model, &Default::default())?;
    let config = &model.config;
    let family = config.family;
    let params = family.params_from_named(&args.params)?;
    let sys = family.build(&params)?;
    let spec = family.spec();
    let shots = system_shots(
        family,
        sys.as_ref(),
        &params,
        args.shots,
        &mut stream_rng("adapt/shots", args.seed, 0),
    )?;
    let mp = ModelParams::from_model(&model);
    let z0: Vec<f32> = config.mean_latent().iter().map(|v| *v as f32).collect();
    let adapted = adapt_latents(
        &mp,
        std::slice::from_ref(&shots),
        &z0,
        &AdaptConfig::for_model(config, args.shots),
    );
    let z = &adapted.latents[0];
    let cpu = CpuModel::from_params(&mp, config);

    // Held-out trajectories of the same system.
    let test = system_trajectories(
        family,
        sys.as_ref(),
        &params,
        5,
        &mut stream_rng("adapt/test", args.seed, 0),
    )?;
    let n = family.dim();
    let (mut errors, mut errors_mean) = (Vec::new(), Vec::new());
    for traj in &test {
        let truth: Vec<f64> = traj.iter().flat_map(|(x, _)| x.clone()).collect();
        let x0: Vec<f32> = truth[..n].iter().map(|v| *v as f32).collect();
        for (latent, errs) in [(z, &mut errors), (&z0, &mut errors_mean)] {
            let roll = rollout_batch(&cpu, latent, &x0, spec.dt, spec.samples);
            let pred: Vec<f64> = roll.iter().flatten().map(|v| f64::from(*v)).collect();
            errs.push(trajectory_error(&pred, &truth));
        }
    }
    let grid = FieldGrid::for_family(family);
    let truth = grid.evaluate(&|x, dx| sys.eval(x, dx));
    let gx: Vec<f32> = grid.points.iter().map(|v| *v as f32).collect();
    let zs: Vec<f32> = (0..grid.len()).flat_map(|_| z.iter().copied()).collect();
    let mut f = vec![0.0f32; gx.len()];
    cpu.field(&gx, &zs, &mut f);
    let pred: Vec<f64> = f.iter().map(|v| f64::from(*v)).collect();

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    outln!(
        "{family} with {}",
        spec.params
            .iter()
            .zip(&params)
            .map(|(p, v)| format!("{} = {v}", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "adapted on {} shots: shot loss {:.3e} → {:.3e}",
        args.shots,
        adapted.initial_loss,
        adapted.final_loss
    );
    outln!(
        "latent: [{}]",
        z.iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "ε_traj on 5 held-out trajectories: {:.3e} (mean training latent, not adapted: {:.3e})",
        mean(&errors),
        mean(&errors_mean)
    );
    outln!(
        "ε_field on the evaluation grid: {:.3e}",
        field_error(&pred, &truth)
    );
    Ok(())
}
