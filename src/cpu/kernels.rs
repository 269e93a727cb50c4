//! The CPU backend's kernels. Matrix products read each weight row in its stored format and
//! dequantize one block at a time into a small buffer that the dot products of all the step's
//! tokens share (no float copy of a matrix is ever made); sums run in eight independent f32
//! lanes, which the compiler turns into SIMD (SSE/AVX natively, SIMD128 in wasm).

use crate::cpu::{HostTensor, Pool};
use crate::error::{Error, Result};
use crate::kernels::{GateActivation, RopeLayout};
use crate::load::StoredTensor;
use crate::quant::{block_dequantizer, DType};

/// Whether the build has SIMD the kernels' lanes map to.
pub const SIMD: bool = cfg!(any(
    target_feature = "simd128",
    target_feature = "sse2",
    target_feature = "neon"
));

/// Values converted at a time from plain f16 / bf16 rows.
const CHUNK: usize = 256;

/// `Σ a[i]·b[i]` over the shorter length, in eight lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A pointer to an output that parallel tasks write in disjoint places.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every user writes only indices no other task writes, and the pool's `run` returns
// only when all tasks are done.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `i` (a method, so closures capture the whole `Out`, which is `Sync`).
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
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
    let dtype = w.dtype();
    let row_bytes = dtype.bytes_for(k).unwrap_or(0);
    let bytes = w.bytes();
    let out = Out(y.as_mut_ptr());
    pool.ranges(n, 1, &|j0, j1| {
        let mut acc = vec![0f32; m];
        let mut buf = [0f32; CHUNK];
        for j in j0..j1 {
            acc.fill(0.0);
            row_dot(
                dtype,
                &bytes[j * row_bytes..(j + 1) * row_bytes],
                x,
                k,
                &mut acc,
                &mut buf,
            );
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: column j belongs to this task alone; i·n + j < m·n = y.len().
                unsafe {
                    let p = out.at(i * n + j);
                    *p = if accumulate { *p + a } else { *a };
                }
            }
        }
    });
    Ok(())
}

/// `acc[i] = Σ_k x[i, k] · row[k]` for every row i of x (`acc.len()` rows of `k`), with the
/// weight row in `dtype` as stored.
fn row_dot(dtype: DType, row: &[u8], x: &[f32], k: usize, acc: &mut [f32], buf: &mut [f32; CHUNK]) {
    match dtype {
        DType::F32 => {
            let w: &[f32] = bytemuck::cast_slice(row);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = dot(w, &x[i * k..(i + 1) * k]);
            }
        }
        DType::F16 | DType::BF16 => {
            let w: &[u16] = bytemuck::cast_slice(row);
            for (c, part) in w.chunks(CHUNK).enumerate() {
                let vals = &mut buf[..part.len()];
                if dtype == DType::F16 {
                    for (v, &h) in vals.iter_mut().zip(part) {
                        *v = half::f16::from_bits(h).to_f32();
                    }
                } else {
                    for (v, &h) in vals.iter_mut().zip(part) {
                        *v = f32::from_bits(u32::from(h) << 16);
                    }
                }
                let at = c * CHUNK;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += dot(vals, &x[i * k + at..i * k + at + part.len()]);
                }
            }
        }
        _ => {
            let (bs, bb) = (dtype.block_size(), dtype.block_bytes());
            let dequant = block_dequantizer(dtype).expect("a block-quantized format");
            for (b, block) in row.chunks_exact(bb).enumerate() {
                let vals = &mut buf[..bs];
                dequant(block, vals);
                let at = b * bs;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += dot(vals, &x[i * k + at..i * k + at + bs]);
                }
            }
        }
    }
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

/// RMSNorm of each row of `cols` values of `x` into `out`: `x / sqrt(mean(x²) + eps) · w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let cols = w.len();
    for (row, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let scale = 1.0 / (dot(row, row) / cols as f32 + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// RMSNorm of each row of `x` in place.
pub fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let cols = w.len();
    for row in x.chunks_exact_mut(cols) {
        let scale = 1.0 / (dot(row, row) / cols as f32 + eps).sqrt();
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

/// `x[i] += rmsnorm(h)[i]` per row (sandwich norms).
pub fn rmsnorm_add(h: &[f32], w: &[f32], eps: f32, x: &mut [f32]) {
    let cols = w.len();
    for (row, o) in h.chunks_exact(cols).zip(x.chunks_exact_mut(cols)) {
        let scale = 1.0 / (dot(row, row) / cols as f32 + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o += v * scale * g;
        }
    }
}

/// Rotates each head of `x` ([tokens, heads, head_dim]) for positions `offset..` with a
/// cos/sin table of `[positions, rotary_dim / 2, 2]`.
pub fn rope(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    layout: RopeLayout,
    table: &[f32],
    offset: usize,
) {
    let half = rotary_dim / 2;
    for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let cs = &table[(offset + t) * half * 2..(offset + t + 1) * half * 2];
        for head in token.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = match layout {
                    RopeLayout::NeoX => (i, i + half),
                    RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                };
                let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                let (va, vb) = (head[a], head[b]);
                head[a] = va * c - vb * s;
                head[b] = va * s + vb * c;
            }
        }
    }
}

/// silu(g) = g / (1 + exp(−g)).
fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// The tanh-approximated GELU as `v · σ(2t)` (see shaders/act.wgsl).
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let c = v.clamp(-20.0, 20.0);
    let t = SQRT_2_OVER_PI * (c + 0.044715 * (c * c * c));
    let z = (-2.0 * t.abs()).exp();
    let s = if t >= 0.0 { 1.0 } else { z } / (1.0 + z);
    v * s
}

/// The exact GELU `v · Φ(v)`, Φ from erfc as shaders/act.wgsl computes it (the fit's published
/// coefficients, as the shader writes them).
#[allow(clippy::excessive_precision)]
pub fn gelu_erf(v: f32) -> f32 {
    let c = v.clamp(-20.0, 20.0);
    let z = c.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.265_512_3
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let half_erfc = 0.5 * (t * (p - z * z).exp());
    v * if c >= 0.0 { 1.0 - half_erfc } else { half_erfc }
}

/// `act(gate) · up`, element-wise, into `gate`.
pub fn gated(gate: &mut [f32], up: &[f32], act: GateActivation) {
    let f = match act {
        GateActivation::Silu => silu,
        GateActivation::GeluTanh => gelu_tanh,
        GateActivation::GeluErf => gelu_erf,
    };
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = f(*g) * u;
    }
}

/// `cap · tanh(x / cap)`, with the argument clamped as the GPU does.
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).clamp(-15.0, 15.0).tanh()
}

/// What one layer's attention needs to know besides its tensors.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Sliding window over this many positions (the query's own included).
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

/// Causal attention of `tokens` queries at positions `offset..` (q: [tokens, heads, head_dim])
/// over the cached keys and values of positions `0..offset + tokens` (each [positions, kv_heads,
/// head_dim]) into `out` ([tokens, heads, head_dim]); one task per (token, head).
pub fn attention(
    pool: &Pool,
    s: &AttentionShape,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    offset: usize,
    out: &mut [f32],
) {
    let (hd, kvw) = (s.head_dim, s.kv_heads * s.head_dim);
    let group = s.heads / s.kv_heads.max(1);
    let tokens = q.len() / (s.heads * hd);
    let dst = Out(out.as_mut_ptr());
    pool.run(tokens * s.heads, &|task| {
        let (t, h) = (task / s.heads, task % s.heads);
        let pos = offset + t;
        let first = match s.window {
            Some(w) if pos + 1 > w => pos + 1 - w,
            _ => 0,
        };
        let kvh = h / group.max(1);
        let qh = &q[(t * s.heads + h) * hd..(t * s.heads + h + 1) * hd];
        let mut scores: Vec<f32> = (first..=pos)
            .map(|p| {
                let k = &keys[p * kvw + kvh * hd..p * kvw + (kvh + 1) * hd];
                let x = dot(qh, k) * s.scale;
                match s.softcap {
                    Some(cap) => softcap(x, cap),
                    None => x,
                }
            })
            .collect();
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut total = 0f32;
        for x in &mut scores {
            *x = (*x - max).exp();
            total += *x;
        }
        let mut acc = vec![0f32; hd];
        for (p, &e) in (first..=pos).zip(&scores) {
            let v = &values[p * kvw + kvh * hd..p * kvw + (kvh + 1) * hd];
            for (a, &vv) in acc.iter_mut().zip(v) {
                *a += e * vv;
            }
        }
        let inv = 1.0 / total;
        for (d, a) in acc.iter().enumerate() {
            // SAFETY: this task alone writes head h of token t.
            unsafe { *dst.at((t * s.heads + h) * hd + d) = a * inv };
        }
    });
}
