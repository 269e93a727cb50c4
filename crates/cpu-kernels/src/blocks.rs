//! Dequantization of one block of each GGML format, exactly as ggml's `dequantize_row_*`
//! (ggml-quants.c) computes it: see pocketlm's `src/quant/dequant.rs` for the layouts and why the
//! results are bit-identical to ggml's.

/// f16 bits as f32 (exact). NaNs keep their payload bit for bit, signalling ones included, as in
/// gguf-py (numpy's conversion); the `half` crate (like x86's F16C, and so ggml on most x86
/// builds) sets the quiet bit.
///
/// Without branches: the kernels convert a block's scale (and minimum) for every block of every
/// row, and wasm has no instruction for it (natively the AVX2 kernels use F16C). A normal f16's
/// exponent and mantissa, moved into an f32's place, need 112 more in the exponent; a subnormal
/// one (mantissa m) is 0.5 + m · 2^-24 less 0.5, so that no subnormal f32 enters an operation
/// (x86 takes a slow path for those); infinities and NaNs are their bits moved. Both selections
/// compile to `select`.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let mag = h & 0x7FFF;
    let normal = (mag << 13) + (112 << 23);
    let subnormal = (f32::from_bits(0x3F00_0000 | mag) - 0.5).to_bits();
    let special = 0x7F80_0000 | (mag << 13);
    let v = if mag < 0x0400 { subnormal } else { normal };
    f32::from_bits(sign | if mag >= 0x7C00 { special } else { v })
}

/// [`f16_to_f32`] against the format's definition for all 65536 values (run by the kernels'
/// self-check, natively and in the browser's wasm engine): sign · 2^(e−15) · (1 + m/1024) for
/// normal values, sign · 2^−14 · m/1024 for zeros and subnormals, and infinities and NaNs with
/// their payload bits unchanged.
#[doc(hidden)]
pub fn check_f16_to_f32() -> Result<(), String> {
    for h in 0..=u16::MAX {
        let (e, m) = (i32::from(h >> 10) & 0x1F, f64::from(h & 0x3FF));
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let got = f16_to_f32(h);
        let ok = match e {
            0 => {
                f64::from(got) == sign * m / 1024.0 * 2f64.powi(-14)
                    && got.is_sign_negative() == (sign < 0.0)
            }
            31 => {
                got.to_bits()
                    == (u32::from(h & 0x8000) << 16) | 0x7F80_0000 | (u32::from(h & 0x3FF) << 13)
            }
            _ => f64::from(got) == sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
        };
        if !ok {
            return Err(format!(
                "f16 {h:#06x} converts to {got:e} ({:#010x})",
                got.to_bits()
            ));
        }
    }
    Ok(())
}

/// The little-endian f16 at `b[at..at + 2]`, as f32 (exact; see [`f16_to_f32`]).
#[inline]
pub fn half(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qs = &b[2..18];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
        y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
    }
}

pub fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let qs = &b[4..20];
    for (j, &q) in qs.iter().enumerate() {
        y[j] = f32::from(q & 0x0F) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

pub fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for (j, &q) in qs.iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((u32::from(q & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

pub fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for (j, &q) in qs.iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (u32::from(q & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
    }
}

/// The non-linear 4-bit code book of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

pub fn block_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0F)]);
        y[j + 16] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}

pub fn block_iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    let qs = &b[8..136];
    // Eight sub-blocks of 32: 16 bytes each, low nibbles then high nibbles.
    for (ib, (q, y)) in qs.chunks_exact(16).zip(y.chunks_exact_mut(32)).enumerate() {
        let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F)
            | ((((scales_h >> (2 * ib)) & 3) as u8) << 4);
        let dl = d * f32::from(i16::from(ls) - 32);
        for (j, &q) in q.iter().enumerate() {
            y[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0F)]);
            y[j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
    }
}

pub fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[..16];
    let qs = &b[16..80];
    let (d, dmin) = (half(b, 80), half(b, 82));
    // Two halves of 128 values from 32 bytes of qs each: four 2-bit planes (shift 2j) of 32
    // values, each two runs of 16 (bytes 0..16, then 16..32) with a scale byte each.
    for (n, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
        for j in 0..4 {
            for s in 0..2 {
                let sc = scales[8 * n + 2 * j + s];
                let dl = d * f32::from(sc & 0x0F);
                let ml = dmin * f32::from(sc >> 4);
                for l in 0..16 {
                    let v = (q[16 * s + l] >> (2 * j)) & 3;
                    y[32 * j + 16 * s + l] = dl * f32::from(v) - ml;
                }
            }
        }
    }
}

/// The 6-bit scale `i` (0..16) of a Q3_K block, before subtracting 32: low 4 bits from
/// `scales[i % 8]` (nibble `i / 8`), high 2 from `scales[8 + i % 4]` (bits `2 · (i / 4)`).
pub fn scale_q3_k(i: usize, scales: &[u8]) -> i32 {
    let lo = (scales[i % 8] >> (4 * (i / 8))) & 0x0F;
    let hi = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
    i32::from(lo | (hi << 4))
}

pub fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[..32];
    let qs = &b[32..96];
    let scales = &b[96..108];
    let d = half(b, 108);
    // As Q2_K, plus a high bit per value: bit 4n + j of hmask[16s + l] (set: no offset; clear: −4).
    for (n, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(128)).enumerate() {
        for j in 0..4 {
            for s in 0..2 {
                let dl = d * (scale_q3_k(8 * n + 2 * j + s, scales) - 32) as f32;
                let bit = 4 * n + j;
                for l in 0..16 {
                    let lo = i32::from((q[16 * s + l] >> (2 * j)) & 3);
                    let h = if (hmask[16 * s + l] >> bit) & 1 == 1 {
                        0
                    } else {
                        4
                    };
                    y[32 * j + 16 * s + l] = dl * (lo - h) as f32;
                }
            }
        }
    }
}

pub fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    // As Q4_K; the fifth bit of value l of chunk j (0..8) is bit j of qh[l].
    for (g, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * g)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * g + 1)) & 1) << 4;
            y[l] = d1 * f32::from((q[l] & 0x0F) | h1) - m1;
            y[l + 32] = d2 * f32::from((q[l] >> 4) | h2) - m2;
        }
    }
}

pub fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K block.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

pub fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Four groups of 64 values: 32 low nibbles, then the same 32 bytes' high nibbles.
    for (g, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc, m) = scale_min_k4(2 * g, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * g + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        for l in 0..32 {
            y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
        }
    }
}

pub fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half(b, 208);
    // Two halves of 128 values, each from 64 bytes of ql, 32 of qh and 8 scales.
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let y = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * q1 as f32;
            y[l + 32] = scale(2) * q2 as f32;
            y[l + 64] = scale(4) * q3 as f32;
            y[l + 96] = scale(6) * q4 as f32;
        }
    }
}
