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
    /// Reduce through subgroup operations instead of workgroup memory.
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
    if spec.subgroups && kernel.uses_reduce && cfg!(target_arch = "wasm32") {
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
    s
}

type Key = (Kernel, Specialization);

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
        self.pipelines.lock().insert(key, pipeline.clone());
        Ok(pipeline)
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
