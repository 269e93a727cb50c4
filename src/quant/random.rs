//! Random but valid GGUF data of any format, for self-checks and tests: quants are uniformly
//! random bits, scales are finite f16 values of the magnitudes real models have.

use half::{bf16, f16};

use crate::quant::DType;
use crate::rng::Rng;

fn put_f16(out: &mut [u8], v: f32) {
    out.copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `n` elements of `dtype` as GGUF stores them (`n` a multiple of the block size).
pub fn random_gguf_bytes(dtype: DType, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out: Vec<u8> = (0..dtype.bytes_for(n).unwrap_or(0))
        .map(|_| rng.next_u64() as u8)
        .collect();
    let sign = |rng: &mut Rng| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
    match dtype {
        DType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.uniform(-1.0, 1.0).to_le_bytes());
            }
        }
        DType::I32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&((rng.next_u64() % 1000) as i32).to_le_bytes());
            }
        }
        DType::F16 => {
            for c in out.chunks_exact_mut(2) {
                put_f16(c, rng.uniform(-1.0, 1.0));
            }
        }
        DType::BF16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&bf16::from_f32(rng.uniform(-1.0, 1.0)).to_le_bytes());
            }
        }
        DType::Q8_0 | DType::Q4_0 | DType::Q5_0 | DType::IQ4_NL => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                let d = sign(rng) * rng.uniform(0.002, 0.05);
                put_f16(&mut b[..2], d);
            }
        }
        DType::Q4_1 | DType::Q5_1 => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[..2], rng.uniform(0.002, 0.05));
                put_f16(&mut b[2..4], rng.uniform(-0.4, 0.0));
            }
        }
        DType::Q4_K => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[..2], rng.uniform(0.0005, 0.005));
                put_f16(&mut b[2..4], rng.uniform(0.0005, 0.005));
            }
        }
        DType::Q2_K => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[80..82], rng.uniform(0.002, 0.02));
                put_f16(&mut b[82..84], rng.uniform(0.0005, 0.005));
            }
        }
        DType::Q3_K => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[108..110], sign(rng) * rng.uniform(0.0005, 0.005));
            }
        }
        DType::Q5_K => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[..2], rng.uniform(0.0002, 0.002));
                put_f16(&mut b[2..4], rng.uniform(0.0005, 0.005));
            }
        }
        DType::IQ4_XS => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[..2], sign(rng) * rng.uniform(0.00005, 0.0005));
            }
        }
        DType::Q6_K => {
            for b in out.chunks_exact_mut(dtype.block_bytes()) {
                put_f16(&mut b[208..210], sign(rng) * rng.uniform(0.0005, 0.005));
            }
        }
    }
    out
}
