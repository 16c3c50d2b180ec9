//! `noether train-encoder`: train (or retrain) the encoder section of an existing model
//! file, the amortised start of online adaptation.

use std::{path::PathBuf, time::Instant};

use clap::Args;
use noether::{
    io::save_encoder,
    meta::{EncoderTraining, Profile, train_encoder},
    nn::ModelConfig,
    nn::cpu::ModelParams,
    runtime::LearnedModel,
};

use super::{CliResult, count_in, outln, progress_bar};

/// Arguments of `noether train-encoder`.
#[derive(Args, Debug)]
pub struct TrainEncoderArgs {
    /// Model file to add the encoder to (PATH.model.ron beside PATH.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// `quick` or `paper` budget.
    #[arg(long, default_value = "paper")]
    profile: Profile,
    /// Systems drawn from the training distribution (default: the profile's).
    #[arg(long, value_parser = count_in(2, 100_000))]
    instances: Option<usize>,
    /// Observed windows per system (default: the profile's).
    #[arg(long, value_parser = count_in(1, 10_000))]
    windows: Option<usize>,
    /// Adam steps (default: the profile's).
    #[arg(long, value_parser = count_in(1, 10_000_000))]
    steps: Option<usize>,
    /// Seconds of observations the encoder reads, 0.1 … 30 (default: the profile's).
    #[arg(long, value_parser = super::number_in(0.1, 30.0, false))]
    span: Option<f64>,
    /// Seed of the draws (default: the model's).
    #[arg(long)]
    seed: Option<u64>,
}

/// Trains the encoder of the model (`config`, `params`) with `settings` behind a progress
/// bar, and writes it into the model file at `path`.
pub fn train_into(
    config: &ModelConfig,
    params: &ModelParams,
    settings: &EncoderTraining,
    path: &std::path::Path,
) -> CliResult {
    let start = Instant::now();
    let bar = progress_bar(settings.steps as u64, "encoder");
    let encoder = train_encoder(config, params, settings, &mut |step, loss| {
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.2e}"));
    })?;
    bar.finish_and_clear();
    let record = encoder.spec().record.clone();
    save_encoder(path, &encoder)?;
    outln!(
        "encoder: {} systems × {} windows, {} steps in {:.1} s; validation loss {:.3e} (standardised MSE)",
        settings.instances,
        settings.windows,
        settings.steps,
        start.elapsed().as_secs_f64(),
        record.map_or(f64::NAN, |r| r.validation_loss)
    );
    Ok(())
}

/// Runs `noether train-encoder`.
pub fn run(args: TrainEncoderArgs) -> CliResult {
    let model = LearnedModel::load(&args.model)?;
    let mut settings = args.profile.encoder(args.seed.unwrap_or(model.config.seed));
    settings.instances = args.instances.unwrap_or(settings.instances);
    settings.windows = args.windows.unwrap_or(settings.windows);
    settings.steps = args.steps.unwrap_or(settings.steps);
    settings.span = args.span.unwrap_or(settings.span);
    train_into(&model.config, &model.params, &settings, &args.model)?;
    outln!("wrote the encoder section of {}", args.model.display());
    Ok(())
}
