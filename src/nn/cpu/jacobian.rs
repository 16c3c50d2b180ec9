//! Exact Jacobians of the learned field, f_x = ∂f/∂x and f_z = ∂f/∂z per row, from the
//! network's own reverse pass (the one training uses, [`super::backprop`]) — what forward
//! sensitivities S' = f_x S + f_θ of a rollout need (online adaptation,
//! [`crate::meta::observed`]).
//!
//! For a Hamiltonian model f = J∇ₓH, row i of f is (Jᵀeᵢ)·∇ₓH, so one reverse pass through
//! the explicit ∇ₓ with ḡ₀ = Jᵀeᵢ gives row i of both Jacobians at once:
//!
//! ```text
//! eᵢᵀ f_x = (∇²H Jᵀeᵢ)ᵀ        eᵢᵀ f_z = ∂/∂z (Jᵀeᵢ · ∇ₓH)
//! ```
//!
//! n passes per tile (n = 2 … 4), all rows of a tile in each. A separable model
//! H = T(p) + V(q) takes dof passes through each half. GENERIC models (the L∇E + M∇S
//! assembly) have no reverse pass here: [`CpuModel::field_jacobian`] returns `None` and
//! callers fall back to finite differences.

use rayon::prelude::*;

use super::{CpuModel, CpuNet, TILE, backprop::Runs, params::ModelParams, scratch::Buf};

/// Per-row Jacobians of the field, row-major, with the field itself (the recorded forward
/// pass gives ∇ₓH on the way, so f = J∇ₓH comes free).
#[derive(Clone, Debug, PartialEq)]
pub struct FieldJacobian {
    /// f, `[rows, n]`: the same values as [`CpuModel::field`].
    pub f: Vec<f32>,
    /// ∂f/∂x, `[rows, n, n]` (row r, output i, input j at `r·n² + i·n + j`).
    pub fx: Vec<f32>,
    /// ∂f/∂z, `[rows, n, d_z]`.
    pub fz: Vec<f32>,
}

impl CpuModel {
    /// Whether [`CpuModel::field_jacobian`] is available (Hamiltonian models with their
    /// parameters, not folded).
    pub fn has_field_jacobian(&self) -> bool {
        self.params.is_some() && !matches!(self.net, CpuNet::Generic(_))
    }

    /// f_x and f_z of every row of `x` (`[B·n]`, latents `[B·d_z]`); `None` for GENERIC and
    /// folded models (see the module docs).
    pub fn field_jacobian(&self, x: &[f32], z: &[f32]) -> Option<FieldJacobian> {
        let params = self.params.as_deref()?;
        let (n, dz) = (self.dim, self.row_latent);
        let rows = x.len() / n;
        if rows == 0 || matches!(self.net, CpuNet::Generic(_)) {
            return None;
        }
        if rows <= TILE {
            return Some(self.jacobian_tile(params, x, z, rows));
        }
        let tiles: Vec<FieldJacobian> = (0..rows.div_ceil(TILE))
            .into_par_iter()
            .map(|t| {
                let (r0, r1) = (t * TILE, ((t + 1) * TILE).min(rows));
                self.jacobian_tile(params, &x[r0 * n..r1 * n], &z[r0 * dz..r1 * dz], r1 - r0)
            })
            .collect();
        let mut out = FieldJacobian {
            f: Vec::with_capacity(rows * n),
            fx: Vec::with_capacity(rows * n * n),
            fz: Vec::with_capacity(rows * n * dz),
        };
        for tile in tiles {
            out.f.extend(tile.f);
            out.fx.extend(tile.fx);
            out.fz.extend(tile.fz);
        }
        Some(out)
    }

    fn jacobian_tile(
        &self,
        params: &ModelParams,
        x: &[f32],
        z: &[f32],
        rows: usize,
    ) -> FieldJacobian {
        let (n, dz) = (self.dim, self.row_latent);
        let dof = n / 2;
        let mut out = FieldJacobian {
            f: vec![0.0; rows * n],
            fx: vec![0.0; rows * n * n],
            fz: vec![0.0; rows * n * dz],
        };
        // Writes row `i` of both Jacobians from a pass's x̄ (over `cols`, offset `at`) and z̄.
        let mut put = |i: usize, xbar: &[f32], width: usize, at: usize, zbar: &[f32]| {
            for r in 0..rows {
                let fx = &mut out.fx[r * n * n + i * n..r * n * n + (i + 1) * n];
                fx[at..at + width].copy_from_slice(&xbar[r * width..(r + 1) * width]);
                out.fz[r * n * dz + i * dz..r * n * dz + (i + 1) * dz]
                    .copy_from_slice(&zbar[r * dz..(r + 1) * dz]);
            }
        };
        match (&self.net, params) {
            (CpuNet::Hnn(h), ModelParams::Hnn(hp)) => {
                let mut g = Buf::zeroed(rows * n);
                let tape = h.record(x, z, &Runs::singles(rows), rows, &mut g);
                super::j_grad(&g, &mut out.f, dof);
                for i in 0..n {
                    // f_i = (Jᵀeᵢ)·∇H: q̇ᵢ = ∂H/∂p_i, ṗᵢ = −∂H/∂qᵢ.
                    let (k, sign) = if i < dof {
                        (dof + i, 1.0)
                    } else {
                        (i - dof, -1.0)
                    };
                    let mut gbar = Buf::zeroed(rows * n);
                    gbar.chunks_exact_mut(n).for_each(|row| row[k] = sign);
                    let (mut xbar, mut zbar) = (Buf::zeroed(rows * n), Buf::zeroed(rows * dz));
                    h.adjoint(hp, &tape, z, &gbar, None, &mut zbar, Some(&mut xbar));
                    put(i, &xbar, n, 0, &zbar);
                }
            }
            (CpuNet::Separable { t, v }, ModelParams::Separable { t: tp, v: vp }) => {
                let split = |from: usize| -> Vec<f32> {
                    x.chunks_exact(n)
                        .flat_map(|r| r[from..from + dof].to_vec())
                        .collect()
                };
                let (q, p) = (split(0), split(dof));
                let (mut gt, mut gv) = (Buf::zeroed(rows * dof), Buf::zeroed(rows * dof));
                let singles = Runs::singles(rows);
                let tape_t = t.record(&p, z, &singles, rows, &mut gt);
                let tape_v = v.record(&q, z, &singles, rows, &mut gv);
                super::j_separable(&gt, &gv, &mut out.f, dof);
                for i in 0..dof {
                    // q̇ᵢ = ∂T/∂pᵢ depends on p only; ṗᵢ = −∂V/∂qᵢ on q only.
                    for (net, np, tape, sign, row, at) in [
                        (t, tp, &tape_t, 1.0, i, dof),
                        (v, vp, &tape_v, -1.0, dof + i, 0),
                    ] {
                        let mut gbar = Buf::zeroed(rows * dof);
                        gbar.chunks_exact_mut(dof).for_each(|r| r[i] = sign);
                        let (mut xbar, mut zbar) =
                            (Buf::zeroed(rows * dof), Buf::zeroed(rows * dz));
                        net.adjoint(np, tape, z, &gbar, None, &mut zbar, Some(&mut xbar));
                        put(row, &xbar, dof, at, &zbar);
                    }
                }
            }
            _ => unreachable!("GENERIC models are refused above; nets match their params"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::{
        nn::{Architecture, ModelConfig, Modulation},
        systems::Family,
    };

    /// Central differences of the batched field, in f32 (step 1e-2 · (1 + |v|)).
    fn numeric(model: &CpuModel, x: &[f32], z: &[f32]) -> FieldJacobian {
        let n = model.dim();
        let dz = z.len() / (x.len() / n);
        let rows = x.len() / n;
        let field = |x: &[f32], z: &[f32]| {
            let mut f = vec![0.0; x.len()];
            model.field(x, z, &mut f);
            f
        };
        let mut out = FieldJacobian {
            f: field(x, z),
            fx: vec![0.0; rows * n * n],
            fz: vec![0.0; rows * n * dz],
        };
        for r in 0..rows {
            for j in 0..n + dz {
                let (mut xp, mut xm, mut zp, mut zm) =
                    (x.to_vec(), x.to_vec(), z.to_vec(), z.to_vec());
                let h = if j < n {
                    let h = 1e-2 * (1.0 + x[r * n + j].abs());
                    xp[r * n + j] += h;
                    xm[r * n + j] -= h;
                    h
                } else {
                    let h = 1e-2 * (1.0 + z[r * dz + j - n].abs());
                    zp[r * dz + j - n] += h;
                    zm[r * dz + j - n] -= h;
                    h
                };
                let (fp, fm) = (field(&xp, &zp), field(&xm, &zm));
                for i in 0..n {
                    let d = (fp[r * n + i] - fm[r * n + i]) / (2.0 * h);
                    if j < n {
                        out.fx[r * n * n + i * n + j] = d;
                    } else {
                        out.fz[r * n * dz + i * dz + j - n] = d;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn jacobians_match_central_differences_for_every_modulation() {
        for (family, architecture) in [
            (Family::Pendulum, Architecture::Hnn),
            (Family::MassSpring, Architecture::SeparableHnn),
        ] {
            for modulation in [
                Modulation::Shift,
                Modulation::Fw,
                Modulation::Mr { rank: 2 },
                Modulation::Svd { rank: 3 },
            ] {
                let config = ModelConfig::new(family, modulation)
                    .with_architecture(architecture)
                    .with_hidden(vec![24, 24])
                    .with_d_latent(4)
                    .with_seed(7);
                let model = CpuModel::from_model(&config.init::<Flex>(&Default::default()));
                let x = [0.3f32, -0.8, 1.1, 0.4, -0.6, 0.2];
                let z: Vec<f32> = (0..12).map(|k| 0.3 * ((k as f32) * 0.7).sin()).collect();
                let exact = model.field_jacobian(&x, &z).expect("a Hamiltonian model");
                let approx = numeric(&model, &x, &z);
                assert_eq!(
                    exact.f, approx.f,
                    "{family} {modulation:?}: the recorded pass gives the field bit for bit"
                );
                let scale = 1.0
                    + crate::metrics::worst(
                        exact.fx.iter().chain(&exact.fz).map(|v| f64::from(v.abs())),
                    ) as f32;
                for (what, a, b) in [
                    ("f_x", &exact.fx, &approx.fx),
                    ("f_z", &exact.fz, &approx.fz),
                ] {
                    let worst = crate::metrics::worst(
                        a.iter()
                            .zip(b.iter())
                            .map(|(a, b)| f64::from((a - b).abs())),
                    );
                    assert!(
                        worst <= 2e-3 * f64::from(scale),
                        "{family} {modulation:?} {what}: {worst:e} off (scale {scale})"
                    );
                }
            }
        }
    }

    #[test]
    fn generic_and_folded_models_have_no_reverse_jacobian() {
        let config = ModelConfig::new(Family::Dno, Modulation::Shift).with_hidden(vec![8]);
        let model = CpuModel::from_model(&config.init::<Flex>(&Default::default()));
        assert!(model.field_jacobian(&[0.1, 0.2, 0.0], &[0.0; 10]).is_none());
        let config = ModelConfig::new(Family::Pendulum, Modulation::Shift).with_hidden(vec![8]);
        let model = CpuModel::from_model(&config.init::<Flex>(&Default::default()));
        assert!(
            model
                .fold(&[0.0; 10])
                .field_jacobian(&[0.1, 0.2], &[])
                .is_none()
        );
    }
}
