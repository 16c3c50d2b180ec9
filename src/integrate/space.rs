//! What the integrators are generic over: a state space and a flow on it.
//!
//! Every fixed-step integrator in this module is written once against [`Space`] (a vector
//! space of states) and [`Flow`] / [`SplitFlow`] (the right-hand side), so the same code
//! steps one ground-truth system in f64, a batch of learned systems as an f32 slice on the
//! CPU, and a batch as a burn tensor on the GPU.
//!
//! | state | [`Space`] impl | typical flow |
//! |---|---|---|
//! | one system, f64 | `Vec<f64>` | [`FieldFlow`] over a [`VectorField`] |
//! | one small system, f64, no heap | [`SmallState`] | [`FieldFlow`] over a [`VectorField`] |
//! | a batch, f32 rows | `Vec<f32>` | a learned model on the CPU kernel |
//! | a batch on a device | `Tensor<B, 2>` | a learned model in burn |

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use super::{SeparableField, VectorField};
use crate::metrics::worst;

/// A vector space of (possibly batched) states.
pub trait Space: Clone {
    /// self + a·k.
    fn add_scaled(&self, a: f64, k: &Self) -> Self;

    /// self + Σᵢ aᵢ·kᵢ.
    fn lincomb(&self, terms: &[(f64, &Self)]) -> Self {
        terms
            .iter()
            .fold(self.clone(), |acc, (a, k)| acc.add_scaled(*a, k))
    }

    /// maxᵢ |selfᵢ − otherᵢ| over every entry; NaN when an entry is NaN (so a NaN never
    /// reads as converged).
    fn max_abs_diff(&self, other: &Self) -> f64;

    /// maxᵢ |selfᵢ|; NaN when an entry is NaN.
    fn max_abs(&self) -> f64;

    /// Whether every entry is finite.
    fn all_finite(&self) -> bool;
}

/// An autonomous right-hand side ẋ = f(x) on a [`Space`].
pub trait Flow<S> {
    /// f(x).
    fn rate(&self, x: &S) -> S;
}

/// A separable Hamiltonian flow split into its two exactly solvable halves.
pub trait SplitFlow<S> {
    /// Drift: q ← q + h ∂T/∂p, p unchanged.
    fn drift(&self, x: &S, h: f64) -> S;
    /// Kick: p ← p − h ∂V/∂q, q unchanged.
    fn kick(&self, x: &S, h: f64) -> S;
}

impl Space for Vec<f64> {
    fn add_scaled(&self, a: f64, k: &Self) -> Self {
        self.iter().zip(k).map(|(x, k)| x + a * k).collect()
    }

    fn lincomb(&self, terms: &[(f64, &Self)]) -> Self {
        let mut out = self.clone();
        for (a, k) in terms {
            out.iter_mut().zip(k.iter()).for_each(|(o, k)| *o += a * k);
        }
        out
    }

    fn max_abs_diff(&self, other: &Self) -> f64 {
        worst(self.iter().zip(other).map(|(a, b)| (a - b).abs()))
    }

    fn max_abs(&self) -> f64 {
        worst(self.iter().map(|a| a.abs()))
    }

    fn all_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
}

impl Space for Vec<f32> {
    fn add_scaled(&self, a: f64, k: &Self) -> Self {
        let a = a as f32;
        self.iter().zip(k).map(|(x, k)| x + a * k).collect()
    }

    fn lincomb(&self, terms: &[(f64, &Self)]) -> Self {
        let mut out = self.clone();
        for (a, k) in terms {
            let a = *a as f32;
            out.iter_mut().zip(k.iter()).for_each(|(o, k)| *o += a * k);
        }
        out
    }

    fn max_abs_diff(&self, other: &Self) -> f64 {
        worst(
            self.iter()
                .zip(other)
                .map(|(a, b)| f64::from((a - b).abs())),
        )
    }

    fn max_abs(&self) -> f64 {
        worst(self.iter().map(|a| f64::from(a.abs())))
    }

    fn all_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
}

impl<B: Backend> Space for Tensor<B, 2> {
    fn add_scaled(&self, a: f64, k: &Self) -> Self {
        self.clone() + k.clone().mul_scalar(a)
    }

    fn max_abs_diff(&self, other: &Self) -> f64 {
        (self.clone() - other.clone())
            .abs()
            .max()
            .into_scalar()
            .elem::<f64>()
    }

    fn max_abs(&self) -> f64 {
        self.clone().abs().max().into_scalar().elem::<f64>()
    }

    fn all_finite(&self) -> bool {
        self.clone().is_finite().all().into_scalar().elem::<bool>()
    }
}

/// The rows `rows` of the row-major `values` (`[B·width]`), packed in that order.
pub fn gather_rows<T: Copy>(values: &[T], rows: &[usize], width: usize) -> Vec<T> {
    rows.iter()
        .flat_map(|&k| values[k * width..(k + 1) * width].iter().copied())
        .collect()
}

/// One f64 system seen as a [`Flow`] on `Vec<f64>` (and a [`SplitFlow`] when separable).
pub struct FieldFlow<'a, F: ?Sized>(pub &'a F);

impl<F: VectorField + ?Sized> Flow<Vec<f64>> for FieldFlow<'_, F> {
    fn rate(&self, x: &Vec<f64>) -> Vec<f64> {
        let mut dx = vec![0.0; x.len()];
        self.0.eval(x, &mut dx);
        dx
    }
}

impl<F: VectorField + ?Sized> Flow<SmallState> for FieldFlow<'_, F> {
    fn rate(&self, x: &SmallState) -> SmallState {
        let mut dx = SmallState::zeros(x.len());
        self.0.eval(x, &mut dx);
        dx
    }
}

/// Largest dimension a [`SmallState`] holds: every ground-truth family's (tgc's is 4).
pub const SMALL_DIM: usize = 4;

/// A state of at most [`SMALL_DIM`] f64 values held inline: the same arithmetic as
/// `Vec<f64>` (bit for bit) without a heap allocation per stage, for code that steps many
/// small systems one at a time every frame (the ground truth beside observed bodies,
/// [`crate::runtime::TruthSimulator`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmallState {
    values: [f64; SMALL_DIM],
    len: usize,
}

impl SmallState {
    /// `len` zeros; `None` when `len` > [`SMALL_DIM`].
    pub fn try_zeros(len: usize) -> Option<Self> {
        (len <= SMALL_DIM).then_some(Self {
            values: [0.0; SMALL_DIM],
            len,
        })
    }

    fn zeros(len: usize) -> Self {
        Self::try_zeros(len).expect("a SmallState's length is checked where it is made")
    }

    /// A copy of `values`; `None` when there are more than [`SMALL_DIM`].
    pub fn from_slice(values: &[f64]) -> Option<Self> {
        let mut out = Self::try_zeros(values.len())?;
        out.copy_from_slice(values);
        Some(out)
    }
}

impl std::ops::Deref for SmallState {
    type Target = [f64];

    fn deref(&self) -> &[f64] {
        &self.values[..self.len]
    }
}

impl std::ops::DerefMut for SmallState {
    fn deref_mut(&mut self) -> &mut [f64] {
        &mut self.values[..self.len]
    }
}

impl Space for SmallState {
    fn add_scaled(&self, a: f64, k: &Self) -> Self {
        let mut out = *self;
        out.iter_mut().zip(k.iter()).for_each(|(x, k)| *x += a * k);
        out
    }

    fn lincomb(&self, terms: &[(f64, &Self)]) -> Self {
        let mut out = *self;
        for (a, k) in terms {
            out.iter_mut().zip(k.iter()).for_each(|(o, k)| *o += a * k);
        }
        out
    }

    fn max_abs_diff(&self, other: &Self) -> f64 {
        worst(self.iter().zip(other.iter()).map(|(a, b)| (a - b).abs()))
    }

    fn max_abs(&self) -> f64 {
        worst(self.iter().map(|a| a.abs()))
    }

    fn all_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }
}

/// A [`SeparableField`] as a [`SplitFlow`] on `Vec<f64>` with x = (q, p).
pub struct SeparableFlow<'a>(pub &'a dyn SeparableField);

impl SplitFlow<Vec<f64>> for SeparableFlow<'_> {
    fn drift(&self, x: &Vec<f64>, h: f64) -> Vec<f64> {
        let n = self.0.dof();
        let mut qdot = vec![0.0; n];
        self.0.velocity(&x[n..], &mut qdot);
        let mut out = x.clone();
        out[..n]
            .iter_mut()
            .zip(&qdot)
            .for_each(|(q, v)| *q += h * v);
        out
    }

    fn kick(&self, x: &Vec<f64>, h: f64) -> Vec<f64> {
        let n = self.0.dof();
        let mut pdot = vec![0.0; n];
        self.0.force(&x[..n], &mut pdot);
        let mut out = x.clone();
        out[n..]
            .iter_mut()
            .zip(&pdot)
            .for_each(|(p, f)| *p += h * f);
        out
    }
}
