//! Model configuration from GGUF metadata and from Hugging Face config.json (CPU only).
#![cfg(not(target_arch = "wasm32"))]

use pocketlm::formats::GgufHeader;
use pocketlm::kernels::{Llama3Scaling, RopeLayout};
use pocketlm::model::{Architecture, ModelConfig};

#[test]
fn smollm2_gguf() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-model.sh)", path.display()));
    let header = GgufHeader::parse_file(&bytes, "smollm2.gguf").unwrap();
    let meta = header.metadata.clone();
    let files = header.into_model_files().unwrap();
    let c = ModelConfig::from_gguf(&meta, &files).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab),
        (576, 30, 9, 3, 64, 1536, 49152)
    );
    assert_eq!(c.rope.theta, 100_000.0);
    assert_eq!(c.rope.layout, RopeLayout::Interleaved);
    assert_eq!(c.rope.rotary_dim, 64);
    assert_eq!(c.max_positions, 8192);
    assert!((c.rms_eps - 1e-5).abs() < 1e-12);
    assert!(c.tied_embeddings && !c.qkv_bias);
}

const LLAMA_32: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
  "num_hidden_layers": 16, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072,
  "tie_word_embeddings": true,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
}"#;

#[test]
fn llama_32_config_with_llama3_scaling() {
    let c = ModelConfig::from_hf_json(LLAMA_32, "config.json").unwrap();
    assert_eq!(
        (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim),
        (2048, 16, 32, 8, 64)
    );
    assert_eq!(c.rope.layout, RopeLayout::NeoX);
    assert_eq!(c.rope.theta, 500_000.0);
    assert_eq!(
        c.rope.llama3,
        Some(Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    assert!(c.tied_embeddings);
}

#[test]
fn transformers_5_rope_parameters_and_qwen2() {
    let json = r#"{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
        "vocab_size": 151936, "rms_norm_eps": 1e-06, "tie_word_embeddings": true,
        "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"}}"#;
    let c = ModelConfig::from_hf_json(json, "config.json").unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(c.rope.theta, 1_000_000.0);
    assert_eq!(c.head_dim, 64);
    assert!(c.qkv_bias, "Qwen2 has q/k/v biases");
    assert_eq!(c.rope.llama3, None);
}

#[test]
fn bad_configs_are_typed_errors() {
    let e = ModelConfig::from_hf_json(r#"{"model_type": "gpt2"}"#, "config.json").unwrap_err();
    assert_eq!(e.code(), "unsupported_architecture");
    assert!(
        e.to_string().contains("gpt2")
            && e.to_string().contains("qwen3")
            && e.to_string().contains("gemma3"),
        "{e}"
    );
    let dynamic = LLAMA_32.replace("\"llama3\"", "\"dynamic\"");
    let e = ModelConfig::from_hf_json(&dynamic, "config.json").unwrap_err();
    assert!(
        e.to_string().contains("'dynamic' is not supported") && e.to_string().contains("yarn"),
        "{e}"
    );
    let act = LLAMA_32.replace("\"head_dim\"", "\"hidden_act\": \"relu\", \"head_dim\"");
    let e = ModelConfig::from_hf_json(&act, "config.json").unwrap_err();
    assert!(e.to_string().contains("activation 'relu'"), "{e}");
    let uneven = LLAMA_32.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 7");
    let e = ModelConfig::from_hf_json(&uneven, "config.json").unwrap_err();
    assert_eq!(e.code(), "config");
    assert!(e.to_string().contains("not a multiple"), "{e}");
    let e = ModelConfig::from_hf_json(&LLAMA_32.replace("hidden_size", "hidden"), "config.json")
        .unwrap_err();
    assert!(e.to_string().contains("hidden_size"), "{e}");
    let e = ModelConfig::from_hf_json("{", "config.json").unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
}

/// The tiny random models of scripts/make_fixtures.py (transformers 5 writes `rope_parameters`).
#[test]
fn fixture_model_configs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    for (name, arch, theta, tied, bias) in [
        ("tiny-llama", Architecture::Llama, 10_000.0, false, false),
        ("tiny-qwen2", Architecture::Qwen2, 1_000_000.0, true, true),
        (
            "tiny-qwen2-bf16",
            Architecture::Qwen2,
            1_000_000.0,
            true,
            true,
        ),
    ] {
        let json = std::fs::read_to_string(dir.join(name).join("config.json")).unwrap();
        let c = ModelConfig::from_hf_json(&json, name).unwrap();
        assert_eq!(c.architecture, arch, "{name}");
        assert_eq!(
            (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab),
            (48, 2, 4, 2, 12, 96, 128),
            "{name}"
        );
        assert_eq!(c.rope.theta, theta, "{name}");
        assert_eq!((c.tied_embeddings, c.qkv_bias), (tied, bias), "{name}");
    }
}

/// GGUF Llama 3.1+ files store the frequency scaling as a `rope_freqs.weight` tensor of factors,
/// computed by llama.cpp's converter; dividing the plain frequencies by them must give the
/// frequencies transformers computes from `rope_scaling` (the factors written out here as the
/// converter does, independently of the scaling code).
#[test]
fn gguf_rope_factors_reproduce_llama3_scaling() {
    use pocketlm::kernels::{
        rope_inv_freq, rope_inv_freq_with_factors, Llama3Scaling, RopeConfig, RopeLayout,
    };
    let s = Llama3Scaling::LLAMA_3_1;
    let plain = RopeConfig::new(128, 500_000.0, RopeLayout::Interleaved);
    let scaled = RopeConfig {
        llama3: Some(s),
        ..plain
    };
    let old = s.original_max_position_embeddings as f64;
    let (low_wavelen, high_wavelen) = (
        old / f64::from(s.low_freq_factor),
        old / f64::from(s.high_freq_factor),
    );
    let factors: Vec<f32> = rope_inv_freq(&plain)
        .unwrap()
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f64::from(f);
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (old / wavelen - f64::from(s.low_freq_factor))
                    / f64::from(s.high_freq_factor - s.low_freq_factor);
                (1.0 / ((1.0 - smooth) / f64::from(s.factor) + smooth)) as f32
            }
        })
        .collect();
    assert!(factors.contains(&s.factor) && factors.contains(&1.0));
    let from_factors = rope_inv_freq_with_factors(&plain, &factors).unwrap();
    let from_config = rope_inv_freq(&scaled).unwrap();
    for (i, (a, b)) in from_factors.iter().zip(&from_config).enumerate() {
        assert!(
            (a - b).abs() <= b.abs() * 1e-6,
            "frequency {i}: {a} from factors, {b} from the llama3 config"
        );
    }
    let err = rope_inv_freq_with_factors(&plain, &factors[1..]).unwrap_err();
    assert!(
        err.to_string().contains("64 finite positive values"),
        "{err}"
    );
}

fn fixture_config(name: &str) -> ModelConfig {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let json = std::fs::read_to_string(dir.join(name).join("config.json")).unwrap();
    ModelConfig::from_hf_json(&json, name).unwrap()
}

/// The block descriptions of the new architectures, read from transformers' own configs.
#[test]
fn block_descriptions_of_every_architecture() {
    use pocketlm::kernels::GateActivation;
    use pocketlm::model::{LayerRope, LayerSpec, RopeScaling};
    let global = LayerSpec {
        window: None,
        rope: LayerRope::Global,
    };

    let q = fixture_config("tiny-qwen3");
    assert_eq!(q.architecture, Architecture::Qwen3);
    assert!(q.qk_norm && !q.post_norms && !q.qkv_bias);
    assert_eq!((q.head_dim, q.rope.rotary_dim), (16, 16));
    assert_eq!(q.attn_scale, 0.25);

    let g = fixture_config("tiny-gemma3");
    assert_eq!(g.architecture, Architecture::Gemma3);
    assert!(g.qk_norm && g.post_norms && g.tied_embeddings);
    assert_eq!(g.activation, GateActivation::GeluTanh);
    assert_eq!(g.norm_offset, 1.0);
    assert_eq!(g.embed_scale, Some(48f32.sqrt()));
    assert_eq!(g.rope.theta, 1_000_000.0);
    assert_eq!(g.rope_scaling, RopeScaling::Linear(8.0));
    assert_eq!(g.rope_local.unwrap().theta, 10_000.0);
    let local = LayerSpec {
        window: Some(5),
        rope: LayerRope::Local,
    };
    assert_eq!(
        g.layer_specs,
        vec![local, local, local, local, local, global]
    );

    let o = fixture_config("tiny-olmo2");
    assert_eq!(o.architecture, Architecture::Olmo2);
    assert!(!o.pre_norms && o.post_norms && o.qk_norm && o.qk_norm_whole && !o.tied_embeddings);
    assert!(o
        .describe()
        .contains("post-norm RMSNorm (eps 1e-5), q/k RMSNorm over all heads"));
    assert!(q.pre_norms && !q.qk_norm_whole && g.pre_norms);

    let g2 = fixture_config("tiny-gemma2");
    assert_eq!(g2.architecture, Architecture::Gemma2);
    assert_eq!((g2.attn_softcap, g2.final_softcap), (Some(5.0), Some(3.0)));
    assert_eq!(g2.attn_scale, 0.25);
    // query_pre_attn_scalar sets the scale when it is not head_dim (Gemma 2 27B).
    let json = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tiny-gemma2/config.json"),
    )
    .unwrap()
    .replace(
        "\"query_pre_attn_scalar\": 16",
        "\"query_pre_attn_scalar\": 24",
    );
    let g27 = ModelConfig::from_hf_json(&json, "gemma2").unwrap();
    assert!((g27.attn_scale - 1.0 / 24f32.sqrt()).abs() < 1e-7);
    assert!(!g2.qk_norm && g2.rope_local.is_none());
    assert_eq!(g2.layer_specs[0].window, Some(6));
    assert_eq!(g2.layer_specs[1], global);

    let p = fixture_config("tiny-phi3");
    assert_eq!(p.architecture, Architecture::Phi3);
    assert_eq!((p.head_dim, p.rope.rotary_dim), (12, 6));
    match &p.rope_scaling {
        RopeScaling::LongRope {
            short,
            long,
            original,
            attention_factor,
        } => {
            assert_eq!((short.len(), long.len(), *original), (3, 3, 64));
            let want = (1.0 + 2f64.ln() / 64f64.ln()).sqrt() as f32;
            assert!((attention_factor - want).abs() < 1e-6, "{attention_factor}");
        }
        other => panic!("phi3 rope scaling {other:?}"),
    }
    assert!(p.layer_specs.iter().all(|l| *l == global));

    let s = fixture_config("tiny-smollm3");
    assert_eq!(s.architecture, Architecture::SmolLM3);
    assert_eq!(s.layer_specs[..3], [global, global, global]);
    assert_eq!(s.layer_specs[3].rope, LayerRope::None);

    let m = fixture_config("tiny-mistral");
    assert_eq!(m.architecture, Architecture::Llama);
    assert!(m.layer_specs.iter().all(|l| l.window == Some(5)));
    assert!(!m.bidirectional && !g.bidirectional);

    // EmbeddingGemma: Gemma 3 attending both ways; `sliding_window` 10 lets a token see 5
    // positions each way (keys less than 6 away), from config.json and from llama.cpp's
    // `gemma-embedding` GGUF alike.
    let e = fixture_config("tiny-embeddinggemma");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/tiny-embeddinggemma.gguf");
    let header = GgufHeader::parse_file(&std::fs::read(path).unwrap(), "e.gguf").unwrap();
    let meta = header.metadata.clone();
    let eg = ModelConfig::from_gguf(&meta, &header.into_model_files().unwrap()).unwrap();
    let local = LayerSpec {
        window: Some(6),
        rope: LayerRope::Local,
    };
    for c in [&e, &eg] {
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert!(c.bidirectional);
        assert_eq!(
            c.layer_specs,
            vec![local, local, local, local, local, global]
        );
        assert!(c.describe().contains("window ±5 ×5"), "{}", c.describe());
    }
}

/// Sizes that would size absurd tables are refused before anything is allocated, with the
/// key, the value and the limit in the error: from config.json …
#[test]
fn absurd_sizes_in_config_json_are_refused_with_the_numbers() {
    use pocketlm::model::{
        MAX_CONTEXT, MAX_FFN, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB,
    };
    for (key, from, limit) in [
        ("num_hidden_layers", "16", MAX_LAYERS),
        ("hidden_size", "2048", MAX_HIDDEN),
        ("num_attention_heads", "32", MAX_HEADS),
        ("num_key_value_heads", "8", MAX_HEADS),
        ("head_dim", "64", MAX_HEAD_DIM),
        ("intermediate_size", "8192", MAX_FFN),
        ("vocab_size", "128256", MAX_VOCAB),
        ("max_position_embeddings", "131072", MAX_CONTEXT),
    ] {
        for bad in [limit + 1, 1_000_000_000_000, u64::MAX] {
            let json =
                LLAMA_32.replace(&format!("\"{key}\": {from}"), &format!("\"{key}\": {bad}"));
            assert_ne!(json, LLAMA_32, "{key} not found in the fixture");
            let e = ModelConfig::from_hf_json(&json, "config.json").unwrap_err();
            assert_eq!(e.code(), "config", "{key} = {bad}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(key)
                    && msg.contains(&bad.to_string())
                    && msg.contains(&limit.to_string()),
                "{key} = {bad}: {msg}"
            );
        }
    }
    // A product of allowed sizes can still be absurd: q's width.
    let json = LLAMA_32
        .replace(
            "\"num_attention_heads\": 32",
            "\"num_attention_heads\": 1024",
        )
        .replace(
            "\"num_key_value_heads\": 8",
            "\"num_key_value_heads\": 1024",
        )
        .replace("\"head_dim\": 64", "\"head_dim\": 4096");
    let e = ModelConfig::from_hf_json(&json, "config.json").unwrap_err();
    assert_eq!(e.code(), "config");
    assert!(e.to_string().contains("4194304 wide"), "{e}");
    // Exactly at the limits is fine.
    let json = LLAMA_32.replace(
        "\"num_hidden_layers\": 16",
        &format!("\"num_hidden_layers\": {MAX_LAYERS}"),
    );
    assert_eq!(
        ModelConfig::from_hf_json(&json, "config.json")
            .unwrap()
            .layers,
        1024
    );
}

/// … and from GGUF metadata.
#[test]
fn absurd_sizes_in_gguf_metadata_are_refused_with_the_numbers() {
    use pocketlm::formats::gguf::MetaValue;
    let meta = |layers: u32, vocab: u32| {
        let bytes = pocketlm::fuzzing::gguf_bytes(&[
            ("general.architecture", MetaValue::String("llama".into())),
            ("llama.embedding_length", MetaValue::U32(64)),
            ("llama.attention.head_count", MetaValue::U32(4)),
            ("llama.block_count", MetaValue::U32(layers)),
            ("llama.feed_forward_length", MetaValue::U32(128)),
            ("llama.context_length", MetaValue::U32(256)),
            ("llama.vocab_size", MetaValue::U32(vocab)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-5),
            ),
        ]);
        let header = GgufHeader::parse_file(&bytes, "hostile.gguf").unwrap();
        let meta = header.metadata.clone();
        (meta, header.into_model_files().unwrap())
    };
    let (m, files) = meta(2, 100);
    let c = ModelConfig::from_gguf(&m, &files).unwrap();
    assert_eq!((c.layers, c.vocab, c.head_dim), (2, 100, 16));
    let (m, files) = meta(u32::MAX, 100);
    let e = ModelConfig::from_gguf(&m, &files).unwrap_err();
    assert_eq!(e.code(), "config");
    assert!(
        e.to_string()
            .contains("llama.block_count is 4294967295, over the limit of 1024"),
        "{e}"
    );
    let (m, files) = meta(2, 1 << 30);
    let e = ModelConfig::from_gguf(&m, &files).unwrap_err();
    assert!(
        e.to_string()
            .contains("llama.vocab_size is 1073741824, over the limit of 4194304"),
        "{e}"
    );
}

/// Gemma 3 4B and larger ship as multimodal checkpoints: the language model's settings are the
/// `text_config`, which on the hub gives only what differs from transformers' defaults. What
/// PocketLM reads from the hub's Gemma 3 4B config.json must be the text model transformers
/// reads from it (scripts/make_fixtures.py wrote both files), and the tiny multimodal fixtures
/// (full and sparse `text_config`) must read as the text-only tiny Gemma 3 does.
#[test]
fn multimodal_gemma3_configs_read_their_text_model_as_transformers_does() {
    use pocketlm::kernels::GateActivation;
    use pocketlm::model::{LayerRope, RopeScaling};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let json = std::fs::read_to_string(dir.join("gemma-3-4b-it.json")).unwrap();
    let c = ModelConfig::from_hf_json(&json, "gemma-3-4b-it").unwrap();
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("gemma-3-4b-it.expected.json")).unwrap(),
    )
    .unwrap();
    let n = |k: &str| want[k].as_u64().unwrap() as usize;
    assert_eq!(c.architecture, Architecture::Gemma3);
    assert_eq!(
        (c.vocab, c.hidden, c.ffn, c.layers),
        (
            n("vocab_size"),
            n("hidden_size"),
            n("intermediate_size"),
            n("num_hidden_layers")
        )
    );
    assert_eq!(
        (c.heads, c.kv_heads, c.head_dim, c.max_positions),
        (
            n("num_attention_heads"),
            n("num_key_value_heads"),
            n("head_dim"),
            n("max_position_embeddings")
        )
    );
    assert_eq!(want["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(c.activation, GateActivation::GeluTanh);
    assert_eq!(
        c.rms_eps as f64,
        want["rms_norm_eps"].as_f64().unwrap() as f32 as f64
    );
    assert_eq!(
        c.attn_scale,
        (1.0 / (n("query_pre_attn_scalar") as f64).sqrt()) as f32
    );
    assert_eq!(c.tied_embeddings, want["tie_word_embeddings"] == true);
    assert_eq!(c.qkv_bias, want["attention_bias"] == true);
    assert!(want["final_logit_softcapping"].is_null() && c.final_softcap.is_none());
    assert!(want["attn_logit_softcapping"].is_null() && c.attn_softcap.is_none());
    let rope = &want["rope_parameters"];
    let full = &rope["full_attention"];
    assert_eq!(full["rope_type"], "linear");
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Linear(full["factor"].as_f64().unwrap() as f32)
    );
    assert_eq!(c.rope.theta as f64, full["rope_theta"].as_f64().unwrap());
    assert_eq!(
        c.rope_local.unwrap().theta as f64,
        rope["sliding_attention"]["rope_theta"].as_f64().unwrap()
    );
    let types = want["layer_types"].as_array().unwrap();
    assert_eq!(types.len(), c.layers);
    for (i, (t, l)) in types.iter().zip(&c.layer_specs).enumerate() {
        let local = t == "sliding_attention";
        assert_eq!(
            l.window,
            local.then(|| n("sliding_window")),
            "layer {i} is {t}"
        );
        let rope = if local {
            LayerRope::Local
        } else {
            LayerRope::Global
        };
        assert_eq!(l.rope, rope, "layer {i} is {t}");
    }

    let text = fixture_config("tiny-gemma3");
    for name in ["tiny-gemma3-mm", "tiny-gemma3-mm-sparse"] {
        assert_eq!(fixture_config(name), text, "{name}");
    }
    // A multimodal wrapper around a text model PocketLM does not run is refused by its name
    // (Llama 3.2 Vision's text model has cross-attention layers).
    let mllama = r#"{"model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"],
        "text_config": {"model_type": "mllama_text_model", "hidden_size": 64}}"#;
    let e = ModelConfig::from_hf_json(mllama, "config.json").unwrap_err();
    assert!(e.to_string().contains("mllama_text_model"), "{e}");
}

/// YaRN from config.json as transformers computes it (its frequencies and cos/sin factor for
/// real checkpoints' settings, scripts/make_fixtures.py's yarn.expected.json), and from the
/// GGUF file llama.cpp's converter wrote for the tiny YaRN model, which must read as the same
/// scaling (the forward tests check the logits of both against transformers).
#[test]
fn yarn_frequencies_match_transformers() {
    use pocketlm::kernels::rope_inv_freq_with_factors;
    use pocketlm::model::RopeScaling;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("yarn.expected.json")).unwrap())
            .unwrap();
    for case in ["qwen3", "knobs"] {
        let mut config = want[case]["config"].clone();
        for (k, v) in [
            ("intermediate_size", 64),
            ("num_hidden_layers", 2),
            ("vocab_size", 32),
        ] {
            config[k] = v.into();
        }
        let c = ModelConfig::from_hf_json(&config.to_string(), case).unwrap();
        let RopeScaling::Yarn(y) = c.rope_scaling else {
            panic!("{case}: {:?}", c.rope_scaling)
        };
        let expected_factor = want[case]["attention_factor"].as_f64().unwrap();
        assert!(
            (f64::from(y.attention_factor) - expected_factor).abs() < 1e-6,
            "{case}: cos/sin × {} vs transformers {expected_factor}",
            y.attention_factor
        );
        let factors = y.frequency_factors(c.rope.rotary_dim, c.rope.theta);
        let got = rope_inv_freq_with_factors(&c.rope, &factors).unwrap();
        let inv: Vec<f64> = want[case]["inv_freq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), inv.len(), "{case}");
        for (i, (g, w)) in got.iter().zip(&inv).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= w.abs() * 2e-6,
                "{case}: frequency {i} is {g}, transformers {w}"
            );
        }
    }

    // Qwen2.5's documented form (`type`, no betas) and the tiny model's GGUF conversion.
    let qwen25 = r#"{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 32,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0,
        "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}}"#;
    let c = ModelConfig::from_hf_json(qwen25, "config.json").unwrap();
    assert!(matches!(c.rope_scaling, RopeScaling::Yarn(y)
        if y.factor == 4.0 && y.original == 32768 && (y.beta_fast, y.beta_slow) == (32.0, 1.0)));
    assert!(c.describe().contains("yarn ×4 (original context 32768"));
    let hf = fixture_config("tiny-qwen3-yarn");
    let bytes = std::fs::read(dir.join("tiny-qwen3-yarn.gguf")).unwrap();
    let header = GgufHeader::parse_file(&bytes, "tiny-qwen3-yarn.gguf").unwrap();
    let meta = header.metadata.clone();
    let gguf = ModelConfig::from_gguf(&meta, &header.into_model_files().unwrap()).unwrap();
    assert_eq!(gguf.rope_scaling, hf.rope_scaling);

    // Unusable settings are refused with the numbers.
    for bad in [
        r#""factor": -4.0"#,
        r#""factor": 4.0, "attention_factor": 0.0"#,
    ] {
        let json = qwen25.replace(r#""factor": 4.0"#, bad);
        let e = ModelConfig::from_hf_json(&json, "config.json").unwrap_err();
        assert!(e.to_string().contains("yarn scaling"), "{bad}: {e}");
    }
}

/// Granite's multipliers, from config.json and from llama.cpp's GGUF conversion: the residual
/// one is carried by the embeddings and the norms' eps (the forward tests check the logits).
#[test]
fn granite_multipliers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let hf = fixture_config("tiny-granite");
    assert_eq!(hf.architecture, Architecture::Granite);
    assert_eq!(
        (hf.residual_scale, hf.logit_scale, hf.attn_scale),
        (Some(0.22), Some(2.0), 0.2)
    );
    assert_eq!(hf.embed_scale, Some((12.0f64 / 0.22) as f32));
    assert_eq!(
        hf.rms_eps,
        (0.1f64 as f32 as f64 / (0.22f32 as f64).powi(2)) as f32
    );
    assert_eq!(hf.out_norm_scale(), 0.5);
    assert!(hf
        .describe()
        .contains("residual branches × 0.22 (the stream carried ÷ 0.22), logits ÷ 2"));
    let bytes = std::fs::read(dir.join("tiny-granite.gguf")).unwrap();
    let header = GgufHeader::parse_file(&bytes, "tiny-granite.gguf").unwrap();
    let meta = header.metadata.clone();
    let gguf = ModelConfig::from_gguf(&meta, &header.into_model_files().unwrap()).unwrap();
    assert_eq!(
        (
            gguf.residual_scale,
            gguf.logit_scale,
            gguf.attn_scale,
            gguf.embed_scale,
            gguf.rms_eps
        ),
        (
            hf.residual_scale,
            hf.logit_scale,
            hf.attn_scale,
            hf.embed_scale,
            hf.rms_eps
        )
    );
    let json = std::fs::read_to_string(dir.join("tiny-granite/config.json")).unwrap();
    for bad in ["0.0", "-0.22"] {
        let e = ModelConfig::from_hf_json(
            &json.replace(
                "\"residual_multiplier\": 0.22",
                &format!("\"residual_multiplier\": {bad}"),
            ),
            "config.json",
        )
        .unwrap_err();
        assert!(e.to_string().contains("residual multiplier"), "{bad}: {e}");
    }
}

/// Qwen2.5-VL's hub config.json keeps its text model's settings at the top level (transformers
/// 4.49 wrote it so) with M-RoPE as `rope_scaling: {type: mrope}`: read as Qwen2 with plain
/// RoPE, which text positions make M-RoPE (the tiny fixtures check the logits).
#[test]
fn qwen25_vl_hub_config_reads_as_its_text_model() {
    let json = r#"{
      "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
      "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
      "vision_start_token_id": 151652, "vision_end_token_id": 151653, "vision_token_id": 151654,
      "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
      "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 11008,
      "max_position_embeddings": 128000, "max_window_layers": 70, "num_attention_heads": 16,
      "num_hidden_layers": 36, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
      "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
      "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280,
                        "intermediate_size": 3420, "num_heads": 16, "in_chans": 3,
                        "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
                        "spatial_patch_size": 14, "window_size": 112,
                        "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                        "temporal_patch_size": 2},
      "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
      "vocab_size": 151936
    }"#;
    let c = ModelConfig::from_hf_json(json, "config.json").unwrap();
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!(
        (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.ffn, c.vocab),
        (2048, 36, 16, 2, 128, 11008, 151936)
    );
    assert!(c.qkv_bias && c.tied_embeddings);
    assert_eq!(c.rope.theta, 1_000_000.0);
    assert_eq!(c.rope_scaling, pocketlm::model::RopeScaling::None);
    assert!(c.layer_specs.iter().all(|l| l.window.is_none()));
    for name in ["tiny-qwen2.5-vl", "tiny-qwen3-vl"] {
        let c = fixture_config(name);
        assert!(c.tied_embeddings, "{name}");
    }
    assert_eq!(
        fixture_config("tiny-qwen3-vl").architecture,
        Architecture::Qwen3
    );
}

/// What the ring of a sliding-window layer saves on Gemma 3 4B at the engine's default context
/// of 4096 positions and steps of at most 128 tokens: its 29 local layers (window 1024) hold
/// 1151 positions, its 5 global ones 4096; with an f16 cache (4 kv heads of 256) 210 MiB
/// instead of 544. A bidirectional model (an embedder) keeps every position, and so does a
/// decoder without a step bound. Reuse of a cached prefix needs the window before it.
#[test]
fn sliding_window_layers_hold_a_ring_of_their_window() {
    use pocketlm::model::{kv_reusable, kv_slots};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let json = std::fs::read_to_string(dir.join("gemma-3-4b-it.json")).unwrap();
    let c = ModelConfig::from_hf_json(&json, "gemma-3-4b-it").unwrap();
    let slots = kv_slots(&c, 4096, Some(128));
    assert_eq!(slots.iter().filter(|&&s| s == 1151).count(), 29);
    assert_eq!(slots.iter().filter(|&&s| s == 4096).count(), 5);
    let per_position = 2 * c.kv_heads * c.head_dim * 2;
    assert_eq!((slots.iter().sum::<usize>() * per_position) >> 20, 210);
    assert_eq!((4096 * c.layers * per_position) >> 20, 544);
    assert!(kv_slots(&c, 4096, None).iter().all(|&s| s == 4096));
    // A context within the ring's length needs no ring.
    assert!(kv_slots(&c, 1024, Some(128)).iter().all(|&s| s == 1024));
    let mut embedder = c.clone();
    embedder.bidirectional = true;
    assert!(kv_slots(&embedder, 4096, Some(128))
        .iter()
        .all(|&s| s == 4096));
    // After positions up to 3000 were written the rings hold 1849..3000: a step from 2900
    // finds its window (1877..2900) there, one from 2800 does not (1777..2800); position 0
    // needs nothing.
    assert!(kv_reusable(&c, &slots, 4096, 2900, 3000));
    assert!(!kv_reusable(&c, &slots, 4096, 2800, 3000));
    assert!(kv_reusable(&c, &slots, 4096, 0, 3000));
}
