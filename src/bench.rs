//! Kernel benchmarks (`pocketlm kernel-bench`, `make bench`): each linear-layer format on a
//! model-sized matrix, reported as time per call and effective bandwidth of the weight bytes read,
//! next to a plain copy kernel on the same device. The ratio to the copy is the figure that
//! matters: how close a decode-step matvec gets to what the memory system delivers.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::{self, build, grid, WG};
use crate::quant::random_gguf_bytes;
use crate::rng::Rng;

const COPY_SRC: &str = include_str!("../shaders/copy.wgsl");

/// One benchmarked kernel.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub name: String,
    /// Bytes the kernel must move per call (weights read for a matvec; read + written for copy).
    pub bytes: u64,
    /// Floating-point operations per call (2 per multiply-add; 0 for the copy).
    pub flops: u64,
    pub per_call: Duration,
}

impl BenchRow {
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.per_call.as_secs_f64() / 1e9
    }
}

crate::uniform! {
    struct CopyParams {
        /// vec4s to copy.
        n: u32,
    }
}

const SRC: Slot = Slot::read("src", "vec4<u32>");
const DST: Slot = Slot::read_write("dst", "vec4<u32>");

/// A dispatch that copies `src` to `dst` (same size, multiple of 16 bytes).
async fn copy(ctx: &GpuContext, src: &GpuTensor, dst: &GpuTensor) -> Result<Dispatch> {
    const KERNEL: Kernel = Kernel::new(
        "copy",
        COPY_SRC,
        "copy",
        Interface::new::<CopyParams>(&[SRC, DST]),
    );
    let n = (src.size_bytes() / 16) as u32;
    let wg = grid(ctx, "copy", u64::from(n.div_ceil(WG)))?;
    let spec = Specialization::default().with("WG", WG);
    let binds = [(SRC, &src.buffer), (DST, &dst.buffer)];
    build(ctx, &KERNEL, &spec, &CopyParams { n }, &binds, wg).await
}

/// Weight bytes that a format's timed calls cycle through: copies of the matrix where one would
/// stay in a GPU's last-level cache between calls (an H200's L2 holds 60 MB, a 4096 × 4096 Q4
/// matrix 9 MB), so that the bench reads the weights from memory, as a decode step reads a
/// model's.
const CYCLED_BYTES: usize = 256 << 20;

/// Runs `calls` dispatches, cycling through `ds`, in one command buffer (after one warm-up
/// submit) and returns the wall time per call, including the readback of `probe` (a few bytes)
/// that waits for completion.
async fn time_calls(
    ctx: &GpuContext,
    ds: &[Dispatch],
    probe: &GpuTensor,
    calls: usize,
) -> Result<Duration> {
    let mut warm = ctx.recorder();
    for d in ds {
        warm.dispatch(d);
    }
    let slot = warm.read(probe);
    warm.submit_and_read().await?.words(slot);
    let mut best = Duration::MAX;
    // The best of three runs: the host and other processes add noise, never speed.
    for _ in 0..3 {
        let mut rec = ctx.recorder();
        for d in ds.iter().cycle().take(calls) {
            rec.dispatch(d);
        }
        rec.read(probe);
        let start = Instant::now();
        rec.submit_and_read().await?;
        best = best.min(start.elapsed() / calls as u32);
    }
    Ok(best)
}

/// Benchmarks the linear layer of an `n × n` matrix (`n` a multiple of 256) on `m` activation
/// rows (the kernel [`kernels::linear`] picks: matvec for a decode step, the prefill kernels
/// beyond) for each of `formats`, after a copy of the f32 matrix's bytes.
pub async fn kernel_bench(
    ctx: &GpuContext,
    n: usize,
    m: usize,
    calls: usize,
    formats: &[DType],
) -> Result<Vec<BenchRow>> {
    let mut rng = Rng::new(1);
    let mut rows = Vec::new();
    let x = ctx.upload_f32("x", &[m, n], &rng.vec(m * n, -1.0, 1.0))?;
    let y = ctx.zeros("y", &[m, n], DType::F32)?;
    // What each timed run reads back to wait for its calls: not the outputs, whose transfer
    // (67 MB for the copy) would be timed with them.
    let probe = ctx.zeros("probe", &[4], DType::F32)?;

    // Copy baseline on as many bytes as the f32 matrix has.
    rows.push(copy_row(ctx, n * n, &probe, calls).await?);

    for &dtype in formats {
        let data = random_gguf_bytes(dtype, n * n, &mut rng);
        let copies = CYCLED_BYTES.div_ceil(data.len()).clamp(1, calls.max(1));
        let mut ds = Vec::with_capacity(copies);
        for _ in 0..copies {
            let w = ctx.upload_gguf(dtype.name(), &[n, n], dtype, &data)?;
            ds.push(kernels::linear(ctx, &w, &x, &y).await?);
        }
        let per_call = time_calls(ctx, &ds, &probe, calls).await?;
        rows.push(BenchRow {
            name: format!("{} {dtype}", ds[0].label()),
            bytes: data.len() as u64,
            flops: 2 * (m * n * n) as u64,
            per_call,
        });
    }
    Ok(rows)
}

/// GPU time of one kind of dispatch in a graph: every dispatch with this label.
#[derive(Clone, Debug)]
pub struct DispatchTime {
    pub label: &'static str,
    pub count: usize,
    pub total: Duration,
    /// By shape (one kernel's grids and weights: a model's projections, its LM head), largest
    /// total first.
    pub shapes: Vec<ShapeTime>,
}

/// The dispatches of one kernel with one grid and one weight size.
#[derive(Clone, Debug)]
pub struct ShapeTime {
    pub grid: [u32; 3],
    /// [`Dispatch::weight_bytes`] of each.
    pub weight_bytes: u64,
    pub count: usize,
    /// The time of one.
    pub each: Duration,
}

impl ShapeTime {
    /// Weight bytes read per second, in GB/s (0 for kernels that read no weights).
    pub fn gb_per_s(&self) -> f64 {
        self.weight_bytes as f64 / self.each.as_secs_f64() / 1e9
    }
}

/// The copy kernel's bandwidth on this device (bytes read plus written per second, GB/s) over
/// two 64 MiB buffers: what [`ShapeTime::gb_per_s`] compares with.
pub async fn copy_gb_per_s(ctx: &GpuContext, calls: usize) -> Result<f64> {
    let probe = ctx.zeros("probe", &[4], DType::F32)?;
    Ok(copy_row(ctx, 16 << 20, &probe, calls).await?.gb_per_s())
}

/// The copy kernel timed on `elements` f32 values (`calls` per submit, waiting on `probe`).
async fn copy_row(
    ctx: &GpuContext,
    elements: usize,
    probe: &GpuTensor,
    calls: usize,
) -> Result<BenchRow> {
    let src = ctx.zeros("copy_src", &[elements], DType::F32)?;
    let dst = ctx.zeros("copy_dst", &[elements], DType::F32)?;
    let d = copy(ctx, &src, &dst).await?;
    Ok(BenchRow {
        name: "copy (read + write)".into(),
        bytes: 2 * (elements * 4) as u64,
        flops: 0,
        per_call: time_calls(ctx, &[d], probe, calls).await?,
    })
}

/// Times each dispatch of a graph on its own (`calls` copies per command buffer; dispatches of
/// one label, grid and weight size, the same kernel shape in every layer, are timed once) and
/// sums them by label, largest first. Where the time of a step goes, for kernel work.
pub async fn profile_dispatches(
    ctx: &GpuContext,
    dispatches: &[Dispatch],
    calls: usize,
) -> Result<Vec<DispatchTime>> {
    let probe = ctx.zeros("probe", &[4], DType::F32)?;
    let mut by_label: Vec<DispatchTime> = Vec::new();
    for d in dispatches {
        let r = match by_label.iter_mut().position(|r| r.label == d.label()) {
            Some(i) => &mut by_label[i],
            None => {
                by_label.push(DispatchTime {
                    label: d.label(),
                    count: 0,
                    total: Duration::ZERO,
                    shapes: Vec::new(),
                });
                by_label.last_mut().expect("just pushed")
            }
        };
        let same =
            |s: &&mut ShapeTime| s.grid == d.workgroups() && s.weight_bytes == d.weight_bytes();
        let t = match r.shapes.iter_mut().find(same) {
            Some(s) => {
                s.count += 1;
                s.each
            }
            None => {
                let t = time_calls(ctx, std::slice::from_ref(d), &probe, calls).await?;
                r.shapes.push(ShapeTime {
                    grid: d.workgroups(),
                    weight_bytes: d.weight_bytes(),
                    count: 1,
                    each: t,
                });
                t
            }
        };
        r.count += 1;
        r.total += t;
    }
    for r in &mut by_label {
        r.shapes
            .sort_by_key(|s| std::cmp::Reverse(s.each * s.count as u32));
    }
    by_label.sort_by_key(|r| std::cmp::Reverse(r.total));
    Ok(by_label)
}
