//! Plain-Rust CPU references for the GPU kernels, computed in f64, and the error bound each
//! kernel's f32 result must meet. The bounds follow from WGSL's stated accuracies: `+`, `-`, `*`
//! are correctly rounded (error ≤ u = 2⁻²⁴ relative), `/` is within 2.5 ULP, `sqrt` within
//! 2.5 ULP (inherited from 1/inverseSqrt), `exp(x)` within 3 + 2·|x| ULP, where one ULP of a
//! value is at most 2u of it.

pub mod attention;
pub mod ops;

/// Unit roundoff of f32.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// Absolute slack for values that flush to zero: GPUs may flush f32 subnormals (< 2⁻¹²⁶).
const SUBNORMAL: f64 = 1.2e-38;

/// Higham's γₙ = n·u / (1 − n·u): the relative bound on n successive f32 roundings.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// `y[i, j] = Σₖ x[i, k] · w[j, k]` for w [n, k] and x [m, k]; returns the values and, per output,
/// Σₖ |x[i, k] · w[j, k]| (what the error bound scales with).
pub fn linear(w: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(w.len(), n * k);
    assert_eq!(x.len(), m * k);
    let mut values = Vec::with_capacity(m * n);
    let mut magnitudes = Vec::with_capacity(m * n);
    for xi in x.chunks(k.max(1)).take(m) {
        for wj in w.chunks(k.max(1)).take(n) {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for (&xv, &wv) in xi.iter().zip(wj) {
                let p = f64::from(xv) * f64::from(wv);
                s += p;
                a += p.abs();
            }
            values.push(s);
            magnitudes.push(a);
        }
    }
    (values, magnitudes)
}

/// Error bound of an f32 dot product of length k, in any summation order, with or without fused
/// multiply-adds: every product and partial sum is rounded at most k + 1 times, so
/// |ŷ − y| ≤ γ_{k+1} · Σ|xᵢwᵢ| (Higham, Accuracy and Stability, §3.1), plus subnormal flushes.
pub fn linear_tolerance(k: usize, magnitude: f64) -> f64 {
    gamma(k + 1) * magnitude + (k as f64 + 1.0) * SUBNORMAL
}

/// A linear layer's bound `tolerance` (for its inputs as given) widened for the prefill GEMM's
/// f16 tiles, which round each activation and each weight once to f16 before the f32 product
/// of the two: WGSL rounds a conversion to either neighbour, so by at most one f16 ULP, 2⁻¹⁰
/// of a normal value and 2⁻²⁴ absolute below f16's normal range. The kernel first multiplies
/// each activation row by a power of two that puts its largest |x| (`x_max`) in [2¹⁴, 2¹⁵), so an
/// activation errs by at most 2⁻¹⁰|x| + x_max·2⁻³⁸, a weight by 2⁻¹⁰|w| + 2⁻²⁴. Each of the k
/// products then errs by at most (2r + r²)|xw| + (1 + r)(2⁻²⁴·x_max + 2⁻³⁸·x_max·w_max) +
/// 2⁻⁶²·x_max with r = 2⁻¹⁰, and the sum's own rounding (the `tolerance`) grows with the
/// magnitudes of the rounded products, by at most the same factor.
pub fn f16_tiles_tolerance(
    k: usize,
    tolerance: f64,
    magnitude: f64,
    x_max: f64,
    w_max: f64,
) -> f64 {
    let r = 2f64.powi(-10);
    let rel = 2.0 * r + r * r;
    let abs = k as f64
        * ((1.0 + r) * x_max * (2f64.powi(-24) + w_max * 2f64.powi(-38)) + x_max * 2f64.powi(-62));
    tolerance * (1.0 + rel) + rel * magnitude + 2.0 * abs
}

/// RMSNorm over rows of `cols`: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rmsnorm(x: &[f32], cols: usize, weight: &[f32], eps: f32) -> Vec<f64> {
    assert_eq!(weight.len(), cols);
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols.max(1)) {
        let ss: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let scale = 1.0 / (ss / cols as f64 + f64::from(eps)).sqrt();
        out.extend(
            row.iter()
                .zip(weight)
                .map(|(&v, &g)| f64::from(v) * scale * f64::from(g)),
        );
    }
    out
}

/// Error bound of one RMSNorm output. The sum of squares has only non-negative terms, so its
/// relative error is ≤ γ_cols; the square root halves that. Then: the mean's division (u), the
/// eps add (u), sqrt (2.5 ULP = 5u), the reciprocal (5u) and the two products (2u): 13u in all,
/// bounded by 16u.
pub fn rmsnorm_tolerance(cols: usize, reference: f64) -> f64 {
    reference.abs() * (gamma(cols) / 2.0 + 16.0 * U) + SUBNORMAL
}

/// A linear layer with an RMSNorm prologue: `rmsnorm(x, weight, eps) · Wᵀ` (x [m, k], W [n, k],
/// weight [k]), normalised exactly; returns the values and, per output, Σₖ |x̃[i, k] · w[j, k]|
/// with x̃ the exactly normalised x (what [`rmsnorm_linear_tolerance`] scales with).
pub fn rmsnorm_linear(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    weight: &[f32],
    eps: f32,
) -> (Vec<f64>, Vec<f64>) {
    let normed = rmsnorm(&x[..m * k], k, weight, eps);
    let mut values = Vec::with_capacity(m * n);
    let mut magnitudes = Vec::with_capacity(m * n);
    for xi in normed.chunks(k.max(1)).take(m) {
        for wj in w.chunks(k.max(1)).take(n) {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for (&xv, &wv) in xi.iter().zip(wj) {
                let p = xv * f64::from(wv);
                s += p;
                a += p.abs();
            }
            values.push(s);
            magnitudes.push(a);
        }
    }
    (values, magnitudes)
}

/// Error bound of one output of a linear layer of depth k with an RMSNorm prologue, whose sum has
/// `terms` terms in all (k, plus a bias and a residual when added): `normed` is
/// Σ|x̃ᵢwᵢ| (see [`rmsnorm_linear`]), `other` the magnitude of the other terms.
///
/// The kernel computes ŝ·Σ fl(xᵢ·gᵢ)·wᵢ with ŝ = 1/sqrt(Σx²/k + eps) as in RMSNorm: ŝ errs by
/// ≤ γ_k/2 + 12u relative (see [`rmsnorm_tolerance`]), x·g and the final product by u each, so
/// with ρ = γ_k/2 + 16u every normalised term is within ρ of exact, and the sum of all `terms`
/// terms adds γ_{terms+1} of their computed magnitudes, so the error is at most
/// (γ_{terms+1}·(1 + ρ) + ρ)·normed plus γ_{terms+1}·other, plus subnormal flushes. The same bound
/// holds for normalising first (RMSNorm, then a linear layer on the rounded result).
pub fn rmsnorm_linear_tolerance(k: usize, terms: usize, normed: f64, other: f64) -> f64 {
    let rho = gamma(k) / 2.0 + 16.0 * U;
    let g = gamma(terms + 1);
    (g * (1.0 + rho) + rho) * normed + g * other + 2.0 * (terms as f64 + 1.0) * SUBNORMAL
}

/// SwiGLU: `silu(gate) * up` with silu(g) = g / (1 + e⁻ᵍ).
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f64> {
    assert_eq!(gate.len(), up.len());
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = f64::from(g);
            g / (1.0 + (-g).exp()) * f64::from(u)
        })
        .collect()
}

/// Error bound of one SwiGLU output: exp(−g) within (3 + 2|g|) ULP = (6 + 4|g|)u relative, which
/// 1 + e⁻ᵍ passes on at most undiminished, plus its own rounding (u); the division (5u) and the
/// product (u): (13 + 4|g|)u, bounded by (16 + 4|g|)u.
pub fn swiglu_tolerance(gate: f32, reference: f64) -> f64 {
    reference.abs() * (16.0 + 4.0 * f64::from(gate).abs()) * U + SUBNORMAL
}

pub use crate::rng::Rng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_by_hand() {
        // W = [[1, 2], [3, -4]], x = [[1, 1], [2, 0.5]].
        let (y, mag) = linear(&[1.0, 2.0, 3.0, -4.0], 2, 2, &[1.0, 1.0, 2.0, 0.5], 2);
        assert_eq!(y, vec![3.0, -1.0, 3.0, 4.0]);
        assert_eq!(mag, vec![3.0, 7.0, 3.0, 8.0]);
    }

    #[test]
    fn rmsnorm_by_hand() {
        // mean(3², 4²) = 12.5; 3 / sqrt(12.5) = 0.848528...
        let y = rmsnorm(&[3.0, 4.0], 2, &[1.0, 2.0], 0.0);
        assert!((y[0] - 3.0 / 12.5f64.sqrt()).abs() < 1e-15);
        assert!((y[1] - 8.0 / 12.5f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn rmsnorm_linear_is_rmsnorm_then_linear() {
        let (x, g, w) = (
            [3.0f32, 4.0, -1.0, 2.0],
            [1.0f32, 2.0],
            [1.0f32, -1.0, 0.5, 2.0],
        );
        let (y, mag) = rmsnorm_linear(&w, 2, 2, &x, 2, &g, 1e-5);
        let h = rmsnorm(&x, 2, &g, 1e-5);
        for (i, (&yi, &ai)) in y.iter().zip(&mag).enumerate() {
            let (r, j) = (i / 2, i % 2);
            let (a, b) = (
                h[2 * r] * f64::from(w[2 * j]),
                h[2 * r + 1] * f64::from(w[2 * j + 1]),
            );
            assert!((yi - (a + b)).abs() < 1e-12);
            assert!((ai - (a.abs() + b.abs())).abs() < 1e-12);
        }
        assert!(rmsnorm_linear_tolerance(100, 102, 1.0, 1.0) > linear_tolerance(102, 2.0));
    }

    #[test]
    fn swiglu_limits() {
        let y = swiglu(&[0.0, 50.0, -50.0], &[1.0, 2.0, 3.0]);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 100.0).abs() < 1e-12);
        assert!(y[2].abs() < 1e-15);
    }

    #[test]
    fn gamma_grows_linearly_for_small_n() {
        assert!((gamma(1000) / (1000.0 * U) - 1.0).abs() < 1e-4);
        assert!(linear_tolerance(10, 1.0) > linear_tolerance(1, 1.0));
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..1000 {
            let v = a.uniform(-2.0, 3.0);
            assert_eq!(v, b.uniform(-2.0, 3.0));
            assert!((-2.0..3.0).contains(&v));
            let r = a.range(5, 9);
            assert_eq!(r, b.range(5, 9));
            assert!((5..=9).contains(&r));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
