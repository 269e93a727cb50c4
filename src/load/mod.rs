//! Getting model weights from where they are into GPU memory.

#[cfg(target_arch = "wasm32")]
pub mod browser;
pub mod folder;
mod model;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod source;
mod upload;

mod stream;

#[cfg(not(target_arch = "wasm32"))]
pub use model::load_directory;
pub use model::{
    load_model, load_model_file, merge_headers, parse_header, read_header, FileHeader, LoadedModel,
    LoadedModelFiles, ModelFile,
};
#[cfg(not(target_arch = "wasm32"))]
pub use native::{is_url, load_native, local_folder, NativeSource};
pub use source::{io_error, ByteSource, MemorySource, CHUNK};
#[cfg(not(target_arch = "wasm32"))]
pub use source::{FileSource, HttpSource};
pub use stream::{
    load_stream, AbortFlag, CompanionsCheck, HeaderCheck, HeaderStep, LoadOptions, LoadTarget,
    LoadedFile, Progress, StoredTensor, TensorSink,
};
pub(crate) use upload::{check_plans, PlanCursor};
pub use upload::{part_name, StreamUploader, TensorPlan, DEFAULT_PIECE_BUDGET};
