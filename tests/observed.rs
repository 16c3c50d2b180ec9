//! Fitting latent codes to observed motion (`noether::meta::observed`): the shipped
//! pendulum model learns a new pendulum from 3 s of positions, a model recovers its own
//! latent from full states, bad observations are named, and the CLI does the same offline.

use std::{path::PathBuf, process::Command};

use burn::backend::Flex;
use noether::{
    integrate::{Integrator, simulate},
    io::load_model,
    meta::{
        FitConfig, Observation, ObservedError, ObservedPart, Track, fit_latent,
        observed::{position_error, predict, trajectory_loss, validate},
    },
    nn::cpu::{CpuModel, ModelParams},
    systems::Family,
};

fn shipped(name: &str) -> CpuModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/models")
        .join(name);
    let model = load_model::<Flex>(&path, &Default::default()).unwrap();
    CpuModel::from_params(&ModelParams::from_model(&model), &model.config)
}

fn mean_latent(model: &CpuModel) -> Vec<f32> {
    model
        .config()
        .mean_latent()
        .iter()
        .map(|v| *v as f32)
        .collect()
}

/// Positions (or states) of a true pendulum every `dt` for `steps` steps.
fn observe(
    params: &[f64],
    x0: &[f64],
    dt: f64,
    steps: usize,
    part: ObservedPart,
) -> Vec<Observation> {
    let sys = Family::Pendulum.build(params).unwrap();
    let traj = simulate(sys.as_ref(), Integrator::Dopri, x0, dt, steps).unwrap();
    let width = part.width(2, 1);
    (0..=steps)
        .map(|k| Observation {
            t: traj.t[k],
            values: traj.state(k)[..width].iter().map(|v| *v as f32).collect(),
        })
        .collect()
}

/// Full states of the model's own motion under `latent` from `x0`, every 0.05 s for
/// `intervals` intervals (RK4 sub-steps of at most `max_substep`).
fn own_motion(
    model: &CpuModel,
    latent: &[f32],
    x0: &[f32],
    intervals: usize,
    max_substep: f64,
) -> Vec<Observation> {
    let times: Vec<f64> = (0..=intervals).map(|k| k as f64 * 0.05).collect();
    let states = predict(model, latent, x0, &times, max_substep);
    times
        .iter()
        .zip(states)
        .map(|(t, values)| Observation {
            t: *t,
            values: values.into(),
        })
        .collect()
}

/// Relative position error of the learned rollout against the truth over 10 s.
fn ten_second_error(model: &CpuModel, latent: &[f32], params: &[f64], x0: &[f64]) -> f64 {
    let sys = Family::Pendulum.build(params).unwrap();
    position_error(model, latent, sys.as_ref(), x0, 0.05, 200).unwrap()
}

#[test]
fn a_new_pendulum_is_learned_from_three_seconds_of_positions() {
    let model = shipped("pendulum-svd5.model.ron");
    for (params, x0) in [([1.8, 0.6], [1.0, 0.0]), ([0.7, 1.9], [0.8, 0.5])] {
        let obs = observe(&params, &x0, 0.05, 60, ObservedPart::Positions);
        let track = Track {
            observations: &obs,
            part: ObservedPart::Positions,
        };
        let fit = fit_latent(
            &model,
            track,
            mean_latent(&model),
            &FitConfig::default(),
            30,
        )
        .unwrap();
        assert!(fit.converged, "{fit:?}");
        assert!(
            fit.loss < 1e-2 * fit.initial_loss,
            "{} → {}",
            fit.initial_loss,
            fit.loss
        );
        // The unobserved momentum is fitted too. It is not identifiable from positions:
        // q(t) of a pendulum depends on l alone, and m only scales p = m l² q̇.
        assert!(
            fit.state.hidden.iter().all(|p| p.is_finite()),
            "{:?}",
            fit.state.hidden
        );
        let before = ten_second_error(&model, &mean_latent(&model), &params, &x0);
        let after = ten_second_error(&model, &fit.state.latent, &params, &x0);
        assert!(
            after * 5.0 < before,
            "10-s error {before:.3e} → {after:.3e}"
        );
    }
}

#[test]
fn a_model_recovers_its_own_latent_from_full_states() {
    let model = shipped("mass_spring-svd5.model.ron");
    let mean = mean_latent(&model);
    let target: Vec<f32> = mean
        .iter()
        .enumerate()
        .map(|(i, z)| z + 0.2 * ((i as f32) * 1.3).sin())
        .collect();
    let obs = own_motion(&model, &target, &[0.8, -0.3], 40, 0.01);
    let track = Track {
        observations: &obs,
        part: ObservedPart::States,
    };
    let config = FitConfig {
        lambda_z: 0.0,
        ..FitConfig::default()
    };
    let fit = fit_latent(&model, track, mean.clone(), &config, 40).unwrap();
    let start = trajectory_loss(
        &model,
        &[track],
        &[noether::meta::FitState {
            latent: mean,
            hidden: vec![],
            damping: 1.0,
        }],
        &config,
    )[0];
    assert!(
        fit.loss < 1e-4 * start,
        "loss {start:.3e} → {:.3e}",
        fit.loss
    );
}

#[test]
fn observations_that_cannot_be_fitted_are_named() {
    let model = shipped("pendulum-svd5.model.ron");
    let o = |t: f64, v: Vec<f32>| Observation {
        t,
        values: v.into(),
    };
    let check = |obs: Vec<Observation>, part| {
        validate(
            &model,
            Track {
                observations: &obs,
                part,
            },
        )
    };
    assert_eq!(
        check(
            vec![o(0.0, vec![1.0]), o(0.1, vec![1.0])],
            ObservedPart::Positions
        ),
        Err(ObservedError::TooFew(2))
    );
    assert!(matches!(
        check(
            vec![o(0.0, vec![1.0]), o(0.1, vec![1.0]), o(0.2, vec![1.0])],
            ObservedPart::States
        ),
        Err(ObservedError::Width {
            index: 0,
            got: 1,
            expected: 2,
            ..
        })
    ));
    assert_eq!(
        check(
            vec![o(0.0, vec![1.0]), o(0.1, vec![1.0]), o(0.1, vec![1.0])],
            ObservedPart::Positions
        ),
        Err(ObservedError::Time { index: 2, t: 0.1 })
    );
    assert_eq!(
        check(
            vec![o(0.0, vec![1.0]), o(0.1, vec![f32::NAN]), o(0.2, vec![1.0])],
            ObservedPart::Positions
        ),
        Err(ObservedError::NonFinite { index: 1 })
    );
}

#[test]
fn the_cli_fits_a_recording_and_names_a_bad_line() {
    let dir = std::env::temp_dir().join(format!("noether-observed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let noether = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_noether"))
            .args(args)
            .output()
            .unwrap()
    };
    let sim = noether(&[
        "simulate", "--system", "pendulum", "--param", "m=1.8", "--param", "l=0.6", "--x0",
        "1.0,0.0", "--dt", "0.05", "--steps", "60",
    ]);
    assert!(sim.status.success());
    let csv = dir.join("obs.csv");
    std::fs::write(&csv, &sim.stdout).unwrap();
    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/models/pendulum-svd5.model.ron");
    let out = noether(&[
        "adapt",
        "--model",
        model.to_str().unwrap(),
        "--observations",
        csv.to_str().unwrap(),
        "--observed",
        "positions",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("61 observations of positions"), "{text}");
    assert!(text.contains("fitted unobserved start: p = "), "{text}");
    let misfit: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("RMS misfit of the observed values: "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(misfit < 2e-2, "{text}");

    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "t,q,p\n0,1,0\n0.05,oops,0\n0.1,1,0\n").unwrap();
    let out = noether(&[
        "adapt",
        "--model",
        model.to_str().unwrap(),
        "--observations",
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.csv:3") && err.contains("`q`"), "{err}");
}

#[test]
fn rollout_sensitivities_match_finite_differences_and_the_plain_rollout() {
    use noether::meta::observed::{rollout_intervals, rollout_sensitivities};
    let model = shipped("pendulum-svd5");
    let dz = model.row_latent();
    // Two bodies with their own latents and irregular intervals; θ = (z, p₀).
    let mut z = mean_latent(&model);
    z.extend(
        mean_latent(&model)
            .iter()
            .enumerate()
            .map(|(k, v)| v + 0.05 * (k as f32).cos()),
    );
    let x0 = vec![1.0f32, 0.0, -0.4, 0.8];
    let dt: Vec<Vec<f64>> = (0..12)
        .map(|k| vec![0.05, 0.03 + 0.01 * f64::from(k % 3)])
        .collect();
    let p = dz + 1;
    // ∂x₀/∂θ: only p₀ (the last column) moves the start, through its momentum.
    let mut s0 = vec![0.0f32; 2 * 2 * p];
    for r in 0..2 {
        s0[r * 2 * p + p + dz] = 1.0;
    }
    let rolled = rollout_sensitivities(&model, &z, &x0, &s0, p, &dt, 0.05).unwrap();
    let plain = rollout_intervals(&model, &z, &x0, &dt, 0.05);
    for (k, (x, _)) in rolled.iter().enumerate() {
        assert_eq!(
            x, &plain[k],
            "the same states as the plain rollout, bit for bit"
        );
    }
    // Central differences of the whole rollout in each parameter.
    let last = |z: &[f32], x0: &[f32]| rollout_intervals(&model, z, x0, &dt, 0.05).pop().unwrap();
    let s = &rolled.last().unwrap().1;
    let mut worst = 0.0f64;
    for r in 0..2 {
        for j in 0..p {
            let (mut zp, mut zm, mut xp, mut xm) = (z.clone(), z.clone(), x0.clone(), x0.clone());
            let h = 1e-2f32;
            if j < dz {
                zp[r * dz + j] += h;
                zm[r * dz + j] -= h;
            } else {
                xp[r * 2 + 1] += h;
                xm[r * 2 + 1] -= h;
            }
            let (fp, fm) = (last(&zp, &xp), last(&zm, &xm));
            for i in 0..2 {
                let numeric = f64::from(fp[r * 2 + i] - fm[r * 2 + i]) / (2.0 * f64::from(h));
                let exact = f64::from(s[r * 2 * p + i * p + j]);
                worst = worst.max((numeric - exact).abs() / (1.0 + exact.abs()));
            }
        }
    }
    assert!(
        worst < 5e-3,
        "sensitivities differ from finite differences by {worst:e}"
    );
}

/// A body at its floor whose window is longer than its horizon is fitted over the whole
/// window in the same job (the horizon doubles inside the job), not one doubling per job.
#[test]
fn a_job_grows_the_horizon_of_a_body_at_its_floor_to_its_whole_window() {
    use noether::runtime::{AdaptationSettings, Job, JobBody, run_job};
    let model = shipped("pendulum-svd5.model.ron");
    let latent: Vec<f32> = mean_latent(&model)
        .iter()
        .enumerate()
        .map(|(i, z)| z + 0.1 * ((i as f32) * 0.9).cos())
        .collect();
    // The model's own motion under `latent`: a fit with that latent is at its floor on
    // every horizon.
    let window = own_motion(&model, &latent, &[0.9, 0.0], 59, 0.05);
    let mut job = Job::new(&AdaptationSettings::default());
    job.bodies.push(JobBody {
        key: 7u32,
        window: window.clone(),
        horizon: 10,
        part: ObservedPart::States,
        latent: latent.clone(),
        carried: None,
    });
    let result = run_job(&model, job);
    let body = &result.bodies[0];
    assert!(
        body.misfit <= body.floor,
        "{} > {}",
        body.misfit,
        body.floor
    );
    assert_eq!(body.window, 60, "10 → 20 → 40 → 60 observations in one job");
    assert_eq!(
        body.fit.t_end, window[59].t,
        "the carried fit covers the window"
    );
    assert!(!body.improved, "no step was needed at the floor");
}

/// A growth check goes on from where the shorter rollout ended: the loss over the longer
/// track equals the loss of a rollout over all of it, for bodies of different lengths
/// (positions and full states) in one batch, and so does the end state.
#[test]
fn an_extended_loss_equals_the_loss_of_the_whole_track() {
    use noether::meta::{
        FitState,
        observed::{extended_loss, trajectory_rollout},
    };
    let model = shipped("pendulum-svd5.model.ron");
    let config = FitConfig::default();
    let z = mean_latent(&model);
    let z2: Vec<f32> = z.iter().map(|v| v * 0.8 + 0.05).collect();
    let positions = observe(&[1.2, 0.9], &[0.7, 0.0], 0.05, 40, ObservedPart::Positions);
    let states = observe(&[0.8, 1.5], &[-0.3, 0.5], 0.05, 30, ObservedPart::States);
    let fits = [
        FitState {
            latent: z.clone(),
            hidden: vec![0.05],
            damping: config.initial_damping,
        },
        FitState {
            latent: z2.clone(),
            hidden: Vec::new(),
            damping: config.initial_damping,
        },
    ];
    let (from, to) = ([17usize, 9], [41usize, 31]);
    let tracks = |n: [usize; 2]| {
        [
            Track {
                observations: &positions[..n[0]],
                part: ObservedPart::Positions,
            },
            Track {
                observations: &states[..n[1]],
                part: ObservedPart::States,
            },
        ]
    };
    let (short, long) = (tracks(from), tracks(to));
    let first = trajectory_rollout(&model, &short, &fits, &config);
    let whole = trajectory_rollout(&model, &long, &fits, &config);
    let ends: Vec<Vec<f32>> = first.iter().map(|(_, e)| e.clone()).collect();
    let losses: Vec<f64> = first.iter().map(|(l, _)| *l).collect();
    let extended = extended_loss(
        &model,
        &long,
        &from,
        &ends,
        &losses,
        &[&z[..], &z2[..]],
        &config,
    );
    for (row, ((loss, end), (want, want_end))) in extended.iter().zip(&whole).enumerate() {
        assert!(
            (loss - want).abs() <= 1e-9 + 1e-6 * want,
            "body {row}: extended {loss:e}, whole {want:e}"
        );
        assert!(
            *loss > losses[row] * 1e-3,
            "body {row}: a real loss, not zero"
        );
        assert_eq!(end, want_end, "body {row}: the same end state");
    }
    assert_eq!(
        trajectory_loss(&model, &long, &fits, &config),
        losses_of(&whole)
    );
}

fn losses_of(rolled: &[(f64, Vec<f32>)]) -> Vec<f64> {
    rolled.iter().map(|(l, _)| *l).collect()
}
