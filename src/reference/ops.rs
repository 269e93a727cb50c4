//! CPU references (f64) for LayerNorm, GELU, residual addition and top-k/argmax, with the error
//! bound each kernel's f32 result must meet, derived as in the parent module from WGSL's stated
//! accuracies: `+ − ×` and `fma` correctly rounded (u = 2⁻²⁴ relative), `/` within 2.5 ULP (5u),
//! `inverseSqrt` within 2 ULP (4u), `exp(x)` within 3 + 2|x| ULP ((6 + 4|x|)u). Top-k involves
//! no arithmetic and must match exactly. [`check`] runs the GPU kernels against these, natively
//! and in the browser.

use std::cmp::Ordering;

use super::{gamma, SUBNORMAL, U};

/// LayerNorm over rows of `cols`: `(x − μ) / sqrt(σ² + eps) · weight (+ bias)`, with μ and the
/// population variance σ² of the row.
pub fn layernorm(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) -> Vec<f64> {
    assert_eq!(weight.len(), cols);
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols.max(1)) {
        let s = RowStats::of(row, eps);
        for (c, &v) in row.iter().enumerate() {
            let b = bias.map_or(0.0, |b| f64::from(b[c]));
            out.push((f64::from(v) - s.mean) * s.inv_std * f64::from(weight[c]) + b);
        }
    }
    out
}

struct RowStats {
    mean: f64,
    /// 1 / sqrt(σ² + eps).
    inv_std: f64,
    /// sqrt(σ² + eps).
    std: f64,
    /// Σ|x| / n.
    mean_abs: f64,
}

impl RowStats {
    fn of(row: &[f32], eps: f32) -> Self {
        let n = row.len() as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = (var + f64::from(eps)).sqrt();
        RowStats {
            mean,
            inv_std: 1.0 / std,
            std,
            mean_abs: row.iter().map(|&v| f64::from(v).abs()).sum::<f64>() / n,
        }
    }
}

/// Per-element error bounds of LayerNorm (same arguments as [`layernorm`]); `f64::INFINITY` for a
/// row so ill-conditioned (|mean| ≫ std, or std ≈ 0 with eps = 0) that f32 cannot normalise it.
///
/// Derivation, for a row of n values with r = 1/sqrt(σ² + eps) = 1/s and dᵢ = xᵢ − μ:
/// 1. Mean: the f32 sum in any order errs by ≤ γₙ₋₁·Σ|x|, the division by n adds 5u:
///    δ = |μ̂ − μ| ≤ γₙ₊₅·Σ|x|/n.
/// 2. Deviations d̂ᵢ = fl(xᵢ − μ̂): |d̂ᵢ − dᵢ| ≤ eᵢ = δ + u(|dᵢ| + δ).
/// 3. Variance: ‖d̂‖/√n differs from σ by ≤ E = sqrt(Σeᵢ²/n) (triangle inequality), and so does
///    sqrt(‖d̂‖²/n + eps) from s. The sum of the non-negative squares errs by ≤ γₙ relative, the
///    division 5u and the eps add u: γₙ₊₆ on the argument of inverseSqrt, ≤ 0.51·γₙ₊₆ after it,
///    then inverseSqrt's own 4u. So r̂ = r(1 + ρ) with ρ ≤ E/(s − E) + (1 + E/(s − E))·ρ₁,
///    ρ₁ = 0.51·γₙ₊₆ + 4.01u (requires E < s).
/// 4. Output: two roundings (d̂·r̂, then ·w, or the fma with the bias):
///    |ŷ − y| ≤ |w|·r·[(eᵢ + 2.01u(|dᵢ| + eᵢ))(1 + ρ) + |dᵢ|ρ](1 + u) + u|y|.
pub fn layernorm_tolerances(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
) -> Vec<f64> {
    let reference = layernorm(x, cols, weight, bias, eps);
    let n = cols;
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(cols.max(1)).enumerate() {
        let s = RowStats::of(row, eps);
        let delta = gamma(n + 5) * s.mean_abs;
        let e = |v: f32| {
            let d = (f64::from(v) - s.mean).abs();
            delta + U * (d + delta)
        };
        let big_e = (row.iter().map(|&v| e(v).powi(2)).sum::<f64>() / n as f64).sqrt();
        let rho1 = 0.51 * gamma(n + 6) + 4.01 * U;
        let rho = if big_e < s.std {
            let q = big_e / (s.std - big_e);
            q + (1.0 + q) * rho1
        } else {
            f64::INFINITY
        };
        for (c, &v) in row.iter().enumerate() {
            let d = (f64::from(v) - s.mean).abs();
            let ei = e(v);
            let y = reference[r * cols + c];
            if rho.is_infinite() {
                out.push(f64::INFINITY);
                continue;
            }
            let core = (ei + 2.01 * U * (d + ei)) * (1.0 + rho) + d * rho;
            out.push(
                f64::from(weight[c]).abs() * s.inv_std * core * (1.0 + U) + U * y.abs() + SUBNORMAL,
            );
        }
    }
    out
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// t = √(2/π)·(x + 0.044715·x³), the argument of tanh in the GELU approximation.
fn gelu_t(x: f64) -> f64 {
    SQRT_2_OVER_PI * (x + GELU_C * x * x * x)
}

/// GELU, tanh approximation: 0.5·x·(1 + tanh(t)), t = √(2/π)·(x + 0.044715·x³). Evaluated as
/// x / (1 + e^(−2t)), equal in real arithmetic, because 1 + tanh(t) cancels in f64 too for
/// t ≪ 0 and would leave the reference less accurate than the kernel.
pub fn gelu(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            v / (1.0 + (-2.0 * gelu_t(v)).exp())
        })
        .collect()
}

/// Error bound of one GELU output, for the kernel's x·σ(2t):
/// - t̂ carries 7 roundings (x², x³, the two constants, ·0.044715, +x — same signs, no
///   cancellation — and ·√(2/π)): |t̂ − t| ≤ γ₇|t|, which moves σ(2t) by ≤ 2|Δt| relative;
/// - z = exp(−2|t|) within (6 + 8|t|)u; σ = 1/(1 + z) or z/(1 + z) passes on ≤ 1.5× that, plus
///   1 + z (u) and the division (5u); the final product u:
///
///   |ŷ − y| ≤ |y|·(17 + 27|t|)u (rounded up), plus (1 + |x|)·2⁻¹²⁶ for results and for z in the
///   subnormal range, which may flush to zero. The kernel clamps x to ±20 before cubing; beyond,
///   σ(2t) is 0 or 1 to well below this bound.
pub fn gelu_tolerance(x: f32, reference: f64) -> f64 {
    let x = f64::from(x);
    let t = gelu_t(x).abs();
    reference.abs() * (17.0 + 27.0 * t) * U + (1.0 + x.abs()) * SUBNORMAL
}

/// erfc(z) for z ≥ 0 in f64, to about 1e-15 relative: 1 − erf(z) from erf's Taylor series below
/// 2 (erfc ≥ 0.0046 there, so the subtraction loses at most 3 digits), the continued fraction
/// erfc(z) = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + …)))) from 2 on.
pub fn erfc(z: f64) -> f64 {
    const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    if z < 2.0 {
        // erf(z) = 2/√π Σ (−1)ⁿ z^(2n+1) / (n! (2n+1)).
        let (mut term, mut sum) = (z, z);
        for n in 1..200 {
            term *= -z * z / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-18 * sum.abs() {
                break;
            }
        }
        1.0 - FRAC_2_SQRT_PI * sum
    } else {
        let mut f = z;
        for k in (1..=120).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        (-z * z).exp() * FRAC_2_SQRT_PI / (2.0 * f)
    }
}

/// The exact GELU: x·Φ(x) = 0.5·x·erfc(−x/√2).
pub fn gelu_erf(x: &[f32]) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            let half = 0.5 * erfc(v.abs() * std::f64::consts::FRAC_1_SQRT_2);
            v * if v >= 0.0 { 1.0 - half } else { half }
        })
        .collect()
}

/// Error bound of one exact-GELU output, for the kernel's x·Φ(x) with Φ from erfc(z), z = |x|/√2
/// (act.wgsl): erfc's fit has a fractional error below 1.2e-7; evaluating it in f32 adds t = 1/(1 +
/// z/2) (2 roundings), the 10-term Horner sum (each term below 1.5, so ≤ 20u absolute), z from
/// |x|·(1/√2) and z·z (3u·z² absolute) and the subtraction from P (u·(z² + 2)); exp turns that
/// absolute error of its argument into a relative one and adds its own 3 + 2|arg| ulp (WGSL's
/// bound), so about (40 + 8z²)u relative on erfc(z), and |x|·erfc(z)/2 · (1.2e-7 + (40 + 8z²)u) on
/// the output; then 1 − erfc/2 and the product with x, 3u relative; and results or exp values in
/// the subnormal range may flush to zero.
pub fn gelu_erf_tolerance(x: f32, reference: f64) -> f64 {
    let x = f64::from(x);
    let z = x.abs().min(20.0) * std::f64::consts::FRAC_1_SQRT_2;
    let half_erfc = 0.5 * erfc(z);
    x.abs() * half_erfc * (1.2e-7 + (40.0 + 8.0 * z * z) * U)
        + reference.abs() * 3.0 * U
        + (1.0 + x.abs()) * SUBNORMAL
}

/// `a + b`, element-wise.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f64> {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) + f64::from(b))
        .collect()
}

/// Error bound of an f32 addition: one correct rounding (u relative), plus subnormal flushes of
/// the two inputs and the result.
pub fn add_tolerance(reference: f64) -> f64 {
    reference.abs() * U + 3.0 * SUBNORMAL
}

/// The order the top-k kernels sort by: NaN counts as −inf, −0 equals +0 (IEEE comparison).
fn canonical(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// Descending by value, ties to the lower index: a total order on (value, index).
fn rank(row: &[f32], a: u32, b: u32) -> Ordering {
    let (va, vb) = (canonical(row[a as usize]), canonical(row[b as usize]));
    vb.partial_cmp(&va)
        .expect("canonical values are never NaN")
        .then(a.cmp(&b))
}

/// Top-k of every row of `cols` logits: (index, value) pairs, best first. Values are the logits'
/// own bits (so −0 stays −0), except NaN, which is reported as −inf. Needs 1 ≤ k ≤ cols.
pub fn topk(logits: &[f32], cols: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    assert!(k >= 1 && k <= cols, "1 <= k = {k} <= cols = {cols}");
    logits
        .chunks(cols)
        .map(|row| {
            let mut idx: Vec<u32> = (0..cols as u32).collect();
            if k < cols {
                idx.select_nth_unstable_by(k - 1, |&a, &b| rank(row, a, b));
                idx.truncate(k);
            }
            idx.sort_unstable_by(|&a, &b| rank(row, a, b));
            idx.into_iter()
                .map(|i| (i, canonical(row[i as usize])))
                .collect()
        })
        .collect()
}

/// Argmax of every row: [`topk`] with k = 1.
pub fn argmax(logits: &[f32], cols: usize) -> Vec<(u32, f32)> {
    topk(logits, cols, 1).into_iter().map(|r| r[0]).collect()
}

/// Per row: the max M of its logits (NaN, −inf and f32's lowest value left out) and
/// Σ exp(x − M), each term at x = M counted as 1 (so +inf logits count one each); a row with
/// nothing left gives (f32::MIN, 0). What [`crate::kernels::logit_stats`] computes, in f64.
pub fn logit_stats(logits: &[f32], cols: usize) -> Vec<(f32, f64)> {
    logits
        .chunks(cols)
        .map(|row| {
            let live = || row.iter().copied().filter(|x| !x.is_nan() && *x > f32::MIN);
            let max = live().fold(f32::MIN, f32::max);
            let sum = live()
                .map(|x| {
                    if x == max {
                        1.0
                    } else {
                        (f64::from(x) - f64::from(max)).exp()
                    }
                })
                .sum();
            (max, sum)
        })
        .collect()
}

/// A logit after the penalties for a token seen `count` times, as llama.cpp (and
/// [`crate::sample::Sampler::penalize`]) computes it in f32.
pub fn penalize(logit: f32, count: u32, repetition: f32, presence: f32, frequency: f32) -> f32 {
    let l = if logit <= 0.0 {
        logit * repetition
    } else {
        logit / repetition
    };
    l - (count as f32 * frequency + presence)
}

/// Runs the kernels of this module on the GPU against their references: shared by the native
/// tests (tests/gpu_ops.rs) and the browser tests (tests/web_ops.rs).
pub mod check {
    use std::fmt;

    use super::*;
    use crate::error::Result;
    use crate::gpu::{DType, GpuContext, GpuTensor};
    use crate::kernels;
    use crate::reference::Rng;

    /// How top-k test logits are drawn.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Logits {
        /// Uniform in [−30, 30): distinct values.
        Uniform,
        /// Eight distinct values: ties everywhere, decided by index.
        Ties,
        /// NaNs of several payloads and signs, ±inf, ±0, subnormals and tied small integers.
        Special,
        /// Increasing with the index: the best are at the end of the row.
        Ascending,
        /// Every value equal: −inf on even rows, NaN on odd rows.
        Flat,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum OpCase {
        /// Rows with centres up to `offset` times their spread away from zero.
        LayerNorm {
            rows: usize,
            cols: usize,
            eps: f32,
            bias: bool,
            offset: f32,
        },
        /// GELU: the tanh approximation, or the exact (erf) one.
        Gelu {
            len: usize,
            exact: bool,
        },
        Add {
            len: usize,
            in_place: bool,
        },
        TopK {
            rows: usize,
            vocab: usize,
            k: usize,
            logits: Logits,
        },
        Argmax {
            rows: usize,
            vocab: usize,
            logits: Logits,
        },
        /// Per-row max and Σ exp(x − max) of `rows × vocab` logits.
        LogitStats {
            rows: usize,
            vocab: usize,
            logits: Logits,
        },
        /// The penalties of `window` distinct tokens applied to one row of `rows × vocab`.
        Penalize {
            rows: usize,
            vocab: usize,
            window: usize,
        },
        /// A logit bias on `biased` distinct tokens, then a grammar's mask allowing about half
        /// of the tokens, applied to one row of `rows × vocab`.
        BiasAndMask {
            rows: usize,
            vocab: usize,
            biased: usize,
        },
        /// `draws` Gumbel-max draws from one row of `vocab` logits at `temperature` (the same
        /// row repeated, one draw per row): each must be the best perturbed logit, and the
        /// frequencies must follow the softmax.
        Gumbel {
            draws: usize,
            vocab: usize,
            temperature: f32,
        },
        /// The nucleus of row 1 of two rows of `vocab` logits uniform in [−spread, spread)
        /// (rounded to eight levels with `ties`) under top-k, top-p and min-p: the tokens the GPU
        /// keeps must be the sorted row's (up to f32 rounding at top-p's boundary), and `draws`
        /// draws at `temperature` must each be a kept token and, together, follow the kept
        /// tokens' softmax.
        Nucleus {
            vocab: usize,
            spread: f32,
            ties: bool,
            top_k: usize,
            top_p: f32,
            min_p: f32,
            temperature: f32,
            draws: usize,
        },
    }

    impl fmt::Display for OpCase {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match *self {
                OpCase::LayerNorm {
                    rows,
                    cols,
                    eps,
                    bias,
                    offset,
                } => write!(
                    f,
                    "layernorm [{rows}×{cols}] eps {eps:e}{} offset {offset}",
                    if bias { " with bias" } else { "" }
                ),
                OpCase::Gelu { len, exact } => {
                    write!(f, "gelu{} [{len}]", if exact { " (erf)" } else { "" })
                }
                OpCase::Add { len, in_place } => {
                    write!(f, "add{} [{len}]", if in_place { " in place" } else { "" })
                }
                OpCase::TopK {
                    rows,
                    vocab,
                    k,
                    logits,
                } => write!(f, "top-{k} of [{rows}×{vocab}] {logits:?} logits"),
                OpCase::Argmax {
                    rows,
                    vocab,
                    logits,
                } => write!(f, "argmax of [{rows}×{vocab}] {logits:?} logits"),
                OpCase::LogitStats {
                    rows,
                    vocab,
                    logits,
                } => write!(
                    f,
                    "softmax statistics of [{rows}×{vocab}] {logits:?} logits"
                ),
                OpCase::Penalize {
                    rows,
                    vocab,
                    window,
                } => write!(f, "penalties of {window} tokens on [{rows}×{vocab}] logits"),
                OpCase::BiasAndMask {
                    rows,
                    vocab,
                    biased,
                } => write!(
                    f,
                    "a bias on {biased} tokens and a mask on [{rows}×{vocab}] logits"
                ),
                OpCase::Gumbel {
                    draws,
                    vocab,
                    temperature,
                } => write!(
                    f,
                    "{draws} Gumbel draws from {vocab} logits at temperature {temperature}"
                ),
                OpCase::Nucleus {
                    vocab,
                    spread,
                    ties,
                    top_k,
                    top_p,
                    min_p,
                    temperature,
                    draws,
                } => write!(
                    f,
                    "{draws} draws at temperature {temperature} from the top-k {top_k} / top-p \
                     {top_p} / min-p {min_p} nucleus of {vocab} logits in ±{spread}{}",
                    if ties { " with ties" } else { "" }
                ),
            }
        }
    }

    /// The comparison of one kernel run with its reference.
    #[derive(Clone, Debug)]
    pub struct OpOutcome {
        pub case: OpCase,
        pub values: usize,
        /// Largest |gpu − reference| (0 for top-k, which must be exact).
        pub max_abs_err: f64,
        /// Largest |gpu − reference| / tolerance; infinite for any top-k difference.
        pub worst_ratio: f64,
        /// What went wrong worst, for the failure message.
        pub detail: Option<String>,
        /// Dispatches the kernel took.
        pub dispatches: usize,
    }

    impl OpOutcome {
        pub fn passed(&self) -> bool {
            self.worst_ratio <= 1.0
        }
    }

    impl fmt::Display for OpOutcome {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "{} {}: {} values, {} dispatches, max |err| {:.2e}, {:.1}% of tolerance",
                if self.passed() { "ok  " } else { "FAIL" },
                self.case,
                self.values,
                self.dispatches,
                self.max_abs_err,
                self.worst_ratio * 100.0
            )?;
            if let (false, Some(d)) = (self.passed(), &self.detail) {
                write!(f, " ({d})")?;
            }
            Ok(())
        }
    }

    fn compare(
        case: OpCase,
        dispatches: usize,
        gpu: &[f32],
        reference: &[f64],
        tolerance: impl Fn(usize) -> f64,
    ) -> OpOutcome {
        let mut out = OpOutcome {
            case,
            values: gpu.len(),
            max_abs_err: 0.0,
            worst_ratio: 0.0,
            detail: None,
            dispatches,
        };
        if gpu.len() != reference.len() {
            out.worst_ratio = f64::INFINITY;
            out.detail = Some(format!(
                "{} values, expected {}",
                gpu.len(),
                reference.len()
            ));
            return out;
        }
        for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
            let err = (f64::from(g) - r).abs();
            // NaN compares false everywhere, and an unbounded tolerance would hide anything:
            // both count as infinitely wrong.
            let tol = tolerance(i);
            let (err, ratio) = if err.is_nan() || !tol.is_finite() {
                (f64::INFINITY, f64::INFINITY)
            } else {
                (err, err / tol)
            };
            out.max_abs_err = out.max_abs_err.max(err);
            if ratio > out.worst_ratio || out.detail.is_none() {
                out.worst_ratio = out.worst_ratio.max(ratio);
                out.detail = Some(format!(
                    "element {i}: gpu {g:e}, reference {r:e}, tolerance {:e}",
                    tolerance(i)
                ));
            }
        }
        out
    }

    /// Logits of `rows × vocab` drawn as `kind` says.
    pub fn logits(rng: &mut Rng, rows: usize, vocab: usize, kind: Logits) -> Vec<f32> {
        const NANS: [u32; 4] = [0x7fc0_0000, 0xffc0_0000, 0x7f80_0001, 0xffff_ffff];
        let mut out = Vec::with_capacity(rows * vocab);
        for r in 0..rows {
            for i in 0..vocab {
                out.push(match kind {
                    Logits::Uniform => rng.uniform(-30.0, 30.0),
                    Logits::Ties => rng.range(0, 7) as f32 - 3.0,
                    Logits::Ascending => i as f32 / vocab as f32 - 0.5,
                    Logits::Flat if r % 2 == 0 => f32::NEG_INFINITY,
                    Logits::Flat => f32::from_bits(NANS[r / 2 % 4]),
                    Logits::Special => {
                        let u = rng.unit();
                        if u < 0.25 {
                            f32::from_bits(NANS[rng.range(0, 3)])
                        } else if u < 0.45 {
                            f32::NEG_INFINITY
                        } else if u < 0.455 {
                            f32::INFINITY
                        } else if u < 0.5 {
                            if rng.unit() < 0.5 {
                                0.0
                            } else {
                                -0.0
                            }
                        } else if u < 0.55 {
                            // Subnormals, which a GPU's float comparison may flush to zero.
                            f32::from_bits(rng.range(1, 0x7f_ffff) as u32)
                                * if rng.unit() < 0.5 { 1.0 } else { -1.0 }
                        } else if u < 0.56 {
                            f32::MAX
                        } else {
                            rng.range(0, 4) as f32 - 2.0
                        }
                    }
                });
            }
        }
        out
    }

    /// GELU inputs: uniform in [−12, 12), with every 61st value from a list of hard ones.
    fn gelu_inputs(rng: &mut Rng, len: usize) -> Vec<f32> {
        const HARD: [f32; 16] = [
            0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 25.0, -25.0, -9.9, -10.5, 1e4, -1e4, 1e30,
            -1e30, 3.0e38, -3.0e38,
        ];
        (0..len)
            .map(|i| {
                if i % 61 == 60 {
                    HARD[rng.range(0, HARD.len() - 1)]
                } else {
                    rng.uniform(-12.0, 12.0)
                }
            })
            .collect()
    }

    async fn read(ctx: &GpuContext, d: &crate::gpu::Dispatch, t: &GpuTensor) -> Result<Vec<f32>> {
        let mut rec = ctx.recorder();
        rec.dispatch(d);
        let slot = rec.read(t);
        rec.submit_and_read().await?.f32(slot)
    }

    /// Runs one case with data drawn from `seed`, on the GPU and on the CPU, and compares.
    pub async fn run(ctx: &GpuContext, case: OpCase, seed: u64) -> Result<OpOutcome> {
        let mut rng = Rng::new(seed);
        match case {
            OpCase::LayerNorm {
                rows,
                cols,
                eps,
                bias,
                offset,
            } => {
                let mut x = Vec::with_capacity(rows * cols);
                for _ in 0..rows {
                    let s = rng.uniform(0.01, 20.0);
                    let c = s * offset * rng.uniform(-1.0, 1.0);
                    x.extend((0..cols).map(|_| c + rng.uniform(-s, s)));
                }
                let w = rng.vec(cols, -2.0, 2.0);
                let b = rng.vec(cols, -1.0, 1.0);
                let b = bias.then_some(b.as_slice());
                let xt = ctx.upload_f32("x", &[rows, cols], &x)?;
                let wt = ctx.upload_f32("weight", &[cols], &w)?;
                let bt = b.map(|b| ctx.upload_f32("bias", &[cols], b)).transpose()?;
                let yt = ctx.zeros("y", &[rows, cols], DType::F32)?;
                let d = kernels::layernorm(ctx, &xt, &wt, bt.as_ref(), eps, &yt).await?;
                let gpu = read(ctx, &d, &yt).await?;
                let want = layernorm(&x, cols, &w, b, eps);
                let tol = layernorm_tolerances(&x, cols, &w, b, eps);
                Ok(compare(case, 1, &gpu, &want, |i| tol[i]))
            }
            OpCase::Gelu { len, exact } => {
                let x = gelu_inputs(&mut rng, len);
                let xt = ctx.upload_f32("x", &[len], &x)?;
                let ot = ctx.zeros("out", &[len], DType::F32)?;
                let d = if exact {
                    kernels::gelu_erf(ctx, &xt, &ot).await?
                } else {
                    kernels::gelu(ctx, &xt, &ot).await?
                };
                let gpu = read(ctx, &d, &ot).await?;
                if exact {
                    let want = gelu_erf(&x);
                    Ok(compare(case, 1, &gpu, &want, |i| {
                        gelu_erf_tolerance(x[i], want[i])
                    }))
                } else {
                    let want = gelu(&x);
                    Ok(compare(case, 1, &gpu, &want, |i| {
                        gelu_tolerance(x[i], want[i])
                    }))
                }
            }
            OpCase::Add { len, in_place } => {
                let a = rng.vec(len, -10.0, 10.0);
                let b = rng.vec(len, -10.0, 10.0);
                let at = ctx.upload_f32("a", &[len], &a)?;
                let bt = ctx.upload_f32("b", &[len], &b)?;
                let (d, ot) = if in_place {
                    (kernels::add_in_place(ctx, &at, &bt).await?, at)
                } else {
                    let ot = ctx.zeros("out", &[len], DType::F32)?;
                    (kernels::add(ctx, &at, &bt, &ot).await?, ot)
                };
                let gpu = read(ctx, &d, &ot).await?;
                let want = add(&a, &b);
                Ok(compare(case, 1, &gpu, &want, |i| add_tolerance(want[i])))
            }
            OpCase::TopK {
                rows,
                vocab,
                k,
                logits: kind,
            } => run_topk(ctx, case, &mut rng, rows, vocab, k, kind).await,
            OpCase::Argmax {
                rows,
                vocab,
                logits: kind,
            } => run_topk(ctx, case, &mut rng, rows, vocab, 1, kind).await,
            OpCase::LogitStats {
                rows,
                vocab,
                logits: kind,
            } => {
                let x = logits(&mut rng, rows, vocab, kind);
                let xt = ctx.upload_f32("logits", &[rows, vocab], &x)?;
                let stats = kernels::logit_stats(ctx, &xt).await?;
                let mut rec = ctx.recorder();
                let slot = stats.record(&mut rec);
                let got = stats.read(&rec.submit_and_read().await?, slot)?;
                let want = logit_stats(&x, vocab);
                let mut gpu: Vec<f32> = got.iter().flat_map(|&(m, s)| [m, s]).collect();
                let mut reference: Vec<f64> =
                    want.iter().flat_map(|&(m, s)| [f64::from(m), s]).collect();
                // Equal values (infinite maxima included) are no error.
                for (g, r) in gpu.iter_mut().zip(reference.iter_mut()) {
                    if f64::from(*g) == *r {
                        (*g, *r) = (0.0, 0.0);
                    }
                }
                // The max is exact; the sum within f32 rounding of its terms and their adds.
                Ok(compare(
                    case,
                    stats.dispatches().len(),
                    &gpu,
                    &reference,
                    |i| {
                        if i % 2 == 0 {
                            0.0
                        } else {
                            2e-5 * reference[i] + f64::from(f32::MIN_POSITIVE)
                        }
                    },
                ))
            }
            OpCase::Penalize {
                rows,
                vocab,
                window,
            } => {
                let x = logits(&mut rng, rows, vocab, Logits::Uniform);
                let row = rng.range(0, rows - 1);
                let mut tokens: Vec<u32> = (0..vocab as u32).collect();
                for i in 0..window {
                    let j = rng.range(i, vocab - 1);
                    tokens.swap(i, j);
                }
                let pens: Vec<(u32, u32)> = tokens[..window]
                    .iter()
                    .map(|&t| (t, rng.range(1, 5) as u32))
                    .collect();
                let draw = kernels::Draw {
                    n_pen: window as u32,
                    repetition: rng.uniform(0.5, 2.0),
                    presence: rng.uniform(-2.0, 2.0),
                    frequency: rng.uniform(-2.0, 2.0),
                    row: row as u32,
                    ..Default::default()
                };
                let xt = ctx.upload_f32("logits", &[rows, vocab], &x)?;
                // Capacity beyond the live entries, which must be ignored.
                let mut words: Vec<i32> = pens
                    .iter()
                    .flat_map(|&(t, c)| [t as i32, c as i32])
                    .collect();
                words.extend([0, 99, 1, 99]);
                let pt = ctx.upload_i32("pens", &[window + 2, 2], &words)?;
                let state = kernels::DrawState::new(ctx);
                state.set(ctx, &draw);
                let d = kernels::penalize(ctx, &xt, &state, &pt).await?;
                let gpu = read(ctx, &d, &xt).await?;
                let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                for &(t, c) in &pens {
                    let o = row * vocab + t as usize;
                    want[o] = f64::from(penalize(
                        x[o],
                        c,
                        draw.repetition,
                        draw.presence,
                        draw.frequency,
                    ));
                }
                // A division and a multiply-add: a few units in the last place.
                Ok(compare(case, 1, &gpu, &want, |i| {
                    4.0 * f64::from(f32::EPSILON) * want[i].abs()
                }))
            }
            OpCase::BiasAndMask {
                rows,
                vocab,
                biased,
            } => {
                let x = logits(&mut rng, rows, vocab, Logits::Uniform);
                let row = rng.range(0, rows - 1);
                let mut tokens: Vec<u32> = (0..vocab as u32).collect();
                for i in 0..biased {
                    let j = rng.range(i, vocab - 1);
                    tokens.swap(i, j);
                }
                let biases: Vec<(u32, f32)> = tokens[..biased]
                    .iter()
                    .map(|&t| (t, rng.uniform(-100.0, 100.0)))
                    .collect();
                let mask: Vec<u32> = (0..kernels::mask_words(vocab))
                    .map(|_| rng.next_u64() as u32)
                    .collect();
                let draw = kernels::Draw {
                    n_bias: biased as u32,
                    row: row as u32,
                    ..Default::default()
                };
                let xt = ctx.upload_f32("logits", &[rows, vocab], &x)?;
                // Capacity beyond the live entries, which must be ignored.
                let mut words: Vec<i32> = biases
                    .iter()
                    .flat_map(|&(t, b)| [t as i32, b.to_bits() as i32])
                    .collect();
                words.extend([0, 7, 1, 7]);
                let bt = ctx.upload_i32("biases", &[biased + 2, 2], &words)?;
                let mt = ctx.upload_i32("allowed", &[mask.len()], bytemuck::cast_slice(&mask))?;
                let state = kernels::DrawState::new(ctx);
                state.set(ctx, &draw);
                let b = kernels::bias_logits(ctx, &xt, &state, &bt).await?;
                let m = kernels::mask_logits(ctx, &xt, &state, &mt).await?;
                let mut rec = ctx.recorder();
                rec.dispatch(&b);
                rec.dispatch(&m);
                let slot = rec.read(&xt);
                let gpu = rec.submit_and_read().await?.f32(slot)?;
                let mut want = x.clone();
                for &(t, bias) in &biases {
                    want[row * vocab + t as usize] += bias;
                }
                for t in 0..vocab {
                    if mask[t / 32] >> (t % 32) & 1 == 0 {
                        want[row * vocab + t] = kernels::MASKED_LOGIT;
                    }
                }
                let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
                // One correctly rounded f32 add, or a constant: exact.
                Ok(compare(case, 2, &gpu, &want, |_| 0.0))
            }
            OpCase::Gumbel {
                draws,
                vocab,
                temperature,
            } => run_gumbel(ctx, case, &mut rng, draws, vocab, temperature).await,
            OpCase::Nucleus { .. } => run_nucleus(ctx, case, &mut rng).await,
        }
    }

    /// The tokens of `row` that top-k, top-p and min-p keep, as [`crate::sample::Sampler`]
    /// keeps them (f64, the sorted row's prefix), with the last kept token's ties (top-k's
    /// ties before top-p); and the tokens that f32 rounding may put on either side: the one
    /// past (or at) top-p's boundary when the mass there is within rounding of the target,
    /// those whose exp(x − max) is within rounding of min-p.
    fn nucleus_reference(
        row: &[f32],
        top_k: usize,
        top_p: f32,
        min_p: f32,
    ) -> (Vec<bool>, Vec<usize>) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        if top_k > 0 && top_k < order.len() {
            let last = row[order[top_k - 1]];
            let with_ties = order.iter().take_while(|&&o| row[o] >= last).count();
            order.truncate(with_ties);
        }
        let max = f64::from(row[order[0]]);
        let w: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(row[i]) - max).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut keep = order.len();
        let mut either = Vec::new();
        if top_p < 1.0 {
            let target = f64::from(top_p) * total;
            let near = |v: f64| (v - target).abs() < 1e-5 * total;
            let mut cum = 0.0;
            let mut found = false;
            for (i, wi) in w.iter().enumerate() {
                cum += wi;
                if !found && cum >= target {
                    keep = i + 1;
                    found = true;
                }
                // Within f32 rounding of the target: the token may be kept or not.
                if near(cum) || near(cum - wi) {
                    either.push(order[i]);
                    either.extend(order.get(i + 1).copied());
                }
                if cum - wi > target + 1e-5 * total {
                    break;
                }
            }
        }
        if min_p > 0.0 {
            let cut = w
                .iter()
                .position(|&wi| wi < f64::from(min_p))
                .unwrap_or(order.len());
            keep = keep.min(cut);
            let min = f64::from(min_p);
            either.extend(
                order
                    .iter()
                    .zip(&w)
                    .filter(|(_, &wi)| (wi - min).abs() < 1e-5 * min)
                    .map(|(&o, _)| o),
            );
        }
        let mut kept = vec![false; row.len()];
        let last = row[order[keep - 1]];
        for (i, &o) in order.iter().enumerate() {
            if i < keep || row[o] == last {
                kept[o] = true;
            }
        }
        (kept, either)
    }

    async fn run_nucleus(ctx: &GpuContext, case: OpCase, rng: &mut Rng) -> Result<OpOutcome> {
        let OpCase::Nucleus {
            vocab,
            spread,
            ties,
            top_k,
            top_p,
            min_p,
            temperature,
            draws,
        } = case
        else {
            unreachable!("run_nucleus takes a nucleus case");
        };
        let mut x = rng.vec(2 * vocab, -spread, spread);
        if ties {
            for v in &mut x {
                *v = (*v * 4.0 / spread).round() * spread / 4.0;
            }
        }
        let row = &x[vocab..];
        let xt = ctx.upload_f32("logits", &[2, vocab], &x)?;
        let stats = kernels::logit_stats(ctx, &xt).await?;
        let state = kernels::DrawState::new(ctx);
        let nucleus = kernels::nucleus(ctx, &xt, &stats, &state).await?;
        let (kept, either) = nucleus_reference(row, top_k, top_p, min_p);
        let mut worst = 0.0f64;
        let mut detail = None;
        let mut counts = vec![0usize; vocab];
        for d in 0..draws {
            let key = rng.next_u64();
            let draw = kernels::Draw {
                key_lo: key as u32,
                key_hi: (key >> 32) as u32,
                inv_temp: 1.0 / temperature,
                ..Default::default()
            };
            state.set(ctx, &draw);
            let mut rec = ctx.recorder();
            rec.dispatch_all(stats.dispatches());
            let slot = nucleus.record(ctx, &mut rec, 1, (top_k, top_p, min_p))?;
            let cut = (d == 0).then(|| rec.read(nucleus.row()));
            let readback = rec.submit_and_read().await?;
            let t = nucleus.read(&readback, slot)? as usize;
            if let Some(cut) = cut {
                let got: Vec<bool> = readback.f32(cut)?.iter().map(|v| *v > f32::MIN).collect();
                let wrong: Vec<usize> = (0..vocab)
                    .filter(|&i| got[i] != kept[i] && !either.contains(&i))
                    .collect();
                if !wrong.is_empty() {
                    worst = f64::INFINITY;
                    detail = Some(format!(
                        "{} tokens kept where the sorted row keeps {} (differing: {:?})",
                        got.iter().filter(|&&k| k).count(),
                        kept.iter().filter(|&&k| k).count(),
                        &wrong[..wrong.len().min(8)]
                    ));
                }
            }
            if t >= vocab || !(kept[t] || either.contains(&t)) {
                worst = f64::INFINITY;
                detail = Some(format!(
                    "draw {d}: token {t}, which the nucleus does not hold"
                ));
            }
            counts[t.min(vocab - 1)] += 1;
        }
        // The draws against the kept tokens' softmax at the temperature.
        if draws > 0 {
            let m = f64::from(row.iter().copied().fold(f32::MIN, f32::max));
            let w: Vec<f64> = (0..vocab)
                .map(|i| {
                    if kept[i] {
                        ((f64::from(row[i]) - m) / f64::from(temperature)).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let (ratio, why) = chi_squared(&counts, &w);
            if ratio > worst {
                worst = ratio;
                detail = Some(why);
            }
        }
        Ok(OpOutcome {
            case,
            values: draws,
            max_abs_err: 0.0,
            worst_ratio: worst,
            detail,
            dispatches: 10,
        })
    }

    /// Pearson's χ² of draw `counts` against weights `w` (any scale; 0 for what may not be
    /// drawn), cells expected fewer than 5 times pooled, as a ratio to the χ² quantile at
    /// p ≈ 1e-6 (Wilson–Hilferty, z = 4.75): above 1 fails. With the reason.
    fn chi_squared(counts: &[usize], w: &[f64]) -> (f64, String) {
        let draws: usize = counts.iter().sum();
        let z: f64 = w.iter().sum();
        let (mut chi2, mut cells) = (0.0, 0usize);
        let (mut pool_e, mut pool_c) = (0.0, 0usize);
        for (&c, &wi) in counts.iter().zip(w) {
            let e = draws as f64 * wi / z;
            if e >= 5.0 {
                chi2 += (c as f64 - e).powi(2) / e;
                cells += 1;
            } else {
                pool_e += e;
                pool_c += c;
            }
        }
        if pool_e > 0.0 || pool_c > 0 {
            chi2 += (pool_c as f64 - pool_e).powi(2) / pool_e.max(1e-9);
            cells += 1;
        }
        let df = (cells.max(2) - 1) as f64;
        let limit = df * (1.0 - 2.0 / (9.0 * df) + 4.75 * (2.0 / (9.0 * df)).sqrt()).powi(3);
        (
            chi2 / limit,
            format!("χ² {chi2:.1} over {df} degrees of freedom (limit {limit:.1})"),
        )
    }

    async fn run_gumbel(
        ctx: &GpuContext,
        case: OpCase,
        rng: &mut Rng,
        draws: usize,
        vocab: usize,
        temperature: f32,
    ) -> Result<OpOutcome> {
        let row = rng.vec(vocab, -2.0, 2.0);
        let x: Vec<f32> = (0..draws).flat_map(|_| row.iter().copied()).collect();
        let xt = ctx.upload_f32("logits", &[draws, vocab], &x)?;
        let ot = kernels::topk_output(ctx, "drawn", &xt, 1)?;
        let key = rng.next_u64();
        let draw = kernels::Draw {
            key_lo: key as u32,
            key_hi: (key >> 32) as u32,
            inv_temp: 1.0 / temperature,
            ..Default::default()
        };
        let state = kernels::DrawState::new(ctx);
        state.set(ctx, &draw);
        let tk = kernels::gumbel_argmax(ctx, &xt, &state, &ot).await?;
        let mut rec = ctx.recorder();
        let slot = tk.record(&mut rec);
        let got = tk.read(&rec.submit_and_read().await?, slot)?;
        let mut counts = vec![0usize; vocab];
        let mut detail = None;
        let mut worst = 0.0f64;
        for (r, picks) in got.iter().enumerate() {
            let t = picks[0].0 as usize;
            let score = |e: usize| {
                let u = f64::from(crate::sample::gumbel_uniform(key, r as u32, e as u32));
                f64::from(row[e] * draw.inv_temp) - (-u.ln()).ln()
            };
            let best = (0..vocab).map(score).fold(f64::MIN, f64::max);
            // The GPU's log and sum are f32: within a few units in the last place of the best.
            let gap = (best - score(t.min(vocab - 1))) / (1e-5 * (1.0 + best.abs()));
            if t >= vocab || gap > worst {
                worst = if t >= vocab { f64::INFINITY } else { gap };
                detail = Some(format!(
                    "draw {r}: token {t}, {:.3e} below the best perturbed logit",
                    best - score(t.min(vocab - 1))
                ));
            }
            counts[t.min(vocab - 1)] += 1;
        }
        let m = row.iter().copied().fold(f32::MIN, f32::max);
        let w: Vec<f64> = row
            .iter()
            .map(|&v| (f64::from(v - m) / f64::from(temperature)).exp())
            .collect();
        let (ratio, why) = chi_squared(&counts, &w);
        if ratio > worst {
            worst = ratio;
            detail = Some(format!("{why}; counts {counts:?}"));
        }
        Ok(OpOutcome {
            case,
            values: draws,
            max_abs_err: 0.0,
            worst_ratio: worst,
            detail,
            dispatches: tk.dispatches().len(),
        })
    }

    async fn run_topk(
        ctx: &GpuContext,
        case: OpCase,
        rng: &mut Rng,
        rows: usize,
        vocab: usize,
        k: usize,
        kind: Logits,
    ) -> Result<OpOutcome> {
        let x = logits(rng, rows, vocab, kind);
        let xt = ctx.upload_f32("logits", &[rows, vocab], &x)?;
        let ot = kernels::topk_output(ctx, "top", &xt, k)?;
        let tk = if matches!(case, OpCase::Argmax { .. }) {
            kernels::argmax(ctx, &xt, &ot).await?
        } else {
            kernels::topk(ctx, &xt, k, &ot).await?
        };
        let mut rec = ctx.recorder();
        let slot = tk.record(&mut rec);
        let gpu = tk.read(&rec.submit_and_read().await?, slot)?;
        let want = topk(&x, vocab, k);
        Ok(compare_topk(case, tk.dispatches().len(), &gpu, &want))
    }

    fn compare_topk(
        case: OpCase,
        dispatches: usize,
        gpu: &[Vec<(u32, f32)>],
        want: &[Vec<(u32, f32)>],
    ) -> OpOutcome {
        let bits = |r: &[(u32, f32)]| -> Vec<(u32, u32)> {
            r.iter().map(|&(i, v)| (i, v.to_bits())).collect()
        };
        let mut detail = None;
        if gpu.len() != want.len() {
            detail = Some(format!("{} rows, expected {}", gpu.len(), want.len()));
        } else if let Some((r, (g, w))) = gpu
            .iter()
            .zip(want)
            .enumerate()
            .find(|(_, (g, w))| bits(g) != bits(w))
        {
            let at = g
                .iter()
                .zip(w)
                .position(|(a, b)| (a.0, a.1.to_bits()) != (b.0, b.1.to_bits()))
                .unwrap_or(0);
            detail = Some(format!(
                "row {r}, rank {at}: gpu {:?}, reference {:?}",
                g.get(at..(at + 4).min(g.len())),
                w.get(at..(at + 4).min(w.len()))
            ));
        }
        OpOutcome {
            case,
            values: gpu.iter().map(Vec::len).sum(),
            max_abs_err: 0.0,
            worst_ratio: if detail.is_some() { f64::INFINITY } else { 0.0 },
            detail,
            dispatches,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erfc_matches_known_values() {
        // Python's math.erfc.
        for (z, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.999, 0.004_698_443_348_629_488),
            (2.0, 0.004_677_734_981_047_266),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088_487_583_762_545e-45),
        ] {
            let got = erfc(z);
            assert!(
                ((got - want) / want).abs() < 1e-13,
                "erfc({z}) = {got}, want {want}"
            );
        }
        let g = gelu_erf(&[1.0, -1.0, 0.0]);
        assert!((g[0] - 0.841_344_746_068_542_9).abs() < 1e-15);
        assert!((g[1] + 0.158_655_253_931_457_05).abs() < 1e-15);
        assert_eq!(g[2], 0.0);
    }

    use super::*;

    #[test]
    fn layernorm_by_hand() {
        // Row [1, 3]: mean 2, variance 1; weight [2, 1], bias [0.5, 0].
        let y = layernorm(&[1.0, 3.0], 2, &[2.0, 1.0], Some(&[0.5, 0.0]), 0.0);
        assert_eq!(y, vec![-1.5, 1.0]);
        let tol = layernorm_tolerances(&[1.0, 3.0], 2, &[2.0, 1.0], None, 0.0);
        assert!(tol.iter().all(|&t| t > 0.0 && t < 1e-5), "{tol:?}");
        // A constant row with eps = 0 cannot be normalised: no finite bound.
        let tol = layernorm_tolerances(&[5.0, 5.0], 2, &[1.0, 1.0], None, 0.0);
        assert!(tol[0].is_infinite());
    }

    #[test]
    fn layernorm_bound_grows_with_the_offset() {
        let near: Vec<f32> = (0..64).map(|i| (i % 7) as f32).collect();
        let far: Vec<f32> = near.iter().map(|v| v + 1000.0).collect();
        let w = vec![1.0; 64];
        let a = layernorm_tolerances(&near, 64, &w, None, 1e-5);
        let b = layernorm_tolerances(&far, 64, &w, None, 1e-5);
        assert!(b[0] > 10.0 * a[0] && b[0] < 1e-2, "{} vs {}", a[0], b[0]);
    }

    #[test]
    fn gelu_matches_the_tanh_form_and_its_limits() {
        for x in [-6.0f32, -2.5, -0.3, 0.0, 0.1, 1.0, 4.0] {
            let v = f64::from(x);
            let tanh_form = 0.5 * v * (1.0 + gelu_t(v).tanh());
            let g = gelu(&[x])[0];
            assert!((g - tanh_form).abs() <= 1e-14 * (1.0 + v.abs()), "{x}");
        }
        let g = gelu(&[30.0, -30.0, -1e30]);
        assert_eq!(g[0], 30.0);
        assert!(g[1].abs() < 1e-300 && g[2] == 0.0);
        // Accurate where 1 + tanh(t) would cancel: gelu(−8) ≈ −8·e^(2t), t ≈ −9.9.
        let g = gelu(&[-8.0])[0];
        let want = -8.0 * (2.0 * gelu_t(-8.0)).exp();
        assert!((g / want - 1.0).abs() < 1e-12, "{g:e} vs {want:e}");
    }

    #[test]
    fn topk_orders_nan_as_neg_inf_and_ties_by_index() {
        let nan = f32::NAN;
        let row = [1.0, nan, 3.0, f32::NEG_INFINITY, 3.0, -0.0, 0.0, nan];
        let top = topk(&row, 8, 8);
        let idx: Vec<u32> = top[0].iter().map(|p| p.0).collect();
        assert_eq!(idx, vec![2, 4, 0, 5, 6, 1, 3, 7]);
        // −0 keeps its bits; NaN is reported as −inf.
        assert_eq!(top[0][3].1.to_bits(), (-0.0f32).to_bits());
        assert_eq!(top[0][5].1, f32::NEG_INFINITY);
        assert_eq!(top[0][7].1, f32::NEG_INFINITY);
        // Partial selection agrees with the full sort, row by row.
        let two = [row, [0.5, 0.5, nan, 2.0, -1.0, 0.5, 9.0, 0.5]].concat();
        let k3 = topk(&two, 8, 3);
        assert_eq!(&k3[0][..], &top[0][..3]);
        assert_eq!(k3[1].iter().map(|p| p.0).collect::<Vec<_>>(), vec![6, 3, 0]);
        assert_eq!(argmax(&two, 8), vec![(2, 3.0), (6, 9.0)]);
    }

    #[test]
    fn add_is_exact_in_f64() {
        assert_eq!(add(&[1.5, -2.0], &[0.25, 2.0]), vec![1.75, 0.0]);
        assert!(add_tolerance(1.0) > 0.0);
    }
}
