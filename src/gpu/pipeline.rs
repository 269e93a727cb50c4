//! Compiled kernels, cached by kernel and specialization.
//!
//! A kernel's WGSL is specialised by a small generated prelude (`enable` lines and `const`
//! declarations) rather than by a template language, so every shader file is plain WGSL that both
//! naga and Tint read. Shared helpers (`shaders/common.wgsl`, and one of the two reduction
//! implementations) are appended by the prelude generator, and so are the kernel's bindings and
//! uniform structs, generated from its [`Interface`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Interface};

/// A WGSL source file and the entry point to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub name: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    /// Whether the kernel calls `workgroup_reduce` (then the profile's implementation is linked).
    pub uses_reduce: bool,
    /// Its parameters and buffers: the WGSL declarations are generated from it, and the bind
    /// group is ordered by it.
    pub interface: Interface,
}

impl Kernel {
    pub const fn new(
        name: &'static str,
        source: &'static str,
        entry: &'static str,
        interface: Interface,
    ) -> Kernel {
        Kernel {
            name,
            source,
            entry,
            uses_reduce: false,
            interface,
        }
    }

    /// The same kernel with the profile's `workgroup_reduce` linked.
    pub const fn reducing(self) -> Kernel {
        Kernel {
            uses_reduce: true,
            ..self
        }
    }

    /// The same source and interface with another entry point.
    pub const fn entry(self, name: &'static str, entry: &'static str) -> Kernel {
        Kernel {
            name,
            entry,
            ..self
        }
    }
}

/// Everything that changes the generated code of a kernel: the cache key together with the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Specialization {
    /// `const NAME: u32 = VALUE;` lines.
    pub consts: Vec<(&'static str, u32)>,
    /// The kernel may use subgroup operations (the device has them): a reducing kernel reduces
    /// through them instead of workgroup memory.
    pub subgroups: bool,
    /// The kernel uses the `f16` type.
    pub f16: bool,
    /// WGSL pieces placed between the shared helpers and the kernel's own source, in order
    /// (bindings or functions that only some variants of a kernel have).
    pub snippets: Vec<&'static str>,
}

impl Specialization {
    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.consts.push((name, value));
        self
    }

    pub fn snippet(mut self, source: &'static str) -> Self {
        self.snippets.push(source);
        self
    }
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const REDUCE_WORKGROUP: &str = include_str!("../../shaders/reduce_workgroup.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");

/// The complete WGSL module for a kernel under a specialization.
pub fn kernel_source(kernel: &Kernel, spec: &Specialization) -> String {
    let mut s = String::new();
    if spec.f16 {
        s.push_str("enable f16;\n");
    }
    // Tint (Chrome) requires the directive for subgroup builtins; naga rejects it and instead
    // relies on the device feature.
    if spec.subgroups && cfg!(target_arch = "wasm32") {
        s.push_str("enable subgroups;\n");
    }
    for (name, value) in &spec.consts {
        let _ = writeln!(s, "const {name}: u32 = {value}u;");
    }
    s.push_str(&kernel.interface.wgsl());
    s.push_str(COMMON);
    if kernel.uses_reduce {
        s.push_str(if spec.subgroups {
            REDUCE_SUBGROUP
        } else {
            REDUCE_WORKGROUP
        });
    }
    for snippet in &spec.snippets {
        s.push_str(snippet);
    }
    s.push_str(kernel.source);
    unroll(&s, &spec.consts)
}

/// Expands the loops marked for unrolling: a line
/// `for (var i = 0u; i < N; i++) { // unroll`, where N is a literal (`4u`) or a constant of the
/// prelude, up to its closing `}` on a line of its own, becomes N blocks `{ let i = 0u; … }`,
/// `{ let i = 1u; … }`, …, nested marked loops included.
///
/// Why: an array in function or private memory indexed by a loop counter is memory that CPU
/// drivers address lane by lane (SwiftShader gathers and scatters every access, a vec4 as four
/// gathers), while a constant index is one plain access, or a register; a GPU's driver may keep
/// an array indexed at run time anywhere in a kernel in memory for the whole kernel (the decode
/// matvec on an NVIDIA H200 ran 1.2-2.1x as fast without). The linear kernels made for CPU
/// adapters keep their per-invocation accumulators in such arrays, sized by constants of the
/// specialization; the GEMM's epilogue, the reductions and top-k's halving loop over them. With
/// the index a `let` of a literal, naga folds it into a constant (arithmetic on it stays an
/// expression of constants, which a driver's compiler folds).
///
/// A marked loop that is not of that form (another start or step, an unknown bound, a `break`
/// or `continue` in its body) is left as it is: it stays correct, only not unrolled.
pub fn unroll(src: &str, consts: &[(&str, u32)]) -> String {
    let lines: Vec<&str> = src.split_inclusive('\n').collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < lines.len() {
        match unroll_at(&lines, i, consts) {
            Some((expanded, next)) => {
                out.push_str(&expanded);
                i = next;
            }
            None => {
                out.push_str(lines[i]);
                i += 1;
            }
        }
    }
    out
}

/// The expansion of the marked loop starting at `lines[at]` and the index of the line after its
/// closing brace, or None if `lines[at]` does not start one that can be unrolled.
fn unroll_at(lines: &[&str], at: usize, consts: &[(&str, u32)]) -> Option<(String, usize)> {
    let head = lines[at].trim();
    let head = head.strip_suffix("// unroll")?.trim_end();
    let rest = head.strip_prefix("for (var ")?.strip_suffix(") {")?;
    let (var, rest) = rest.split_once(" = 0u; ")?;
    let (cond, step) = rest.split_once("; ")?;
    let bound = cond.strip_prefix(var)?.strip_prefix(" < ")?;
    if step != format!("{var}++") && step != format!("{var} += 1u") {
        return None;
    }
    let n = match bound.strip_suffix('u').and_then(|b| b.parse::<u32>().ok()) {
        Some(n) => n,
        None => consts.iter().find(|(name, _)| *name == bound)?.1,
    };
    // The body: up to the line that closes the loop's brace.
    let code = |l: &str| l.split("//").next().unwrap_or("").to_string();
    let mut depth = 1i32;
    let mut end = at + 1;
    while end < lines.len() {
        let c = code(lines[end]);
        depth += c.matches('{').count() as i32 - c.matches('}').count() as i32;
        if depth <= 0 {
            break;
        }
        end += 1;
    }
    if end >= lines.len() || depth != 0 || lines[end].trim() != "}" {
        return None;
    }
    let body = unroll(&lines[at + 1..end].concat(), consts);
    let has_word = |w: &str| {
        body.lines().any(|l| {
            code(l)
                .split(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .any(|t| t == w)
        })
    };
    if has_word("break") || has_word("continue") {
        return None;
    }
    let indent = &lines[at][..lines[at].len() - lines[at].trim_start().len()];
    let mut out = String::new();
    for k in 0..n {
        let _ = writeln!(out, "{indent}{{ let {var} = {k}u;");
        out.push_str(&body);
        let _ = writeln!(out, "{indent}}}");
    }
    Some((out, end + 1))
}

type Key = (Kernel, Specialization);

/// `POCKETLM_LOG_PIPELINES=1` prints each pipeline compiled, its size and its compile time (native
/// only): which kernels make a driver's compiler slow.
fn log_compiles() -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("POCKETLM_LOG_PIPELINES").is_some_and(|v| v != "0"))
    }
    #[cfg(target_arch = "wasm32")]
    false
}

#[derive(Default)]
pub struct PipelineCache {
    pipelines: Mutex<HashMap<Key, wgpu::ComputePipeline>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, wgpu::ComputePipeline>> {
        self.pipelines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl GpuContext {
    /// The compiled pipeline for a kernel, compiling it on first use. Compilation errors come back
    /// as [`Error::ShaderCompile`] (caught with an error scope, never as a panic).
    pub async fn pipeline(
        &self,
        kernel: &Kernel,
        spec: &Specialization,
    ) -> Result<wgpu::ComputePipeline> {
        let key = (*kernel, spec.clone());
        if let Some(p) = self.pipelines.lock().get(&key) {
            return Ok(p.clone());
        }
        let source = kernel_source(kernel, spec);
        let started = log_compiles().then(|| (std::time::Instant::now(), source.lines().count()));
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(err) = scope.pop().await {
            return Err(Error::ShaderCompile {
                kernel: format!("{} ({})", kernel.name, kernel.entry),
                message: err.to_string(),
            });
        }
        if let Some((t, lines)) = started {
            eprintln!(
                "pipeline {} {:?}: {} lines, {:.0} ms",
                kernel.name,
                spec.consts,
                lines,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        self.pipelines.lock().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Every kernel compiled on this context so far: its name, its entry point and the WGSL
    /// module it was compiled from (for checks of what the device was given), sorted.
    pub fn compiled_sources(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut all: Vec<_> = self
            .pipelines
            .lock()
            .keys()
            .map(|(k, spec)| (k.name, k.entry, kernel_source(k, spec)))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Kernel = Kernel {
        name: "k",
        source: "fn body() {}\n",
        entry: "main",
        uses_reduce: true,
        interface: Interface::NONE,
    };

    #[test]
    fn marked_loops_unroll_into_blocks_with_a_constant_index() {
        let src = "fn f() {
    for (var i = 0u; i < NR; i++) { // unroll
        for (var t = 0u; t < 2u; t++) { // unroll
            acc[i * 2u + t] += 1.0; // { braces in comments do not count
        }
    }
    for (var k = 0u; k < n; k++) { // unroll
        x += 1.0;
    }
    for (var j = 0u; j < 3u; j++) { // unroll
        if (j == 1u) {
            continue;
        }
    }
}
";
        let out = unroll(src, &[("NR", 2)]);
        // Two NR blocks of two t blocks each, in order.
        assert_eq!(out.matches("{ let i = ").count(), 2, "{out}");
        assert_eq!(out.matches("{ let t = ").count(), 4, "{out}");
        let order: Vec<usize> = ["let i = 0u", "let t = 0u", "let t = 1u", "let i = 1u"]
            .iter()
            .map(|p| out.find(p).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{out}");
        assert_eq!(out.matches("acc[i * 2u + t] += 1.0;").count(), 4);
        // An unknown bound and a loop with `continue` stay loops.
        assert!(out.contains("for (var k = 0u; k < n; k++) { // unroll"));
        assert!(out.contains("for (var j = 0u; j < 3u; j++) { // unroll"));
        // Braces balance, outside comments.
        let code: String = out.lines().map(|l| l.split("//").next().unwrap()).collect();
        assert_eq!(code.matches('{').count(), code.matches('}').count());
        // An unmarked source is unchanged.
        assert_eq!(unroll("fn g() {}\n", &[]), "fn g() {}\n");
    }

    #[test]
    fn prelude_precedes_helpers_and_kernel() {
        let spec = Specialization {
            f16: true,
            ..Default::default()
        }
        .with("WG", 256)
        .with("RED_N", 4);
        let src = kernel_source(&K, &spec);
        assert!(src.starts_with("enable f16;\nconst WG: u32 = 256u;\nconst RED_N: u32 = 4u;\n"));
        let (common, reduce, body) = (
            src.find("fn linear_workgroup").unwrap(),
            src.find("fn workgroup_reduce").unwrap(),
            src.find("fn body").unwrap(),
        );
        assert!(common < reduce && reduce < body);
        assert!(
            src.contains("red_scratch[r * WG + li] += "),
            "baseline reduction linked"
        );
    }

    #[test]
    fn subgroup_reduction_is_linked_only_when_asked() {
        let sub = kernel_source(
            &K,
            &Specialization {
                subgroups: true,
                ..Default::default()
            },
        );
        assert!(sub.contains("subgroupAdd"));
        // naga takes subgroups from the device feature and rejects the directive.
        assert!(!sub.contains("enable subgroups;"));
        let plain = kernel_source(
            &Kernel {
                uses_reduce: false,
                ..K
            },
            &Specialization::default(),
        );
        assert!(!plain.contains("workgroup_reduce") && !plain.contains("enable"));
    }

    crate::uniform! {
        struct SourceParams {
            n: u32,
        }
    }

    #[test]
    fn interface_is_declared_before_the_helpers_and_the_kernel() {
        use crate::gpu::Slot;
        const X: Slot = Slot::read("x", "f32");
        let kernel = Kernel::new(
            "k",
            "fn body() {}\n",
            "main",
            Interface::new::<SourceParams>(&[X]),
        );
        let src = kernel_source(&kernel, &Specialization::default().with("WG", 64));
        let decl = src
            .find("struct SourceParams {\n    n: u32,\n}\n")
            .expect("the params struct");
        let x = src
            .find("@group(0) @binding(1) var<storage, read> x: array<f32>;\n")
            .expect("x at binding 1");
        let p = src.find("@group(0) @binding(0) var<uniform> p: SourceParams;\n");
        let (common, body) = (
            src.find("fn linear_workgroup").unwrap(),
            src.find("fn body").unwrap(),
        );
        assert!(src.starts_with("const WG: u32 = 64u;\n"));
        assert!(decl < p.expect("p at binding 0") && p.unwrap() < x && x < common && common < body);
    }
}
