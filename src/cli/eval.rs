//! `noether eval`: adapt a trained model to each meta-test instance and report the metrics.

use std::path::PathBuf;

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::{DatasetSpec, load_or_generate},
    meta::{
        AdaptConfig, BaselineOutcome, LatentStart, Method, Profile, TaskSet, adapt_latents,
        evaluate, evaluate_baseline, evaluate_encoder, latent_distance,
    },
    runtime::LearnedModel,
};

use super::{CliResult, count_in, limits, outln};

/// Arguments of `noether eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (PATH.model.ron beside PATH.safetensors; PATH alone works too).
    #[arg(long)]
    model: PathBuf,
    /// Shots per test instance, 1 … 10 000.
    #[arg(long, default_value_t = 10, value_parser = count_in(1, limits::MAX_SHOTS))]
    shots: usize,
    /// Dataset seed (default: the model's seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Start adaptation from zero instead of the mean training latent.
    #[arg(long)]
    zero_start: bool,
    /// Dataset cache directory.
    #[arg(long, default_value = "data")]
    data: PathBuf,
}

/// Runs `noether eval`.
pub fn run(args: EvalArgs) -> CliResult {
    let model = LearnedModel::load(&args.model)?;
    let config = &model.config;
    let seed = args.seed.unwrap_or(config.seed);
    let (data, _) = load_or_generate(&args.data, &DatasetSpec::new(config.family, seed), &|_| ())?;
    let tasks = TaskSet::new(&data);
    let (params, cpu) = (&*model.params, &*model.cpu);
    let start = if args.zero_start {
        LatentStart::Zero
    } else {
        LatentStart::Mean
    };
    let adapt = AdaptConfig {
        start,
        ..AdaptConfig::for_model(config, args.shots)
    };
    let z0: Vec<f32> = match start {
        LatentStart::Mean => config.mean_latent().iter().map(|v| *v as f32).collect(),
        LatentStart::Zero => vec![0.0; config.d_latent],
    };
    let method: Method = config
        .training
        .as_ref()
        .map_or(Ok(Method::Modulated(config.modulation)), |t| {
            t.method.parse()
        })?;
    let mut decoded = None;
    let report = match method {
        Method::Modulated(_) => {
            let shots: Vec<_> = tasks
                .meta_test()
                .into_iter()
                .map(|i| tasks.shots(i, args.shots))
                .collect();
            let adapted = adapt_latents(params, &shots, &z0, &adapt);
            outln!(
                "{} {} ({} shots, {:?} start): shot loss {:.3e} → {:.3e}",
                config.family,
                config.modulation,
                args.shots,
                start,
                adapted.initial_loss,
                adapted.final_loss
            );
            decoded = Some(adapted.latents.clone());
            evaluate(&tasks, |k, _| (cpu, adapted.latents[k].clone()))
        }
        Method::Baseline(b) => {
            outln!(
                "{} {b} ({} shots, weights adapted)",
                config.family,
                args.shots
            );
            let outcome = BaselineOutcome {
                config: config.clone(),
                params: params.clone(),
                history: vec![],
                diverged: None,
            };
            evaluate_baseline::<Flex>(
                &outcome,
                b,
                &Profile::Paper.baseline(seed),
                &tasks,
                args.shots,
                &Default::default(),
            )
        }
    };
    outln!("| instance | ε_traj | ε_field | SSIM | energy drift / min dS/dt |");
    outln!("|---|---|---|---|---|");
    for m in &report.instances {
        let structure = m
            .energy_drift
            .or(m.min_ds_dt)
            .map_or("—".into(), |v| format!("{v:.2e}"));
        outln!(
            "| {} | {:.3e} | {:.3e} | {} | {structure} |",
            m.instance,
            m.traj_error,
            m.field_error,
            m.ssim.map_or("—".into(), |s| format!("{s:.4}"))
        );
    }
    let (t, f) = (report.traj_error(), report.field_error());
    outln!(
        "mean: ε_traj {:.3e} ± {:.1e}, ε_field {:.3e} ± {:.1e}",
        t.mean,
        t.std,
        f.mean,
        f.std
    );
    if let (Some(encoder), Some(decoded)) = (&model.encoder, &decoded) {
        let e = evaluate_encoder(&tasks, cpu, encoder, &model.mean_latent(), 0.01, 2, seed)?;
        outln!();
        outln!(
            "amortised start: one observed window per test instance ({:.1} s of positions every 0.05 s, 1 % noise)",
            encoder.span()
        );
        outln!("| start | ε_traj | ε_field |");
        outln!("|---|---|---|");
        for (name, r) in [
            ("mean latent".to_owned(), &e.mean),
            ("encoder only".to_owned(), &e.encoded),
            ("encoder + 2 Gauss–Newton steps".to_owned(), &e.refined),
            (
                format!(
                    "auto-decoding ({} shots, {} Adam steps)",
                    args.shots, adapt.steps
                ),
                &report,
            ),
        ] {
            let (t, f) = (r.traj_error(), r.field_error());
            outln!(
                "| {name} | {:.3e} ± {:.1e} | {:.3e} ± {:.1e} |",
                t.mean,
                t.std,
                f.mean,
                f.std
            );
        }
        let std = &config.latents.std;
        let mean = model.mean_latent();
        let distance = |latents: &mut dyn Iterator<Item = &Vec<f32>>| {
            let d: Vec<f64> = latents
                .zip(decoded)
                .map(|(z, reference)| latent_distance(z, reference, std))
                .collect();
            d.iter().sum::<f64>() / d.len().max(1) as f64
        };
        outln!(
            "distance to the auto-decoded latents (RMS, in training-latent standard deviations): mean latent {:.3}, encoder {:.3}",
            distance(&mut std::iter::repeat_n(&mean, decoded.len())),
            distance(&mut e.encoded_latents.iter())
        );
    }
    Ok(())
}
