//! Streaming tensor data into GPU memory: whatever the chunking of the stream and the piece
//! budget, every tensor ends up exactly as a whole-tensor upload puts it (checked bit for bit by
//! reading every row back through the embedding kernel).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{ctx, expect_err, gpu_rows};
use pocketlm::formats::SafetensorsIndex;
use pocketlm::gpu::{DType, GpuTensor};
use pocketlm::load::{
    load_directory, load_model, load_model_file, load_stream, AbortFlag, ByteSource, FileHeader,
    FileSource, HeaderStep, LoadOptions, LoadedModelFiles, MemorySource, ModelFile, Progress,
    StreamUploader, TensorPlan,
};
use pocketlm::quant::{dequantize_to_vec, random_gguf_bytes};
use pocketlm::reference::Rng;
use proptest::prelude::*;

/// Every row of `table` as the GPU holds it, as bits.
fn rows_of(table: &GpuTensor) -> Vec<u32> {
    let ids: Vec<i32> = (0..table.rows() as i32).collect();
    gpu_rows(table, &ids).iter().map(|v| v.to_bits()).collect()
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

/// A toy container for exercising `load_stream` without a real format: "TOY1", a u32 tensor
/// count, then per tensor (ggml type, rows, cols, offset) as u32, u32, u32, u64.
fn toy_parse(head: &[u8]) -> pocketlm::Result<HeaderStep<usize>> {
    if head.len() < 8 {
        return Ok(HeaderStep::NeedMore(8));
    }
    assert_eq!(&head[..4], b"TOY1");
    let n = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let len = 8 + 20 * n;
    if head.len() < len {
        return Ok(HeaderStep::NeedMore(len));
    }
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
    let plans = (0..n)
        .map(|t| {
            let b = 8 + 20 * t;
            let dtype = DType::from_ggml_id(u32_at(b)).unwrap();
            let (rows, cols) = (u32_at(b + 4) as usize, u32_at(b + 8) as usize);
            TensorPlan {
                name: format!("t{t}"),
                dtype,
                shape: vec![rows, cols],
                offset: u64::from_le_bytes(head[b + 12..b + 20].try_into().unwrap()),
                bytes: dtype.bytes_for(rows * cols).unwrap() as u64,
            }
        })
        .collect();
    Ok(HeaderStep::Done(len, plans))
}

fn toy_file(rng: &mut Rng) -> (Vec<u8>, Vec<Vec<u8>>) {
    let specs = [
        (DType::Q4_K, 3, 256),
        (DType::F16, 5, 7),
        (DType::Q8_0, 2, 64),
    ];
    let mut header = b"TOY1".to_vec();
    header.extend_from_slice(&(specs.len() as u32).to_le_bytes());
    let mut offset = (8 + 20 * specs.len()).div_ceil(32) * 32;
    let mut datas = Vec::new();
    for (dtype, rows, cols) in specs {
        for v in [dtype.ggml_id(), rows as u32, cols as u32] {
            header.extend_from_slice(&v.to_le_bytes());
        }
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        let data = random_gguf_bytes(dtype, rows * cols, rng);
        offset = (offset + data.len()).div_ceil(32) * 32;
        datas.push(data);
    }
    let mut file = header;
    for d in &datas {
        file.resize(file.len().div_ceil(32) * 32, 0);
        file.extend_from_slice(d);
    }
    (file, datas)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn load_stream_parses_uploads_hashes_and_reports() {
    let mut rng = Rng::new(11);
    let (file, datas) = toy_file(&mut rng);
    // Chunks of 5 bytes: the header arrives in many pieces.
    let mut source = MemorySource::with_chunk("toy.bin", file.clone(), 5);
    let mut seen = Vec::new();
    let mut progress = |p: &Progress| seen.push((p.bytes_done, p.bytes_total));
    let mut opts = LoadOptions {
        progress: Some(&mut progress),
        sha256: Some(sha256_hex(&file).to_uppercase()),
        ..Default::default()
    };
    let loaded = pollster::block_on(load_stream(
        ctx(),
        &mut source,
        |p, _| toy_parse(p),
        &mut opts,
    ))
    .unwrap();
    assert_eq!(loaded.header, 8 + 20 * 3);
    assert_eq!(loaded.bytes, file.len() as u64);
    assert_eq!(loaded.sha256.as_deref(), Some(sha256_hex(&file).as_str()));
    for (t, data) in loaded.tensors.iter().zip(&datas) {
        let want: Vec<u32> = dequantize_to_vec(t.dtype(), data)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(rows_of(t), want, "{}", t.name());
    }
    assert_eq!(seen.len(), file.len().div_ceil(5));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        seen.last(),
        Some(&(file.len() as u64, Some(file.len() as u64)))
    );
}

#[test]
fn load_stream_failures_are_typed() {
    let mut rng = Rng::new(12);
    let (file, _) = toy_file(&mut rng);
    let load = |data: Vec<u8>, opts: &mut LoadOptions| {
        let mut source = MemorySource::with_chunk("toy.bin", data, 64);
        pollster::block_on(load_stream(ctx(), &mut source, |p, _| toy_parse(p), opts)).map(|_| ())
    };
    expect_err(
        load(file[..30].to_vec(), &mut LoadOptions::default()),
        "file_truncated",
        "header needs at least 68 bytes",
    );
    expect_err(
        load(file[..file.len() - 1].to_vec(), &mut LoadOptions::default()),
        "file_truncated",
        "tensor 't2'",
    );
    let mut bad_hash = LoadOptions {
        sha256: Some("00".repeat(32)),
        ..Default::default()
    };
    expect_err(load(file.clone(), &mut bad_hash), "integrity", "toy.bin");
    let abort = AbortFlag::default();
    abort.abort();
    let mut aborted = LoadOptions {
        abort,
        ..Default::default()
    };
    expect_err(load(file, &mut aborted), "aborted", "cancelled");
}

/// The real default model (scripts/fetch-model.sh, run by setup) streams from disk into GPU
/// memory; rows of its Q8_0 embedding and a Q4_1 projection read back bit-exact.
#[test]
fn loads_the_default_model_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        path.display()
    );
    let mut source = FileSource::open(&path).unwrap();
    let loaded = pollster::block_on(load_model_file(
        ctx(),
        &mut source,
        &mut LoadOptions::default(),
    ))
    .unwrap();
    assert_eq!(loaded.tensors.len(), 272);
    let FileHeader::Gguf(header) = &loaded.header else {
        panic!("a GGUF file")
    };
    let file = std::fs::read(&path).unwrap();
    for (name, rows) in [
        ("token_embd.weight", [0, 1, 49151]),
        ("blk.0.attn_q.weight", [0, 300, 575]),
    ] {
        let info = header
            .tensor_infos(0)
            .into_iter()
            .find(|t| t.name == name)
            .unwrap();
        let t = &loaded.tensors[name];
        assert_eq!(t.shape(), info.shape.as_slice());
        let cols = info.shape[1];
        let row_bytes = info.dtype.bytes_for(cols).unwrap();
        let ids: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        let got: Vec<u32> = gpu_rows(t, &ids).iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = rows
            .iter()
            .flat_map(|&r| {
                let at = info.offset as usize + r * row_bytes;
                dequantize_to_vec(info.dtype, &file[at..at + row_bytes]).unwrap()
            })
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, want, "{name} rows {rows:?}");
    }
    assert!(
        loaded.gpu_bytes > 90 << 20 && loaded.gpu_bytes < 100 << 20,
        "{}",
        loaded.gpu_bytes
    );
}

/// Every tensor of `model` holds, on the GPU, exactly the values of its bytes in its file.
fn check_against_files(model: &LoadedModelFiles) {
    let mut checked = 0;
    for info in &model.files.tensors {
        let file = std::fs::read(&model.files.files[info.file]).unwrap();
        let bytes = &file[info.offset as usize..(info.offset + info.bytes) as usize];
        let want: Vec<u32> = dequantize_to_vec(info.dtype, bytes)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let t = &model.tensors[&info.name];
        let got: Vec<u32> = if let [rows, _] = *t.shape() {
            let ids: Vec<i32> = (0..rows as i32).collect();
            gpu_rows(t, &ids).iter().map(|v| v.to_bits()).collect()
        } else {
            pollster::block_on(ctx().read_f32(t))
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(
            got, want,
            "{} from {}",
            info.name, model.files.files[info.file]
        );
        checked += 1;
    }
    assert_eq!(checked, model.tensors.len());
}

fn fixture_files(names: &[&str]) -> Vec<ModelFile<FileSource>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    names
        .iter()
        .map(|n| ModelFile {
            source: FileSource::open(&dir.join(n)).unwrap(),
            sha256: None,
        })
        .collect()
}

const SPLITS: [&str; 3] = [
    "split-00003-of-00003.gguf",
    "split-00001-of-00003.gguf",
    "split-00002-of-00003.gguf",
];

#[test]
fn split_gguf_loads_as_one_model_with_overall_progress() {
    let files = fixture_files(&SPLITS);
    let sizes: u64 = files.iter().map(|f| f.source.total().unwrap()).sum();
    let mut events: Vec<Progress> = Vec::new();
    let mut progress = |p: &Progress| events.push(p.clone());
    let opts = LoadOptions {
        progress: Some(&mut progress),
        ..Default::default()
    };
    let model = pollster::block_on(load_model(ctx(), files, None, 2, opts)).unwrap();
    assert_eq!(model.files.files.len(), 3);
    assert!(model.tensors.len() >= 3, "{}", model.tensors.len());
    check_against_files(&model);
    let last = events.last().unwrap();
    assert_eq!(
        (last.files, last.all_done, last.all_total),
        (3, sizes, Some(sizes))
    );
    assert!(events.iter().all(|p| p.file_index < 3));
    assert!(events.windows(2).all(|w| w[0].all_done <= w[1].all_done));

    // A missing split is refused.
    let two = fixture_files(&SPLITS[..2]);
    let r = pollster::block_on(load_model(ctx(), two, None, 2, LoadOptions::default()));
    expect_err(r.map(|_| ()), "split_model", "split");
}

#[test]
fn sharded_safetensors_load_as_one_model() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats/sharded");
    let index_path = dir.join("model.safetensors.index.json");
    let index = SafetensorsIndex::parse(
        &std::fs::read(&index_path).unwrap(),
        "model.safetensors.index.json",
    )
    .unwrap();
    let shards = || {
        fixture_files(&[
            "sharded/model-00002-of-00002.safetensors",
            "sharded/model-00001-of-00002.safetensors",
        ])
    };
    // Given in the opposite order to the index's: load_model puts them in its order.
    let files = shards();
    let model = pollster::block_on(load_model(
        ctx(),
        files,
        Some(&index),
        2,
        LoadOptions::default(),
    ))
    .unwrap();
    check_against_files(&model);
    let r = pollster::block_on(load_model(ctx(), shards(), None, 2, LoadOptions::default()));
    expect_err(r.map(|_| ()), "shard_index", "without the index");
}

#[test]
fn a_model_folder_loads_with_its_companion_files() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats/sharded");
    let model = pollster::block_on(load_directory(ctx(), &dir, 2, LoadOptions::default())).unwrap();
    check_against_files(&model);
    assert_eq!(model.files.files.len(), 2);
    assert!(model.companions["config.json"].contains("LlamaForCausalLM"));
    assert!(model.companions.contains_key("tokenizer_config.json"));
    assert!(!model.companions.contains_key("tokenizer.json"));
    // safetensors weights without a config.json say what is missing.
    let bare = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    let r = pollster::block_on(load_directory(ctx(), &bare, 2, LoadOptions::default()));
    expect_err(r.map(|_| ()), "io", "config.json");
}
