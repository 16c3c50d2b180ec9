//! The GENERIC pieces of the CPU kernel, each written once: the dense A(x), C(x) networks
//! (forward with a tape, and back-propagation) and the assembly
//! ẋ = B_Sᵀ(A − Aᵀ)B_S∇E + B_EᵀCCᵀB_E∇S (forward, reverse mode, and the matrices L, M),
//! used by inference, structure queries, training and the discrete-gradient integrator.

use super::{
    gemm::{MatRef, matmul},
    mlp::{CpuMlp, TileOut},
    params::{DenseParams, GenericParams},
    simd::{mul_dtanh, tanh_rows},
};

/// An unmodulated dense MLP (tanh hidden layers, linear output) in CPU layout.
#[derive(Clone, Debug)]
pub(super) struct CpuDense {
    params: DenseParams,
}

impl CpuDense {
    pub(super) fn new(params: &DenseParams) -> Self {
        Self {
            params: params.clone(),
        }
    }

    /// Activations of every layer for `rows` rows of `x`: input first, output last.
    pub(super) fn forward_tape(&self, x: &[f32], rows: usize) -> Vec<Vec<f32>> {
        let p = &self.params;
        let mut acts = vec![x.to_vec()];
        let last = p.layers.len() - 1;
        for (l, (w, b)) in p.layers.iter().enumerate() {
            let (i, o) = (p.sizes[l], p.sizes[l + 1]);
            let mut u = vec![0.0; rows * o];
            matmul(
                &mut u,
                rows,
                o,
                o,
                MatRef::rows(&acts[l], rows, i),
                MatRef::rows(w, i, o),
                false,
            );
            if l < last {
                let mut a = vec![0.0; rows * o];
                tanh_rows(&u, o, b, &mut a, o, rows, o);
                acts.push(a);
            } else {
                u.chunks_exact_mut(o)
                    .for_each(|row| row.iter_mut().zip(b).for_each(|(v, bv)| *v += bv));
                acts.push(u);
            }
        }
        acts
    }

    /// The output `[rows, out]`.
    pub(super) fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.forward_tape(x, rows)
            .pop()
            .expect("at least one layer")
    }

    /// Back-propagates ∂L/∂output through a recorded tape into `grads`.
    pub(super) fn backward(
        &self,
        acts: &[Vec<f32>],
        out_bar: &[f32],
        rows: usize,
        grads: &mut DenseParams,
    ) {
        let p = &self.params;
        let mut ubar = out_bar.to_vec();
        for l in (0..p.layers.len()).rev() {
            let (i, o) = (p.sizes[l], p.sizes[l + 1]);
            let (gw, gb) = &mut grads.layers[l];
            matmul(
                gw,
                i,
                o,
                o,
                MatRef::rows(&acts[l], rows, i).t(),
                MatRef::rows(&ubar, rows, o),
                true,
            );
            for r in 0..rows {
                gb.iter_mut()
                    .zip(&ubar[r * o..(r + 1) * o])
                    .for_each(|(g, u)| *g += u);
            }
            if l > 0 {
                let mut abar = vec![0.0; rows * i];
                matmul(
                    &mut abar,
                    rows,
                    i,
                    i,
                    MatRef::rows(&ubar, rows, o),
                    MatRef::rows(&p.layers[l].0, i, o).t(),
                    false,
                );
                let mut next = vec![0.0; rows * i];
                mul_dtanh(&abar, i, &acts[l], i, &mut next, i, rows, i);
                ubar = next;
            }
        }
    }
}

/// The skew parts of raw `[K, n, n]` tensors: Ξₖ − Ξₖᵀ for every k (the assembly's ξ and ζ;
/// the GPU kernel's too).
pub(crate) fn skew(raw: &[f32], k: usize, n: usize) -> Vec<f32> {
    (0..k * n * n)
        .map(|idx| {
            let (kk, i, j) = (idx / (n * n), idx / n % n, idx % n);
            raw[kk * n * n + i * n + j] - raw[kk * n * n + j * n + i]
        })
        .collect()
}

/// The skew tensors ξ, ζ and the per-row assembly of L and M.
#[derive(Clone, Debug)]
pub(super) struct Assembly {
    xi: Vec<f32>,
    zeta: Vec<f32>,
    n: usize,
    k: usize,
}

/// Adjoints of the assembly's inputs.
pub(super) struct AssemblyGrad {
    pub grad_energy: Vec<f32>,
    pub grad_entropy: Vec<f32>,
    pub a: Vec<f32>,
    pub c: Vec<f32>,
    pub xi: Vec<f32>,
    pub zeta: Vec<f32>,
}

impl Assembly {
    /// From the raw Ξ, Z `[K, n, n]`: ξₖ = Ξₖ − Ξₖᵀ, ζₖ = Zₖ − Zₖᵀ.
    pub(super) fn new(p: &GenericParams) -> Self {
        let (k, n) = (p.k, p.dim);
        Self {
            xi: skew(&p.xi, k, n),
            zeta: skew(&p.zeta, k, n),
            n,
            k,
        }
    }

    /// B[p][j] = Σᵢ gᵢ tₚᵢⱼ for one row.
    fn b_rows(&self, g: &[f32], t: &[f32]) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        (0..k * n)
            .map(|idx| {
                (0..n)
                    .map(|i| g[i] * t[(idx / n) * n * n + i * n + idx % n])
                    .sum()
            })
            .collect()
    }

    /// ẋ = L∇E + M∇S for `rows` rows, L and M assembled from the given gradients
    /// (matrix-free: w = B_S∇E, v = (A − Aᵀ)w, ẋ = B_Sᵀv + B_Eᵀ CCᵀ B_E∇S).
    pub(super) fn forward(
        &self,
        ge: &[f32],
        gs: &[f32],
        a: &[f32],
        c: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut out = vec![0.0; rows * n];
        for r in 0..rows {
            let (ge, gs) = (&ge[r * n..(r + 1) * n], &gs[r * n..(r + 1) * n]);
            let (a, c) = (
                &a[r * k * k..(r + 1) * k * k],
                &c[r * k * k..(r + 1) * k * k],
            );
            let (bs, be) = (self.b_rows(gs, &self.xi), self.b_rows(ge, &self.zeta));
            let w: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| bs[p * n + j] * ge[j]).sum())
                .collect();
            let w2: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| be[p * n + j] * gs[j]).sum())
                .collect();
            let v: Vec<f32> = (0..k)
                .map(|p| (0..k).map(|q| (a[p * k + q] - a[q * k + p]) * w[q]).sum())
                .collect();
            let ctw: Vec<f32> = (0..k)
                .map(|q| (0..k).map(|p| c[p * k + q] * w2[p]).sum())
                .collect();
            let v2: Vec<f32> = (0..k)
                .map(|p| (0..k).map(|q| c[p * k + q] * ctw[q]).sum())
                .collect();
            for j in 0..n {
                out[r * n + j] = (0..k)
                    .map(|p| bs[p * n + j] * v[p] + be[p * n + j] * v2[p])
                    .sum();
            }
        }
        out
    }

    /// L and M per row, row-major `[rows, n, n]` each.
    pub(super) fn matrices(
        &self,
        ge: &[f32],
        gs: &[f32],
        a: &[f32],
        c: &[f32],
        rows: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (n, k) = (self.n, self.k);
        let (mut l, mut m) = (vec![0.0; rows * n * n], vec![0.0; rows * n * n]);
        for r in 0..rows {
            let (a, c) = (
                &a[r * k * k..(r + 1) * k * k],
                &c[r * k * k..(r + 1) * k * k],
            );
            let (bs, be) = (
                self.b_rows(&gs[r * n..(r + 1) * n], &self.xi),
                self.b_rows(&ge[r * n..(r + 1) * n], &self.zeta),
            );
            for i in 0..n {
                for j in 0..n {
                    let (mut lij, mut mij) = (0.0, 0.0);
                    for p in 0..k {
                        for q in 0..k {
                            let skew = a[p * k + q] - a[q * k + p];
                            let cc: f32 = (0..k).map(|t| c[p * k + t] * c[q * k + t]).sum();
                            lij += bs[p * n + i] * skew * bs[q * n + j];
                            mij += be[p * n + i] * cc * be[q * n + j];
                        }
                    }
                    l[r * n * n + i * n + j] = lij;
                    m[r * n * n + i * n + j] = mij;
                }
            }
        }
        (l, m)
    }

    /// Reverse mode of [`Assembly::forward`] given ∂L/∂ẋ.
    pub(super) fn backward(
        &self,
        ge: &[f32],
        gs: &[f32],
        a: &[f32],
        c: &[f32],
        xbar: &[f32],
        rows: usize,
    ) -> AssemblyGrad {
        let (n, k) = (self.n, self.k);
        let mut g = AssemblyGrad {
            grad_energy: vec![0.0; rows * n],
            grad_entropy: vec![0.0; rows * n],
            a: vec![0.0; rows * k * k],
            c: vec![0.0; rows * k * k],
            xi: vec![0.0; k * n * n],
            zeta: vec![0.0; k * n * n],
        };
        for r in 0..rows {
            let (ge, gs, o) = (
                &ge[r * n..(r + 1) * n],
                &gs[r * n..(r + 1) * n],
                &xbar[r * n..(r + 1) * n],
            );
            let (a, c) = (
                &a[r * k * k..(r + 1) * k * k],
                &c[r * k * k..(r + 1) * k * k],
            );
            let (bs, be) = (self.b_rows(gs, &self.xi), self.b_rows(ge, &self.zeta));
            let w: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| bs[p * n + j] * ge[j]).sum())
                .collect();
            let w2: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| be[p * n + j] * gs[j]).sum())
                .collect();
            let sk = |p: usize, q: usize| a[p * k + q] - a[q * k + p];
            let cc = |p: usize, q: usize| (0..k).map(|m| c[p * k + m] * c[q * k + m]).sum::<f32>();
            let v: Vec<f32> = (0..k)
                .map(|p| (0..k).map(|q| sk(p, q) * w[q]).sum())
                .collect();
            let v2: Vec<f32> = (0..k)
                .map(|p| (0..k).map(|q| cc(p, q) * w2[q]).sum())
                .collect();
            // ẋⱼ = Σₚ bsₚⱼ vₚ + beₚⱼ v2ₚ
            let vbar: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| o[j] * bs[p * n + j]).sum())
                .collect();
            let v2bar: Vec<f32> = (0..k)
                .map(|p| (0..n).map(|j| o[j] * be[p * n + j]).sum())
                .collect();
            let mut bsbar: Vec<f32> = (0..k * n).map(|idx| o[idx % n] * v[idx / n]).collect();
            let mut bebar: Vec<f32> = (0..k * n).map(|idx| o[idx % n] * v2[idx / n]).collect();
            // v = (A − Aᵀ) w: w̄ = (A − Aᵀ)ᵀ v̄, Ā = v̄wᵀ − (v̄wᵀ)ᵀ.
            let wbar: Vec<f32> = (0..k)
                .map(|q| (0..k).map(|p| sk(p, q) * vbar[p]).sum())
                .collect();
            for p in 0..k {
                for q in 0..k {
                    g.a[r * k * k + p * k + q] += vbar[p] * w[q] - vbar[q] * w[p];
                }
            }
            // v2 = CCᵀ w2: w̄2 = CCᵀ v̄2, C̄ = (v̄2 w2ᵀ + w2 v̄2ᵀ) C.
            let w2bar: Vec<f32> = (0..k)
                .map(|q| (0..k).map(|p| cc(p, q) * v2bar[p]).sum())
                .collect();
            for p in 0..k {
                for m in 0..k {
                    g.c[r * k * k + p * k + m] += (0..k)
                        .map(|q| (v2bar[p] * w2[q] + w2[p] * v2bar[q]) * c[q * k + m])
                        .sum::<f32>();
                }
            }
            // w = B_S ∇E, w2 = B_E ∇S.
            let (gbe, gbs) = (
                &mut g.grad_energy[r * n..(r + 1) * n],
                &mut g.grad_entropy[r * n..(r + 1) * n],
            );
            for p in 0..k {
                for j in 0..n {
                    bsbar[p * n + j] += wbar[p] * ge[j];
                    gbe[j] += wbar[p] * bs[p * n + j];
                    bebar[p * n + j] += w2bar[p] * gs[j];
                    gbs[j] += w2bar[p] * be[p * n + j];
                }
            }
            // B_S[p][j] = Σᵢ ∇Sᵢ ξₚᵢⱼ,  B_E[p][j] = Σᵢ ∇Eᵢ ζₚᵢⱼ.
            for p in 0..k {
                for i in 0..n {
                    for j in 0..n {
                        let idx = p * n * n + i * n + j;
                        gbs[i] += bsbar[p * n + j] * self.xi[idx];
                        g.xi[idx] += gs[i] * bsbar[p * n + j];
                        gbe[i] += bebar[p * n + j] * self.zeta[idx];
                        g.zeta[idx] += ge[i] * bebar[p * n + j];
                    }
                }
            }
        }
        g
    }
}

/// A GENERIC network in CPU layout.
#[derive(Clone, Debug)]
pub(super) struct CpuGeneric {
    pub energy: CpuMlp,
    pub entropy: CpuMlp,
    pub a_net: CpuDense,
    pub c_net: CpuDense,
    pub assembly: Assembly,
    pub n: usize,
}

impl CpuGeneric {
    pub(super) fn new(p: &GenericParams) -> Self {
        Self {
            energy: CpuMlp::from_params(&p.energy),
            entropy: CpuMlp::from_params(&p.entropy),
            a_net: CpuDense::new(&p.a_net),
            c_net: CpuDense::new(&p.c_net),
            assembly: Assembly::new(p),
            n: p.dim,
        }
    }

    /// (∇E, ∇S) per row.
    pub(super) fn gradients(&self, x: &[f32], z: &[f32], rows: usize) -> (Vec<f32>, Vec<f32>) {
        let n = self.n;
        let (mut ge, mut gs) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        self.energy.eval_tile(
            x,
            z,
            rows,
            TileOut {
                value: None,
                grad: Some(&mut ge),
            },
        );
        self.entropy.eval_tile(
            x,
            z,
            rows,
            TileOut {
                value: None,
                grad: Some(&mut gs),
            },
        );
        (ge, gs)
    }

    /// ẋ with L, M assembled at `x` from the given gradients (for the discrete gradient
    /// method, which passes discrete gradients).
    pub(super) fn assemble(&self, x: &[f32], ge: &[f32], gs: &[f32], rows: usize) -> Vec<f32> {
        let a = self.a_net.forward(x, rows);
        let c = self.c_net.forward(x, rows);
        self.assembly.forward(ge, gs, &a, &c, rows)
    }

    pub(super) fn field_tile(&self, x: &[f32], z: &[f32], rows: usize, out: &mut [f32]) {
        let (ge, gs) = self.gradients(x, z, rows);
        out.copy_from_slice(&self.assemble(x, &ge, &gs, rows));
    }
}
