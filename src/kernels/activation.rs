//! Element-wise activations.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::elementwise::{elementwise_grid, same_shape_f32, ELEMS};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, WG};

const SWIGLU_SRC: &str = include_str!("../../shaders/swiglu.wgsl");
/// `silu`, `gelu` and `gate_act`, shared with the linear layers' gated epilogue.
pub(crate) const ACT: &str = include_str!("../../shaders/act.wgsl");

/// The activation of a gated MLP's gate: `out = act(gate) · up`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GateActivation {
    /// SiLU (SwiGLU): Llama, Qwen, Mistral, Phi, SmolLM.
    #[default]
    Silu,
    /// GELU with the tanh approximation (GeGLU): Gemma.
    GeluTanh,
    /// The exact GELU, `0.5·x·(1 + erf(x/√2))`: BERT-family encoders.
    GeluErf,
}

impl GateActivation {
    /// The `GATE_ACT` specialization constant of act.wgsl.
    pub(crate) fn id(self) -> u32 {
        match self {
            GateActivation::Silu => 0,
            GateActivation::GeluTanh => 1,
            GateActivation::GeluErf => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GateActivation::Silu => "silu",
            GateActivation::GeluTanh => "gelu_tanh",
            GateActivation::GeluErf => "gelu",
        }
    }
}

crate::uniform! {
    struct ActParams {
        n: u32,
    }
}

const GATE: Slot = Slot::read("gate", "f32");
const UP: Slot = Slot::read("up", "f32");
const X: Slot = Slot::read("x", "f32");
const OUT: Slot = Slot::read_write("out", "f32");

/// SwiGLU: `out = silu(gate) * up`, element-wise over tensors of one shape.
pub async fn swiglu(
    ctx: &GpuContext,
    gate: &GpuTensor,
    up: &GpuTensor,
    out: &GpuTensor,
) -> Result<Dispatch> {
    gated(ctx, gate, up, out, GateActivation::Silu).await
}

/// A gated activation: `out = act(gate) * up`, element-wise over tensors of one shape (for gate
/// and up projections that cannot be fused into one, e.g. of different weight formats).
pub async fn gated(
    ctx: &GpuContext,
    gate: &GpuTensor,
    up: &GpuTensor,
    out: &GpuTensor,
    act: GateActivation,
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
    const KERNEL: Kernel = Kernel::new(
        NAME,
        SWIGLU_SRC,
        "swiglu",
        Interface::new::<ActParams>(&[GATE, UP, OUT]),
    );
    let n = dim(NAME, "elements", gate.numel())?;
    let wg = grid(ctx, NAME, u64::from(n.div_ceil(WG)))?;
    let spec = Specialization::default()
        .with("WG", WG)
        .with("GATE_ACT", act.id())
        .snippet(ACT);
    let binds = [(GATE, &gate.buffer), (UP, &up.buffer), (OUT, &out.buffer)];
    build(ctx, &KERNEL, &spec, &ActParams { n }, &binds, wg).await
}

const GELU_SRC: &str = include_str!("../../shaders/gelu.wgsl");

/// GELU, tanh approximation: `out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` element-wise
/// (as PyTorch's `gelu(approximate="tanh")`, used by GPT-2 and Gemma MLPs). Computed as the
/// equal x·σ(2t), which is accurate for every finite x and never produces NaN or infinity.
pub async fn gelu(ctx: &GpuContext, x: &GpuTensor, out: &GpuTensor) -> Result<Dispatch> {
    gelu_kind(ctx, x, out, GateActivation::GeluTanh).await
}

/// The exact GELU: `out = 0.5·x·(1 + erf(x/√2))` element-wise (PyTorch's `gelu`, BERT's
/// activation), with a relative error near f32's for every finite x (act.wgsl says how).
pub async fn gelu_erf(ctx: &GpuContext, x: &GpuTensor, out: &GpuTensor) -> Result<Dispatch> {
    gelu_kind(ctx, x, out, GateActivation::GeluErf).await
}

async fn gelu_kind(
    ctx: &GpuContext,
    x: &GpuTensor,
    out: &GpuTensor,
    act: GateActivation,
) -> Result<Dispatch> {
    const NAME: &str = "gelu";
    let n = same_shape_f32(NAME, &[x, out])?;
    expect_distinct(NAME, out, &[x])?;
    const KERNEL: Kernel = Kernel::new(
        NAME,
        GELU_SRC,
        "gelu_elementwise",
        Interface::new::<ActParams>(&[X, OUT]),
    );
    let spec = Specialization::default()
        .with("WG", WG)
        .with("ELEMS", ELEMS)
        .with("GATE_ACT", act.id())
        .snippet(ACT);
    let wg = elementwise_grid(ctx, NAME, n)?;
    let binds = [(X, &x.buffer), (OUT, &out.buffer)];
    build(ctx, &KERNEL, &spec, &ActParams { n }, &binds, wg).await
}
