//! Model architectures: configuration (and, to come, the forward pass as a fixed graph of kernel
//! dispatches with its KV cache).

mod config;
mod llama;

pub use config::{Architecture, ModelConfig, SUPPORTED};
pub use llama::{Graph, LlamaModel, Readout, StepOutput};
