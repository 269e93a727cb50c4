//! Device negotiation: find an adapter, decide the device profile, request exactly the features and
//! limits that profile needs, and keep watch for errors the GPU reports asynchronously.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::gpu::pipeline::PipelineCache;
use crate::gpu::recorder::StagingRing;

/// Which kernel variants a device runs.
///
/// `Full` has `shader-f16` and subgroups; `Baseline` has neither and WebGPU's default limits
/// (256 invocations per workgroup, 128 MiB storage bindings, 8 storage buffers per stage), which is
/// what every WebGPU implementation must offer. Both are always supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    Full,
    Baseline,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Full => "full",
            Profile::Baseline => "baseline",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller asks for. `Auto` takes everything the adapter offers; `Baseline` deliberately
/// restricts a richer adapter to the baseline profile (so that path can be tested anywhere);
/// `Full` fails unless the adapter offers f16 and subgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileRequest {
    #[default]
    Auto,
    Full,
    Baseline,
}

impl FromStr for ProfileRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(ProfileRequest::Auto),
            "full" => Ok(ProfileRequest::Full),
            "baseline" => Ok(ProfileRequest::Baseline),
            other => Err(Error::UnknownProfile(other.to_string())),
        }
    }
}

/// What the negotiated device can do, as the kernels see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_workgroup_storage_bytes: u32,
    pub max_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_stage: u32,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    /// The adapter is a CPU implementation (lavapipe, SwiftShader, a browser's fallback adapter),
    /// which runs a workgroup's invocations as SIMD lanes of one thread: kernels that give each
    /// invocation whole dot products beat ones that share a dot product over a workgroup.
    pub cpu: bool,
    /// The prefill GEMM keeps its workgroup tiles in f16 (products and sums stay f32): only
    /// where the device has `shader-f16`, and only when asked ([`GpuContext::with_f16_tiles`]).
    pub f16_tiles: bool,
    /// Context positions per chunk of attention's split over the context, in place of the
    /// default chunking, where a caller gives none ([`GpuContext::with_attention_chunk`]).
    pub attention_chunk: Option<u32>,
}

impl Capabilities {
    fn from_device(
        features: wgpu::Features,
        limits: &wgpu::Limits,
        info: &wgpu::AdapterInfo,
    ) -> Self {
        let subgroups = features.contains(wgpu::Features::SUBGROUP);
        Capabilities {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups,
            subgroup_min_size: if subgroups { info.subgroup_min_size } else { 0 },
            subgroup_max_size: if subgroups { info.subgroup_max_size } else { 0 },
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            cpu: info.device_type == wgpu::DeviceType::Cpu,
            f16_tiles: false,
            attention_chunk: None,
        }
    }
}

/// A human- and machine-readable description of the device a context runs on.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub profile: Profile,
    pub capabilities: Capabilities,
    /// Every feature the adapter offers (not only the ones requested).
    pub adapter_features: Vec<String>,
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.capabilities;
        writeln!(
            f,
            "adapter:   {} ({}, {})",
            self.adapter, self.backend, self.device_type
        )?;
        if !self.driver.is_empty() {
            writeln!(f, "driver:    {}", self.driver)?;
        }
        let extra = match (self.profile, c.f16, c.subgroups) {
            (Profile::Baseline, true, _) => " (with shader-f16)",
            (Profile::Baseline, _, true) => " (with subgroups)",
            _ => "",
        };
        writeln!(f, "profile:   {}{extra}", self.profile)?;
        let subgroups = if c.subgroups {
            format!(
                "yes (size {}..={})",
                c.subgroup_min_size, c.subgroup_max_size
            )
        } else {
            "no".to_string()
        };
        writeln!(
            f,
            "shader-f16: {}   subgroups: {}",
            yes_no(c.f16),
            subgroups
        )?;
        writeln!(
            f,
            "limits:    {} invocations/workgroup, {} KiB workgroup storage, {} storage buffers/stage,",
            c.max_invocations_per_workgroup,
            c.max_workgroup_storage_bytes / 1024,
            c.max_storage_buffers_per_stage
        )?;
        writeln!(
            f,
            "           {} MiB per storage binding, {} MiB per buffer, {} workgroups/dimension",
            c.max_storage_binding_bytes >> 20,
            c.max_buffer_bytes >> 20,
            c.max_workgroups_per_dimension
        )?;
        let kernels = match (c.cpu, c.f16_tiles) {
            (true, _) => "made for CPU adapters",
            (false, false) => "made for GPUs (prefill GEMM tiles: f32)",
            (false, true) => "made for GPUs (prefill GEMM tiles: f16)",
        };
        writeln!(f, "kernels:   {kernels}")?;
        if let Some(c) = c.attention_chunk {
            writeln!(f, "attention: chunks of {c} positions (--attention-chunk)")?;
        }
        write!(f, "adapter features: {}", self.adapter_features.join(", "))
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Errors the GPU reports outside any call (validation, out-of-memory, device loss) are kept here
/// and surface at the next submit or readback instead of panicking inside wgpu's callback.
#[derive(Default)]
pub(crate) struct Health {
    fault: Mutex<Option<Fault>>,
}

#[derive(Clone, Debug)]
enum Fault {
    Lost(String),
    Error(String),
}

impl Health {
    fn record(&self, fault: Fault) {
        let mut slot = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        // A lost device is the more important news; never overwrite it.
        if !matches!(*slot, Some(Fault::Lost(_))) {
            *slot = Some(fault);
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let mut slot = self.fault.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            None => Ok(()),
            Some(Fault::Lost(msg)) => Err(Error::DeviceLost(msg.clone())),
            Some(Fault::Error(msg)) => {
                let msg = msg.clone();
                *slot = None;
                Err(Error::Gpu(msg))
            }
        }
    }
}

/// Counters of GPU work, for benchmarks ("dispatches and submits per token").
#[derive(Default, Debug)]
pub struct GpuStats {
    pub submits: AtomicU64,
    pub dispatches: AtomicU64,
    pub readbacks: AtomicU64,
    /// Bytes copied back to the host by the readbacks.
    pub bytes_read: AtomicU64,
    /// Staging buffers created for readbacks (reused across submits, so this stops growing once
    /// a decode loop is under way).
    pub staging_buffers: AtomicU64,
    /// Nanoseconds the host spent waiting for submitted work and its readbacks (natively): the
    /// rest of a step's wall time is the host's own (encoding, submitting, sampling).
    pub wait_ns: AtomicU64,
}

impl GpuStats {
    /// Bytes read back so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Readback staging buffers created so far.
    pub fn staging_buffers(&self) -> u64 {
        self.staging_buffers.load(Ordering::Relaxed)
    }

    /// Time the host has spent waiting for the GPU so far (see [`GpuStats::wait_ns`]).
    pub fn waited(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.wait_ns.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.submits.load(Ordering::Relaxed),
            self.dispatches.load(Ordering::Relaxed),
            self.readbacks.load(Ordering::Relaxed),
        )
    }
}

/// An open GPU device with its queue, negotiated profile and compiled kernels.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) pipelines: PipelineCache,
    pub(crate) health: Arc<Health>,
    pub(crate) staging: StagingRing,
    pub(crate) timing: super::timing::Timing,
    pub stats: GpuStats,
    info: wgpu::AdapterInfo,
    adapter_features: wgpu::Features,
    caps: Capabilities,
    profile: Profile,
}

impl GpuContext {
    /// Opens the best adapter and negotiates a device for the requested profile.
    pub async fn new(request: ProfileRequest) -> Result<Self> {
        let instance = wgpu::Instance::new(instance_descriptor());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| Error::NoAdapter {
                hint: format!("{e}; {}", no_adapter_hint()),
            })?;
        Self::with_adapter(adapter, request).await
    }

    /// Negotiates a device on a given adapter.
    pub async fn with_adapter(adapter: wgpu::Adapter, request: ProfileRequest) -> Result<Self> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let full_features = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;

        let (features, limits) = match request {
            ProfileRequest::Baseline => (wgpu::Features::empty(), baseline_limits()),
            ProfileRequest::Full if !offered.contains(full_features) => {
                let mut missing = Vec::new();
                if !offered.contains(wgpu::Features::SHADER_F16) {
                    missing.push("shader-f16");
                }
                if !offered.contains(wgpu::Features::SUBGROUP) {
                    missing.push("subgroups");
                }
                return Err(Error::ProfileUnavailable {
                    adapter: info.name.clone(),
                    profile: "full",
                    missing: missing.join(" and "),
                });
            }
            // Take whatever of f16 and subgroups is offered, and every limit the adapter allows.
            ProfileRequest::Full | ProfileRequest::Auto => {
                (offered & full_features, adapter.limits())
            }
        };

        // Timestamps for `pocketlm bench` (GpuContext::time_gpu), natively where offered, on
        // either profile: no kernel uses them.
        #[cfg(not(target_arch = "wasm32"))]
        let features = features
            | (offered
                & (wgpu::Features::TIMESTAMP_QUERY
                    | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES));
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("pocketlm"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::DeviceRequest {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;

        let health = Arc::new(Health::default());
        {
            let health = health.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                health.record(Fault::Error(e.to_string()));
            }));
        }
        {
            let health = health.clone();
            device.set_device_lost_callback(move |reason, message| {
                health.record(Fault::Lost(format!("{reason:?}: {message}")));
            });
        }

        let device_features = device.features();
        let caps = Capabilities::from_device(device_features, &device.limits(), &info);
        let profile = if caps.f16 && caps.subgroups {
            Profile::Full
        } else {
            Profile::Baseline
        };
        Ok(GpuContext {
            device,
            queue,
            pipelines: PipelineCache::default(),
            health,
            staging: StagingRing::default(),
            timing: Default::default(),
            stats: GpuStats::default(),
            info,
            adapter_features: offered,
            caps,
            profile,
        })
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the adapter is a software one (lavapipe, SwiftShader, WARP): the CPU backend is
    /// faster than such a "GPU".
    pub fn is_software_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn report(&self) -> DeviceReport {
        DeviceReport {
            adapter: if self.info.name.is_empty() {
                // Browsers may withhold the adapter's description.
                "(name not disclosed)".to_string()
            } else {
                self.info.name.clone()
            },
            backend: self.info.backend.to_string(),
            device_type: format!("{:?}", self.info.device_type),
            driver: [self.info.driver.as_str(), self.info.driver_info.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            profile: self.profile,
            capabilities: self.caps.clone(),
            adapter_features: feature_names(self.adapter_features),
        }
    }

    /// Caps the workgroups per grid dimension that kernels use (never above the device's limit),
    /// so the 2-D grid path that large dispatches take can be exercised with small ones.
    pub fn with_grid_limit(mut self, limit: u32) -> Self {
        let c = &mut self.caps.max_workgroups_per_dimension;
        *c = (*c).min(limit.max(1));
        self
    }

    /// Chooses the kernels made for CPU implementations (see [`Capabilities::cpu`]) or those
    /// made for GPUs, whatever the adapter is: tests run both families on one driver.
    pub fn with_cpu_kernels(mut self, cpu: bool) -> Self {
        self.caps.cpu = cpu;
        self
    }

    /// Runs the prefill GEMM (the tiled matrix × matrix kernel of prompts over 16 tokens) with
    /// f16 workgroup tiles where the device has `shader-f16` (otherwise: no change). Each
    /// activation and decoded weight is then rounded once to f16 (activations scaled by a power
    /// of two per row first, so none leaves its range); products and sums stay f32. Off by
    /// default: on an NVIDIA H200 they made the GEMM alone up to 1.12× as fast but 128-token
    /// prefill 0.75–0.79× as fast (`pocketlm kernel-bench --rows 128` times both).
    pub fn with_f16_tiles(mut self, on: bool) -> Self {
        self.set_f16_tiles(on);
        self
    }

    /// [`Self::with_f16_tiles`] in place.
    pub fn set_f16_tiles(&mut self, on: bool) {
        self.caps.f16_tiles = on && self.caps.f16;
    }

    /// Splits attention over the context in chunks of `positions` (at least 1) in the graphs
    /// built from now on, instead of the default (chunks of at least 64 positions, enough to
    /// give a GPU about 256 workgroups at full context); `None` restores it. A tuning knob for
    /// measuring on a GPU (`pocketlm --attention-chunk`): the chunking changes the order of
    /// the softmax's sums, not what is computed. Chunks that would make the partial results
    /// larger than 32 MiB are doubled until they fit, as the default's are.
    pub fn with_attention_chunk(mut self, positions: Option<u32>) -> Self {
        self.caps.attention_chunk = positions.map(|p| p.max(1));
        self
    }

    /// Calls `notify` once when the device is lost (or destroyed), after recording the loss so
    /// that every later call fails with [`Error::DeviceLost`]. Replaces an earlier notifier.
    pub fn set_lost_notifier(&self, notify: impl FnOnce(String) + Send + 'static) {
        let health = self.health.clone();
        let notify = Mutex::new(Some(notify));
        self.device
            .set_device_lost_callback(move |reason, message| {
                let msg = format!("{reason:?}: {message}");
                health.record(Fault::Lost(msg.clone()));
                let f = notify.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(f) = f {
                    f(msg);
                }
            });
    }

    /// Fails if the GPU has reported an error or lost the device since the last check.
    pub fn check_health(&self) -> Result<()> {
        self.health.check()
    }
}

/// WebGPU's default limits: what every implementation offers, and what the baseline profile uses.
pub fn baseline_limits() -> wgpu::Limits {
    wgpu::Limits::default()
}

fn feature_names(features: wgpu::Features) -> Vec<String> {
    features
        .iter_names()
        .map(|(name, _)| name.to_ascii_lowercase().replace('_', "-"))
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
fn instance_descriptor() -> wgpu::InstanceDescriptor {
    // Vulkan/Metal/DX12; WGPU_BACKEND and friends still override this for debugging.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::PRIMARY;
    desc.with_env()
}

#[cfg(target_arch = "wasm32")]
fn instance_descriptor() -> wgpu::InstanceDescriptor {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    desc
}

#[cfg(not(target_arch = "wasm32"))]
fn no_adapter_hint() -> &'static str {
    "PocketLM needs a Vulkan, Metal or DX12 driver. On Debian/Ubuntu without a GPU, install a CPU \
     Vulkan driver with `apt-get install mesa-vulkan-drivers` (lavapipe), or point VK_ICD_FILENAMES \
     at SwiftShader's vk_swiftshader_icd.json (shipped with Debian's chromium package)"
}

#[cfg(target_arch = "wasm32")]
fn no_adapter_hint() -> &'static str {
    "this browser exposes no WebGPU adapter (navigator.gpu is missing or requestAdapter() returned \
     null). Use a browser with WebGPU enabled (Chrome/Edge 113+, Safari 26+, Firefox 141+ on Windows), \
     or start Chromium with --enable-unsafe-webgpu"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_requests_parse() {
        assert_eq!("".parse::<ProfileRequest>().unwrap(), ProfileRequest::Auto);
        assert_eq!(
            " Baseline ".parse::<ProfileRequest>().unwrap(),
            ProfileRequest::Baseline
        );
        assert_eq!(
            "full".parse::<ProfileRequest>().unwrap(),
            ProfileRequest::Full
        );
        let e = "fast".parse::<ProfileRequest>().unwrap_err();
        assert_eq!(e.code(), "unknown_profile");
    }

    #[test]
    fn baseline_limits_are_webgpu_defaults() {
        let l = baseline_limits();
        assert_eq!(l.max_compute_invocations_per_workgroup, 256);
        assert_eq!(l.max_storage_buffers_per_shader_stage, 8);
        assert_eq!(l.max_storage_buffer_binding_size, 128 << 20);
    }

    #[test]
    fn health_reports_errors_once_and_loss_forever() {
        let h = Health::default();
        assert!(h.check().is_ok());
        h.record(Fault::Error("oom".into()));
        assert_eq!(h.check().unwrap_err().code(), "gpu");
        assert!(h.check().is_ok());
        h.record(Fault::Lost("gone".into()));
        h.record(Fault::Error("later".into()));
        assert_eq!(h.check().unwrap_err().code(), "device_lost");
        assert_eq!(h.check().unwrap_err().code(), "device_lost");
    }
}
