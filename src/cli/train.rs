//! `noether train`: meta-train one model (a modulation by Algorithm 1, or a baseline).

use std::{path::PathBuf, time::Instant};

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::{DatasetSpec, load_or_generate},
    io::save_model,
    meta::{Method, Profile, TaskSet, meta_train, train_baseline},
    nn::{ModelConfig, Modulation, cpu::ModelParams},
    systems::Family,
};

use super::{CliResult, count_in, limits, number_in, outln, progress_bar};

/// Arguments of `noether train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Family.
    #[arg(long)]
    system: Family,
    /// Method: shift, fw, ro, mr<r>, svd<r>, or a baseline: scratch, maml, anil, reptile.
    #[arg(long, default_value = "svd5")]
    method: Method,
    /// Rank r for mr/svd (overrides the rank in `--method`).
    #[arg(long, value_parser = count_in(1, limits::MAX_RANK))]
    rank: Option<usize>,
    /// Seed (dataset, initial weights and batches).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `quick` or `paper` iteration budget.
    #[arg(long, default_value = "paper")]
    profile: Profile,
    /// Outer iterations (default: the profile's).
    #[arg(long, value_parser = count_in(1, limits::MAX_ITERATIONS))]
    iterations: Option<usize>,
    /// λ_z, latent penalty, in [0, 10⁶] (default: the protocol's).
    #[arg(long, value_parser = number_in(0.0, limits::MAX_LAMBDA, false))]
    lambda_z: Option<f64>,
    /// λ_φ, hypernetwork penalty, in [0, 10⁶] (default: the protocol's).
    #[arg(long, value_parser = number_in(0.0, limits::MAX_LAMBDA, false))]
    lambda_phi: Option<f64>,
    /// Output model path (writes PATH.model.ron and PATH.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Dataset cache directory.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Adam steps of the encoder trained after the model (default: the profile's; 0: no
    /// encoder). Baselines get none.
    #[arg(long, value_parser = count_in(0, 10_000_000))]
    encoder_steps: Option<usize>,
}

/// Runs `noether train`.
pub fn run(args: TrainArgs) -> CliResult {
    let (data, _) = load_or_generate(
        &args.data,
        &DatasetSpec::new(args.system, args.seed),
        &|_| (),
    )?;
    let tasks = TaskSet::new(&data);
    let device = Default::default();
    let start = Instant::now();
    let method = match (args.method, args.rank) {
        (Method::Modulated(Modulation::Mr { .. }), Some(rank)) => {
            Method::Modulated(Modulation::Mr { rank })
        }
        (Method::Modulated(Modulation::Svd { .. }), Some(rank)) => {
            Method::Modulated(Modulation::Svd { rank })
        }
        (m, _) => m,
    };
    let base = ModelConfig::new(args.system, Modulation::None).with_seed(args.seed);
    let model = match method {
        Method::Modulated(modulation) => {
            let mut cfg = args.profile.meta(args.seed);
            if let Some(it) = args.iterations {
                cfg.iterations = it;
                cfg.validate_every = cfg.validate_every.min(it);
            }
            if let Some(v) = args.lambda_z {
                cfg.lambda_z = v;
                cfg.adapt.lambda_z = v;
            }
            if let Some(v) = args.lambda_phi {
                cfg.lambda_phi = v;
            }
            let bar = progress_bar(cfg.iterations as u64, "iterations");
            let config = ModelConfig { modulation, ..base };
            let outcome = meta_train::<Flex>(&config, &tasks, &cfg, &device, &mut |it, loss| {
                bar.set_position(it as u64);
                if it % 100 == 0 {
                    bar.set_message(format!("loss {loss:.2e}"));
                }
            });
            bar.finish_and_clear();
            if let Some(reason) = &outcome.diverged {
                outln!("diverged: {reason}");
            }
            outln!(
                "{} iterations in {:.1} s ({:.1} it/s); best validation error {:.3e} at iteration {}",
                cfg.iterations,
                start.elapsed().as_secs_f64(),
                cfg.iterations as f64 / start.elapsed().as_secs_f64(),
                outcome.best_validation,
                outcome.best_iteration
            );
            for h in &outcome.history {
                outln!(
                    "  iteration {:>6}: loss {:.3e}, validation {:.3e}",
                    h.iteration,
                    h.loss,
                    h.validation
                );
            }
            outcome.model
        }
        Method::Baseline(baseline) => {
            let mut cfg = args.profile.baseline(args.seed);
            if let Some(it) = args.iterations {
                cfg.iterations = it;
            }
            let bar = progress_bar(cfg.iterations as u64, "iterations");
            let outcome =
                train_baseline::<Flex>(&base, baseline, &tasks, &cfg, &device, &mut |it, _| {
                    bar.set_position(it as u64)
                });
            bar.finish_and_clear();
            if let Some(reason) = &outcome.diverged {
                outln!("diverged: {reason}");
            }
            outln!(
                "{baseline}: {} meta-iterations in {:.1} s",
                cfg.iterations,
                start.elapsed().as_secs_f64()
            );
            outcome.params.to_model::<Flex>(&outcome.config, &device)
        }
    };
    save_model(&model, &args.out)?;
    let mut encoder = args.profile.encoder(args.seed);
    encoder.steps = args.encoder_steps.unwrap_or(encoder.steps);
    if matches!(method, Method::Modulated(_)) && encoder.steps > 0 {
        super::encoder::train_into(
            &model.config,
            &ModelParams::from_model(&model),
            &encoder,
            &args.out,
        )?;
    }
    outln!("wrote {}", args.out.display());
    Ok(())
}
