//! One harness for every fixed-step method: observed order against exact or reference
//! solutions, long-time energy behaviour, and failure reporting.

use super::*;
use crate::systems::{Family, MassSpring, System};

/// Final-state error of `steps` steps of size `t_end / steps` against `exact`.
fn final_error(
    sys: &dyn System,
    method: Integrator,
    x0: &[f64],
    t_end: f64,
    steps: usize,
    exact: &[f64],
) -> f64 {
    let mut stepper = Stepper::new(method, x0.len());
    let mut x = x0.to_vec();
    let h = t_end / steps as f64;
    for _ in 0..steps {
        stepper.step(sys, &mut x, h).unwrap();
    }
    x.iter()
        .zip(exact)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Least-squares slope of log(error) against log(h).
fn observed_order(errors: &[(f64, f64)]) -> f64 {
    let n = errors.len() as f64;
    let pts: Vec<(f64, f64)> = errors.iter().map(|&(h, e)| (h.ln(), e.ln())).collect();
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

const FIXED_STEP: [Integrator; 6] = [
    Integrator::Euler,
    Integrator::Rk4,
    Integrator::SymplecticEuler,
    Integrator::Verlet,
    Integrator::Yoshida4,
    Integrator::Midpoint,
];

/// Each method's error ratio as h halves matches 2^p: the slope of log error vs log h is
/// within ±0.2 of the theoretical order, on mass_spring (closed form) and pendulum
/// (reference Dormand–Prince at rtol = atol = 1e-13).
#[test]
fn observed_order_matches_theory() {
    let t_end = 2.0;
    let mass_spring = MassSpring { m: 1.5, k: 2.5 };
    let x0 = [0.8, -0.3];
    let ms_exact = mass_spring.exact(&x0, t_end);
    let pendulum = Family::Pendulum.build(&[1.2, 0.9]).unwrap();
    let p0 = [1.0, 0.4];
    let mut pend_exact = p0.to_vec();
    Dopri5::with_tolerance(2, 1e-13, 1e-13)
        .integrate(pendulum.as_ref(), &mut pend_exact, 0.0, t_end)
        .unwrap();

    for method in FIXED_STEP {
        for (name, sys, x0, exact) in [
            (
                "mass_spring",
                &mass_spring as &dyn System,
                &x0[..],
                &ms_exact[..],
            ),
            ("pendulum", pendulum.as_ref(), &p0[..], &pend_exact[..]),
        ] {
            // Low-order methods need smaller steps to reach their asymptotic regime.
            let steps = if method.order() <= 2 {
                [100, 200, 400, 800]
            } else {
                [20, 40, 80, 160]
            };
            let errors: Vec<(f64, f64)> = steps
                .iter()
                .map(|&steps| {
                    (
                        t_end / steps as f64,
                        final_error(sys, method, x0, t_end, steps, exact),
                    )
                })
                .collect();
            let order = observed_order(&errors);
            assert!(
                (order - f64::from(method.order())).abs() <= 0.2,
                "{method} on {name}: observed order {order:.3}, expected {} (errors {errors:?})",
                method.order()
            );
        }
    }
}

/// The reference integrator meets its tolerance against the closed form.
#[test]
fn dopri_meets_its_tolerance() {
    let sys = MassSpring { m: 1.0, k: 4.0 };
    let x0 = [1.0, 0.5];
    let mut dopri = Dopri5::new(2);
    let mut x = x0.to_vec();
    let mut t = 0.0;
    for _ in 0..100 {
        dopri.integrate(&sys, &mut x, t, t + 0.1).unwrap();
        t += 0.1;
    }
    let exact = sys.exact(&x0, t);
    let err = ((x[0] - exact[0]).powi(2) + (x[1] - exact[1]).powi(2)).sqrt();
    assert!(err < 1e-8, "error {err:e} after t = {t}");
    assert!(dopri.stats.accepted > 100 && dopri.stats.evaluations >= 6 * dopri.stats.accepted);
}

/// Relative energy error |H(x_n) − H(x₀)|/|H(x₀)| at every step of a long run.
fn energy_errors(
    sys: &dyn System,
    method: Integrator,
    x0: &[f64],
    h: f64,
    steps: usize,
) -> Vec<f64> {
    let mut stepper = Stepper::new(method, x0.len());
    let mut x = x0.to_vec();
    let e0 = sys.energy(&x);
    (0..steps)
        .map(|_| {
            stepper.step(sys, &mut x, h).unwrap();
            ((sys.energy(&x) - e0) / e0).abs()
        })
        .collect()
}

fn max_over(errors: &[f64], range: std::ops::Range<usize>) -> f64 {
    crate::metrics::worst(errors[range].iter().copied())
}

/// Over 10⁵ steps at h = 0.05, Störmer–Verlet and implicit midpoint keep the relative
/// energy error bounded, with no growth between the first and the last tenth of the run,
/// while RK4 drifts (its error grows steadily) and Euler blows up.
///
/// A symplectic method conserves a modified energy H̃ = H + O((hω)²), so the bound on the
/// energy error scales with (hω)², ω the linear frequency. At hω = 0.05 (mass_spring with
/// m = k = 1, a pendulum with l = g·1 s² = 9.81 m) it is below 1e-3; for the stiffest
/// training-range pendulum (l = 0.5, hω = 0.22) we check the (hω)²/2 bound instead.
#[test]
fn symplectic_energy_error_stays_bounded_while_explicit_methods_drift() {
    const STEPS: usize = 100_000;
    const H: f64 = 0.05;
    // (system, x0, ω, bound on the relative energy error of the symplectic methods)
    let cases = [
        (
            Family::MassSpring.build(&[1.0, 1.0]).unwrap(),
            vec![1.0, 0.0],
            1.0,
            1e-3,
        ),
        (
            Family::Pendulum.build(&[1.0, 9.81]).unwrap(),
            vec![1.5, 0.0],
            1.0,
            1e-3,
        ),
        (
            Family::MassSpring.build(&[1.0, 5.0]).unwrap(),
            vec![1.0, 0.0],
            5f64.sqrt(),
            0.5 * 5.0 * H * H,
        ),
        (
            Family::Pendulum.build(&[1.0, 0.5]).unwrap(),
            vec![1.5, 0.0],
            (9.81f64 / 0.5).sqrt(),
            0.5 * 9.81 / 0.5 * H * H,
        ),
    ];
    for (sys, x0, omega, bound) in &cases {
        let label = format!("{} (hω = {:.3})", sys.family(), H * omega);
        let tenth = STEPS / 10;
        for method in [Integrator::Verlet, Integrator::Midpoint] {
            let err = energy_errors(sys.as_ref(), method, x0, H, STEPS);
            let (early, late) = (
                max_over(&err, 0..tenth),
                max_over(&err, STEPS - tenth..STEPS),
            );
            assert!(
                late < *bound,
                "{method} on {label}: relative energy error {late:e} ≥ {bound:e}"
            );
            assert!(
                late < 1.5 * early.max(1e-10),
                "{method} on {label}: error grows {early:e} → {late:e}"
            );
        }
        let rk4 = energy_errors(sys.as_ref(), Integrator::Rk4, x0, H, STEPS);
        let (early, late) = (
            max_over(&rk4, 0..tenth),
            max_over(&rk4, STEPS - tenth..STEPS),
        );
        assert!(
            late > 5.0 * early,
            "rk4 on {label} should drift: {early:e} → {late:e}"
        );
        let euler = energy_errors(sys.as_ref(), Integrator::Euler, x0, H, 2_000);
        assert!(
            euler[1_999] > 1.0,
            "euler on {label} should blow up: {:e}",
            euler[1_999]
        );
    }
}

/// A too-tight cap is reported as non-convergence; the stepper leaves the state as it was.
#[test]
fn implicit_midpoint_reports_non_convergence() {
    let sys = Family::Pendulum.build(&[1.0, 1.0]).unwrap();
    let flow = FieldFlow(sys.as_ref());
    for solver in [ImplicitSolver::FixedPoint, ImplicitSolver::Newton] {
        let mut mid = ImplicitMidpoint::default().with_solver(solver);
        mid.max_iterations = 1;
        let err = mid.step(&flow, &vec![2.0, 1.0], 0.5).unwrap_err();
        assert!(
            matches!(err, IntegrateError::NotConverged { iterations: 1, .. }),
            "{err}"
        );
        mid.max_iterations = 100;
        let (_, its) = mid.step(&flow, &vec![2.0, 1.0], 0.05).unwrap();
        assert!(its >= 2, "{solver:?} converged in {its} iterations");
        let mut stepper = Stepper::new(Integrator::Midpoint, 2);
        *stepper.midpoint_mut() = ImplicitMidpoint {
            max_iterations: 1,
            ..mid
        };
        let mut x = vec![2.0, 1.0];
        assert!(stepper.step(sys.as_ref(), &mut x, 0.5).is_err());
        assert_eq!(x, vec![2.0, 1.0]);
    }
    // A step so large that fixed-point iteration diverges (h/2 · ‖∂f/∂x‖ > 1).
    let mid = ImplicitMidpoint::default().with_solver(ImplicitSolver::FixedPoint);
    assert!(mid.step(&flow, &vec![2.0, 1.0], 3.0).is_err());
}

/// Newton converges quadratically: far fewer iterations than fixed point at the same tolerance.
#[test]
fn newton_needs_fewer_iterations_than_fixed_point() {
    let sys = Family::Pendulum.build(&[1.0, 1.0]).unwrap();
    let iterations = |solver| {
        let mid = ImplicitMidpoint::default().with_solver(solver);
        mid.step(&FieldFlow(sys.as_ref()), &vec![1.0, 0.0], 0.1)
            .unwrap()
            .1
    };
    let (fp, newton) = (
        iterations(ImplicitSolver::FixedPoint),
        iterations(ImplicitSolver::Newton),
    );
    assert!(
        newton <= 4 && newton < fp,
        "newton {newton}, fixed point {fp}"
    );
}

#[test]
fn verlet_on_generic_family_is_an_error_and_names_parse() {
    let dno = Family::Dno.build(&Family::Dno.default_params()).unwrap();
    let err = simulate(dno.as_ref(), Integrator::Verlet, &[0.0, 1.0, 0.0], 0.1, 10).unwrap_err();
    assert!(
        matches!(
            err,
            IntegrateError::NotSeparable {
                family: Family::Dno,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        simulate(
            dno.as_ref(),
            Integrator::Midpoint,
            &[0.0, 1.0, 0.0],
            0.1,
            10
        )
        .is_ok()
    );
    for m in Integrator::ALL {
        assert_eq!(m.name().parse::<Integrator>().unwrap(), m);
    }
    assert_eq!("RK45".parse::<Integrator>().unwrap(), Integrator::Dopri);
    assert_eq!(
        "discrete_gradient".parse::<Integrator>().unwrap(),
        Integrator::DiscreteGradient
    );
    // `auto` on a ground-truth system is the reference; the discrete gradient needs a
    // learned GENERIC batch and says so.
    assert_eq!(
        Stepper::new(Integrator::Auto, 3).method(),
        Integrator::Dopri
    );
    assert!(matches!(
        simulate(
            dno.as_ref(),
            Integrator::DiscreteGradient,
            &[0.0, 1.0, 0.0],
            0.1,
            10
        ),
        Err(IntegrateError::NotApplicable { .. })
    ));
    assert!("rk5".parse::<Integrator>().is_err());
    assert!(matches!(
        simulate(dno.as_ref(), Integrator::Rk4, &[0.0, 1.0, 0.0], -0.1, 10),
        Err(IntegrateError::BadStep { .. })
    ));
}

/// A blow-up is reported with the step where it happened, not returned as data.
#[test]
fn non_finite_states_are_reported() {
    let sys = Family::MassSpring.build(&[1.0, 100.0]).unwrap();
    let err = simulate(sys.as_ref(), Integrator::Euler, &[1.0, 0.0], 1.0, 10_000).unwrap_err();
    assert!(matches!(err, IntegrateError::NonFinite { .. }), "{err}");
}

/// Trajectory layout: steps + 1 samples, the first the initial state.
#[test]
fn simulate_records_every_step() {
    let sys = Family::Duffing.build(&[1.0, 0.5]).unwrap();
    let traj = simulate(sys.as_ref(), Integrator::Yoshida4, &[1.0, 0.0], 0.1, 30).unwrap();
    assert_eq!(traj.len(), 31);
    assert_eq!(traj.state(0), &[1.0, 0.0]);
    assert!((traj.t[30] - 3.0).abs() < 1e-12);
}

#[test]
fn rk4_on_an_inline_state_matches_rk4_on_a_vec_bit_for_bit() {
    for family in Family::ALL {
        assert!(family.dim() <= SMALL_DIM, "{family} fits a SmallState");
        let sys = family.build(&family.default_params()).unwrap();
        // A state inside every family's domain (tgc: wall at 0.9 of its box, entropies 2).
        let x0: Vec<f64> = [0.9, 0.3, 2.0, 2.0][..family.dim()].to_vec();
        sys.check_state(&x0).unwrap();
        let flow = FieldFlow(sys.as_ref());
        let (mut heap, mut inline) = (x0.clone(), SmallState::from_slice(&x0).unwrap());
        for _ in 0..50 {
            heap = rk4_step(&flow, &heap, 0.01);
            inline = rk4_step(&flow, &inline, 0.01);
        }
        assert_eq!(&heap[..], &inline[..], "{family}");
        assert_ne!(heap, x0, "{family}: the state moved");
    }
    assert!(SmallState::from_slice(&[0.0; SMALL_DIM + 1]).is_none());
}
