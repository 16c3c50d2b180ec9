#![allow(
    missing_docs,
    reason = "the #[cube] macro generates undocumented launch modules and structs"
)]

//! The fused step kernel, in CubeCL: one launch advances every row of a batch by a whole
//! tick (all substeps, every stage or fixed-point iteration) and writes each row's energy
//! and flags.
//!
//! **Work split.** A cube (workgroup) owns a tile of `tile` rows (bodies); its `units`
//! units (threads) share the tile's activations in workgroup memory and split each layer's
//! neurons between them, so a weight is loaded once per tile (consecutive units read
//! consecutive weights) and applied to every row of the tile from registers, while the
//! activations a unit reads are the same for every unit (a broadcast). The network, for
//! each row with its own latent z̃ = (z, 1) (docs/protocol.md §4,
//! `crate::nn::ModulatedLinear`):
//!
//! ```text
//! forward    a_ℓ = tanh(a_{ℓ−1} W̃_ℓ(z) + b_ℓ + s_ℓ(z)),     H = a_L·w + c
//! backward   g_L = w,  δ_ℓ = g_ℓ ⊙ (1 − a_ℓ²),  g_{ℓ−1} = δ_ℓ W̃_ℓ(z)ᵀ,  ∇ₓH = g₀
//! field      ẋ = J∇H = (∂H/∂p, −∂H/∂q)
//! ```
//!
//! W̃(z) is never formed: W + Σₖ zₖΔWₖ (FW), W + V(z)U(z)ᵀ (MR), W + V_s diag(d(z)) U_sᵀ
//! (SVD) act as the base product plus the method's correction; the rank-r pre-products
//! (h V, δ U) are computed by `tile·r` units before each layer. δ_ℓ overwrites a_ℓ in place
//! during the backward pass, so one buffer of `tile·(n + L·width)` floats holds both.
//!
//! (One unit per row, with the row's activations in the unit's private memory, is the
//! obvious alternative and was tried: Mesa's llvmpipe — lavapipe, CI's Vulkan — caps the
//! loop iterations of one invocation at 65 535 and silently cuts the loops short beyond
//! that, which a row of a 3×100 network passes within two field evaluations. Split
//! between the units of a cube, each unit's share stays far below the cap.)
//!
//! **Integrators.** Explicit Euler, classic RK4, and implicit midpoint by fixed-point
//! iteration from the explicit half step, converged when ‖Δy‖∞ ≤ tol·(1 + ‖y‖∞) for every
//! row of the tile (the CPU path's rule over its batch), at most `max_iter` updates. A row
//! whose solve fails or whose state turns non-finite keeps its state from before the
//! launch and is flagged ([`FLAG_NOT_CONVERGED`], [`FLAG_NON_FINITE`]).
//!
//! **Separable models** H = T(p; z) + V(q; z) are two networks of the same shape in one
//! buffer (layer slots 0…L−1 for T, L…2L−1 for V, each reading dof = n/2 inputs); their field
//! is (∇ₚT, −∇_qV), and symplectic Euler, Störmer–Verlet and Yoshida-4 compose the kick
//! p ← p − c∇_qV(q) and the drift q ← q + c∇ₚT(p) in the same launch; the energy is
//! T(p) + V(q).
//!
//! **GENERIC models** ẋ = L∇E + M∇S pack E(x; z) and S(x; z) as two networks over the
//! whole state (slots 0…L−1 and L…2L−1) beside the dense A(x), C(x) networks and the skew
//! tensors ξ, ζ (`super::pack`). They step by the discrete gradient of
//! `crate::integrate::DiscreteGradient`: from the explicit Euler step, fixed-point updates
//! x₁ ← x₀ + h [L̄∇̄E + M̄∇̄S] with the average-vector-field gradients ∇̄E, ∇̄S by 3-point
//! Gauss–Legendre between x₀ and x₁ (six network gradients per update) and L̄, M̄ assembled
//! at x̄ = (x₀ + x₁)/2 from them, so that L̄∇̄S = 0 and M̄∇̄E = 0 and E is conserved, S never
//! decreases. The assembly runs one unit per row (K and n are small); the convergence rule
//! is the midpoint's. E(x₁), S(x₁) and ∇E(x₁) (the temperatures ∂E/∂Sᵢ) are written with
//! the state.
//!
//! **Models.** Each cube first copies its model's table (layer shapes and the offsets of its
//! weights, [`table_len`] entries) from `tables[cube_table[cube]…]` into workgroup memory:
//! models of one shape packed as a group (`PackedNet::group`, weights concatenated) step in
//! one launch, every cube's rows belonging to one model.
//!
//! The method, widths, tile and integrator are compile-time parameters: each (model shape,
//! integrator) pair compiles its own kernel once.

use cubecl::prelude::*;

/// u32 entries per layer in the meta table (see [`super::PackedNet`]): d_in, d_out, then
/// the offsets of W, Wᵀ, b, A_s, FW, FWᵀ, MR V, MR Vᵀ, MR U, SVD V, SVD Vᵀ, SVD U_sᵀ,
/// SVD A_d, then the rank.
pub const LAYER_META: usize = 16;

/// Method codes (compile-time).
pub const NONE: u32 = 0;
/// Shift.
pub const SHIFT: u32 = 1;
/// Full-weight.
pub const FW: u32 = 2;
/// Multi-rank (RO = rank 1).
pub const MR: u32 = 3;
/// SVD-like.
pub const SVD: u32 = 4;

/// Integrator codes (compile-time).
pub const EULER: u32 = 0;
/// Classic RK4.
pub const RK4: u32 = 1;
/// Implicit midpoint by fixed-point iteration.
pub const MIDPOINT: u32 = 2;
/// Symplectic Euler, kick then drift (separable H only).
pub const SYMPLECTIC_EULER: u32 = 3;
/// Störmer–Verlet, kick–drift–kick (separable H only).
pub const VERLET: u32 = 4;
/// Yoshida's 4th-order triple jump of Verlet steps (separable H only).
pub const YOSHIDA4: u32 = 5;

/// The discrete-gradient step of GENERIC models (`crate::integrate::DiscreteGradient`).
pub const DISCRETE_GRADIENT: u32 = 6;

/// u32 entries per layer of a GENERIC model's dense A / C networks in the meta table: d_in,
/// d_out, the offsets of W (`[d_in, d_out]`) and b.
pub const DENSE_META: usize = 4;

/// Flag bit: the implicit solve did not converge (the row kept its state from before the
/// launch; the host re-solves it).
pub const FLAG_NOT_CONVERGED: u32 = 1;
/// Flag bit: the step produced a non-finite state (the row kept its state from before the
/// launch; the host freezes and reports it).
pub const FLAG_NON_FINITE: u32 = 2;

/// Compile-time shape of one kernel.
#[derive(CubeType, Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Shape {
    /// State dimension n.
    pub n: usize,
    /// Networks: 1 (H(q, p)) or 2 (separable: T(p) in layer slots 0…L−1, V(q) in L…2L−1).
    pub nets: usize,
    /// Hidden layers L of each network.
    pub layers: usize,
    /// Activation stride (widest layer).
    pub width: usize,
    /// Method code.
    pub method: u32,
    /// Latent width d_z.
    pub dz: usize,
    /// Largest rank (≥ 1).
    pub rmax: usize,
    /// GENERIC: the assembly rank K (0: a Hamiltonian).
    pub k: usize,
    /// GENERIC: layers of each dense network A, C.
    pub dense_layers: usize,
    /// GENERIC: the widest dense layer.
    pub dense_width: usize,
    /// Integrator code.
    pub scheme: u32,
    /// Fixed-point iteration cap.
    pub max_iter: u32,
    /// Rows per cube.
    pub tile: usize,
    /// Units per cube.
    pub units: usize,
}

/// u32 entries of one model's table: [`LAYER_META`] per layer slot, then each network's
/// readout and readout-bias offsets; for a GENERIC model ( `dense_layers` > 0) then
/// [`DENSE_META`] per layer of A and of C, and the offsets of ξ and ζ.
pub fn table_len(nets: usize, layers: usize, dense_layers: usize) -> usize {
    let dense = if dense_layers > 0 {
        2 * dense_layers * DENSE_META + 2
    } else {
        0
    };
    dense_table(nets, layers) + dense
}

/// Where a GENERIC model's dense-network entries start in its table.
pub fn dense_table(nets: usize, layers: usize) -> usize {
    nets * layers * LAYER_META + 2 * nets
}

/// Workgroup buffers of one tile.
#[derive(CubeType)]
struct Tile {
    /// `[tile, n + L·width]`: the evaluation point, then each layer's activations (δ during
    /// the backward pass).
    acts: SharedMemory<f32>,
    /// `[tile, d_z + 1]`: z̃ per row.
    zt: SharedMemory<f32>,
    /// `[tile, nets·L, rmax]`: SVD coefficients d(z) per row and layer slot.
    dsv: SharedMemory<f32>,
    /// `[tile, rmax]`: rank-r pre-products of the current layer.
    pre: SharedMemory<f32>,
    /// `[tile, n]`: the input gradient of the last network evaluated (∇ₓH; ∇ₚT or ∇_qV
    /// in the first dof columns for a separable model).
    grad: SharedMemory<f32>,
}

/// Workgroup buffers of a GENERIC model's step (one element each for a Hamiltonian).
#[derive(CubeType)]
struct Generic {
    /// `[tile, n]`: ∇E and ∇S (or their discrete averages) per row.
    ge: SharedMemory<f32>,
    gs: SharedMemory<f32>,
    /// `[tile, 2·dense width]`: hidden activations of A or C.
    dense: SharedMemory<f32>,
    /// `[tile, K²]`: A(x) and C(x) per row.
    amat: SharedMemory<f32>,
    cmat: SharedMemory<f32>,
}

/// Strides of the rank-r maps over (vector entry i, latent index k, rank index j).
#[derive(CubeType, Clone, Copy)]
struct RankStrides {
    mr_i: usize,
    mr_k: usize,
    mr_j: usize,
    svd_i: usize,
    svd_j: usize,
}

/// The rank-r products of the vector at `acts[row][off..off + len]` for every row of the
/// tile, one (row, j) per unit, into `pre`: MR Σᵢ vᵢ Σₖ z̃ₖ P[i, k, j] (P at `mr`), SVD
/// dⱼ(z) Σᵢ vᵢ P[i, j] (P at `svd`), with the strides of the map at hand (h V in the forward
/// pass, δ U in the backward pass).
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers and shape"
)]
fn rank_products(
    w: &Array<f32>,
    t: &mut Tile,
    slot: usize,
    off: usize,
    len: usize,
    r: usize,
    mr: usize,
    svd: usize,
    st: RankStrides,
    #[comptime] s: Shape,
) {
    let stride = comptime![s.n + s.layers * s.width];
    let k = comptime![s.dz + 1];
    let mut q = UNIT_POS as usize;
    while q < s.tile * r {
        let row = q / r;
        let j = q % r;
        let mut acc = 0.0f32;
        for i in 0..len {
            let v = t.acts[row * stride + off + i];
            if comptime![s.method == MR] {
                let mut p = 0.0f32;
                for kk in 0..k {
                    p += t.zt[row * k + kk] * w[mr + i * st.mr_i + kk * st.mr_k + j * st.mr_j];
                }
                acc += v * p;
            } else {
                acc += v * w[svd + i * st.svd_i + j * st.svd_j];
            }
        }
        if comptime![s.method == SVD] {
            acc *= t.dsv[(row * comptime![s.nets * s.layers] + slot) * s.rmax + j];
        }
        t.pre[row * s.rmax + j] = acc;
        q += s.units;
    }
    sync_cube();
}

/// The forward map of the layer in `slot` for every row of the tile: `acts[out_off..]` =
/// tanh(`acts[in_off..]` W̃(z) + b̃(z)).
#[cube]
fn layer_forward(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    slot: usize,
    in_off: usize,
    out_off: usize,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let stride = comptime![s.n + s.layers * s.width];
    let k = comptime![s.dz + 1];
    let m = slot * LAYER_META;
    let d_in = meta[m] as usize;
    let d_out = meta[m + 1] as usize;
    let o_w = meta[m + 2] as usize;
    let o_b = meta[m + 4] as usize;
    let o_s = meta[m + 5] as usize;
    let o_fw = meta[m + 6] as usize;
    let o_mv = meta[m + 8] as usize;
    let o_mu = meta[m + 10] as usize;
    let o_sv = meta[m + 11] as usize;
    let o_su = meta[m + 13] as usize;
    let r = meta[m + 15] as usize;
    // Rank-r pre-products: MR cⱼ = Σₖ z̃ₖ (h Vₖ)ⱼ, SVD cⱼ = dⱼ (h V_s)ⱼ.
    if comptime![s.method == MR || s.method == SVD] {
        let strides = RankStrides {
            mr_i: k * r,
            mr_k: r,
            mr_j: 1,
            svd_i: r,
            svd_j: 1,
        };
        rank_products(w, t, slot, in_off, d_in, r, o_mv, o_sv, strides, s);
    }
    let mut o = u;
    while o < d_out {
        let mut acc = Array::<f32>::new(s.tile);
        let b = w[o_b + o];
        #[unroll]
        for row in 0..s.tile {
            acc[row] = b;
        }
        if comptime![s.method != NONE] {
            for kk in 0..s.dz {
                let a = w[o_s + kk * d_out + o];
                #[unroll]
                for row in 0..s.tile {
                    acc[row] += t.zt[row * k + kk] * a;
                }
            }
        }
        for i in 0..d_in {
            let wv = w[o_w + i * d_out + o];
            #[unroll]
            for row in 0..s.tile {
                acc[row] += t.acts[row * stride + in_off + i] * wv;
            }
        }
        if comptime![s.method == FW] {
            for i in 0..d_in {
                for kk in 0..s.dz {
                    let wv = w[o_fw + (i * s.dz + kk) * d_out + o];
                    #[unroll]
                    for row in 0..s.tile {
                        acc[row] += t.acts[row * stride + in_off + i] * t.zt[row * k + kk] * wv;
                    }
                }
            }
        }
        if comptime![s.method == MR] {
            for kk in 0..k {
                for j in 0..r {
                    let wv = w[o_mu + j * (k * d_out) + kk * d_out + o];
                    #[unroll]
                    for row in 0..s.tile {
                        acc[row] += t.zt[row * k + kk] * t.pre[row * s.rmax + j] * wv;
                    }
                }
            }
        }
        if comptime![s.method == SVD] {
            for j in 0..r {
                let wv = w[o_su + j * d_out + o];
                #[unroll]
                for row in 0..s.tile {
                    acc[row] += t.pre[row * s.rmax + j] * wv;
                }
            }
        }
        #[unroll]
        for row in 0..s.tile {
            t.acts[row * stride + out_off + o] = acc[row].tanh();
        }
        o += s.units;
    }
    sync_cube();
}

/// The transposed map of layer `l` of its network (in `slot`) for every row: g = δ W̃(z)ᵀ
/// from `acts[delta_off..]`; then δ_{ℓ−1} = g ⊙ (1 − a_{ℓ−1}²) in place of a_{ℓ−1} at
/// `acts[dst_off..]`, or the input gradient into `grad` for the first layer (ℓ = 0).
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers, layer and offsets"
)]
fn layer_backward(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    slot: usize,
    l: usize,
    delta_off: usize,
    dst_off: usize,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let stride = comptime![s.n + s.layers * s.width];
    let k = comptime![s.dz + 1];
    let m = slot * LAYER_META;
    let d_in = meta[m] as usize;
    let d_out = meta[m + 1] as usize;
    let o_wt = meta[m + 3] as usize;
    let o_fwt = meta[m + 7] as usize;
    let o_mvt = meta[m + 9] as usize;
    let o_mu = meta[m + 10] as usize;
    let o_svt = meta[m + 12] as usize;
    let o_su = meta[m + 13] as usize;
    let r = meta[m + 15] as usize;
    // MR eⱼ = Σ_o δ_o U(z)[o, j]; SVD eⱼ = dⱼ Σ_o δ_o U_s[o, j].
    if comptime![s.method == MR || s.method == SVD] {
        let strides = RankStrides {
            mr_i: 1,
            mr_k: d_out,
            mr_j: k * d_out,
            svd_i: 1,
            svd_j: d_out,
        };
        rank_products(w, t, slot, delta_off, d_out, r, o_mu, o_su, strides, s);
    }
    let mut i = u;
    while i < d_in {
        let mut acc = Array::<f32>::new(s.tile);
        #[unroll]
        for row in 0..s.tile {
            acc[row] = 0.0;
        }
        for o in 0..d_out {
            let wv = w[o_wt + o * d_in + i];
            #[unroll]
            for row in 0..s.tile {
                acc[row] += t.acts[row * stride + delta_off + o] * wv;
            }
        }
        if comptime![s.method == FW] {
            for kk in 0..s.dz {
                for o in 0..d_out {
                    let wv = w[o_fwt + (kk * d_out + o) * d_in + i];
                    #[unroll]
                    for row in 0..s.tile {
                        acc[row] += t.acts[row * stride + delta_off + o] * t.zt[row * k + kk] * wv;
                    }
                }
            }
        }
        if comptime![s.method == MR] {
            for kk in 0..k {
                for j in 0..r {
                    let wv = w[o_mvt + (kk * r + j) * d_in + i];
                    #[unroll]
                    for row in 0..s.tile {
                        acc[row] += t.zt[row * k + kk] * t.pre[row * s.rmax + j] * wv;
                    }
                }
            }
        }
        if comptime![s.method == SVD] {
            for j in 0..r {
                let wv = w[o_svt + j * d_in + i];
                #[unroll]
                for row in 0..s.tile {
                    acc[row] += t.pre[row * s.rmax + j] * wv;
                }
            }
        }
        if l > 0 {
            #[unroll]
            for row in 0..s.tile {
                let a = t.acts[row * stride + dst_off + i];
                t.acts[row * stride + dst_off + i] = acc[row] * (1.0 - a * a);
            }
        } else {
            #[unroll]
            for row in 0..s.tile {
                t.grad[row * s.n + i] = acc[row];
            }
        }
        i += s.units;
    }
    sync_cube();
}

/// The forward pass of network `net` from `acts[row][0..d_in]` (the evaluation point) for
/// every row.
#[cube]
fn forward(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    net: usize,
    #[comptime] s: Shape,
) {
    let base = net * s.layers;
    layer_forward(w, meta, t, base, 0, s.n, s);
    for l in 1..s.layers {
        layer_forward(
            w,
            meta,
            t,
            base + l,
            s.n + (l - 1) * s.width,
            s.n + l * s.width,
            s,
        );
    }
}

/// Where network `net`'s head sits in the meta table: the offset of its readout w in the
/// weights, then (at the next entry) that of its readout bias c.
#[cube]
fn head(net: usize, #[comptime] s: Shape) -> usize {
    comptime![s.nets * s.layers * LAYER_META] + 2 * net
}

/// Loads `len` values per row, `y[row][from..from + len]`, as the evaluation point
/// `acts[row][0..len]`.
#[cube]
fn load(t: &mut Tile, y: &SharedMemory<f32>, from: usize, len: usize, #[comptime] s: Shape) {
    let stride = comptime![s.n + s.layers * s.width];
    let mut p = UNIT_POS as usize;
    while p < s.tile * len {
        let row = p / len;
        let i = p % len;
        t.acts[row * stride + i] = y[row * s.n + from + i];
        p += s.units;
    }
    sync_cube();
}

/// The input gradient of network `net` at the loaded evaluation point, every row, into
/// `grad[row][0..d_in]`: the forward pass, δ_L = w ⊙ (1 − a_L²), then the transposed maps.
#[cube]
fn gradient(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    net: usize,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let stride = comptime![s.n + s.layers * s.width];
    forward(w, meta, t, net, s);
    let base = net * s.layers;
    // δ_L = w ⊙ (1 − a_L²) in place of a_L.
    let o_r = meta[head(net, s)] as usize;
    let last = s.n + (s.layers - 1) * s.width;
    let width_last = meta[(base + s.layers - 1) * LAYER_META + 1] as usize;
    let mut o = u;
    while o < width_last {
        let wr = w[o_r + o];
        #[unroll]
        for row in 0..s.tile {
            let a = t.acts[row * stride + last + o];
            t.acts[row * stride + last + o] = wr * (1.0 - a * a);
        }
        o += s.units;
    }
    sync_cube();
    for step in 0..s.layers {
        let l = s.layers - 1 - step;
        // Where δ_{ℓ−1} goes: layer ℓ−1's activations, or (ℓ = 0) nowhere but `grad`. The
        // index is written without a subtraction: ℓ may be a compile-time 0.
        let dst = s.n + ((l + s.layers - 1) % s.layers) * s.width;
        layer_backward(w, meta, t, base + l, l, s.n + l * s.width, dst, s);
    }
}

/// The value of network `net` at the evaluation point its last forward pass saw, for row
/// `row` of the tile: a_L·w + c.
#[cube]
fn value(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &Tile,
    net: usize,
    row: usize,
    #[comptime] s: Shape,
) -> f32 {
    let stride = comptime![s.n + s.layers * s.width];
    let at = head(net, s);
    let o_r = meta[at] as usize;
    let o_c = meta[at + 1] as usize;
    let last = s.n + (s.layers - 1) * s.width;
    let width_last = meta[(net * s.layers + s.layers - 1) * LAYER_META + 1] as usize;
    let mut v = w[o_c];
    for o in 0..width_last {
        v += t.acts[row * stride + last + o] * w[o_r + o];
    }
    v
}

/// The input gradient of network `net` of a separable model at its half of `y`: ∇ₚT(p)
/// (`net` = 0) or ∇_qV(q) (`net` = 1), into `grad[row][0..dof]`.
#[cube]
fn split_gradient(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    y: &SharedMemory<f32>,
    net: usize,
    #[comptime] s: Shape,
) {
    let dof = comptime![s.n / 2];
    load(t, y, dof * (1 - net), dof, s);
    gradient(w, meta, t, net, s);
}

/// The field J∇H at `y` (`[tile, n]`) into `f`, every row of the tile: (∂H/∂p, −∂H/∂q)
/// from one network, or (∇ₚT(p), −∇_qV(q)) from the two of a separable model.
#[cube]
fn field(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    y: &SharedMemory<f32>,
    f: &mut SharedMemory<f32>,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let dof = comptime![s.n / 2];
    if comptime![s.nets == 1] {
        load(t, y, 0, s.n, s);
        gradient(w, meta, t, 0, s);
        let mut p = u;
        while p < comptime![s.tile * s.n] {
            let row = p / s.n;
            let i = p % s.n;
            if i < dof {
                f[p] = t.grad[row * s.n + dof + i];
            } else {
                f[p] = -t.grad[row * s.n + i - dof];
            }
            p += s.units;
        }
        sync_cube();
    } else {
        for net in 0..2usize {
            // T gives q̇, V gives −ṗ.
            split_gradient(w, meta, t, y, net, s);
            let mut p = u;
            while p < comptime![s.tile * dof] {
                let row = p / dof;
                let i = p % dof;
                let g = t.grad[row * s.n + i];
                if net == 0 {
                    f[row * s.n + i] = g;
                } else {
                    f[row * s.n + dof + i] = -g;
                }
                p += s.units;
            }
            sync_cube();
        }
    }
}

/// One flow of a separable model applied in place to `x`: the kick p ← p − c ∇_qV(q)
/// (`net` = 1) or the drift q ← q + c ∇ₚT(p) (`net` = 0).
#[cube]
fn split_flow(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    x: &mut SharedMemory<f32>,
    net: usize,
    c: f32,
    #[comptime] s: Shape,
) {
    let dof = comptime![s.n / 2];
    // The drift reads p and moves q; the kick reads q and moves p.
    let moved = dof * net;
    split_gradient(w, meta, t, x, net, s);
    let mut p = UNIT_POS as usize;
    while p < comptime![s.tile * dof] {
        let row = p / dof;
        let i = p % dof;
        let g = t.grad[row * s.n + i];
        if net == 0 {
            x[row * s.n + moved + i] += c * g;
        } else {
            x[row * s.n + moved + i] -= c * g;
        }
        p += s.units;
    }
    sync_cube();
}

/// One step of `h` of a separable scheme, in place: its kicks and drifts in order, from one
/// call site in a runtime loop (the shader holds the network's passes once, not once per
/// flow — nine flows would make a Yoshida shader lavapipe takes minutes to compile).
///
/// ```text
/// symplectic Euler   kick h, drift h
/// Verlet             kick h/2, drift h, kick h/2
/// Yoshida-4          Verlet of w₁h, w₀h, w₁h   (w₁ = 1/(2 − 2^{1/3}), w₀ = 1 − 2w₁)
/// ```
#[cube]
fn split_step(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    x: &mut SharedMemory<f32>,
    h: f32,
    #[comptime] s: Shape,
) {
    let flows = comptime![if s.scheme == SYMPLECTIC_EULER {
        2u32
    } else if s.scheme == VERLET {
        3u32
    } else {
        9u32
    }];
    for k in 0..flows {
        // Kicks move p by V (network 1), drifts move q by T (network 0).
        let mut net = 1usize;
        let mut fraction = 0.5f32;
        if comptime![s.scheme == SYMPLECTIC_EULER] {
            fraction = 1.0;
            if k == 1 {
                net = 0;
            }
        } else if k % 3 == 1 {
            net = 0;
            fraction = 1.0;
        }
        let mut weight = 1.0f32;
        if comptime![s.scheme == YOSHIDA4] {
            // `integrate::yoshida4_weights` in f32.
            weight = 1.351_207_2f32;
            if k / 3 == 1 {
                weight = -1.702_414_4f32;
            }
        }
        split_flow(w, meta, t, x, net, fraction * (weight * h), s);
    }
}

/// `dst[p] = a[p] + c·b[p]` over the tile's `[tile, n]` values.
#[cube]
fn axpy(
    dst: &mut SharedMemory<f32>,
    a: &SharedMemory<f32>,
    c: f32,
    b: &SharedMemory<f32>,
    #[comptime] s: Shape,
) {
    let mut p = UNIT_POS as usize;
    while p < comptime![s.tile * s.n] {
        dst[p] = a[p] + c * b[p];
        p += s.units;
    }
    sync_cube();
}

/// `dst[p] += c·b[p]` over the tile's `[tile, n]` values.
#[cube]
fn add_scaled(dst: &mut SharedMemory<f32>, c: f32, b: &SharedMemory<f32>, #[comptime] s: Shape) {
    let mut p = UNIT_POS as usize;
    while p < comptime![s.tile * s.n] {
        dst[p] += c * b[p];
        p += s.units;
    }
    sync_cube();
}

/// `dst[p] = v` over the tile's `[tile, n]` values.
#[cube]
fn fill(dst: &mut SharedMemory<f32>, v: f32, #[comptime] s: Shape) {
    let mut p = UNIT_POS as usize;
    while p < comptime![s.tile * s.n] {
        dst[p] = v;
        p += s.units;
    }
    sync_cube();
}

/// GENERIC: `ge += c ∇E(pt)`, `gs += c ∇S(pt)` for every row of the tile (E is network 0,
/// S network 1, each over the whole state).
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers and shape"
)]
fn add_gradients(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    t: &mut Tile,
    pt: &SharedMemory<f32>,
    ge: &mut SharedMemory<f32>,
    gs: &mut SharedMemory<f32>,
    c: f32,
    #[comptime] s: Shape,
) {
    load(t, pt, 0, s.n, s);
    gradient(w, meta, t, 0, s);
    add_scaled(ge, c, &t.grad, s);
    load(t, pt, 0, s.n, s);
    gradient(w, meta, t, 1, s);
    add_scaled(gs, c, &t.grad, s);
}

/// GENERIC: the dense network `net` (0: A, 1: C; tanh hidden layers, linear output) at
/// `pt` for every row, its K² outputs into `out` (`[tile, K²]`); `dn` (`[tile, 2·width]`)
/// holds the hidden activations, alternating halves.
#[cube]
fn dense_forward(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    pt: &SharedMemory<f32>,
    dn: &mut SharedMemory<f32>,
    out: &mut SharedMemory<f32>,
    net: usize,
    #[comptime] s: Shape,
) {
    let dw = comptime![s.dense_width];
    let kk = comptime![s.k * s.k];
    let at =
        comptime![dense_table(s.nets, s.layers)] + net * comptime![s.dense_layers * DENSE_META];
    for l in 0..s.dense_layers {
        let m = at + l * DENSE_META;
        let d_in = meta[m] as usize;
        let d_out = meta[m + 1] as usize;
        let o_w = meta[m + 2] as usize;
        let o_b = meta[m + 3] as usize;
        let src = (l % 2) * dw;
        let dst = ((l + 1) % 2) * dw;
        let mut o = UNIT_POS as usize;
        while o < d_out {
            let mut acc = Array::<f32>::new(s.tile);
            let b = w[o_b + o];
            #[unroll]
            for row in 0..s.tile {
                acc[row] = 0.0;
            }
            for i in 0..d_in {
                let wv = w[o_w + i * d_out + o];
                #[unroll]
                for row in 0..s.tile {
                    // (`src + i` < the dense width: in bounds for the first layer too.)
                    let mut v = dn[row * 2 * dw + src + i];
                    if l == 0 {
                        v = pt[row * s.n + i];
                    }
                    acc[row] += v * wv;
                }
            }
            #[unroll]
            for row in 0..s.tile {
                if l + 1 < s.dense_layers {
                    dn[row * 2 * dw + dst + o] = (acc[row] + b).tanh();
                } else {
                    out[row * kk + o] = acc[row] + b;
                }
            }
            o += s.units;
        }
        sync_cube();
    }
}

/// GENERIC: ẋ = L∇E + M∇S per row into `rate`, with A, C (`[tile, K²]`) evaluated at the
/// point and L, M assembled from the given gradients `ge`, `gs`, matrix-free
/// (`cpu::generic::Assembly::forward`): B_S[p][j] = Σᵢ ∇Sᵢ ξₚᵢⱼ, B_E[p][j] = Σᵢ ∇Eᵢ ζₚᵢⱼ,
/// w = B_S∇E, w₂ = B_E∇S, v = (A − Aᵀ)w, v₂ = CCᵀw₂, ẋ = B_Sᵀv + B_Eᵀv₂. One unit per row.
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers and shape"
)]
fn assemble(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    ge: &SharedMemory<f32>,
    gs: &SharedMemory<f32>,
    amat: &SharedMemory<f32>,
    cmat: &SharedMemory<f32>,
    rate: &mut SharedMemory<f32>,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let n = comptime![s.n];
    let k = comptime![s.k];
    let nn = comptime![s.n * s.n];
    let at = comptime![dense_table(s.nets, s.layers) + 2 * s.dense_layers * DENSE_META];
    let o_xi = meta[at] as usize;
    let o_zeta = meta[at + 1] as usize;
    if u < s.tile {
        let r = u * n;
        let a0 = u * k * k;
        let mut wv = Array::<f32>::new(comptime![s.k]);
        let mut w2 = Array::<f32>::new(comptime![s.k]);
        for p in 0..k {
            let mut acc = 0.0f32;
            let mut acc2 = 0.0f32;
            for j in 0..n {
                let mut bs = 0.0f32;
                let mut be = 0.0f32;
                for i in 0..n {
                    bs += gs[r + i] * w[o_xi + p * nn + i * n + j];
                    be += ge[r + i] * w[o_zeta + p * nn + i * n + j];
                }
                acc += bs * ge[r + j];
                acc2 += be * gs[r + j];
            }
            wv[p] = acc;
            w2[p] = acc2;
        }
        let mut v = Array::<f32>::new(comptime![s.k]);
        let mut ctw = Array::<f32>::new(comptime![s.k]);
        let mut v2 = Array::<f32>::new(comptime![s.k]);
        for p in 0..k {
            let mut acc = 0.0f32;
            let mut acc2 = 0.0f32;
            for q in 0..k {
                acc += (amat[a0 + p * k + q] - amat[a0 + q * k + p]) * wv[q];
                acc2 += cmat[a0 + q * k + p] * w2[q];
            }
            v[p] = acc;
            ctw[p] = acc2;
        }
        for p in 0..k {
            let mut acc = 0.0f32;
            for q in 0..k {
                acc += cmat[a0 + p * k + q] * ctw[q];
            }
            v2[p] = acc;
        }
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                let mut bs = 0.0f32;
                let mut be = 0.0f32;
                for i in 0..n {
                    bs += gs[r + i] * w[o_xi + p * nn + i * n + j];
                    be += ge[r + i] * w[o_zeta + p * nn + i * n + j];
                }
                acc += bs * v[p] + be * v2[p];
            }
            rate[r + j] = acc;
        }
    }
    sync_cube();
}

/// GENERIC: ẋ at `pt` with L, M from the given (discrete) gradients into `rate`: A and C at
/// `pt`, then [`assemble`].
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers and shape"
)]
fn generic_rate(
    w: &Array<f32>,
    meta: &SharedMemory<u32>,
    g: &mut Generic,
    pt: &SharedMemory<f32>,
    rate: &mut SharedMemory<f32>,
    #[comptime] s: Shape,
) {
    dense_forward(w, meta, pt, &mut g.dense, &mut g.amat, 0, s);
    dense_forward(w, meta, pt, &mut g.dense, &mut g.cmat, 1, s);
    assemble(w, meta, &g.ge, &g.gs, &g.amat, &g.cmat, rate, s);
}

/// The fixed-point test of every row of the tile: `converged[row]` when its update
/// `acc` (|Δ| per entry) meets ‖Δ‖∞ ≤ tol·(1 + ‖y‖∞) (the CPU path's rule), and `done[0]`
/// when every row of the batch in the tile has (a non-finite row cannot converge and is
/// flagged later: it does not hold the others back).
#[cube]
#[expect(
    clippy::too_many_arguments,
    reason = "a kernel helper: buffers and shape"
)]
fn converge(
    acc: &SharedMemory<f32>,
    y: &SharedMemory<f32>,
    converged: &mut SharedMemory<u32>,
    done: &mut SharedMemory<u32>,
    tolerance: f32,
    row0: usize,
    rows: usize,
    #[comptime] s: Shape,
) {
    if UNIT_POS == 0 {
        let mut all = 1u32;
        for row in 0..s.tile {
            let mut du = 0.0f32;
            let mut ymax = 0.0f32;
            for i in 0..s.n {
                du = f32::max(du, acc[row * s.n + i]);
                ymax = f32::max(ymax, f32::abs(y[row * s.n + i]));
            }
            let ok = du <= tolerance * (1.0 + ymax);
            let lost = f32::is_nan(du) || f32::is_inf(du);
            converged[row] = u32::cast_from(ok);
            if row0 + row < rows && !ok && !lost {
                all = 0u32;
            }
        }
        done[0] = all;
    }
    sync_cube();
}

/// Advances every row of a batch by `substeps` steps of `h`, then writes each row's state
/// (unless flagged), energy (H(x₁), or E(x₁), S(x₁) and ∇E(x₁) of a GENERIC model) and
/// flags. See the module docs.
#[cube(launch_unchecked)]
pub fn step_batch(
    w: &Array<f32>,
    tables: &Array<u32>,
    cube_table: &Array<u32>,
    states: &mut Array<f32>,
    latents: &Array<f32>,
    energy: &mut Array<f32>,
    entropy: &mut Array<f32>,
    energy_grad: &mut Array<f32>,
    flags: &mut Array<u32>,
    rows: u32,
    h: f32,
    substeps: u32,
    tolerance: f32,
    #[comptime] s: Shape,
) {
    let u = UNIT_POS as usize;
    let row0 = CUBE_POS as usize * s.tile;
    let rows = rows as usize;
    let k = comptime![s.dz + 1];
    let tn = comptime![s.tile * s.n];
    let mut t = Tile {
        acts: SharedMemory::<f32>::new(comptime![s.tile * (s.n + s.layers * s.width)]),
        zt: SharedMemory::<f32>::new(comptime![s.tile * (s.dz + 1)]),
        dsv: SharedMemory::<f32>::new(comptime![s.tile * s.nets * s.layers * s.rmax]),
        pre: SharedMemory::<f32>::new(comptime![s.tile * s.rmax]),
        grad: SharedMemory::<f32>::new(tn),
    };
    let mut x0 = SharedMemory::<f32>::new(tn);
    let mut x = SharedMemory::<f32>::new(tn);
    let mut y = SharedMemory::<f32>::new(tn);
    let mut kf = SharedMemory::<f32>::new(tn);
    let mut acc = SharedMemory::<f32>::new(tn);
    let mut flag = SharedMemory::<u32>::new(s.tile);
    let mut done = SharedMemory::<u32>::new(1usize);
    let mut converged = SharedMemory::<u32>::new(s.tile);
    // GENERIC buffers (one element each for a Hamiltonian).
    let gn = comptime![if s.k > 0 { s.tile * s.n } else { 1 }];
    let mut g = Generic {
        ge: SharedMemory::<f32>::new(gn),
        gs: SharedMemory::<f32>::new(gn),
        dense: SharedMemory::<f32>::new(comptime![if s.k > 0 {
            s.tile * 2 * s.dense_width
        } else {
            1
        }]),
        amat: SharedMemory::<f32>::new(comptime![if s.k > 0 { s.tile * s.k * s.k } else { 1 }]),
        cmat: SharedMemory::<f32>::new(comptime![if s.k > 0 { s.tile * s.k * s.k } else { 1 }]),
    };
    // This cube's model: its table (absolute offsets into `w`) into workgroup memory.
    let mut meta = SharedMemory::<u32>::new(comptime![table_len(s.nets, s.layers, s.dense_layers)]);
    let base = cube_table[CUBE_POS as usize] as usize;
    let mut p = u;
    while p < comptime![table_len(s.nets, s.layers, s.dense_layers)] {
        meta[p] = tables[base + p];
        p += s.units;
    }

    // Load the tile (rows past the batch: zeros, never written back).
    let mut p = u;
    while p < tn {
        let row = row0 + p / s.n;
        let mut v = 0.0f32;
        if row < rows {
            v = states[row0 * s.n + p];
        }
        x0[p] = v;
        x[p] = v;
        p += s.units;
    }
    let mut p = u;
    while p < comptime![s.tile * (s.dz + 1)] {
        let row = p / k;
        let kk = p % k;
        let mut v = 1.0f32;
        if kk < s.dz {
            v = 0.0;
            if row0 + row < rows {
                v = latents[(row0 + row) * s.dz + kk];
            }
        }
        t.zt[p] = v;
        p += s.units;
    }
    if u < s.tile {
        flag[u] = 0u32;
    }
    sync_cube();
    // SVD coefficients d = ReLU(z̃ A_d) of every layer slot, once per launch.
    if comptime![s.method == SVD] {
        let mut p = u;
        while p < comptime![s.tile * s.nets * s.layers * s.rmax] {
            let row = p / comptime![s.nets * s.layers * s.rmax];
            let l = (p / s.rmax) % comptime![s.nets * s.layers];
            let j = p % s.rmax;
            let r = meta[l * LAYER_META + 15] as usize;
            let o_d = meta[l * LAYER_META + 14] as usize;
            let mut v = 0.0f32;
            if j < r {
                for kk in 0..k {
                    v += t.zt[row * k + kk] * w[o_d + kk * r + j];
                }
            }
            t.dsv[p] = f32::max(v, 0.0);
            p += s.units;
        }
        sync_cube();
    }

    for _ in 0..substeps {
        if comptime![s.scheme == EULER] {
            field(w, &meta, &mut t, &x, &mut kf, s);
            axpy(&mut y, &x, h, &kf, s);
            axpy(&mut x, &y, 0.0, &kf, s);
        }
        if comptime![s.scheme == RK4] {
            field(w, &meta, &mut t, &x, &mut kf, s);
            axpy(&mut acc, &kf, 0.0, &kf, s);
            axpy(&mut y, &x, 0.5 * h, &kf, s);
            field(w, &meta, &mut t, &y, &mut kf, s);
            add_scaled(&mut acc, 2.0, &kf, s);
            axpy(&mut y, &x, 0.5 * h, &kf, s);
            field(w, &meta, &mut t, &y, &mut kf, s);
            add_scaled(&mut acc, 2.0, &kf, s);
            axpy(&mut y, &x, h, &kf, s);
            field(w, &meta, &mut t, &y, &mut kf, s);
            add_scaled(&mut acc, 1.0, &kf, s);
            add_scaled(&mut x, h / 6.0, &acc, s);
        }
        if comptime![s.scheme == MIDPOINT] {
            // y = x + (h/2) f(y), from the explicit half step.
            field(w, &meta, &mut t, &x, &mut kf, s);
            axpy(&mut y, &x, 0.5 * h, &kf, s);
            if u == 0 {
                done[0] = 0u32;
            }
            sync_cube();
            for _ in 0..s.max_iter {
                // Uniform: `done` is read by every unit after the barrier that wrote it.
                if done[0] == 0u32 {
                    field(w, &meta, &mut t, &y, &mut kf, s);
                    // acc ← |Δy| per entry, then y ← x + (h/2) f(y).
                    let mut p = u;
                    while p < tn {
                        let next = x[p] + 0.5 * h * kf[p];
                        acc[p] = f32::abs(next - y[p]);
                        y[p] = next;
                        p += s.units;
                    }
                    sync_cube();
                    converge(
                        &acc,
                        &y,
                        &mut converged,
                        &mut done,
                        tolerance,
                        row0,
                        rows,
                        s,
                    );
                }
            }
            if u < s.tile {
                if converged[u] == 0u32 {
                    flag[u] |= FLAG_NOT_CONVERGED;
                }
            }
            // x₁ = 2y − x₀ of the substep.
            let mut p = u;
            while p < tn {
                x[p] = 2.0 * y[p] - x[p];
                p += s.units;
            }
            sync_cube();
        }
        if comptime![s.scheme == DISCRETE_GRADIENT] {
            // x₁ = x₀ + h [L̄∇̄E + M̄∇̄S] (`integrate::discrete_gradient`): from the explicit
            // Euler step, fixed-point iterations with the average-vector-field gradients
            // by 3-point Gauss–Legendre between x₀ (`x`) and x₁ (`y`), L̄ and M̄ at x̄.
            fill(&mut g.ge, 0.0, s);
            fill(&mut g.gs, 0.0, s);
            add_gradients(w, &meta, &mut t, &x, &mut g.ge, &mut g.gs, 1.0, s);
            generic_rate(w, &meta, &mut g, &x, &mut acc, s);
            axpy(&mut y, &x, h, &acc, s);
            if u == 0 {
                done[0] = 0u32;
            }
            sync_cube();
            for _ in 0..s.max_iter {
                if done[0] == 0u32 {
                    fill(&mut g.ge, 0.0, s);
                    fill(&mut g.gs, 0.0, s);
                    for node in 0..3u32 {
                        // (0.1127…, 5/18), (0.5, 8/18), (0.8873…, 5/18): the f32 values of
                        // `integrate::discrete_gradient`'s table, as literals set in two
                        // plain `if`s (written first as quotients in an `else if` chain, the
                        // shader kept the middle node's weight for all three).
                        let mut at = 0.5f32;
                        let mut weight = 0.444_444_45f32;
                        if node == 0 {
                            at = 0.112_701_66f32;
                            weight = 0.277_777_8f32;
                        }
                        if node == 2 {
                            at = 0.887_298_34f32;
                            weight = 0.277_777_8f32;
                        }
                        let mut p = u;
                        while p < tn {
                            kf[p] = x[p] + at * (y[p] - x[p]);
                            p += s.units;
                        }
                        sync_cube();
                        add_gradients(w, &meta, &mut t, &kf, &mut g.ge, &mut g.gs, weight, s);
                    }
                    let mut p = u;
                    while p < tn {
                        kf[p] = 0.5 * (x[p] + y[p]);
                        p += s.units;
                    }
                    sync_cube();
                    generic_rate(w, &meta, &mut g, &kf, &mut acc, s);
                    // acc ← |Δx₁| per entry, then x₁ ← x₀ + h·rate.
                    let mut p = u;
                    while p < tn {
                        let next = x[p] + h * acc[p];
                        acc[p] = f32::abs(next - y[p]);
                        y[p] = next;
                        p += s.units;
                    }
                    sync_cube();
                    converge(
                        &acc,
                        &y,
                        &mut converged,
                        &mut done,
                        tolerance,
                        row0,
                        rows,
                        s,
                    );
                }
            }
            if u < s.tile {
                if converged[u] == 0u32 {
                    flag[u] |= FLAG_NOT_CONVERGED;
                }
            }
            axpy(&mut x, &y, 0.0, &y, s);
        }
        if comptime![s.scheme >= SYMPLECTIC_EULER && s.scheme != DISCRETE_GRADIENT] {
            split_step(w, &meta, &mut t, &mut x, h, s);
        }
    }

    // Flags, write-back, and H at the state each row keeps.
    if u < s.tile {
        let mut finite = true;
        for i in 0..s.n {
            let v = x[u * s.n + i];
            if f32::is_nan(v) || f32::is_inf(v) {
                finite = false;
            }
        }
        if !finite {
            flag[u] |= FLAG_NON_FINITE;
        }
    }
    sync_cube();
    let mut p = u;
    while p < tn {
        let row = p / s.n;
        if flag[row] == 0u32 {
            y[p] = x[p];
        } else {
            y[p] = x0[p];
        }
        if row0 + row < rows && flag[row] == 0u32 {
            states[row0 * s.n + p] = x[p];
        }
        p += s.units;
    }
    sync_cube();
    // H = a_L·w + c of the one network, or T(p) + V(q); a GENERIC model's E (network 0)
    // into `acc`, S (network 1) into `kf`.
    if u < s.tile {
        acc[u] = 0.0;
        kf[u] = 0.0;
    }
    sync_cube();
    for net in 0..s.nets {
        if comptime![s.nets == 1 || s.k > 0] {
            load(&mut t, &y, 0, s.n, s);
        } else {
            load(
                &mut t,
                &y,
                comptime![s.n / 2] * (1 - net),
                comptime![s.n / 2],
                s,
            );
        }
        forward(w, &meta, &mut t, net, s);
        if u < s.tile {
            let v = value(w, &meta, &t, net, u, s);
            if comptime![s.k > 0] {
                if net == 1 {
                    kf[u] = v;
                } else {
                    acc[u] += v;
                }
            } else {
                acc[u] += v;
            }
        }
        sync_cube();
    }
    if u < s.tile && row0 + u < rows {
        energy[row0 + u] = acc[u];
        if comptime![s.k > 0] {
            entropy[row0 + u] = kf[u];
        }
        flags[row0 + u] = flag[u];
    }
    // A GENERIC model's ∇E at the state each row keeps (its temperatures ∂E/∂Sᵢ).
    if comptime![s.k > 0] {
        load(&mut t, &y, 0, s.n, s);
        gradient(w, &meta, &mut t, 0, s);
        let mut p = u;
        while p < tn {
            if row0 + p / s.n < rows {
                energy_grad[row0 * s.n + p] = t.grad[p];
            }
            p += s.units;
        }
    }
}

/// Writes `values` (`[count, n]`) into the rows `index` (`[count]`) of `states`: the upload
/// of the bodies edited on the host, without re-uploading the batch.
#[cube(launch_unchecked)]
pub fn scatter_rows(
    states: &mut Array<f32>,
    index: &Array<u32>,
    values: &Array<f32>,
    count: u32,
    #[comptime] n: usize,
) {
    let p = ABSOLUTE_POS;
    if p < count as usize {
        let row = index[p] as usize;
        for i in 0..n {
            states[row * n + i] = values[p * n + i];
        }
    }
}
