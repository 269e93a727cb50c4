//! Streaming tensor data into GPU memory: whatever the chunking of the stream and the piece
//! budget, every tensor ends up exactly as a whole-tensor upload puts it (checked bit for bit by
//! reading every row back through the embedding kernel).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, expect_err};
use pocketlm::gpu::{DType, GpuTensor};
use pocketlm::kernels;
use pocketlm::load::{StreamUploader, TensorPlan};
use pocketlm::quant::{dequantize_to_vec, random_gguf_bytes};
use pocketlm::reference::Rng;
use proptest::prelude::*;

fn rows_of(table: &GpuTensor) -> Vec<u32> {
    let ctx = ctx();
    let rows = table.rows();
    let ids: Vec<i32> = (0..rows as i32).collect();
    let idt = ctx.upload_i32("ids", &[rows], &ids).unwrap();
    let out = ctx.zeros("out", &[rows, table.cols()], DType::F32).unwrap();
    let d = pollster::block_on(kernels::embed(ctx, table, &idt, &out)).unwrap();
    let mut rec = ctx.recorder();
    rec.dispatch(&d);
    let slot = rec.read(&out);
    pollster::block_on(rec.submit_and_read())
        .unwrap()
        .words(slot)
        .to_vec()
}

/// A stream of `header` bytes, then each tensor aligned to 32 bytes with filler in between.
fn make_stream(
    rng: &mut Rng,
    specs: &[(DType, usize, usize)],
) -> (Vec<u8>, Vec<TensorPlan>, Vec<Vec<u8>>) {
    let mut stream: Vec<u8> = (0..rng.range(0, 300)).map(|_| 0xEE).collect();
    let mut plans = Vec::new();
    let mut datas = Vec::new();
    for (i, &(dtype, rows, cols)) in specs.iter().enumerate() {
        stream.resize(stream.len().div_ceil(32) * 32 + 32 * rng.range(0, 2), 0xAA);
        let data = random_gguf_bytes(dtype, rows * cols, rng);
        plans.push(TensorPlan {
            name: format!("t{i}.{dtype}"),
            dtype,
            shape: vec![rows, cols],
            offset: stream.len() as u64,
            bytes: data.len() as u64,
        });
        stream.extend_from_slice(&data);
        datas.push(data);
    }
    stream.extend_from_slice(&[0x55; 17]);
    (stream, plans, datas)
}

fn check_stream(seed: u64, chunk_max: usize, budget: usize) {
    let mut rng = Rng::new(seed);
    let specs: Vec<(DType, usize, usize)> = DType::WEIGHTS
        .iter()
        .map(|&d| {
            let cols = if d.is_quantized() {
                d.block_size() * rng.range(1, 3)
            } else {
                rng.range(1, 40)
            };
            (d, rng.range(1, 9), cols)
        })
        .collect();
    let (stream, plans, datas) = make_stream(&mut rng, &specs);
    let mut up = StreamUploader::new(ctx(), plans.clone(), budget).unwrap();
    let mut at = 0;
    while at < stream.len() {
        let n = rng.range(1, chunk_max).min(stream.len() - at);
        up.feed(&stream[at..at + n]).unwrap();
        at += n;
    }
    assert!(up.is_complete());
    let tensors = up.finish().unwrap();
    for ((plan, data), t) in plans.iter().zip(&datas).zip(&tensors) {
        assert_eq!(t.name(), plan.name);
        let want: Vec<u32> = dequantize_to_vec(plan.dtype, data)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(
            rows_of(t),
            want,
            "{} streamed in chunks ≤ {chunk_max}, pieces ≤ {budget}",
            plan.name
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn streamed_tensors_equal_whole_uploads(seed in any::<u64>(), chunk_max in 1usize..5000, budget in 1usize..3000) {
        check_stream(seed, chunk_max, budget);
    }
}

#[test]
fn byte_by_byte_and_all_at_once() {
    check_stream(1, 1, 64);
    check_stream(2, 1 << 20, 1 << 20);
}

#[test]
fn bad_plans_and_short_streams_are_errors() {
    let ctx = ctx();
    let plan = |name: &str, offset, bytes| TensorPlan {
        name: name.into(),
        dtype: DType::Q8_0,
        shape: vec![2, 32],
        offset,
        bytes,
    };
    expect_err(
        StreamUploader::new(ctx, vec![plan("a", 0, 68), plan("b", 64, 68)], 1024).map(|_| ()),
        "invalid_tensor",
        "overlaps tensor 'a'",
    );
    expect_err(
        StreamUploader::new(ctx, vec![plan("c", 0, 70)], 1024).map(|_| ()),
        "invalid_tensor",
        "do not hold shape",
    );
    let mut up = StreamUploader::new(ctx, vec![plan("d", 10, 68)], 1024).unwrap();
    up.feed(&[0; 50]).unwrap();
    expect_err(
        up.finish().map(|_| ()),
        "invalid_tensor",
        "ended at byte 50",
    );
}
