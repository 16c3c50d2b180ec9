//! Vectorised element-wise kernels (AVX-512, AVX2 or NEON, chosen at run time by `pulp`).

use pulp::{Arch, Simd, WithSimd};

/// tanh as a [13/6] rational function on x ∈ [−7.9053, 7.9053] (±1 beyond), the
/// approximation Eigen uses for f32 (`generic_fast_tanh_float`): error within a few ulp.
///
/// ```text
/// tanh x ≈ x·(α₁ + α₃x² + … + α₁₃x¹²) / (β₀ + β₂x² + β₄x⁴ + β₆x⁶)
/// ```
const CLAMP: f32 = 7.905_311;
const ALPHA: [f32; 7] = [
    4.893_524_6e-3,
    6.372_619_3e-4,
    1.485_722_4e-5,
    5.122_297e-8,
    -8.604_672e-11,
    2.000_188e-13,
    -2.760_768_5e-16,
];
const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];

/// Scalar reference of the same rational tanh (the vector form's test reference).
#[cfg(test)]
fn tanh_scalar(x: f32) -> f32 {
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = ALPHA[6];
    for a in ALPHA[..6].iter().rev() {
        p = p.mul_add(x2, *a);
    }
    let mut q = BETA[3];
    for b in BETA[..3].iter().rev() {
        q = q.mul_add(x2, *b);
    }
    x * p / q
}

#[inline(always)]
fn tanh_simd<S: Simd>(simd: S, x_in: S::f32s) -> S::f32s {
    let x = simd.min_f32s(
        simd.max_f32s(x_in, simd.splat_f32s(-CLAMP)),
        simd.splat_f32s(CLAMP),
    );
    let x2 = simd.mul_f32s(x, x);
    let mut p = simd.splat_f32s(ALPHA[6]);
    for a in ALPHA[..6].iter().rev() {
        p = simd.mul_add_f32s(p, x2, simd.splat_f32s(*a));
    }
    let mut q = simd.splat_f32s(BETA[3]);
    for b in BETA[..3].iter().rev() {
        q = simd.mul_add_f32s(q, x2, simd.splat_f32s(*b));
    }
    let y = simd.div_f32s(simd.mul_f32s(x, p), q);
    // The clamp's min/max would turn a NaN into ±7.9 (x86 returns an operand): a NaN
    // input stays NaN, so a non-finite state or latent is seen downstream, not squashed.
    simd.select_f32s(simd.equal_f32s(x_in, x_in), y, x_in)
}

struct TanhRows<'a> {
    src: &'a [f32],
    /// One bias row per run, `[runs, width]`.
    bias: &'a [f32],
    /// Run k is rows `bounds[k] .. bounds[k + 1]`.
    bounds: &'a [usize],
    src_stride: usize,
    dst: &'a mut [f32],
    dst_stride: usize,
    width: usize,
}

impl WithSimd for TanhRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        for (k, run) in self.bounds.windows(2).enumerate() {
            let bias = &self.bias[k * self.width..(k + 1) * self.width];
            let (bias_head, bias_tail) = S::as_simd_f32s(bias);
            for r in run[0]..run[1] {
                let src = &self.src[r * self.src_stride..r * self.src_stride + self.width];
                let dst = &mut self.dst[r * self.dst_stride..r * self.dst_stride + self.width];
                let (src_head, src_tail) = S::as_simd_f32s(src);
                let (dst_head, dst_tail) = S::as_mut_simd_f32s(dst);
                for ((d, s), b) in dst_head.iter_mut().zip(src_head).zip(bias_head) {
                    *d = tanh_simd(simd, simd.add_f32s(*s, *b));
                }
                // The tail (width mod lanes) as one masked vector: per element, the scalar
                // form costs as much as a whole vector (a division and ten FMAs either way).
                if !dst_tail.is_empty() {
                    let x = simd.add_f32s(
                        simd.partial_load_f32s(src_tail),
                        simd.partial_load_f32s(bias_tail),
                    );
                    simd.partial_store_f32s(dst_tail, tanh_simd(simd, x));
                }
            }
        }
    }
}

/// dst[r, 0..width] = tanh(src[r, 0..width] + bias) for `rows` rows of `src_stride` and
/// `dst_stride` floats (the bias add fused into the activation pass).
pub fn tanh_rows(
    src: &[f32],
    src_stride: usize,
    bias: &[f32],
    dst: &mut [f32],
    dst_stride: usize,
    rows: usize,
    width: usize,
) {
    tanh_runs(src, src_stride, bias, &[0, rows], dst, dst_stride, width);
}

/// [`tanh_rows`] with one bias row per run of rows: run k, rows `bounds[k] .. bounds[k + 1]`,
/// adds `bias[k·width .. (k + 1)·width]` (the training path's b + s(z) per latent).
pub fn tanh_runs(
    src: &[f32],
    src_stride: usize,
    bias: &[f32],
    bounds: &[usize],
    dst: &mut [f32],
    dst_stride: usize,
    width: usize,
) {
    let rows = bounds.last().copied().unwrap_or(0);
    assert!(
        bounds.windows(2).all(|w| w[0] <= w[1])
            && (rows == 0
                || (src.len() >= (rows - 1) * src_stride + width
                    && dst.len() >= (rows - 1) * dst_stride + width))
    );
    assert_eq!(
        bias.len(),
        width * bounds.len().saturating_sub(1),
        "tanh_runs: bias of {} for width {width} and {} runs",
        bias.len(),
        bounds.len().saturating_sub(1)
    );
    Arch::new().dispatch(TanhRows {
        src,
        bias,
        bounds,
        src_stride,
        dst,
        dst_stride,
        width,
    });
}

struct DtanhMul<'a> {
    g: &'a [f32],
    g_stride: usize,
    a: &'a [f32],
    a_stride: usize,
    dst: &'a mut [f32],
    dst_stride: usize,
    rows: usize,
    width: usize,
}

impl WithSimd for DtanhMul<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let one = simd.splat_f32s(1.0);
        for r in 0..self.rows {
            let g = &self.g[r * self.g_stride..r * self.g_stride + self.width];
            let a = &self.a[r * self.a_stride..r * self.a_stride + self.width];
            let dst = &mut self.dst[r * self.dst_stride..r * self.dst_stride + self.width];
            let (g_head, g_tail) = S::as_simd_f32s(g);
            let (a_head, a_tail) = S::as_simd_f32s(a);
            let (d_head, d_tail) = S::as_mut_simd_f32s(dst);
            for ((dv, gv), av) in d_head.iter_mut().zip(g_head).zip(a_head) {
                *dv = simd.mul_f32s(*gv, simd.sub_f32s(one, simd.mul_f32s(*av, *av)));
            }
            for ((dv, gv), av) in d_tail.iter_mut().zip(g_tail).zip(a_tail) {
                *dv = gv * (1.0 - av * av);
            }
        }
    }
}

/// dst[r, ·] = g[r, ·] ⊙ (1 − a[r, ·]²) (the tanh derivative) for `rows` rows of `width`,
/// each operand with its own row stride.
#[expect(clippy::too_many_arguments, reason = "three strided operands")]
pub fn mul_dtanh(
    g: &[f32],
    g_stride: usize,
    a: &[f32],
    a_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    rows: usize,
    width: usize,
) {
    let fits = |len: usize, stride: usize| rows == 0 || len >= (rows - 1) * stride + width;
    assert!(
        fits(g.len(), g_stride) && fits(a.len(), a_stride) && fits(dst.len(), dst_stride),
        "mul_dtanh: operands too short"
    );
    Arch::new().dispatch(DtanhMul {
        g,
        g_stride,
        a,
        a_stride,
        dst,
        dst_stride,
        rows,
        width,
    });
}

struct DtanhCurvature<'a> {
    dy: (&'a [f32], usize),
    g: (&'a [f32], usize),
    a: (&'a [f32], usize),
    next: (&'a mut [f32], usize),
    abar: (&'a mut [f32], usize),
    rows: usize,
    width: usize,
}

impl WithSimd for DtanhCurvature<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (one, minus_two) = (simd.splat_f32s(1.0), simd.splat_f32s(-2.0));
        let w = self.width;
        fn row((buf, stride): (&[f32], usize), r: usize, w: usize) -> &[f32] {
            &buf[r * stride..r * stride + w]
        }
        let (next, ns) = self.next;
        let (abar, abs) = self.abar;
        for r in 0..self.rows {
            let (dy, g, a) = (row(self.dy, r, w), row(self.g, r, w), row(self.a, r, w));
            let n = &mut next[r * ns..r * ns + w];
            let ab = &mut abar[r * abs..r * abs + w];
            let (dy_head, dy_tail) = S::as_simd_f32s(dy);
            let (g_head, g_tail) = S::as_simd_f32s(g);
            let (a_head, a_tail) = S::as_simd_f32s(a);
            let (n_head, n_tail) = S::as_mut_simd_f32s(n);
            let (ab_head, ab_tail) = S::as_mut_simd_f32s(ab);
            for ((((nv, abv), dv), gv), av) in n_head
                .iter_mut()
                .zip(ab_head.iter_mut())
                .zip(dy_head)
                .zip(g_head)
                .zip(a_head)
            {
                *nv = simd.mul_f32s(*dv, simd.sub_f32s(one, simd.mul_f32s(*av, *av)));
                *abv = simd.mul_f32s(simd.mul_f32s(simd.mul_f32s(minus_two, *dv), *gv), *av);
            }
            for ((((nv, abv), dv), gv), av) in n_tail
                .iter_mut()
                .zip(ab_tail.iter_mut())
                .zip(dy_tail)
                .zip(g_tail)
                .zip(a_tail)
            {
                *nv = dv * (1.0 - av * av);
                *abv = -2.0 * dv * gv * av;
            }
        }
    }
}

/// The adjoint's step through a tanh layer of the ∇ₓ chain, both outputs in one pass over
/// rows of width `width` (each operand a buffer with its row stride; `g`'s may be 0, one row
/// for all): ḡ = δ̄ ⊙ (1 − a²) into `next` and ā = −2 δ̄ ⊙ g ⊙ a into `abar`.
pub fn dtanh_curvature(
    dy: (&[f32], usize),
    g: (&[f32], usize),
    a: (&[f32], usize),
    next: (&mut [f32], usize),
    abar: (&mut [f32], usize),
    rows: usize,
    width: usize,
) {
    let fits = |len: usize, stride: usize| rows == 0 || len >= (rows - 1) * stride + width;
    assert!(
        fits(dy.0.len(), dy.1)
            && fits(g.0.len(), g.1)
            && fits(a.0.len(), a.1)
            && fits(next.0.len(), next.1)
            && fits(abar.0.len(), abar.1),
        "dtanh_curvature: operands too short"
    );
    Arch::new().dispatch(DtanhCurvature {
        dy,
        g,
        a,
        next,
        abar,
        rows,
        width,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rational_tanh_is_accurate_to_a_few_ulp() {
        let xs: Vec<f32> = (-2000..=2000)
            .map(|i| i as f32 * 0.005)
            .chain([20.0, -20.0, 1e-6, 0.0])
            .collect();
        let mut out = vec![0.0; xs.len()];
        let zero = vec![0.0; xs.len()];
        tanh_rows(&xs, xs.len(), &zero, &mut out, xs.len(), 1, xs.len());
        for (x, y) in xs.iter().zip(&out) {
            let exact = (f64::from(*x)).tanh();
            assert!(
                (f64::from(*y) - exact).abs() <= 4e-7 * exact.abs().max(1e-30) + 1e-9,
                "tanh({x}) = {y}, exact {exact}"
            );
            assert!(
                (tanh_scalar(*x) - y).abs() <= 1e-7,
                "scalar and SIMD paths agree at {x}"
            );
        }
    }

    #[test]
    fn a_nan_stays_nan_in_the_vectors_and_in_the_tail() {
        let mut src = vec![0.5f32; 21];
        src[3] = f32::NAN;
        src[19] = f32::NAN;
        let mut dst = vec![0.0; 21];
        tanh_rows(&src, 21, &[0.0; 21], &mut dst, 21, 1, 21);
        for (c, v) in dst.iter().enumerate() {
            assert_eq!(v.is_nan(), c == 3 || c == 19, "column {c}: {v}");
        }
    }

    #[test]
    fn the_masked_tail_writes_its_row_and_nothing_past_it() {
        // 21 columns: a tail of 5 after 16 (AVX-512) or 2 × 8 (AVX2) lanes; stride 25.
        let (rows, width, stride) = (3, 21, 25);
        let src: Vec<f32> = (0..rows * stride)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let bias: Vec<f32> = (0..width).map(|i| i as f32 * 0.01).collect();
        let mut dst = vec![9.0; rows * stride];
        tanh_rows(&src, stride, &bias, &mut dst, stride, rows, width);
        for r in 0..rows {
            for c in 0..stride {
                let got = dst[r * stride + c];
                if c < width {
                    let want = tanh_scalar(src[r * stride + c] + bias[c]);
                    assert!(
                        (got - want).abs() <= 1e-7,
                        "row {r}, column {c}: {got} vs {want}"
                    );
                } else {
                    assert_eq!(got, 9.0, "row {r}, column {c} past the width is untouched");
                }
            }
        }
    }

    #[test]
    fn each_run_of_rows_takes_its_own_bias() {
        let (width, bounds) = (11, [0, 2, 3, 5]);
        let src: Vec<f32> = (0..5 * width).map(|i| (i as f32 * 0.21).sin()).collect();
        let bias: Vec<f32> = (0..3 * width).map(|i| i as f32 * 0.05 - 0.4).collect();
        let mut dst = vec![0.0; 5 * width];
        tanh_runs(&src, width, &bias, &bounds, &mut dst, width, width);
        for (k, w) in bounds.windows(2).enumerate() {
            for r in w[0]..w[1] {
                for c in 0..width {
                    let want = tanh_scalar(src[r * width + c] + bias[k * width + c]);
                    assert!(
                        (dst[r * width + c] - want).abs() <= 1e-7,
                        "run {k}, row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn dtanh_curvature_writes_both_outputs_with_a_shared_row() {
        // 21 columns (vector body and tail), g one row for all (stride 0).
        let (rows, width, stride) = (3, 21, 23);
        let dy: Vec<f32> = (0..rows * stride).map(|i| (i as f32 * 0.3).sin()).collect();
        let a: Vec<f32> = (0..rows * stride)
            .map(|i| (i as f32 * 0.7).cos() * 0.9)
            .collect();
        let g: Vec<f32> = (0..width).map(|i| i as f32 * 0.1 - 1.0).collect();
        let (mut next, mut abar) = (vec![7.0; rows * stride], vec![0.0; rows * width]);
        dtanh_curvature(
            (&dy, stride),
            (&g, 0),
            (&a, stride),
            (&mut next, stride),
            (&mut abar, width),
            rows,
            width,
        );
        for r in 0..rows {
            for c in 0..width {
                let (d, av) = (dy[r * stride + c], a[r * stride + c]);
                assert_eq!(next[r * stride + c], d * (1.0 - av * av));
                assert_eq!(abar[r * width + c], -2.0 * d * g[c] * av);
            }
            assert_eq!(next[r * stride + width], 7.0, "past the width: untouched");
        }
    }

    #[test]
    fn dtanh_multiplies_by_one_minus_square() {
        let a = [
            0.5f32, -0.25, 0.9, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, -0.5, 0.33,
            0.1,
        ];
        let g = vec![2.0f32; a.len()];
        let mut out = vec![0.0f32; a.len()];
        mul_dtanh(&g, a.len(), &a, a.len(), &mut out, a.len(), 1, a.len());
        for (gv, av) in out.iter().zip(&a) {
            assert!((gv - 2.0 * (1.0 - av * av)).abs() < 1e-6);
        }
    }
}
