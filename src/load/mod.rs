//! Getting model weights from where they are into GPU memory.

mod upload;

pub use upload::{StreamUploader, TensorPlan, DEFAULT_PIECE_BUDGET};
