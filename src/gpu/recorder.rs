//! Recording GPU work: many dispatches into one command buffer, one submit, and asynchronous
//! readback that works both natively (by polling the device) and in the browser (where blocking
//! is impossible and the event loop resolves the mapping).

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::tensor::{decode_f32, GpuTensor};
use crate::gpu::timing::SubmitTimer;
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
    /// Bytes of weights the dispatch reads (see [`Dispatch::weight_bytes`]).
    pub(crate) weight_bytes: u64,
}

impl Dispatch {
    pub fn label(&self) -> &'static str {
        self.label
    }

    pub fn workgroups(&self) -> [u32; 3] {
        self.workgroups
    }

    /// Bytes of weights the dispatch reads: a linear layer's whole matrix, 0 for the kernels
    /// that read no weights. What a decode step's matrix-vector kernels are bound by, so the
    /// benchmarks turn their times into bandwidth.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// This dispatch, reading `bytes` of weights.
    pub(crate) fn reading_weights(mut self, bytes: u64) -> Self {
        self.weight_bytes = bytes;
        self
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

/// A copy between two tensors, encoded after the dispatches and before the readbacks.
struct PendingCopy {
    src: wgpu::Buffer,
    src_offset: u64,
    dst: wgpu::Buffer,
    dst_offset: u64,
    bytes: u64,
}

/// Collects dispatches, copies and readbacks; `submit`/`submit_and_read` encode them into a
/// single command buffer (one compute pass, then the copies, then the readback copies) and
/// submit it once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    dispatches: Vec<Dispatch>,
    copies: Vec<PendingCopy>,
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

/// How many idle staging buffers the context keeps for reuse.
const STAGING_KEPT: usize = 4;
/// The smallest staging buffer made: every small readback (a pick, the candidates) fits one.
const STAGING_MIN: u64 = 1024;

/// Staging buffers for readbacks, reused across submits: a submit takes the smallest idle buffer
/// that holds all its reads (one buffer per submit, the reads packed at mapping-aligned offsets)
/// and gives it back once its data is on the host. A step that is read back while the next one
/// is already submitted holds two; at most [`STAGING_KEPT`] are kept idle, so a decode loop
/// creates its buffers in its first steps and none per token after.
#[derive(Default)]
pub(crate) struct StagingRing {
    idle: Mutex<Vec<wgpu::Buffer>>,
}

impl StagingRing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<wgpu::Buffer>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle buffer of at least `bytes`, or a new one (counted in
    /// [`crate::gpu::GpuStats::staging_buffers`]) sized to the next power of two.
    fn take(&self, ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
        let mut idle = self.lock();
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.size() >= bytes)
            .min_by_key(|(_, b)| b.size())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return idle.swap_remove(i);
        }
        drop(idle);
        ctx.stats.staging_buffers.fetch_add(1, Ordering::Relaxed);
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pocketlm readback"),
            size: bytes.max(STAGING_MIN).next_power_of_two(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Returns an unmapped buffer for reuse; beyond [`STAGING_KEPT`] the smallest is let go.
    fn give(&self, buffer: wgpu::Buffer) {
        let mut idle = self.lock();
        idle.push(buffer);
        if idle.len() > STAGING_KEPT {
            if let Some((i, _)) = idle.iter().enumerate().min_by_key(|(_, b)| b.size()) {
                idle.swap_remove(i);
            }
        }
    }

    /// Idle buffers, for tests and diagnostics.
    pub(crate) fn idle(&self) -> usize {
        self.lock().len()
    }
}

impl GpuContext {
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            ctx: self,
            dispatches: Vec::new(),
            copies: Vec::new(),
            reads: Vec::new(),
        }
    }

    /// Staging buffers kept idle for the next readbacks.
    pub fn idle_staging_buffers(&self) -> usize {
        self.staging.idle()
    }
}

/// Offsets of the reads in a staging buffer: each at a multiple of [`wgpu::MAP_ALIGNMENT`].
fn staging_layout(reads: &[PendingRead]) -> (Vec<u64>, u64) {
    let mut offsets = Vec::with_capacity(reads.len());
    let mut end = 0u64;
    for r in reads {
        let at = end.next_multiple_of(wgpu::MAP_ALIGNMENT);
        offsets.push(at);
        end = at + r.bytes;
    }
    (offsets, end)
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
        self.dispatches.is_empty() && self.copies.is_empty() && self.reads.is_empty()
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

    /// Schedules a copy of `words` 4-byte words of `src`, from word `src_word`, into `dst` at
    /// word `dst_word`, after all recorded dispatches (and before the readbacks): e.g. a token
    /// the GPU picked into the token ids of the next step, which the host never sees first.
    pub fn copy_words(
        &mut self,
        src: &GpuTensor,
        src_word: usize,
        dst: &GpuTensor,
        dst_word: usize,
        words: usize,
    ) -> Result<&mut Self> {
        let bytes = words as u64 * 4;
        let (src_offset, dst_offset) = (src_word as u64 * 4, dst_word as u64 * 4);
        let fits = |offset: u64, t: &GpuTensor| {
            offset
                .checked_add(bytes)
                .is_some_and(|end| end <= t.size_bytes())
        };
        if !fits(src_offset, src) || !fits(dst_offset, dst) || src.buffer == dst.buffer {
            return Err(Error::ShapeMismatch {
                kernel: "copy",
                detail: format!(
                    "{words} words from word {src_word} of '{}' ({} bytes) to word {dst_word} of \
                     '{}' ({} bytes): out of range, or the same buffer",
                    src.name(),
                    src.size_bytes(),
                    dst.name(),
                    dst.size_bytes()
                ),
            });
        }
        self.copies.push(PendingCopy {
            src: src.buffer.clone(),
            src_offset,
            dst: dst.buffer.clone(),
            dst_offset,
            bytes,
        });
        Ok(self)
    }

    /// The command buffer, and the timer of its pass while the context times the GPU.
    fn encode(
        &self,
        staging: Option<(&wgpu::Buffer, &[u64])>,
    ) -> (wgpu::CommandBuffer, Option<SubmitTimer>) {
        let device = &self.ctx.device;
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pocketlm step"),
        });
        let timer = self.ctx.submit_timer(&self.dispatches);
        if !self.dispatches.is_empty() {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pocketlm kernels"),
                timestamp_writes: timer.as_ref().and_then(SubmitTimer::pass_writes),
            });
            for (i, d) in self.dispatches.iter().enumerate() {
                if let Some(t) = &timer {
                    t.before_dispatch(&mut pass, i);
                }
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                let [x, y, z] = d.workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
            if let Some(t) = &timer {
                t.before_dispatch(&mut pass, self.dispatches.len());
            }
        }
        if let Some(t) = &timer {
            t.resolve(&mut encoder);
        }
        for c in &self.copies {
            encoder.copy_buffer_to_buffer(&c.src, c.src_offset, &c.dst, c.dst_offset, c.bytes);
        }
        if let Some((dst, offsets)) = staging {
            for (read, &at) in self.reads.iter().zip(offsets) {
                encoder.copy_buffer_to_buffer(&read.source, 0, dst, at, read.bytes);
            }
        }
        (encoder.finish(), timer)
    }

    /// Submits a command buffer from [`Recorder::encode`], and starts reading its timestamps.
    fn submit_encoded(
        &self,
        (cmd, timer): (wgpu::CommandBuffer, Option<SubmitTimer>),
    ) -> wgpu::SubmissionIndex {
        let submission = self.ctx.queue.submit([cmd]);
        if let Some(t) = timer {
            t.collect(self.ctx.queue.get_timestamp_period());
        }
        submission
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
        self.submit_encoded(self.encode(None));
        self.count();
        Ok(())
    }

    /// Submits the recorded work and resolves once every scheduled read is on the host.
    pub async fn submit_and_read(self) -> Result<Readback> {
        self.submit_reading()?.wait().await
    }

    /// Submits the recorded work and starts mapping its reads, without waiting: the host may
    /// record and submit more work before [`PendingReadback::wait`] collects the data. The reads
    /// go to one staging buffer taken from the context's ring of reusable ones.
    pub fn submit_reading(self) -> Result<PendingReadback<'a>> {
        self.ctx.check_health()?;
        let (offsets, used) = staging_layout(&self.reads);
        let staging = (!self.reads.is_empty()).then(|| self.ctx.staging.take(self.ctx, used));
        let encoded = self.encode(staging.as_ref().map(|b| (b, offsets.as_slice())));
        let submission = self.submit_encoded(encoded);
        self.count();
        let receiver = staging.as_ref().map(|buf| {
            let (tx, rx) = futures_channel::oneshot::channel();
            buf.map_async(wgpu::MapMode::Read, 0..used, move |r| {
                let _ = tx.send(r);
            });
            rx
        });
        let reads = self
            .reads
            .into_iter()
            .zip(offsets)
            .map(|(r, at)| (at, r.bytes, r.shape, r.dtype))
            .collect();
        Ok(PendingReadback {
            ctx: self.ctx,
            staging,
            receiver,
            used,
            reads,
            submission,
        })
    }
}

/// Work submitted by [`Recorder::submit_reading`] whose reads are not on the host yet.
///
/// Dropping it without [`PendingReadback::wait`] is safe: its staging buffer, whose mapping may
/// still be pending, is then let go instead of going back to the ring.
pub struct PendingReadback<'a> {
    ctx: &'a GpuContext,
    staging: Option<wgpu::Buffer>,
    receiver:
        Option<futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
    used: u64,
    /// (offset in the staging buffer, bytes, shape, dtype) per read.
    reads: Vec<(u64, u64, Vec<usize>, DType)>,
    submission: wgpu::SubmissionIndex,
}

impl PendingReadback<'_> {
    /// Resolves once the submitted work is done and its reads are on the host. Natively this
    /// drives the device until that submission (not later ones) completes; in the browser the
    /// event loop resolves the mapping.
    pub async fn wait(self) -> Result<Readback> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let (started, stats) = (std::time::Instant::now(), &self.ctx.stats);
            let read = self.wait_inner().await;
            let waited = started.elapsed().as_nanos() as u64;
            stats.wait_ns.fetch_add(waited, Ordering::Relaxed);
            read
        }
        #[cfg(target_arch = "wasm32")]
        self.wait_inner().await
    }

    async fn wait_inner(mut self) -> Result<Readback> {
        self.ctx.wait_for_submission(self.submission.clone())?;
        let mut words = Vec::with_capacity(self.reads.len());
        if let (Some(buf), Some(rx)) = (self.staging.as_ref(), self.receiver.take()) {
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
            {
                let view = buf
                    .get_mapped_range(0..self.used)
                    .map_err(|e| Error::Readback(e.to_string()))?;
                for &(at, bytes, ..) in &self.reads {
                    let range = at as usize..(at + bytes) as usize;
                    words.push(bytemuck::pod_collect_to_vec::<u8, u32>(&view[range]));
                }
            }
            buf.unmap();
            if let Some(buf) = self.staging.take() {
                self.ctx.staging.give(buf);
            }
        }
        // Errors raised by the submitted work (validation, out of memory) surface here.
        self.ctx.check_health()?;
        Ok(Readback {
            words,
            shapes: self
                .reads
                .drain(..)
                .map(|(_, _, shape, dtype)| (shape, dtype))
                .collect(),
        })
    }
}

impl GpuContext {
    /// Natively, drives the device until `submission` and the mappings it completes are done;
    /// in the browser the event loop does this, so there is nothing to do.
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_for_submission(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map(|_| ())
            .map_err(|e| Error::Readback(e.to_string()))
    }

    #[cfg(target_arch = "wasm32")]
    fn wait_for_submission(&self, _submission: wgpu::SubmissionIndex) -> Result<()> {
        Ok(())
    }
}
