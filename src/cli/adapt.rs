//! `noether adapt`: fit a latent code to a new parameter set of a family from a few shots,
//! then report how well the adapted model predicts that system; or, with `--observations`,
//! fit a latent to a recorded trajectory (the offline form of online adaptation).

use std::path::PathBuf;

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::stream_rng,
    io::{load_model, read_observations},
    meta::{
        AdaptConfig, FitConfig, ObservedPart, Track, adapt_latents, eval::rollout_batch,
        fit_latent, system_shots, system_trajectories,
    },
    metrics::{FieldGrid, field_error, trajectory_error},
    nn::cpu::{CpuModel, ModelParams},
};

use super::{CliResult, count_in, limits, outln, parse_key_value};

/// Arguments of `noether adapt`.
#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// Model file (PATH.model.ron beside PATH.safetensors; PATH alone works too).
    #[arg(long)]
    model: PathBuf,
    /// A parameter of the system to adapt to, `name=value` (repeatable; unset: default).
    #[arg(long = "param", value_parser = parse_key_value)]
    params: Vec<(String, f64)>,
    /// Shots: (x, ẋ) samples of trajectories of that system.
    #[arg(long, default_value_t = 10, value_parser = count_in(1, limits::MAX_SHOTS))]
    shots: usize,
    /// Seed of the shot trajectories.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A recorded trajectory to fit instead (CSV: `t` then the observed columns, as
    /// `noether simulate` prints; energy/entropy columns are ignored).
    #[arg(long, conflicts_with_all = ["params", "shots"])]
    observations: Option<PathBuf>,
    /// What the recording holds (default: full states when it has every state column,
    /// positions when it has exactly the positions).
    #[arg(long, value_enum, requires = "observations")]
    observed: Option<Observed>,
    /// Levenberg–Marquardt steps at most (with `--observations`).
    #[arg(long, default_value_t = 50, requires = "observations", value_parser = count_in(1, limits::MAX_FIT_STEPS))]
    steps: usize,
}

/// What a recording holds.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Observed {
    /// Positions q only.
    Positions,
    /// Full states.
    States,
}

impl From<Observed> for ObservedPart {
    fn from(o: Observed) -> Self {
        match o {
            Observed::Positions => Self::Positions,
            Observed::States => Self::States,
        }
    }
}

/// `noether adapt --observations`: fit a latent to a recording and report the misfit.
fn fit_recording(args: &AdaptArgs, path: &std::path::Path) -> CliResult {
    let model = load_model::<Flex>(&args.model, &Default::default())?;
    let config = &model.config;
    let family = config.family;
    let (obs, part) = read_observations(
        path,
        family.dim(),
        family.dof(),
        args.observed.map(Into::into),
    )?;
    let cpu = CpuModel::from_params(&ModelParams::from_model(&model), config);
    let track = Track {
        observations: &obs,
        part,
    };
    let fit_config = FitConfig::default();
    let z0: Vec<f32> = config.mean_latent().iter().map(|v| *v as f32).collect();
    let fit = fit_latent(&cpu, track, z0, &fit_config, args.steps)?;
    let rms = |loss: f64, z: &[f32]| {
        let reg: f64 = z.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() * fit_config.lambda_z;
        (loss - reg).max(0.0).sqrt()
    };
    outln!(
        "{family}: {} observations of {} over {:.3} s",
        obs.len(),
        match part {
            ObservedPart::Positions => "positions",
            ObservedPart::States => "full states",
        },
        obs[obs.len() - 1].t - obs[0].t
    );
    let z_mean: Vec<f32> = config.mean_latent().iter().map(|v| *v as f32).collect();
    outln!(
        "trajectory loss {:.3e} → {:.3e} in {} Levenberg–Marquardt steps ({})",
        fit.initial_loss,
        fit.loss,
        fit.steps,
        if fit.converged {
            "converged"
        } else {
            "step limit reached"
        }
    );
    outln!(
        "RMS misfit of the observed values: {:.3e} (mean training latent: {:.3e})",
        rms(fit.loss, &fit.state.latent),
        rms(fit.initial_loss, &z_mean)
    );
    if !fit.state.hidden.is_empty() {
        let names = &family.spec().state[obs[0].values.len()..];
        outln!(
            "fitted unobserved start: {}",
            names
                .iter()
                .zip(&fit.state.hidden)
                .map(|(n, v)| format!("{n} = {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    outln!(
        "latent: [{}]",
        fit.state
            .latent
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Runs `noether adapt`.
pub fn run(args: AdaptArgs) -> CliResult {
    if let Some(path) = &args.observations {
        return fit_recording(&args, path);
    }
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
