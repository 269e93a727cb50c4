//! Element-wise activations.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Kernel, Specialization};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, WG};

const SWIGLU_SRC: &str = include_str!("../../shaders/swiglu.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// SwiGLU: `out = silu(gate) * up`, element-wise over tensors of one shape.
pub async fn swiglu(
    ctx: &GpuContext,
    gate: &GpuTensor,
    up: &GpuTensor,
    out: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "swiglu";
    for t in [gate, up, out] {
        expect_dtype(NAME, t, &[DType::F32], "f32 tensors")?;
    }
    expect_distinct(NAME, out, &[gate, up])?;
    if up.shape() != gate.shape() || out.shape() != gate.shape() {
        return Err(mismatch(
            NAME,
            format!(
                "gate '{}' {:?}, up '{}' {:?} and output '{}' {:?} must have one shape",
                gate.name(),
                gate.shape(),
                up.name(),
                up.shape(),
                out.name(),
                out.shape()
            ),
        ));
    }
    let kernel = Kernel {
        name: NAME,
        source: SWIGLU_SRC,
        entry: "swiglu",
        uses_reduce: false,
    };
    let n = dim(NAME, "elements", gate.numel())?;
    let wg = grid(ctx, NAME, u64::from(n.div_ceil(WG)))?;
    let spec = Specialization::default().with("WG", WG);
    build(ctx, &kernel, &spec, &Params { n }, &[gate, up, out], wg).await
}
