//! Element-wise arithmetic: residual-stream additions.

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::{build, dim, expect_distinct, expect_dtype, grid, mismatch, WG};

const ADD_SRC: &str = include_str!("../../shaders/add.wgsl");

/// Elements per invocation of the element-wise kernels (WG apart, so accesses stay coalesced):
/// a quarter of the workgroups, and a 1-D grid up to 64 Mi elements.
pub(crate) const ELEMS: u32 = 4;

crate::uniform! {
    struct AddParams {
        n: u32,
    }
}

/// Both entry points read `b` and write `out`; only `add` reads `a`.
const B: Slot = Slot::read("b", "f32");
const OUT: Slot = Slot::read_write("out", "f32");
const A: Slot = Slot::read("a", "f32");
const ADD: Kernel = Kernel::new(
    "add",
    ADD_SRC,
    "add",
    Interface::new::<AddParams>(&[B, OUT, A]),
);

/// Checks that every tensor is f32 and has the shape of the first; returns the element count.
pub(crate) fn same_shape_f32(kernel: &'static str, tensors: &[&GpuTensor]) -> Result<u32> {
    for t in tensors {
        expect_dtype(kernel, t, &[DType::F32], "f32 tensors")?;
    }
    let first = tensors[0];
    if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
        return Err(mismatch(
            kernel,
            format!(
                "'{}' is {:?} but '{}' is {:?}; {kernel} takes tensors of one shape",
                t.name(),
                t.shape(),
                first.name(),
                first.shape()
            ),
        ));
    }
    dim(kernel, "elements", first.numel())
}

/// The workgroups of an element-wise kernel over `n` elements.
pub(crate) fn elementwise_grid(ctx: &GpuContext, kernel: &'static str, n: u32) -> Result<[u32; 3]> {
    grid(ctx, kernel, u64::from(n.div_ceil(WG * ELEMS)))
}

fn spec() -> Specialization {
    Specialization::default()
        .with("WG", WG)
        .with("ELEMS", ELEMS)
}

/// `out = a + b`, element-wise over tensors of one shape; `out` must not share a buffer with
/// either input (see [`add_in_place`]).
pub async fn add(
    ctx: &GpuContext,
    a: &GpuTensor,
    b: &GpuTensor,
    out: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "add";
    let n = same_shape_f32(NAME, &[a, b, out])?;
    expect_distinct(NAME, out, &[a, b])?;
    let wg = elementwise_grid(ctx, NAME, n)?;
    let binds = [(A, &a.buffer), (B, &b.buffer), (OUT, &out.buffer)];
    build(ctx, &ADD, &spec(), &AddParams { n }, &binds, wg).await
}

/// `acc += b`, element-wise: the residual stream accumulating a block's output in place.
/// `b` must be a different buffer.
pub async fn add_in_place(ctx: &GpuContext, acc: &GpuTensor, b: &GpuTensor) -> Result<Dispatch> {
    const NAME: &str = "add_in_place";
    let n = same_shape_f32(NAME, &[acc, b])?;
    expect_distinct(NAME, acc, &[b])?;
    let wg = elementwise_grid(ctx, NAME, n)?;
    let kernel = ADD.entry("add_in_place", "add_in_place");
    let binds = [(B, &b.buffer), (OUT, &acc.buffer)];
    build(ctx, &kernel, &spec(), &AddParams { n }, &binds, wg).await
}

const SOFTCAP_SRC: &str = include_str!("../../shaders/softcap.wgsl");

crate::uniform! {
    struct SoftcapParams {
        n: u32,
        cap: f32,
    }
}

const X: Slot = Slot::read_write("x", "f32");

/// `x = cap · tanh(x / cap)` in place, element-wise (Gemma 2's final-logit soft-capping);
/// `cap` must be finite and positive.
pub async fn softcap(ctx: &GpuContext, x: &GpuTensor, cap: f32) -> Result<Dispatch> {
    const NAME: &str = "softcap";
    let n = same_shape_f32(NAME, &[x])?;
    if !(cap.is_finite() && cap > 0.0) {
        return Err(mismatch(
            NAME,
            format!("the cap must be finite and positive, got {cap}"),
        ));
    }
    const KERNEL: Kernel = Kernel::new(
        NAME,
        SOFTCAP_SRC,
        NAME,
        Interface::new::<SoftcapParams>(&[X]),
    );
    let wg = elementwise_grid(ctx, NAME, n)?;
    let params = SoftcapParams { n, cap };
    build(ctx, &KERNEL, &spec(), &params, &[(X, &x.buffer)], wg).await
}
