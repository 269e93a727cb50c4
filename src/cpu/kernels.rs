//! The CPU backend's kernels over [`HostTensor`]s: shapes checked, work split over the pool,
//! the inner loops in `pocketlm_cpu` (compiled optimized in every build). Matrix products read
//! each weight row in its stored format: decode (one row of x) as integer dot products against
//! x quantized to 16 bits, several rows by dequantizing four weight rows at a time into a tile
//! that all rows of x share. No float copy of a matrix is made.

use pocketlm_cpu::idot;
use pocketlm_cpu::ops::{self, SoftmaxState, Weights, CHUNK, TILE_ROWS};

use crate::cpu::{HostTensor, Pool};
use crate::error::{Error, Result};
use crate::kernels::GateActivation;
use crate::load::StoredTensor;
use crate::quant::{block_dequantizer, DType};

pub use pocketlm_cpu::ops::{
    dot, gelu_erf, gelu_tanh, kv_f16, kv_f32, rmsnorm, rmsnorm_add, rmsnorm_in_place, rope,
    softcap, KvRows,
};

/// Whether the build has SIMD the kernels' lanes map to.
pub const SIMD: bool = cfg!(any(
    target_feature = "simd128",
    target_feature = "sse2",
    target_feature = "neon"
));

/// Whether this is the wasm build with relaxed SIMD (the package loads it where the browser
/// validates relaxed SIMD instructions): its prefill products use fused multiply-adds.
pub const RELAXED_SIMD: bool = cfg!(all(target_arch = "wasm32", feature = "relaxed-simd"));

/// A pointer to an output that parallel tasks write in disjoint places.
struct Out<T = f32>(*mut T);
// SAFETY: every user writes only indices no other task writes, and the pool's `run` returns
// only when all tasks are done.
unsafe impl<T> Send for Out<T> {}
unsafe impl<T> Sync for Out<T> {}
impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}

impl<T> Out<T> {
    /// The element at `i` (a method, so closures capture the whole `Out`, which is `Sync`).
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

impl Out {
    /// Writes `v` at `i`, or adds it there with `accumulate`.
    ///
    /// # Safety
    /// `i` is inside the output, and no other task touches it while this one runs.
    unsafe fn put(self, i: usize, v: f32, accumulate: bool) {
        // SAFETY: as the caller promises.
        unsafe {
            let p = self.at(i);
            *p = if accumulate { *p + v } else { v };
        }
    }
}

/// How rows of `dtype` are read.
fn weights(dtype: DType) -> Result<Weights> {
    Ok(match dtype {
        DType::F32 => Weights::F32,
        DType::F16 => Weights::F16,
        DType::BF16 => Weights::BF16,
        DType::I32 => {
            return Err(Error::UnsupportedDType {
                kernel: "cpu matmul",
                tensor: String::new(),
                dtype,
                expected: "a weight format",
            })
        }
        d => Weights::Blocks {
            size: d.block_size(),
            bytes: d.block_bytes(),
            dequant: block_dequantizer(d).expect("a block-quantized format"),
        },
    })
}

/// The integer kernels' form of a block format (every GGML format PocketLM reads has one).
fn int_format(dtype: DType) -> Option<idot::Format> {
    Some(match dtype {
        DType::Q4_0 => idot::Q4_0,
        DType::Q4_1 => idot::Q4_1,
        DType::Q5_0 => idot::Q5_0,
        DType::Q5_1 => idot::Q5_1,
        DType::Q8_0 => idot::Q8_0,
        DType::Q2_K => idot::Q2_K,
        DType::Q3_K => idot::Q3_K,
        DType::Q4_K => idot::Q4_K,
        DType::Q5_K => idot::Q5_K,
        DType::Q6_K => idot::Q6_K,
        DType::IQ4_NL => idot::IQ4_NL,
        DType::IQ4_XS => idot::IQ4_XS,
        DType::F32 | DType::F16 | DType::BF16 | DType::I32 => return None,
    })
}

/// `y[i, j] = Σ_k x[i, k] · w[j, k]` (plus `y[i, j]` with `accumulate`) for x [m, k], w [n, k]
/// in any weight format, y [m, n]; the rows of w are split over the pool.
pub fn matmul(
    pool: &Pool,
    w: &HostTensor,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let (n, k) = (w.rows(), w.cols());
    if x.len() != m * k || y.len() != m * n || w.shape().len() != 2 {
        return Err(Error::ShapeMismatch {
            kernel: "cpu matmul",
            detail: format!(
                "x has {} values and y {} for {m} rows through '{}' of shape {:?}",
                x.len(),
                y.len(),
                w.name(),
                w.shape()
            ),
        });
    }
    let format = weights(w.dtype()).map_err(|e| match e {
        Error::UnsupportedDType {
            kernel,
            dtype,
            expected,
            ..
        } => Error::UnsupportedDType {
            kernel,
            tensor: w.name().to_string(),
            dtype,
            expected,
        },
        other => other,
    })?;
    let row_bytes = w.dtype().bytes_for(k).unwrap_or(0);
    let bytes = w.bytes();
    let out = Out(y.as_mut_ptr());
    if let Some(f) = int_format(w.dtype()).filter(|_| m == 1 && k.is_multiple_of(idot::QK)) {
        // Decode: x quantized to 16 bits once, every row an integer dot product.
        let acts = idot::Activations::new(x);
        // Rows touched ahead (ops::touch): at least 2, and at least 1 KiB.
        let ahead = 2.max(1024usize.div_ceil(row_bytes.max(1)));
        pool.ranges(n, &|j0, j1| {
            let mut scratch = idot::Scratch::default();
            let row = |j: usize| &bytes[j * row_bytes..(j + 1) * row_bytes];
            for r in j0..(j0 + ahead).min(j1) {
                ops::touch(row(r));
            }
            for j in j0..j1 {
                if j + ahead < j1 {
                    ops::touch(row(j + ahead));
                }
                let v = idot::row_dot(f, row(j), &acts, &mut scratch);
                // SAFETY: column j belongs to this task alone; j < n = y.len().
                unsafe { out.put(j, v, accumulate) };
            }
        });
        return Ok(());
    }
    if m >= 2 {
        // Tiles of four weight rows, dequantized once for all m rows of x (the last tile padded
        // with zero rows whose products are dropped), with vector code where there is some.
        let vector = int_format(w.dtype()).and_then(idot::vector_dequant);
        pool.ranges(n.div_ceil(TILE_ROWS), &|t0, t1| {
            let mut tile = vec![0f32; TILE_ROWS * k];
            for t in t0..t1 {
                let j0 = t * TILE_ROWS;
                let rows = TILE_ROWS.min(n - j0);
                for (r, dst) in tile.chunks_exact_mut(k).enumerate() {
                    match bytes.get((j0 + r) * row_bytes..(j0 + r + 1) * row_bytes) {
                        Some(row) if r < rows => match vector {
                            Some(dequant) => dequant(row, dst),
                            None => ops::dequant_row(format, row, dst),
                        },
                        _ => dst.fill(0.0),
                    }
                }
                ops::gemm_tile(&tile, x, k, &mut |i, r, v| {
                    if r < rows {
                        // SAFETY: the columns of tile t belong to this task alone; i·n + j0 + r
                        // < m·n = y.len().
                        unsafe { out.put(i * n + j0 + r, v, accumulate) };
                    }
                });
            }
        });
        return Ok(());
    }
    pool.ranges(n, &|j0, j1| {
        let mut acc = vec![0f32; m];
        let mut buf = [0f32; CHUNK];
        for j in j0..j1 {
            let row = &bytes[j * row_bytes..(j + 1) * row_bytes];
            ops::row_dot(format, row, x, k, &mut acc, &mut buf);
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: column j belongs to this task alone; i·n + j < m·n = y.len().
                unsafe { out.put(i * n + j, *a, accumulate) };
            }
        }
    });
    Ok(())
}

/// Row `r` of a [rows, cols] table in any format, in f32, times `scale` (embedding lookups).
pub fn table_row(w: &HostTensor, r: usize, scale: f32, out: &mut [f32]) -> Result<()> {
    if r >= w.rows() || out.len() != w.cols() {
        return Err(Error::ShapeMismatch {
            kernel: "cpu embed",
            detail: format!(
                "row {r} of '{}' ({:?}) into {} values",
                w.name(),
                w.shape(),
                out.len()
            ),
        });
    }
    crate::quant::dequantize(w.dtype(), w.row_bytes(r), out)?;
    if scale != 1.0 {
        out.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(())
}

/// Values below which [`par_chunks`] runs on the caller's thread: waking the pool costs more.
const PAR_MIN: usize = 16 * 1024;

/// Runs `f(offset, chunk)` over `data` cut into contiguous chunks of whole `width`-value rows
/// (`offset`: the chunk's first index), spread over the pool: the element-wise work between
/// the matrix products (activations, norms), which on one thread capped the gain of more
/// (GELU's `erf` alone was a seventh of an embedding batch's time).
pub fn par_chunks(
    pool: &Pool,
    data: &mut [f32],
    width: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let rows = data.len() / width.max(1);
    if data.len() < PAR_MIN || pool.threads() == 1 {
        return f(0, data);
    }
    let out = Out(data.as_mut_ptr());
    pool.ranges(rows, &|r0, r1| {
        // SAFETY: the ranges are disjoint and inside `data` (r1 ≤ rows), and `ranges` returns
        // only when every range is done, while `data` is still borrowed mutably.
        let chunk =
            unsafe { std::slice::from_raw_parts_mut(out.at(r0 * width), (r1 - r0) * width) };
        f(r0 * width, chunk);
    });
}

/// `act(gate) · up`, element-wise, into `gate`, over the pool.
pub fn gated(pool: &Pool, gate: &mut [f32], up: &[f32], act: GateActivation) {
    let f = activation(act);
    par_chunks(pool, gate, 1, &|at, g| {
        ops::gated(g, &up[at..at + g.len()], f)
    });
}

/// `act(x)` in place, over the pool.
pub fn activate(pool: &Pool, x: &mut [f32], act: GateActivation) {
    let f = activation(act);
    par_chunks(pool, x, 1, &|_, x| x.iter_mut().for_each(|v| *v = f(*v)));
}

fn activation(act: GateActivation) -> fn(f32) -> f32 {
    match act {
        GateActivation::Silu => ops::silu,
        GateActivation::GeluTanh => ops::gelu_tanh,
        GateActivation::GeluErf => ops::gelu_erf,
    }
}

/// What one layer's attention needs to know besides its tensors.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Sliding window over this many positions (the query's own included), or with
    /// `bidirectional` the keys less than this many positions away on either side.
    pub window: Option<usize>,
    pub softcap: Option<f32>,
    /// Every query sees every position (encoders) instead of those up to its own.
    pub bidirectional: bool,
    /// The cache holds this many positions as a ring (position p in row p % slots: a causal
    /// sliding window's layer), or `None`: every position, in order.
    pub ring: Option<usize>,
}

/// Causal attention of `tokens` queries at positions `offset..` (q: [tokens, heads, head_dim])
/// over the cached keys and values of positions `0..offset + tokens` (`cache`, f32 or f16: each
/// [positions, kv_heads, head_dim]) into `out` ([tokens, heads, head_dim]). Bidirectional
/// attention (`s.bidirectional`) has every query see all keys.
pub fn attention(
    pool: &Pool,
    s: &AttentionShape,
    q: &[f32],
    cache: KvRows,
    offset: usize,
    out: &mut [f32],
) {
    let positions = cache.len() / (s.kv_heads * s.head_dim).max(1);
    attend(pool, s, q, cache, out, &|t| {
        let pos = offset + t;
        let first = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let last = match (s.bidirectional, s.window) {
            (true, Some(w)) => (pos + w - 1).min(positions - 1),
            (true, None) => positions - 1,
            (false, _) => pos,
        };
        (first, last)
    });
}

/// Attention over inputs packed one after another (an embedder's batch): `starts` holds each
/// input's first row and, last, the number of rows; token t sees the keys of its own input only
/// (up to its own when causal; within `s.window` of its own, when there is one). q, `cache`
/// and `out` as in [`attention`], rows of all inputs together.
pub fn attention_packed(
    pool: &Pool,
    s: &AttentionShape,
    q: &[f32],
    cache: KvRows,
    starts: &[usize],
    out: &mut [f32],
) {
    attend(pool, s, q, cache, out, &|t| {
        let input = starts.partition_point(|&first| first <= t) - 1;
        let first = starts[input];
        let last = if s.bidirectional {
            starts[input + 1] - 1
        } else {
            t
        };
        match s.window {
            Some(w) => (first.max((t + 1).saturating_sub(w)), last.min(t + w - 1)),
            None => (first, last),
        }
    });
}

/// Query rows per task of [`attend`] (tokens × the heads of a grouped-query group), for which
/// each chunk of keys and values is read (and, from an f16 cache, converted) once: 32 for heads
/// of 64 values, 16 for larger ones, whose rows and chunk would not stay in the L1 cache
/// together. (SmolLM2, 2048-token prompts: 32 rows prefilled 1.03–1.1× as fast as 16 from
/// either cache; Gemma 3's heads of 256 1.1× slower.)
fn query_rows(head_dim: usize) -> usize {
    (2048 / head_dim.max(1)).clamp(16, 32)
}

/// Fewest key positions per part when one query's keys are split over threads.
const MIN_SPLIT: usize = 256;

/// Token t's query heads attend to the key positions `visible(t)` (first and last, inclusive).
/// A task takes a block of tokens and one KV head: the rows of every query head that reads that
/// KV head, for each of its tokens, walk the keys together ([`ops::attention_rows`]). Where
/// there are fewer such tasks than twice the threads (decode: one token), each one's keys are
/// split into parts of at least [`MIN_SPLIT`] positions whose softmax states are merged after.
fn attend(
    pool: &Pool,
    s: &AttentionShape,
    q: &[f32],
    cache: KvRows,
    out: &mut [f32],
    visible: &(dyn Fn(usize) -> (usize, usize) + Sync),
) {
    let (hd, heads, kv_heads) = (s.head_dim, s.heads, s.kv_heads.max(1));
    let group = (heads / kv_heads).max(1);
    let tokens = q.len() / (heads * hd).max(1);
    if tokens == 0 || hd == 0 {
        return;
    }
    let block = (query_rows(hd) / group).clamp(1, tokens);
    let units = tokens.div_ceil(block) * kv_heads;
    let threads = pool.threads();
    let splits = if threads == 1 || units >= 2 * threads {
        1
    } else {
        let (first, last) = visible(0);
        (2 * threads)
            .div_ceil(units)
            .min((last + 1 - first) / MIN_SPLIT)
            .max(1)
    };
    let rows = block * group;
    // A unit's first token, KV head and tokens.
    let unit_of = |unit: usize| {
        let (t0, g) = (unit / kv_heads * block, unit % kv_heads);
        (t0, g, block.min(tokens - t0))
    };
    // Where row r of a unit starting at token t0 with KV head g goes in `out`.
    let out_at =
        |t0: usize, g: usize, r: usize| ((t0 + r / group) * heads + g * group + r % group) * hd;
    // Each task's states and unnormalised rows, merged after when the keys are split.
    let mut states = vec![SoftmaxState::EMPTY; units * splits * rows];
    let mut parts = vec![0f32; units * splits * rows * hd];
    let (st_out, part_out) = (Out(states.as_mut_ptr()), Out(parts.as_mut_ptr()));
    let dst = Out(out.as_mut_ptr());
    pool.run(units * splits, &|task| {
        let (unit, split) = (task / splits, task % splits);
        let (t0, g, n) = unit_of(unit);
        let spans: Vec<(usize, usize)> = (t0..t0 + n)
            .flat_map(|t| std::iter::repeat_n(visible(t), group))
            .collect();
        let spans = if splits == 1 {
            spans
        } else {
            let lo = spans.iter().map(|s| s.0).min().unwrap_or(0);
            let len = spans.iter().map(|s| s.1 + 1).max().unwrap_or(0) - lo;
            let (a, z) = (lo + split * len / splits, lo + (split + 1) * len / splits);
            spans
                .into_iter()
                .map(|(f, l)| (f.max(a), l.min(z.wrapping_sub(1))))
                .collect()
        };
        let mut qs = Vec::with_capacity(n * group * hd);
        for t in t0..t0 + n {
            let at = (t * heads + g * group) * hd;
            qs.extend_from_slice(&q[at..at + group * hd]);
        }
        // SAFETY: task `task` alone writes its rows of `states` and `parts`.
        let (st, o) = unsafe {
            (
                std::slice::from_raw_parts_mut(st_out.at(task * rows), spans.len()),
                std::slice::from_raw_parts_mut(part_out.at(task * rows * hd), spans.len() * hd),
            )
        };
        let kv = ops::KvLayout {
            stride: kv_heads * hd,
            at: g * hd,
            slots: s.ring.unwrap_or(usize::MAX),
        };
        ops::attention_rows(&qs, &spans, cache, kv, s.scale, s.softcap, st, o);
        if splits == 1 {
            for (r, (state, row)) in st.iter().zip(o.chunks_exact_mut(hd)).enumerate() {
                state.finish(row);
                // SAFETY: this task alone writes the heads of group g of its tokens.
                unsafe { std::slice::from_raw_parts_mut(dst.at(out_at(t0, g, r)), hd) }
                    .copy_from_slice(row);
            }
        }
    });
    if splits > 1 {
        let per_unit = splits * rows;
        for unit in 0..units {
            let (t0, g, n) = unit_of(unit);
            for r in 0..n * group {
                let mut merged: Vec<(SoftmaxState, &mut [f32])> = Vec::with_capacity(splits);
                let (st, pt) = (
                    &states[unit * per_unit..],
                    &mut parts[unit * per_unit * hd..],
                );
                for (split, chunk) in pt.chunks_exact_mut(rows * hd).take(splits).enumerate() {
                    merged.push((st[split * rows + r], &mut chunk[r * hd..(r + 1) * hd]));
                }
                SoftmaxState::merge(&mut merged);
                let (state, row) = &mut merged[0];
                state.finish(row);
                let at = out_at(t0, g, r);
                out[at..at + hd].copy_from_slice(row);
            }
        }
    }
}

/// LayerNorm of each row of `x` (rows of `w.len()` values) in place: `(x - mean) / √(var + eps)
/// · w + b`.
pub fn layernorm_in_place(pool: &Pool, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = w.len();
    par_chunks(pool, x, n, &|_, x| layernorm_rows(x, w, b, eps));
}

fn layernorm_rows(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = w.len();
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &o) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * g + o;
        }
    }
}

/// Adds `b` to each row of `y` (rows of `b.len()` values).
pub fn add_bias(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(v, &o)| *v += o);
    }
}

#[cfg(all(test, feature = "harness"))]
mod tests {
    use super::{attention, attention_packed, kv_f16, kv_f32, AttentionShape, KvRows, Pool};
    use crate::reference::attention as reference;
    use crate::reference::attention::{AttentionSplit, KvError};
    use crate::reference::Rng;

    /// [`kv_f16`] rounds as IEEE's conversion to f16 does (the `half` crate's) within f16's
    /// normal range, flushes what is below it to a zero of the same sign and saturates what is
    /// beyond it (and NaN) at ±65504; [`kv_f32`] converts what it stores back exactly. Every
    /// f16 value, the ties and neighbours around each, and a sweep of all f32 bit patterns.
    #[test]
    fn the_f16_kv_cache_rounds_to_nearest_within_the_normal_range() {
        let want = |x: f32| -> u16 {
            let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
            let a = x.abs();
            if a.is_nan() || a >= 65520.0 {
                sign | 0x7BFF
            } else if a < 2f32.powi(-14) {
                sign
            } else {
                half::f16::from_f32(x).to_bits()
            }
        };
        let check = |x: f32| {
            let h = kv_f16(x);
            assert_eq!(h, want(x), "{x:e} ({:#010x})", x.to_bits());
            let back = kv_f32(h);
            assert_eq!(
                back.to_bits(),
                half::f16::from_bits(h).to_f32().to_bits(),
                "{h:#06x}"
            );
        };
        for h in 0..=u16::MAX {
            let v = half::f16::from_bits(h).to_f32();
            if !v.is_finite() {
                continue;
            }
            let b = v.to_bits();
            for x in [v, f32::from_bits(b + 1), f32::from_bits(b.wrapping_sub(1))] {
                check(x);
            }
            // The ties with both neighbours (exact in f32), and just either side of them.
            let ulp = f32::from_bits(b & 0x7F80_0000) * 2f32.powi(-10);
            for t in [v.abs() + ulp / 2.0, v.abs() - ulp / 4.0] {
                let t = t.copysign(v);
                let tb = t.to_bits();
                for x in [
                    t,
                    f32::from_bits(tb + 1),
                    f32::from_bits(tb.wrapping_sub(1)),
                ] {
                    check(x);
                }
            }
        }
        for b in (0..=u32::MAX).step_by(4099) {
            check(f32::from_bits(b));
        }
        for x in [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            65504.0,
            65519.99,
            65520.0,
        ] {
            check(x);
        }
    }

    /// Causal and bidirectional attention, with and without sliding windows (symmetric when
    /// bidirectional), packed or not, against the f64 reference: grouped-query groups of 1 to
    /// 4 heads, head sizes with and without a tail past the eight-lane sums, spans that cross
    /// chunks of keys, one query whose keys are split over the threads (decode) and merged,
    /// rings (a window's cache of fewer positions than the context), and soft-capping.
    #[test]
    fn attention_windows_match_the_reference() {
        let mut rng = Rng::new(0x5EED);
        struct Case {
            tokens: usize,
            offset: usize,
            window: Option<usize>,
            bidirectional: bool,
            packed: usize,
            heads: (usize, usize, usize),
            softcap: Option<f32>,
            ring: Option<usize>,
        }
        let case = |tokens, offset, window, bidirectional, packed| Case {
            tokens,
            offset,
            window,
            bidirectional,
            packed,
            heads: (4, 2, 16),
            softcap: None,
            ring: None,
        };
        let cases = [
            case(12, 0, None, false, 0),
            case(7, 20, Some(5), false, 0),
            case(30, 0, None, true, 0),
            case(30, 0, Some(4), true, 0),
            case(9, 11, Some(6), true, 0),
            case(30, 0, Some(3), true, 4),
            case(30, 0, None, true, 4),
            case(30, 0, None, false, 4),
            case(30, 0, Some(3), false, 5),
            // Decode over 700 and 1300 positions: on two threads, the keys split in two and four parts.
            Case {
                heads: (4, 2, 20),
                ..case(1, 700, None, false, 0)
            },
            Case {
                heads: (3, 1, 64),
                ..case(1, 1300, None, false, 0)
            },
            Case {
                heads: (4, 1, 8),
                softcap: Some(1.5),
                ..case(2, 600, None, false, 0)
            },
            // Prefill blocks of tokens over spans of many chunks, groups of 3 and 4.
            Case {
                heads: (6, 2, 12),
                ..case(40, 90, None, false, 0)
            },
            Case {
                heads: (8, 2, 24),
                softcap: Some(3.0),
                ..case(19, 60, Some(45), false, 0)
            },
            // Rings: a window of 37 (and 5) in 37 + 8 (and 5 + 3) rows, wrapped several times.
            Case {
                ring: Some(45),
                ..case(9, 200, Some(37), false, 0)
            },
            Case {
                heads: (2, 2, 16),
                ring: Some(8),
                ..case(4, 61, Some(5), false, 0)
            },
            Case {
                heads: (4, 2, 32),
                ring: Some(300),
                ..case(1, 900, Some(293), false, 0)
            },
        ];
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            for c in &cases {
                let (heads, kv_heads, hd) = c.heads;
                let (tokens, offset, window) = (c.tokens, c.offset, c.window);
                let (bidirectional, packed) = (c.bidirectional, c.packed);
                let positions = offset + tokens;
                let q = rng.vec(tokens * heads * hd, -1.0, 1.0);
                let mut k = rng.vec(positions * kv_heads * hd, -1.0, 1.0);
                let mut v = rng.vec(positions * kv_heads * hd, -1.0, 1.0);
                // Some values an f16 cache holds as subnormals.
                for (i, (k, v)) in k.iter_mut().zip(&mut v).enumerate() {
                    if i % 37 == 5 {
                        *k *= 1e-5;
                        *v *= 3e-6;
                    }
                }
                let scale = 0.25;
                let s = AttentionShape {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    scale,
                    window,
                    softcap: c.softcap,
                    bidirectional,
                    ring: c.ring,
                };
                // A ring holds position p in row p % slots: the last `slots` positions.
                let ring = |all: &[f32]| match c.ring {
                    None => all.to_vec(),
                    Some(slots) => {
                        let w = kv_heads * hd;
                        let mut r = vec![f32::NAN; slots * w];
                        for p in positions.saturating_sub(slots)..positions {
                            r[p % slots * w..][..w].copy_from_slice(&all[p * w..][..w]);
                        }
                        r
                    }
                };
                let (kr, vr) = (ring(&k), ring(&v));
                let run = |cache: KvRows| {
                    let mut out = vec![0f32; q.len()];
                    if packed > 0 {
                        let starts = reference::packed_starts(tokens, packed);
                        attention_packed(&pool, &s, &q, cache, &starts, &mut out);
                    } else {
                        attention(&pool, &s, &q, cache, offset, &mut out);
                    }
                    out
                };
                let out = run(KvRows::F32 {
                    keys: &kr,
                    values: &vr,
                });
                // An f16 cache: the same bits as an f32 one holding the values it rounded to.
                let bits = |x: &[f32]| -> Vec<u16> { x.iter().map(|&x| kv_f16(x)).collect() };
                let rounded =
                    |x: &[f32]| -> Vec<f32> { x.iter().map(|&x| kv_f32(kv_f16(x))).collect() };
                let out16 = run(KvRows::F16 {
                    keys: &bits(&kr),
                    values: &bits(&vr),
                });
                let want16 = run(KvRows::F32 {
                    keys: &rounded(&kr),
                    values: &rounded(&vr),
                });
                let same = out16
                    .iter()
                    .zip(&want16)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{threads} threads, heads {:?}: the f16 cache",
                    c.heads
                );
                let shape = reference::AttentionShape {
                    tokens,
                    n_heads: heads,
                    n_kv_heads: kv_heads,
                    head_dim: hd,
                    offset,
                    window: window.unwrap_or(0),
                    softcap: c.softcap.unwrap_or(0.0),
                    bidirectional,
                    packed,
                };
                let split = AttentionSplit {
                    chunk_len: positions,
                    tile: 1,
                };
                let (want, _) =
                    reference::attention(&q, &k, &v, &shape, scale, split, KvError::EXACT);
                for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(got) - want).abs() < 1e-5,
                        "{threads} threads, tokens {tokens} offset {offset} window {window:?} \
                         bidirectional {bidirectional} packed {packed} heads {:?} softcap {:?} \
                         ring {:?}: element {i} is {got}, the reference {want}",
                        c.heads,
                        c.softcap,
                        c.ring
                    );
                }
            }
        }
    }
}
