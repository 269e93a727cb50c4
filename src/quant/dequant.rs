//! Dequantization of tensor bytes exactly as stored in GGUF into f32, on the CPU.
//!
//! Each format follows ggml's `dequantize_row_*` (ggml-quants.c) with the same f32 operations in
//! the same order, so the results are bit-identical to ggml's reference and to the `gguf` Python
//! package (`tests/quant_fixtures.rs` checks this against its output). Every product here is exact
//! in f32 (an f16 significand of 11 bits times integers of at most 13 bits: Q6_K's `sc * q` is at
//! most 128 · 32; IQ4_XS's `(ls - 32) · kvalue` at most 32 · 127), so only Q4_1's and Q5_1's `+ m`
//! and Q2_K's, Q4_K's and Q5_K's `- ml` round, once each: the values do not
//! depend on the order of the multiplications or on fused multiply-adds, and a GPU kernel that
//! computes them in f32 can match them exactly too.
//!
//! Block layouts (little-endian, packed):
//! - `block_q4_0 { half d; u8 qs[16] }`: `(q - 8) * d`, low nibbles first.
//! - `block_q4_1 { half d, m; u8 qs[16] }`: `q * d + m`.
//! - `block_q5_0 { half d; u8 qh[4]; u8 qs[16] }`: `(q - 16) * d`, fifth bit of element j in bit j of qh.
//! - `block_q5_1 { half d, m; u8 qh[4]; u8 qs[16] }`: `q * d + m`, qh as Q5_0.
//! - `block_q8_0 { half d; i8 qs[32] }`: `q * d`.
//! - `block_iq4_nl { half d; u8 qs[16] }`: `d * kvalues[q]`, nibbles as Q4_0.
//! - `block_q2_K { u8 scales[16]; u8 qs[64]; half d, dmin }`: `(d * (sc & 15)) * q - dmin * (sc >> 4)`
//!   per 16, 2-bit quants.
//! - `block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d }`: `(d * (sc - 32)) * q` per
//!   16, q the 2-bit quant minus 4 where its hmask bit is clear, 6-bit scales.
//! - `block_q4_K { half d, dmin; u8 scales[12]; u8 qs[128] }`: `(d * sc) * q - dmin * m` per 32.
//! - `block_q5_K { half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }`: as Q4_K with a fifth bit.
//! - `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d }`: `d * sc * (q - 32)` per 16.
//! - `block_iq4_xs { half d; u16 scales_h; u8 scales_l[4]; u8 qs[128] }`:
//!   `(d * (ls - 32)) * kvalues[q]` per 32, 6-bit `ls`.

#[cfg(test)]
use half::f16;
use pocketlm_cpu::blocks::*;

use crate::quant::DType;
use crate::{Error, Result};

/// Converts `gguf_bytes`, elements of `dtype` laid out as in a GGUF file, into `out`.
///
/// `gguf_bytes` must be a whole number of blocks (of elements, for plain floats) and `out` exactly
/// as long as the elements they hold; otherwise this is [`Error::InvalidTensor`].
pub fn dequantize(dtype: DType, gguf_bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let elements = element_count(dtype, gguf_bytes.len())?;
    if out.len() != elements {
        return Err(invalid(
            dtype,
            format!(
                "{} bytes of {dtype} hold {elements} values, but the output has room for {}",
                gguf_bytes.len(),
                out.len()
            ),
        ));
    }
    let blocks = gguf_bytes
        .chunks_exact(dtype.block_bytes())
        .zip(out.chunks_exact_mut(dtype.block_size()));
    match dtype {
        DType::F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => blocks.for_each(|(b, y)| y[0] = half(b, 0)),
        // BF16 is the high half of an f32: widen the bits (as ggml and gguf-py do) rather than
        // convert, so NaN payloads pass through unchanged.
        DType::BF16 => blocks.for_each(|(b, y)| {
            y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }),
        DType::Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        DType::Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        DType::Q5_0 => blocks.for_each(|(b, y)| block_q5_0(b, y)),
        DType::Q5_1 => blocks.for_each(|(b, y)| block_q5_1(b, y)),
        DType::Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        DType::Q2_K => blocks.for_each(|(b, y)| block_q2_k(b, y)),
        DType::Q3_K => blocks.for_each(|(b, y)| block_q3_k(b, y)),
        DType::Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        DType::Q5_K => blocks.for_each(|(b, y)| block_q5_k(b, y)),
        DType::Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
        DType::IQ4_NL => blocks.for_each(|(b, y)| block_iq4_nl(b, y)),
        DType::IQ4_XS => blocks.for_each(|(b, y)| block_iq4_xs(b, y)),
        // Not a weight format: integers (token ids, indices) to the nearest f32.
        DType::I32 => {
            blocks.for_each(|(b, y)| y[0] = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
        }
    }
    Ok(())
}

pub use pocketlm_cpu::ops::BlockFn;

/// The function that dequantizes one block of a block-quantized `dtype` (`block_bytes()` bytes
/// into `block_size()` values), as [`dequantize`] does; `None` for plain formats.
pub fn block_dequantizer(dtype: DType) -> Option<BlockFn> {
    Some(match dtype {
        DType::Q4_0 => block_q4_0,
        DType::Q4_1 => block_q4_1,
        DType::Q5_0 => block_q5_0,
        DType::Q5_1 => block_q5_1,
        DType::Q8_0 => block_q8_0,
        DType::Q2_K => block_q2_k,
        DType::Q3_K => block_q3_k,
        DType::Q4_K => block_q4_k,
        DType::Q5_K => block_q5_k,
        DType::Q6_K => block_q6_k,
        DType::IQ4_NL => block_iq4_nl,
        DType::IQ4_XS => block_iq4_xs,
        DType::F32 | DType::F16 | DType::BF16 | DType::I32 => return None,
    })
}

/// [`dequantize`] into a new vector of the right length.
pub fn dequantize_to_vec(dtype: DType, gguf_bytes: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0.0; element_count(dtype, gguf_bytes.len())?];
    dequantize(dtype, gguf_bytes, &mut out)?;
    Ok(out)
}

/// The number of values `bytes` bytes of `dtype` hold, or an error when they are not whole blocks.
fn element_count(dtype: DType, bytes: usize) -> Result<usize> {
    let (block_bytes, block_size) = (dtype.block_bytes(), dtype.block_size());
    if !bytes.is_multiple_of(block_bytes) {
        let unit = if dtype.is_quantized() {
            "block"
        } else {
            "value"
        };
        return Err(invalid(
            dtype,
            format!(
                "{bytes} bytes is not a whole number of {dtype} {unit}s ({block_bytes} bytes each, \
                 {block_size} values per {unit}): the data is truncated or has the wrong dtype"
            ),
        ));
    }
    (bytes / block_bytes)
        .checked_mul(block_size)
        .ok_or_else(|| {
            invalid(
                dtype,
                format!("{bytes} bytes of {dtype} hold more values than fit in memory"),
            )
        })
}

fn invalid(dtype: DType, detail: String) -> Error {
    // The caller knows the tensor's name; this layer only knows what it was handed.
    Error::InvalidTensor {
        tensor: format!("<{dtype} data>"),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Rng;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_0_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize_to_vec(DType::Q4_0, &b).unwrap();
        assert_eq!(y.len(), 32);
        assert_eq!(y[0], -4.0); // (0 - 8) * 0.5
        assert_eq!(y[15], 3.5); // (15 - 8) * 0.5
        assert_eq!(y[16], 3.5); // high nibble of byte 0 is 15
        assert_eq!(y[31], -4.0);
    }

    #[test]
    fn q4_1_block() {
        let mut b = [h(0.25), h(-1.0)].concat();
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let y = dequantize_to_vec(DType::Q4_1, &b).unwrap();
        assert_eq!(y[0], -1.0);
        assert_eq!(y[15], 15.0 * 0.25 - 1.0);
        assert!(y[16..].iter().all(|&v| v == -0.25));
    }

    #[test]
    fn q5_0_block() {
        let mut b = h(2.0).to_vec();
        // Fifth bits set for element 0 and element 17 (bit 17 of qh).
        b.extend((1u32 | (1 << 17)).to_le_bytes());
        b.extend([0x0Fu8; 16]);
        let y = dequantize_to_vec(DType::Q5_0, &b).unwrap();
        assert_eq!(y[0], (31 - 16) as f32 * 2.0);
        assert_eq!(y[1], (15 - 16) as f32 * 2.0);
        assert_eq!(y[16], -16.0 * 2.0);
        assert_eq!(y[17], 0.0); // 0 | 16 − 16
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.125).to_vec();
        b.extend((0..32).map(|j: i32| ((j - 16) * 8) as i8 as u8));
        let y = dequantize_to_vec(DType::Q8_0, &b).unwrap();
        assert_eq!(y[0], -128.0 * 0.125);
        assert_eq!(y[16], 0.0);
        assert_eq!(y[31], 120.0 * 0.125);
    }

    #[test]
    fn q4_k_block() {
        let mut b = [h(0.5), h(0.25)].concat();
        // Sub-block 0: scale 3, min 5. Sub-block 5: scale 0b11_0010 = 50 (low 4 bits from
        // scales[9], top 2 from scales[1] >> 6), min 0b10_0001 = 33 (scales[9] >> 4, scales[5] >> 6).
        let mut scales = [0u8; 12];
        scales[0] = 3;
        scales[4] = 5;
        scales[1] = 0b1100_0000;
        scales[5] = 0b1000_0000;
        scales[9] = 0x12;
        b.extend(scales);
        b.extend([0x7Au8; 128]); // low nibble 10, high nibble 7
        let y = dequantize_to_vec(DType::Q4_K, &b).unwrap();
        assert_eq!(y.len(), 256);
        assert_eq!(y[0], 0.5 * 3.0 * 10.0 - 0.25 * 5.0);
        // Sub-block 5 is the high nibbles of the third group of 32 bytes: values 160..192.
        assert_eq!(y[160], 0.5 * 50.0 * 7.0 - 0.25 * 33.0);
        assert_eq!(y[191], y[160]);
    }

    #[test]
    fn q6_k_block() {
        let mut b = vec![0u8; 210];
        b[0] = 0x21; // ql[0]: element 0 low bits 1, element 64 low bits 2
        b[128] = 0b11_10_01_00; // qh[0]: high bits 0, 1, 2, 3 for elements 0, 32, 64, 96
        b[192] = 2; // scale of values 0..16
        b[192 + 4] = (-3i8) as u8; // scale of values 64..80
        b[192 + 6] = 1; // scale of values 96..112
        b[208..210].copy_from_slice(&h(0.5));
        let y = dequantize_to_vec(DType::Q6_K, &b).unwrap();
        assert_eq!(y[0], 0.5 * 2.0 * (1 - 32) as f32);
        assert_eq!(y[64], 0.5 * -3.0 * (2 + 32 - 32) as f32);
        assert_eq!(y[96], 0.5 * 1.0 * (48 - 32) as f32);
        assert_eq!(y[1], 0.5 * 2.0 * -32.0);
        assert_eq!(y[128], 0.0); // scale 0 for the second half
    }

    #[test]
    fn q5_1_block() {
        let mut b = [h(0.5), h(-2.0)].concat();
        b.extend((1u32 | (1 << 17)).to_le_bytes()); // fifth bits of elements 0 and 17
        b.extend([0x3Fu8; 16]); // low nibble 15, high nibble 3
        let y = dequantize_to_vec(DType::Q5_1, &b).unwrap();
        assert_eq!(y[0], 31.0 * 0.5 - 2.0);
        assert_eq!(y[1], 15.0 * 0.5 - 2.0);
        assert_eq!(y[16], 3.0 * 0.5 - 2.0);
        assert_eq!(y[17], 19.0 * 0.5 - 2.0);
    }

    #[test]
    fn iq4_nl_block() {
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let y = dequantize_to_vec(DType::IQ4_NL, &b).unwrap();
        assert_eq!(y[0], -127.0 * 0.5);
        assert_eq!(y[8], 0.5);
        assert_eq!(y[15], 113.0 * 0.5);
        assert_eq!(y[16], 113.0 * 0.5);
    }

    #[test]
    fn iq4_xs_block() {
        let mut b = h(0.25).to_vec();
        // Sub-block 0: ls = 0x0F | (0b11 << 4) = 63; sub-block 3: ls = 0x2 | (0b01 << 4) = 18.
        b.extend((0b0100_0011u16).to_le_bytes());
        b.extend([0x0F, 0x20, 0, 0]);
        b.extend([0xF0u8; 128]); // low nibble 0 (-127), high nibble 15 (113)
        let y = dequantize_to_vec(DType::IQ4_XS, &b).unwrap();
        assert_eq!(y[0], 0.25 * 31.0 * -127.0);
        assert_eq!(y[16], 0.25 * 31.0 * 113.0);
        assert_eq!(y[96], 0.25 * -14.0 * -127.0);
        assert_eq!(y[32], 0.25 * -32.0 * -127.0); // sub-block 1: ls = 0
    }

    #[test]
    fn q2_k_block() {
        let mut b = vec![0u8; 84];
        b[0] = 0x35; // values 0..16: scale 5, min 3
        b[9] = 0x12; // values 144..160 (half 1, plane 0, run 1): scale 2, min 1
        b[16] = 0b11_10_01_00; // qs[0]: value 0 is 0, value 32 is 1, 64 is 2, 96 is 3
        b[16 + 32 + 16] = 0x03; // qs[48]: value 144 is 3
        b[80..82].copy_from_slice(&h(0.5));
        b[82..84].copy_from_slice(&h(0.25));
        let y = dequantize_to_vec(DType::Q2_K, &b).unwrap();
        assert_eq!(y[0], -0.75);
        assert_eq!(y[144], 0.5 * 2.0 * 3.0 - 0.25);
        assert_eq!(y[32], 0.0); // scale byte 2 is 0
    }

    #[test]
    fn q3_k_block() {
        let mut b = vec![0u8; 110];
        b[0] = 0b0001_0001; // hmask[0]: high bit of value 0 (bit 0) and value 128 (bit 4)
        b[32] = 0b11_10_01_10; // qs[0]: value 0 is 2, 32 is 1, 64 is 2, 96 is 3
        b[96] = 0x0F; // scale 0: low 15; scale 8: low 0
        b[104] = 0b0000_0011; // scale 0: high 3 → 63 − 32 = 31; scale 4 high 0
        b[108..110].copy_from_slice(&h(0.5));
        let y = dequantize_to_vec(DType::Q3_K, &b).unwrap();
        assert_eq!(y[0], 0.5 * 31.0 * 2.0); // hmask bit set: no offset
        assert_eq!(y[1], 0.5 * 31.0 * -4.0); // clear: 0 − 4
        assert_eq!(y[32], 0.5 * -32.0 * (1 - 4) as f32); // scale 2 is 0 − 32
        assert_eq!(y[128], 0.5 * -32.0 * 0.0); // qs[32] is 0, hmask bit 4 set
    }

    #[test]
    fn q5_k_block() {
        let mut b = [h(0.5), h(0.25)].concat();
        let mut scales = [0u8; 12];
        scales[0] = 3; // chunk 0: scale 3, min 5
        scales[4] = 5;
        scales[1] = 2; // chunk 1: scale 2, min 0
        b.extend(scales);
        let mut qh = [0u8; 32];
        qh[0] = 0b11; // value 0 and value 32 get their fifth bit
        b.extend(qh);
        b.extend([0x7Au8; 128]);
        let y = dequantize_to_vec(DType::Q5_K, &b).unwrap();
        assert_eq!(y[0], 0.5 * 3.0 * 26.0 - 0.25 * 5.0);
        assert_eq!(y[1], 0.5 * 3.0 * 10.0 - 0.25 * 5.0);
        assert_eq!(y[32], 0.5 * 2.0 * 23.0);
        assert_eq!(y[33], 0.5 * 2.0 * 7.0);
    }

    /// quant.wgsl and linear_rows4.wgsl hold the IQ4_NL levels as packed i8 words; they must be
    /// this table.
    #[test]
    fn shader_iq4nl_levels_match_the_table() {
        for src in [
            include_str!("../../shaders/quant.wgsl"),
            include_str!("../../shaders/linear_rows4.wgsl"),
        ] {
            shader_levels_match(src);
        }
    }

    fn shader_levels_match(src: &str) {
        let line = src
            .lines()
            .find(|l| l.starts_with("const IQ4NL_LEVELS"))
            .expect("the shader defines IQ4NL_LEVELS");
        let words: Vec<u32> = line
            .split("0x")
            .skip(1)
            .map(|w| u32::from_str_radix(&w[..8], 16).unwrap())
            .collect();
        let bytes: Vec<i8> = words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .map(|b| b as i8)
            .collect();
        assert_eq!(bytes, KVALUES_IQ4NL);
    }

    #[test]
    fn plain_floats() {
        let f32s: Vec<u8> = [1.5f32, -0.0, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let y = dequantize_to_vec(DType::F32, &f32s).unwrap();
        assert_eq!(y[0], 1.5);
        assert_eq!(y[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(y[2], f32::INFINITY);
        let y = dequantize_to_vec(DType::F16, &[0x00, 0x3C, 0x01, 0x00]).unwrap();
        assert_eq!(y, [1.0, 2f32.powi(-24)]);
        // f16 NaNs keep sign and payload, signalling ones too, as in gguf-py.
        let y = dequantize_to_vec(DType::F16, &[0x01, 0x7C, 0x00, 0xFE]).unwrap();
        assert_eq!(y[0].to_bits(), 0x7F80_2000);
        assert_eq!(y[1].to_bits(), 0xFFC0_0000);
        // bf16 NaN payloads are kept, like ggml's shift (half's conversion would quiet them).
        let y = dequantize_to_vec(DType::BF16, &[0x80, 0x3F, 0x81, 0x7F]).unwrap();
        assert_eq!(y[0], 1.0);
        assert_eq!(y[1].to_bits(), 0x7F81_0000);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let e = dequantize_to_vec(DType::Q4_K, &[0u8; 145]).unwrap_err();
        assert_eq!(e.code(), "invalid_tensor");
        assert!(e.to_string().contains("145 bytes"), "{e}");
        let mut out = vec![0.0; 31];
        let e = dequantize(DType::Q8_0, &[0u8; 34], &mut out).unwrap_err();
        assert!(e.to_string().contains("32 values"), "{e}");
        assert!(dequantize(DType::F32, &[0u8; 8], &mut []).is_err());
        assert!(dequantize_to_vec(DType::F16, &[0u8; 3]).is_err());
        assert_eq!(
            dequantize_to_vec(DType::Q6_K, &[]).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn random_bytes_of_every_length_never_panic() {
        let mut rng = Rng::new(7);
        for dtype in DType::ALL {
            for len in 0..=3 * dtype.block_bytes() + 1 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                let whole = len.is_multiple_of(dtype.block_bytes());
                let n = len / dtype.block_bytes() * dtype.block_size();
                assert_eq!(
                    dequantize_to_vec(dtype, &bytes).is_ok(),
                    whole,
                    "{dtype} {len}"
                );
                for out_len in [n.saturating_sub(1), n, n + 1] {
                    let mut out = vec![0.0; out_len];
                    let ok = dequantize(dtype, &bytes, &mut out).is_ok();
                    assert_eq!(ok, whole && out_len == n, "{dtype} {len} {out_len}");
                }
            }
        }
    }
}
