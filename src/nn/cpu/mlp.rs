//! The modulated MLP and its explicit input gradient on row tiles, in f32.
//!
//! A layer's forward map and its transpose each take one main GEMM plus, for the low-rank
//! methods, one rank-r correction GEMM (the same z-maps as [`crate::nn::ModulatedLinear`],
//! with the latent contraction done per row so the weights stay shared):
//!
//! | method | forward: main GEMM → correction | transpose: main GEMM → correction |
//! |---|---|---|
//! | None | h·W | δ·Wᵀ |
//! | Shift | [h ‖ z]·[W; A_s] | δ·Wᵀ |
//! | FW | [h ‖ z ‖ (hᵢzₖ)]·[W; A_s; ΔW] | [δ ‖ (δₒzₖ)]·[Wᵀ; ΔWᵀ] |
//! | MR(r) | [h ‖ z]·[W ‖ V_*; A_s ‖ 0] → += (c ⊗ z̃)·U_*, cⱼ = Σₖ z̃ₖ (hVₖ)ⱼ | δ·[Wᵀ ‖ U_*] → += (e ⊗ z̃)·V_*ᵀ, eⱼ = Σₖ z̃ₖ (δUₖ)ⱼ |
//! | SVD(r) | [h ‖ z]·[W ‖ V_s; A_s ‖ 0] → += ((hV_s) ⊙ d)·U_sᵀ | δ·[Wᵀ ‖ U_s] → += ((δU_s) ⊙ d)·V_sᵀ |
//!
//! The rank-r pre-products (hV, δU) ride along as extra *output* columns of the main GEMM,
//! so a heterogeneous batch costs one shared GEMM per layer and direction plus a rank-r
//! update; no per-row weight matrix exists. [`CpuMlp::fold`] builds the homogeneous
//! alternative: W̃(z), b̃(z) folded once for a batch that shares one latent.
//!
//! The training path (the tape of [`super::backprop`]) goes one step further where rows come
//! in runs sharing a latent (a task's points): Shift, MR and SVD layers leave z out of the
//! GEMM and add b + s(z) once per run as the tanh's bias ([`ShiftInput::ByRun`]), and the
//! SVD coefficients d(z) are computed once per run.

use burn::tensor::{Tensor, backend::Backend};

use super::params::{LayerParams, MlpParams};
use super::{
    gemm::{MatRef, Padded, matmul, matmul_padded},
    simd::{mul_dtanh, tanh_rows},
};
use crate::nn::{Mlp, Modulation};

/// Host copy of a tensor as f32.
pub(super) fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// A layer's method with its rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    None,
    Shift,
    Fw,
    Mr(usize),
    Svd(usize),
}

/// How a forward map takes the shift s(z) = zA_s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShiftInput {
    /// As z columns of the GEMM's input (evaluation: every row its own latent).
    Columns,
    /// Not at all: the map's linear part (the adjoint's δ̄ = ḡW̃).
    Without,
    /// Added by the caller once per run of rows sharing a latent ([`CpuLayer::run_biases`];
    /// the training path). Layers whose extra columns cannot leave z out
    /// ([`CpuLayer::shift_by_run`] false: FW, whose z·h columns follow z) take it as
    /// [`ShiftInput::Columns`].
    ByRun,
}

/// One layer in CPU layout (see the module docs for the maps).
#[derive(Clone, Debug)]
pub(super) struct CpuLayer {
    pub(super) d_in: usize,
    pub(super) d_out: usize,
    pub(super) d_latent: usize,
    method: Method,
    /// `[d_in + extra_in, d_out + pre]`: [W ‖ P; A_s ‖ 0; ΔW ‖ 0].
    fwd: Padded,
    /// `[corr, d_out]`: the rank-r update's right factor (U_sᵀ, or U_* for MR).
    fwd_corr: Vec<f32>,
    /// `[d_out + extra_out, d_in + pre]`: [Wᵀ ‖ Q; ΔWᵀ ‖ 0].
    bwd: Padded,
    /// `[corr, d_in]`: V_sᵀ, or V_*ᵀ for MR.
    bwd_corr: Vec<f32>,
    pub(super) bias: Vec<f32>,
    /// SVD coefficient map A_d `[K, r]`.
    svd_d: Vec<f32>,
}

/// Transpose of a row-major `[rows, cols]` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; rows * cols];
    for (r, row) in m.chunks_exact(cols).enumerate().take(rows) {
        for (c, v) in row.iter().enumerate() {
            t[c * rows + r] = *v;
        }
    }
    t
}

/// Horizontal concatenation of row-major `[rows, ca]` and `[rows, cb]`.
fn hcat(a: &[f32], ca: usize, b: &[f32], cb: usize, rows: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * (ca + cb));
    for r in 0..rows {
        out.extend_from_slice(&a[r * ca..(r + 1) * ca]);
        out.extend_from_slice(&b[r * cb..(r + 1) * cb]);
    }
    out
}

impl CpuLayer {
    pub(super) fn k(&self) -> usize {
        self.d_latent + 1
    }

    /// Extra input columns of the forward GEMM (after h).
    pub(super) fn extra_in(&self) -> usize {
        let (i, dz) = (self.d_in, self.d_latent);
        match self.method {
            Method::None => 0,
            Method::Shift | Method::Mr(_) | Method::Svd(_) => dz,
            Method::Fw => dz + i * dz,
        }
    }

    /// Whether the training path adds this layer's shift once per run of rows sharing a
    /// latent instead of through z columns ([`ShiftInput::ByRun`]): every modulated method
    /// but FW, whose z·h columns sit after z's.
    pub(super) fn shift_by_run(&self) -> bool {
        matches!(self.method, Method::Shift | Method::Mr(_) | Method::Svd(_))
    }

    /// Extra input columns of the forward GEMM on the training path (none when the shift
    /// is added per run).
    pub(super) fn tape_extra_in(&self) -> usize {
        if self.shift_by_run() {
            0
        } else {
            self.extra_in()
        }
    }

    /// The biases of `runs` runs of rows with latents z `[runs, d_z]` into `out`
    /// `[runs, d_out]`: b + s(z) = b + zA_s where the shift is added per run
    /// ([`CpuLayer::shift_by_run`]), else b (the shift, if any, comes from z columns; an
    /// empty z asks for b alone).
    pub(super) fn run_biases(&self, z: &[f32], runs: usize, out: &mut Vec<f32>) {
        let o = self.d_out;
        let out = grow(out, runs * o);
        if !self.shift_by_run() || runs == 0 || z.is_empty() {
            for row in out.chunks_exact_mut(o.max(1)) {
                row.copy_from_slice(&self.bias);
            }
            return;
        }
        let dz = self.d_latent;
        matmul(
            out,
            runs,
            o,
            o,
            MatRef::rows(z, runs, dz),
            // A_s: the rows after W, without the pre-product columns.
            MatRef {
                cols: o,
                ..self.fwd.block(self.d_in, dz)
            },
            false,
        );
        for row in out.chunks_exact_mut(o) {
            row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
        }
    }

    /// Extra input columns of the transposed GEMM (after δ).
    pub(super) fn extra_out(&self) -> usize {
        match self.method {
            Method::Fw => self.d_out * self.d_latent,
            _ => 0,
        }
    }

    /// Pre-product columns appended to both GEMMs' outputs.
    pub(super) fn pre(&self) -> usize {
        match self.method {
            Method::Mr(r) => r * self.k(),
            Method::Svd(r) => r,
            _ => 0,
        }
    }

    pub(super) fn from_params(p: &LayerParams) -> Self {
        let cfg = p.config;
        let (i, o, dz) = (cfg.d_input, cfg.d_output, cfg.d_latent);
        let k = dz + 1;
        let r = cfg.effective_rank();
        let method = match cfg.modulation {
            Modulation::None => Method::None,
            Modulation::Shift => Method::Shift,
            Modulation::Fw => Method::Fw,
            Modulation::Mr { .. } => Method::Mr(r),
            Modulation::Svd { .. } => Method::Svd(r),
        };
        let w = p.weight.clone();
        let wt = transpose(&w, i, o);
        let (shift, fw, mr_v, mr_u, svd_v, svd_u) = (
            p.shift.clone(),
            p.fw.clone(),
            p.mr_v.clone(),
            p.mr_u.clone(),
            p.svd_v.clone(),
            p.svd_u.clone(),
        );
        let zeros = |rows: usize, cols: usize| vec![0.0; rows * cols];
        let (mut fwd_corr, mut bwd_corr) = (Vec::new(), Vec::new());
        let (fwd, bwd) = match method {
            Method::None => (w, wt),
            Method::Shift => ([w, shift].concat(), wt),
            Method::Fw => {
                // Forward rows (ii, kk) of ΔW_k are fw[ii, kk·o .. (kk+1)·o], i.e. fw as stored.
                let fwd = [w, shift, fw.clone()].concat();
                // Transposed rows (oo, kk): ΔW_k[·, oo] = fw[·, kk·o + oo].
                let mut bwd = wt;
                for oo in 0..o {
                    for kk in 0..dz {
                        bwd.extend((0..i).map(|ii| fw[ii * dz * o + kk * o + oo]));
                    }
                }
                (fwd, bwd)
            }
            Method::Mr(r) => {
                // Pre-products: h·[V₀ | … ] = h·mr_v `[in, K·r]`, δ·[U₀ | … ] `[out, K·r]`.
                let u_blocks: Vec<f32> = (0..o)
                    .flat_map(|oo| (0..k).flat_map(move |kk| (0..r).map(move |j| (oo, kk, j))))
                    .map(|(oo, kk, j)| mr_u[j * k * o + kk * o + oo])
                    .collect();
                // Correction rows (j, kk): U_k[·, j] = mr_u[j, kk·o ..] and V_k[·, j] = mr_v[·, kk·r + j].
                for j in 0..r {
                    for kk in 0..k {
                        fwd_corr
                            .extend_from_slice(&mr_u[j * k * o + kk * o..j * k * o + (kk + 1) * o]);
                        bwd_corr.extend((0..i).map(|ii| mr_v[ii * k * r + kk * r + j]));
                    }
                }
                (
                    [
                        hcat(&w, o, &mr_v, k * r, i),
                        hcat(&shift, o, &zeros(dz, k * r), k * r, dz),
                    ]
                    .concat(),
                    hcat(&wt, i, &u_blocks, k * r, o),
                )
            }
            Method::Svd(r) => {
                fwd_corr = transpose(&svd_u, o, r);
                bwd_corr = transpose(&svd_v, i, r);
                (
                    [
                        hcat(&w, o, &svd_v, r, i),
                        hcat(&shift, o, &zeros(dz, r), r, dz),
                    ]
                    .concat(),
                    hcat(&wt, i, &svd_u, r, o),
                )
            }
        };
        let mut layer = Self {
            d_in: i,
            d_out: o,
            d_latent: dz,
            method,
            fwd: Padded::default(),
            fwd_corr,
            bwd: Padded::default(),
            bwd_corr,
            bias: p.bias.clone(),
            svd_d: p.svd_d.clone(),
        };
        let cols = o + layer.pre();
        layer.fwd = Padded::new(&fwd, fwd.len() / cols, cols);
        layer.bwd = Padded::new(&bwd, bwd.len() / (i + layer.pre()), i + layer.pre());
        debug_assert_eq!(layer.fwd.rows(), i + layer.extra_in());
        debug_assert_eq!(layer.bwd.rows(), o + layer.extra_out());
        debug_assert_eq!(layer.fwd_corr.len(), layer.pre() * o);
        layer
    }

    /// W̃(z) `[in, out]` and b̃(z) for one latent, as an unmodulated layer.
    fn fold(&self, z: &[f32]) -> CpuLayer {
        let (i, o, dz) = (self.d_in, self.d_out, self.d_latent);
        let fwd = |row: usize, col: usize| self.fwd.get(row, col);
        let mut w: Vec<f32> = (0..i * o).map(|idx| fwd(idx / o, idx % o)).collect();
        let mut b = self.bias.clone();
        if self.method != Method::None {
            for (kk, zk) in z.iter().enumerate() {
                b.iter_mut()
                    .enumerate()
                    .for_each(|(oo, bv)| *bv += zk * fwd(i + kk, oo));
            }
        }
        let zt: Vec<f32> = z.iter().copied().chain([1.0]).collect();
        match self.method {
            Method::None | Method::Shift => {}
            Method::Fw => {
                for ii in 0..i {
                    for (kk, zk) in z.iter().enumerate() {
                        let row = i + dz + ii * dz + kk;
                        w[ii * o..(ii + 1) * o]
                            .iter_mut()
                            .enumerate()
                            .for_each(|(oo, wv)| *wv += zk * fwd(row, oo));
                    }
                }
            }
            Method::Mr(r) => {
                let k = dz + 1;
                // W += V(z) U(z)ᵀ with V(z)[ii, j] = Σₖ z̃ₖ Vₖ[ii, j] and U(z)ᵀ row j = Σₖ z̃ₖ Uₖ[·, j].
                for j in 0..r {
                    let ut: Vec<f32> = (0..o)
                        .map(|oo| {
                            (0..k)
                                .map(|kk| zt[kk] * self.fwd_corr[(j * k + kk) * o + oo])
                                .sum()
                        })
                        .collect();
                    for ii in 0..i {
                        let vij: f32 = (0..k).map(|kk| zt[kk] * fwd(ii, o + kk * r + j)).sum();
                        w[ii * o..(ii + 1) * o]
                            .iter_mut()
                            .zip(&ut)
                            .for_each(|(wv, uv)| *wv += vij * uv);
                    }
                }
            }
            Method::Svd(r) => {
                let mut d = Vec::new();
                self.svd_coefficients(&zt, 1, &mut d);
                for (j, dj) in d.iter().enumerate().take(r) {
                    let uj = &self.fwd_corr[j * o..(j + 1) * o];
                    for ii in 0..i {
                        let s = fwd(ii, o + j) * dj;
                        w[ii * o..(ii + 1) * o]
                            .iter_mut()
                            .zip(uj)
                            .for_each(|(wv, uv)| *wv += s * uv);
                    }
                }
            }
        }
        let bwd = transpose(&w, i, o);
        CpuLayer {
            d_in: i,
            d_out: o,
            d_latent: dz,
            method: Method::None,
            fwd: Padded::new(&w, i, o),
            fwd_corr: vec![],
            bwd: Padded::new(&bwd, o, i),
            bwd_corr: vec![],
            bias: b,
            svd_d: vec![],
        }
    }

    /// d = ReLU(z̃ A_d) for `rows` rows of z̃ `[rows, K]` → `[rows, r]` into `d` (SVD only).
    pub(super) fn svd_coefficients(&self, zt: &[f32], rows: usize, d: &mut Vec<f32>) {
        let Method::Svd(r) = self.method else { return };
        let d = grow(d, rows * r);
        matmul(
            d,
            rows,
            r,
            r,
            MatRef::rows(zt, rows, self.k()),
            MatRef::rows(&self.svd_d, self.k(), r),
            false,
        );
        d.iter_mut().for_each(|v| *v = v.max(0.0));
    }

    /// Computes the layer's forward map of `rows` rows of `src` (`[h ‖ extra]`, stride
    /// `src_stride`; the extra columns are written here) into `out` `[rows, d_out + pre]`:
    /// `out[·, ..d_out] = h W̃(z) (+ s(z) as `shift` says)`, `out[·, d_out..]` the
    /// pre-products (h V_s or h·[V₀ | … ]). The bias is not added. Without z columns
    /// ([`ShiftInput::ByRun`] on a [`CpuLayer::shift_by_run`] layer, or
    /// [`ShiftInput::Without`] on one) `src` has none and the GEMM skips A_s's rows.
    #[expect(
        clippy::too_many_arguments,
        reason = "a tile kernel: buffers and their strides"
    )]
    pub(super) fn forward_map(
        &self,
        src: &mut [f32],
        src_stride: usize,
        rows: usize,
        z: &[f32],
        zt: &[f32],
        d: &[f32],
        shift: ShiftInput,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let k_aug = if shift != ShiftInput::Columns && self.shift_by_run() {
            self.d_in
        } else {
            fill_forward_extra(self, src, src_stride, rows, z, shift != ShiftInput::Without);
            self.d_in + self.extra_in()
        };
        let (o, cols) = (self.d_out, self.d_out + self.pre());
        matmul_padded(
            out,
            cols,
            MatRef::strided(src, rows, k_aug, src_stride),
            &self.fwd,
            scratch,
        );
        self.add_correction(out, cols, o, rows, zt, d, &self.fwd_corr, scratch);
    }

    /// Computes the transposed map of `rows` rows of `delta` (`[δ ‖ extra]`, stride
    /// `delta_stride`; the extra columns are written here) into `out` `[rows, d_in + pre]`:
    /// `out[·, ..d_in] = δ W̃(z)ᵀ`, `out[·, d_in..]` the pre-products (δ U_s or δ·[U₀ | … ]).
    #[expect(
        clippy::too_many_arguments,
        reason = "a tile kernel: buffers and their strides"
    )]
    pub(super) fn transpose_map(
        &self,
        delta: &mut [f32],
        delta_stride: usize,
        rows: usize,
        z: &[f32],
        zt: &[f32],
        d: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        fill_backward_extra(self, delta, delta_stride, rows, z);
        let (i, cols) = (self.d_in, self.d_in + self.pre());
        let k_aug = self.d_out + self.extra_out();
        matmul_padded(
            out,
            cols,
            MatRef::strided(delta, rows, k_aug, delta_stride),
            &self.bwd,
            scratch,
        );
        self.add_correction(out, cols, i, rows, zt, d, &self.bwd_corr, scratch);
    }

    /// The rank-r update y[·, ..width] += c·factor from the pre-product columns
    /// p = y[·, width..]: SVD cⱼ = pⱼ dⱼ (a GEMM of inner size r; it measured a little
    /// faster than r AXPY passes over each row, BENCHMARKS.md); MR (cⱼ z̃ₖ)ⱼₖ with
    /// cⱼ = Σₖ z̃ₖ p_{k·r+j} (a GEMM of inner size K·r). Nothing for other methods.
    #[expect(
        clippy::too_many_arguments,
        reason = "a tile kernel: buffers and their strides"
    )]
    fn add_correction(
        &self,
        y: &mut [f32],
        y_stride: usize,
        width: usize,
        rows: usize,
        zt: &[f32],
        d: &[f32],
        factor: &[f32],
        scratch: &mut Vec<f32>,
    ) {
        // The coefficients c `[rows, inner]` of the update y += c·factor, per method.
        let inner = match self.method {
            Method::Svd(r) => {
                let c = grow(scratch, rows * r);
                for row in 0..rows {
                    let pre = &y[row * y_stride + width..row * y_stride + width + r];
                    for ((cv, p), dj) in c[row * r..(row + 1) * r]
                        .iter_mut()
                        .zip(pre)
                        .zip(&d[row * r..(row + 1) * r])
                    {
                        *cv = p * dj;
                    }
                }
                r
            }
            Method::Mr(r) => {
                let k = self.k();
                let c_rows = grow(scratch, rows * r * k);
                for row in 0..rows {
                    let (ztr, pre) = (
                        &zt[row * k..(row + 1) * k],
                        &y[row * y_stride + width..row * y_stride + width + k * r],
                    );
                    for j in 0..r {
                        let c: f32 = (0..k).map(|kk| ztr[kk] * pre[kk * r + j]).sum();
                        for kk in 0..k {
                            c_rows[row * r * k + j * k + kk] = c * ztr[kk];
                        }
                    }
                }
                r * k
            }
            _ => return,
        };
        matmul(
            y,
            rows,
            width,
            y_stride,
            MatRef::rows(&scratch[..rows * inner], rows, inner),
            MatRef::rows(factor, inner, width),
            true,
        );
    }
}

/// z̃ = (z, 1) rows `[rows, d_z + 1]` into `zt` (empty when the latents are folded away).
pub(super) fn affine_latents(z: &[f32], rows: usize, dz: usize, zt: &mut Vec<f32>) {
    zt.clear();
    if z.is_empty() {
        return;
    }
    for row in z.chunks_exact(dz).take(rows) {
        zt.extend_from_slice(row);
        zt.push(1.0);
    }
}

/// A scalar MLP in CPU layout.
#[derive(Clone, Debug)]
pub struct CpuMlp {
    pub(super) layers: Vec<CpuLayer>,
    pub(super) readout: Vec<f32>,
    pub(super) readout_bias: f32,
    pub(super) d_input: usize,
    pub(super) d_latent: usize,
}

/// What a tile evaluation should produce.
pub(super) struct TileOut<'a> {
    /// f per row, `[rows]`.
    pub value: Option<&'a mut [f32]>,
    /// ∇ₓf per row, `[rows, d_input]`.
    pub grad: Option<&'a mut [f32]>,
}

impl CpuMlp {
    /// Copies a burn MLP into CPU layout.
    pub fn from_burn<B: Backend>(mlp: &Mlp<B>) -> Self {
        Self::from_params(&MlpParams::from_burn(mlp))
    }

    /// Lays out host parameters for the kernel.
    pub fn from_params(p: &MlpParams) -> Self {
        let layers: Vec<CpuLayer> = p.layers.iter().map(CpuLayer::from_params).collect();
        let d_input = layers[0].d_in;
        let d_latent = layers[0].d_latent;
        Self {
            layers,
            readout: p.readout.clone(),
            readout_bias: p.readout_bias,
            d_input,
            d_latent,
        }
    }

    /// Input width.
    pub fn d_input(&self) -> usize {
        self.d_input
    }

    /// Latent width.
    pub fn d_latent(&self) -> usize {
        self.d_latent
    }

    /// The same network with latent `z` folded into unmodulated weights.
    pub fn fold(&self, z: &[f32]) -> CpuMlp {
        assert_eq!(
            z.len(),
            self.d_latent,
            "CpuMlp::fold: latent of {} values, expected {}",
            z.len(),
            self.d_latent
        );
        Self {
            layers: self.layers.iter().map(|l| l.fold(z)).collect(),
            ..self.clone()
        }
    }

    /// Evaluates `rows` rows of x `[rows, n]` with latents z `[rows, d_z]` (ignored by
    /// unmodulated layers). Scratch buffers are per thread and reused across tiles.
    pub(super) fn eval_tile(&self, x: &[f32], z: &[f32], rows: usize, out: TileOut<'_>) {
        SCRATCH.with_borrow_mut(|scratch| self.eval_tile_with(x, z, rows, out, scratch));
    }

    fn eval_tile_with(&self, x: &[f32], z: &[f32], rows: usize, out: TileOut<'_>, s: &mut Scratch) {
        let n = self.d_input;
        let dz = self.d_latent;
        let layers = self.layers.len();
        s.prepare(layers);
        affine_latents(z, rows, dz, &mut s.zt);
        // Forward: acts[ℓ] holds [a_ℓ ‖ extra inputs of layer ℓ+1] with stride strides[ℓ].
        s.strides.clear();
        s.strides.push(n + self.layers[0].extra_in());
        for (l, layer) in self.layers.iter().enumerate() {
            s.strides
                .push(layer.d_out + self.layers.get(l + 1).map_or(0, CpuLayer::extra_in));
        }
        let first_stride = s.strides[0];
        let a0 = grow(&mut s.acts[0], rows * first_stride);
        for r in 0..rows {
            a0[r * first_stride..r * first_stride + n].copy_from_slice(&x[r * n..(r + 1) * n]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            layer.svd_coefficients(&s.zt, rows, &mut s.svd_d[l]);
            let (below, above) = s.acts.split_at_mut(l + 1);
            let (h, stride) = (&mut below[l], s.strides[l]);
            let (o, cols) = (layer.d_out, layer.d_out + layer.pre());
            // y = h W̃(z) + s(z); the bias joins in the tanh pass.
            let y = grow(&mut s.y, rows * cols);
            layer.forward_map(
                h,
                stride,
                rows,
                z,
                &s.zt,
                &s.svd_d[l],
                ShiftInput::Columns,
                y,
                &mut s.pre,
            );
            let next_stride = s.strides[l + 1];
            let a = grow(&mut above[0], rows * next_stride);
            tanh_rows(y, cols, &layer.bias, a, next_stride, rows, o);
        }
        let (last, last_stride) = (&s.acts[layers], s.strides[layers]);
        let width = self.readout.len();
        if let Some(value) = out.value {
            for r in 0..rows {
                let row = &last[r * last_stride..r * last_stride + width];
                value[r] = row
                    .iter()
                    .zip(&self.readout)
                    .map(|(a, w)| a * w)
                    .sum::<f32>()
                    + self.readout_bias;
            }
        }
        let Some(grad) = out.grad else { return };
        // Backward: g_L = w; δ_ℓ = g_ℓ ⊙ (1 − a_ℓ²); g_{ℓ−1} = [δ_ℓ ‖ extra]·bwd (+ correction).
        let readout = grow(&mut s.g, rows * width);
        for row in readout.chunks_exact_mut(width) {
            row.copy_from_slice(&self.readout);
        }
        let (mut g_src, mut g_stride) = (std::mem::take(&mut s.g), width);
        let mut delta = std::mem::take(&mut s.delta);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (o, i) = (layer.d_out, layer.d_in);
            let d_stride = o + layer.extra_out();
            let dl = grow(&mut delta, rows * d_stride);
            mul_dtanh(
                &g_src,
                g_stride,
                &s.acts[l + 1],
                s.strides[l + 1],
                dl,
                d_stride,
                rows,
                o,
            );
            let cols = i + layer.pre();
            let gy = grow(&mut s.y, rows * cols);
            layer.transpose_map(dl, d_stride, rows, z, &s.zt, &s.svd_d[l], gy, &mut s.pre);
            if l == 0 {
                for r in 0..rows {
                    grad[r * n..(r + 1) * n].copy_from_slice(&gy[r * cols..r * cols + n]);
                }
            } else {
                // g_{ℓ−1} lives in y's first i columns: hand y over, reuse the old g as y.
                std::mem::swap(&mut g_src, &mut s.y);
                g_stride = cols;
            }
        }
        s.g = g_src;
        s.delta = delta;
    }
}

/// Per-thread buffers of [`CpuMlp::eval_tile`], grown on demand and never shrunk.
#[derive(Default)]
struct Scratch {
    acts: Vec<Vec<f32>>,
    strides: Vec<usize>,
    svd_d: Vec<Vec<f32>>,
    zt: Vec<f32>,
    /// A GEMM output: pre-activations with pre-products, or a back-propagated gradient.
    y: Vec<f32>,
    g: Vec<f32>,
    delta: Vec<f32>,
    /// The layer maps' own scratch: padded products ([`matmul_padded`]), MR corrections.
    pre: Vec<f32>,
}

impl Scratch {
    fn prepare(&mut self, layers: usize) {
        if self.acts.len() < layers + 1 {
            self.acts.resize_with(layers + 1, Vec::new);
        }
        if self.svd_d.len() < layers {
            self.svd_d.resize_with(layers, Vec::new);
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The first `len` floats of `buf`, growing it if needed (contents unspecified: every
/// caller writes before it reads).
pub(super) fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Writes the forward extra input columns of `layer` after the first `d_in` columns of
/// each row: z (zeros unless `affine`: the shift is the affine part of the map), and for FW
/// the products hᵢ zₖ.
fn fill_forward_extra(
    layer: &CpuLayer,
    buf: &mut [f32],
    stride: usize,
    rows: usize,
    z: &[f32],
    affine: bool,
) {
    let (i, dz) = (layer.d_in, layer.d_latent);
    if layer.method == Method::None {
        return;
    }
    for r in 0..rows {
        let row = &mut buf[r * stride..(r + 1) * stride];
        let zr = &z[r * dz..(r + 1) * dz];
        if affine {
            row[i..i + dz].copy_from_slice(zr);
        } else {
            row[i..i + dz].fill(0.0);
        }
        if layer.method == Method::Fw {
            let (head, tail) = row.split_at_mut(i + dz);
            for (ii, h) in head[..i].iter().enumerate() {
                for (kk, zk) in zr.iter().enumerate() {
                    tail[ii * dz + kk] = h * zk;
                }
            }
        }
    }
}

/// Writes the transposed extra input columns of `layer` (FW: δₒ zₖ) after the first
/// `d_out` columns of each row.
fn fill_backward_extra(layer: &CpuLayer, g: &mut [f32], stride: usize, rows: usize, z: &[f32]) {
    let (o, dz) = (layer.d_out, layer.d_latent);
    if layer.method != Method::Fw {
        return;
    }
    for r in 0..rows {
        let (head, tail) = g[r * stride..(r + 1) * stride].split_at_mut(o);
        let zr = &z[r * dz..(r + 1) * dz];
        for (oo, delta) in head.iter().enumerate() {
            for (kk, zk) in zr.iter().enumerate() {
                tail[oo * dz + kk] = delta * zk;
            }
        }
    }
}
