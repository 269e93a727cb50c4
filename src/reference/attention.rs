//! CPU references, in f64, for RoPE, the KV-cache write and attention, with the error bound each
//! GPU result must meet (in the terms of [`crate::reference`]: u = 2⁻²⁴, γₙ = nu/(1 − nu), WGSL's
//! `exp(x)` within (3 + 2|x|) ULP = (6 + 4|x|)u relative).

use crate::error::Result;
use crate::kernels::{rope_angle, rope_inv_freq, RopeConfig, RopeLayout};
use crate::reference::{gamma, SUBNORMAL, U};

/// RoPE of `x` [tokens, heads, head_dim] with token `t` at position `offset + t`; returns the
/// values and per-element tolerances.
///
/// The angles are the specification's (f32 `position · inv_freq`, as Hugging Face computes them);
/// cos and sin are taken exactly here. The GPU reads them from a table rounded to f32 (relative
/// error ≤ u each), multiplies (u) and adds (u), so
/// |gpu − exact| ≤ γ₃ · (|a·cos| + |b·sin|) per rotated element, plus subnormal flushes; the
/// elements past `rotary_dim` pass through unchanged (tolerance 0).
pub fn rope(
    x: &[f32],
    tokens: usize,
    heads: usize,
    config: &RopeConfig,
    offset: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = tokens * heads * config.head_dim;
    assert!(x.len() >= n);
    let values = x[..n].iter().map(|&v| f64::from(v)).collect();
    rope_inexact(values, vec![0.0; n], tokens, heads, config, offset)
}

/// [`rope`] of exact `values` that the GPU holds only within `tol` (each element's bound on the
/// GPU's input, e.g. an RMSNorm's): a rotated element's bound grows by what the input's can move
/// it, (|cos|·δa + |sin|·δb)(1 + γ₃); the elements past `rotary_dim` keep their input's bound.
pub fn rope_inexact(
    mut values: Vec<f64>,
    mut tol: Vec<f64>,
    tokens: usize,
    heads: usize,
    config: &RopeConfig,
    offset: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let hd = config.head_dim;
    let half = config.rotary_dim / 2;
    let inv = rope_inv_freq(config)?;
    assert!(values.len() == tokens * heads * hd && tol.len() == values.len());
    for t in 0..tokens {
        for h in 0..heads {
            let base = (t * heads + h) * hd;
            for (i, &f) in inv.iter().enumerate() {
                let angle = f64::from(rope_angle(offset + t, f));
                let (s, c) = angle.sin_cos();
                let (ia, ib) = match config.layout {
                    RopeLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    RopeLayout::NeoX => (base + i, base + i + half),
                };
                let (a, b) = (values[ia], values[ib]);
                let (da, db) = (tol[ia], tol[ib]);
                values[ia] = a * c - b * s;
                values[ib] = a * s + b * c;
                let moved_a = (c.abs() * da + s.abs() * db) * (1.0 + gamma(3));
                let moved_b = (s.abs() * da + c.abs() * db) * (1.0 + gamma(3));
                tol[ia] = gamma(3) * ((a * c).abs() + (b * s).abs()) + 2.0 * SUBNORMAL + moved_a;
                tol[ib] = gamma(3) * ((a * s).abs() + (b * c).abs()) + 2.0 * SUBNORMAL + moved_b;
            }
        }
    }
    Ok((values, tol))
}

/// Largest finite f16; the cache saturates there.
pub const F16_MAX: f32 = 65504.0;

/// What an f16 cache element must hold for input `x`, and how far it may be: WGSL leaves the
/// rounding direction of f32 → f16 to the implementation, so either neighbour of the saturated
/// value is allowed: less than one f16 ULP, ≤ 2⁻¹⁰·|x| for normal values; f16 subnormals
/// (|x| < 2⁻¹⁴) may also be flushed to zero, an error below 2⁻¹⁴.
pub fn f16_store(x: f32) -> (f64, f64) {
    let e = f64::from(x.clamp(-F16_MAX, F16_MAX));
    let min_normal = 2f64.powi(-14);
    let tol = if e.abs() >= min_normal {
        e.abs() * 2f64.powi(-10)
    } else {
        min_normal
    };
    (e, tol)
}

/// Writes `rows` (whole rows of `row_len` values) into the expected cache contents at row
/// `offset`: exactly for an f32 cache (tolerance 0), within [`f16_store`] for an f16 cache.
pub fn kv_write(
    values: &mut [f64],
    tolerances: &mut [f64],
    row_len: usize,
    offset: usize,
    rows: &[f32],
    f16: bool,
) {
    let start = offset * row_len;
    for (i, &x) in rows.iter().enumerate() {
        let (v, t) = if f16 {
            f16_store(x)
        } else {
            (f64::from(x), 0.0)
        };
        values[start + i] = v;
        tolerances[start + i] = t;
    }
}

/// What a cache element must hold when the GPU computed its f32 value within `tol` of `exact`
/// (e.g. a key rotated by RoPE, see [`rope`]) and then stored it: exactly that for an f32 cache;
/// for an f16 cache the saturated value (saturation moves it by no more than the error) rounded
/// to either f16 neighbour, ≤ 2⁻¹⁰·(|exact| + tol) more, or below 2⁻¹⁴ for f16 subnormals.
pub fn kv_store(exact: f64, tol: f64, f16: bool) -> (f64, f64) {
    if !f16 {
        return (exact, tol);
    }
    let max = f64::from(F16_MAX);
    let e = exact.clamp(-max, max);
    let round = ((e.abs() + tol) * 2f64.powi(-10)).max(2f64.powi(-14));
    (e, tol + round)
}

/// The shape of one attention step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Query tokens of the step; token t is at position offset + t.
    pub tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub offset: usize,
    /// Sliding window: query position q sees keys q - window + 1 ..= q, or with `bidirectional`
    /// those with |q - k| < window; 0: no window.
    pub window: usize,
    /// Scores become cap · tanh(s / cap); 0: no capping.
    pub softcap: f32,
    /// Every token sees positions 0..offset + tokens (an encoder), not only up to its own.
    pub bidirectional: bool,
    /// From offset 0: the step is this many inputs packed one after another
    /// ([`packed_starts`]), each token seeing only its own input's positions; 0: not packed.
    pub packed: usize,
}

/// Where each of `inputs` packed inputs of `tokens` tokens in all starts, then `tokens`: lengths
/// that grow with the index (uneven on purpose), each at least 1.
pub fn packed_starts(tokens: usize, inputs: usize) -> Vec<usize> {
    assert!(
        inputs >= 1 && tokens >= inputs,
        "{inputs} inputs in {tokens} tokens"
    );
    let weight = inputs * (inputs + 1) / 2;
    let mut starts: Vec<usize> = (0..inputs)
        .map(|i| i + (tokens - inputs) * (i * (i + 1) / 2) / weight)
        .collect();
    starts.push(tokens);
    starts
}

/// How the kernel cut the context, which sets how many roundings a term goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSplit {
    /// Positions per chunk (≥ the context when there is one chunk).
    pub chunk_len: usize,
    /// Keys per online-softmax step within a chunk.
    pub tile: usize,
}

/// How far the k/v values the kernel reads may be from those given to the reference, per
/// element: `rel·|x| + abs`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KvError {
    pub rel: f64,
    pub abs: f64,
}

impl KvError {
    /// The reference gets exactly what the cache holds.
    pub const EXACT: KvError = KvError { rel: 0.0, abs: 0.0 };
    /// The reference gets the f32 rows written to an f16 cache (see [`f16_store`]).
    pub const F16: KvError = KvError {
        rel: 1.0 / 1024.0,
        abs: 1.0 / 16384.0,
    };
}

/// Causal grouped-query attention: q [tokens, n_heads, head_dim], k and v [positions, n_kv_heads,
/// head_dim] (at least offset + tokens positions). Query (t, h) attends to positions
/// 0..=offset + t of kv head h / (n_heads / n_kv_heads) with weights softmax(scale · q·k).
/// Returns the values and per-element tolerances.
///
/// The bound. Write sⱼ for the exact scores, M = max sⱼ, xⱼ = sⱼ − M ≤ 0, wⱼ the exact softmax
/// weights, and o = Σ wⱼvⱼ.
/// - Scores: the GPU's sⱼ is a dot product of head_dim terms with q pre-multiplied by the scale:
///   |ŝⱼ − sⱼ| ≤ Δⱼ = γ_{hd+2}·|scale|·Σ|q_d k_jd| (plus, when the kernel's k differs from the
///   reference's, |scale|·Σ|q_d|(rel·|k_jd| + abs)). A common shift of all scores cancels in the
///   softmax, so each term's weight changes by a factor e^{δⱼ}: relative error ≤ Δⱼe^{Δⱼ}.
/// - Each term's weight is one `exp` of an argument within |xⱼ| + 2Δ of xⱼ, Δ = maxⱼ Δⱼ:
///   (6 + 4|xⱼ| + 8Δ)u. Later it is rescaled by exp(m_old − m_new) at most once per later tile
///   of its chunk and once in the combine: (7 + 4·increase + …)u each, and the increases of the
///   running max after the term joined add up to at most |xⱼ| (+2Δ). With T tiles per chunk:
///   (13 + 7T + 8|xⱼ| + 16Δ)u in all.
/// - Sums: a term passes through at most N = min(chunk, n) + T + C + 2 roundings of the
///   accumulation (its tile's fused multiply-adds, the per-tile rescales, the combine over C
///   chunks): γ_N.
///   So every term of numerator and denominator carries a relative error ρⱼ ≤ the sum of these
///   (taken as 1 where xⱼ < −80: exp may underflow, and such a term weighs < e⁻⁸⁰).
/// - With σ = Σ wⱼρⱼ bounding the denominator's relative error and v̂ the kernel's v
///   (|v̂ − v| ≤ eⱼ = rel·|v| + abs): |N/D − o| ≤ B = Σ wⱼ((ρⱼ + σ)|vⱼ| + (1 + ρⱼ)eⱼ) / (1 − σ),
///   and the final division (2.5 ULP = 5u) adds 5u·(|o| + B), |o| ≤ Σ wⱼ|vⱼ|.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &AttentionShape,
    scale: f32,
    split: AttentionSplit,
    kv: KvError,
) -> (Vec<f64>, Vec<f64>) {
    let AttentionShape {
        tokens,
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        offset,
        window,
        softcap,
        bidirectional,
        packed,
    } = *shape;
    assert!(
        packed == 0 || offset == 0,
        "packed inputs start at position 0"
    );
    let starts = (packed > 0).then(|| packed_starts(tokens, packed));
    assert!(nkv > 0 && nh % nkv == 0);
    let cap = f64::from(softcap);
    let group = nh / nkv;
    let positions = offset + tokens;
    assert!(q.len() >= tokens * nh * hd);
    assert!(k.len() >= positions * nkv * hd && v.len() >= positions * nkv * hd);
    let scale = f64::from(scale);
    let chunk = split.chunk_len.max(1);
    let tile = split.tile.max(1);
    let mut values = Vec::with_capacity(tokens * nh * hd);
    let mut tols = Vec::with_capacity(tokens * nh * hd);
    for t in 0..tokens {
        // Token t of a packed step sees its own input: the keys from `first` to its end.
        let (first, end) = match &starts {
            Some(starts) => {
                let input = starts.partition_point(|&s| s <= t) - 1;
                (starts[input], starts[input + 1])
            }
            None => (0, 0),
        };
        let pos = offset + t;
        let mut n = if bidirectional {
            offset + tokens
        } else {
            pos + 1
        };
        if bidirectional && window > 0 {
            n = n.min(pos + window);
        }
        if packed > 0 {
            n = n.min(end);
        }
        // Keys before `lo` are outside the window or the input (they weigh nothing).
        let lo = if window > 0 {
            first.max((pos + 1).saturating_sub(window))
        } else {
            first
        };
        let chunks = n.div_ceil(chunk);
        let tiles = n.min(chunk).div_ceil(tile);
        let sums = gamma(n.min(chunk) + tiles + chunks + 2);
        for h in 0..nh {
            let kh = h / group;
            let qr = &q[(t * nh + h) * hd..][..hd];
            let q_abs: f64 = qr.iter().map(|&x| f64::from(x).abs()).sum();
            let mut s = Vec::with_capacity(n);
            let mut delta = Vec::with_capacity(n);
            for j in 0..n {
                if j < lo {
                    s.push(f64::NEG_INFINITY);
                    delta.push(0.0);
                    continue;
                }
                let kr = &k[(j * nkv + kh) * hd..][..hd];
                let (mut dot, mut mag) = (0.0f64, 0.0f64);
                for (&a, &b) in qr.iter().zip(kr) {
                    let (a, b) = (f64::from(a), f64::from(b));
                    dot += a * b;
                    mag += (a * b).abs();
                }
                let mag_hat = mag * (1.0 + kv.rel) + kv.abs * q_abs;
                let d = scale.abs() * (gamma(hd + 2) * mag_hat + kv.rel * mag + kv.abs * q_abs)
                    + (hd as f64 + 2.0) * SUBNORMAL;
                if cap > 0.0 {
                    // cap·tanh(s/cap) has slope ≤ 1, so the score's error carries over; the
                    // division, tanh (WGSL: inherited from sinh/cosh, exp-based) and product add
                    // a few ulp of cap.
                    s.push(cap * (scale * dot / cap).tanh());
                    delta.push(d + cap * 16.0 * U);
                } else {
                    s.push(scale * dot);
                    delta.push(d);
                }
            }
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let dmax = delta.iter().copied().fold(0.0, f64::max);
            let a: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
            let total: f64 = a.iter().sum();
            let w: Vec<f64> = a.iter().map(|&x| x / total).collect();
            let rho: Vec<f64> = s
                .iter()
                .zip(&delta)
                .map(|(&x, &d)| {
                    let x = (x - m).abs();
                    if x.is_nan() || x > 80.0 {
                        1.0
                    } else {
                        d * d.exp() + (13.0 + 7.0 * tiles as f64 + 8.0 * x + 16.0 * dmax) * U + sums
                    }
                })
                .collect();
            let sigma: f64 = w.iter().zip(&rho).map(|(w, r)| w * r).sum();
            for d in 0..hd {
                let (mut o, mut wv, mut b) = (0.0f64, 0.0f64, 0.0f64);
                for j in 0..n {
                    let vj = f64::from(v[(j * nkv + kh) * hd + d]);
                    o += w[j] * vj;
                    wv += w[j] * vj.abs();
                    let e = kv.rel * vj.abs() + kv.abs;
                    b += w[j] * ((rho[j] + sigma) * vj.abs() + (1.0 + rho[j]) * e);
                }
                let tol = if sigma >= 1.0 {
                    f64::INFINITY
                } else {
                    let b = b / (1.0 - sigma);
                    b * (1.0 + 5.0 * U) + 5.0 * U * wv + (n + hd + 10) as f64 * SUBNORMAL
                };
                values.push(o);
                tols.push(tol);
            }
        }
    }
    (values, tols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_by_hand() {
        // One head of 4 with rotary 2: only (x0, x1) turn, by angle = position (inv_freq 1).
        let cfg = RopeConfig {
            rotary_dim: 2,
            ..RopeConfig::new(4, 10_000.0, RopeLayout::Interleaved)
        };
        let (y, tol) = rope(&[1.0, 0.0, 5.0, 6.0], 1, 1, &cfg, 1).unwrap();
        assert!((y[0] - 1f64.cos()).abs() < 1e-15 && (y[1] - 1f64.sin()).abs() < 1e-15);
        assert_eq!(&y[2..], &[5.0, 6.0]);
        assert_eq!(&tol[2..], &[0.0, 0.0]);
        // NeoX pairs (0, 2) and (1, 3) with head_dim 4.
        let cfg = RopeConfig::new(4, 10_000.0, RopeLayout::NeoX);
        let (y, _) = rope(&[1.0, 1.0, 0.0, 0.0], 1, 1, &cfg, 1).unwrap();
        assert!((y[0] - 1f64.cos()).abs() < 1e-15 && (y[2] - 1f64.sin()).abs() < 1e-15);
        let a = f64::from(0.01f32);
        assert!((y[1] - a.cos()).abs() < 1e-15 && (y[3] - a.sin()).abs() < 1e-15);
    }

    #[test]
    fn f16_store_saturates_and_bounds() {
        assert_eq!(f16_store(1e6), (65504.0, 65504.0 / 1024.0));
        assert_eq!(f16_store(-1e6).0, -65504.0);
        let (v, t) = f16_store(1e-7);
        assert!(v == f64::from(1e-7f32) && t == 1.0 / 16384.0);
        // Round to nearest is within the bound, as is the other neighbour.
        let x = 1.0f32 + 1.0 / 3000.0;
        let (e, t) = f16_store(x);
        let near = f64::from(half::f16::from_f32(x).to_f32());
        assert!((near - e).abs() <= t && (1.0 + 1.0 / 1024.0 - e).abs() <= t);
    }

    #[test]
    fn attention_by_hand() {
        // Two keys, equal scores: the mean of the values. Then a query that prefers key 1.
        let shape = AttentionShape {
            tokens: 2,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 1,
            offset: 1,
            window: 0,
            softcap: 0.0,
            bidirectional: false,
            packed: 0,
        };
        let q = [0.0, 0.0, 1.0, 1.0];
        let k = [0.0, 2.0, 5.0];
        let v = [1.0, 3.0, -1.0];
        let split = AttentionSplit {
            chunk_len: 64,
            tile: 16,
        };
        let (o, tol) = attention(&q, &k, &v, &shape, 1.0, split, KvError::EXACT);
        // Token 0 (position 1) sees keys 0 and 1; token 1 also key 2.
        assert!((o[0] - 2.0).abs() < 1e-15 && (o[1] - 2.0).abs() < 1e-15);
        let (e0, e2, e5) = (1.0f64, 2f64.exp(), 5f64.exp());
        let want = (e0 * 1.0 + e2 * 3.0 - e5) / (e0 + e2 + e5);
        assert!((o[2] - want).abs() < 1e-14 && (o[3] - want).abs() < 1e-14);
        assert!(tol.iter().all(|&t| t > 0.0 && t < 1e-5));
        // The f16 bound is wider.
        let (_, tol16) = attention(&q, &k, &v, &shape, 1.0, split, KvError::F16);
        assert!(tol16[2] > 10.0 * tol[2]);
    }
}
