//! Decoder-based sentence embedders (Qwen3-Embedding and its kind): a decoder of the
//! architectures in [`super::arch`], described by its `config.json` like any chat model, run
//! over each input with its own causal attention; its last hidden states after the final norm
//! are what the sentence-transformers Pooling module (last token, mean, or CLS) pools. No LM head
//! logits are read. The decoder is the same graph (GPU, [`Decoder`]) and the same pass (CPU,
//! [`CpuDecoder`]) as for generation: an embedder is a description, not a new model.
//!
//! A decoder that attends both ways (EmbeddingGemma: [`ModelConfig::bidirectional`], its local
//! layers' windows symmetric) is the same graph with bidirectional attention.
//!
//! Several inputs run as one pass, packed one after another (up to `max_tokens` tokens in all:
//! the KV cache, f32 for the exact path, holds that many positions): every matrix product reads
//! each weight once for all of them, and attention keeps each token to its own input (causal or
//! not), RoPE rotating by the pass's positions, which keeps every distance within an input.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cpu::{CpuContext, CpuDecoder, HostTensor};
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::model::decoder::{Decoder, Graph};
use crate::model::encoder::EncoderConfig;
use crate::model::ModelConfig;

/// The step of the smaller GPU graph: passes up to this many tokens run in it, longer ones in
/// a graph of `max_tokens`.
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
    /// Step graphs by step size, each taken by a call while it runs (a second call at the same
    /// time builds its own).
    graphs: Mutex<HashMap<usize, Graph>>,
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
        Ok(GpuDecoderEmbedder {
            config,
            decoder,
            graphs: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The step size for a pass of `n` tokens: [`STEP_TOKENS`] when they fit (drivers pay for
    /// every workgroup a larger graph launches), else the longest pass.
    fn step_for(&self, n: usize) -> usize {
        let small = STEP_TOKENS.min(self.config.max_tokens);
        if n > small {
            self.config.max_tokens
        } else {
            small
        }
    }

    /// The hidden states after the final norm of inputs packed into one pass (at most
    /// `max_tokens` in all), `[tokens, hidden]`, inputs in order.
    pub async fn hidden_states_packed(
        &self,
        ctx: &GpuContext,
        inputs: &[&[u32]],
    ) -> Result<Vec<f32>> {
        let n = pass_tokens(&self.config, inputs)?;
        let step = self.step_for(n);
        let taken = self.graphs.lock().map_err(|_| poisoned())?.remove(&step);
        let mut graph = match taken {
            Some(g) => g,
            None => self.decoder.graph_packed(ctx, step).await?,
        };
        let rows = self
            .decoder
            .final_hidden_packed(ctx, &mut graph, inputs)
            .await;
        self.graphs
            .lock()
            .map_err(|_| poisoned())?
            .insert(step, graph);
        rows
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
        let decoder = CpuDecoder::new(model, tensors, config.max_tokens, DType::F32)?;
        Ok(CpuDecoderEmbedder {
            config,
            decoder: Mutex::new(decoder),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The hidden states after the final norm of inputs packed into one pass (at most
    /// `max_tokens` in all), `[tokens, hidden]`, inputs in order.
    pub fn hidden_states_packed(&self, cpu: &CpuContext, inputs: &[&[u32]]) -> Result<Vec<f32>> {
        pass_tokens(&self.config, inputs)?;
        let mut decoder = self.decoder.lock().map_err(|_| poisoned())?;
        decoder.final_hidden_packed(cpu, inputs)
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

/// The tokens of a pass, each input checked: at most the model's `max_tokens` in all (the KV
/// cache's positions).
fn pass_tokens(config: &EncoderConfig, inputs: &[&[u32]]) -> Result<usize> {
    for ids in inputs {
        config.check_input(ids)?;
    }
    let n: usize = inputs.iter().map(|i| i.len()).sum();
    if n == 0 || n > config.max_tokens {
        return Err(Error::InvalidRequest(format!(
            "{} inputs of {n} tokens in all do not make one pass of at most {}",
            inputs.len(),
            config.max_tokens
        )));
    }
    Ok(n)
}

fn poisoned() -> Error {
    Error::InvalidRequest("an earlier embedding call on this model failed midway".into())
}
