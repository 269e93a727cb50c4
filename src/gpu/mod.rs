//! The GPU layer: device negotiation, compiled kernels, typed tensors, and recording work.

mod context;
mod held;
mod interface;
mod pipeline;
mod recorder;
mod tensor;
mod timing;

pub use context::{
    baseline_limits, Capabilities, DeviceReport, GpuContext, GpuStats, Profile, ProfileRequest,
};
pub(crate) use held::Held;
pub use held::{held_buffers, HeldBuffers};
pub use interface::{Access, Interface, Slot, SlotKind, Uniform, WgslScalar};
pub use pipeline::{kernel_source, Kernel, PipelineCache, Specialization};
pub use recorder::{Dispatch, PendingReadback, ReadSlot, Readback, Recorder};
pub use tensor::{DType, GpuTensor};
pub use timing::{GpuTimes, TimestampSupport};
