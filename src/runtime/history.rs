//! What a body's previous steps leave for its next one: the implicit midpoint's predictor.
//!
//! The midpoint stage y solves y = x₀ + (h/2) f(y), with f(y) the step's slope
//! k = (x₁ − x₀)/h, the field at the step's midpoint. The slopes of the two previous steps,
//! k₁ at t − h₁/2 and k₂ at t − h₁ − h₂/2, extrapolate linearly to the next one at t + h/2:
//!
//! ```text
//! k̂ = k₁ + (k₁ − k₂)·(h₁ + h)/(h₁ + h₂)        error O(h²) in k̂, so y⁰ − y = O(h³)
//! ```
//!
//! against y⁰ − y = O(h²) and one field evaluation for the explicit half step
//! y⁰ = x₀ + (h/2) f(x₀) that starts a solve without history. With one previous step only,
//! k̂ = k₁ (as good as the explicit half step, and free). A body whose state or latent is
//! edited from outside forgets its history ([`StepHistory::forget`]): its old slopes belong
//! to other physics.

use crate::integrate::gather_rows;

/// Per row: the last two midpoint slopes and their step sizes, `[k₁ (n), k₂ (n), h₁, h₂]`,
/// NaN where unknown. Rows are bodies of one batch, in the batch's order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepHistory {
    n: usize,
    data: Vec<f32>,
}

impl StepHistory {
    /// Values per row for states of width `n`: 2n + 2.
    pub fn width(n: usize) -> usize {
        2 * n + 2
    }

    /// `rows` rows of width `n` with nothing known.
    pub fn new(rows: usize, n: usize) -> Self {
        Self {
            n,
            data: vec![f32::NAN; rows * Self::width(n)],
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.data.len() / Self::width(self.n).max(1)
    }

    /// Row `k` (`[width(n)]`), to store with its body.
    pub fn row(&self, k: usize) -> &[f32] {
        let w = Self::width(self.n);
        &self.data[k * w..(k + 1) * w]
    }

    /// Sets row `k` (`[width(n)]`, e.g. a body's stored history).
    ///
    /// # Panics
    /// When `values` is not one row wide.
    pub fn set_row(&mut self, k: usize, values: &[f32]) {
        let w = Self::width(self.n);
        self.data[k * w..(k + 1) * w].copy_from_slice(values);
    }

    /// Forgets row `k`: its next step starts from the explicit half step.
    pub fn forget(&mut self, k: usize) {
        let w = Self::width(self.n);
        self.data[k * w..(k + 1) * w].fill(f32::NAN);
    }

    /// The rows `rows` of this history, in that order.
    pub fn select(&self, rows: &[usize]) -> Self {
        Self {
            n: self.n,
            data: gather_rows(&self.data, rows, Self::width(self.n)),
        }
    }

    /// Writes `part` (a [`StepHistory::select`] of `rows`, since stepped) back into its rows.
    pub fn scatter(&mut self, rows: &[usize], part: &Self) {
        let w = Self::width(self.n);
        for (j, &k) in rows.iter().enumerate() {
            self.data[k * w..(k + 1) * w].copy_from_slice(part.row(j));
        }
    }

    /// The predicted midpoint slope k̂ of the next step of size `h` per row (`[B·n]`), NaN
    /// for rows without history; `None` when this history does not hold `rows` rows of width
    /// `n` (then nothing is known).
    pub fn predictor(&self, rows: usize, n: usize, h: f64) -> Option<Vec<f32>> {
        if self.n != n || self.rows() != rows || rows == 0 {
            return None;
        }
        let h = h as f32;
        let mut out = vec![f32::NAN; rows * n];
        for (r, row) in self.data.chunks_exact(Self::width(n)).enumerate() {
            let (k1, rest) = row.split_at(n);
            let (k2, steps) = rest.split_at(n);
            let (h1, h2) = (steps[0], steps[1]);
            let target = &mut out[r * n..(r + 1) * n];
            if !h1.is_finite() {
                continue;
            }
            if h2.is_finite() && k2.iter().all(|v| v.is_finite()) {
                let ratio = (h1 + h) / (h1 + h2);
                for ((t, a), b) in target.iter_mut().zip(k1).zip(k2) {
                    *t = a + (a - b) * ratio;
                }
            } else {
                target.copy_from_slice(k1);
            }
        }
        Some(out)
    }

    /// Records a step of size `h` whose slopes were `slope` (`[B·n]`; a NaN row, a step
    /// that was not a fixed-point midpoint step, forgets that row). A history of another
    /// shape is replaced.
    pub fn push(&mut self, slope: &[f32], n: usize, h: f64) {
        let rows = slope.len() / n.max(1);
        if self.n != n || self.rows() != rows {
            *self = Self::new(rows, n);
        }
        let w = Self::width(n);
        for (row, k) in self.data.chunks_exact_mut(w).zip(slope.chunks_exact(n)) {
            if k.iter().any(|v| !v.is_finite()) {
                row.fill(f32::NAN);
                continue;
            }
            let (k1, rest) = row.split_at_mut(n);
            let (k2, steps) = rest.split_at_mut(n);
            k2.copy_from_slice(k1);
            k1.copy_from_slice(k);
            steps[1] = steps[0];
            steps[0] = h as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slopes_extrapolate_linearly_in_time() {
        // k(t) = 1 + 2t sampled at the midpoints of two steps (h₂ = 0.2 then h₁ = 0.1,
        // ending at t = 0): midpoints −0.2 and −0.05; the next step of 0.3 has its midpoint
        // at 0.15.
        let mut history = StepHistory::new(1, 1);
        assert!(history.predictor(1, 1, 0.1).unwrap()[0].is_nan());
        history.push(&[1.0 + 2.0 * -0.2], 1, 0.2);
        assert!((history.predictor(1, 1, 0.1).unwrap()[0] - 0.6).abs() < 1e-6);
        history.push(&[1.0 + 2.0 * -0.05], 1, 0.1);
        let k = history.predictor(1, 1, 0.3).unwrap()[0];
        assert!((k - (1.0 + 2.0 * 0.15)).abs() < 1e-6, "{k}");
        // A failed step (NaN slope) and `forget` both start the row over.
        history.push(&[f32::NAN], 1, 0.1);
        assert!(history.predictor(1, 1, 0.1).unwrap()[0].is_nan());
        history.push(&[1.0], 1, 0.1);
        history.forget(0);
        assert!(history.predictor(1, 1, 0.1).unwrap()[0].is_nan());
        // Another shape knows nothing.
        assert_eq!(history.predictor(2, 1, 0.1), None);
    }

    #[test]
    fn rows_select_and_scatter_back() {
        let mut history = StepHistory::new(3, 1);
        history.push(&[1.0, 2.0, 3.0], 1, 0.1);
        let mut part = history.select(&[2, 0]);
        assert_eq!(part.row(0)[0], 3.0);
        part.push(&[30.0, 10.0], 1, 0.1);
        history.scatter(&[2, 0], &part);
        assert_eq!(
            [history.row(0)[0], history.row(1)[0], history.row(2)[0]],
            [10.0, 2.0, 30.0]
        );
        assert_eq!(history.row(0)[1], 1.0, "k₂ is the previous k₁");
    }
}
