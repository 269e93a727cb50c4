//! GPU time of the real graph, from timestamp queries: while [`GpuContext::time_gpu`] is on, each
//! submit's compute pass is timed as a whole and, where the device allows timestamps inside a
//! pass (`timestamp-query-inside-passes`, native only), dispatch by dispatch. For `pocketlm bench`:
//! the timestamps are resolved and read back beside the submit's own work, so the graph is the
//! one the engine runs, with a few copies added after it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::gpu::recorder::Dispatch;
use crate::gpu::GpuContext;

/// What timestamps a device can take, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampSupport {
    None,
    /// The start and end of each compute pass.
    Passes,
    /// Also between the dispatches of a pass.
    Dispatches,
}

/// Timestamps per query set: wgpu's limit.
const MAX_QUERIES: usize = 4096;

/// GPU time per kind of dispatch, and of whole submits, summed since timing was turned on.
#[derive(Clone, Debug, Default)]
pub struct GpuTimes {
    /// Submits timed.
    pub submits: u64,
    /// Nanoseconds from the start of each timed pass to its end, summed.
    pub total_ns: f64,
    /// Per dispatch label: (dispatches, nanoseconds), where dispatches were timed one by one.
    pub per_label: BTreeMap<&'static str, (u64, f64)>,
}

impl GpuTimes {
    fn add(&mut self, labels: &[&'static str], ticks: &[u64], period_ns: f64) {
        let (Some(&first), Some(&last)) = (ticks.first(), ticks.last()) else {
            return;
        };
        self.submits += 1;
        self.total_ns += last.saturating_sub(first) as f64 * period_ns;
        if ticks.len() == labels.len() + 1 {
            for (label, w) in labels.iter().zip(ticks.windows(2)) {
                let e = self.per_label.entry(label).or_default();
                e.0 += 1;
                e.1 += w[1].saturating_sub(w[0]) as f64 * period_ns;
            }
        }
    }
}

/// The timing state of a context: off, or on and collecting into shared totals.
#[derive(Default)]
pub(crate) struct Timing {
    totals: Mutex<Option<Arc<Mutex<GpuTimes>>>>,
}

/// The queries of one submit: recorded into its command buffer, read once it is done.
pub(crate) struct SubmitTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
    /// The label of each dispatch where they are timed one by one (a timestamp before each and
    /// one after the last); none where only the pass is (its start and end).
    labels: Vec<&'static str>,
    totals: Arc<Mutex<GpuTimes>>,
}

impl GpuContext {
    /// Which timestamps this device takes.
    pub fn timestamp_support(&self) -> TimestampSupport {
        let f = self.device.features();
        if !f.contains(wgpu::Features::TIMESTAMP_QUERY) {
            TimestampSupport::None
        } else if f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
            TimestampSupport::Dispatches
        } else {
            TimestampSupport::Passes
        }
    }

    /// Starts timing every submit's compute pass on the GPU (nothing happens where the device
    /// takes no timestamps), returning `None`; or stops and returns what was timed, if timing
    /// was on. Stopping waits for the submitted work, so that every timed submit is counted.
    pub fn time_gpu(&self, on: bool) -> Option<GpuTimes> {
        let mut slot = self.timing.totals.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            if self.timestamp_support() != TimestampSupport::None {
                *slot = Some(Arc::default());
            }
            return None;
        }
        let totals = slot.take()?;
        drop(slot);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        });
        let times = totals.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some(times)
    }

    /// The timer of a submit of `dispatches`, while timing is on.
    pub(crate) fn submit_timer(&self, dispatches: &[Dispatch]) -> Option<SubmitTimer> {
        let totals = self
            .timing
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        if dispatches.is_empty() {
            return None;
        }
        let per_dispatch = self.timestamp_support() == TimestampSupport::Dispatches
            && dispatches.len() < MAX_QUERIES;
        let labels: Vec<_> = if per_dispatch {
            dispatches.iter().map(|d| d.label).collect()
        } else {
            Vec::new()
        };
        let count = SubmitTimer::queries(&labels);
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pocketlm timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let buffer = |usage, label| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(SubmitTimer {
            set,
            resolve: buffer(
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                "pocketlm timestamps resolved",
            ),
            read: buffer(
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                "pocketlm timestamps read",
            ),
            labels,
            totals,
        })
    }
}

impl SubmitTimer {
    /// Timestamps taken for `labels`: one before each dispatch and one after the last, or the
    /// pass's start and end.
    fn queries(labels: &[&'static str]) -> u32 {
        if labels.is_empty() {
            2
        } else {
            labels.len() as u32 + 1
        }
    }

    /// The pass's own timestamps where only passes are timed.
    pub(crate) fn pass_writes(&self) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        self.labels
            .is_empty()
            .then_some(wgpu::ComputePassTimestampWrites {
                query_set: &self.set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            })
    }

    /// Before dispatch `i` of the pass (and with `i` = their count, after the last).
    pub(crate) fn before_dispatch(&self, pass: &mut wgpu::ComputePass<'_>, i: usize) {
        if !self.labels.is_empty() {
            pass.write_timestamp(&self.set, i as u32);
        }
    }

    /// After the pass: the timestamps resolved and copied where the host can map them.
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let count = Self::queries(&self.labels);
        encoder.resolve_query_set(&self.set, 0..count, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.read, 0, count as u64 * 8);
    }

    /// After the submit: the timestamps are added to the totals once they are on the host.
    pub(crate) fn collect(self, period_ns: f32) {
        let read = self.read.clone();
        read.map_async(wgpu::MapMode::Read, .., move |r| {
            if r.is_ok() {
                let ticks = self
                    .read
                    .get_mapped_range(..)
                    .map(|v| bytemuck::pod_collect_to_vec::<u8, u64>(&v))
                    .unwrap_or_default();
                self.read.unmap();
                let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
                totals.add(&self.labels, &ticks, period_ns as f64);
            }
        });
    }
}
