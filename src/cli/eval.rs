//! `noether eval`: adapt a trained model to each meta-test instance and report the metrics.

use std::path::PathBuf;

use burn::backend::Flex;
use clap::Args;
use noether::{
    data::{DatasetSpec, load_or_generate},
    meta::{
        AdaptConfig, AdaptSolver, BaselineOutcome, LatentStart, Method, Profile, QUERY, TaskSet,
        adapt_latents, evaluate, evaluate_baseline, evaluate_encoder, latent_distance,
        training_box,
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
    /// Test-time adaptation solver: `adam` (the paper's: the model's validated steps at a
    /// constant rate) or `gauss-newton` (the same, then Levenberg–Marquardt with the exact
    /// ∂f/∂z to the loss's floor). Default: the one the model was
    /// validated with (Adam for models trained before protocol v2).
    #[arg(long)]
    solver: Option<AdaptSolver>,
    /// Step cap of the adaptation solver (default: the model's validated Adam steps).
    #[arg(long, value_parser = count_in(1, 100_000))]
    adapt_steps: Option<usize>,
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
    let validated = AdaptConfig::for_model(config, args.shots);
    let adapt = AdaptConfig {
        start,
        solver: args.solver.unwrap_or(validated.solver),
        steps: args.adapt_steps.unwrap_or(validated.steps),
        ..validated
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
                "{} {} ({} shots, {:?} start, {:?} ≤ {} steps): shot loss {:.3e} → {:.3e}",
                config.family,
                config.modulation,
                args.shots,
                start,
                adapt.solver,
                adapt.steps,
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
            // The inner loop the model was trained (and tuned) with.
            let mut cfg = Profile::Paper.baseline(seed);
            if let Some(t) = &config.training {
                (cfg.inner_lr, cfg.inner_steps) = (t.adapt_lr, t.adapt_steps);
            }
            evaluate_baseline::<Flex>(&outcome, b, &cfg, &tasks, args.shots, &Default::default())
        }
    };
    // What makes an instance hard: its parameters (against the training range, in the
    // header) and the size of its query orbits.
    let names: Vec<&str> = config.family.spec().params.iter().map(|p| p.name).collect();
    let ranges: Vec<String> = config
        .family
        .spec()
        .params
        .iter()
        .map(|p| format!("{} ∈ [{}, {}]", p.name, p.train.lo, p.train.hi))
        .collect();
    outln!("training parameters: {}", ranges.join(", "));
    let grid = training_box(&tasks);
    let n = config.family.dim();
    let bounds: Vec<String> = config
        .family
        .spec()
        .state
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let values = grid.points.iter().skip(c).step_by(n);
            let lo = values.clone().copied().fold(f64::INFINITY, f64::min);
            let hi = values.copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{name} ∈ [{lo:.3}, {hi:.3}]")
        })
        .collect();
    outln!("training box (ε_field grid): {}", bounds.join(", "));
    outln!(
        "| instance | ε_traj | ε_field (training box) | ε_field [−3, 3]² (OOD) | SSIM [−3, 3]² | energy drift / min dS/dt | {} | query orbit radius |",
        names.join(", ")
    );
    outln!("|---|---|---|---|---|---|---|---|");
    for m in &report.instances {
        let structure = m
            .energy_drift
            .or(m.min_ds_dt)
            .map_or("—".into(), |v| format!("{v:.2e}"));
        let (data, local) = tasks.locate(m.instance);
        let params: Vec<String> = data
            .params_of(local)
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect();
        outln!(
            "| {} | {:.3e} | {} | {:.3e} | {} | {structure} | {} | {:.3} |",
            m.instance,
            m.traj_error,
            m.field_error_train
                .map_or("—".into(), |v| format!("{v:.3e}")),
            m.field_error,
            m.ssim.map_or("—".into(), |s| format!("{s:.4}")),
            params.join(", "),
            orbit_radius(data, local)
        );
    }
    let (t, f) = (report.traj_error(), report.field_error());
    let train = report
        .field_error_train()
        .map_or("—".into(), |s| format!("{:.3e} ± {:.1e}", s.mean, s.std));
    outln!(
        "mean: ε_traj {:.3e} ± {:.1e}, ε_field (training box) {train}, ε_field [−3, 3]² {:.3e} ± {:.1e}",
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
                    "auto-decoding ({} shots, {:?} ≤ {} steps)",
                    args.shots, adapt.solver, adapt.steps
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

/// The largest ‖x‖₂ reached along the query trajectories of `instance`, averaged over them.
fn orbit_radius(data: &noether::data::Dataset, instance: usize) -> f64 {
    let n = data.dim();
    let radii: Vec<f64> = QUERY
        .map(|j| {
            data.trajectory(instance, j)
                .chunks_exact(n)
                .map(|x| x.iter().map(|v| v * v).sum::<f64>().sqrt())
                .fold(0.0, f64::max)
        })
        .collect();
    radii.iter().sum::<f64>() / radii.len().max(1) as f64
}
