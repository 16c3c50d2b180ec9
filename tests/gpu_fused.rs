//! The fused GPU step kernel (`noether::nn::gpu`) against the CPU kernel, on lavapipe in CI:
//! every modulation and integrator to 1e-5 per step (general and separable Hamiltonians,
//! GENERIC models by the discrete gradient with dE ≈ 0 and dS ≥ 0), energy drift within the
//! CPU path's, no blocking sync inside a step, hot reload, NaN rows flagged, asynchronous
//! read-back.

use std::time::{Duration, Instant};

use burn::backend::Flex;
use noether::{
    integrate::Integrator,
    nn::{
        Architecture, ModelConfig, Modulation,
        cpu::{CpuFlow, CpuModel, ModelParams},
        gpu::{
            BatchPart, DeviceModel, FusedStepper, GpuStepError, PackError, fuses,
            kernel::FLAG_NON_FINITE,
        },
    },
    runtime::{StepSettings, advance},
    systems::Family,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn model(modulation: Modulation, seed: u64) -> (ModelParams, CpuModel) {
    let config = ModelConfig::new(Family::Pendulum, modulation)
        .with_hidden(vec![16, 12, 8])
        .with_d_latent(4)
        .with_seed(seed);
    let model = config.init::<Flex>(&Default::default());
    let params = ModelParams::from_model(&model);
    let cpu = CpuModel::from_params(&params, &config);
    (params, cpu)
}

/// A separable model H = T(p; z) + V(q; z) over a state of two degrees of freedom (the
/// width of tgc's state, which no Hamiltonian family has: it exercises the dof indexing).
fn separable(modulation: Modulation, seed: u64) -> (ModelParams, CpuModel) {
    let config = ModelConfig::new(Family::Tgc, modulation)
        .with_architecture(Architecture::SeparableHnn)
        .with_hidden(vec![12, 10])
        .with_d_latent(4)
        .with_seed(seed);
    let params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
    let cpu = CpuModel::from_params(&params, &config);
    (params, cpu)
}

fn batch(rows: usize, dz: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    batch_of(rows, 2, dz, seed)
}

fn batch_of(rows: usize, n: usize, dz: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = (0..rows * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let z = (0..rows * dz)
        .map(|_| rng.random_range(-0.8..0.8))
        .collect();
    (x, z)
}

fn cpu_step(cpu: &CpuModel, method: Integrator, x: &[f32], z: &[f32], dt: f64) -> Vec<f32> {
    let flow = CpuFlow {
        model: cpu,
        latents: z,
    };
    advance(&flow, method, x.to_vec(), dt, &StepSettings::default())
        .expect("CPU step")
        .0
}

fn cpu_energy(cpu: &CpuModel, x: &[f32], z: &[f32]) -> Vec<f32> {
    let mut e = vec![0.0; x.len() / cpu.dim()];
    cpu.energy(x, z, &mut e);
    e
}

/// |a − b| ≤ tol·max(1, |b|) entry by entry (NaN fails).
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        let err = (a - b).abs();
        assert!(
            err <= tol * b.abs().max(1.0),
            "{what}: entry {i}: GPU {a}, CPU {b} (|Δ| = {err:e})"
        );
    }
}

/// One fused step of a freshly uploaded batch against the CPU kernel: no flags, states and
/// energies to 1e-5.
#[expect(clippy::too_many_arguments, reason = "a test helper")]
fn assert_step_matches(
    gpu: &mut FusedStepper,
    device_model: &DeviceModel,
    cpu: &CpuModel,
    x: &[f32],
    z: &[f32],
    method: Integrator,
    dt: f64,
    what: &str,
) {
    let mut b = gpu.upload_batch(device_model, x, z).unwrap();
    gpu.step(device_model, &b, method, dt, &StepSettings::default())
        .unwrap();
    let back = gpu.read_blocking(&mut b).unwrap();
    let want = cpu_step(cpu, method, x, z, dt);
    assert!(
        back.flags.iter().all(|&f| f == 0),
        "{what}: flags {:?}",
        back.flags
    );
    assert_close(what, &back.states, &want, 1e-5);
    assert_close(
        &format!("{what} energy"),
        &back.energy,
        &cpu_energy(cpu, &want, z),
        1e-5,
    );
}

#[test]
fn fused_step_matches_the_cpu_kernel() {
    let Some(device) = noether::device::wgpu_for_test("fused_step_matches_the_cpu_kernel") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let rows = 37;
    // Every method of the paper's tables, and the unmodulated network.
    for (s, modulation) in std::iter::once(Modulation::None)
        .chain(Modulation::PAPER)
        .enumerate()
    {
        let (params, cpu) = model(modulation, s as u64);
        let device_model = gpu.upload_model(&params).expect("a general HNN packs");
        for method in [Integrator::Euler, Integrator::Rk4, Integrator::Midpoint] {
            // 1/64 s is one substep; 0.05 s is three.
            for dt in [1.0 / 64.0, 0.05] {
                let what = format!("{modulation} {method:?} dt {dt}");
                let (x, z) = batch(rows, 4, s as u64 + 7);
                assert_step_matches(&mut gpu, &device_model, &cpu, &x, &z, method, dt, &what);
            }
        }
    }
}

/// 1000 fused steps of `method` from `x0`, beside the CPU path: one launch and no blocking
/// sync per step, no flag, and a max |H − H₀| over the rows within twice the CPU path's
/// (NaN fails).
fn assert_thousand_steps_keep_the_energy(
    gpu: &mut FusedStepper,
    params: &ModelParams,
    cpu: &CpuModel,
    (x0, z): (Vec<f32>, Vec<f32>),
    method: Integrator,
) {
    let device_model = gpu.upload_model(params).unwrap();
    let mut b = gpu.upload_batch(&device_model, &x0, &z).unwrap();
    let settings = StepSettings::default();
    let dt = 1.0 / 64.0;
    let before = gpu.counters();
    let mut x_cpu = x0.clone();
    for _ in 0..1000 {
        gpu.step(&device_model, &b, method, dt, &settings).unwrap();
        x_cpu = cpu_step(cpu, method, &x_cpu, &z, dt);
    }
    let stepped = gpu.counters();
    assert_eq!(
        stepped.blocking_syncs, before.blocking_syncs,
        "no sync in 1000 steps"
    );
    assert_eq!(
        stepped.dispatches - before.dispatches,
        1000,
        "one launch per step"
    );
    let back = gpu.read_blocking(&mut b).unwrap();
    assert!(back.flags.iter().all(|&f| f == 0), "flags {:?}", back.flags);
    let e0 = cpu_energy(cpu, &x0, &z);
    let drift = |e: &[f32]| {
        e.iter()
            .zip(&e0)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(0.0f64, |m, v| {
                if v.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(v)
                }
            })
    };
    let (gpu_drift, cpu_drift) = (drift(&back.energy), drift(&cpu_energy(cpu, &x_cpu, &z)));
    eprintln!("max |ΔH| over 1000 {method:?} steps: GPU {gpu_drift:e}, CPU {cpu_drift:e}");
    assert!(
        gpu_drift <= 2.0 * cpu_drift + 1e-5,
        "GPU drift {gpu_drift:e} against the CPU path's {cpu_drift:e}"
    );
}

#[test]
fn a_thousand_steps_keep_the_energy_like_the_cpu_path_without_a_sync() {
    let Some(device) = noether::device::wgpu_for_test("gpu_energy_drift") else {
        return;
    };
    let (params, cpu) = model(Modulation::Svd { rank: 5 }, 11);
    assert_thousand_steps_keep_the_energy(
        &mut FusedStepper::new(&device),
        &params,
        &cpu,
        batch(64, 4, 3),
        Integrator::Midpoint,
    );
}

#[test]
fn hot_reload_nan_rows_and_asynchronous_read_back() {
    let Some(device) = noether::device::wgpu_for_test("gpu_reload_nan_async") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let settings = StepSettings::default();
    let (params_a, _) = model(Modulation::Svd { rank: 3 }, 1);
    let (params_b, _) = model(Modulation::Svd { rank: 3 }, 2);
    let (x, z) = batch(8, 4, 5);
    let model_a = gpu.upload_model(&params_a).unwrap();
    let mut b = gpu.upload_batch(&model_a, &x, &z).unwrap();
    gpu.step(&model_a, &b, Integrator::Rk4, 0.05, &settings)
        .unwrap();
    let from_a = gpu.read_blocking(&mut b).unwrap();

    // Hot reload: the same batch under the replaced weights moves differently.
    let model_b = gpu.upload_model(&params_b).unwrap();
    let mut b = gpu.upload_batch(&model_b, &x, &z).unwrap();
    gpu.step(&model_b, &b, Integrator::Rk4, 0.05, &settings)
        .unwrap();
    let from_b = gpu.read_blocking(&mut b).unwrap();
    assert_ne!(
        from_a.states, from_b.states,
        "a reloaded model changes the result"
    );

    // A NaN written into row 3 is flagged and kept; the other rows step.
    gpu.write_states(&b, &[3], &[f32::NAN, 0.0]);
    gpu.step(&model_b, &b, Integrator::Midpoint, 1.0 / 64.0, &settings)
        .unwrap();
    let syncs = gpu.counters().blocking_syncs;
    gpu.request_readback(&mut b);
    let start = Instant::now();
    let back = loop {
        if let Some(back) = gpu.poll_readback(&mut b).unwrap() {
            break back;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "read-back never arrived"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(gpu.counters().blocking_syncs, syncs, "polling never blocks");
    assert_eq!(
        back.flags[3] & FLAG_NON_FINITE,
        FLAG_NON_FINITE,
        "flags {:?}",
        back.flags
    );
    assert!(back.states[6].is_nan(), "the NaN row keeps its state");
    for (row, flag) in back.flags.iter().enumerate().filter(|(r, _)| *r != 3) {
        assert_eq!(*flag, 0, "row {row}");
        assert!(
            back.states[row * 2..row * 2 + 2]
                .iter()
                .all(|v| v.is_finite())
        );
        assert_ne!(
            back.states[row * 2],
            from_b.states[row * 2],
            "row {row} stepped"
        );
    }
}

#[test]
fn wide_and_single_layer_networks_match_the_cpu_kernel() {
    let Some(device) = noether::device::wgpu_for_test("gpu_wide_networks") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    for (hidden, dz, modulation) in [
        (vec![100, 100, 100], 10, Modulation::Svd { rank: 5 }),
        (vec![100], 4, Modulation::Shift),
    ] {
        let config = ModelConfig::new(Family::Pendulum, modulation)
            .with_hidden(hidden.clone())
            .with_d_latent(dz)
            .with_seed(3);
        let params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
        let cpu = CpuModel::from_params(&params, &config);
        let device_model = gpu.upload_model(&params).unwrap();
        let (x, z) = batch(11, dz, 1);
        let what = format!("{hidden:?} {modulation}");
        assert_step_matches(
            &mut gpu,
            &device_model,
            &cpu,
            &x,
            &z,
            Integrator::Rk4,
            1.0 / 64.0,
            &what,
        );
    }
}

#[test]
fn the_shipped_pendulum_steps_on_the_fused_kernel_like_the_cpu_kernel() {
    let Some(device) = noether::device::wgpu_for_test("gpu_shipped_pendulum") else {
        return;
    };
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = noether::runtime::LearnedModel::load(&root.join("assets/models/pendulum-svd5"))
        .expect("shipped model");
    let mut gpu = FusedStepper::new(&device);
    let device_model = gpu.upload_model(&model.params).unwrap();
    let rows = 16;
    let mean = model.mean_latent();
    let mut rng = StdRng::seed_from_u64(9);
    let x: Vec<f32> = (0..rows * 2).map(|_| rng.random_range(-1.5..1.5)).collect();
    let z: Vec<f32> = (0..rows * mean.len())
        .map(|i| mean[i % mean.len()] + rng.random_range(-0.1..0.1))
        .collect();
    for method in [Integrator::Rk4, Integrator::Midpoint] {
        let what = format!("pendulum-svd5 {method:?}");
        assert_step_matches(
            &mut gpu,
            &device_model,
            &model.cpu,
            &x,
            &z,
            method,
            1.0 / 64.0,
            &what,
        );
    }
}

#[test]
fn separable_models_step_on_the_fused_kernel_like_the_cpu_kernel() {
    let Some(device) = noether::device::wgpu_for_test("gpu_separable") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let rows = 13;
    // The symplectic schemes under every modulation of the paper's tables.
    for (s, modulation) in Modulation::PAPER.into_iter().enumerate() {
        let (params, cpu) = separable(modulation, 20 + s as u64);
        let device_model = gpu.upload_model(&params).expect("a separable HNN packs");
        for method in [Integrator::Verlet, Integrator::Yoshida4] {
            let what = format!("separable {modulation} {method:?}");
            let (x, z) = batch_of(rows, 4, 4, s as u64);
            assert_step_matches(&mut gpu, &device_model, &cpu, &x, &z, method, 0.05, &what);
        }
    }
    // The other schemes on one separable model: the field (∇ₚT, −∇_qV) from both networks.
    let (params, cpu) = separable(Modulation::Svd { rank: 3 }, 30);
    let device_model = gpu.upload_model(&params).unwrap();
    for method in [
        Integrator::SymplecticEuler,
        Integrator::Rk4,
        Integrator::Midpoint,
    ] {
        let (x, z) = batch_of(rows, 4, 4, 2);
        let what = format!("separable SVD(3) {method:?}");
        assert_step_matches(
            &mut gpu,
            &device_model,
            &cpu,
            &x,
            &z,
            method,
            1.0 / 64.0,
            &what,
        );
    }
}

#[test]
fn yoshida_on_the_fused_kernel_keeps_the_energy_like_the_cpu_path() {
    let Some(device) = noether::device::wgpu_for_test("gpu_yoshida_drift") else {
        return;
    };
    let (params, cpu) = separable(Modulation::Svd { rank: 3 }, 31);
    assert_thousand_steps_keep_the_energy(
        &mut FusedStepper::new(&device),
        &params,
        &cpu,
        batch_of(32, 4, 4, 8),
        Integrator::Yoshida4,
    );
}

/// A GENERIC model with small networks (E, S: 12, 10; A, C: 8, 6), its ξ, ζ and the A, C
/// outputs scaled ×4 so that a step moves the state visibly (as
/// `tests/batched_integrators.rs` does).
fn generic(family: Family, modulation: Modulation, seed: u64) -> (ModelParams, CpuModel) {
    let mut config = ModelConfig::new(family, modulation)
        .with_hidden(vec![12, 10])
        .with_d_latent(4)
        .with_seed(seed);
    config.assembly_hidden = vec![8, 6];
    let mut params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
    let ModelParams::Generic(g) = &mut params else {
        panic!("{family} is GENERIC");
    };
    g.xi.iter_mut()
        .chain(g.zeta.iter_mut())
        .for_each(|v| *v *= 4.0);
    for net in [&mut g.a_net, &mut g.c_net] {
        let last = net.layers.len() - 1;
        net.layers[last].0.iter_mut().for_each(|v| *v *= 4.0);
    }
    let cpu = CpuModel::from_params(&params, &config);
    (params, cpu)
}

/// GENERIC models, every modulation of the paper's tables (dno) and tgc's state: one
/// discrete-gradient step (three substeps) on the fused kernel against the CPU kernel to
/// 1e-5 — states, E and S; ∇E to 1e-4 — then 20 steps on the device with E conserved and S never
/// decreasing per step to the CPU path's tolerances (`tests/batched_integrators.rs`).
#[test]
fn generic_models_step_by_the_discrete_gradient_like_the_cpu_kernel() {
    let Some(device) = noether::device::wgpu_for_test("generic_discrete_gradient") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let (rows, dt, method) = (13, 0.05, Integrator::DiscreteGradient);
    let cases = Modulation::PAPER
        .into_iter()
        .map(|m| (Family::Dno, m))
        .chain([(Family::Tgc, Modulation::Svd { rank: 3 })]);
    for (seed, (family, modulation)) in cases.enumerate() {
        let seed = seed as u64;
        let what = format!("{family} {modulation}");
        let (params, cpu) = generic(family, modulation, seed);
        let device_model = gpu.upload_model(&params).expect("a GENERIC model packs");
        let n = cpu.dim();
        let (mut x, z) = batch_of(rows, n, 4, seed + 3);
        if family == Family::Tgc {
            x.chunks_mut(n).for_each(|r| r[0] = 1.0 + 0.5 * r[0]);
        }
        let mut b = gpu.upload_batch(&device_model, &x, &z).unwrap();
        gpu.step(&device_model, &b, method, dt, &StepSettings::default())
            .unwrap();
        let back = gpu.read_blocking(&mut b).unwrap();
        assert!(
            back.flags.iter().all(|&f| f == 0),
            "{what}: {:?}",
            back.flags
        );
        let want = cpu_step(&cpu, method, &x, &z, dt);
        assert_close(&what, &back.states, &want, 1e-5);
        let mut s_want = vec![0.0; rows];
        assert!(cpu.entropy(&want, &z, &mut s_want));
        assert_close(
            &format!("{what} E"),
            &back.energy,
            &cpu_energy(&cpu, &want, &z),
            1e-5,
        );
        assert_close(&format!("{what} S"), &back.entropy, &s_want, 1e-5);
        // ∇E (the temperatures) at states that agree to 1e-5.
        let mut g_want = vec![0.0; rows * n];
        cpu.energy_grad(&want, &z, &mut g_want);
        assert_close(&format!("{what} ∇E"), &back.energy_grad, &g_want, 1e-4);
        let (e0, mut s_prev, mut moved) = (back.energy.clone(), back.entropy.clone(), 0.0f32);
        for step in 0..20 {
            gpu.step(&device_model, &b, method, dt, &StepSettings::default())
                .unwrap();
            let back = gpu.read_blocking(&mut b).unwrap();
            assert!(back.flags.iter().all(|&f| f == 0), "{what} step {step}");
            for r in 0..rows {
                let (e, s) = (back.energy[r], back.entropy[r]);
                assert!(
                    (e - e0[r]).abs() <= 2e-4 * (1.0 + e0[r].abs()),
                    "{what} row {r} step {step}: E {} → {e}",
                    e0[r]
                );
                assert!(
                    s >= s_prev[r] - 1e-5 * (1.0 + s_prev[r].abs()),
                    "{what} row {r} step {step}: S {} → {s}",
                    s_prev[r]
                );
            }
            s_prev = back.entropy;
            moved = back
                .states
                .iter()
                .zip(&x)
                .fold(moved, |m, (a, b)| m.max((a - b).abs()));
        }
        assert!(moved > 1e-2, "{what}: the states moved by {moved:e} only");
    }
}

#[test]
fn the_kernel_refuses_what_it_does_not_fuse() {
    let (general, _) = model(Modulation::Shift, 1);
    let (split, _) = separable(Modulation::Shift, 1);
    for method in [Integrator::Euler, Integrator::Rk4, Integrator::Midpoint] {
        assert!(
            fuses(&general, method) && fuses(&split, method),
            "{method:?}"
        );
    }
    for method in [
        Integrator::SymplecticEuler,
        Integrator::Verlet,
        Integrator::Yoshida4,
    ] {
        assert!(!fuses(&general, method), "{method:?} needs a split H");
        assert!(fuses(&split, method), "{method:?}");
    }
    assert!(!fuses(&general, Integrator::DiscreteGradient));
    let generic = ModelParams::from_model(
        &ModelConfig::new(Family::Dno, Modulation::Svd { rank: 3 })
            .with_hidden(vec![8])
            .with_d_latent(2)
            .init::<Flex>(&Default::default()),
    );
    assert!(
        !fuses(&generic, Integrator::Midpoint),
        "GENERIC models step by the discrete gradient only"
    );
    assert!(fuses(&generic, Integrator::DiscreteGradient));
    let Some(device) = noether::device::wgpu_for_test("gpu_refuses") else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let generic_model = gpu.upload_model(&generic).expect("a GENERIC model packs");
    let (x, z) = batch_of(3, Family::Dno.dim(), 2, 1);
    let b = gpu.upload_batch(&generic_model, &x, &z).unwrap();
    assert_eq!(
        gpu.step(
            &generic_model,
            &b,
            Integrator::Midpoint,
            0.05,
            &StepSettings::default()
        ),
        Err(GpuStepError::Integrator(Integrator::Midpoint))
    );
    let device_model = gpu.upload_model(&general).unwrap();
    let (x, z) = batch(3, 4, 1);
    let b = gpu.upload_batch(&device_model, &x, &z).unwrap();
    assert_eq!(
        gpu.step(
            &device_model,
            &b,
            Integrator::Verlet,
            0.05,
            &StepSettings::default()
        ),
        Err(GpuStepError::Integrator(Integrator::Verlet))
    );
}

#[test]
fn models_of_one_shape_step_together_in_one_dispatch() {
    let Some(device) =
        noether::device::wgpu_for_test("models_of_one_shape_step_together_in_one_dispatch")
    else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let modulation = Modulation::Svd { rank: 3 };
    let (pa, ca) = model(modulation, 1);
    let (pb, cb) = model(modulation, 2);
    let group = gpu.upload_models(&[&pa, &pb]).expect("one shape");
    assert_eq!(group.models(), 2);
    // Parts in any order and of any length: B's 19 rows, then A's 5 (a cube boundary
    // apart: the rows between are padding).
    let ((xa, za), (xb, zb)) = (batch(5, 4, 11), batch(19, 4, 12));
    let parts = [
        BatchPart {
            model: 1,
            states: &xb,
            latents: &zb,
        },
        BatchPart {
            model: 0,
            states: &xa,
            latents: &za,
        },
    ];
    let mut b = gpu.upload_parts(&group, &parts).unwrap();
    let dt = 1.0 / 64.0;
    let launches = gpu.counters().dispatches;
    gpu.step(
        &group,
        &b,
        Integrator::Midpoint,
        dt,
        &StepSettings::default(),
    )
    .unwrap();
    assert_eq!(
        gpu.counters().dispatches - launches,
        1,
        "one dispatch for both models"
    );
    let back = gpu.read_blocking(&mut b).unwrap();
    let ranges = b.parts().to_vec();
    assert_eq!((ranges[0].len(), ranges[1].len()), (19, 5));
    for (range, cpu, x, z, what) in [
        (&ranges[0], &cb, &xb, &zb, "model B"),
        (&ranges[1], &ca, &xa, &za, "model A"),
    ] {
        let want = cpu_step(cpu, Integrator::Midpoint, x, z, dt);
        assert!(
            back.flags[range.clone()].iter().all(|&f| f == 0),
            "{what}: flags"
        );
        assert_close(
            what,
            &back.states[range.start * 2..range.end * 2],
            &want,
            1e-5,
        );
        assert_close(
            &format!("{what} energy"),
            &back.energy[range.clone()],
            &cpu_energy(cpu, &want, z),
            1e-5,
        );
    }
    // The check can fail: B's rows stepped with A's weights are elsewhere.
    let wrong = cpu_step(&ca, Integrator::Midpoint, &xb, &zb, dt);
    let r = &ranges[0];
    assert!(
        back.states[r.start * 2..r.end * 2]
            .iter()
            .zip(&wrong)
            .any(|(a, b)| (a - b).abs() > 1e-4),
        "the two models step differently"
    );
    // A group of different shapes is refused, naming the odd one; a batch of a group is
    // refused by a single model.
    let (sep, _) = separable(modulation, 3);
    assert!(matches!(
        gpu.upload_models(&[&pa, &sep]),
        Err(GpuStepError::Pack(PackError::GroupShape { index: 1, .. }))
    ));
    let single = gpu.upload_model(&pa).unwrap();
    assert!(matches!(
        gpu.step(
            &single,
            &b,
            Integrator::Midpoint,
            dt,
            &StepSettings::default()
        ),
        Err(GpuStepError::Shape { .. })
    ));
}

#[test]
fn a_batch_dropped_with_a_read_back_in_flight_leaves_the_device_usable() {
    let Some(device) = noether::device::wgpu_for_test(
        "a_batch_dropped_with_a_read_back_in_flight_leaves_the_device_usable",
    ) else {
        return;
    };
    let mut gpu = FusedStepper::new(&device);
    let (params, cpu) = model(Modulation::Shift, 9);
    let device_model = gpu.upload_model(&params).unwrap();
    let (x, z) = batch(16, 4, 5);
    let dt = 1.0 / 64.0;
    // A re-formed batch (bodies spawned or despawned) replaces one whose read-back is still
    // being copied: its staging buffer must not go back to the pool mapped.
    for _ in 0..3 {
        let mut old = gpu.upload_batch(&device_model, &x, &z).unwrap();
        gpu.step(
            &device_model,
            &old,
            Integrator::Midpoint,
            dt,
            &StepSettings::default(),
        )
        .unwrap();
        gpu.request_readback(&mut old);
        drop(old);
    }
    let mut b = gpu.upload_batch(&device_model, &x, &z).unwrap();
    gpu.step(
        &device_model,
        &b,
        Integrator::Midpoint,
        dt,
        &StepSettings::default(),
    )
    .unwrap();
    gpu.request_readback(&mut b);
    let back = gpu.read_blocking(&mut b).unwrap();
    assert_close(
        "after dropped batches",
        &back.states,
        &cpu_step(&cpu, Integrator::Midpoint, &x, &z, dt),
        1e-5,
    );
}
