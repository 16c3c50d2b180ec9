//! The integrators on batches of learned systems (the runtime's stepping): the
//! discrete-gradient step keeps every row's learned energy to solver tolerance and its
//! entropy non-decreasing; Newton and fixed-point midpoint agree; explicit symplectic
//! methods on a separable model keep the learned energy bounded; each method's observed
//! order on a learned field matches theory.

use burn::backend::Flex;
use noether::{
    data::stream_rng,
    integrate::{
        DiscreteGradient, ImplicitMidpoint, ImplicitSolver, MetriplecticRows, rk4_step,
        verlet_step, yoshida4_step,
    },
    nn::{
        Architecture, ModelConfig, Modulation,
        cpu::{CpuFlow, CpuModel, ModelParams},
    },
    systems::Family,
};
use rand::RngExt;

/// One step of a batch of states `x` by `h`, as a named scheme under test.
type Stepper<'a> = dyn Fn(&Vec<f32>, f64) -> Vec<f32> + 'a;

fn random(n: usize, scale: f64, seed: u64) -> Vec<f32> {
    let mut rng = stream_rng("tests/batched-integrators", seed, 0);
    (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

fn model(family: Family, arch: Architecture) -> CpuModel {
    CpuModel::from_model(
        &ModelConfig::new(family, Modulation::Svd { rank: 3 })
            .with_architecture(arch)
            .init::<Flex>(&Default::default()),
    )
}

/// A GENERIC model whose random assembly is scaled up, so its field moves states visibly
/// (an untrained assembly is nearly still).
fn lively_generic(family: Family) -> CpuModel {
    let config = ModelConfig::new(family, Modulation::Svd { rank: 3 });
    let mut params = ModelParams::from_model(&config.init::<Flex>(&Default::default()));
    if let ModelParams::Generic(g) = &mut params {
        g.xi.iter_mut()
            .chain(g.zeta.iter_mut())
            .for_each(|v| *v *= 4.0);
        for net in [&mut g.a_net, &mut g.c_net] {
            let last = net.layers.len() - 1;
            net.layers[last].0.iter_mut().for_each(|v| *v *= 4.0);
        }
    }
    CpuModel::from_params(&params, &config)
}

#[test]
fn discrete_gradient_conserves_energy_and_produces_entropy() {
    for (family, seed) in [(Family::Dno, 1), (Family::Tgc, 2)] {
        let m = lively_generic(family);
        let (rows, n) = (64, family.dim());
        let mut x = random(rows * n, 1.0, seed);
        if family == Family::Tgc {
            x.chunks_mut(4).for_each(|r| r[0] = 1.0 + 0.5 * r[0]);
        }
        let z = random(rows * 10, 1.5, seed + 10);
        let flow = CpuFlow {
            model: &m,
            latents: &z,
        };
        let dg = DiscreteGradient::default();
        let energy_entropy = |x: &[f32]| {
            let (mut e, mut s) = (vec![0.0; rows], vec![0.0; rows]);
            m.energy(x, &z, &mut e);
            assert!(m.entropy(x, &z, &mut s));
            (e, s)
        };
        let (e0, mut s_prev) = energy_entropy(&x);
        let s_start = s_prev.clone();
        let mut moved = 0.0f32;
        for step in 0..50 {
            let (x1, _) = dg
                .step(&flow, &x, 0.05)
                .unwrap_or_else(|e| panic!("{family} step {step}: {e}"));
            let gap = worst_gap(&x1, &x);
            moved = if gap.is_nan() { gap } else { moved.max(gap) };
            x = x1;
            let (e, s) = energy_entropy(&x);
            for r in 0..rows {
                let scale = 1.0 + e0[r].abs();
                assert!(
                    (e[r] - e0[r]).abs() <= 2e-4 * scale,
                    "{family} row {r} step {step}: E {} → {}",
                    e0[r],
                    e[r]
                );
                assert!(
                    s[r] >= s_prev[r] - 1e-5 * (1.0 + s_prev[r].abs()),
                    "{family} row {r} step {step}: S {} → {}",
                    s_prev[r],
                    s[r]
                );
            }
            s_prev = s;
        }
        assert!(moved > 1e-4, "{family}: the states move ({moved:e})");
        assert!(
            s_prev.iter().zip(&s_start).any(|(a, b)| a > b),
            "{family}: some entropy is produced"
        );
    }
}

/// Counts, per batch row, the gradient evaluations a flow is asked for.
struct Counting<'a> {
    flow: CpuFlow<'a>,
    evaluations: std::cell::RefCell<Vec<usize>>,
}

impl MetriplecticRows for Counting<'_> {
    fn dim(&self) -> usize {
        self.flow.dim()
    }

    fn gradients(&self, rows: &[usize], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        for &r in rows {
            self.evaluations.borrow_mut()[r] += 1;
        }
        self.flow.gradients(rows, x)
    }

    fn assemble(&self, rows: &[usize], x: &[f32], ge: &[f32], gs: &[f32]) -> Vec<f32> {
        self.flow.assemble(rows, x, ge, gs)
    }
}

#[test]
fn discrete_gradient_rows_iterate_as_if_alone() {
    let m = lively_generic(Family::Dno);
    let (rows, n, dz) = (24, 3, 10);
    let x = random(rows * n, 1.5, 5);
    let z = random(rows * dz, 1.5, 6);
    let counting = |x: &[f32], z: &[f32]| {
        let c = Counting {
            flow: CpuFlow {
                model: &m,
                latents: z,
            },
            evaluations: std::cell::RefCell::new(vec![0; x.len() / n]),
        };
        let (x1, its) = DiscreteGradient::default()
            .step(&c, x, 2.0)
            .expect("converges");
        (x1, its, c.evaluations.into_inner())
    };
    let (x1, its, batch) = counting(&x, &z);
    let mut alone_its = Vec::new();
    for r in 0..rows {
        let (x1r, its_r, evals) = counting(&x[r * n..(r + 1) * n], &z[r * dz..(r + 1) * dz]);
        assert_eq!(
            batch[r], evals[0],
            "row {r}: the batch made it iterate more"
        );
        for (a, b) in x1[r * n..(r + 1) * n].iter().zip(&x1r) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "row {r}: {a} vs {b}"
            );
        }
        alone_its.push(its_r);
    }
    assert_eq!(its, *alone_its.iter().max().unwrap());
    assert!(
        alone_its.iter().min() < alone_its.iter().max(),
        "the test needs rows of different stiffness: {alone_its:?}"
    );
}

#[test]
fn newton_and_fixed_point_midpoint_agree_on_a_batch() {
    let m = model(Family::Pendulum, Architecture::Hnn);
    let (rows, n) = (40, 2);
    let x = random(rows * n, 1.5, 3);
    let z = random(rows * 10, 1.0, 4);
    let flow = CpuFlow {
        model: &m,
        latents: &z,
    };
    let mid = ImplicitMidpoint::default().with_tolerance(1e-6);
    let (a, _) = mid
        .with_solver(ImplicitSolver::FixedPoint)
        .step_fixed_point(&flow, &x, 0.05)
        .unwrap();
    let (b, newton_its) = mid
        .with_solver(ImplicitSolver::Newton)
        .step(&flow, &x, 0.05)
        .unwrap();
    assert!(newton_its <= 6, "newton took {newton_its}");
    for (u, v) in a.iter().zip(&b) {
        assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{u} vs {v}");
    }
}

#[test]
fn symplectic_methods_keep_a_learned_separable_energy_bounded() {
    let m = model(Family::Pendulum, Architecture::SeparableHnn);
    let (rows, n) = (32, 2);
    let x0 = random(rows * n, 1.0, 5);
    let z = random(rows * 10, 1.0, 6);
    let flow = CpuFlow {
        model: &m,
        latents: &z,
    };
    let energy = |x: &[f32]| {
        let mut e = vec![0.0; rows];
        m.energy(x, &z, &mut e);
        e
    };
    let e0 = energy(&x0);
    let steps: [(&str, &Stepper<'_>); 2] = [
        ("verlet", &|x, h| verlet_step(&flow, x, h)),
        ("yoshida4", &|x, h| yoshida4_step(&flow, x, h)),
    ];
    for (name, step) in steps {
        let mut x = x0.clone();
        let mut worst = 0.0f32;
        for _ in 0..2000 {
            x = step(&x, 0.02);
            let e = energy(&x);
            worst = e
                .iter()
                .zip(&e0)
                .fold(worst, |w, (a, b)| w.max((a - b).abs() / (1.0 + b.abs())));
        }
        assert!(
            worst < 5e-3,
            "{name}: worst relative energy error {worst:e} over 2000 steps"
        );
    }
}

/// Every method integrates the same learned field: after one time unit their states agree
/// with a small-step RK4 reference (f32: the comparison is to 1e-3).
#[test]
fn every_method_integrates_the_same_field() {
    let m = model(Family::Pendulum, Architecture::SeparableHnn);
    let (rows, n) = (8, 2);
    let x0 = random(rows * n, 1.0, 7);
    let z = random(rows * 10, 1.0, 8);
    let flow = CpuFlow {
        model: &m,
        latents: &z,
    };
    let run = |steps: usize, f: &dyn Fn(&Vec<f32>, f64) -> Vec<f32>| {
        (0..steps).fold(x0.clone(), |x, _| f(&x, 1.0 / steps as f64))
    };
    let reference = run(200, &|x, h| rk4_step(&flow, x, h));
    let moved = worst_gap(&reference, &x0);
    assert!(moved > 1e-3, "the field moves the states ({moved:e})");
    let mid = ImplicitMidpoint::default().with_tolerance(1e-7);
    let cases: [(&str, &Stepper<'_>); 3] = [
        ("verlet", &|x, h| verlet_step(&flow, x, h)),
        ("midpoint", &|x, h| {
            mid.step_fixed_point(&flow, x, h).unwrap().0
        }),
        ("yoshida4", &|x, h| yoshida4_step(&flow, x, h)),
    ];
    for (name, f) in cases {
        let x = run(20, f);
        let err = worst_gap(&x, &reference);
        assert!(err < 1e-3, "{name}: {err:e} from the reference");
    }
}

/// maxᵢ |aᵢ − bᵢ|, NaN when either holds a NaN (so a NaN never passes a `<` bound).
fn worst_gap(a: &[f32], b: &[f32]) -> f32 {
    noether::metrics::worst(a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs()))) as f32
}
