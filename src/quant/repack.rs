//! GGUF bytes → the GPU layout described in the module docs: quants and scales of a run of whole
//! blocks, as `u32` words. A tensor is repacked in pieces (so a streamed upload never needs the
//! whole tensor in memory): each piece writes its quants at [`quant_offset`] and its scales at
//! [`scale_offset`] within the tensor's buffer.

use crate::error::{Error, Result};
use crate::quant::DType;

/// One repacked run of blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    pub quants: Vec<u32>,
    pub scales: Vec<u32>,
}

fn word(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn half_word(lo: &[u8], hi: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([lo[0], lo[1]]))
        | (u32::from(u16::from_le_bytes([hi[0], hi[1]])) << 16)
}

fn words(out: &mut Vec<u32>, bytes: &[u8]) {
    out.extend(bytes.chunks_exact(4).map(word));
}

/// Repacks whole blocks of a quantized tensor (`bytes` exactly as in GGUF). For formats that
/// store two f16 scales per word, the run must start at an even block (see [`scale_offset`]);
/// an odd number of blocks leaves the last scale word's high half zero.
pub fn repack_blocks(dtype: DType, bytes: &[u8]) -> Result<Packed> {
    let bb = dtype.block_bytes();
    if !dtype.is_quantized() || !bytes.len().is_multiple_of(bb) {
        return Err(Error::InvalidTensor {
            tensor: format!("{dtype} data"),
            detail: format!(
                "{} bytes are not a whole number of {dtype} blocks of {bb} bytes",
                bytes.len()
            ),
        });
    }
    let blocks = bytes.len() / bb;
    let mut p = Packed {
        quants: Vec::with_capacity(blocks * dtype.quant_words()),
        scales: Vec::with_capacity(dtype.scale_words(blocks)),
    };
    // Formats with one f16 scale per block store two per word: hold the even block's.
    let mut pending_half: Option<&[u8]> = None;
    for blk in bytes.chunks_exact(bb) {
        match dtype {
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::IQ4_NL => {
                let (d, rest) = blk.split_at(2);
                match dtype {
                    DType::Q5_0 => {
                        // GGUF: d, qh[4], qs[16]; GPU: qs then qh.
                        words(&mut p.quants, &rest[4..]);
                        p.quants.push(word(&rest[..4]));
                    }
                    _ => words(&mut p.quants, rest),
                }
                match pending_half.take() {
                    None => pending_half = Some(d),
                    Some(lo) => p.scales.push(half_word(lo, d)),
                }
            }
            DType::Q4_1 => {
                words(&mut p.quants, &blk[4..]);
                p.scales.push(word(&blk[..4]));
            }
            DType::Q5_1 => {
                // GGUF: d, m, qh[4], qs[16]; GPU: qs then qh, like Q5_0.
                words(&mut p.quants, &blk[8..]);
                p.quants.push(word(&blk[4..8]));
                p.scales.push(word(&blk[..4]));
            }
            DType::Q2_K => {
                // GGUF: scales[16], qs[64], d, dmin; GPU scales: d/dmin first, as Q4_K.
                words(&mut p.quants, &blk[16..80]);
                p.scales.push(word(&blk[80..84]));
                words(&mut p.scales, &blk[..16]);
            }
            DType::Q3_K => {
                // GGUF: hmask[32], qs[64], scales[12], d — 110 bytes, so d gets a word.
                words(&mut p.quants, &blk[..96]);
                words(&mut p.scales, &blk[96..108]);
                p.scales
                    .push(u32::from(u16::from_le_bytes([blk[108], blk[109]])));
            }
            DType::Q5_K => {
                // GGUF: d, dmin, scales[12], qh[32], qs[128]; GPU: qs then qh.
                words(&mut p.quants, &blk[48..]);
                words(&mut p.quants, &blk[16..48]);
                words(&mut p.scales, &blk[..16]);
            }
            DType::IQ4_XS => {
                // GGUF: d, scales_h (u16), scales_l[4], qs[128] — already word-aligned.
                words(&mut p.quants, &blk[8..]);
                words(&mut p.scales, &blk[..8]);
            }
            DType::Q4_K => {
                // GGUF: d, dmin, scales[12], qs[128] — already word-aligned.
                words(&mut p.quants, &blk[16..]);
                words(&mut p.scales, &blk[..16]);
            }
            DType::Q6_K => {
                // GGUF: ql[128], qh[64], scales[16], d.
                words(&mut p.quants, &blk[..192]);
                words(&mut p.scales, &blk[192..208]);
                p.scales
                    .push(u32::from(u16::from_le_bytes([blk[208], blk[209]])));
            }
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 => {
                unreachable!("checked above: not a block format")
            }
        }
    }
    if let Some(lo) = pending_half {
        p.scales.push(half_word(lo, &[0, 0]));
    }
    Ok(p)
}

/// Word offset of block `first_block`'s quants in the tensor's buffer.
pub fn quant_offset(dtype: DType, first_block: usize) -> usize {
    first_block * dtype.quant_words()
}

/// Word offset of block `first_block`'s scales in the buffer of a tensor of `total_blocks`
/// blocks; `None` when the block shares its scale word with the previous one (an odd block of a
/// format with two f16 scales per word), where a piece cannot start.
pub fn scale_offset(dtype: DType, total_blocks: usize, first_block: usize) -> Option<usize> {
    let base = total_blocks * dtype.quant_words();
    match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4_NL => first_block
            .is_multiple_of(2)
            .then_some(base + first_block / 2),
        _ => Some(base + dtype.scale_words(first_block)),
    }
}

/// The whole tensor's GPU words from its GGUF bytes (`rows × cols` elements of `dtype`).
pub fn repack_tensor(dtype: DType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Vec<u32>> {
    let numel = rows.checked_mul(cols);
    let expected = numel.and_then(|n| dtype.bytes_for(n));
    if expected != Some(bytes.len()) {
        return Err(Error::InvalidTensor {
            tensor: format!("{dtype} [{rows}, {cols}]"),
            detail: match expected {
                Some(e) => format!("expected {e} bytes, got {}", bytes.len()),
                None => format!(
                    "rows of {cols} are not a whole number of {dtype} blocks of {}",
                    dtype.block_size()
                ),
            },
        });
    }
    match dtype {
        DType::F32 | DType::I32 => Ok(bytes.chunks_exact(4).map(word).collect()),
        DType::F16 | DType::BF16 => {
            let stride = dtype.padded_row_len(cols);
            let mut halves: Vec<u16> = Vec::with_capacity(rows * stride);
            for row in bytes.chunks_exact(2 * cols.max(1)).take(rows) {
                halves.extend(
                    row.chunks_exact(2)
                        .map(|h| u16::from_le_bytes([h[0], h[1]])),
                );
                halves.resize(halves.len() + stride - cols, 0);
            }
            Ok(halves
                .chunks(2)
                .map(|p| u32::from(p[0]) | (u32::from(*p.get(1).unwrap_or(&0)) << 16))
                .collect())
        }
        _ => {
            let p = repack_blocks(dtype, bytes)?;
            let mut out = p.quants;
            out.extend(p.scales);
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(dtype: DType, n: usize) -> Vec<u8> {
        (0..n * dtype.block_bytes())
            .map(|i| (i * 37 % 251) as u8)
            .collect()
    }

    #[test]
    fn sizes_match_the_layout() {
        for dtype in DType::QUANTIZED {
            for n in 1..5 {
                let p = repack_blocks(dtype, &blocks(dtype, n)).unwrap();
                assert_eq!(p.quants.len(), n * dtype.quant_words(), "{dtype}");
                assert_eq!(p.scales.len(), dtype.scale_words(n), "{dtype}");
                let all =
                    repack_tensor(dtype, 1, n * dtype.block_size(), &blocks(dtype, n)).unwrap();
                assert_eq!(
                    all.len(),
                    dtype.gpu_words(1, n * dtype.block_size()).unwrap()
                );
            }
        }
    }

    #[test]
    fn pieces_land_where_the_whole_tensor_puts_them() {
        for dtype in DType::QUANTIZED {
            let total = 6;
            let data = blocks(dtype, total);
            let whole = repack_tensor(dtype, 1, total * dtype.block_size(), &data).unwrap();
            let mut assembled = vec![0u32; whole.len()];
            for (first, n) in [(0, 2), (2, 4)] {
                let bb = dtype.block_bytes();
                let p = repack_blocks(dtype, &data[first * bb..(first + n) * bb]).unwrap();
                let q = quant_offset(dtype, first);
                assembled[q..q + p.quants.len()].copy_from_slice(&p.quants);
                let s = scale_offset(dtype, total, first).unwrap();
                assembled[s..s + p.scales.len()].copy_from_slice(&p.scales);
            }
            assert_eq!(assembled, whole, "{dtype}");
        }
        assert_eq!(scale_offset(DType::Q8_0, 4, 1), None);
        assert!(scale_offset(DType::Q4_K, 4, 1).is_some());
    }

    #[test]
    fn q5_0_moves_qh_after_qs() {
        let mut blk = vec![0u8; 22];
        blk[2..6].copy_from_slice(&[1, 2, 3, 4]);
        blk[6] = 0xAB;
        let p = repack_blocks(DType::Q5_0, &blk).unwrap();
        assert_eq!(p.quants[0], 0xAB);
        assert_eq!(p.quants[4], 0x0403_0201);
    }

    #[test]
    fn k_quants_split_quants_from_scales() {
        let blk: Vec<u8> = (0..176).map(|i| i as u8).collect();
        let p = repack_blocks(DType::Q5_K, &blk).unwrap();
        assert_eq!(p.quants[0], 0x3332_3130); // qs starts at byte 48
        assert_eq!(p.quants[32], 0x1312_1110); // then qh (byte 16)
        assert_eq!(
            p.scales,
            vec![0x0302_0100, 0x0706_0504, 0x0B0A_0908, 0x0F0E_0D0C]
        );

        let blk: Vec<u8> = (0..84).map(|i| i as u8).collect();
        let p = repack_blocks(DType::Q2_K, &blk).unwrap();
        assert_eq!(p.quants[0], 0x1312_1110);
        assert_eq!(p.scales[0], 0x5352_5150); // d, dmin
        assert_eq!(p.scales[1], 0x0302_0100); // scales[0..4]

        let blk: Vec<u8> = (0..110).map(|i| i as u8).collect();
        let p = repack_blocks(DType::Q3_K, &blk).unwrap();
        assert_eq!(p.quants.len(), 24);
        assert_eq!(
            p.scales,
            vec![0x6362_6160, 0x6766_6564, 0x6B6A_6968, 0x6D6C]
        );

        let blk: Vec<u8> = (0..136).map(|i| i as u8).collect();
        let p = repack_blocks(DType::IQ4_XS, &blk).unwrap();
        assert_eq!(p.quants[0], 0x0B0A_0908);
        assert_eq!(p.scales, vec![0x0302_0100, 0x0706_0504]);
    }

    #[test]
    fn half_rows_are_padded() {
        let bytes: Vec<u8> = [1u16, 2, 3, 4, 5, 6]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let w = repack_tensor(DType::F16, 2, 3, &bytes).unwrap();
        assert_eq!(w, vec![1 | (2 << 16), 3, 4 | (5 << 16), 6]);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(repack_blocks(DType::Q4_0, &[0; 17]).is_err());
        assert!(repack_tensor(DType::Q4_K, 1, 255, &[0; 144]).is_err());
        assert!(repack_tensor(DType::F32, 2, 2, &[0; 12]).is_err());
    }
}
