//! Ground-truth parametric families (docs/protocol.md §3), exact and in `f64`.
//!
//! A [`Family`] names a parametric family and knows its [`FamilySpec`]: state layout, the
//! parameters μ with their meta-training ranges, and the sampling grid of protocol v1.
//! [`Family::build`] checks a parameter vector and returns a [`System`]: one concrete
//! instance with its exact vector field, its energy (and entropy), and its structure:
//!
//! | family | state | structure | μ (train range) |
//! |---|---|---|---|
//! | `mass_spring` | (q, p) | H = p²/(2m) + k q²/2, separable | m, k ∈ [1, 5] |
//! | `pendulum` | (q, p) | H = p²/(2 m l²) + m g l (1 − cos q), separable | m, l ∈ [0.5, 2] |
//! | `duffing` | (q, p) | H = p²/2 + α q²/2 + β q⁴/4, separable | α ∈ [0.5, 2], β ∈ [0.1, 1] |
//! | `dno` | (q, p, S) | GENERIC: E = p²/(2m) − k cos q + T S | k ∈ [0.5, 2], γ ∈ [0.05, 0.5] |
//! | `tgc` | (q, p, S₁, S₂) | GENERIC: two ideal gases split by a moving wall | α ∈ [1, 10] |
//!
//! ```
//! use noether::systems::Family;
//! let pendulum = Family::Pendulum.build(&[1.0, 0.5]).unwrap();
//! let mut dx = [0.0; 2];
//! pendulum.eval(&[0.3, 0.0], &mut dx);
//! assert!(dx[1] < 0.0); // gravity pulls the bob back
//! assert!(Family::Pendulum.build(&[1.0, -0.5]).is_err());
//! ```

mod dno;
mod duffing;
mod mass_spring;
mod pendulum;
mod tgc;

pub use dno::Dno;
pub use duffing::Duffing;
pub use mass_spring::MassSpring;
pub use pendulum::Pendulum;
pub use tgc::Tgc;

use std::{fmt, str::FromStr};

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::integrate::{SeparableField, VectorField};

/// A closed interval `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

impl Interval {
    /// `[lo, hi]`.
    pub const fn new(lo: f64, hi: f64) -> Self {
        Self { lo, hi }
    }

    /// Whether `v` lies in the interval (false for NaN).
    pub fn contains(&self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }

    /// The point `lo + u (hi − lo)` for `u ∈ [0, 1]`.
    pub fn lerp(&self, u: f64) -> f64 {
        self.lo + u * (self.hi - self.lo)
    }

    /// The midpoint.
    pub fn mid(&self) -> f64 {
        self.lerp(0.5)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.lo, self.hi)
    }
}

/// One physical parameter of a family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    /// Name used on the command line and in scene files (`m`, `k`, `alpha`, …).
    pub name: &'static str,
    /// What it is, with its unit.
    pub doc: &'static str,
    /// Meta-training range of protocol v1 (docs/protocol.md §3).
    pub train: Interval,
    /// Range in which the ground truth is physically meaningful; [`Family::build`] rejects
    /// values outside it.
    pub valid: Interval,
    /// Value used when a caller does not set the parameter.
    pub default: f64,
}

/// Conservation structure of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Structure {
    /// ẋ = J ∇H with x = (q, p); `separable` when H = T(p) + V(q).
    Hamiltonian {
        /// Whether H = T(p) + V(q), so explicit symplectic integrators apply.
        separable: bool,
    },
    /// ẋ = L ∇E + M ∇S with L skew, M symmetric PSD, L∇S = 0 and M∇E = 0.
    Generic,
}

/// Everything protocol v1 fixes about a family (docs/protocol.md §3).
#[derive(Clone, Debug, PartialEq)]
pub struct FamilySpec {
    /// Names of the state components, in order.
    pub state: &'static [&'static str],
    /// Parameters μ, in the order [`Family::build`] takes them.
    pub params: &'static [ParamSpec],
    /// Conservation structure.
    pub structure: Structure,
    /// Sample spacing Δt of the datasets.
    pub dt: f64,
    /// Samples per trajectory (including t = 0).
    pub samples: usize,
    /// A typical initial state, used when a caller gives none.
    pub default_state: &'static [f64],
}

/// The ground-truth parametric families of docs/protocol.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Harmonic oscillator, H = p²/(2m) + k q²/2.
    MassSpring,
    /// Simple pendulum, H = p²/(2 m l²) + m g l (1 − cos q).
    Pendulum,
    /// Undamped Duffing oscillator, H = p²/2 + α q²/2 + β q⁴/4.
    Duffing,
    /// Damped nonlinear oscillator coupled to a heat bath (GENERIC).
    Dno,
    /// Two gas containers exchanging heat and volume through a moving wall (GENERIC).
    Tgc,
}

impl Family {
    /// Every family, in docs/protocol.md order.
    pub const ALL: [Family; 5] = [
        Family::MassSpring,
        Family::Pendulum,
        Family::Duffing,
        Family::Dno,
        Family::Tgc,
    ];

    /// The snake_case name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Family::MassSpring => "mass_spring",
            Family::Pendulum => "pendulum",
            Family::Duffing => "duffing",
            Family::Dno => "dno",
            Family::Tgc => "tgc",
        }
    }

    /// Protocol v1 facts about this family.
    pub fn spec(self) -> &'static FamilySpec {
        match self {
            Family::MassSpring => &mass_spring::SPEC,
            Family::Pendulum => &pendulum::SPEC,
            Family::Duffing => &duffing::SPEC,
            Family::Dno => &dno::SPEC,
            Family::Tgc => &tgc::SPEC,
        }
    }

    /// State dimension.
    pub fn dim(self) -> usize {
        self.spec().state.len()
    }

    /// Mechanical degrees of freedom: the state starts with the positions q (this many),
    /// then the momenta p, then any entropies.
    pub fn dof(self) -> usize {
        self.spec()
            .state
            .iter()
            .filter(|s| s.starts_with('q'))
            .count()
    }

    /// The rest configuration with the entropies of `x`: positions at rest (0; the box
    /// centre q = 1 for tgc), momenta 0, entropies as in `x`. The energy above it,
    /// E(x) − E(rest_state(x)), is the body's mechanical energy: free of the additive
    /// constant a learned energy carries, so drifts are measured against it.
    pub fn rest_state<T: Copy + From<f32>>(self, x: &[T]) -> Vec<T> {
        let dof = self.dof();
        let rest = if self == Family::Tgc { 1.0 } else { 0.0 };
        x.iter()
            .enumerate()
            .map(|(i, v)| match i {
                i if i < dof => T::from(rest),
                i if i < 2 * dof => T::from(0.0),
                _ => *v,
            })
            .collect()
    }

    /// Default parameter vector (each parameter's `default`).
    pub fn default_params(self) -> Vec<f64> {
        self.spec().params.iter().map(|p| p.default).collect()
    }

    /// Builds the instance with parameters `params` (in [`FamilySpec::params`] order).
    ///
    /// # Errors
    /// [`SystemError::ParamCount`] for a wrong length, [`SystemError::ParamOutOfRange`] for a
    /// value outside its valid range (NaN and ±∞ included).
    pub fn build(self, params: &[f64]) -> Result<Box<dyn System>, SystemError> {
        let spec = self.spec();
        if params.len() != spec.params.len() {
            return Err(SystemError::ParamCount {
                family: self,
                expected: spec.params.len(),
                found: params.len(),
            });
        }
        for (p, &v) in spec.params.iter().zip(params) {
            if !p.valid.contains(v) {
                return Err(SystemError::ParamOutOfRange {
                    family: self,
                    param: p.name,
                    value: v,
                    valid: p.valid,
                });
            }
        }
        Ok(match self {
            Family::MassSpring => Box::new(MassSpring {
                m: params[0],
                k: params[1],
            }),
            Family::Pendulum => Box::new(Pendulum {
                m: params[0],
                l: params[1],
            }),
            Family::Duffing => Box::new(Duffing {
                alpha: params[0],
                beta: params[1],
            }),
            Family::Dno => Box::new(Dno {
                k: params[0],
                gamma: params[1],
            }),
            Family::Tgc => Box::new(Tgc { alpha: params[0] }),
        })
    }

    /// Builds an instance from `name = value` pairs; unset parameters take their default.
    ///
    /// # Errors
    /// [`SystemError::UnknownParam`] for a name the family does not have,
    /// [`SystemError::DuplicateParam`] for a name given twice, and the errors of [`Family::build`].
    pub fn build_named(self, pairs: &[(String, f64)]) -> Result<Box<dyn System>, SystemError> {
        self.build(&self.params_from_named(pairs)?)
    }

    /// The parameter vector that `name = value` pairs describe (unset: default), unchecked
    /// against ranges.
    ///
    /// # Errors
    /// [`SystemError::UnknownParam`], [`SystemError::DuplicateParam`].
    pub fn params_from_named(self, pairs: &[(String, f64)]) -> Result<Vec<f64>, SystemError> {
        let spec = self.spec();
        let mut values = self.default_params();
        let mut seen = vec![false; values.len()];
        for (name, value) in pairs {
            let i = spec
                .params
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| SystemError::UnknownParam {
                    family: self,
                    param: name.clone(),
                    known: spec
                        .params
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            if std::mem::replace(&mut seen[i], true) {
                return Err(SystemError::DuplicateParam {
                    family: self,
                    param: name.clone(),
                });
            }
            values[i] = *value;
        }
        Ok(values)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = SystemError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().replace('-', "_").to_ascii_lowercase();
        Family::ALL
            .into_iter()
            .find(|f| f.name() == wanted)
            .ok_or_else(|| SystemError::UnknownFamily { name: s.to_owned() })
    }
}

/// Why a family, parameter set or state was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// The name is not one of [`Family::ALL`].
    #[error("unknown system `{name}`; known systems: mass_spring, pendulum, duffing, dno, tgc")]
    UnknownFamily {
        /// The name given.
        name: String,
    },
    /// A parameter name the family does not have.
    #[error("{family} has no parameter `{param}`; its parameters are: {known}")]
    UnknownParam {
        /// The family.
        family: Family,
        /// The name given.
        param: String,
        /// The family's parameter names.
        known: String,
    },
    /// A parameter given twice.
    #[error("parameter `{param}` of {family} is given twice")]
    DuplicateParam {
        /// The family.
        family: Family,
        /// The repeated name.
        param: String,
    },
    /// Wrong number of parameters.
    #[error("{family} takes {expected} parameters, found {found}")]
    ParamCount {
        /// The family.
        family: Family,
        /// Its number of parameters.
        expected: usize,
        /// The number given.
        found: usize,
    },
    /// A parameter outside its valid range, or not finite.
    #[error("parameter `{param}` of {family} is {value}, outside its valid range {valid}")]
    ParamOutOfRange {
        /// The family.
        family: Family,
        /// The parameter.
        param: &'static str,
        /// The value given.
        value: f64,
        /// Its valid range.
        valid: Interval,
    },
    /// A state of the wrong length.
    #[error("{family} has a {expected}-dimensional state ({names}), found {found} values")]
    StateDim {
        /// The family.
        family: Family,
        /// Its state dimension.
        expected: usize,
        /// The length given.
        found: usize,
        /// Its state component names.
        names: String,
    },
    /// A state outside the family's domain (not finite, or e.g. a gas wall outside its box).
    #[error("invalid {family} state: {reason}")]
    InvalidState {
        /// The family.
        family: Family,
        /// What is wrong with it.
        reason: String,
    },
}

/// Hamiltonian structure: ẋ = J ∇H with x = (q, p), J = [[0, I], [−I, 0]] (docs/protocol.md §3).
pub trait Hamiltonian: VectorField {
    /// ∇ₓH at `x = (q, p)`, written to `grad`.
    fn grad_h(&self, x: &[f64], grad: &mut [f64]);

    /// The same field split as q̇ = ∂T/∂p, ṗ = −∂V/∂q when H is separable.
    fn separable(&self) -> Option<&dyn SeparableField>;
}

/// GENERIC (metriplectic) structure: ẋ = L(x) ∇E + M(x) ∇S (docs/protocol.md §3).
///
/// Degeneracy: L skew with L∇S = 0, M symmetric positive semi-definite with M∇E = 0, so
/// dE/dt = ∇Eᵀ L ∇E + ∇Eᵀ M ∇S = 0 and dS/dt = ∇Sᵀ M ∇S ≥ 0.
pub trait Metriplectic: VectorField {
    /// ∇E at `x`, written to `grad`.
    fn grad_energy(&self, x: &[f64], grad: &mut [f64]);
    /// ∇S at `x`, written to `grad`.
    fn grad_entropy(&self, x: &[f64], grad: &mut [f64]);
    /// The Poisson matrix L(x), `[dim, dim]`.
    fn poisson(&self, x: &[f64]) -> DMatrix<f64>;
    /// The friction matrix M(x), `[dim, dim]`.
    fn friction(&self, x: &[f64]) -> DMatrix<f64>;
}

/// One concrete instance of a family: an exact vector field with its energy and structure.
pub trait System: VectorField + fmt::Debug + Send + Sync {
    /// The family it belongs to.
    fn family(&self) -> Family;

    /// Its parameters, in [`FamilySpec::params`] order.
    fn params(&self) -> Vec<f64>;

    /// Energy H (Hamiltonian) or E (GENERIC).
    fn energy(&self, x: &[f64]) -> f64;

    /// Entropy S (GENERIC families only).
    fn entropy(&self, _x: &[f64]) -> Option<f64> {
        None
    }

    /// The Hamiltonian structure, if any.
    fn hamiltonian(&self) -> Option<&dyn Hamiltonian> {
        None
    }

    /// The GENERIC structure, if any.
    fn metriplectic(&self) -> Option<&dyn Metriplectic> {
        None
    }

    /// Checks that `x` has the family's dimension, is finite and lies in its domain.
    ///
    /// # Errors
    /// [`SystemError::StateDim`] or [`SystemError::InvalidState`].
    fn check_state(&self, x: &[f64]) -> Result<(), SystemError> {
        check_dim_and_finite(self.family(), x)
    }
}

/// Largest |component| of a valid state. Every family's meaningful states (and the learned
/// models' training data, |q|, |p| ≲ 3) lie far inside; a state beyond is a blow-up or a
/// typo, refused before anything is simulated or drawn.
pub const MAX_STATE_MAGNITUDE: f64 = 1e3;

/// The state checks every family shares: dimension, finiteness, magnitude.
fn check_dim_and_finite(family: Family, x: &[f64]) -> Result<(), SystemError> {
    let spec = family.spec();
    if x.len() != spec.state.len() {
        return Err(SystemError::StateDim {
            family,
            expected: spec.state.len(),
            found: x.len(),
            names: spec.state.join(", "),
        });
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(SystemError::InvalidState {
            family,
            reason: format!("{} = {} is not finite", spec.state[i], x[i]),
        });
    }
    if let Some(i) = x.iter().position(|v| v.abs() > MAX_STATE_MAGNITUDE) {
        return Err(SystemError::InvalidState {
            family,
            reason: format!(
                "{} = {} is outside the valid range ±{MAX_STATE_MAGNITUDE}",
                spec.state[i], x[i]
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::integrate::Dopri5;

    /// Central-difference gradient of a scalar function.
    pub(crate) fn fd_grad(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
        let h = 1e-6;
        (0..x.len())
            .map(|i| {
                let (mut a, mut b) = (x.to_vec(), x.to_vec());
                a[i] += h;
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h)
            })
            .collect()
    }

    /// States in each family's sampling domain (docs/protocol.md §3), for the checks below.
    pub(crate) fn sample_states(family: Family) -> Vec<Vec<f64>> {
        match family {
            Family::Tgc => vec![
                vec![1.0, 0.0, 2.0, 2.0],
                vec![0.4, 0.7, 1.3, 2.8],
                vec![1.7, -0.9, 2.9, 1.1],
            ],
            Family::Dno => vec![
                vec![0.5, -0.3, 0.0],
                vec![-1.9, 0.8, 0.4],
                vec![2.0, 1.0, -1.0],
            ],
            _ => vec![vec![0.3, -0.2], vec![1.5, 0.7], vec![-2.0, 1.1]],
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_rejected() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>().unwrap(), f);
        }
        assert_eq!("Mass-Spring".parse::<Family>().unwrap(), Family::MassSpring);
        let err = "pendulumm".parse::<Family>().unwrap_err();
        assert!(err.to_string().contains("pendulumm"), "{err}");
    }

    #[test]
    fn parameters_are_validated() {
        assert!(matches!(
            Family::Pendulum.build(&[1.0]),
            Err(SystemError::ParamCount {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            Family::Pendulum.build(&[f64::NAN, 1.0]),
            Err(SystemError::ParamOutOfRange { param: "m", .. })
        ));
        assert!(matches!(
            Family::MassSpring.build(&[1.0, f64::INFINITY]),
            Err(SystemError::ParamOutOfRange { param: "k", .. })
        ));
        let named = [("l".to_owned(), 0.7), ("m".to_owned(), 1.3)];
        assert_eq!(
            Family::Pendulum.build_named(&named).unwrap().params(),
            vec![1.3, 0.7]
        );
        let err = Family::Pendulum
            .build_named(&[("g".to_owned(), 1.0)])
            .unwrap_err();
        assert!(err.to_string().contains("m, l"), "{err}");
        let twice = [("m".to_owned(), 1.0), ("m".to_owned(), 2.0)];
        assert!(matches!(
            Family::Pendulum.build_named(&twice),
            Err(SystemError::DuplicateParam { .. })
        ));
    }

    #[test]
    fn train_ranges_lie_inside_valid_ranges_and_defaults_are_valid() {
        for f in Family::ALL {
            for p in f.spec().params {
                assert!(
                    p.valid.contains(p.train.lo) && p.valid.contains(p.train.hi),
                    "{f} {}",
                    p.name
                );
                assert!(p.valid.contains(p.default), "{f} {}", p.name);
            }
            assert!(f.build(&f.default_params()).is_ok());
        }
    }

    #[test]
    fn states_are_checked() {
        let s = Family::Dno.build(&Family::Dno.default_params()).unwrap();
        assert!(matches!(
            s.check_state(&[0.0, 0.0]),
            Err(SystemError::StateDim {
                expected: 3,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            s.check_state(&[0.0, f64::NAN, 0.0]),
            Err(SystemError::InvalidState { .. })
        ));
        assert!(s.check_state(&[0.0, 0.0, 0.0]).is_ok());
    }

    /// Each Hamiltonian family: ẋ = J ∇H with ∇H equal to the finite-difference gradient of
    /// H, and the separable split agrees with the full field.
    #[test]
    fn hamiltonian_fields_are_j_grad_h() {
        for family in [Family::MassSpring, Family::Pendulum, Family::Duffing] {
            for params in [
                family.default_params(),
                family.spec().params.iter().map(|p| p.train.hi).collect(),
            ] {
                let sys = family.build(&params).unwrap();
                let ham = sys.hamiltonian().expect("Hamiltonian family");
                let sep = ham.separable().expect("separable family");
                for x in sample_states(family) {
                    let mut g = [0.0; 2];
                    ham.grad_h(&x, &mut g);
                    let fd = fd_grad(|y| sys.energy(y), &x);
                    for i in 0..2 {
                        assert!(
                            (g[i] - fd[i]).abs() < 1e-7 * (1.0 + g[i].abs()),
                            "{family}: ∇H {g:?} vs {fd:?}"
                        );
                    }
                    let mut dx = [0.0; 2];
                    sys.eval(&x, &mut dx);
                    assert!((dx[0] - g[1]).abs() < 1e-14 && (dx[1] + g[0]).abs() < 1e-14);
                    let (mut qd, mut pd) = ([0.0], [0.0]);
                    sep.velocity(&x[1..], &mut qd);
                    sep.force(&x[..1], &mut pd);
                    assert_eq!([qd[0], pd[0]], dx);
                }
            }
        }
    }

    /// dno and tgc: L skew, M symmetric PSD, L∇S = 0, M∇E = 0 to 1e-12, ẋ = L∇E + M∇S, and
    /// ∇E, ∇S match finite differences of E and S.
    #[test]
    fn generic_structure_holds_to_round_off() {
        for family in [Family::Dno, Family::Tgc] {
            for params in [
                family.default_params(),
                family.spec().params.iter().map(|p| p.train.hi).collect(),
            ] {
                let sys = family.build(&params).unwrap();
                let g = sys.metriplectic().expect("GENERIC family");
                let n = family.dim();
                for x in sample_states(family) {
                    let (mut ge, mut gs) = (vec![0.0; n], vec![0.0; n]);
                    g.grad_energy(&x, &mut ge);
                    g.grad_entropy(&x, &mut gs);
                    let fde = fd_grad(|y| sys.energy(y), &x);
                    let fds = fd_grad(|y| sys.entropy(y).unwrap(), &x);
                    for i in 0..n {
                        assert!(
                            (ge[i] - fde[i]).abs() < 1e-6 * (1.0 + ge[i].abs()),
                            "{family} ∇E {ge:?} vs {fde:?}"
                        );
                        assert!((gs[i] - fds[i]).abs() < 1e-6, "{family} ∇S");
                    }
                    let (l, m) = (g.poisson(&x), g.friction(&x));
                    let (ge, gs) = (
                        nalgebra::DVector::from_vec(ge),
                        nalgebra::DVector::from_vec(gs),
                    );
                    let scale = 1.0 + m.norm() * ge.norm();
                    assert!((&l + l.transpose()).norm() < 1e-12);
                    assert!((&l * &gs).norm() < 1e-12 * scale);
                    assert!((&m - m.transpose()).norm() < 1e-12 * scale);
                    assert!(
                        (&m * &ge).norm() < 1e-12 * scale,
                        "{family}: ‖M∇E‖ = {}",
                        (&m * &ge).norm()
                    );
                    let min_eig = m.clone().symmetric_eigenvalues().min();
                    assert!(min_eig > -1e-12 * scale, "{family}: min eig M = {min_eig}");
                    let mut dx = vec![0.0; n];
                    sys.eval(&x, &mut dx);
                    let assembled = &l * &ge + &m * &gs;
                    for i in 0..n {
                        assert!(
                            (dx[i] - assembled[i]).abs() < 1e-12 * scale,
                            "{family}: ẋ ≠ L∇E + M∇S"
                        );
                    }
                }
            }
        }
    }

    /// Along exact trajectories of dno and tgc, E is constant and S never decreases.
    #[test]
    fn generic_trajectories_conserve_energy_and_produce_entropy() {
        for family in [Family::Dno, Family::Tgc] {
            let sys = family.build(&family.default_params()).unwrap();
            for x0 in sample_states(family) {
                let mut x = x0.clone();
                let mut dopri = Dopri5::new(x.len());
                let (e0, mut s_prev) = (sys.energy(&x), sys.entropy(&x).unwrap());
                for _ in 0..100 {
                    dopri.integrate(sys.as_ref(), &mut x, 0.0, 0.05).unwrap();
                    let s = sys.entropy(&x).unwrap();
                    assert!(
                        (sys.energy(&x) - e0).abs() < 1e-8 * (1.0 + e0.abs()),
                        "{family}: E drifts"
                    );
                    assert!(
                        s >= s_prev - 1e-10,
                        "{family}: S decreased from {s_prev} to {s}"
                    );
                    s_prev = s;
                }
                let mut dx = vec![0.0; x.len()];
                sys.eval(&x0, &mut dx);
            }
        }
    }
}
