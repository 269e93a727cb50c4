//! The generic decoder against Hugging Face transformers: the tiny random model of every
//! architecture from scripts/make_fixtures.py (f32, bf16 and f16 checkpoints), logits at every
//! position of a 16-token prompt within 1e-3 (f32 KV cache), on both device profiles.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{assert_logits_close, ctx, read_f32_file, TINY_GGUF_FIXTURES};
use pocketlm::gpu::{DType, GpuContext};
use pocketlm::load::{load_directory, LoadOptions};
use pocketlm::model::{Decoder, ModelConfig};

/// A fixture model on the GPU (f32 KV cache), its prompt, and transformers' logits.
struct Fixture {
    model: Decoder,
    ids: Vec<u32>,
    want: Vec<f32>,
    vocab: usize,
}

fn load_fixture(name: &str) -> Fixture {
    load_fixture_with(name, LoadOptions::default())
}

fn load_fixture_with(name: &str, opts: LoadOptions) -> Fixture {
    load_fixture_on(ctx(), name, opts)
}

fn load_fixture_on(ctx: &GpuContext, name: &str, opts: LoadOptions) -> Fixture {
    load_fixture_stepped(ctx, name, opts, None)
}

/// As [`load_fixture_on`], for steps of at most `max_step` tokens (sliding-window layers then
/// keep a ring).
fn load_fixture_stepped(
    ctx: &GpuContext,
    name: &str,
    opts: LoadOptions,
    max_step: Option<usize>,
) -> Fixture {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name);
    let loaded = pollster::block_on(load_directory(ctx, &dir, 2, opts)).unwrap();
    let config = ModelConfig::from_hf_json(&loaded.companions["config.json"], name).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = reference["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want = read_f32_file(&dir.join("logits.f32"));
    let vocab = config.vocab;
    let model = pollster::block_on(Decoder::with_max_step(
        ctx,
        config,
        loaded.tensors,
        64,
        DType::F32,
        max_step,
    ))
    .unwrap();
    Fixture {
        model,
        ids,
        want,
        vocab,
    }
}

/// The tiny model `name` as llama.cpp's converter wrote it (GGUF), on the GPU (f32 KV cache).
fn load_gguf_fixture(name: &str) -> Decoder {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(format!("{name}.gguf"));
    let loaded = pollster::block_on(pocketlm::load::load_native(
        ctx(),
        path.to_str().unwrap(),
        LoadOptions::default(),
    ))
    .unwrap();
    let config = ModelConfig::from_gguf(loaded.files.gguf_metadata().unwrap(), &loaded.files)
        .unwrap_or_else(|e| panic!("{name}.gguf: {e}"));
    pollster::block_on(Decoder::new(ctx(), config, loaded.tensors, 64, DType::F32))
        .unwrap_or_else(|e| panic!("{name}.gguf: {e}"))
}

fn check_fixture(name: &str) {
    check_loaded(name, load_fixture(name));
}

fn check_loaded(name: &str, fixture: Fixture) {
    check_loaded_on(ctx(), name, &fixture);
}

fn check_loaded_on(ctx: &GpuContext, name: &str, fixture: &Fixture) {
    let Fixture {
        model,
        ids,
        want,
        vocab,
    } = fixture;
    let mut graph = pollster::block_on(model.graph(ctx, ids.len(), 8)).unwrap();
    let got = pollster::block_on(model.forward(ctx, &mut graph, ids, 0)).unwrap();
    assert_logits_close(name, &got, want, *vocab, 1e-3);
}

/// Every architecture on the kernels made for GPUs, which a hardware adapter runs (the CPU
/// drivers here run the other family unless asked): the 16-token prompt as one step (a
/// matrix-vector kernel with 16 activation rows per workgroup), and 9 tokens then 7 decode
/// steps (the RoPE epilogue, the O projection combining split attention where it applies).
#[test]
fn every_architecture_on_the_gpu_kernel_family() {
    let gpu = common::gpu_kernels_ctx();
    for name in TINY_GGUF_FIXTURES.iter().chain(&["tiny-mistral"]) {
        let hf = load_fixture_on(gpu, name, LoadOptions::default());
        let label = format!("{name}, GPU kernels");
        check_loaded_on(gpu, &label, &hf);
        decode_matches_prefill_on(gpu, &label, &hf.model, &hf.ids, &hf.want, hf.vocab);
        hf.model.destroy();
    }
    // And every kernel for GPUs that these graphs compiled keeps its arrays out of memory
    // (tests/gpu_kernels.rs checks the linear kernels of every weight format).
    common::assert_no_run_time_indexed_arrays(gpu);
}

#[test]
fn tiny_llama_matches_transformers() {
    check_fixture("tiny-llama");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check_fixture("tiny-qwen2");
}

/// A bf16 checkpoint with bf16 q/k/v biases, as Qwen2.5 ships.
#[test]
fn tiny_qwen2_bf16_matches_transformers() {
    check_fixture("tiny-qwen2-bf16");
}

/// q/k norm, an explicit head_dim unlike hidden / heads, bf16 weights.
#[test]
fn tiny_qwen3_matches_transformers() {
    check_fixture("tiny-qwen3");
}

/// Sandwich norms with (1 + w) weights, GeGLU, √hidden embeddings, q/k norm, a local layer with
/// a 5-position window and its own RoPE base, a global layer with linear RoPE scaling; f16.
#[test]
fn tiny_gemma3_matches_transformers() {
    check_fixture("tiny-gemma3");
}

/// Gemma 3 4B and larger ship as multimodal checkpoints: the language model runs alone, its
/// tensors named as transformers 5 and 4.50 save them (`language_model.model.`) and as 4.52-4.57
/// did (`model.language_model.`, with the hub's sparse `text_config`); bf16.
#[test]
fn tiny_gemma3_multimodal_checkpoints_match_transformers() {
    for name in ["tiny-gemma3-mm", "tiny-gemma3-mm-sparse"] {
        check_fixture(name);
    }
}

/// Attention and final-logit soft-capping, query_pre_attn_scalar, alternating windows.
#[test]
fn tiny_gemma2_matches_transformers() {
    check_fixture("tiny-gemma2");
}

/// Fused qkv and gate/up in the checkpoint, half the head rotating, LongRoPE factors and scale.
#[test]
fn tiny_phi3_matches_transformers() {
    check_fixture("tiny-phi3");
}

/// A NoPE layer.
#[test]
fn tiny_smollm3_matches_transformers() {
    check_fixture("tiny-smollm3");
}

/// A 5-position sliding window in every layer.
#[test]
fn tiny_mistral_matches_transformers() {
    check_fixture("tiny-mistral");
}

/// The same tiny models converted to GGUF by llama.cpp's own converter
/// (scripts/convert_fixtures_to_gguf.py: q/k permuted for its interleaved RoPE, Gemma's norms
/// as 1 + w, Phi-3's LongRoPE factors as tensors, each architecture's metadata keys) give
/// transformers' logits too: the GGUF path of every architecture.
#[test]
fn gguf_conversions_match_transformers() {
    for name in TINY_GGUF_FIXTURES {
        let model = load_gguf_fixture(name);
        let hf = load_fixture(name);
        check_loaded(
            &format!("{name}.gguf"),
            Fixture {
                model,
                ids: hf.ids,
                want: hf.want,
                vocab: hf.vocab,
            },
        );
        hf.model.destroy();
    }
}

/// Embedding and output tables larger than a storage binding are split into row ranges on
/// upload, and the embedding lookup and LM head run once per part: forced here with a small
/// binding limit (Gemma 3's 262,144-token table needs it on every adapter). tiny-llama has an
/// untied head (both tables split), tiny-gemma3 a tied one.
#[test]
fn tables_split_over_bindings_give_the_same_logits() {
    for (name, limit) in [("tiny-llama", 20_000), ("tiny-gemma3", 10_000)] {
        let opts = LoadOptions {
            max_binding_bytes: Some(limit),
            ..Default::default()
        };
        let fixture = load_fixture_with(name, opts);
        assert_eq!(fixture.model.table_parts(), (2, 2), "{name}");
        check_loaded(name, fixture);
    }
}

/// A model whose q, k, v (or gate, up) are stored in different formats, as llama.cpp's mixed
/// presets store them, runs them as separate projections: the logits equal those of the fused
/// projections on the same values (v and gate rounded to f16 in both runs).
#[test]
fn projections_of_different_formats_run_unfused() {
    use half::f16;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    let ids: Vec<u32> = (0..16).map(|i| (i * 7 + 3) % 128).collect();
    let mut logits = Vec::new();
    for mixed in [false, true] {
        let mut loaded =
            pollster::block_on(load_directory(ctx(), &dir, 2, LoadOptions::default())).unwrap();
        for name in [
            "model.layers.0.self_attn.v_proj.weight",
            "model.layers.1.mlp.gate_proj.weight",
        ] {
            let t = loaded.tensors.remove(name).unwrap();
            let v = pollster::block_on(ctx().read_f32(&t)).unwrap();
            let rounded: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            let replaced = if mixed {
                ctx().upload_f16(name, t.shape(), &rounded).unwrap()
            } else {
                let back: Vec<f32> = rounded.iter().map(|x| x.to_f32()).collect();
                ctx().upload_f32(name, t.shape(), &back).unwrap()
            };
            loaded.tensors.insert(name.to_string(), replaced);
        }
        let config =
            ModelConfig::from_hf_json(&loaded.companions["config.json"], "tiny-llama").unwrap();
        let model = pollster::block_on(Decoder::new(ctx(), config, loaded.tensors, 64, DType::F32))
            .unwrap();
        let per_layer = model.dispatches_per_layer();
        // Layer 0's q/k/v and layer 1's gate/up are apart only in the mixed run.
        assert_eq!(per_layer, if mixed { vec![8, 7] } else { vec![5, 5] });
        let mut graph = pollster::block_on(model.graph(ctx(), ids.len(), 8)).unwrap();
        logits.push(pollster::block_on(model.forward(ctx(), &mut graph, &ids, 0)).unwrap());
    }
    let worst = logits[0]
        .iter()
        .zip(&logits[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "fused and unfused logits differ by {worst}");
}

/// Prefill then decode through the KV cache gives the logits of one long prefill: the first 9
/// tokens as one step, then the other 7 one at a time with the 1-token graph, whose q, k, v
/// projection rotates and writes the cache in its epilogue where the layer allows it (no q/k
/// norm, the whole head rotating): every architecture, from its checkpoint and from llama.cpp's
/// GGUF conversion (interleaved RoPE).
#[test]
fn decode_after_prefill_matches_one_prefill() {
    for name in TINY_GGUF_FIXTURES.iter().chain(&["tiny-mistral"]) {
        let hf = load_fixture(name);
        decode_matches_prefill(name, &hf.model, &hf.ids, &hf.want, hf.vocab);
        if *name == "tiny-mistral" {
            hf.model.destroy();
            continue;
        }
        let gguf = load_gguf_fixture(name);
        decode_matches_prefill(&format!("{name}.gguf"), &gguf, &hf.ids, &hf.want, hf.vocab);
        gguf.destroy();
        hf.model.destroy();
    }
}

fn decode_matches_prefill(name: &str, model: &Decoder, ids: &[u32], want: &[f32], vocab: usize) {
    decode_matches_prefill_on(ctx(), name, model, ids, want, vocab);
}

/// Sliding-window layers with steps of at most 2 tokens keep rings of window + 1 positions (6
/// or 7 of the 64), which the 16-token prompt, run in steps of 2 and 1, wraps twice: every
/// step's logits equal the whole cache's to the bit and transformers' within 1e-3 (local and
/// global layers alternating in Gemma 2, five local layers to one global in Gemma 3, every
/// layer local in Mistral), and the cache is smaller. A graph for no more positions than the
/// ring holds (the engine's first graphs) runs on it too. A longer step is refused.
/// On both kernel families (the one made for GPUs stores RoPE and the cache in the QKV
/// projection's epilogue).
#[test]
fn sliding_window_rings_match_transformers() {
    let families = [ctx(), common::gpu_kernels_ctx()];
    for (ctx, name) in families
        .into_iter()
        .flat_map(|c| ["tiny-gemma3", "tiny-gemma2", "tiny-mistral"].map(|n| (c, n)))
    {
        let ring = load_fixture_stepped(ctx, name, LoadOptions::default(), Some(2));
        let whole = load_fixture_stepped(ctx, name, LoadOptions::default(), None);
        let (mut g_ring, mut g_whole) = pollster::block_on(async {
            (
                ring.model.graph(ctx, 2, 8).await.unwrap(),
                whole.model.graph(ctx, 2, 8).await.unwrap(),
            )
        });
        // A graph for fewer positions than the ring holds, as the engine builds for the start
        // of a context: the window covers all of them, and to it the ring is a whole cache.
        let (mut s_ring, mut s_whole) = pollster::block_on(async {
            (
                ring.model.graph_with(ctx, 2, 4, 8, true).await.unwrap(),
                whole.model.graph_with(ctx, 2, 4, 8, true).await.unwrap(),
            )
        });
        for pos in [0, 2] {
            let chunk = &ring.ids[pos..pos + 2];
            let a = pollster::block_on(ring.model.forward(ctx, &mut s_ring, chunk, pos)).unwrap();
            let b = pollster::block_on(whole.model.forward(ctx, &mut s_whole, chunk, pos)).unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: a 4-position graph's logits at {pos} differ on the ring"
            );
        }
        let mut got = Vec::new();
        let mut pos = 0;
        for n in [2, 1, 2, 2, 1, 2, 2, 2, 2] {
            let chunk = &ring.ids[pos..pos + n];
            let a = pollster::block_on(ring.model.forward(ctx, &mut g_ring, chunk, pos)).unwrap();
            let b = pollster::block_on(whole.model.forward(ctx, &mut g_whole, chunk, pos)).unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: the ring's logits at {pos}..{} differ from the whole cache's",
                pos + n
            );
            got.extend(a);
            pos += n;
        }
        assert_eq!(pos, ring.ids.len());
        assert_logits_close(name, &got, &ring.want, ring.vocab, 1e-3);
        let (ring_kv, whole_kv) = (ring.model.gpu_bytes().1, whole.model.gpu_bytes().1);
        assert!(
            ring_kv < whole_kv,
            "{name}: {ring_kv} bytes of KV cache, not fewer than {whole_kv}"
        );
        let longer = pollster::block_on(ring.model.graph(ctx, 3, 8));
        assert!(longer.is_err(), "{name}: a 3-token step was accepted");
        ring.model.destroy();
        whole.model.destroy();
    }
}

fn decode_matches_prefill_on(
    ctx: &GpuContext,
    name: &str,
    model: &Decoder,
    ids: &[u32],
    want: &[f32],
    vocab: usize,
) {
    let mut prefill = pollster::block_on(model.graph(ctx, 9, 8)).unwrap();
    let mut decode = pollster::block_on(model.graph(ctx, 1, 8)).unwrap();
    let mut got = pollster::block_on(model.forward(ctx, &mut prefill, &ids[..9], 0)).unwrap();
    for (pos, &id) in ids.iter().enumerate().skip(9) {
        got.extend(pollster::block_on(model.forward(ctx, &mut decode, &[id], pos)).unwrap());
    }
    assert_eq!(got.len(), 16 * vocab);
    assert_logits_close(name, &got, want, vocab, 1e-3);
}

/// A Llama decode step runs 5 dispatches per layer, counted by the device's GpuStats: the
/// dispatches of a step of the 2-layer tiny Llama less those of the same model cut to 1 layer
/// (q, k, v with the attention norm before and RoPE and the KV-cache write after; attention; the
/// output projection into the residual stream; gate and up with the MLP norm and SiLU; down into
/// the stream). Also with a context long enough to split attention into chunks, where on the
/// kernels made for GPUs the output projection combines the chunks as it loads them (the decode
/// steps of that model give transformers' logits) and on those for CPU adapters the combine stays
/// a dispatch.
#[test]
fn a_llama_decode_step_runs_five_dispatches_per_layer() {
    use std::sync::atomic::Ordering;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    // A context of its own: the shared one counts the dispatches of the tests running beside.
    let own = pollster::block_on(GpuContext::new(common::profile_request())).unwrap();
    let gpu_kernels = pollster::block_on(GpuContext::new(common::profile_request()))
        .unwrap()
        .with_cpu_kernels(false);
    for (ctx, positions) in [(&own, 64), (&own, 512), (&gpu_kernels, 512)] {
        let mut per_step = Vec::new();
        for layers in [1, 2] {
            let loaded =
                pollster::block_on(load_directory(ctx, &dir, 2, LoadOptions::default())).unwrap();
            let mut config =
                ModelConfig::from_hf_json(&loaded.companions["config.json"], "tiny-llama").unwrap();
            config.layers = layers;
            config.layer_specs.truncate(layers);
            let model = pollster::block_on(Decoder::new(
                ctx,
                config,
                loaded.tensors,
                positions,
                DType::F32,
            ))
            .unwrap();
            let mut graph = pollster::block_on(model.graph(ctx, 1, 8)).unwrap();
            pollster::block_on(model.forward(ctx, &mut graph, &[5], 0)).unwrap();
            let before = ctx.stats.dispatches.load(Ordering::Relaxed);
            pollster::block_on(model.forward(ctx, &mut graph, &[7], 1)).unwrap();
            per_step.push(ctx.stats.dispatches.load(Ordering::Relaxed) - before);
            if layers == 2 && positions > 64 && !ctx.capabilities().cpu {
                let hf = load_fixture("tiny-llama");
                decode_matches_prefill_on(
                    ctx,
                    "tiny-llama, split context",
                    &model,
                    &hf.ids,
                    &hf.want,
                    hf.vocab,
                );
                hf.model.destroy();
            }
            model.destroy();
        }
        // 512 positions split attention into 8 chunks of 64. The kernels for CPU adapters,
        // which compute whole dot products per invocation, keep the combine pass.
        let split_kept = ctx.capabilities().cpu && positions > 64;
        assert_eq!(
            per_step[1] - per_step[0],
            if split_kept { 6 } else { 5 },
            "{positions} positions, cpu kernels {}: dispatches per step: {per_step:?}",
            ctx.capabilities().cpu
        );
    }
}

/// Dispatches of a decode step by layer, counted by the device's GpuStats between models of one
/// and two layers, and as `dispatches_per_layer` says:
/// - the per-head q/k norms run in the dispatch of RoPE and the KV-cache write: Qwen3 runs a
///   Llama's dispatches plus the cache write (6 per layer); OLMo 2, whose norms span all heads,
///   keeps them apart;
/// - on the kernels made for GPUs, post-norms (Gemma's, OLMo 2's) are added to the stream by the
///   next projection as it loads its input: the attention block's by the MLP's gate/up, the
///   MLP's by the next layer's q, k, v projection where its bindings fit the storage-buffer limit
///   (Gemma's with the pre-norm's weight do not fit the baseline profile's 8), else by a
///   dispatch, as the last layer's always is. Gemma 3 runs 6 per layer where both fold (the last
///   7), 8 on the kernels for CPU adapters.
#[test]
fn decode_dispatches_per_layer_of_qk_and_post_norm_models() {
    use std::sync::atomic::Ordering;
    // Contexts of their own: the shared ones count the dispatches of the tests running beside.
    let cpu_family = pollster::block_on(GpuContext::new(common::profile_request()))
        .unwrap()
        .with_cpu_kernels(true);
    let gpu_family = pollster::block_on(GpuContext::new(common::profile_request()))
        .unwrap()
        .with_cpu_kernels(false);
    for own in [&cpu_family, &gpu_family] {
        let gpu = !own.capabilities().cpu;
        // Per layer without the post-norm adds; whether the layers have a pre-norm (the q, k, v
        // projection's prologue, one more binding) and post-norms, and whether the q, k, v
        // projection rotates and writes the cache in its epilogue (Gemma 2: the MLP's post-norm
        // is added by a dispatch before it).
        for (name, base, pre_norm, post, rope_epilogue) in [
            ("tiny-qwen3", 6, true, false, false),
            ("tiny-olmo2", 8, false, true, false),
            ("tiny-gemma3", 6, true, true, false),
            ("tiny-gemma2", 5, true, true, true),
        ] {
            let post = usize::from(post);
            // The MLP's post-norm in the next layer's q, k, v projection (three outputs).
            let fits = pocketlm::kernels::residual_fits(own, 1, 3, false, pre_norm);
            let into_qkv = usize::from(gpu && fits && !rope_epilogue);
            // The attention block's post-norm folds into the MLP's gate/up on the GPU family.
            let adds = 2 * post - post * usize::from(gpu);
            let two = [base + adds - post * into_qkv, base + adds];
            // The second layer adds the first's count (the last layer's is the same either way).
            let added = two[0];
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/models")
                .join(name);
            let mut per_step = Vec::new();
            for layers in [1, 2] {
                let loaded =
                    pollster::block_on(load_directory(own, &dir, 2, LoadOptions::default()))
                        .unwrap();
                let mut config =
                    ModelConfig::from_hf_json(&loaded.companions["config.json"], name).unwrap();
                config.layers = layers;
                config.layer_specs.truncate(layers);
                let model =
                    pollster::block_on(Decoder::new(own, config, loaded.tensors, 64, DType::F32))
                        .unwrap();
                let want = if layers == 1 { &two[1..] } else { &two[..] };
                let label = format!("{name}, {layers} layers, kernels for GPUs {gpu}");
                assert_eq!(model.dispatches_per_layer(), want, "{label}");
                let mut graph = pollster::block_on(model.graph(own, 1, 8)).unwrap();
                pollster::block_on(model.forward(own, &mut graph, &[5], 0)).unwrap();
                let before = own.stats.dispatches.load(Ordering::Relaxed);
                pollster::block_on(model.forward(own, &mut graph, &[7], 1)).unwrap();
                per_step.push(own.stats.dispatches.load(Ordering::Relaxed) - before);
                model.destroy();
            }
            let diff = (per_step[1] - per_step[0]) as usize;
            assert_eq!(
                diff, added,
                "{name}, kernels for GPUs {gpu}: per step {per_step:?}"
            );
        }
    }
}

/// A prefill step that reads nothing back (a prompt's steps before its last) runs the layers
/// only: not the LM head, the model's largest matrix (for a vocabulary of 262,144, as Gemma 3's,
/// three quarters of the weights' bytes). Counted by the device's GpuStats: an 8-token step of
/// the tiny Llama with [`Readout::Nothing`], then the next 8 tokens with their logits read back,
/// which add the last row's gather and the head (one dispatch per part); those logits are
/// transformers' (the first step filled the KV cache as before), on both kernel families.
#[test]
fn a_prefill_step_that_reads_nothing_skips_the_lm_head() {
    use pocketlm::model::{Readout, StepOutput};
    use std::sync::atomic::Ordering;
    for cpu_kernels in [true, false] {
        // A context of its own: the shared one counts the dispatches of the tests running beside.
        let own = pollster::block_on(GpuContext::new(common::profile_request()))
            .unwrap()
            .with_cpu_kernels(cpu_kernels);
        let hf = load_fixture_on(&own, "tiny-llama", LoadOptions::default());
        let mut graph = pollster::block_on(hf.model.graph_with(&own, 8, 64, 8, false)).unwrap();
        let mut counted = |tokens: &[u32], pos: usize, readout: Readout<'_>| {
            let before = own.stats.dispatches.load(Ordering::Relaxed);
            let out =
                pollster::block_on(hf.model.step(&own, &mut graph, tokens, pos, readout)).unwrap();
            (out, own.stats.dispatches.load(Ordering::Relaxed) - before)
        };
        let (_, layers_only) = counted(&hf.ids[..8], 0, Readout::Nothing);
        let (out, with_head) = counted(&hf.ids[8..16], 8, Readout::Logits);
        let head_parts = hf.model.table_parts().1;
        assert_eq!(
            with_head - layers_only,
            1 + head_parts as u64,
            "cpu kernels {cpu_kernels}: {layers_only} dispatches without logits, {with_head} with"
        );
        let StepOutput::Logits(got) = out else {
            panic!("a step asked for logits returned {out:?}");
        };
        let last = &hf.want[15 * hf.vocab..16 * hf.vocab];
        assert_logits_close(
            "tiny-llama, after a step without logits",
            &got,
            last,
            hf.vocab,
            1e-3,
        );
        hf.model.destroy();
    }
}

/// Hostile model files on WebGPU, whose kernels are specialized by the model's sizes: every
/// metadata value of the tiny Gemma 3 (sliding-window and global layers, q/k norms, soft-caps)
/// and of the tiny BERT encoder removed or at the edges of its type
/// (`pocketlm::fuzzing::hostile_headers`, as tests/fuzz_regressions.rs runs them on the CPU
/// backend with the tensor tables too). Each is refused with a typed error or loads and
/// generates (or embeds) keeping its invariants; none may panic, in the runtime or in wgpu's
/// validation.
#[test]
fn hostile_model_files_are_refused_or_run_on_the_gpu() {
    use pocketlm::fuzzing::{run_gpu_model, run_hostile_headers};

    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for (file, generated, embedded) in [("tiny-gemma3.gguf", 50, 0), ("tiny-bert.gguf", 0, 50)] {
        let bytes = std::fs::read(models.join(file)).unwrap();
        let runs = run_hostile_headers(&bytes, false, &|h| run_gpu_model(ctx(), h));
        assert!(
            runs.panics.is_empty(),
            "{file}: panicked on {:#?}",
            runs.panics
        );
        eprintln!("{file}: {} hostile headers: {:?}", runs.cases, runs.total);
        assert!(
            runs.total.generated >= generated && runs.total.embedded >= embedded,
            "{file}: {runs:?}"
        );
    }
}
