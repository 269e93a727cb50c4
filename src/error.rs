//! The one error type of the crate. Every failure a caller can cause is a variant here, with a
//! message that says what was wrong and what to do; `code()` gives a stable machine-readable name
//! that crosses into JavaScript unchanged.

use crate::gpu::DType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no GPU adapter was found: {hint}")]
    NoAdapter { hint: String },

    #[error("GPU adapter '{adapter}' refused the device request: {reason}")]
    DeviceRequest { adapter: String, reason: String },

    #[error("GPU adapter '{adapter}' cannot run the {profile} profile: it lacks {missing}")]
    ProfileUnavailable {
        adapter: String,
        profile: &'static str,
        missing: String,
    },

    #[error("unknown device profile '{0}': expected 'auto', 'full' or 'baseline'")]
    UnknownProfile(String),

    #[error("{kernel}: shape mismatch: {detail}")]
    ShapeMismatch {
        kernel: &'static str,
        detail: String,
    },

    #[error("{kernel}: tensor '{tensor}' has dtype {dtype}, but {kernel} takes {expected}")]
    UnsupportedDType {
        kernel: &'static str,
        tensor: String,
        dtype: DType,
        expected: &'static str,
    },

    #[error("tensor '{tensor}': {detail}")]
    InvalidTensor { tensor: String, detail: String },

    #[error(
        "tensor '{tensor}' needs {bytes} bytes in one binding, more than this adapter's limit of {limit} bytes"
    )]
    TooLarge {
        tensor: String,
        bytes: u64,
        limit: u64,
    },

    #[error("{what} needs {bytes} bytes of host memory, more than this machine or build can give")]
    OutOfMemory { what: String, bytes: u64 },

    #[error("kernel '{kernel}' failed to compile on this device: {message}")]
    ShaderCompile { kernel: String, message: String },

    #[error("the GPU reported an error: {0}")]
    Gpu(String),

    #[error("the GPU device was lost ({0}); create a new context to continue")]
    DeviceLost(String),

    #[error("reading a result back from the GPU failed: {0}")]
    Readback(String),

    #[error("reading '{source_name}' failed: {detail}")]
    Io { source_name: String, detail: String },

    #[error("'{source_name}' does not match its expected sha256 (expected {expected}, got {actual}); the download is corrupt or the file changed")]
    Integrity {
        source_name: String,
        expected: String,
        actual: String,
    },

    #[error("loading was cancelled")]
    Aborted,

    #[error(
        "'{source_name}': architecture '{architecture}' is not supported (supported: {supported})"
    )]
    UnsupportedArchitecture {
        source_name: String,
        architecture: String,
        supported: &'static str,
    },

    #[error("'{source_name}': the model configuration is not usable: {detail}")]
    Config { source_name: String, detail: String },

    #[error("downloading '{url}' failed with HTTP status {status}")]
    Http { url: String, status: u16 },

    #[error(
        "'{file}' is truncated: {detail}; the download may be incomplete, fetch the file again"
    )]
    FileTruncated { file: String, detail: String },

    #[error("'{file}' is not a {format} file: it starts with {found}, expected {expected}")]
    BadMagic {
        file: String,
        format: &'static str,
        found: String,
        expected: &'static str,
    },

    #[error("'{file}': {format} version {version} is not supported ({detail})")]
    UnsupportedFormatVersion {
        file: String,
        format: &'static str,
        version: u64,
        detail: String,
    },

    #[error("'{file}': {what} is {value}, over the limit of {limit}; the file is corrupt or not a model file")]
    HeaderLimit {
        file: String,
        what: String,
        value: u64,
        limit: u64,
    },

    #[error("'{file}' has a corrupt header: {detail}")]
    InvalidHeader { file: String, detail: String },

    #[error("'{file}' has two {kind}s named '{name}'")]
    DuplicateName {
        file: String,
        kind: &'static str,
        name: String,
    },

    #[error("'{file}': tensor '{tensor}' has type {dtype}, which PocketLM does not run (supported: {supported})")]
    UnknownTensorType {
        file: String,
        tensor: String,
        dtype: String,
        supported: String,
    },

    #[error("'{file}': the data of tensor '{tensor}' ends at byte {end}, past the end of the file ({size} bytes); the file is truncated or corrupt")]
    TensorOutOfBounds {
        file: String,
        tensor: String,
        end: u64,
        size: u64,
    },

    #[error("'{file}': tensor '{tensor}': {detail}")]
    TensorLayout {
        file: String,
        tensor: String,
        detail: String,
    },

    #[error("'{file}': metadata key '{key}' is missing")]
    MissingMetadata { file: String, key: String },

    #[error("'{file}': metadata key '{key}' holds {found}, expected {expected}")]
    MetadataType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("split model '{file}': {detail}")]
    SplitModel { file: String, detail: String },

    #[error("sharded checkpoint '{file}': {detail}")]
    ShardIndex { file: String, detail: String },

    #[error("tokenizer: {detail}")]
    Tokenizer { detail: String },

    #[error("invalid sampling parameter {param} = {value}: expected {expected}")]
    InvalidSamplingParams {
        param: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("nothing to sample from: {detail}")]
    NoCandidates { detail: String },

    #[error("chat template '{template}'{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    ChatTemplate {
        template: String,
        line: Option<usize>,
        message: String,
    },

    #[error("chat template '{template}' rejected the conversation: {message}")]
    ChatTemplateRejected { template: String, message: String },

    #[error("'{source_name}' has no chat template{detail}; pass a template explicitly")]
    MissingChatTemplate { source_name: String, detail: String },

    #[error(
        "the prompt is {prompt_tokens} tokens, but the context holds {context} (and at least one \
         position must stay free for the reply): shorten the prompt or load with a larger context"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        context: usize,
    },

    #[error(
        "the tokenizer has {tokenizer} tokens but the model's vocabulary has {model}: they do not \
         belong together"
    )]
    VocabMismatch { tokenizer: usize, model: usize },

    #[error("invalid request: {0}")]
    InvalidRequest(String),

    #[error("the model was unloaded; load it again to continue")]
    Unloaded,
}

impl Error {
    /// A stable identifier for the kind of failure, for programs (and JavaScript) to match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoAdapter { .. } => "no_adapter",
            Error::DeviceRequest { .. } => "device_request",
            Error::ProfileUnavailable { .. } => "profile_unavailable",
            Error::UnknownProfile(_) => "unknown_profile",
            Error::ShapeMismatch { .. } => "shape_mismatch",
            Error::UnsupportedDType { .. } => "unsupported_dtype",
            Error::InvalidTensor { .. } => "invalid_tensor",
            Error::TooLarge { .. } => "too_large",
            Error::OutOfMemory { .. } => "out_of_memory",
            Error::ShaderCompile { .. } => "shader_compile",
            Error::Gpu(_) => "gpu",
            Error::DeviceLost(_) => "device_lost",
            Error::Readback(_) => "readback",
            Error::Io { .. } => "io",
            Error::Integrity { .. } => "integrity",
            Error::Aborted => "aborted",
            Error::UnsupportedArchitecture { .. } => "unsupported_architecture",
            Error::Config { .. } => "config",
            Error::Http { .. } => "http",
            Error::FileTruncated { .. } => "file_truncated",
            Error::BadMagic { .. } => "bad_magic",
            Error::UnsupportedFormatVersion { .. } => "unsupported_format_version",
            Error::HeaderLimit { .. } => "header_limit",
            Error::InvalidHeader { .. } => "invalid_header",
            Error::DuplicateName { .. } => "duplicate_name",
            Error::UnknownTensorType { .. } => "unknown_tensor_type",
            Error::TensorOutOfBounds { .. } => "tensor_out_of_bounds",
            Error::TensorLayout { .. } => "tensor_layout",
            Error::MissingMetadata { .. } => "missing_metadata",
            Error::MetadataType { .. } => "metadata_type",
            Error::SplitModel { .. } => "split_model",
            Error::ShardIndex { .. } => "shard_index",
            Error::Tokenizer { .. } => "tokenizer",
            Error::InvalidSamplingParams { .. } => "invalid_sampling_params",
            Error::NoCandidates { .. } => "no_candidates",
            Error::ChatTemplate { .. } => "chat_template",
            Error::ChatTemplateRejected { .. } => "chat_template_rejected",
            Error::MissingChatTemplate { .. } => "missing_chat_template",
            Error::ContextOverflow { .. } => "context_overflow",
            Error::VocabMismatch { .. } => "vocab_mismatch",
            Error::InvalidRequest(_) => "invalid_request",
            Error::Unloaded => "unloaded",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
