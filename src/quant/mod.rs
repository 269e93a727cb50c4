//! Tensor element formats: plain floats and GGML's quantized block formats, their sizes, and how
//! they are laid out on the GPU.
//!
//! GGUF stores a block-quantized tensor as rows of blocks whose byte sizes (18, 22, 34, 210, …) do
//! not keep 4-byte alignment, which WGSL needs. On upload every tensor is repacked into `u32` words,
//! structure-of-arrays: first the quants of all blocks, then their scales (`[quants | scales]`),
//! so both regions are aligned and read with coalesced loads. For a tensor of `rows × cols` with
//! `nb = cols / block_size` blocks per row, block `b = row * nb + j` has its quants at words
//! `b * quant_words .. (b + 1) * quant_words` and its scales after `scale_base = blocks * quant_words`:
//!
//! | dtype | quant words per block (bytes as in GGUF, little-endian) | scales |
//! |---|---|---|
//! | Q8_0 | 8: `qs[32]` (i8) | `d` (f16), two blocks per word, even block in the low half |
//! | Q4_0 | 4: `qs[16]` | `d` (f16), two blocks per word |
//! | Q4_1 | 4: `qs[16]` | one word per block: `d` low half, `m` high half |
//! | Q5_0 | 5: `qs[16]`, then `qh` (u32) | `d` (f16), two blocks per word |
//! | Q5_1 | 5: `qs[16]`, then `qh` (u32) | one word per block: `d` low half, `m` high half |
//! | IQ4_NL | 4: `qs[16]` | `d` (f16), two blocks per word |
//! | Q2_K | 16: `qs[64]` | five words per block: `d` low / `dmin` high, then `scales[16]` |
//! | Q3_K | 24: `hmask[32]`, then `qs[64]` | four words per block: `scales[12]`, then `d` (low half) |
//! | Q4_K | 32: `qs[128]` | four words per block: `d` low / `dmin` high, then `scales[12]` |
//! | Q5_K | 40: `qs[128]`, then `qh[32]` | four words per block: `d` low / `dmin` high, then `scales[12]` |
//! | Q6_K | 48: `ql[128]`, then `qh[64]` | five words per block: `scales[16]` (i8), then `d` (low half) |
//! | IQ4_XS | 32: `qs[128]` | two words per block: `d` low / `scales_h` high, then `scales_l[4]` |
//!
//! Every region keeps GGUF's byte order within it, so a decoder reads the same bytes ggml does at
//! a word-aligned base. Q3_K and Q6_K (blocks of 110 and 210 bytes) pad their f16 `d` to a word.
//!
//! F32 is one word per element; F16 and BF16 are two per word with each row padded to an even
//! length. Element values are exactly those of ggml's dequantization.

use std::fmt;

mod dequant;
pub use dequant::{block_dequantizer, dequantize, dequantize_to_vec};

#[cfg(feature = "harness")]
mod random;
mod repack;
#[cfg(feature = "harness")]
pub use random::random_gguf_bytes;
pub use repack::{quant_offset, repack_blocks, repack_tensor, scale_offset, Packed};

/// The element format of a tensor, on disk and on the GPU. Numbering follows `ggml_type`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
    /// 32-bit integers (token ids, indices); not a weight format.
    I32,
}

impl DType {
    pub const ALL: [DType; 16] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::I32,
    ];

    /// The formats weights can have.
    pub const WEIGHTS: [DType; 15] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
    ];

    /// The block-quantized formats.
    pub const QUANTIZED: [DType; 12] = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q8_0 => "q8_0",
            DType::Q2_K => "q2_k",
            DType::Q3_K => "q3_k",
            DType::Q4_K => "q4_k",
            DType::Q5_K => "q5_k",
            DType::Q6_K => "q6_k",
            DType::IQ4_NL => "iq4_nl",
            DType::IQ4_XS => "iq4_xs",
            DType::I32 => "i32",
        }
    }

    /// The `ggml_type` number used in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q2_K => 10,
            DType::Q3_K => 11,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::IQ4_NL => 20,
            DType::IQ4_XS => 23,
            DType::I32 => 26,
            DType::BF16 => 30,
        }
    }

    /// The format for a `ggml_type` number, or `None` for one PocketLM does not run.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.ggml_id() == id)
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Elements per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q5_1 | DType::Q8_0 | DType::IQ4_NL => {
                32
            }
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K | DType::IQ4_XS => {
                256
            }
        }
    }

    /// Bytes per block as stored in GGUF (per element for plain floats).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::IQ4_NL => 18,
            DType::IQ4_XS => 136,
        }
    }

    /// Bytes of `n` elements as stored in GGUF (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.block_bytes())
    }

    /// Words of quants per block in the GPU layout (elements per word for plain floats: see
    /// [`DType::padded_row_len`]).
    pub fn quant_words(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 => 0,
            DType::Q4_0 | DType::Q4_1 | DType::IQ4_NL => 4,
            DType::Q5_0 | DType::Q5_1 => 5,
            DType::Q8_0 => 8,
            DType::Q2_K => 16,
            DType::Q3_K => 24,
            DType::Q4_K | DType::IQ4_XS => 32,
            DType::Q5_K => 40,
            DType::Q6_K => 48,
        }
    }

    /// Words of scales for `blocks` blocks in the GPU layout.
    pub fn scale_words(self, blocks: usize) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 | DType::I32 => 0,
            DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4_NL => blocks.div_ceil(2),
            DType::Q4_1 | DType::Q5_1 => blocks,
            DType::IQ4_XS => 2 * blocks,
            DType::Q3_K | DType::Q4_K | DType::Q5_K => 4 * blocks,
            DType::Q2_K | DType::Q6_K => 5 * blocks,
        }
    }

    /// Elements per row as stored for plain floats: 16-bit rows are padded to whole words.
    pub fn padded_row_len(self, cols: usize) -> usize {
        match self {
            DType::F16 | DType::BF16 => cols.div_ceil(2) * 2,
            _ => cols,
        }
    }

    /// Words a `rows × cols` tensor occupies on the GPU, or `None` on overflow or when `cols` is
    /// not a whole number of blocks.
    pub fn gpu_words(self, rows: usize, cols: usize) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => rows.checked_mul(cols),
            DType::F16 | DType::BF16 => rows.checked_mul(self.padded_row_len(cols) / 2),
            _ => {
                if !cols.is_multiple_of(self.block_size()) {
                    return None;
                }
                let blocks = rows.checked_mul(cols / self.block_size())?;
                blocks
                    .checked_mul(self.quant_words())?
                    .checked_add(self.scale_words(blocks))
            }
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_ids_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_ggml_id(d.ggml_id()), Some(d));
        }
        assert_eq!(DType::from_ggml_id(7), Some(DType::Q5_1));
        assert_eq!(DType::from_ggml_id(23), Some(DType::IQ4_XS));
        assert_eq!(DType::from_ggml_id(9), None, "Q8_1 is not supported");
    }

    #[test]
    fn gpu_layout_keeps_every_byte() {
        // The repacked layout is never smaller than the GGUF bytes, and wastes at most one
        // half-word of scale per block (Q3_K's and Q6_K's d) plus one for an odd block count.
        for d in DType::QUANTIZED {
            let blocks = 3;
            let words = d.gpu_words(1, blocks * d.block_size()).unwrap();
            let gguf = blocks * d.block_bytes();
            assert!(words * 4 >= gguf, "{d}");
            assert!(
                words * 4 <= gguf + 2 * blocks + 2,
                "{d}: {} vs {gguf}",
                words * 4
            );
        }
        assert_eq!(DType::Q8_0.gpu_words(2, 33), None);
        assert_eq!(DType::F16.gpu_words(3, 5), Some(9));
    }
}
