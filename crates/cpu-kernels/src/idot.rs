//! Integer dot products for decode: the row of activations quantized to 16 bits (blocks of 32,
//! one f32 scale each), every weight block unpacked to 8-bit integers with one scale (and, for
//! formats with a minimum, one offset) per 16 values, and the products summed in 32-bit
//! integers before any float work: per 16 values, two integer multiply-add instructions
//! (`pmaddwd`, `i32x4.dot_i16x8_s`) and one scaling, instead of 16 float multiply-adds and 16
//! conversions of quants to floats.
//!
//! The kernels: AVX2 (detected at run time) or SSE2 natively, SIMD128 in wasm, and portable
//! code elsewhere; the commonest formats also have kernels that read their blocks directly
//! ([`Fused`]). Every kernel computes the same integer sums; only the float accumulation order
//! differs.
//!
//! Why 16 bits and not 8 (llama.cpp's Q8 activations, and the byte dot products of AVX-VNNI and
//! wasm's relaxed SIMD): with 8-bit activations, greedy decoding of the real models this
//! project checks against transformers parts from it (SmolLM2-135M Q4_1 at the 13th token of
//! one prompt, Gemma 3 270M Q4_K_M at the 16th), while the f32 path and the GPU's are exact.
//! 16 bits round each activation to 1/65534 of its block's largest magnitude, below the f16 KV
//! cache's rounding, which keeps those tests exact. Offsets (a block's minimum) are multiplied
//! by the exact f32 sums of the activations.

use crate::blocks::{half, scale_min_k4, scale_q3_k, KVALUES_IQ4NL};

/// Unpacks a row of whole blocks: their quants into `q` (one per value), the scale and the
/// offset of each 16 values into `scale` and `min` (value = `scale[g] · q + min[g]`).
pub type UnpackFn = fn(row: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]);

/// Values per scale of the unpacked form.
pub const GROUP: usize = 16;
/// Activations per 16-bit scale.
pub const QK: usize = 32;

/// A block format as the integer kernels read it.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// Values and bytes per block.
    pub size: usize,
    pub bytes: usize,
    pub unpack: UnpackFn,
    /// Some group has a non-zero offset.
    pub has_min: bool,
    /// The format's kernel that reads its blocks directly (see [`row_dot`]).
    pub fused: Fused,
}

/// The formats with a kernel that reads their blocks directly: in wasm (SIMD128) all of them,
/// natively (AVX2) all but Q2_K and Q3_K, whose unpacked path was as fast. (ggml's names.)
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fused {
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

macro_rules! block_format {
    ($name:ident, $row:ident, $size:expr, $bytes:expr, $f:ident, $min:expr, $fused:expr) => {
        /// One call per row, the block's unpacking inlined into the loop. A function of this
        /// crate (not a closure in the constant, which would be compiled where it is used,
        /// unoptimized in the main crate's debug builds).
        fn $row(row: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
            let per = $size / GROUP;
            for (((block, q), scale), min) in row
                .chunks_exact($bytes)
                .zip(q.chunks_exact_mut($size))
                .zip(scale.chunks_exact_mut(per))
                .zip(min.chunks_exact_mut(per))
            {
                $f(block, q, scale, min);
            }
        }

        pub const $name: Format = Format {
            size: $size,
            bytes: $bytes,
            unpack: $row,
            has_min: $min,
            fused: $fused,
        };
    };
}

block_format!(Q4_0, row_q4_0, 32, 18, unpack_q4_0, false, Fused::Q4_0);
block_format!(Q4_1, row_q4_1, 32, 20, unpack_q4_1, true, Fused::Q4_1);
block_format!(Q5_0, row_q5_0, 32, 22, unpack_q5_0, false, Fused::Q5_0);
block_format!(Q5_1, row_q5_1, 32, 24, unpack_q5_1, true, Fused::Q5_1);
block_format!(Q8_0, row_q8_0, 32, 34, unpack_q8_0, false, Fused::Q8_0);
block_format!(Q2_K, row_q2_k, 256, 84, unpack_q2_k, true, Fused::Q2_K);
block_format!(Q3_K, row_q3_k, 256, 110, unpack_q3_k, false, Fused::Q3_K);
block_format!(Q4_K, row_q4_k, 256, 144, unpack_q4_k, true, Fused::Q4_K);
block_format!(Q5_K, row_q5_k, 256, 176, unpack_q5_k, true, Fused::Q5_K);
block_format!(Q6_K, row_q6_k, 256, 210, unpack_q6_k, false, Fused::Q6_K);
block_format!(
    IQ4_NL,
    row_iq4_nl,
    32,
    18,
    unpack_iq4_nl,
    false,
    Fused::IQ4_NL
);
block_format!(
    IQ4_XS,
    row_iq4_xs,
    256,
    136,
    unpack_iq4_xs,
    false,
    Fused::IQ4_XS
);

/// `q`'s first N values as an array (so that the unpacking loops have no bounds checks and
/// vectorize).
#[inline(always)]
fn first<const N: usize, T>(q: &mut [T]) -> &mut [T; N] {
    (&mut q[..N]).try_into().expect("N values")
}

/// The 16 bytes at `at` as an array.
#[inline(always)]
fn bytes16(b: &[u8], at: usize) -> &[u8; 16] {
    b[at..at + 16].try_into().expect("16 bytes")
}

/// The low nibbles of 16 bytes, then their high nibbles, minus `offset`.
#[inline(always)]
fn nibbles(qs: &[u8; 16], q: &mut [i8; 32], offset: i8) {
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) as i8 - offset;
        q[j + 16] = (qs[j] >> 4) as i8 - offset;
    }
}

#[inline(always)]
fn unpack_q4_0(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    nibbles(bytes16(b, 2), first(q), 8);
    scale[..2].fill(half(b, 0));
}

#[inline(always)]
fn unpack_q4_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    nibbles(bytes16(b, 4), first(q), 0);
    scale[..2].fill(half(b, 0));
    min[..2].fill(half(b, 2));
}

/// The five-bit quants of Q5_0 and Q5_1 (0..32): low nibbles from `qs`, fifth bits from `qh`.
#[inline(always)]
fn five_bits(qh: u32, qs: &[u8; 16], q: &mut [i8; 32], offset: i8) {
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = ((qs[j] & 0x0F) | h0) as i8 - offset;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8 - offset;
    }
}

#[inline(always)]
fn unpack_q5_0(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    five_bits(
        u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
        bytes16(b, 6),
        first(q),
        16,
    );
    scale[..2].fill(half(b, 0));
}

#[inline(always)]
fn unpack_q5_1(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    five_bits(
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        bytes16(b, 8),
        first(q),
        0,
    );
    scale[..2].fill(half(b, 0));
    min[..2].fill(half(b, 2));
}

#[inline(always)]
fn unpack_q8_0(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    let (q, qs): (&mut [i8; 32], &[u8; 32]) = (first(q), b[2..34].try_into().expect("32 bytes"));
    for j in 0..32 {
        q[j] = qs[j] as i8;
    }
    scale[..2].fill(half(b, 0));
}

#[inline(always)]
fn unpack_iq4_nl(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    for (j, &v) in b[2..18].iter().enumerate() {
        q[j] = KVALUES_IQ4NL[usize::from(v & 0x0F)];
        q[j + 16] = KVALUES_IQ4NL[usize::from(v >> 4)];
    }
    scale[..2].fill(half(b, 0));
}

/// An IQ4_XS block's scale of sub-block `ib` (6 bits: a nibble of bytes 4..8 and two bits of
/// the u16 at 2), less 32.
#[inline(always)]
fn iq4_xs_scale(b: &[u8], ib: usize) -> i32 {
    let high = u16::from_le_bytes([b[2], b[3]]);
    let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F;
    i32::from(low | (((high >> (2 * ib)) & 3) as u8) << 4) - 32
}

#[inline(always)]
fn unpack_iq4_xs(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    let d = half(b, 0);
    for (ib, (qs, q)) in b[8..136]
        .chunks_exact(16)
        .zip(q.chunks_exact_mut(32))
        .enumerate()
    {
        for (j, &v) in qs.iter().enumerate() {
            q[j] = KVALUES_IQ4NL[usize::from(v & 0x0F)];
            q[j + 16] = KVALUES_IQ4NL[usize::from(v >> 4)];
        }
        scale[2 * ib..2 * ib + 2].fill(d * iq4_xs_scale(b, ib) as f32);
    }
}

#[inline(always)]
fn unpack_q2_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let (d, dmin) = (half(b, 80), half(b, 82));
    // Group 8n + 2j + s is plane j (bits 2j) of bytes 16s..16s + 16 of half n.
    for (n, qs) in b[16..80].chunks_exact(32).enumerate() {
        for j in 0..4 {
            for s in 0..2 {
                let g = 8 * n + 2 * j + s;
                for l in 0..16 {
                    q[GROUP * g + l] = ((qs[16 * s + l] >> (2 * j)) & 3) as i8;
                }
                let sc = b[g];
                scale[g] = d * f32::from(sc & 0x0F);
                min[g] = -(dmin * f32::from(sc >> 4));
            }
        }
    }
}

#[inline(always)]
fn unpack_q3_k(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    let (hmask, scales, d) = (&b[..32], &b[96..108], half(b, 108));
    for (n, qs) in b[32..96].chunks_exact(32).enumerate() {
        for j in 0..4 {
            let bit = 4 * n + j;
            for s in 0..2 {
                let g = 8 * n + 2 * j + s;
                for l in 0..16 {
                    let lo = ((qs[16 * s + l] >> (2 * j)) & 3) as i8;
                    let h = ((hmask[16 * s + l] >> bit) & 1) as i8;
                    q[GROUP * g + l] = lo - 4 + 4 * h;
                }
                scale[g] = d * (scale_q3_k(g, scales) - 32) as f32;
            }
        }
    }
}

/// Q4_K and Q5_K: four chunks of 64 values (the low nibbles of 32 bytes, then their high ones),
/// each half with a 6-bit scale and minimum; `high(chunk, l)` is the fifth bit of both halves
/// (0 for Q4_K).
#[inline(always)]
fn unpack_k4(
    b: &[u8],
    qs: &[u8],
    high: impl Fn(usize, usize) -> (u8, u8),
    q: &mut [i8],
    scale: &mut [f32],
    min: &mut [f32],
) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    for (c, qs) in qs.chunks_exact(32).enumerate() {
        for l in 0..32 {
            let (h1, h2) = high(c, l);
            q[64 * c + l] = ((qs[l] & 0x0F) | h1) as i8;
            q[64 * c + 32 + l] = ((qs[l] >> 4) | h2) as i8;
        }
        for half_ in 0..2 {
            let (sc, m) = scale_min_k4(2 * c + half_, scales);
            let g = 4 * c + 2 * half_;
            scale[g..g + 2].fill(d * f32::from(sc));
            min[g..g + 2].fill(-(dmin * f32::from(m)));
        }
    }
}

#[inline(always)]
fn unpack_q4_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    unpack_k4(b, &b[16..144], |_, _| (0, 0), q, scale, min);
}

#[inline(always)]
fn unpack_q5_k(b: &[u8], q: &mut [i8], scale: &mut [f32], min: &mut [f32]) {
    let qh = &b[16..48];
    let high = |c: usize, l: usize| {
        (
            ((qh[l] >> (2 * c)) & 1) << 4,
            ((qh[l] >> (2 * c + 1)) & 1) << 4,
        )
    };
    unpack_k4(b, &b[48..176], high, q, scale, min);
}

#[inline(always)]
fn unpack_q6_k(b: &[u8], q: &mut [i8], scale: &mut [f32], _: &mut [f32]) {
    let d = half(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let q = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            q[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            q[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            q[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            q[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    // Value l + 32t of half n is in group 8n + 2t + l/16, whose scale is byte 192 + that group.
    for (s, &sc) in scale.iter_mut().zip(&b[192..208]) {
        *s = d * f32::from(sc as i8);
    }
}

/// A row of activations quantized to 16 bits: `x[i] ≈ d[i / 32] · q[i]`, and what the kernels
/// need per 16 values (their block's scale, and the exact sum of the 16 activations), and per
/// block of 32 the sum of its two 16-value sums (for the minimums of the 32-value formats and
/// Q4_K's sub-blocks, once per matmul rather than once per weight block).
#[derive(Debug, Default)]
pub struct Activations {
    q: Vec<i16>,
    d16: Vec<f32>,
    sum16: Vec<f32>,
    sum32: Vec<f32>,
}

impl Activations {
    /// `x` (a multiple of 32 values) quantized: `d = max|x| / 32767`, `q = round(x / d)`.
    pub fn new(x: &[f32]) -> Self {
        assert!(
            x.len().is_multiple_of(QK),
            "{} activations are not whole blocks of {QK}",
            x.len()
        );
        let mut a = Self {
            q: vec![0; x.len()],
            d16: Vec::with_capacity(x.len() / GROUP),
            sum16: Vec::with_capacity(x.len() / GROUP),
            sum32: Vec::new(),
        };
        // Adding and subtracting 1.5 · 2²³ rounds |v| < 2²² to the nearest integer (ties to
        // even) in two instructions: `round` and `max` are library calls in wasm. A NaN in x
        // becomes 0, as with `as`.
        const ROUND: f32 = 12_582_912.0;
        for (xb, qb) in x.chunks_exact(QK).zip(a.q.chunks_exact_mut(QK)) {
            let amax = xb
                .iter()
                .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
            let d = amax / f32::from(i16::MAX);
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = ((v * id + ROUND) - ROUND) as i16;
            }
            a.d16.extend([d, d]);
            a.sum16
                .extend(xb.chunks_exact(GROUP).map(|g| g.iter().sum::<f32>()));
        }
        a.sum32 = a.sum16.chunks_exact(2).map(|s| s[0] + s[1]).collect();
        a
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// One task's buffers for [`row_dot`]: a row unpacked.
#[derive(Debug, Default)]
pub struct Scratch {
    q: Vec<i8>,
    scale: Vec<f32>,
    min: Vec<f32>,
}

/// The 32-value formats' kernels take their format as a const parameter.
mod k32 {
    pub const Q4_0: u8 = 0;
    pub const Q4_1: u8 = 1;
    pub const Q8_0: u8 = 2;
    pub const Q5_0: u8 = 3;
    pub const Q5_1: u8 = 4;
    pub const IQ4_NL: u8 = 5;

    /// Where format `f`'s quants start in its block, and whether it has a minimum (an f16 at
    /// byte 2; the scale is at byte 0). Q5's 32 fifth bits are the 4 bytes before the quants.
    pub const fn layout(f: u8) -> (usize, bool) {
        match f {
            Q4_0 | Q8_0 | IQ4_NL => (2, false),
            Q4_1 => (4, true),
            Q5_0 => (6, false),
            _ => (8, true),
        }
    }

    /// A Q5 block's 32 fifth bits (bit j for value j), the 4 bytes before its quants at `qs`.
    #[inline(always)]
    pub fn fifth_bits(block: &[u8], qs: usize) -> u32 {
        let b = &block[qs - 4..qs];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// `Σ w[i] · x[i]` for one weight row in `format` (`row`: whole blocks, as many values as `x`).
/// The [`Fused`] kernels read the blocks directly (no unpacked copy): in wasm (about 1.5× fewer
/// instructions per block for the 32-value formats, half the time per weight for Q4_K), and
/// natively with AVX2 (the unpacking was half of native decode's time, the integer products a
/// quarter) but for Q2_K and Q3_K; the rest goes through [`row_dot_unpacked`].
pub fn row_dot(format: Format, row: &[u8], x: &Activations, s: &mut Scratch) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use k32::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
        let _ = s;
        let kernel: fn(usize, &[u8], &Activations) -> f32 = match format.fused {
            Fused::Q4_0 => wasm::row_dot_32::<Q4_0>,
            Fused::Q4_1 => wasm::row_dot_32::<Q4_1>,
            Fused::Q8_0 => wasm::row_dot_32::<Q8_0>,
            Fused::Q5_0 => wasm::row_dot_32::<Q5_0>,
            Fused::Q5_1 => wasm::row_dot_32::<Q5_1>,
            Fused::IQ4_NL => wasm::row_dot_32::<{ k32::IQ4_NL }>,
            Fused::Q4_K => |_, row: &[u8], x: &Activations| wasm::row_dot_k4::<false>(row, x),
            Fused::Q5_K => |_, row: &[u8], x: &Activations| wasm::row_dot_k4::<true>(row, x),
            Fused::Q2_K => |_, row: &[u8], x: &Activations| wasm::row_dot_q2_k(row, x),
            Fused::Q3_K => |_, row: &[u8], x: &Activations| wasm::row_dot_q3_k(row, x),
            Fused::Q6_K => |_, row: &[u8], x: &Activations| wasm::row_dot_q6_k(row, x),
            Fused::IQ4_XS => |_, row: &[u8], x: &Activations| wasm::row_dot_iq4_xs(row, x),
        };
        assert_row(format, row, x);
        kernel(format.bytes, row, x)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx2() && !matches!(format.fused, Fused::Q2_K | Fused::Q3_K) {
            assert_row(format, row, x);
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            return unsafe { x86::row_dot_fused(format.fused, format.bytes, row, x) };
        }
        row_dot_unpacked(format, row, x, s)
    }
}

/// Dequantizes a row of whole blocks into its values.
pub type RowDequant = fn(&[u8], &mut [f32]);

/// Dequantizes a row of `format` (whole blocks, into as many values) faster than
/// [`crate::blocks`]'s block functions, to the same values bit for bit, where the target has
/// a way: in wasm (SIMD128) the 32-value formats, Q4_K, Q5_K and Q6_K (the scalar forms took a
/// third of a 16-token prefill's matmul time in Chromium).
pub fn vector_dequant(format: Format) -> Option<RowDequant> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use k32::{IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
        Some(match format.fused {
            Fused::Q4_0 => wasm::dequant_row_32::<Q4_0>,
            Fused::Q4_1 => wasm::dequant_row_32::<Q4_1>,
            Fused::Q8_0 => wasm::dequant_row_32::<Q8_0>,
            Fused::Q5_0 => wasm::dequant_row_32::<Q5_0>,
            Fused::Q5_1 => wasm::dequant_row_32::<Q5_1>,
            Fused::IQ4_NL => wasm::dequant_row_32::<IQ4_NL>,
            Fused::Q4_K => wasm::dequant_row_k4::<false>,
            Fused::Q5_K => wasm::dequant_row_k4::<true>,
            Fused::Q6_K => wasm::dequant_row_q6_k,
            _ => return None,
        })
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let _ = format;
        None
    }
}

/// `row` is whole blocks of `format` holding as many values as `x`.
fn assert_row(format: Format, row: &[u8], x: &Activations) {
    let k = x.len();
    assert!(
        row.len() * format.size == k * format.bytes && k.is_multiple_of(format.size),
        "a row of {} bytes against {k} activations",
        row.len()
    );
}

/// [`row_dot`] through the unpacked form (every format, every target).
pub fn row_dot_unpacked(format: Format, row: &[u8], x: &Activations, s: &mut Scratch) -> f32 {
    assert_row(format, row, x);
    let k = x.len();
    let groups = k / GROUP;
    s.q.resize(k, 0);
    s.scale.resize(groups, 0.0);
    s.min.resize(groups, 0.0);
    (format.unpack)(row, &mut s.q, &mut s.scale, &mut s.min);
    for (sc, d) in s.scale.iter_mut().zip(&x.d16) {
        *sc *= d;
    }
    let sum = dot_groups(&s.q, &x.q, &s.scale);
    if format.has_min {
        sum + crate::ops::dot(&s.min, &x.sum16)
    } else {
        sum
    }
}

/// `Σ_g scale[g] · Σ_{l<16} w[16g + l] · x[16g + l]`, the inner sums in integers (at most
/// 16 · 128 · 32767 in magnitude: no overflow).
fn dot_groups(w: &[i8], x: &[i16], scale: &[f32]) -> f32 {
    debug_assert!(w.len() == x.len() && w.len() == scale.len() * GROUP);
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
            return unsafe { x86::dot_groups_avx2(w, x, scale) };
        }
        x86::dot_groups_sse2(w, x, scale)
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        wasm::dot_groups(w, x, scale)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        dot_groups_portable(w, x, scale)
    }
}

/// [`dot_groups`] in plain Rust (other targets, and the tests' reference).
pub fn dot_groups_portable(w: &[i8], x: &[i16], scale: &[f32]) -> f32 {
    w.chunks_exact(GROUP)
        .zip(x.chunks_exact(GROUP))
        .zip(scale)
        .map(|((w, x), s)| {
            let i: i32 = w
                .iter()
                .zip(x)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            s * i as f32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::k32::{self, IQ4_NL, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};
    use super::{Activations, Fused, GROUP, QK};
    use crate::blocks::scale_min_k4;

    /// How far ahead of the block being read the kernels prefetch, in bytes.
    const PREFETCH: usize = 1024;

    /// Asks for the `lines` cache lines PREFETCH bytes past the start of `block`: decode streams
    /// each weight once, and the hardware prefetcher alone left the kernels waiting on memory
    /// (1.25–1.37× faster SmolLM2 decode on one thread with it).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn prefetch(block: &[u8], lines: usize) {
        for l in 0..lines {
            // A prefetch never faults, whatever the address.
            _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add(PREFETCH + 64 * l).cast());
        }
    }

    pub(super) use crate::ops::x86::has_avx2_fma as has_avx2;

    /// The little-endian f16 at `b[at..at + 2]` as f32, by `vcvtph2ps` (exact, as
    /// [`half`]; the software conversion's branches were a fifth of a Q4_1 block's time).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn half(b: &[u8], at: usize) -> f32 {
        let h = u16::from_le_bytes([b[at], b[at + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }

    /// The sum of two or four accumulators' lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn sum<const N: usize>(acc: [__m256; N]) -> f32 {
        let v = acc
            .into_iter()
            .fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, a));
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let mut o = [0f32; 4];
        // SAFETY: 4 floats into a 4-float array.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), v) };
        (o[0] + o[2]) + (o[1] + o[3])
    }

    /// `Σ w · x` of 32 weight bytes (signed) and 32 activations, as eight 32-bit sums: lanes
    /// 0–3 hold the first 16 values' and 4–7 the last 16's, pairwise.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dot32(w: __m256i, x: &[i16]) -> (__m256i, __m256i) {
        let x = &x[..32];
        // SAFETY: 32 values; unaligned loads.
        let (x0, x1) = unsafe {
            (
                _mm256_loadu_si256(x.as_ptr().cast()),
                _mm256_loadu_si256(x.as_ptr().add(16).cast()),
            )
        };
        (
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)), x0),
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1)), x1),
        )
    }

    /// 32 bytes at `at` of `b`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn load32(b: &[u8], at: usize) -> __m256i {
        let b = &b[at..at + 32];
        // SAFETY: 32 readable bytes; an unaligned load.
        unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
    }

    /// 16 bytes at `at` of `b`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn load16(b: &[u8], at: usize) -> __m128i {
        let b = &b[at..at + 16];
        // SAFETY: 16 readable bytes; an unaligned load.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    }

    /// `acc + i · s` for eight 32-bit sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scaled(acc: __m256, i: __m256i, s: f32) -> __m256 {
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(s), acc)
    }

    /// [`super::row_dot`] straight from the blocks of `f`: nibbles (and Q6_K's high bits) split
    /// in vector registers, 32 values per pair of `vpmaddwd`, one scaling per 16 or 32 values.
    /// The same integer sums as the unpacked path.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn row_dot_fused(f: Fused, bytes: usize, row: &[u8], x: &Activations) -> f32 {
        match f {
            Fused::Q4_0 => row_dot_32::<Q4_0>(bytes, row, x),
            Fused::Q4_1 => row_dot_32::<Q4_1>(bytes, row, x),
            Fused::Q8_0 => row_dot_32::<Q8_0>(bytes, row, x),
            Fused::Q5_0 => row_dot_32::<Q5_0>(bytes, row, x),
            Fused::Q5_1 => row_dot_32::<Q5_1>(bytes, row, x),
            Fused::IQ4_NL => row_dot_32::<IQ4_NL>(bytes, row, x),
            Fused::Q4_K => row_dot_k4::<false>(row, x),
            Fused::Q5_K => row_dot_k4::<true>(row, x),
            Fused::Q6_K => row_dot_q6_k(row, x),
            Fused::IQ4_XS => row_dot_iq4_xs(row, x),
            // Not called (see super::row_dot): the unpacked path was as fast or faster.
            Fused::Q2_K | Fused::Q3_K => unreachable!("no AVX2 kernel for {f:?}"),
        }
    }

    /// The 32 fifth bits of a Q5 block (`qh`, bit j for value j) as 32 bytes: 0xFF where set.
    /// Each byte gets its bit's byte of `qh` by a shuffle, all other bits set, and is compared
    /// with all ones.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn bits_to_bytes(qh: u32) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
    }

    /// Q4_0, Q4_1, Q8_0, Q5_0 and Q5_1 (F: [`k32`]'s constants).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn row_dot_32<const F: u8>(bytes: usize, row: &[u8], x: &Activations) -> f32 {
        let (qs, has_min) = k32::layout(F);
        // Four accumulators (vector and minimums), rotated each block, so that no chain of
        // dependent additions limits the loop; in registers (`acc[b % 4]` would go through
        // memory).
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            prefetch(block, 1);
            let w = if F == Q8_0 {
                load32(block, qs)
            } else {
                let v = load16(block, qs);
                let m = _mm_set1_epi8(0x0F);
                let (lo, hi) = (_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m));
                let w = _mm256_set_m128i(hi, lo);
                match F {
                    Q4_0 => _mm256_sub_epi8(w, _mm256_set1_epi8(8)),
                    IQ4_NL => _mm256_shuffle_epi8(iq4_table(), w),
                    Q5_0 | Q5_1 => {
                        let set = bits_to_bytes(k32::fifth_bits(block, qs));
                        if F == Q5_0 {
                            // (q | h << 4) − 16: q where the bit is set, q − 16 = q | 0xF0
                            // (as i8) where it is not.
                            _mm256_or_si256(w, _mm256_andnot_si256(set, _mm256_set1_epi8(-16)))
                        } else {
                            _mm256_or_si256(w, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
                        }
                    }
                    _ => w,
                }
            };
            let (i0, i1) = dot32(w, &x.q[QK * b..]);
            let next = scaled(
                acc[3],
                _mm256_add_epi32(i0, i1),
                half(block, 0) * x.d16[2 * b],
            );
            acc = [next, acc[0], acc[1], acc[2]];
            if has_min {
                let m = mins[3] + half(block, 2) * x.sum32[b];
                mins = [m, mins[0], mins[1], mins[2]];
            }
        }
        sum(acc) + ((mins[0] + mins[1]) + (mins[2] + mins[3]))
    }

    /// Q4_K (and, `Q5`, Q5_K): per 64 values, 32 bytes whose low nibbles are one 32-value
    /// sub-block and high nibbles the next, each with its 6-bit scale and minimum (Q5_K: the
    /// fifth bits, bit j of 32 bytes for sub-block j, by a byte compare).
    #[target_feature(enable = "avx2,fma,f16c")]
    fn row_dot_k4<const Q5: bool>(row: &[u8], x: &Activations) -> f32 {
        let (bytes, qs) = if Q5 { (176, 48) } else { (144, 16) };
        // Rotated accumulators, as in row_dot_32.
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        let (m, m10) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            prefetch(block, bytes.div_ceil(64));
            let (d, dmin) = (half(block, 0), half(block, 2));
            let scales = &block[4..16];
            // Q5_K: bit j of byte l is the fifth bit of value l of sub-block j.
            let qh = if Q5 { load32(block, 16) } else { m };
            for c in 0..4 {
                let v = load32(block, qs + 32 * c);
                let halves = [
                    _mm256_and_si256(v, m),
                    _mm256_and_si256(_mm256_srli_epi16(v, 4), m),
                ];
                for (h, mut w) in halves.into_iter().enumerate() {
                    let j = 2 * c + h;
                    if Q5 {
                        let bit = _mm256_set1_epi8(1 << j);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                        w = _mm256_or_si256(w, _mm256_and_si256(set, m10));
                    }
                    let a = 8 * b + j;
                    let (sc, mn) = scale_min_k4(j, scales);
                    let (i0, i1) = dot32(w, &x.q[QK * a..]);
                    let i = _mm256_add_epi32(i0, i1);
                    let next = scaled(acc[3], i, d * f32::from(sc) * x.d16[2 * a]);
                    acc = [next, acc[0], acc[1], acc[2]];
                    let m = mins[3] - dmin * f32::from(mn) * x.sum32[a];
                    mins = [m, mins[0], mins[1], mins[2]];
                }
            }
        }
        sum(acc) + ((mins[0] + mins[1]) + (mins[2] + mins[3]))
    }

    /// IQ4_NL's (and IQ4_XS's) 16 values in both lanes, for `vpshufb`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn iq4_table() -> __m256i {
        // SAFETY: 16 readable bytes; an unaligned load.
        let t = unsafe { _mm_loadu_si128(crate::blocks::KVALUES_IQ4NL.as_ptr().cast()) };
        _mm256_broadcastsi128_si256(t)
    }

    /// IQ4_XS: per 32 values, 16 bytes of nibbles mapped to the non-linear values by `vpshufb`,
    /// and a 6-bit scale.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn row_dot_iq4_xs(row: &[u8], x: &Activations) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let (m, table) = (_mm_set1_epi8(0x0F), iq4_table());
        for (b, block) in row.chunks_exact(136).enumerate() {
            prefetch(block, 3);
            let d = half(block, 0);
            for ib in 0..8 {
                let ls = super::iq4_xs_scale(block, ib);
                let v = load16(block, 8 + 16 * ib);
                let (lo, hi) = (_mm_and_si128(v, m), _mm_and_si128(_mm_srli_epi16(v, 4), m));
                let w = _mm256_shuffle_epi8(table, _mm256_set_m128i(hi, lo));
                let a = 8 * b + ib;
                let (i0, i1) = dot32(w, &x.q[QK * a..]);
                let next = scaled(
                    acc[3],
                    _mm256_add_epi32(i0, i1),
                    d * ls as f32 * x.d16[2 * a],
                );
                acc = [next, acc[0], acc[1], acc[2]];
            }
        }
        sum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn row_dot_q6_k(row: &[u8], x: &Activations) -> f32 {
        // Rotated accumulators, as in row_dot_32.
        let mut acc = [_mm256_setzero_ps(); 4];
        let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
        let m30 = _mm256_set1_epi8(0x30);
        for (b, block) in row.chunks_exact(210).enumerate() {
            prefetch(block, 4);
            let d = half(block, 208);
            let sc = &block[192..208];
            for n in 0..2 {
                let (l0, l1) = (load32(block, 64 * n), load32(block, 64 * n + 32));
                let qh = load32(block, 128 + 32 * n);
                let w = [
                    _mm256_or_si256(
                        _mm256_and_si256(l0, m4),
                        _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(l1, m4),
                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                    ),
                ];
                for (t, w) in w.into_iter().enumerate() {
                    let w = _mm256_sub_epi8(w, _mm256_set1_epi8(32));
                    let a = 8 * b + 4 * n + t;
                    let g = 8 * n + 2 * t;
                    let dx = d * x.d16[2 * a];
                    let (i0, i1) = dot32(w, &x.q[QK * a..]);
                    acc = [
                        scaled(acc[2], i0, dx * f32::from(sc[g] as i8)),
                        scaled(acc[3], i1, dx * f32::from(sc[g + 1] as i8)),
                        acc[0],
                        acc[1],
                    ];
                }
            }
        }
        sum(acc)
    }

    /// Two groups (32 values) at a time: the weights' bytes sign-extended to 16 bits, `madd`
    /// multiplies them by the activations and sums pairs into eight 32-bit lanes per group,
    /// which are converted and scaled by a fused multiply-add.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_groups_avx2(w: &[i8], x: &[i16], scale: &[f32]) -> f32 {
        let n = w.len().min(x.len()).min(scale.len() * GROUP);
        let pairs = n / (2 * GROUP);
        let mut acc = [_mm256_setzero_ps(), _mm256_setzero_ps()];
        for p in 0..pairs {
            // SAFETY: 32 bytes of w and 32 values of x at 32p, with 32p + 32 ≤ n; unaligned
            // loads.
            let (wa, wb, xa, xb) = unsafe {
                let wp = w.as_ptr().add(32 * p);
                let xp = x.as_ptr().add(32 * p);
                (
                    _mm_loadu_si128(wp.cast()),
                    _mm_loadu_si128(wp.add(16).cast()),
                    _mm256_loadu_si256(xp.cast()),
                    _mm256_loadu_si256(xp.add(16).cast()),
                )
            };
            let sa = _mm256_madd_epi16(_mm256_cvtepi8_epi16(wa), xa);
            let sb = _mm256_madd_epi16(_mm256_cvtepi8_epi16(wb), xb);
            acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sa), _mm256_set1_ps(scale[2 * p]), acc[0]);
            acc[1] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(sb),
                _mm256_set1_ps(scale[2 * p + 1]),
                acc[1],
            );
        }
        let mut sum = sum(acc);
        let done = 2 * pairs;
        if done * GROUP < n {
            let at = done * GROUP;
            sum += super::dot_groups_portable(&w[at..n], &x[at..n], &scale[done..]);
        }
        sum
    }

    /// One group at a time: the 16 weight bytes sign-extended to 16 bits (SSE2 has no
    /// `pmovsx`: unpacked with themselves, then shifted), multiplied by `madd`.
    pub(super) fn dot_groups_sse2(w: &[i8], x: &[i16], scale: &[f32]) -> f32 {
        let n = w.len().min(x.len()).min(scale.len() * GROUP) / GROUP;
        // SAFETY: SSE2 is part of x86-64; each load reads 16 bytes of w or 16 values of x at
        // 16g, with 16g + 16 ≤ 16n.
        unsafe {
            let mut acc = _mm_setzero_ps();
            for (g, &s) in scale.iter().enumerate().take(n) {
                let wv = _mm_loadu_si128(w.as_ptr().add(GROUP * g).cast());
                let (w0, w1) = (
                    _mm_srai_epi16(_mm_unpacklo_epi8(wv, wv), 8),
                    _mm_srai_epi16(_mm_unpackhi_epi8(wv, wv), 8),
                );
                let xp = x.as_ptr().add(GROUP * g);
                let (x0, x1) = (
                    _mm_loadu_si128(xp.cast()),
                    _mm_loadu_si128(xp.add(8).cast()),
                );
                let i = _mm_add_epi32(_mm_madd_epi16(w0, x0), _mm_madd_epi16(w1, x1));
                acc = _mm_add_ps(acc, _mm_mul_ps(_mm_cvtepi32_ps(i), _mm_set1_ps(s)));
            }
            let mut o = [0f32; 4];
            _mm_storeu_ps(o.as_mut_ptr(), acc);
            (o[0] + o[2]) + (o[1] + o[3])
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use core::arch::wasm32::*;

    use super::k32::{self, IQ4_NL, Q4_0, Q5_0, Q5_1, Q8_0};
    use super::{Activations, GROUP, QK};
    use crate::blocks::half;

    /// One group at a time: the weight bytes widened to 16 bits, `i32x4.dot_i16x8_s` multiplies
    /// them by the activations and sums pairs into 32-bit lanes, the four lanes scaled in f32.
    pub(super) fn dot_groups(w: &[i8], x: &[i16], scale: &[f32]) -> f32 {
        let n = w.len().min(x.len()).min(scale.len() * GROUP) / GROUP;
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        for (g, &s) in scale.iter().enumerate().take(n) {
            // SAFETY: 16 bytes of w at 16g, with 16g + 16 ≤ 16n; wasm loads take any alignment.
            let wv = unsafe { v128_load(w.as_ptr().add(GROUP * g).cast()) };
            let i = dot16(wv, &x[GROUP * g..]);
            accumulate(&mut acc, i, f32x4_splat(s));
        }
        sum(acc)
    }

    /// The sum of two f32x4 accumulators' eight lanes.
    #[inline(always)]
    fn sum(acc: [v128; 2]) -> f32 {
        hsum(f32x4_add(acc[0], acc[1]))
    }

    /// The sum of one vector's four lanes, (0 + 2) + (1 + 3).
    #[inline(always)]
    fn hsum(v: v128) -> f32 {
        (f32x4_extract_lane::<0>(v) + f32x4_extract_lane::<2>(v))
            + (f32x4_extract_lane::<1>(v) + f32x4_extract_lane::<3>(v))
    }

    /// `Σ w · x` over 16 weight bytes (`w`, signed) and 16 activations.
    #[inline(always)]
    fn dot16(w: v128, x: &[i16]) -> v128 {
        let x = &x[..16];
        // SAFETY: 16 values; wasm loads take any alignment.
        let (x0, x1) = unsafe {
            (
                v128_load(x.as_ptr().cast()),
                v128_load(x.as_ptr().add(8).cast()),
            )
        };
        i32x4_add(
            i32x4_dot_i16x8(i16x8_extend_low_i8x16(w), x0),
            i32x4_dot_i16x8(i16x8_extend_high_i8x16(w), x1),
        )
    }

    /// 16 bytes at `at` of `b`.
    #[inline(always)]
    fn load16(b: &[u8], at: usize) -> v128 {
        let b = &b[at..at + 16];
        // SAFETY: 16 readable bytes; wasm loads take any alignment.
        unsafe { v128_load(b.as_ptr().cast()) }
    }

    /// [`super::row_dot`] for the 32-value formats (F: [`k32`]'s constants) straight from their
    /// blocks: the nibbles (or bytes) split in vector registers, the block's two 16-value halves
    /// multiplied by `i32x4.dot_i16x8_s`, the block's sums scaled once. The same integer sums as
    /// the unpacked path.
    ///
    /// The f16 scales (and minimums) of four blocks at a time are converted in one vector
    /// ([`f16x4_to_f32x4`]; wasm has no f16 conversion, and one per block in scalar code was a
    /// quarter of a block's instructions) and multiplied by their activations' scales (or
    /// sums) there; the minimums' four sums are the vector's lanes. Every product and every sum is
    /// the one the block-by-block form computes, in the same order: the result is the same to
    /// the bit.
    pub(super) fn row_dot_32<const F: u8>(bytes: usize, row: &[u8], x: &Activations) -> f32 {
        let (_, has_min) = k32::layout(F);
        // Rotated accumulators, as in the x86 kernel.
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let mut mins = f32x4_splat(0.0);
        let quads = row.chunks_exact(4 * bytes);
        let tail = quads.remainder();
        let mut b = 0;
        for quad in quads {
            // Per block: its scale times its activations'.
            let d = f32x4_mul(halves4(quad, bytes, 0), scales32(x, b));
            if has_min {
                let m = f32x4_mul(halves4(quad, bytes, 2), load4(&x.sum32, b));
                mins = f32x4_add(mins, m);
            }
            let xq = &x.q[QK * b..QK * (b + 4)];
            let (q0, q1, q2, q3) = (
                &quad[..bytes],
                &quad[bytes..],
                &quad[2 * bytes..],
                &quad[3 * bytes..],
            );
            block_32::<F>(q0, &xq[..QK], i32x4_shuffle::<0, 0, 0, 0>(d, d), &mut acc);
            block_32::<F>(q1, &xq[QK..], i32x4_shuffle::<1, 1, 1, 1>(d, d), &mut acc);
            block_32::<F>(
                q2,
                &xq[2 * QK..],
                i32x4_shuffle::<2, 2, 2, 2>(d, d),
                &mut acc,
            );
            block_32::<F>(
                q3,
                &xq[3 * QK..],
                i32x4_shuffle::<3, 3, 3, 3>(d, d),
                &mut acc,
            );
            b += 4;
        }
        // Block b's minimum goes to sum b mod 4.
        let mut m = [
            f32x4_extract_lane::<0>(mins),
            f32x4_extract_lane::<1>(mins),
            f32x4_extract_lane::<2>(mins),
            f32x4_extract_lane::<3>(mins),
        ];
        for (j, block) in tail.chunks_exact(bytes).enumerate() {
            let d = half(block, 0) * x.d16[2 * (b + j)];
            block_32::<F>(block, &x.q[QK * (b + j)..], f32x4_splat(d), &mut acc);
            if has_min {
                m[j] += half(block, 2) * x.sum32[b + j];
            }
        }
        // The four sums paired as the block-by-block form's rotation leaves them.
        let min = if (row.len() / bytes).is_multiple_of(2) {
            (m[0] + m[1]) + (m[2] + m[3])
        } else {
            (m[0] + m[3]) + (m[1] + m[2])
        };
        sum(acc) + min
    }

    /// [`super::row_dot`] for Q4_K (and, `Q5`, Q5_K) straight from its blocks: per block, the
    /// eight 6-bit sub-block scales and minimums unpacked, and the products `d · scale ·
    /// (activations' scale)` and `dmin · min · (activations' sum)` formed in two vectors each;
    /// per 32-value sub-block, its nibbles masked in vector registers (Q5_K: its fifth bits,
    /// bit j of 32 bytes for sub-block j, moved to bit 4) and multiplied as in [`row_dot_32`].
    pub(super) fn row_dot_k4<const Q5: bool>(row: &[u8], x: &Activations) -> f32 {
        let (bytes, qs) = if Q5 { (176, 48) } else { (144, 16) };
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let mut mins = f32x4_splat(0.0);
        let m4 = u8x16_splat(0x0F);
        let mut scale = [0f32; 8];
        for (b, block) in row.chunks_exact(bytes).enumerate() {
            let (d, dmin) = (half(block, 0), half(block, 2));
            let (sc, mn) = scales_k4(&block[4..16]);
            // Sub-block j's activations are block 8b + j.
            for (h, out) in scale.chunks_exact_mut(4).enumerate() {
                let v = f32x4_mul(f32x4_mul(f32x4_splat(d), sc[h]), scales32(x, 8 * b + 4 * h));
                store4(out, v);
                let m = f32x4_mul(
                    f32x4_mul(f32x4_splat(dmin), mn[h]),
                    load4(&x.sum32, 8 * b + 4 * h),
                );
                mins = f32x4_sub(mins, m);
            }
            let (qh0, qh1) = if Q5 {
                (load16(block, 16), load16(block, 32))
            } else {
                (m4, m4)
            };
            for c in 0..4 {
                let (v0, v1) = (load16(block, qs + 32 * c), load16(block, qs + 16 + 32 * c));
                for (h, shift) in [(0, 0), (1, 4)] {
                    let j = 2 * c + h;
                    let (mut w0, mut w1) = (
                        v128_and(u8x16_shr(v0, shift), m4),
                        v128_and(u8x16_shr(v1, shift), m4),
                    );
                    if Q5 {
                        // Bit j of each byte, as 0x10 where set.
                        let bit = u8x16_splat(1 << j);
                        (w0, w1) = (
                            v128_or(w0, fifth_bits(qh0, bit)),
                            v128_or(w1, fifth_bits(qh1, bit)),
                        );
                    }
                    let xq = &x.q[QK * (8 * b + j)..];
                    let i = i32x4_add(dot16(w0, &xq[..16]), dot16(w1, &xq[16..QK]));
                    accumulate(&mut acc, i, splat_at(&scale, j));
                }
            }
        }
        sum(acc) + hsum(mins)
    }

    /// Q4_K's (and Q5_K's) eight 6-bit scales and minimums (12 bytes), as two f32 vectors each.
    #[inline(always)]
    fn scales_k4(q: &[u8]) -> ([v128; 2], [v128; 2]) {
        let (mut sc, mut mn) = ([0u32; 8], [0u32; 8]);
        for j in 0..8 {
            let (s, m) = crate::blocks::scale_min_k4(j, q);
            (sc[j], mn[j]) = (u32::from(s), u32::from(m));
        }
        let v = |a: &[u32]| f32x4_convert_u32x4(u32x4(a[0], a[1], a[2], a[3]));
        ([v(&sc[..4]), v(&sc[4..])], [v(&mn[..4]), v(&mn[4..])])
    }

    /// [`super::row_dot`] for Q6_K straight from its blocks: the 6-bit quants assembled from
    /// their nibble and crumb in vector registers, 16 at a time, and the sixteen
    /// `d · (activations' scale) · scale` products of a block formed in four vectors.
    pub(super) fn row_dot_q6_k(row: &[u8], x: &Activations) -> f32 {
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let mut scale = [0f32; 16];
        for (b, block) in row.chunks_exact(210).enumerate() {
            let d = f32x4_splat(half(block, 208));
            let sc = load16(block, 192);
            let (lo, hi) = (i16x8_extend_low_i8x16(sc), i16x8_extend_high_i8x16(sc));
            let sc = [
                i32x4_extend_low_i16x8(lo),
                i32x4_extend_high_i16x8(lo),
                i32x4_extend_low_i16x8(hi),
                i32x4_extend_high_i16x8(hi),
            ];
            // Group g (16 values) of block b has activation group 16b + g.
            for (k, out) in scale.chunks_exact_mut(4).enumerate() {
                let xd = load4(&x.d16, 16 * b + 4 * k);
                let v = f32x4_mul(f32x4_mul(d, xd), f32x4_convert_i32x4(sc[k]));
                store4(out, v);
            }
            for n in 0..2 {
                for h in 0..2 {
                    for (t, w) in quants_q6_k(block, n, h).into_iter().enumerate() {
                        // Values 32t + 16h.. of half n: group 8n + 2t + h.
                        let g = 8 * n + 2 * t + h;
                        let xq = &x.q[GROUP * (16 * b + g)..];
                        accumulate(&mut acc, dot16(w, xq), splat_at(&scale, g));
                    }
                }
            }
        }
        sum(acc)
    }

    /// Values `32t + 16h..32t + 16h + 16` of half `n` of a Q6_K block, t = 0..4, as signed
    /// bytes (`q − 32`): each 6-bit quant assembled from its nibble in `ql` and its crumb in
    /// `qh`, 16 at a time in vector registers.
    #[inline(always)]
    fn quants_q6_k(block: &[u8], n: usize, h: usize) -> [v128; 4] {
        let (m4, m30, k32) = (u8x16_splat(0x0F), u8x16_splat(0x30), i8x16_splat(32));
        let ql0 = load16(block, 64 * n + 16 * h);
        let ql1 = load16(block, 64 * n + 32 + 16 * h);
        let qh = load16(block, 128 + 32 * n + 16 * h);
        [
            v128_or(v128_and(ql0, m4), v128_and(i8x16_shl(qh, 4), m30)),
            v128_or(v128_and(ql1, m4), v128_and(i8x16_shl(qh, 2), m30)),
            v128_or(u8x16_shr(ql0, 4), v128_and(qh, m30)),
            v128_or(u8x16_shr(ql1, 4), v128_and(u8x16_shr(qh, 2), m30)),
        ]
        .map(|w| i8x16_sub(w, k32))
    }

    /// 0x10 in each byte of `qh` that has the bit `bit` (one bit set, splat) set: a K-quant's
    /// fifth bits by compares, not byte shifts, which x86 lacks and V8 emulates.
    #[inline(always)]
    fn fifth_bits(qh: v128, bit: v128) -> v128 {
        v128_and(i8x16_eq(v128_and(qh, bit), bit), u8x16_splat(0x10))
    }

    /// [`super::row_dot`] for IQ4_XS straight from its blocks: the nibbles mapped to the
    /// non-linear values by `i8x16.swizzle` of the 16-entry table, the eight 6-bit sub-block
    /// scales formed as `d · (scale − 32) · (activations' scale)` in two vectors.
    pub(super) fn row_dot_iq4_xs(row: &[u8], x: &Activations) -> f32 {
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let (m4, table) = (u8x16_splat(0x0F), iq4_table());
        let mut scale = [0f32; 8];
        for (b, block) in row.chunks_exact(136).enumerate() {
            let d = f32x4_splat(half(block, 0));
            let ls = |ib: usize| super::iq4_xs_scale(block, ib);
            for (h, out) in scale.chunks_exact_mut(4).enumerate() {
                let l = f32x4_convert_i32x4(i32x4(
                    ls(4 * h),
                    ls(4 * h + 1),
                    ls(4 * h + 2),
                    ls(4 * h + 3),
                ));
                let v = f32x4_mul(f32x4_mul(d, l), scales32(x, 8 * b + 4 * h));
                store4(out, v);
            }
            for ib in 0..8 {
                let v = load16(block, 8 + 16 * ib);
                let lo = i8x16_swizzle(table, v128_and(v, m4));
                let hi = i8x16_swizzle(table, u8x16_shr(v, 4));
                let xq = &x.q[QK * (8 * b + ib)..];
                let i = i32x4_add(dot16(lo, &xq[..16]), dot16(hi, &xq[16..QK]));
                accumulate(&mut acc, i, splat_at(&scale, ib));
            }
        }
        sum(acc)
    }

    /// [`super::row_dot`] for Q2_K straight from its blocks: 16 groups of 16 values, group
    /// 8n + 2j + s the bits 2j of bytes 16s.. of half n (16-bit shifts then a mask: the bits
    /// that cross a byte are masked off), each with a 4-bit scale and minimum, formed in vectors
    /// as `d · scale · (activations' scale)` and `dmin · min · (activations' sum)`.
    pub(super) fn row_dot_q2_k(row: &[u8], x: &Activations) -> f32 {
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let mut mins = f32x4_splat(0.0);
        let (m2, m4) = (u8x16_splat(3), u8x16_splat(0x0F));
        let mut scale = [0f32; 16];
        for (b, block) in row.chunks_exact(84).enumerate() {
            let (d, dmin) = (f32x4_splat(half(block, 80)), f32x4_splat(half(block, 82)));
            let sc = load16(block, 0);
            let (lo, hi) = (v128_and(sc, m4), u8x16_shr(sc, 4));
            let quarters = |v: v128| {
                let (a, b) = (u16x8_extend_low_u8x16(v), u16x8_extend_high_u8x16(v));
                [
                    u32x4_extend_low_u16x8(a),
                    u32x4_extend_high_u16x8(a),
                    u32x4_extend_low_u16x8(b),
                    u32x4_extend_high_u16x8(b),
                ]
            };
            for (k, (s, m)) in quarters(lo).into_iter().zip(quarters(hi)).enumerate() {
                let at = 16 * b + 4 * k;
                let v = f32x4_mul(f32x4_mul(d, f32x4_convert_u32x4(s)), load4(&x.d16, at));
                store4(&mut scale[4 * k..], v);
                let m = f32x4_mul(f32x4_mul(dmin, f32x4_convert_u32x4(m)), load4(&x.sum16, at));
                mins = f32x4_sub(mins, m);
            }
            for n in 0..2 {
                for s in 0..2 {
                    let v = load16(block, 16 + 32 * n + 16 * s);
                    for j in 0..4 {
                        let g = 8 * n + 2 * j + s;
                        let w = v128_and(u16x8_shr(v, 2 * j as u32), m2);
                        let i = dot16(w, &x.q[GROUP * (16 * b + g)..]);
                        accumulate(&mut acc, i, splat_at(&scale, g));
                    }
                }
            }
        }
        sum(acc) + hsum(mins)
    }

    /// [`super::row_dot`] for Q3_K straight from its blocks: as Q2_K's two bits, with the third
    /// (bit 4n + j of the high-bit mask's bytes 16s..) as 4 where set, less 4; the sixteen 6-bit
    /// scales unpacked in scalar code and formed as `d · (scale − 32) · (activations' scale)`
    /// in vectors.
    pub(super) fn row_dot_q3_k(row: &[u8], x: &Activations) -> f32 {
        let mut acc = [f32x4_splat(0.0), f32x4_splat(0.0)];
        let (m2, four) = (u8x16_splat(3), u8x16_splat(4));
        let mut scale = [0f32; 16];
        for (b, block) in row.chunks_exact(110).enumerate() {
            let d = f32x4_splat(half(block, 108));
            let scales = &block[96..108];
            for (k, out) in scale.chunks_exact_mut(4).enumerate() {
                let sc = |g: usize| crate::blocks::scale_q3_k(g, scales) - 32;
                let l = i32x4(sc(4 * k), sc(4 * k + 1), sc(4 * k + 2), sc(4 * k + 3));
                let v = f32x4_mul(
                    f32x4_mul(d, f32x4_convert_i32x4(l)),
                    load4(&x.d16, 16 * b + 4 * k),
                );
                store4(out, v);
            }
            let hmask = [load16(block, 0), load16(block, 16)];
            for n in 0..2 {
                for (s, &hm) in hmask.iter().enumerate() {
                    let v = load16(block, 32 + 32 * n + 16 * s);
                    for j in 0..4 {
                        let g = 8 * n + 2 * j + s;
                        let bit = u8x16_splat(1 << (4 * n + j));
                        let high = v128_and(i8x16_eq(v128_and(hm, bit), bit), four);
                        let w = v128_or(v128_and(u16x8_shr(v, 2 * j as u32), m2), high);
                        let i = dot16(i8x16_sub(w, four), &x.q[GROUP * (16 * b + g)..]);
                        accumulate(&mut acc, i, splat_at(&scale, g));
                    }
                }
            }
        }
        sum(acc)
    }

    /// IQ4_NL's (and IQ4_XS's) 16 values, for `i8x16.swizzle`.
    #[inline(always)]
    fn iq4_table() -> v128 {
        let t = &crate::blocks::KVALUES_IQ4NL;
        i8x16(
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15],
        )
    }

    /// `acc + i · s` into two accumulators that swap each call, so that consecutive blocks' sums
    /// do not wait for each other (`acc[b & 1]` would live in memory).
    #[inline(always)]
    fn accumulate(acc: &mut [v128; 2], i: v128, s: v128) {
        let next = f32x4_add(acc[1], f32x4_mul(f32x4_convert_i32x4(i), s));
        *acc = [next, acc[0]];
    }

    /// Four f32 into `out[..4]`.
    #[inline(always)]
    fn store4(out: &mut [f32], v: v128) {
        let out = &mut out[..4];
        // SAFETY: 4 writable f32; wasm stores take any alignment.
        unsafe { v128_store(out.as_mut_ptr().cast(), v) };
    }

    /// `v[i]` in four lanes (one `v128.load32_splat`).
    #[inline(always)]
    fn splat_at(v: &[f32], i: usize) -> v128 {
        let v = &v[i];
        // SAFETY: one readable f32.
        unsafe { v128_load32_splat((v as *const f32).cast()) }
    }

    /// One block of a 32-value format into the rotated accumulators, scaled by `d` (splat).
    #[inline(always)]
    fn block_32<const F: u8>(block: &[u8], xq: &[i16], d: v128, acc: &mut [v128; 2]) {
        let (lo, hi) = quants_32::<F>(block);
        let i = i32x4_add(dot16(lo, &xq[..16]), dot16(hi, &xq[16..]));
        accumulate(acc, i, d);
    }

    /// A row (whole blocks) of a 32-value format dequantized (prefill's tiles), the values of
    /// [`crate::blocks`]'s scalar functions bit for bit: the same integers, converted exactly,
    /// times the scale (plus the minimum) in the same order, with no fused operation. The
    /// scales (and minimums) of four blocks at a time are converted in one vector, as in
    /// [`row_dot_32`].
    pub(super) fn dequant_row_32<const F: u8>(row: &[u8], y: &mut [f32]) {
        let (qs, has_min) = k32::layout(F);
        let bytes = qs + if F == Q8_0 { 2 * GROUP } else { GROUP };
        assert!(
            row.len().is_multiple_of(bytes) && row.len() / bytes * QK == y.len(),
            "{} bytes of blocks into {} values",
            row.len(),
            y.len()
        );
        let quads = row.chunks_exact(4 * bytes);
        let tail = quads.remainder();
        let mut out = y.chunks_exact_mut(QK);
        for quad in quads {
            let d = halves4(quad, bytes, 0);
            let m = if has_min {
                halves4(quad, bytes, 2)
            } else {
                f32x4_splat(0.0)
            };
            let lanes = [
                (
                    i32x4_shuffle::<0, 0, 0, 0>(d, d),
                    i32x4_shuffle::<0, 0, 0, 0>(m, m),
                ),
                (
                    i32x4_shuffle::<1, 1, 1, 1>(d, d),
                    i32x4_shuffle::<1, 1, 1, 1>(m, m),
                ),
                (
                    i32x4_shuffle::<2, 2, 2, 2>(d, d),
                    i32x4_shuffle::<2, 2, 2, 2>(m, m),
                ),
                (
                    i32x4_shuffle::<3, 3, 3, 3>(d, d),
                    i32x4_shuffle::<3, 3, 3, 3>(m, m),
                ),
            ];
            for ((block, (d, m)), y) in quad.chunks_exact(bytes).zip(lanes).zip(&mut out) {
                dequant_32::<F>(block, d, m, y);
            }
        }
        for (block, y) in tail.chunks_exact(bytes).zip(out) {
            let m = if has_min { half(block, 2) } else { 0.0 };
            dequant_32::<F>(block, f32x4_splat(half(block, 0)), f32x4_splat(m), y);
        }
    }

    /// One block of [`dequant_row_32`], its scale `d` and minimum `m` splat.
    #[inline(always)]
    fn dequant_32<const F: u8>(block: &[u8], d: v128, m: v128, y: &mut [f32]) {
        let (_, has_min) = k32::layout(F);
        let (lo, hi) = quants_32::<F>(block);
        let offset = if has_min {
            Offset::Add(m)
        } else {
            Offset::None
        };
        put16(&mut y[..16], lo, d, offset);
        put16(&mut y[16..QK], hi, d, offset);
    }

    /// What [`put16`] does after the multiplication.
    #[derive(Clone, Copy)]
    enum Offset {
        None,
        Add(v128),
        Sub(v128),
    }

    /// `y[..16]` = the 16 signed bytes of `q` converted to f32, times `d`, then plus or minus
    /// the offset: the scalar dequantizations' operations, in their order.
    #[inline(always)]
    fn put16(y: &mut [f32], q: v128, d: v128, offset: Offset) {
        let (a, b) = (i16x8_extend_low_i8x16(q), i16x8_extend_high_i8x16(q));
        for (w, y) in [
            i32x4_extend_low_i16x8(a),
            i32x4_extend_high_i16x8(a),
            i32x4_extend_low_i16x8(b),
            i32x4_extend_high_i16x8(b),
        ]
        .into_iter()
        .zip(y[..16].chunks_exact_mut(4))
        {
            let v = f32x4_mul(f32x4_convert_i32x4(w), d);
            store4(
                y,
                match offset {
                    Offset::None => v,
                    Offset::Add(m) => f32x4_add(v, m),
                    Offset::Sub(m) => f32x4_sub(v, m),
                },
            );
        }
    }

    /// [`dequant_row_32`] for Q4_K (and, `Q5`, Q5_K): per 32-value sub-block, `d · scale` and
    /// `dmin · min` as the scalar code forms them, the nibbles (and fifth bits) split as in
    /// [`row_dot_k4`], `(d · scale) · q − dmin · min` in vectors.
    pub(super) fn dequant_row_k4<const Q5: bool>(row: &[u8], y: &mut [f32]) {
        let (bytes, qs) = if Q5 { (176, 48) } else { (144, 16) };
        assert!(row.len() / bytes * 256 == y.len() && row.len().is_multiple_of(bytes));
        let m4 = u8x16_splat(0x0F);
        for (block, y) in row.chunks_exact(bytes).zip(y.chunks_exact_mut(256)) {
            let (d, dmin) = (half(block, 0), half(block, 2));
            let (qh0, qh1) = if Q5 {
                (load16(block, 16), load16(block, 32))
            } else {
                (m4, m4)
            };
            // Sub-blocks 2c and 2c + 1: the low and the high nibbles of 32 bytes (constant
            // shifts: V8 emulates byte shifts, a variable count costs more).
            for (c, y) in y.chunks_exact_mut(2 * QK).enumerate() {
                let scale = |j: usize| {
                    let (sc, m) = crate::blocks::scale_min_k4(j, &block[4..16]);
                    let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
                    (f32x4_splat(d1), Offset::Sub(f32x4_splat(m1)))
                };
                let ((d1, m1), (d2, m2)) = (scale(2 * c), scale(2 * c + 1));
                for (h, qh) in [qh0, qh1].into_iter().enumerate() {
                    let v = load16(block, qs + 32 * c + 16 * h);
                    let (mut lo, mut hi) = (v128_and(v, m4), u8x16_shr(v, 4));
                    if Q5 {
                        // Bits 2c and 2c + 1 of each byte, as 0x10 where set.
                        lo = v128_or(lo, fifth_bits(qh, u8x16_splat(1 << (2 * c))));
                        hi = v128_or(hi, fifth_bits(qh, u8x16_splat(2 << (2 * c))));
                    }
                    put16(&mut y[16 * h..16 * h + 16], lo, d1, m1);
                    put16(&mut y[QK + 16 * h..QK + 16 * h + 16], hi, d2, m2);
                }
            }
        }
    }

    /// [`dequant_row_32`] for Q6_K: the 6-bit quants assembled as in [`row_dot_q6_k`], times
    /// `d · scale` as the scalar code forms it.
    pub(super) fn dequant_row_q6_k(row: &[u8], y: &mut [f32]) {
        assert!(row.len() / 210 * 256 == y.len() && row.len().is_multiple_of(210));
        for (block, y) in row.chunks_exact(210).zip(y.chunks_exact_mut(256)) {
            let d = half(block, 208);
            for (n, y) in y.chunks_exact_mut(128).enumerate() {
                for h in 0..2 {
                    for (t, w) in quants_q6_k(block, n, h).into_iter().enumerate() {
                        // Values 32t + 16h.. of half n, whose scale is byte 192 + 8n + 2t + h.
                        let scale = d * f32::from(block[192 + 8 * n + 2 * t + h] as i8);
                        let at = 32 * t + 16 * h;
                        put16(&mut y[at..at + 16], w, f32x4_splat(scale), Offset::None);
                    }
                }
            }
        }
    }

    /// The 32 quants of a block of a 32-value format as signed bytes, the first 16 values and
    /// the last (the values the scale multiplies: offsets applied, IQ4_NL's looked up).
    #[inline(always)]
    fn quants_32<const F: u8>(block: &[u8]) -> (v128, v128) {
        let (qs, _) = k32::layout(F);
        if F == Q8_0 {
            (load16(block, qs), load16(block, qs + 16))
        } else {
            let v = load16(block, qs);
            let (lo, hi) = (v128_and(v, u8x16_splat(0x0F)), u8x16_shr(v, 4));
            match F {
                Q4_0 => (i8x16_sub(lo, i8x16_splat(8)), i8x16_sub(hi, i8x16_splat(8))),
                IQ4_NL => {
                    let table = iq4_table();
                    (i8x16_swizzle(table, lo), i8x16_swizzle(table, hi))
                }
                Q5_0 | Q5_1 => {
                    let (sl, sh) = bits_to_bytes(k32::fifth_bits(block, qs));
                    if F == Q5_0 {
                        // As in the x86 kernel: q − 16 = q | 0xF0 where the bit is clear.
                        let f0 = i8x16_splat(-16);
                        (
                            v128_or(lo, v128_andnot(f0, sl)),
                            v128_or(hi, v128_andnot(f0, sh)),
                        )
                    } else {
                        let b4 = u8x16_splat(0x10);
                        (v128_or(lo, v128_and(sl, b4)), v128_or(hi, v128_and(sh, b4)))
                    }
                }
                _ => (lo, hi),
            }
        }
    }

    /// The activations' scales of blocks `a..a + 4` of 32 values (`d16` holds each twice).
    #[inline(always)]
    fn scales32(x: &Activations, a: usize) -> v128 {
        i32x4_shuffle::<0, 2, 4, 6>(load4(&x.d16, 2 * a), load4(&x.d16, 2 * a + 4))
    }

    /// Four f32 at `at` of `v`.
    #[inline(always)]
    fn load4(v: &[f32], at: usize) -> v128 {
        let v = &v[at..at + 4];
        // SAFETY: 4 readable values; wasm loads take any alignment.
        unsafe { v128_load(v.as_ptr().cast()) }
    }

    /// The f16s at `at` of four consecutive blocks of `bytes` bytes, as f32.
    #[inline(always)]
    fn halves4(quad: &[u8], bytes: usize, at: usize) -> v128 {
        let h = |j: usize| {
            u32::from(u16::from_le_bytes([
                quad[j * bytes + at],
                quad[j * bytes + at + 1],
            ]))
        };
        f16x4_to_f32x4(u32x4(h(0), h(1), h(2), h(3)))
    }

    /// [`crate::blocks::f16_to_f32`] in four lanes (each holding an f16's bits), the same bits.
    #[inline(always)]
    pub(crate) fn f16x4_to_f32x4(h: v128) -> v128 {
        let sign = i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16);
        let mag = v128_and(h, u32x4_splat(0x7FFF));
        let moved = i32x4_shl(mag, 13);
        let normal = i32x4_add(moved, u32x4_splat(112 << 23));
        let subnormal = f32x4_sub(v128_or(mag, u32x4_splat(0x3F00_0000)), f32x4_splat(0.5));
        let special = v128_or(moved, u32x4_splat(0x7F80_0000));
        let v = v128_bitselect(subnormal, normal, i32x4_lt(mag, i32x4_splat(0x0400)));
        let v = v128_bitselect(special, v, i32x4_ge(mag, i32x4_splat(0x7C00)));
        v128_or(sign, v)
    }

    /// [`f16x4_to_f32x4`] against [`crate::blocks::f16_to_f32`] for all 65536 values.
    pub(super) fn check_f16x4() -> Result<(), String> {
        for h in (0..=u16::MAX).step_by(4) {
            let h = u32::from(h);
            let v = f16x4_to_f32x4(u32x4(h, h + 1, h + 2, h + 3));
            let got = [
                u32x4_extract_lane::<0>(v),
                u32x4_extract_lane::<1>(v),
                u32x4_extract_lane::<2>(v),
                u32x4_extract_lane::<3>(v),
            ];
            for (j, got) in (0..4).zip(got) {
                let want = crate::blocks::f16_to_f32((h + j) as u16).to_bits();
                if got != want {
                    return Err(format!(
                        "f16 {:#06x}: {got:#010x} in a vector, {want:#010x}",
                        h + j
                    ));
                }
            }
        }
        Ok(())
    }

    /// The 32 fifth bits of a Q5 block as 32 bytes, 0xFF where set (the x86 kernel's
    /// `bits_to_bytes`, by `i8x16.swizzle`).
    #[inline(always)]
    fn bits_to_bytes(qh: u32) -> (v128, v128) {
        let v = u32x4_splat(qh);
        let others = u64x2_splat(0x7fbf_dfef_f7fb_fdfe);
        let ones = i8x16_splat(-1);
        let lo = i8x16_swizzle(v, i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
        let hi = i8x16_swizzle(v, i8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        (
            i8x16_eq(v128_or(lo, others), ones),
            i8x16_eq(v128_or(hi, others), ones),
        )
    }
}

/// Pseudo-random bytes (a fixed LCG).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect()
}

/// Sets the f16 at `at` (a block's scale or minimum) to `v`, so that it is finite.
fn set_half(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Every format with its name, its dequantization and where its f16 fields are.
fn formats() -> [(&'static str, Format, crate::ops::BlockFn, &'static [usize]); 12] {
    use crate::blocks::*;
    [
        ("q4_0", Q4_0, block_q4_0, &[0]),
        ("q4_1", Q4_1, block_q4_1, &[0, 2]),
        ("q5_0", Q5_0, block_q5_0, &[0]),
        ("q5_1", Q5_1, block_q5_1, &[0, 2]),
        ("q8_0", Q8_0, block_q8_0, &[0]),
        ("q2_k", Q2_K, block_q2_k, &[80, 82]),
        ("q3_k", Q3_K, block_q3_k, &[108]),
        ("q4_k", Q4_K, block_q4_k, &[0, 2]),
        ("q5_k", Q5_K, block_q5_k, &[0, 2]),
        ("q6_k", Q6_K, block_q6_k, &[208]),
        ("iq4_nl", IQ4_NL, block_iq4_nl, &[0]),
        ("iq4_xs", IQ4_XS, block_iq4_xs, &[0]),
    ]
}

/// The integer kernels' self-check, run by the unit tests natively and in the browser
/// (tests/web_ops.rs), where the wasm kernels run:
/// - the f16 conversion every block's scale goes through ([`crate::blocks::check_f16_to_f32`]),
///   and the f16 KV cache's ([`crate::ops::check_kv_f16`]);
/// - every format's unpacked form gives its dequantized values (`scale · q + min`), over
///   random blocks with scales near 0.01 and minimums of either sign, and its
///   [`vector_dequant`] (where the target has one) the same values bit for bit;
/// - a row's dot product ([`row_dot`], the fused kernels where the target has them) is within
///   the 16-bit rounding of the activations of the exact one (f64 over the dequantized row),
///   and equals the unpacked path's and the portable kernel's integer sums up to float order.
#[doc(hidden)]
pub fn check() -> Result<(), String> {
    crate::blocks::check_f16_to_f32()?;
    crate::ops::check_kv_f16()?;
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    wasm::check_f16x4()?;
    for (name, f, dequant, halves) in formats() {
        for seed in 0..20u16 {
            let mut b = bytes(f.bytes, u64::from(seed));
            for (i, &at) in halves.iter().enumerate() {
                let sign = if i == 1 && seed % 2 == 1 { 0x8000 } else { 0 };
                set_half(
                    &mut b,
                    at,
                    sign | (0x2000 + (seed * 37 + i as u16 * 11) % 0x400),
                );
            }
            let mut want = vec![0f32; f.size];
            dequant(&b, &mut want);
            if let Some(vector) = vector_dequant(f) {
                let mut got = vec![f32::NAN; f.size];
                vector(&b, &mut got);
                if let Some(i) = (0..f.size).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                    return Err(format!(
                        "{name} seed {seed} value {i}: vector dequantization {} against {}",
                        got[i], want[i]
                    ));
                }
            }
            let groups = f.size / GROUP;
            let (mut q, mut sc, mut mn) =
                (vec![0i8; f.size], vec![0f32; groups], vec![0f32; groups]);
            (f.unpack)(&b, &mut q, &mut sc, &mut mn);
            for (i, &w) in want.iter().enumerate() {
                let g = i / GROUP;
                let got = sc[g] * f32::from(q[i]) + mn[g];
                if (got - w).abs() > 1e-6 * (1.0 + w.abs()) || (!f.has_min && mn[g] != 0.0) {
                    return Err(format!(
                        "{name} seed {seed} value {i}: {got} + offset {} against {w}",
                        mn[g]
                    ));
                }
            }
        }
        // Rows of whole groups of 4 blocks, and ones that end with 3 blocks or with 1 (the wasm
        // kernels convert 4 blocks' scales at once).
        for blocks in [1024 / f.size, 1024 / f.size + 3, 1] {
            let mut row = Vec::new();
            for blk in 0..blocks {
                let mut b = bytes(f.bytes, 100 + blk as u64);
                for &at in halves {
                    set_half(&mut b, at, 0x2000 + (blk as u16 * 13) % 0x300);
                }
                row.extend(b);
            }
            let k = blocks * f.size;
            let x: Vec<f32> = (0..k)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 311.0)
                .collect();
            let mut w = vec![0f32; k];
            for (b, out) in row.chunks_exact(f.bytes).zip(w.chunks_exact_mut(f.size)) {
                dequant(b, out);
            }
            if let Some(vector) = vector_dequant(f) {
                let mut got = vec![f32::NAN; k];
                vector(&row, &mut got);
                if let Some(i) = (0..k).find(|&i| got[i].to_bits() != w[i].to_bits()) {
                    return Err(format!(
                        "{name}, {blocks} blocks, value {i}: vector dequantization {} against {}",
                        got[i], w[i]
                    ));
                }
            }
            let exact: f64 = w
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            // Each activation is off by at most half a step, max|x| / 32767 / 2.
            let bound = w.iter().map(|&a| f64::from(a.abs())).sum::<f64>() * (1.63 / 32767.0) / 2.0;
            // Kernels that sum the same integers in another order agree to f32 rounding of the
            // terms' magnitude (the result itself can be much smaller).
            let magnitude: f64 = w
                .iter()
                .zip(&x)
                .map(|(&a, &b)| f64::from((a * b).abs()))
                .sum();
            let close = |a: f32, b: f32| f64::from((a - b).abs()) <= 1e-5 * (1.0 + magnitude);
            let acts = Activations::new(&x);
            let mut s = Scratch::default();
            let got = row_dot(f, &row, &acts, &mut s);
            if (f64::from(got) - exact).abs() > bound + 1e-5 * (1.0 + exact.abs()) {
                return Err(format!(
                    "{name}, {blocks} blocks: {got} against {exact} (bound {bound})"
                ));
            }
            let unpacked = row_dot_unpacked(f, &row, &acts, &mut s);
            let portable = dot_groups_portable(&s.q, &acts.q, &s.scale)
                + if f.has_min {
                    crate::ops::dot(&s.min, &acts.sum16)
                } else {
                    0.0
                };
            if !close(got, unpacked) || !close(unpacked, portable) {
                return Err(format!(
                "{name}, {blocks} blocks: {got} (row_dot), {unpacked} (unpacked), {portable} (portable)"
            ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_kernels_pass_their_check() {
        check().unwrap();
    }

    /// Zeros quantize to zeros (no division by a zero scale), and odd lengths are refused.
    #[test]
    fn zero_activations_and_bad_lengths() {
        let a = Activations::new(&[0.0; 64]);
        assert!(a.q.iter().all(|&q| q == 0) && a.d16.iter().all(|&d| d == 0.0));
        assert!(std::panic::catch_unwind(|| Activations::new(&[1.0; 40])).is_err());
    }
}
