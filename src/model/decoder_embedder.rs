//! Decoder-based sentence embedders (Qwen3-Embedding and its kind): a decoder of the
//! architectures in [`super::arch`], described by its `config.json` like any chat model, run
//! over each input with its own causal attention; its last hidden states after the final norm
//! are what the sentence-transformers Pooling module (last token, mean, or CLS) pools. No LM head
//! logits are read. The decoder is the same graph (GPU, [`Decoder`]) and the same pass (CPU,
//! [`CpuDecoder`]) as for generation: an embedder is a description, not a new model.
//!
//! Inputs run one at a time (a causal pass needs its own positions in the KV cache), in chunks
//! of the graph's step size; the KV cache holds f32 (the exact path) for `max_tokens` positions.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cpu::{CpuContext, CpuDecoder, HostTensor};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::model::decoder::{Decoder, Graph};
use crate::model::encoder::EncoderConfig;
use crate::model::ModelConfig;

/// Tokens per GPU step: long inputs run as several.
const STEP_TOKENS: usize = 256;

/// The longest input a decoder-based embedder takes by default: its KV cache (f32, every layer)
/// is sized for it. Qwen3-Embedding-0.6B's 28 layers of 8 KV heads of 128 take 224 MB at 2048
/// positions.
pub const MAX_DECODER_EMBED_TOKENS: usize = 2048;

/// Hugging Face checkpoints of embedders are saved from the base model (`Qwen3Model`): their
/// names lack the `model.` prefix the decoder's names have. Adds it where it is missing (not to
/// GGUF names).
fn add_model_prefix<T>(model: &ModelConfig, tensors: &mut HashMap<String, T>) {
    if model.gguf_names || tensors.keys().any(|k| k.starts_with("model.")) {
        return;
    }
    *tensors = std::mem::take(tensors)
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
}

/// A decoder-based embedder on the GPU.
pub struct GpuDecoderEmbedder {
    config: EncoderConfig,
    decoder: Decoder,
    /// The step graph, taken by a call while it runs (a second call at the same time builds
    /// its own).
    graph: Mutex<Option<Graph>>,
}

impl GpuDecoderEmbedder {
    pub async fn new(
        ctx: &GpuContext,
        config: EncoderConfig,
        model: ModelConfig,
        mut tensors: HashMap<String, GpuTensor>,
    ) -> Result<Self> {
        add_model_prefix(&model, &mut tensors);
        let decoder = Decoder::new(ctx, model, tensors, config.max_tokens, DType::F32).await?;
        let graph = Self::build_graph(ctx, &decoder, &config).await?;
        Ok(GpuDecoderEmbedder {
            config,
            decoder,
            graph: Mutex::new(Some(graph)),
        })
    }

    async fn build_graph(ctx: &GpuContext, decoder: &Decoder, c: &EncoderConfig) -> Result<Graph> {
        let step = STEP_TOKENS.min(c.max_tokens);
        decoder.graph_with(ctx, step, c.max_tokens, 1, false).await
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// One input's hidden states after the final norm, `[tokens, hidden]`.
    pub async fn hidden_states(&self, ctx: &GpuContext, ids: &[u32]) -> Result<Vec<f32>> {
        self.config.check_input(ids)?;
        let taken = self.graph.lock().map_err(|_| poisoned())?.take();
        let mut graph = match taken {
            Some(g) => g,
            None => Self::build_graph(ctx, &self.decoder, &self.config).await?,
        };
        let step = STEP_TOKENS.min(self.config.max_tokens);
        let mut rows = Vec::with_capacity(ids.len() * self.config.hidden);
        let mut result = Ok(());
        for (i, chunk) in ids.chunks(step).enumerate() {
            match self
                .decoder
                .final_hidden(ctx, &mut graph, chunk, i * step)
                .await
            {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        *self.graph.lock().map_err(|_| poisoned())? = Some(graph);
        result.map(|()| rows)
    }

    /// Bytes of GPU memory: the weights, and the KV cache with the RoPE tables.
    pub fn gpu_bytes(&self) -> (u64, u64) {
        self.decoder.gpu_bytes()
    }

    pub fn destroy(&self) {
        self.decoder.destroy();
    }
}

/// A decoder-based embedder on the CPU.
pub struct CpuDecoderEmbedder {
    config: EncoderConfig,
    decoder: Mutex<CpuDecoder>,
}

impl CpuDecoderEmbedder {
    pub fn new(
        config: EncoderConfig,
        model: ModelConfig,
        mut tensors: HashMap<String, HostTensor>,
    ) -> Result<Self> {
        add_model_prefix(&model, &mut tensors);
        let decoder = CpuDecoder::new(model, tensors, config.max_tokens)?;
        Ok(CpuDecoderEmbedder {
            config,
            decoder: Mutex::new(decoder),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// One input's hidden states after the final norm, `[tokens, hidden]`.
    pub fn hidden_states(&self, cpu: &CpuContext, ids: &[u32]) -> Result<Vec<f32>> {
        self.config.check_input(ids)?;
        let mut decoder = self.decoder.lock().map_err(|_| poisoned())?;
        decoder.final_hidden(cpu, ids, 0)
    }

    /// Bytes of host memory: the weights, and the KV cache.
    pub fn host_bytes(&self) -> u64 {
        self.decoder
            .lock()
            .map(|d| {
                let (w, kv) = d.host_bytes();
                w + kv
            })
            .unwrap_or(0)
    }
}

fn poisoned() -> Error {
    Error::InvalidRequest("an earlier embedding call on this model failed midway".into())
}
