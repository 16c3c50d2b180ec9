//! ε_field and field SSIM on the evaluation grids of docs/protocol.md §6: the fixed
//! [−3, 3]² grid ([`FieldGrid::for_family`], far outside some families' training data: the
//! out-of-distribution column) and a grid over the training data's bounding box
//! ([`FieldGrid::over_box`]: the primary column).

use rand::RngExt;

use super::{relative_l2, ssim};
use crate::{data::stream_rng, systems::Family};

/// Points per axis of the phase-plane grid.
pub const FIELD_GRID_SIZE: usize = 50;
/// The grid covers [−3, 3]² in (q, p).
pub const FIELD_GRID_RANGE: (f64, f64) = (-3.0, 3.0);
/// Uniform samples of the tgc box.
pub const TGC_FIELD_SAMPLES: usize = 4096;

/// Where a learned field is compared with the true one.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldGrid {
    /// The family.
    pub family: Family,
    /// Points, row-major `[n, dim]`.
    pub points: Vec<f64>,
    /// `Some((rows, cols))` when the points form an image: row i is p, column j is q.
    pub image: Option<(usize, usize)>,
}

impl FieldGrid {
    /// The grid of docs/protocol.md §6: a 50×50 grid over [−3, 3]² in (q, p) for the Hamiltonian
    /// families and dno (at S = 0); 4096 uniform samples of the tgc box q ∈ [0.2, 1.8],
    /// p ∈ [−1, 1], S₁, S₂ ∈ [1, 3] (stream `metrics/tgc-grid`, seed 0).
    pub fn for_family(family: Family) -> Self {
        let (lo, hi) = FIELD_GRID_RANGE;
        let (lo, hi): (Vec<f64>, Vec<f64>) = if family == Family::Tgc {
            (vec![0.2, -1.0, 1.0, 1.0], vec![1.8, 1.0, 3.0, 3.0])
        } else {
            let rest = family.dim() - 2;
            (
                [lo, lo]
                    .into_iter()
                    .chain(std::iter::repeat_n(0.0, rest))
                    .collect(),
                [hi, hi]
                    .into_iter()
                    .chain(std::iter::repeat_n(0.0, rest))
                    .collect(),
            )
        };
        Self::in_box(family, &lo, &hi, "metrics/tgc-grid")
    }

    /// The grid over a box `lo`…`hi` (one bound per state component), e.g. the bounding box
    /// of a family's training data: a 50×50 grid in (q, p) with the other components at
    /// the box's centre (dno's S), or for tgc [`TGC_FIELD_SAMPLES`] uniform samples of the
    /// box (stream `metrics/box-grid`, seed 0).
    ///
    /// # Panics
    /// When `lo` or `hi` is not one bound per state component.
    pub fn over_box(family: Family, lo: &[f64], hi: &[f64]) -> Self {
        Self::in_box(family, lo, hi, "metrics/box-grid")
    }

    /// [`FieldGrid::over_box`], tgc's samples drawn from `stream`.
    fn in_box(family: Family, lo: &[f64], hi: &[f64], stream: &str) -> Self {
        let dim = family.dim();
        assert!(
            lo.len() == dim && hi.len() == dim,
            "FieldGrid::over_box: {dim} bounds needed"
        );
        if family == Family::Tgc {
            let mut rng = stream_rng(stream, 0, 0);
            let points = (0..TGC_FIELD_SAMPLES)
                .flat_map(|_| {
                    (0..dim)
                        .map(|i| lo[i] + (hi[i] - lo[i]) * rng.random::<f64>())
                        .collect::<Vec<_>>()
                })
                .collect();
            return Self {
                family,
                points,
                image: None,
            };
        }
        let n = FIELD_GRID_SIZE;
        let at = |c: usize, i: usize| lo[c] + (hi[c] - lo[c]) * i as f64 / (n - 1) as f64;
        let mut points = Vec::with_capacity(n * n * dim);
        for i in 0..n {
            for j in 0..n {
                points.extend_from_slice(&[at(0, j), at(1, i)]);
                points.extend((2..dim).map(|c| 0.5 * (lo[c] + hi[c])));
            }
        }
        Self {
            family,
            points,
            image: Some((n, n)),
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len() / self.family.dim()
    }

    /// Whether the grid has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Evaluates `field` at every point, row-major `[n, dim]`.
    pub fn evaluate(&self, field: &dyn Fn(&[f64], &mut [f64])) -> Vec<f64> {
        let dim = self.family.dim();
        let mut out = vec![0.0; self.points.len()];
        for (x, dx) in self.points.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            field(x, dx);
        }
        out
    }
}

/// ε_field = ‖F̂ − F‖₂ / ‖F‖₂ over all grid points and components.
pub fn field_error(predicted: &[f64], truth: &[f64]) -> f64 {
    relative_l2(predicted, truth)
}

/// Mean SSIM over the field components (q̇, ṗ, … as images on the grid), each with the data
/// range of its true component (1 where that component is constant). `None` when the grid
/// is not an image (tgc).
pub fn field_ssim(grid: &FieldGrid, predicted: &[f64], truth: &[f64]) -> Option<f64> {
    let (rows, cols) = grid.image?;
    let dim = grid.family.dim();
    let mut total = 0.0;
    for c in 0..dim {
        let a: Vec<f64> = predicted.iter().skip(c).step_by(dim).copied().collect();
        let b: Vec<f64> = truth.iter().skip(c).step_by(dim).copied().collect();
        let (lo, hi) = b
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(*v), h.max(*v))
            });
        let range = if hi > lo { hi - lo } else { 1.0 };
        total += ssim(&a, &b, cols, rows, range);
    }
    Some(total / dim as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_grid_spans_its_box() {
        let g = FieldGrid::over_box(Family::Duffing, &[-1.0, -2.0], &[1.0, 2.0]);
        assert_eq!(g.len(), 2500);
        assert_eq!(&g.points[..2], &[-1.0, -2.0]);
        assert_eq!(&g.points[g.points.len() - 2..], &[1.0, 2.0]);
        // dno's entropy at the box's centre.
        let d = FieldGrid::over_box(Family::Dno, &[-1.0, -1.0, 0.5], &[1.0, 1.0, 1.5]);
        assert!(d.points.chunks(3).all(|x| x[2] == 1.0));
        // tgc: uniform samples inside the box.
        let (lo, hi) = ([0.3, -2.0, 1.0, 1.2], [1.6, 2.0, 3.0, 2.8]);
        let t = FieldGrid::over_box(Family::Tgc, &lo, &hi);
        assert_eq!(t.len(), TGC_FIELD_SAMPLES);
        assert!(
            t.points
                .chunks(4)
                .all(|x| (0..4).all(|c| lo[c] <= x[c] && x[c] <= hi[c]))
        );
        assert!(t.image.is_none());
    }

    #[test]
    fn grids_have_the_protocol_shape() {
        let g = FieldGrid::for_family(Family::Pendulum);
        assert_eq!(g.len(), 2500);
        assert_eq!(&g.points[..2], &[-3.0, -3.0]);
        assert_eq!(&g.points[g.points.len() - 2..], &[3.0, 3.0]);
        let d = FieldGrid::for_family(Family::Dno);
        assert!(d.points.chunks(3).all(|x| x[2] == 0.0));
        let t = FieldGrid::for_family(Family::Tgc);
        assert_eq!(t.len(), TGC_FIELD_SAMPLES);
        assert!(t.image.is_none() && t.points.chunks(4).all(|x| x[0] >= 0.2 && x[0] <= 1.8));
    }

    #[test]
    fn identical_fields_score_perfectly_and_a_wrong_one_does_not() {
        let grid = FieldGrid::for_family(Family::Pendulum);
        let sys = Family::Pendulum.build(&[1.0, 1.0]).unwrap();
        let truth = grid.evaluate(&|x, dx| sys.eval(x, dx));
        assert_eq!(field_error(&truth, &truth), 0.0);
        assert!((field_ssim(&grid, &truth, &truth).unwrap() - 1.0).abs() < 1e-12);
        // Doubling the field: ε_field = 1 exactly.
        let doubled: Vec<f64> = truth.iter().map(|v| 2.0 * v).collect();
        assert!((field_error(&doubled, &truth) - 1.0).abs() < 1e-14);
        let other = Family::Pendulum.build(&[1.0, 1.9]).unwrap();
        let wrong = grid.evaluate(&|x, dx| other.eval(x, dx));
        assert!(field_ssim(&grid, &wrong, &truth).unwrap() < 0.99);
    }
}
