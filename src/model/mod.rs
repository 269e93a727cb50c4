//! Models as data: each architecture is an entry of tensor roles and block traits
//! ([`arch`]), a model's hyper-parameters and per-layer settings are its block description
//! ([`ModelConfig`]), and one generic decoder ([`Decoder`]) builds the forward pass from them.
//! Sentence-embedding encoders ([`Encoder`]) are described by their sentence-transformers folder
//! or GGUF file ([`EncoderConfig`]); decoder-based embedders ([`decoder_embedder`]) are a chat
//! architecture's decoder with a sentence-transformers Pooling module.

pub mod arch;
mod config;
pub(crate) mod decoder;
pub mod decoder_embedder;
pub mod dense;
pub mod encoder;
pub(crate) mod weights;

pub use arch::{Architecture, Role, SUPPORTED};
pub use config::{
    LayerRope, LayerSpec, ModelConfig, RopeScaling, Yarn, MAX_ATTENTION_WIDTH, MAX_CONTEXT,
    MAX_FFN, MAX_HEADS, MAX_HEAD_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB,
};
pub use decoder::{
    kv_reusable, kv_slots, Decoder, Graph, PendingPick, Readout, StepInput, StepOutput,
};
pub use encoder::{EmbedInput, Embedder, Embedding, Encoder, EncoderConfig, Pooling};
