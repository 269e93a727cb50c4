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

    #[error("kernel '{kernel}' failed to compile on this device: {message}")]
    ShaderCompile { kernel: String, message: String },

    #[error("the GPU reported an error: {0}")]
    Gpu(String),

    #[error("the GPU device was lost ({0}); create a new context to continue")]
    DeviceLost(String),

    #[error("reading a result back from the GPU failed: {0}")]
    Readback(String),
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
            Error::ShaderCompile { .. } => "shader_compile",
            Error::Gpu(_) => "gpu",
            Error::DeviceLost(_) => "device_lost",
            Error::Readback(_) => "readback",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
