//! Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004, IEEE TIP 13(4), 600).

/// Side of the Gaussian window (docs/protocol.md §6).
pub const SSIM_WINDOW: usize = 7;
/// Standard deviation of the Gaussian window, in pixels (Wang et al.'s 1.5).
pub const SSIM_SIGMA: f64 = 1.5;

/// Mean SSIM of images `a` and `b` (row-major, `width × height`) with data range `range`:
///
/// ```text
/// SSIM(x, y) = (2 μₐ μ_b + C₁)(2 σₐ_b + C₂) / ((μₐ² + μ_b² + C₁)(σₐ² + σ_b² + C₂))
/// C₁ = (0.01 L)²,  C₂ = (0.03 L)²
/// ```
///
/// with local statistics weighted by a normalised 7×7 Gaussian (σ = 1.5, population
/// covariance), evaluated at every position where the window lies inside the image, then
/// averaged. This equals `skimage.metrics.structural_similarity` with those weights on the
/// image interior.
///
/// # Panics
/// If the lengths do not match `width × height` or the image is smaller than the window.
pub fn ssim(a: &[f64], b: &[f64], width: usize, height: usize, range: f64) -> f64 {
    assert!(
        a.len() == width * height && b.len() == width * height,
        "ssim: images of {} and {} pixels for {width}×{height}",
        a.len(),
        b.len()
    );
    assert!(
        width >= SSIM_WINDOW && height >= SSIM_WINDOW,
        "ssim: {width}×{height} is smaller than the window"
    );
    let r = (SSIM_WINDOW / 2) as isize;
    let g: Vec<f64> = (-r..=r)
        .map(|k| (-(k * k) as f64 / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp())
        .collect();
    let sum: f64 = g.iter().sum();
    let g: Vec<f64> = g.iter().map(|v| v / sum).collect();
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let (mut total, mut count) = (0.0, 0usize);
    for y in 0..=height - SSIM_WINDOW {
        for x in 0..=width - SSIM_WINDOW {
            let (mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for (i, gi) in g.iter().enumerate() {
                for (j, gj) in g.iter().enumerate() {
                    let w = gi * gj;
                    let k = (y + i) * width + x + j;
                    let (va, vb) = (a[k], b[k]);
                    ma += w * va;
                    mb += w * vb;
                    aa += w * va * va;
                    bb += w * vb * vb;
                    ab += w * va * vb;
                }
            }
            let (va, vb, cov) = (aa - ma * ma, bb - mb * mb, ab - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            count += 1;
        }
    }
    total / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test images: a smooth ramp and a perturbed copy.
    fn images() -> (Vec<f64>, Vec<f64>) {
        let (w, h) = (12, 10);
        let a: Vec<f64> = (0..w * h)
            .map(|k| ((k % w) as f64 * 0.3).sin() + (k / w) as f64 * 0.1)
            .collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(k, v)| v + 0.2 * ((k * 7 % 5) as f64 - 2.0))
            .collect();
        (a, b)
    }

    #[test]
    fn identical_images_score_one() {
        let (a, _) = images();
        assert!((ssim(&a, &a, 12, 10, 2.0) - 1.0).abs() < 1e-12);
    }

    /// Reference value computed independently with NumPy/SciPy (script in the comment):
    ///
    /// ```text
    /// import numpy as np; from scipy.ndimage import gaussian_filter
    /// w, h = 12, 10; k = np.arange(w*h)
    /// a = np.sin((k % w) * 0.3) + (k // w) * 0.1
    /// b = a + 0.2 * ((k * 7 % 5) - 2.0)
    /// a, b = a.reshape(h, w), b.reshape(h, w)
    /// f = lambda x: gaussian_filter(x, sigma=1.5, truncate=2.0, mode='reflect')  # 7-tap
    /// L = 2.0; C1, C2 = (0.01*L)**2, (0.03*L)**2
    /// ma, mb = f(a), f(b); va, vb, cab = f(a*a)-ma**2, f(b*b)-mb**2, f(a*b)-ma*mb
    /// s = (2*ma*mb+C1)*(2*cab+C2)/((ma**2+mb**2+C1)*(va+vb+C2))
    /// print(s[3:-3, 3:-3].mean())
    /// ```
    #[test]
    fn matches_independent_reference() {
        let (a, b) = images();
        let value = ssim(&a, &b, 12, 10, 2.0);
        assert!(
            (value - REFERENCE).abs() < 1e-12,
            "ssim {value} vs reference {REFERENCE}"
        );
    }

    const REFERENCE: f64 = 0.5943449217032301;
}
