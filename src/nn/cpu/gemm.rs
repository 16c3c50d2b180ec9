//! The one place noether's CPU kernel calls unsafe code: a bounds-checked, safe front end to
//! its matrix products. Small products with a row-major right-hand side (every product of a
//! training step) run in the register-blocked AVX2 kernel of [`avx2`] where the CPU has AVX2
//! and FMA; the rest in the `gemm` crate (AVX-512/AVX2/NEON microkernels chosen at run
//! time), which allocates packing buffers on each call (its driver, packing and allocation
//! were 11 % of a training step's samples; BENCHMARKS.md has what replacing it gained).
#![expect(
    unsafe_code,
    reason = "gemm::gemm takes raw pointers; every access is bounds-checked below"
)]

#[cfg(target_arch = "x86_64")]
mod avx2;

/// A strided view of a row-major-ish f32 matrix: element (i, j) is at
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows × cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The first `cols` columns of a row-major buffer with `stride` floats per row.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: stride,
            col_stride: 1,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(
                last < self.data.len(),
                "{what}: {}×{} view with strides ({}, {}) overruns {} floats",
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride,
                self.data.len()
            );
        }
    }
}

/// C ← A·B (or C ← C + A·B with `accumulate`), C a row-major view with row stride
/// `c_stride` over `c`.
///
/// # Panics
/// On mismatched shapes or a view that overruns its slice (programming errors).
pub fn matmul(
    c: &mut [f32],
    c_rows: usize,
    c_cols: usize,
    c_stride: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
) {
    assert!(
        a.rows == c_rows && b.cols == c_cols && a.cols == b.rows,
        "matmul: [{}×{}]·[{}×{}] into [{c_rows}×{c_cols}]",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    a.check("matmul lhs");
    b.check("matmul rhs");
    if c_rows == 0 || c_cols == 0 {
        return;
    }
    let last = (c_rows - 1) * c_stride + c_cols - 1;
    assert!(
        c_stride >= c_cols && last < c.len(),
        "matmul: destination [{c_rows}×{c_cols}] stride {c_stride} overruns {} floats",
        c.len()
    );
    if a.cols == 0 {
        if !accumulate {
            for r in 0..c_rows {
                c[r * c_stride..r * c_stride + c_cols].fill(0.0);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if register_blocked(b, a.cols) {
        let ops = avx2::Operands {
            a: a.data.as_ptr(),
            a_rs: a.row_stride,
            a_cs: a.col_stride,
            b: b.data.as_ptr(),
            b_rs: b.row_stride,
            c: c.as_mut_ptr(),
            c_rs: c_stride,
        };
        // SAFETY: AVX2 and FMA are present; every element of A, B and C the product touches
        // lies inside its slice (checked above) and `c`, borrowed mutably, aliases neither.
        unsafe { avx2::matmul(c_rows, c_cols, a.cols, ops, accumulate) };
        return;
    }
    with_gemm(c, c_rows, c_cols, c_stride, a, b, accumulate);
}

/// [`matmul`] by the `gemm` crate, for operands [`matmul`] has checked.
fn with_gemm(
    c: &mut [f32],
    c_rows: usize,
    c_cols: usize,
    c_stride: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
) {
    // SAFETY: every index gemm touches, (i·rs + j·cs) for i < rows, j < cols, lies inside the
    // slices (checked above); `c` is borrowed mutably and so cannot alias `a` or `b`; all
    // strides are non-negative and fit in isize because they index existing slices.
    unsafe {
        gemm::gemm(
            c_rows,
            c_cols,
            a.cols,
            c.as_mut_ptr(),
            1,
            c_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Whether [`matmul`] multiplies by `b` over an inner dimension `k` in its own AVX2 kernel
/// (B row-major, k small, the CPU has AVX2 and FMA) rather than in `gemm`.
fn register_blocked(b: MatRef<'_>, k: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        b.col_stride == 1 && k <= avx2::MAX_INNER && avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Row lengths of [`Padded`] matrices are multiples of this many floats: an AVX-512
/// register (and two AVX2 registers).
pub const PAD: usize = 16;

/// A row-major weight matrix whose rows are padded with zeros to a multiple of [`PAD`]
/// floats, the right-hand side of [`matmul_padded`].
///
/// `gemm` computes a row-major C = A·B as Cᵀ = Bᵀ·Aᵀ and copies ("packs") Bᵀ into its
/// microkernel layout on **every call** unless B's row length is a multiple of the SIMD
/// width. For a layer's 100 × 105 matrix and a tile of 16 rows that copy costs about as
/// much as the product itself; with the rows padded to 112, B is read in place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Padded {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    stride: usize,
}

impl Padded {
    /// Pads a row-major `rows × cols` matrix.
    pub fn new(m: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            m.len(),
            rows * cols,
            "Padded: {rows}×{cols} from {} floats",
            m.len()
        );
        let stride = cols.next_multiple_of(PAD);
        let mut data = vec![0.0; rows * stride];
        if cols > 0 {
            for (dst, src) in data.chunks_exact_mut(stride).zip(m.chunks_exact(cols)) {
                dst[..cols].copy_from_slice(src);
            }
        }
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Element (r, c).
    pub fn get(&self, r: usize, c: usize) -> f32 {
        debug_assert!(r < self.rows && c < self.cols);
        self.data[r * self.stride + c]
    }

    /// Rows `first .. first + count` (all columns, without the padding).
    pub fn block(&self, first: usize, count: usize) -> MatRef<'_> {
        assert!(
            first + count <= self.rows,
            "Padded::block: rows {first}..{} of {}",
            first + count,
            self.rows
        );
        MatRef::strided(
            &self.data[first * self.stride..],
            count,
            self.cols,
            self.stride,
        )
    }

    /// The matrix without its padding, row by row.
    #[cfg(test)]
    pub fn unpadded(&self) -> Vec<f32> {
        (0..self.rows)
            .flat_map(|r| {
                self.data[r * self.stride..r * self.stride + self.cols]
                    .iter()
                    .copied()
            })
            .collect()
    }
}

/// C ← A·B' for a [`Padded`] B, B' its first `a.cols` rows (all of them, or the leading
/// block when A leaves out B's last inputs): C is `[a.rows, B's columns]` with row stride
/// `c_stride`. For a C of at most as many rows as B' (a tile of a few bodies) the product
/// goes to `scratch` at B's padded row length and is copied into C, so `gemm` never packs
/// B; a taller C is multiplied directly (one packing of B costs less than copying C).
///
/// # Panics
/// On mismatched shapes or a view that overruns its slice (programming errors).
pub fn matmul_padded(
    c: &mut [f32],
    c_stride: usize,
    a: MatRef<'_>,
    b: &Padded,
    scratch: &mut Vec<f32>,
) {
    let (rows, cols, stride, k) = (a.rows, b.cols, b.stride, a.cols);
    assert!(
        k <= b.rows,
        "matmul_padded: {k} inputs for a {}-row matrix",
        b.rows
    );
    let view = MatRef::strided(&b.data, k, cols, stride);
    if cols == stride || rows > k || register_blocked(view, k) {
        // Unpadded, C taller than B' (packing B' once costs less than copying C), or a
        // product that reads B where it lies.
        return matmul(c, rows, cols, c_stride, a, view, false);
    }
    let view = MatRef::rows(&b.data[..k * stride], k, stride);
    if scratch.len() < rows * stride {
        scratch.resize(rows * stride, 0.0);
    }
    let tmp = &mut scratch[..rows * stride];
    matmul(tmp, rows, stride, stride, a, view, false);
    assert!(
        rows == 0 || (c_stride >= cols && (rows - 1) * c_stride + cols <= c.len()),
        "matmul_padded: destination [{rows}×{cols}] stride {c_stride} overruns {} floats",
        c.len()
    );
    for (r, src) in tmp.chunks_exact(stride).enumerate() {
        c[r * c_stride..r * c_stride + cols].copy_from_slice(&src[..cols]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic matrix of `len` values in (−1, 1).
    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * seed).sin()).collect()
    }

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    out[i * b.cols + j] += a.data[i * a.row_stride + k * a.col_stride]
                        * b.data[k * b.row_stride + j * b.col_stride];
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_product_with_strides_and_transposes() {
        let a = values(7 * 5, 0.37);
        let b = values(5 * 9, 0.11);
        let (av, bv) = (MatRef::rows(&a, 7, 5), MatRef::rows(&b, 5, 9));
        let mut c = vec![0.0; 7 * 12];
        matmul(&mut c, 7, 9, 12, av, bv, false);
        let expected = naive(av, bv);
        for i in 0..7 {
            for j in 0..9 {
                assert!((c[i * 12 + j] - expected[i * 9 + j]).abs() < 1e-5);
            }
        }
        // Accumulate, with a transposed left operand: (Aᵀ)ᵀ·B again.
        let at: Vec<f32> = (0..5)
            .flat_map(|k| (0..7).map(move |i| (k, i)))
            .map(|(k, i)| a[i * 5 + k])
            .collect();
        matmul(&mut c, 7, 9, 12, MatRef::rows(&at, 5, 7).t(), bv, true);
        for i in 0..7 {
            for j in 0..9 {
                assert!((c[i * 12 + j] - 2.0 * expected[i * 9 + j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn padded_products_match_the_plain_product() {
        // Padded and unpadded widths; C shorter (scratch and copy) and taller (direct) than B.
        for (rows, cols) in [(6, 5), (6, 16), (6, 21), (9, 21)] {
            let a = values(rows * 7, 0.37);
            let b = values(7 * cols, 0.11);
            let padded = Padded::new(&b, 7, cols);
            assert_eq!(padded.unpadded(), b);
            assert_eq!(padded.get(3, cols - 1), b[3 * cols + cols - 1]);
            let av = MatRef::rows(&a, rows, 7);
            let expected = naive(av, MatRef::rows(&b, 7, cols));
            // A leading block of B: A's first 4 columns against B's first 4 rows.
            let (mut scratch, lead) = (Vec::new(), MatRef::strided(&a, rows, 4, 7));
            let mut c = vec![0.0; rows * cols];
            matmul_padded(&mut c, cols, lead, &padded, &mut scratch);
            let expected_lead = naive(lead, MatRef::rows(&b, 4, cols));
            for (got, want) in c.iter().zip(&expected_lead) {
                assert!((got - want).abs() < 1e-5);
            }
            let block = padded.block(4, 3);
            assert_eq!((block.rows, block.cols), (3, cols));
            assert_eq!(block.data[block.row_stride + 2], b[5 * cols + 2]);
            let (mut scratch, stride) = (Vec::new(), cols + 2);
            let mut c = vec![1.0; rows * stride];
            matmul_padded(&mut c, stride, av, &padded, &mut scratch);
            for i in 0..rows {
                for j in 0..cols {
                    assert!((c[i * stride + j] - expected[i * cols + j]).abs() < 1e-5);
                }
                assert_eq!(c[i * stride + cols], 1.0, "columns past C's width are kept");
            }
        }
    }

    #[test]
    fn products_match_naive_and_gemm_over_edge_shapes() {
        // Row counts around the 6-row block (30: B's panels copied first), column counts
        // around the 8- and 16-lane panels, inner sizes from a rank to past a layer; A plain
        // and transposed; C overwritten and accumulated, with guard columns past its width.
        for m in [1, 5, 6, 7, 13, 30] {
            for n in [1, 4, 8, 9, 16, 17, 33] {
                for k in [1, 5, 100] {
                    for (transposed, accumulate) in [(false, false), (true, true)] {
                        let a = values(m * k, 0.37);
                        let b = values(k * n, 0.11);
                        let av = if transposed {
                            MatRef::rows(&a, k, m).t()
                        } else {
                            MatRef::rows(&a, m, k)
                        };
                        let bv = MatRef::rows(&b, k, n);
                        let stride = n + 3;
                        let start = values(m * stride, 0.53);
                        let mut c = start.clone();
                        matmul(&mut c, m, n, stride, av, bv, accumulate);
                        let mut reference = start.clone();
                        with_gemm(&mut reference, m, n, stride, av, bv, accumulate);
                        let expected = naive(av, bv);
                        for i in 0..m {
                            for j in 0..stride {
                                let (got, at) = (c[i * stride + j], i * stride + j);
                                if j >= n {
                                    assert_eq!(got, start[at], "guard column {j} of row {i}");
                                    continue;
                                }
                                let want =
                                    expected[i * n + j] + if accumulate { start[at] } else { 0.0 };
                                let tol = 1e-5 * (k as f32).sqrt();
                                assert!(
                                    (got - want).abs() < tol && (got - reference[at]).abs() < tol,
                                    "{m}×{n}×{k} (transposed {transposed}): C[{i}, {j}] = {got}, \
                                     naive {want}, gemm {}",
                                    reference[at]
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_in_any_block() {
        // A body evaluated alone (a tile of one) and inside a tile of 30 (B's panels copied
        // first) gets the same field to the bit: what the recorded-versus-evaluated checks
        // rely on.
        let (m, n, k) = (30, 21, 100);
        let (a, b) = (values(m * k, 0.37), values(k * n, 0.11));
        let bv = MatRef::rows(&b, k, n);
        let mut all = vec![0.0; m * n];
        matmul(&mut all, m, n, n, MatRef::rows(&a, m, k), bv, false);
        for i in 0..m {
            let mut one = vec![0.0; n];
            matmul(
                &mut one,
                1,
                n,
                n,
                MatRef::rows(&a[i * k..], 1, k),
                bv,
                false,
            );
            assert_eq!(one, all[i * n..(i + 1) * n], "row {i}");
        }
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn overrunning_views_panic_instead_of_reading_out_of_bounds() {
        let a = vec![0.0; 10];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        matmul(
            &mut c,
            2,
            2,
            2,
            MatRef::rows(&a, 2, 6),
            MatRef::rows(&b, 6, 2),
            false,
        );
    }
}
