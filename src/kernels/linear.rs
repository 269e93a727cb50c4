//! Linear layers: `y = x · Wᵀ (+ bias) (+ y)` with W of shape [n, k] (out, in) in any supported
//! format (f32, f16, bf16, or a GGML block format dequantized inside the inner loop), x [m, k],
//! y [m, n].

use crate::error::Result;
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::activation::{GateActivation, ACT};
use crate::kernels::attention::{
    AttentionParts, KvCache, StepState, KV_STORE, K_CACHE, PART_ML_IN, PART_O, STEP, V_CACHE,
};
use crate::kernels::rope::{check_table, RopeConfig, RopeLayout, RopeTable, ROPE_ROTATE, TABLE};
use crate::kernels::{
    build, check_eps, dim, expect_distinct, expect_dtype, grid, mismatch, reduce_spec_wg,
};

const LINEAR_COMMON: &str = include_str!("../../shaders/linear_common.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const MATVEC_SRC: &str = include_str!("../../shaders/matvec.wgsl");
const MATMUL_SRC: &str = include_str!("../../shaders/matmul.wgsl");
const ROWS_SRC: &str = include_str!("../../shaders/linear_rows.wgsl");
const ROWS4_SRC: &str = include_str!("../../shaders/linear_rows4.wgsl");
const QKV_ROPE: &str = include_str!("../../shaders/qkv_rope.wgsl");
const COMBINE_IN: &str = include_str!("../../shaders/combine_in.wgsl");
const RESIDUAL_IN: &str = include_str!("../../shaders/residual_in.wgsl");
/// The matvec kernels' input without combine_in.wgsl.
const PLAIN_IN: &str = "fn x_in(m: u32, k: u32) -> f32 { return x[m * p.k + k]; }\n\
                        fn input_prologue(li: u32, m: u32, first: bool) {}\n";
/// The quad functions of qkv_rope.wgsl, as stubs for the kernels without the RoPE epilogue.
const NO_QKV_ROPE: &str = "fn quad_col(j: u32, e: u32) -> u32 { return 0u; }\n\
                           fn finish_quad(m: u32, j: u32, r: vec4<f32>) {}\n";

crate::uniform! {
    struct LinearParams {
        /// Output columns (SWIGLU: W has 2n rows, gate then up).
        n: u32,
        /// Inputs (columns of W).
        k: u32,
        /// Activation rows.
        m: u32,
        /// Float formats: elements between the starts of rows of W as stored.
        w_stride: u32,
        /// Workgroups per activation row (or per tile of rows for matmul).
        blocks: u32,
        /// Block formats: the word where the scales begin.
        scale_base: u32,
        /// Columns of y (n unless SPLIT).
        y_cols: u32,
        /// SPLIT: columns of y1 (y2 has the rest).
        y1_cols: u32,
        /// NORM: the RMSNorm eps.
        eps: f32,
        /// Output column n is column y_col0 + n of y (0 unless W is a row range of a larger
        /// matrix: an LM head split over bindings).
        y_col0: u32,
        /// RESIDUAL: the post-norm's eps.
        res_eps: f32,
    }
}

/// The word kernels' (matvec, matmul, linear_rows) views of x, W and the RMSNorm weight.
const X: Slot = Slot::read("x", "f32");
const W: Slot = Slot::read("w", "u32");
const NORM_W: Slot = Slot::read("norm_w", "f32");
/// The vec4 CPU kernel's (linear_rows4) views, and a word view of W for the scales (the vec4
/// view ends at the last whole vec4 of the buffer).
const X4: Slot = Slot::read("x", "vec4<f32>");
const W4: Slot = Slot::read("w", "vec4<u32>");
const NORM_W4: Slot = Slot::read("norm_w", "vec4<f32>");
const WS: Slot = Slot::read("ws", "u32");
/// The outputs (y, and the split outputs y1, y2 by column range) and the bias.
const Y: Slot = Slot::read_write("y", "f32");
const Y1: Slot = Slot::read_write("y1", "f32");
const Y2: Slot = Slot::read_write("y2", "f32");
const BIAS: Slot = Slot::read("bias", "f32");
/// [`Linear::residual`]: the block output, the post-norm's weight, and where the updated stream
/// goes.
const RES_H: Slot = Slot::read("res_h", "f32");
const RES_G: Slot = Slot::read("res_g", "f32");
const RES_OUT: Slot = Slot::read_write("res_out", "f32");
/// The RoPE epilogue's cos/sin table, cache layer (k_cache, v_cache) and step uniform come last.
const WORDS: Interface = Interface::new::<LinearParams>(&[
    X, W, Y, BIAS, Y1, Y2, NORM_W, TABLE, K_CACHE, V_CACHE, STEP, PART_O, PART_ML_IN, RES_H, RES_G,
    RES_OUT,
]);
const VEC4: Interface = Interface::new::<LinearParams>(&[
    X4, W4, Y, BIAS, Y1, Y2, NORM_W4, WS, TABLE, K_CACHE, V_CACHE, STEP,
]);

/// The RMSNorm weight's accessors: `norm_g(k)` and `norm_g4(k)` (elements k..k + 4) for the word
/// kernels, `norm_g4v(i)` (the i-th vec4) for the vec4 kernel; stubs without the prologue.
const NORM_WORDS: &str = "fn norm_g(k: u32) -> f32 { return norm_w[k]; }\n\
                          fn norm_g4(k: u32) -> vec4<f32> {\n\
                          \x20   return vec4<f32>(norm_w[k], norm_w[k + 1u], norm_w[k + 2u], norm_w[k + 3u]);\n}\n\
                          fn norm_g4v(i: u32) -> vec4<f32> { return vec4<f32>(1.0); }\n";
const NORM_VEC4: &str = "fn norm_g(k: u32) -> f32 { return 1.0; }\n\
                         fn norm_g4(k: u32) -> vec4<f32> { return vec4<f32>(1.0); }\n\
                         fn norm_g4v(i: u32) -> vec4<f32> { return norm_w[i]; }\n";
const NO_NORM: &str = "fn norm_g(k: u32) -> f32 { return 1.0; }\n\
                       fn norm_g4(k: u32) -> vec4<f32> { return vec4<f32>(1.0); }\n\
                       fn norm_g4v(i: u32) -> vec4<f32> { return vec4<f32>(1.0); }\n";
const BIAS_AT: &str = "fn bias_at(n: u32) -> f32 { return bias[n]; }\n";
const NO_BIAS: &str = "fn bias_at(n: u32) -> f32 { return 0.0; }\n";

/// The store function of split output `which` (1 or 2).
macro_rules! split_output {
    ($which:literal) => {
        concat!(
            "fn put",
            $which,
            "(i: u32, v: f32) {\n    var r = v;\n    if (ACCUMULATE == 1u) {\n        r = y",
            $which,
            "[i] + r;\n    }\n    y",
            $which,
            "[i] = r;\n}\n"
        )
    };
}
/// The store functions `put1`, `put2` for `split` split outputs (stubs for the missing ones).
fn split_snippets(split: usize) -> [&'static str; 2] {
    const NO_PUT1: &str = "fn put1(i: u32, v: f32) {}\n";
    const NO_PUT2: &str = "fn put2(i: u32, v: f32) {}\n";
    match split {
        0 => [NO_PUT1, NO_PUT2],
        1 => [split_output!(1), NO_PUT2],
        _ => [split_output!(1), split_output!(2)],
    }
}

/// Invocations per workgroup of the CPU kernel (`linear_rows.wgsl`), each computing whole dot
/// products of one output column.
const ROWS_WG: u32 = 64;
/// Activation rows per invocation of the CPU kernel for the matrix-matrix case: each decoded
/// weight serves this many rows.
const ROWS_MT: u32 = 8;
/// The vec4 CPU kernel (`linear_rows4.wgsl`): rows of W per invocation (each x load serves all)
/// and activation rows per invocation for the matrix-matrix case.
const ROWS4_NR: u32 = 4;
const ROWS4_MT: u32 = 4;

/// The matvec workgroup for rows of `items` units of work (elements, pairs or groups of 8): as
/// many invocations as there are units, rounded to a power of two in 32..=256, so short rows
/// (small models: 576 elements are 72 groups) do not leave most invocations idle; and the rows
/// per workgroup that make up for it (the x values an invocation loads serve every row).
fn matvec_shape(items: usize) -> (u32, u32) {
    let wg = (items.next_power_of_two() as u32).clamp(32, super::WG);
    let rows = if wg >= 128 { 4 } else { 8 };
    (wg, rows)
}
/// `lane_vec4` for `linear_rows4.wgsl` without subgroup broadcasts (never called there), and the
/// entry point and `lane_vec4` that load x through them.
const ROWS4_LANES: &str = "fn lane_vec4(v: vec4<f32>, lane: u32) -> vec4<f32> { return v; }\n";
const ROWS4_SUBGROUP_SRC: &str = include_str!("../../shaders/linear_rows4_subgroup.wgsl");
/// Output tile edge of the matmul kernel.
const TILE: u32 = 64;

/// Activation rows of the prefill GEMM's tiles (kernels made for GPUs): a step of up to this
/// many rows computes as many products as one of this many.
pub const MATMUL_TILE_ROWS: usize = TILE as usize;

/// The matmul kernel's f32 tiles (16 KiB: WebGPU's default limit); its row statistics go
/// through the X tile once the K loop is done with it (see shaders/matmul.wgsl).
const MATMUL_TILES_F32: &str = "
alias TT = f32;
var<workgroup> xs: array<vec4<f32>, 512>;
var<workgroup> ws: array<vec4<f32>, 512>;
fn scratch_put(i: u32, v: f32) { xs[i / 4u][i % 4u] = v; }
fn scratch_at(i: u32) -> f32 { return xs[i / 4u][i % 4u]; }
fn scratch4(v: u32) -> vec4<f32> { return xs[v]; }
";

/// The matmul kernel's f16 tiles ([`crate::gpu::GpuContext::with_f16_tiles`]; 8 KiB) and 1 KiB
/// of f32 row statistics, which the first pass needs before the tiles are filled.
const MATMUL_TILES_F16: &str = "
alias TT = f16;
var<workgroup> xs: array<vec4<f16>, 512>;
var<workgroup> ws: array<vec4<f16>, 512>;
var<workgroup> row_stats: array<vec4<f32>, 64>;
fn scratch_put(i: u32, v: f32) { row_stats[i / 4u][i % 4u] = v; }
fn scratch_at(i: u32) -> f32 { return row_stats[i / 4u][i % 4u]; }
fn scratch4(v: u32) -> vec4<f32> { return row_stats[v]; }
";

/// Up to this many activation rows, [`LinearKernel::Auto`] uses the matrix-vector kernel; beyond,
/// the tiled matrix-matrix kernel, which reuses each W tile across 64 rows. Decode-step epilogues
/// (RoPE into the cache, combining split attention) take at most this many rows.
pub const MATVEC_MAX_ROWS: usize = 4;

/// Up to this many activation rows, [`LinearKernel::Auto`] on the kernels made for GPUs uses the
/// matrix-vector kernel with several activation rows per workgroup (each weight decoded once for
/// all of them) instead of a 64-row matmul tile that would be mostly empty: the short prefill
/// steps of a chat turn (16, 8, 4, 2 tokens).
pub const SMALL_M_MAX_ROWS: usize = 16;

/// The matrix-vector kernel's activation rows per workgroup (`MT`) for `m` rows, and its rows of
/// W per workgroup in place of `rows` (each invocation keeps MT · ROWS sums): one for the
/// decode-step epilogues, which combine or rotate per activation row.
fn matvec_mt(m: u32, rows: u32, per_row_epilogue: bool) -> (u32, u32) {
    if per_row_epilogue || m <= 1 {
        return (1, rows);
    }
    let mt = m.next_power_of_two().min(SMALL_M_MAX_ROWS as u32);
    (mt, if mt <= 4 { 4 } else { 2 })
}

/// The several-row path of matvec.wgsl (`MT` > 1 activation rows) for `mt` rows of `rows` (2 to
/// 4) W rows each: one private `vecN` of sums and one Σx² per activation row, and the per-step
/// functions with every activation row and W row named by a literal. Generated because WGSL has
/// no unrolling, and loops over arrays of sums (what the path had) leave them in local memory on
/// a driver that does not unroll them (see matvec.wgsl). For `mt` = 1 the functions are stubs,
/// which the one-row path never calls.
fn several_rows_source(mt: u32, rows: u32) -> String {
    use std::fmt::Write;
    const LANES: [&str; 4] = ["x", "y", "z", "w"];
    if mt <= 1 {
        return "fn several_quant(n0: u32, m0: u32, nb: u32, bi: u32, gg: u32, k0: u32) {}\n\
                fn several_half(n0: u32, m0: u32, row_words: u32, j: u32) {}\n\
                fn several_f32(n0: u32, m0: u32, k: u32) {}\n\
                fn several_put() {}\n"
            .to_string();
    }
    debug_assert!((2..=4).contains(&rows), "{rows} W rows per workgroup");
    let vec = format!("vec{rows}<f32>");
    let rs = 0..rows as usize;
    let list = |f: &dyn Fn(usize) -> String| rs.clone().map(f).collect::<Vec<_>>().join(", ");
    let mut s = String::new();
    for t in 0..mt {
        let _ = writeln!(
            s,
            "var<private> sev_acc{t}: {vec};\nvar<private> sev_ss{t}: f32;"
        );
    }
    // Block formats: a group of 8 weights of each row, then each activation row's 8 x values.
    s.push_str("fn several_quant(n0: u32, m0: u32, nb: u32, bi: u32, gg: u32, k0: u32) {\n");
    for r in rs.clone() {
        let _ = writeln!(
            s,
            "    let w{r} = decode8(w_row(n0, {r}u) * nb + bi, gg, p.scale_base);"
        );
    }
    for t in 0..mt {
        let dots = list(&|r| format!("dot8(w{r}, xa, xb, sev_acc{t}.{})", LANES[r]));
        let _ = write!(
            s,
            "    {{\n        let m = act_row(m0, {t}u);\n\
             \x20       var xa = x_in4(m, k0);\n        var xb = x_in4(m, k0 + 4u);\n\
             \x20       if (NORM == 1u) {{\n\
             \x20           sev_ss{t} = sq4(xb, sq4(xa, sev_ss{t}));\n\
             \x20           xa = xa * norm_g4(k0);\n            xb = xb * norm_g4(k0 + 4u);\n\
             \x20       }}\n        sev_acc{t} = {vec}({dots});\n    }}\n"
        );
    }
    s.push_str("}\n");
    // Half floats: a word (two weights) of each row, then each activation row's two x values.
    s.push_str("fn several_half(n0: u32, m0: u32, row_words: u32, j: u32) {\n");
    for r in rs.clone() {
        let _ = writeln!(
            s,
            "    let w{r} = unpack_half2(w[w_row(n0, {r}u) * row_words + j]);"
        );
    }
    let _ = writeln!(s, "    let wx = {vec}({});", list(&|r| format!("w{r}.x")));
    let _ = writeln!(s, "    let wy = {vec}({});", list(&|r| format!("w{r}.y")));
    for t in 0..mt {
        let _ = write!(
            s,
            "    {{\n        let m = act_row(m0, {t}u);\n\
             \x20       var x0 = x_in(m, 2u * j);\n        var x1 = x_in(m, 2u * j + 1u);\n\
             \x20       if (NORM == 1u) {{\n\
             \x20           sev_ss{t} = fma(x1, x1, fma(x0, x0, sev_ss{t}));\n\
             \x20           x0 = x0 * norm_g(2u * j);\n            x1 = x1 * norm_g(2u * j + 1u);\n\
             \x20       }}\n\
             \x20       sev_acc{t} = fma(wx, {vec}(x0), fma(wy, {vec}(x1), sev_acc{t}));\n    }}\n"
        );
    }
    s.push_str("}\n");
    // f32: weight k of each row, then each activation row's x.
    s.push_str("fn several_f32(n0: u32, m0: u32, k: u32) {\n");
    let _ = writeln!(
        s,
        "    let wv = {vec}({});",
        list(&|r| format!("bitcast<f32>(w[w_row(n0, {r}u) * p.w_stride + k])"))
    );
    for t in 0..mt {
        let _ = write!(
            s,
            "    {{\n        var xv = x_in(act_row(m0, {t}u), k);\n\
             \x20       if (NORM == 1u) {{\n\
             \x20           sev_ss{t} = fma(xv, xv, sev_ss{t});\n            xv = xv * norm_g(k);\n\
             \x20       }}\n        sev_acc{t} = fma(wv, {vec}(xv), sev_acc{t});\n    }}\n"
        );
    }
    s.push_str("}\n");
    // The sums into red_in for workgroup_reduce: activation row t's W row r at t · ROWS + r, its
    // Σx² at MT · ROWS + t (clamped where NORM = 0 leaves the branch dead).
    s.push_str("fn several_put() {\n");
    for t in 0..mt {
        for r in rs.clone() {
            let _ = writeln!(
                s,
                "    red_in[{}] = sev_acc{t}.{};",
                t * rows + r as u32,
                LANES[r]
            );
        }
    }
    s.push_str("    if (NORM == 1u) {\n");
    for t in 0..mt {
        let _ = writeln!(
            s,
            "        red_in[min({}u, RED_N - 1u)] = sev_ss{t};",
            mt * rows + t
        );
    }
    s.push_str("    }\n}\n");
    s
}

/// [`several_rows_source`], generated once per shape (the few [`matvec_mt`] gives) and kept.
fn several_rows_snippet(mt: u32, rows: u32) -> &'static str {
    use std::sync::{Mutex, PoisonError};
    static SNIPPETS: Mutex<Vec<((u32, u32), &'static str)>> = Mutex::new(Vec::new());
    // Every one-row shape shares the stubs.
    let key = if mt <= 1 { (1, 0) } else { (mt, rows) };
    let mut all = SNIPPETS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&(_, src)) = all.iter().find(|(k, _)| *k == key) {
        return src;
    }
    let src: &'static str = Box::leak(several_rows_source(key.0, key.1).into_boxed_str());
    all.push((key, src));
    src
}

/// The largest power-of-two workgroup of at most `wg` invocations whose reduction scratch
/// (`red_n` values each) fits in `bytes` of workgroup memory.
fn reduction_wg(wg: u32, red_n: u32, bytes: u32) -> u32 {
    let most = (bytes / (4 * red_n.max(1))).max(1);
    let fit = 1u32 << most.ilog2();
    wg.min(fit).max(1)
}

/// Whether a linear layer of `m` activation rows with `kernel` runs the prefill GEMM with f16
/// tiles on `ctx` ([`GpuContext::with_f16_tiles`]): what its error bound must allow for (see
/// [`crate::reference::f16_tiles_tolerance`]).
pub fn uses_f16_tiles(ctx: &GpuContext, kernel: LinearKernel, m: usize) -> bool {
    let caps = ctx.capabilities();
    let matmul = match kernel {
        LinearKernel::Auto => m > SMALL_M_MAX_ROWS,
        LinearKernel::Matvec => false,
        LinearKernel::Matmul => true,
    };
    caps.f16_tiles && !caps.cpu && matmul
}

/// Which kernel computes a linear layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LinearKernel {
    /// By the number of activation rows (see [`MATVEC_MAX_ROWS`]).
    #[default]
    Auto,
    /// Matrix × vector: the decode-step kernel.
    Matvec,
    /// Tiled matrix × matrix: the prefill kernel.
    Matmul,
}

/// Options of a linear layer: the kernel, and the epilogue fused into its output write.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linear<'a> {
    pub kernel: LinearKernel,
    /// Added to every output column (before SwiGLU in [`linear_swiglu`]): f32 [rows of W].
    pub bias: Option<&'a GpuTensor>,
    /// Add the result to what the output holds (the residual stream) instead of overwriting it.
    pub accumulate: bool,
    /// An RMSNorm prologue: `(weight, eps)` with weight f32 [in features]. The layer computes
    /// `rmsnorm(x) · Wᵀ` with the formula of [`crate::kernels::rmsnorm`], without a separate
    /// dispatch or a normalised copy of x: every kernel sums x² over the row while it walks k for
    /// the dot products and loads x·weight, and multiplies each dot product by
    /// `1 / sqrt(Σx² / k + eps)` before the epilogue (the scale is the same for all of a row's
    /// terms, so it is applied once). Costs one more multiply-add per loaded x element.
    pub norm: Option<(&'a GpuTensor, f32)>,
    /// The gate's activation of [`linear_swiglu`] (SiLU, or GELU-tanh for Gemma's GeGLU).
    pub gate_act: GateActivation,
    /// `Some(c)`: W is a row range of a larger matrix (an LM head split over bindings) and
    /// output column n goes to column `c + n` of y, which has the larger matrix's columns. Not
    /// with split outputs or SwiGLU.
    pub col_offset: Option<usize>,
    /// x is split attention's output: its partial results are combined as the matrix-vector
    /// kernel loads them (combine_in.wgsl), and the attention's combine pass is not recorded.
    /// x only gives the shape. [`combine_fits`] says where.
    pub combine: Option<(&'a AttentionParts, &'a StepState)>,
    /// x is the residual stream before a post-norm is added to it: the layer reads
    /// `x + rmsnorm(h) · g` ([`crate::kernels::rmsnorm_add`]'s sum) as it loads x, and stores
    /// that sum to `out` for the layers after it, without a dispatch of its own. Before the RMSNorm
    /// prologue, if any. [`residual_fits`] says where.
    pub residual: Option<Residual<'a>>,
}

/// A post-norm waiting to be added to the residual stream ([`Linear::residual`]): the block's
/// output `h` (x's shape), the norm's weight `g` [in features] and `eps`, and `out` (x's shape,
/// another buffer) for the updated stream.
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    pub h: &'a GpuTensor,
    pub g: &'a GpuTensor,
    pub eps: f32,
    pub out: &'a GpuTensor,
}

/// Where [`linear_qkv_rope`] sends the keys and values: `layer` of `cache`, at the positions of
/// `step`, k rotated with `table` (as [`crate::kernels::rope_kv_write`] does).
#[derive(Clone, Copy, Debug)]
pub struct RopeKv<'a> {
    pub table: &'a RopeTable,
    pub step: &'a StepState,
    pub cache: &'a KvCache,
    pub layer: usize,
}

/// Where the output columns go: y alone, y then up to two split outputs by column range,
/// SiLU(gate)·up into y, or rotated q into y and k, v into a KV cache.
#[derive(Clone, Copy, Debug, Default)]
struct Epilogue<'a> {
    split: &'a [&'a GpuTensor],
    swiglu: bool,
    /// With the number of q heads.
    rope: Option<(RopeKv<'a>, usize)>,
}

fn check(
    kernel: &'static str,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
    opts: &Linear,
    epi: &Epilogue,
) -> Result<LinearParams> {
    expect_dtype(kernel, w, &DType::WEIGHTS, "weights of a supported format")?;
    expect_dtype(kernel, x, &[DType::F32], "f32 activations")?;
    let split = epi.split;
    let outputs: Vec<&GpuTensor> = std::iter::once(y).chain(split.iter().copied()).collect();
    let mut inputs = vec![x, w];
    inputs.extend(opts.bias);
    inputs.extend(opts.norm.map(|n| n.0));
    for (i, out) in outputs.iter().enumerate() {
        expect_dtype(kernel, out, &[DType::F32], "an f32 output")?;
        expect_distinct(kernel, out, &inputs)?;
        expect_distinct(kernel, out, &outputs[i + 1..])?;
    }
    if split.len() > 2 {
        return Err(mismatch(
            kernel,
            format!(
                "{} split outputs; a linear layer writes at most 3 outputs (y and 2 more)",
                split.len()
            ),
        ));
    }
    if epi.swiglu && !split.is_empty() {
        return Err(mismatch(
            kernel,
            "swiglu and split outputs do not combine".to_string(),
        ));
    }
    let [n, k] = *w.shape() else {
        return Err(mismatch(
            kernel,
            format!(
                "weights '{}' must be 2-D [out, in], got {:?}",
                w.name(),
                w.shape()
            ),
        ));
    };
    if x.cols() != k {
        return Err(mismatch(
            kernel,
            format!(
                "input '{}' {:?} has {} features, weights '{}' {:?} expect {k}",
                x.name(),
                x.shape(),
                x.cols(),
                w.name(),
                w.shape()
            ),
        ));
    }
    // Output columns: the rows of W, or half of them (gate and up) for SwiGLU.
    let cols = if epi.swiglu {
        if !n.is_multiple_of(2) {
            return Err(mismatch(
                kernel,
                format!(
                    "swiglu weights '{}' {:?} must hold gate rows then as many up rows: an even \
                     number of rows",
                    w.name(),
                    w.shape()
                ),
            ));
        }
        n / 2
    } else {
        n
    };
    if opts.col_offset.is_some() && (epi.swiglu || !split.is_empty()) {
        return Err(mismatch(
            kernel,
            "a column offset does not combine with split outputs or swiglu".to_string(),
        ));
    }
    let out_cols: usize = outputs.iter().map(|t| t.cols()).sum();
    let rows_ok = outputs.iter().all(|t| t.rows() == x.rows());
    let cols_ok = match (opts.col_offset, &epi.rope) {
        // linear_qkv_rope checked q's columns against W and the cache.
        (_, Some(_)) => true,
        (Some(c), None) => y.cols() >= c + cols,
        (None, None) => out_cols == cols,
    };
    if !cols_ok || !rows_ok {
        let shapes: Vec<String> = outputs
            .iter()
            .map(|t| format!("'{}' {:?}", t.name(), t.shape()))
            .collect();
        return Err(mismatch(
            kernel,
            format!(
                "output {} is not {} rows of {cols} columns{} (input '{}' {:?}, weights '{}' {:?})",
                shapes.join(" + "),
                x.rows(),
                if epi.swiglu {
                    " (half the weights' rows, for swiglu)"
                } else {
                    ""
                },
                x.name(),
                x.shape(),
                w.name(),
                w.shape()
            ),
        ));
    }
    if let Some(b) = opts.bias {
        expect_dtype(kernel, b, &[DType::F32], "an f32 bias")?;
        if b.shape() != [n] {
            return Err(mismatch(
                kernel,
                format!("bias '{}' is {:?}, expected [{n}]", b.name(), b.shape()),
            ));
        }
    }
    let mut eps = 0.0;
    if let Some((g, e)) = opts.norm {
        expect_dtype(kernel, g, &[DType::F32], "an f32 norm weight")?;
        if g.shape() != [k] {
            return Err(mismatch(
                kernel,
                format!(
                    "norm weight '{}' is {:?}, expected [{k}] (the input features)",
                    g.name(),
                    g.shape()
                ),
            ));
        }
        check_eps(kernel, "norm eps", e)?;
        eps = e;
    }
    let mut res_eps = 0.0;
    if let Some(r) = opts.residual {
        for t in [r.h, r.g, r.out] {
            expect_dtype(kernel, t, &[DType::F32], "f32 residual tensors")?;
        }
        if r.h.shape() != x.shape() || r.out.shape() != x.shape() || r.g.shape() != [k] {
            return Err(mismatch(
                kernel,
                format!(
                    "residual block output '{}' {:?} and updated stream '{}' {:?} must have the \
                     input's shape {:?}, norm weight '{}' {:?} its features [{k}]",
                    r.h.name(),
                    r.h.shape(),
                    r.out.name(),
                    r.out.shape(),
                    x.shape(),
                    r.g.name(),
                    r.g.shape()
                ),
            ));
        }
        // Written while every workgroup reads x, h and g: no output may be one of them.
        let mut read: Vec<&GpuTensor> = inputs.clone();
        read.extend([r.h, r.g]);
        for out in &outputs {
            expect_distinct(kernel, out, &[r.h, r.g])?;
        }
        read.extend(outputs.iter().copied());
        expect_distinct(kernel, r.out, &read)?;
        check_eps(kernel, "residual eps", r.eps)?;
        res_eps = r.eps;
    }
    // Block formats: the scales follow the quants of all n · k / QK blocks.
    let blocks = n * (k / w.dtype().block_size());
    Ok(LinearParams {
        n: dim(kernel, "out features", cols)?,
        k: dim(kernel, "in features", k)?,
        m: dim(kernel, "rows", x.rows())?,
        w_stride: dim(kernel, "row stride", w.row_stride())?,
        blocks: 0,
        scale_base: dim(kernel, "weight words", blocks * w.dtype().quant_words())?,
        y_cols: dim(kernel, "out features", y.cols())?,
        y1_cols: dim(
            kernel,
            "out features",
            split.first().map_or(0, |t| t.cols()),
        )?,
        eps,
        y_col0: dim(kernel, "column offset", opts.col_offset.unwrap_or(0))?,
        res_eps,
    })
}

fn spec(
    ctx: &GpuContext,
    matvec: Option<(u32, u32, u32)>,
    w: &GpuTensor,
    opts: &Linear,
    epi: &Epilogue,
    vec4: bool,
) -> Specialization {
    let norm = u32::from(opts.norm.is_some());
    let base = if let Some((wg, rows, mt)) = matvec {
        // The one-row path of matvec.wgsl keeps its sums in two vec4s.
        debug_assert!(
            mt > 1 || rows == 4 || rows == 8,
            "{rows} rows of one activation row"
        );
        // One more reduced value per activation row with the RMSNorm prologue: its Σx².
        let red_n = mt * (rows + norm);
        // Several activation rows' sums: as many invocations as their reduction scratch
        // allows (one row's, beside the combine's chunk weights, always fits).
        let wg = if mt == 1 {
            wg
        } else {
            reduction_wg(wg, red_n, ctx.capabilities().max_workgroup_storage_bytes)
        };
        let base = reduce_spec_wg(ctx, red_n, wg)
            .with("ROWS", rows)
            .with("MT", mt)
            .snippet(several_rows_snippet(mt, rows));
        match (opts.combine, opts.residual) {
            (_, Some(_)) => base.snippet(RESIDUAL_IN),
            (Some((a, _)), None) => base
                .with("C_HEADS", a.n_heads as u32)
                .with("C_HD", a.head_dim as u32)
                .with("C_CHUNKS", a.n_chunks as u32)
                .with("C_CHUNK_LEN", a.chunk_len as u32)
                .with("C_WINDOW", a.window)
                .snippet(COMBINE_IN),
            (None, None) => base.snippet(PLAIN_IN),
        }
    } else {
        Specialization::default()
    };
    let split = epi.split.len();
    let [put1, put2] = split_snippets(split);
    let base = match &epi.rope {
        Some((r, q_heads)) => {
            let hd = r.cache.head_dim() as u32;
            base.with("ROPE", 1)
                .with("Q_HEADS", *q_heads as u32)
                .with("KV_HEADS", r.cache.n_kv_heads() as u32)
                .with("HD", hd)
                .with(
                    "NEOX",
                    u32::from(r.table.config().layout == RopeLayout::NeoX),
                )
                .with("KV_F16", u32::from(r.cache.dtype() == DType::F16))
                .with("ROW_WORDS", r.cache.row_words() as u32)
                .with("KV_SLOTS", r.cache.slots(r.layer) as u32)
                .snippet(QKV_ROPE)
                .snippet(ROPE_ROTATE)
                .snippet(KV_STORE)
        }
        None => base.with("ROPE", 0).snippet(NO_QKV_ROPE),
    };
    let spec = base
        .with("W_FORMAT", w.dtype().ggml_id())
        .with("QK", w.dtype().block_size() as u32)
        .with("ACCUMULATE", u32::from(opts.accumulate))
        .with("SWIGLU", u32::from(epi.swiglu))
        .with("SPLIT", split as u32)
        .with("NORM", norm)
        .with("GATE_ACT", opts.gate_act.id())
        .snippet(ACT)
        .snippet(if opts.bias.is_some() {
            BIAS_AT
        } else {
            NO_BIAS
        })
        .snippet(put1)
        .snippet(put2)
        .snippet(match (opts.norm.is_some(), vec4) {
            (false, _) => NO_NORM,
            (true, false) => NORM_WORDS,
            (true, true) => NORM_VEC4,
        })
        .snippet(LINEAR_COMMON);
    // The vec4 kernel has its own decoders.
    if vec4 {
        spec
    } else {
        spec.snippet(QUANT)
    }
}

/// `y = x · Wᵀ`, with the kernel chosen by the number of activation rows.
pub async fn linear(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    linear_with(ctx, w, x, y, &Linear::default()).await
}

/// Matrix × vector (one or a few activation rows): the decode-step kernel.
pub async fn matvec(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    let opts = Linear {
        kernel: LinearKernel::Matvec,
        ..Default::default()
    };
    linear_with(ctx, w, x, y, &opts).await
}

/// Tiled matrix × matrix: the prefill kernel.
pub async fn matmul(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<Dispatch> {
    let opts = Linear {
        kernel: LinearKernel::Matmul,
        ..Default::default()
    };
    linear_with(ctx, w, x, y, &opts).await
}

/// `y = x · Wᵀ (+ bias) (+ y)` with explicit options.
pub async fn linear_with(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
    opts: &Linear<'_>,
) -> Result<Dispatch> {
    linear_epilogue(ctx, w, x, y, opts, &Epilogue::default()).await
}

/// A linear layer whose output columns go to several tensors by column range: `outputs[0]`
/// takes the first `outputs[0].cols()` columns, then `outputs[1]`, then `outputs[2]` (1 to 3
/// f32 outputs of x's rows whose columns add up to the rows of W). For a fused QKV projection:
/// W = [`concat_rows`]`(q, k, v)`, the bias (if any) the concatenated biases, outputs
/// `[q, k, v]`. `opts.accumulate` adds to every output.
pub async fn linear_split(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    outputs: &[&GpuTensor],
    opts: &Linear<'_>,
) -> Result<Dispatch> {
    let Some((y, split)) = outputs.split_first() else {
        return Err(mismatch(
            "linear_split",
            "no outputs: pass 1 to 3 tensors".to_string(),
        ));
    };
    let epi = Epilogue {
        split,
        ..Default::default()
    };
    linear_epilogue(ctx, w, x, y, opts, &epi).await
}

/// The workgroup memory of the matvec kernel's reduction at its largest (256 invocations, 8 rows
/// and the RMSNorm's sum), beside which [`Linear::combine`] keeps its chunk weights.
const MATVEC_REDUCTION_BYTES: usize = 256 * 9 * 4;

/// Whether a linear layer on `rows` activation rows can take split attention's partial results
/// `parts` as its input ([`Linear::combine`]) on this device: the kernels made for GPUs (a CPU
/// adapter's whole-dot-product kernels would combine once per output column), a decode-sized
/// step, causal attention, and every head's chunk weights within workgroup memory.
pub fn combine_fits(ctx: &GpuContext, parts: &AttentionParts, rows: usize) -> bool {
    let weights = parts.n_heads * (parts.n_chunks + 1) * 4;
    let caps = ctx.capabilities();
    !caps.cpu
        && parts.causal
        && rows <= MATVEC_MAX_ROWS
        && weights + MATVEC_REDUCTION_BYTES <= caps.max_workgroup_storage_bytes as usize
}

/// Whether a linear layer on `rows` activation rows, writing `outputs` tensors (y and any split
/// outputs), with a bias and an RMSNorm prologue when `bias`, `norm` say so, can add a post-norm
/// to its input as it loads it ([`Linear::residual`]) on this device: the matrix-vector kernels
/// made for GPUs (a CPU adapter's kernels load x once per output column), one activation row
/// (a decode step: the sum is stored by one workgroup per row, which needs one row per
/// workgroup), and its bindings within the device's storage-buffer limit (the baseline
/// profile's 8 leave out a q, k, v projection split into three outputs).
pub fn residual_fits(
    ctx: &GpuContext,
    rows: usize,
    outputs: usize,
    bias: bool,
    norm: bool,
) -> bool {
    // x, W, the outputs, and the residual's h, g and out.
    let storage = 2 + outputs + usize::from(bias) + usize::from(norm) + 3;
    let caps = ctx.capabilities();
    !caps.cpu && rows == 1 && storage <= caps.max_storage_buffers_per_stage as usize
}

/// Whether [`linear_qkv_rope`] runs on this device for the stacked q, k, v projection `w` on
/// `rows` activation rows with RoPE `rope` into `cache` (with a bias and an RMSNorm prologue
/// when `bias`, `norm` say so): a decode-sized step (at most [`MATVEC_MAX_ROWS`] rows), the
/// whole head rotating, heads of a multiple of 4 elements, and its bindings within the device's
/// storage-buffer limit (the baseline profile's 8 leave out a biased projection on the vec4
/// kernel of CPU adapters).
pub fn qkv_rope_fits(
    ctx: &GpuContext,
    w: &GpuTensor,
    rows: usize,
    rope: &RopeConfig,
    cache: &KvCache,
    bias: bool,
    norm: bool,
) -> bool {
    let hd = cache.head_dim();
    // x, W, q, the table and the two cache layers; the vec4 kernel's word view of W.
    let storage = 6 + usize::from(vec4_kernel(ctx, w)) + usize::from(bias) + usize::from(norm);
    rows <= MATVEC_MAX_ROWS
        && hd > 0
        && hd.is_multiple_of(4)
        && rope.head_dim == hd
        && rope.rotary_dim == hd
        && storage <= ctx.capabilities().max_storage_buffers_per_stage as usize
}

/// A decode step's stacked q, k, v projection (W = [`concat_rows`]`(q, k, v)`, x [rows, k])
/// with RoPE and the KV-cache write in its epilogue: what [`linear_split`] into q, k, v and
/// [`crate::kernels::rope_kv_write`] do in two dispatches, in one. q (f32 [rows, heads ·
/// head_dim]) receives the rotated queries; the rotated keys and the values of the step's tokens
/// go to `out.layer` of `out.cache` at `step.offset + t` (tokens past the step are not stored).
/// Each workgroup or invocation computes whole quads (4 columns of one head holding two RoPE
/// pairs, see qkv_rope.wgsl), so the rotation needs no other. `opts` may add a bias and an
/// RMSNorm prologue; [`qkv_rope_fits`] says where it runs, and anything else is a typed error.
pub async fn linear_qkv_rope(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    q: &GpuTensor,
    out: &RopeKv<'_>,
    opts: &Linear<'_>,
) -> Result<Dispatch> {
    const NAME: &str = "linear_qkv_rope";
    let RopeKv {
        table,
        step,
        cache,
        layer,
    } = *out;
    check_table(NAME, table, step)?;
    cache.check_layer(NAME, layer, step)?;
    let hd = cache.head_dim();
    let fits = qkv_rope_fits(
        ctx,
        w,
        x.rows(),
        table.config(),
        cache,
        opts.bias.is_some(),
        opts.norm.is_some(),
    );
    if !fits || opts.accumulate || opts.col_offset.is_some() || opts.kernel == LinearKernel::Matmul
    {
        return Err(mismatch(
            NAME,
            format!(
                "the RoPE epilogue runs on at most {MATVEC_MAX_ROWS} rows (got {}) with the \
                 matrix-vector kernels, without accumulate or a column offset, on heads of a \
                 multiple of 4 elements (got {hd}) that rotate whole (rotary_dim {}), within the \
                 device's {} storage buffers",
                x.rows(),
                table.config().rotary_dim,
                ctx.capabilities().max_storage_buffers_per_stage
            ),
        ));
    }
    let kv_rows = cache.n_kv_heads() * hd;
    let w_rows = w.shape().first().copied().unwrap_or(0);
    if q.cols() == 0 || !q.cols().is_multiple_of(hd) || w_rows != q.cols() + 2 * kv_rows {
        return Err(mismatch(
            NAME,
            format!(
                "q '{}' {:?} must be whole heads of {hd} and weights '{}' {:?} its rows plus \
                 {kv_rows} k and {kv_rows} v rows (the cache's {} kv heads)",
                q.name(),
                q.shape(),
                w.name(),
                w.shape(),
                cache.n_kv_heads()
            ),
        ));
    }
    if x.rows() < step.max_tokens() {
        return Err(mismatch(
            NAME,
            format!(
                "input '{}' {:?} has fewer rows than the step's {} tokens",
                x.name(),
                x.shape(),
                step.max_tokens()
            ),
        ));
    }
    let (kc, vc) = cache.layer(layer).expect("check_layer passed");
    expect_distinct(NAME, q, &[kc, vc, table.table()])?;
    let opts = Linear {
        kernel: LinearKernel::Matvec,
        ..*opts
    };
    let epi = Epilogue {
        rope: Some((*out, q.cols() / hd)),
        ..Default::default()
    };
    linear_epilogue(ctx, w, x, q, &opts, &epi).await
}

/// A fused Llama MLP input: with W = [`concat_rows`]`(gate, up)` ([2·f, k]), writes
/// `out = silu(x · gateᵀ) · (x · upᵀ)` ([m, f]) in one dispatch, with the formula of
/// [`crate::kernels::swiglu`] (`opts.gate_act` GELU-tanh: Gemma's GeGLU). A bias (f32 [2·f]) is added to both products first;
/// `opts.accumulate` adds the result to `out`.
pub async fn linear_swiglu(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    out: &GpuTensor,
    opts: &Linear<'_>,
) -> Result<Dispatch> {
    let epi = Epilogue {
        swiglu: true,
        ..Default::default()
    };
    linear_epilogue(ctx, w, x, out, opts, &epi).await
}

/// The dispatch of a linear layer, which reads all of `w`.
async fn linear_epilogue(
    ctx: &GpuContext,
    w: &GpuTensor,
    x: &GpuTensor,
    y: &GpuTensor,
    opts: &Linear<'_>,
    epi: &Epilogue<'_>,
) -> Result<Dispatch> {
    let cpu = ctx.capabilities().cpu;
    let use_matvec = match opts.kernel {
        // The CPU adapters' kernels have their own many-row path (MT rows per invocation).
        LinearKernel::Auto if cpu => x.rows() <= MATVEC_MAX_ROWS,
        LinearKernel::Auto => x.rows() <= SMALL_M_MAX_ROWS,
        LinearKernel::Matvec => true,
        LinearKernel::Matmul => false,
    };
    let name = if use_matvec { "matvec" } else { "matmul" };
    if let Some((a, step)) = opts.combine {
        let k = a.n_heads * a.head_dim;
        if !combine_fits(ctx, a, x.rows())
            || !use_matvec
            || epi.rope.is_some()
            || x.cols() != k
            || x.rows() < step.max_tokens()
        {
            return Err(mismatch(
                name,
                format!(
                    "combining split attention as the input loads needs the matrix-vector \
                     kernels for GPUs, at most {MATVEC_MAX_ROWS} rows of {k} columns (the \
                     heads) and at least the step's {} (got '{}' {:?}), causal attention, no \
                     RoPE epilogue, and {} heads × {} chunks of weights within workgroup memory",
                    step.max_tokens(),
                    x.name(),
                    x.shape(),
                    a.n_heads,
                    a.n_chunks
                ),
            ));
        }
    }
    if opts.residual.is_some() {
        let fits = residual_fits(
            ctx,
            x.rows(),
            1 + epi.split.len(),
            opts.bias.is_some(),
            opts.norm.is_some(),
        );
        if !fits || !use_matvec || opts.combine.is_some() || epi.rope.is_some() {
            return Err(mismatch(
                name,
                format!(
                    "adding a post-norm to the input as it loads needs the matrix-vector kernels \
                     for GPUs, one activation row (got '{}' {:?}), no other input or RoPE \
                     epilogue, and its bindings within this device's {} storage buffers",
                    x.name(),
                    x.shape(),
                    ctx.capabilities().max_storage_buffers_per_stage
                ),
            ));
        }
    }
    let mut params = check(name, w, x, y, opts, epi)?;
    let swiglu = u32::from(epi.swiglu);
    // Outputs per W row: halved by SwiGLU, quartered by the RoPE epilogue's quads.
    let quads = 2 * u32::from(epi.rope.is_some());
    let shift = swiglu + quads;
    let units = params.n >> quads;
    let vec4 = vec4_kernel(ctx, w);
    let (x_slot, w_slot, norm_slot) = if vec4 {
        (X4, W4, NORM_W4)
    } else {
        (X, W, NORM_W)
    };
    let mut binds = vec![(w_slot, &w.buffer), (Y, &y.buffer)];
    match opts.combine {
        Some((a, step)) => binds.extend([
            (PART_O, &a.scratch.part_o.buffer),
            (PART_ML_IN, &a.scratch.part_ml.buffer),
            step.bind(),
        ]),
        None => binds.push((x_slot, &x.buffer)),
    }
    if let Some(r) = opts.residual {
        binds.extend([
            (RES_H, &r.h.buffer),
            (RES_G, &r.g.buffer),
            (RES_OUT, &r.out.buffer),
        ]);
    }
    binds.extend(opts.bias.map(|b| (BIAS, &b.buffer)));
    binds.extend(epi.split.iter().zip([Y1, Y2]).map(|(t, s)| (s, &t.buffer)));
    binds.extend(opts.norm.map(|n| (norm_slot, &n.0.buffer)));
    if let Some((r, _)) = &epi.rope {
        let (kc, vc) = r
            .cache
            .layer(r.layer)
            .expect("linear_qkv_rope checked the layer");
        binds.extend([
            (TABLE, &r.table.table().buffer),
            (K_CACHE, &kc.buffer),
            (V_CACHE, &vc.buffer),
            r.step.bind(),
        ]);
    }
    let rows_name = if use_matvec {
        "matvec_rows"
    } else {
        "matmul_rows"
    };
    if vec4 {
        const ROWS4: Kernel = Kernel::new("matvec_rows", ROWS4_SRC, "linear_rows4", VEC4);
        // 32-element sub-blocks per step: a K-quant's half super-block (128 elements) shares
        // its quant words and scales among its sub-blocks, so they are loaded once per step.
        let sub = match w.dtype() {
            DType::Q2_K | DType::Q3_K | DType::Q4_K | DType::Q5_K | DType::Q6_K => 4,
            _ => 1,
        };
        // Activation rows per invocation: with four times the x registers per step, K-quants
        // take at most half as many (and CPU drivers compile half the unrolled multiply-adds:
        // four rows of a K-quant took SwiftShader 10-14 s to compile).
        let max_mt = ROWS4_MT / (sub / 2).max(1);
        let mt = if use_matvec {
            (params.m.clamp(1, MATVEC_MAX_ROWS as u32))
                .next_power_of_two()
                .min(max_mt)
        } else {
            max_mt
        };
        // Output columns (or quads) per invocation.
        let cols = ROWS4_NR >> shift;
        let sv = 8 * sub;
        let caps = ctx.capabilities();
        // x through subgroup broadcasts: where every subgroup has the same size, at most a
        // step's x vec4s (and a power of two, as every WebGPU subgroup size is).
        let sg = Some(caps.subgroup_min_size)
            .filter(|&s| {
                caps.subgroups && s == caps.subgroup_max_size && s.is_power_of_two() && s <= sv
            })
            .unwrap_or(0);
        let (lanes, entry) = if sg > 0 {
            (ROWS4_SUBGROUP_SRC, "linear_rows4_subgroup")
        } else {
            (ROWS4_LANES, "linear_rows4")
        };
        let mut spec = spec(ctx, None, w, opts, epi, true)
            .with("SG", sg)
            .with("SGL", sg.max(1))
            .with("XL", sv / sg.max(1))
            .snippet(lanes)
            .with("WG", ROWS_WG)
            .with("MT", mt)
            .with("NR", ROWS4_NR)
            .with("COLS", cols)
            .with("SUB", sub)
            .with("SV", sv);
        params.blocks = units.div_ceil(ROWS_WG * cols);
        let groups = u64::from(params.blocks) * u64::from(params.m.div_ceil(mt));
        let wg = grid(ctx, name, groups)?;
        binds.push((WS, &w.buffer));
        spec.subgroups = sg > 0;
        let kernel = ROWS4.entry(rows_name, entry);
        return build(ctx, &kernel, &spec, &params, &binds, wg)
            .await
            .map(|d| d.reading_weights(w.size_bytes()));
    }
    if cpu {
        const ROWS: Kernel = Kernel::new("matvec_rows", ROWS_SRC, "linear_rows_f32", WORDS);
        // Whole dot products per invocation: MT activation rows each, one row for a matrix
        // × vector (more would only repeat the last), ROWS_MT for a matrix × matrix.
        let mt = if use_matvec {
            (params.m.clamp(1, MATVEC_MAX_ROWS as u32)).next_power_of_two()
        } else {
            ROWS_MT
        };
        let entry = match w.dtype() {
            DType::F32 => "linear_rows_f32",
            DType::F16 | DType::BF16 => "linear_rows_half",
            _ => "linear_rows_quant",
        };
        let spec = spec(ctx, None, w, opts, epi, false)
            .with("WG", ROWS_WG)
            .with("MT", mt)
            .with("RPI", 1 << shift);
        params.blocks = units.div_ceil(ROWS_WG);
        let groups = u64::from(params.blocks) * u64::from(params.m.div_ceil(mt));
        let wg = grid(ctx, name, groups)?;
        let kernel = ROWS.entry(rows_name, entry);
        return build(ctx, &kernel, &spec, &params, &binds, wg)
            .await
            .map(|d| d.reading_weights(w.size_bytes()));
    }
    // Units of work per row for the matvec entry points.
    let k = params.k as usize;
    let items = match w.dtype() {
        DType::F32 => k,
        DType::F16 | DType::BF16 => k.div_ceil(2),
        _ => k / 8,
    };
    let (mv_wg, mv_rows) = matvec_shape(items);
    let per_row = opts.combine.is_some() || opts.residual.is_some() || epi.rope.is_some();
    let (mt, mv_rows) = matvec_mt(params.m, mv_rows, per_row);
    let spec = spec(
        ctx,
        use_matvec.then_some((mv_wg, mv_rows, mt)),
        w,
        opts,
        epi,
        false,
    );
    if use_matvec {
        const MATVEC: Kernel = Kernel::new("matvec", MATVEC_SRC, "matvec_f32", WORDS).reducing();
        let entry = match w.dtype() {
            DType::F32 => "matvec_f32",
            DType::F16 | DType::BF16 => "matvec_half",
            // Block formats (`check` admits no other).
            _ => "matvec_quant",
        };
        // Output columns per workgroup: half the rows with SwiGLU (gate and up), a quarter with
        // the RoPE epilogue (quads).
        params.blocks = units.div_ceil(mv_rows >> shift);
        let groups = u64::from(params.blocks) * u64::from(params.m.div_ceil(mt));
        let wg = grid(ctx, name, groups)?;
        build(ctx, &MATVEC.entry(name, entry), &spec, &params, &binds, wg)
            .await
            .map(|d| d.reading_weights(w.size_bytes()))
    } else {
        const MATMUL: Kernel = Kernel::new("matmul", MATMUL_SRC, "matmul", WORDS);
        params.blocks = params.n.div_ceil(TILE >> swiglu);
        let wg = grid(
            ctx,
            name,
            u64::from(params.blocks) * u64::from(params.m.div_ceil(TILE)),
        )?;
        let f16 = ctx.capabilities().f16_tiles;
        let mut spec = spec.with("TF16", u32::from(f16)).snippet(if f16 {
            MATMUL_TILES_F16
        } else {
            MATMUL_TILES_F32
        });
        spec.f16 = f16;
        let kernel = if f16 {
            MATMUL.entry("matmul_f16", "matmul")
        } else {
            MATMUL
        };
        build(ctx, &kernel, &spec, &params, &binds, wg)
            .await
            .map(|d| d.reading_weights(w.size_bytes()))
    }
}

/// On a CPU adapter the block formats go through the vec4 kernel (linear_rows4.wgsl), which
/// decodes every (sub-)block of 32 from whole vec4s of words (Q5_0 and Q5_1: five words), and so
/// do the float formats whose rows are a multiple of 32 elements (whole vec4s of words).
fn vec4_kernel(ctx: &GpuContext, w: &GpuTensor) -> bool {
    let k = w.shape().last().copied().unwrap_or(0);
    ctx.capabilities().cpu && (w.dtype().is_quantized() || k.is_multiple_of(32))
}

const COPY_HALVES_SRC: &str = include_str!("../../shaders/copy_halves.wgsl");

crate::uniform! {
    struct HalvesParams {
        /// The first destination half.
        d0: u32,
        /// The first source half.
        s0: u32,
        /// Halves to copy.
        count: u32,
        /// Words of dst touched.
        words: u32,
    }
}

const HALVES_SRC: Slot = Slot::read("src", "u32");
const HALVES_DST: Slot = Slot::read_write("dst", "u32");

/// A new weight tensor `name` whose rows are the rows of `parts` in order (one dtype, one
/// column count; 1-D f32 or i32 tensors, such as biases, are concatenated element-wise), built on
/// the GPU with buffer copies in any weight format's GPU layout: for block formats the quants and
/// the scales of each part go to their regions of the `[quants | scales]` layout (f16 scales two
/// to a word that land on an odd block go through a small copy kernel). For fused projections:
/// QKV ([`linear_split`]) and gate/up ([`linear_swiglu`]). The copies are queued before the next
/// submit; the parts can be dropped afterwards.
pub async fn concat_rows(ctx: &GpuContext, name: &str, parts: &[&GpuTensor]) -> Result<GpuTensor> {
    const NAME: &str = "concat_rows";
    let Some(first) = parts.first() else {
        return Err(mismatch(
            NAME,
            format!("no tensors to concatenate into '{name}'"),
        ));
    };
    let dtype = first.dtype();
    let rank = first.shape().len();
    let cols = first.cols();
    for t in parts {
        let same = t.dtype() == dtype
            && t.shape().len() == rank
            && (rank == 1 || t.cols() == cols)
            && (rank == 1 || rank == 2);
        if !same {
            return Err(mismatch(
                NAME,
                format!(
                    "'{}' {:?} ({}) does not stack with '{}' {:?} ({}): all parts must be 2-D \
                     with one dtype and one column count (or 1-D f32 / i32)",
                    t.name(),
                    t.shape(),
                    t.dtype(),
                    first.name(),
                    first.shape(),
                    dtype
                ),
            ));
        }
    }
    let shape = if rank == 1 {
        if !matches!(dtype, DType::F32 | DType::I32) {
            return Err(mismatch(
                NAME,
                format!(
                    "1-D parts must be f32 or i32, '{}' is {dtype}",
                    first.name()
                ),
            ));
        }
        vec![parts.iter().map(|t| t.numel()).sum()]
    } else {
        vec![parts.iter().map(|t| t.rows()).sum(), cols]
    };
    let out = ctx.zeros(name, &shape, dtype)?;
    ctx.check_health()?;

    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pocketlm concat_rows"),
        });
    let words = |rows: usize| dtype.gpu_words(rows, if rank == 1 { 1 } else { cols });
    let word_count = |rows: usize| -> Result<u64> {
        words(rows)
            .map(|w| w as u64)
            .ok_or_else(|| mismatch(NAME, format!("{rows} rows of {cols} overflow")))
    };
    let part_rows = |t: &GpuTensor| if rank == 1 { t.numel() } else { t.rows() };
    if !dtype.is_quantized() {
        let mut offset = 0u64;
        for t in parts {
            let n = word_count(part_rows(t))?;
            encoder.copy_buffer_to_buffer(&t.buffer, 0, &out.buffer, 4 * offset, 4 * n);
            offset += n;
        }
    } else {
        let nb = cols / dtype.block_size();
        let qw = dtype.quant_words() as u64;
        let total_blocks = (shape[0] * nb) as u64;
        let dst_sb = total_blocks * qw;
        // Formats with one f16 scale per block, two to a word.
        let halves = dtype.scale_words(2) == 1;
        let per_block = dtype.scale_words(1) as u64;
        let mut boff = 0u64;
        for t in parts {
            let blocks = (t.rows() * nb) as u64;
            let src_sb = blocks * qw;
            encoder.copy_buffer_to_buffer(&t.buffer, 0, &out.buffer, 4 * boff * qw, 4 * src_sb);
            if !halves {
                encoder.copy_buffer_to_buffer(
                    &t.buffer,
                    4 * src_sb,
                    &out.buffer,
                    4 * (dst_sb + boff * per_block),
                    4 * blocks * per_block,
                );
            } else if boff.is_multiple_of(2) {
                // The last word's high half may be padding; a later part at an odd block
                // rewrites it.
                encoder.copy_buffer_to_buffer(
                    &t.buffer,
                    4 * src_sb,
                    &out.buffer,
                    4 * (dst_sb + boff / 2),
                    4 * blocks.div_ceil(2),
                );
            } else {
                let d0 = 2 * dst_sb + boff;
                let params = HalvesParams {
                    d0: dim(NAME, "scale offset", d0 as usize)?,
                    s0: dim(NAME, "scale offset", 2 * src_sb as usize)?,
                    count: dim(NAME, "blocks", blocks as usize)?,
                    words: dim(NAME, "words", ((d0 + blocks - 1) / 2 - d0 / 2 + 1) as usize)?,
                };
                const KERNEL: Kernel = Kernel::new(
                    "copy_halves",
                    COPY_HALVES_SRC,
                    "copy_halves",
                    Interface::new::<HalvesParams>(&[HALVES_SRC, HALVES_DST]),
                );
                let spec = Specialization::default().with("WG", super::WG);
                let wg = grid(ctx, NAME, u64::from(params.words.div_ceil(super::WG)))?;
                let binds = [(HALVES_SRC, &t.buffer), (HALVES_DST, &out.buffer)];
                let d = build(ctx, &KERNEL, &spec, &params, &binds, wg).await?;
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("pocketlm concat_rows"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
            boff += blocks;
        }
    }
    ctx.queue.submit([encoder.finish()]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shape's generated several-row code stores every sum of its MT activation rows × ROWS
    /// W rows exactly once, at t · ROWS + r, and each row's Σx² after them.
    #[test]
    fn several_row_code_puts_every_sum_once() {
        for m in 2..=SMALL_M_MAX_ROWS as u32 {
            let (mt, rows) = matvec_mt(m, 4, false);
            let src = several_rows_snippet(mt, rows);
            for t in 0..mt {
                for (r, lane) in ["x", "y", "z", "w"].iter().enumerate().take(rows as usize) {
                    let put = format!("red_in[{}] = sev_acc{t}.{lane};", t * rows + r as u32);
                    assert_eq!(src.matches(&put).count(), 1, "{mt}x{rows}: {put}\n{src}");
                }
                let ss = format!("red_in[min({}u, RED_N - 1u)] = sev_ss{t};", mt * rows + t);
                assert_eq!(src.matches(&ss).count(), 1, "{mt}x{rows}: {ss}");
            }
            assert_eq!(src.matches("red_in[").count() as u32, mt * (rows + 1));
        }
        assert!(!several_rows_snippet(1, 4).contains("red_in"));
    }
}
