//! Recording GPU work: many dispatches into one command buffer, one submit, and asynchronous
//! readback that works both natively (by polling the device) and in the browser (where blocking
//! is impossible and the event loop resolves the mapping).

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::gpu::tensor::{decode_f32, GpuTensor};
use crate::gpu::{DType, GpuContext};

/// One kernel launch with everything bound: built once (at load time for a model), recorded any
/// number of times.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub(crate) label: &'static str,
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind_group: wgpu::BindGroup,
    pub(crate) workgroups: [u32; 3],
    /// The parameter uniform the bind group holds.
    pub(crate) _uniform: std::sync::Arc<crate::gpu::Held>,
}

impl Dispatch {
    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }
}

/// Handle to a readback scheduled on a [`Recorder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSlot(usize);

struct PendingRead {
    source: wgpu::Buffer,
    bytes: u64,
    shape: Vec<usize>,
    dtype: DType,
}

/// Collects dispatches and readbacks; `submit`/`submit_and_read` encode them into a single command
/// buffer (one compute pass, then the copies) and submit it once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    dispatches: Vec<Dispatch>,
    reads: Vec<PendingRead>,
}

/// The data read back by [`Recorder::submit_and_read`], as `u32` words (so any 4-byte type can be
/// viewed without alignment trouble).
#[derive(Debug)]
pub struct Readback {
    words: Vec<Vec<u32>>,
    shapes: Vec<(Vec<usize>, DType)>,
}

impl Readback {
    pub fn words(&self, slot: ReadSlot) -> &[u32] {
        &self.words[slot.0]
    }

    /// The tensor's values as row-major `f32`; an error for quantized tensors.
    pub fn f32(&self, slot: ReadSlot) -> Result<Vec<f32>> {
        let (shape, dtype) = &self.shapes[slot.0];
        decode_f32(&self.words[slot.0], shape, *dtype).ok_or_else(|| Error::UnsupportedDType {
            kernel: "readback",
            tensor: format!("#{}", slot.0),
            dtype: *dtype,
            expected: "f32, f16 or bf16 (quantized tensors are not read back as floats)",
        })
    }
}

impl GpuContext {
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            ctx: self,
            dispatches: Vec::new(),
            reads: Vec::new(),
        }
    }
}

impl<'a> Recorder<'a> {
    pub fn dispatch(&mut self, d: &Dispatch) -> &mut Self {
        self.dispatches.push(d.clone());
        self
    }

    pub fn dispatch_all<'d>(&mut self, ds: impl IntoIterator<Item = &'d Dispatch>) -> &mut Self {
        self.dispatches.extend(ds.into_iter().cloned());
        self
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty() && self.reads.is_empty()
    }

    /// Schedules a copy of `tensor` (after all recorded dispatches) for reading back.
    pub fn read(&mut self, tensor: &GpuTensor) -> ReadSlot {
        self.reads.push(PendingRead {
            source: tensor.buffer.clone(),
            bytes: tensor.size_bytes(),
            shape: tensor.shape().to_vec(),
            dtype: tensor.dtype(),
        });
        ReadSlot(self.reads.len() - 1)
    }

    fn encode(&self, staging: &[wgpu::Buffer]) -> wgpu::CommandBuffer {
        let device = &self.ctx.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pocketlm step"),
        });
        if !self.dispatches.is_empty() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pocketlm kernels"),
                timestamp_writes: None,
            });
            for d in &self.dispatches {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        for (read, dst) in self.reads.iter().zip(staging) {
            encoder.copy_buffer_to_buffer(&read.source, 0, dst, 0, read.bytes);
        }
        encoder.finish()
    }

    fn count(&self) {
        let stats = &self.ctx.stats;
        stats.submits.fetch_add(1, Ordering::Relaxed);
        stats
            .dispatches
            .fetch_add(self.dispatches.len() as u64, Ordering::Relaxed);
        stats
            .readbacks
            .fetch_add(self.reads.len() as u64, Ordering::Relaxed);
        let bytes: u64 = self.reads.iter().map(|r| r.bytes).sum();
        stats.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Submits the recorded work without waiting for it.
    pub fn submit(self) -> Result<()> {
        self.ctx.check_health()?;
        let cmd = self.encode(&[]);
        self.ctx.queue.submit([cmd]);
        self.count();
        Ok(())
    }

    /// Submits the recorded work and resolves once every scheduled read is on the host.
    pub async fn submit_and_read(self) -> Result<Readback> {
        self.ctx.check_health()?;
        let device = &self.ctx.device;
        let staging: Vec<wgpu::Buffer> = self
            .reads
            .iter()
            .map(|r| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("pocketlm readback"),
                    size: r.bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let cmd = self.encode(&staging);
        self.ctx.queue.submit([cmd]);
        self.count();

        let mut receivers = Vec::with_capacity(staging.len());
        for buf in &staging {
            let (tx, rx) = futures_channel::oneshot::channel();
            buf.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
            receivers.push(rx);
        }
        self.ctx.wait_for_mapping()?;

        let mut words = Vec::with_capacity(staging.len());
        for (buf, rx) in staging.iter().zip(receivers) {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.ctx.check_health()?;
                    return Err(Error::Readback(e.to_string()));
                }
                Err(_) => {
                    self.ctx.check_health()?;
                    return Err(Error::Readback(
                        "the mapping callback was dropped before it ran".into(),
                    ));
                }
            }
            let view = buf
                .get_mapped_range(..)
                .map_err(|e| Error::Readback(e.to_string()))?;
            words.push(bytemuck::pod_collect_to_vec::<u8, u32>(&view));
            drop(view);
            buf.unmap();
        }
        // Errors raised by the submitted work (validation, out of memory) surface here.
        self.ctx.check_health()?;
        Ok(Readback {
            words,
            shapes: self.reads.into_iter().map(|r| (r.shape, r.dtype)).collect(),
        })
    }
}

impl GpuContext {
    /// Natively, drives the device until queued mappings complete; in the browser the event loop
    /// does this, so there is nothing to do.
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_for_mapping(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Readback(e.to_string()))
    }

    #[cfg(target_arch = "wasm32")]
    fn wait_for_mapping(&self) -> Result<()> {
        Ok(())
    }
}
