//! A register-blocked f32 product for x86-64 with AVX2 and FMA, for the small matrices of
//! the training kernel: C (`m × n`, row-major) ← A·B (+ C), B row-major, A at any strides.
//!
//! C is cut into blocks of [`ROWS`] rows × 16 columns (two AVX registers), each computed in
//! twelve accumulators over the whole inner dimension: per step k, two loads of B's row k,
//! six broadcasts of A[i, k] and twelve FMAs. A is read where it lies; B too for a C of a
//! few rows, and for a taller one each 16-column panel of B is first copied to an aligned
//! buffer on the stack (its loads then never straddle a cache line). Nothing is allocated:
//! the `gemm` crate's per-call packing buffers and driver are most of what it spends beyond
//! its microkernels at these sizes (a 160 × 105 × 100 tile product, a 100 × 100 × 160 weight
//! gradient). The last column panel (n not a multiple of 16) is read and written through
//! lane masks, the last row block with fewer rows.
//!
//! Every element of C is one FMA chain over k = 0, 1, … in order, whatever its block:
//! a row of A gets bit-identical results in a tile of 16 rows and in one of 160.
#![expect(
    unsafe_code,
    reason = "AVX2 intrinsics take raw pointers; the caller checks every view's bounds"
)]

use std::mem::MaybeUninit;

use std::arch::x86_64::{
    __m256, __m256i, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_maskstore_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps,
};

/// The longest inner dimension [`matmul`] is used for: B's 16-column panel (`k` lines)
/// stays in the L1 cache; longer products go to `gemm`, which blocks k.
pub const MAX_INNER: usize = 512;

/// Rows of C from which a panel of B is copied to aligned storage before the product.
const PACK_ROWS: usize = 4 * ROWS;

/// Rows of C per register block.
const ROWS: usize = 6;
/// Floats per AVX register.
const LANES: usize = 8;

/// Whether this CPU runs [`matmul`] (checked once by the standard library, then cached).
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Raw operands of one product: element (i, j) of A at `a + i·a_rs + j·a_cs`, of B at
/// `b + i·b_rs + j`, of C at `c + i·c_rs + j`.
#[derive(Clone, Copy)]
pub struct Operands {
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub c: *mut f32,
    pub c_rs: usize,
}

/// C ← A·B, or C ← C + A·B with `accumulate`, for C `m × n` and inner dimension `k`.
///
/// # Safety
/// [`available`] is true; every element (i < m, j < n) of C, (i < m, l < k) of A and
/// (l < k, j < n) of B lies inside its allocation, and C overlaps neither A nor B.
pub unsafe fn matmul(m: usize, n: usize, k: usize, ops: Operands, accumulate: bool) {
    let mut j = 0;
    while j < n {
        let width = (n - j).min(2 * LANES);
        // SAFETY: forwarded from the caller; the panel's columns j .. j + width lie in C and B.
        unsafe {
            match width {
                16 => panel::<2, false>(m, k, ops, j, width, accumulate),
                9..=15 => panel::<2, true>(m, k, ops, j, width, accumulate),
                8 => panel::<1, false>(m, k, ops, j, width, accumulate),
                _ => panel::<1, true>(m, k, ops, j, width, accumulate),
            }
        }
        j += width;
    }
}

/// Columns `j .. j + width` of C (`V` registers wide, the last masked with `MASKED`), all
/// rows, in blocks of [`ROWS`].
#[target_feature(enable = "avx2,fma")]
unsafe fn panel<const V: usize, const MASKED: bool>(
    m: usize,
    k: usize,
    ops: Operands,
    j: usize,
    width: usize,
    accumulate: bool,
) {
    let mask = lane_mask(width - (V - 1) * LANES);
    // For a tall C, B's panel is first copied to aligned rows of exactly V registers (zeros
    // past `width`): its loads in the k loop then never straddle a cache line. For a few
    // rows the copy would cost more than it saves, and B is read in place.
    let mut packed = Panel([const { MaybeUninit::uninit() }; 2 * LANES * MAX_INNER]);
    let ops = if m >= PACK_ROWS {
        let step = V * LANES;
        for (l, dst) in packed.0.chunks_exact_mut(step).take(k).enumerate() {
            // SAFETY: row l < k of B, columns j .. j + width, lies in the caller's view.
            let src = unsafe { std::slice::from_raw_parts(ops.b.add(l * ops.b_rs + j), width) };
            let (head, tail) = dst.split_at_mut(width);
            head.iter_mut().zip(src).for_each(|(d, s)| {
                d.write(*s);
            });
            tail.iter_mut().for_each(|d| {
                d.write(0.0);
            });
        }
        // Rows 0 .. k are initialised above; the tiles read only those.
        Operands {
            b: packed.0.as_ptr().cast::<f32>(),
            b_rs: step,
            ..ops
        }
    } else {
        Operands {
            // SAFETY: column j < n of B's first row is inside the caller's view.
            b: unsafe { ops.b.add(j) },
            ..ops
        }
    };
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(ROWS);
        // SAFETY: rows i .. i + rows and columns j .. j + width are inside the caller's views.
        unsafe {
            let block = Operands {
                a: ops.a.add(i * ops.a_rs),
                c: ops.c.add(i * ops.c_rs + j),
                ..ops
            };
            match rows {
                6 => tile::<6, V, MASKED>(k, block, mask, accumulate),
                5 => tile::<5, V, MASKED>(k, block, mask, accumulate),
                4 => tile::<4, V, MASKED>(k, block, mask, accumulate),
                3 => tile::<3, V, MASKED>(k, block, mask, accumulate),
                2 => tile::<2, V, MASKED>(k, block, mask, accumulate),
                _ => tile::<1, V, MASKED>(k, block, mask, accumulate),
            }
        }
        i += rows;
    }
}

/// A panel of B: `k` rows of 16 floats, cache-line aligned.
#[repr(align(64))]
struct Panel([MaybeUninit<f32>; 2 * LANES * MAX_INNER]);

/// The first `lanes` (1 ..= 8) lanes on.
fn lane_mask(lanes: usize) -> [i32; LANES] {
    std::array::from_fn(|l| if l < lanes { -1 } else { 0 })
}

/// One `R × 8V` block of C in `R·V` accumulators; the last register's lanes past the panel
/// are masked off when `MASKED`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const V: usize, const MASKED: bool>(
    k: usize,
    ops: Operands,
    mask: [i32; LANES],
    accumulate: bool,
) {
    let mask: __m256i = _mm256_setr_epi32(
        mask[0], mask[1], mask[2], mask[3], mask[4], mask[5], mask[6], mask[7],
    );
    // SAFETY (whole body): the caller's bounds; masked lanes are neither read nor written.
    unsafe {
        let load = |p: *const f32, v: usize| -> __m256 {
            if MASKED && v == V - 1 {
                _mm256_maskload_ps(p.add(v * LANES), mask)
            } else {
                _mm256_loadu_ps(p.add(v * LANES))
            }
        };
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        if accumulate {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, x) in row.iter_mut().enumerate() {
                    *x = load(ops.c.add(r * ops.c_rs), v);
                }
            }
        }
        let (mut a, mut b) = (ops.a, ops.b);
        for _ in 0..k {
            let bv: [__m256; V] = std::array::from_fn(|v| load(b, v));
            for (r, row) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * ops.a_rs));
                for (v, y) in row.iter_mut().enumerate() {
                    *y = _mm256_fmadd_ps(x, bv[v], *y);
                }
            }
            // Wrapping: after the last step these point one stride past the operands.
            a = a.wrapping_add(ops.a_cs);
            b = b.wrapping_add(ops.b_rs);
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                let p = ops.c.add(r * ops.c_rs + v * LANES);
                if MASKED && v == V - 1 {
                    _mm256_maskstore_ps(p, mask, *x);
                } else {
                    _mm256_storeu_ps(p, *x);
                }
            }
        }
    }
}
