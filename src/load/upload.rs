//! Streaming a model file's tensor data into GPU memory as it arrives.
//!
//! The file's bytes are fed in order (from a download, a file, or JavaScript); the uploader
//! skips what is not tensor data, cuts each tensor into pieces at block boundaries, repacks each
//! piece into the GPU layout and writes it to the tensor's buffer. Memory held on the host is the
//! piece budget (plus the chunk being fed), never a tensor or a file.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::quant::{quant_offset, repack_blocks, repack_tensor, scale_offset};

/// Where one tensor's bytes are in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    pub dtype: DType,
    /// Row-major, innermost last.
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte in the stream.
    pub offset: u64,
    /// Bytes as stored in the file.
    pub bytes: u64,
}

impl TensorPlan {
    fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The piece size granule: pieces start and end on multiples of this many bytes (or at the
    /// tensor's end), so each lands on whole words of the GPU layout.
    fn unit(&self) -> usize {
        match self.dtype {
            // Two blocks: formats with two f16 scales per word need even block starts.
            d if d.is_quantized() => 2 * d.block_bytes(),
            DType::F16 | DType::BF16 if self.cols() % 2 == 1 => 2 * self.cols(),
            _ => 4,
        }
    }
}

/// The name of part `i` of a tensor too large for one binding (see [`split_rows`]).
pub fn part_name(name: &str, i: usize) -> String {
    format!("{name}#{i}")
}

/// A 2-D tensor whose GPU layout exceeds `limit` bytes becomes row ranges that each fit, named
/// by [`part_name`] (a 262,144-token embedding table in Q8_0 is 178 MB, above the 128 MiB a
/// storage binding may hold by default): each part is its own tensor with its own GPU layout,
/// and a kernel that reads the whole table runs once per part. Anything else is kept as it is
/// (allocation then says what does not fit).
fn split_rows(p: TensorPlan, limit: u64) -> Vec<TensorPlan> {
    let (rows, cols) = match *p.shape.as_slice() {
        [rows, cols] => (rows, cols),
        _ => return vec![p],
    };
    let gpu = |r: usize| p.dtype.gpu_words(r, cols).map(|w| w as u64 * 4);
    let row_file = p.dtype.bytes_for(cols).unwrap_or(0) as u64;
    let fits = |r: usize| gpu(r).is_some_and(|b| b <= limit);
    if fits(rows) || !fits(1) || row_file == 0 || p.bytes != row_file * rows as u64 {
        return vec![p];
    }
    // The most rows that fit (gpu words grow by at most one word per row beyond the linear part).
    let per_row = gpu(1).unwrap_or(u64::MAX).max(1);
    let mut chunk = ((limit / per_row) as usize).clamp(1, rows);
    while chunk > 1 && !fits(chunk) {
        chunk -= 1;
    }
    (0..rows)
        .step_by(chunk)
        .enumerate()
        .map(|(i, r0)| {
            let n = chunk.min(rows - r0);
            TensorPlan {
                name: part_name(&p.name, i),
                dtype: p.dtype,
                shape: vec![n, cols],
                offset: p.offset + r0 as u64 * row_file,
                bytes: n as u64 * row_file,
            }
        })
        .collect()
}

/// Sorts `plans` by offset and checks that no two overlap and that each one's bytes hold its
/// shape.
pub(crate) fn check_plans(mut plans: Vec<TensorPlan>) -> Result<Vec<TensorPlan>> {
    plans.sort_by_key(|p| p.offset);
    for pair in plans.windows(2) {
        if pair[0].offset + pair[0].bytes > pair[1].offset {
            return Err(Error::InvalidTensor {
                tensor: pair[1].name.clone(),
                detail: format!("its data overlaps tensor '{}'", pair[0].name),
            });
        }
    }
    for p in &plans {
        let expected = p
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| p.dtype.bytes_for(n));
        if expected.map(|e| e as u64) != Some(p.bytes) {
            return Err(Error::InvalidTensor {
                tensor: p.name.clone(),
                detail: format!(
                    "{} bytes of {} do not hold shape {:?}",
                    p.bytes, p.dtype, p.shape
                ),
            });
        }
    }
    Ok(plans)
}

/// Where a file's byte stream stands against its tensor plans (sorted by offset): the plan
/// receiving bytes and the stream offset of the next byte. Every sink walks the stream with it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PlanCursor {
    /// The plan receiving bytes.
    pub current: usize,
    /// Absolute stream offset of the next byte fed.
    pub pos: u64,
}

impl PlanCursor {
    /// The next piece of tensor data at the start of `chunk`, which it consumes: the plan's
    /// index, its bytes, and whether they complete the tensor. What lies between tensors
    /// (header, padding, unlisted data) and after the last one is skipped; `None` once `chunk`
    /// is used up.
    pub fn next<'c>(
        &mut self,
        plans: &[TensorPlan],
        chunk: &mut &'c [u8],
    ) -> Option<(usize, &'c [u8], bool)> {
        while !chunk.is_empty() {
            let Some(plan) = plans.get(self.current) else {
                self.pos += chunk.len() as u64;
                *chunk = &[];
                return None;
            };
            if self.pos < plan.offset {
                let skip = (plan.offset - self.pos).min(chunk.len() as u64) as usize;
                *chunk = &chunk[skip..];
                self.pos += skip as u64;
                continue;
            }
            let end = plan.offset + plan.bytes;
            let n = (end - self.pos).min(chunk.len() as u64) as usize;
            let (piece, rest) = chunk.split_at(n);
            *chunk = rest;
            self.pos += n as u64;
            let i = self.current;
            let done = self.pos == end;
            if done {
                self.current += 1;
            }
            return Some((i, piece, done));
        }
        None
    }

    /// An error when the stream ended before every tensor's bytes.
    pub fn finish(&self, plans: &[TensorPlan]) -> Result<()> {
        match plans.get(self.current) {
            Some(plan) => Err(Error::InvalidTensor {
                tensor: plan.name.clone(),
                detail: format!(
                    "the data ended at byte {} but the tensor's bytes run to {}",
                    self.pos,
                    plan.offset + plan.bytes
                ),
            }),
            None => Ok(()),
        }
    }
}

/// Default host memory for pieces in flight.
pub const DEFAULT_PIECE_BUDGET: usize = 4 << 20;

/// Receives a file's bytes in order and uploads its tensors. See the module docs.
pub struct StreamUploader<'a> {
    ctx: &'a GpuContext,
    plans: Vec<TensorPlan>,
    tensors: Vec<GpuTensor>,
    cursor: PlanCursor,
    /// Bytes of the current tensor not yet uploaded, starting at `pending_at` within it.
    pending: Vec<u8>,
    pending_at: u64,
    piece: usize,
}

impl<'a> StreamUploader<'a> {
    /// Allocates every tensor (so a model too large for the device fails here, before any data
    /// is downloaded) and prepares to receive the stream from offset 0. `piece_budget` bounds
    /// the host memory used for repacking.
    pub fn new(ctx: &'a GpuContext, plans: Vec<TensorPlan>, piece_budget: usize) -> Result<Self> {
        Self::with_binding_limit(ctx, plans, piece_budget, None)
    }

    /// As [`StreamUploader::new`], splitting matrices larger than `max_binding_bytes` (at most
    /// the adapter's binding limit, which is the default) into row ranges.
    pub fn with_binding_limit(
        ctx: &'a GpuContext,
        plans: Vec<TensorPlan>,
        piece_budget: usize,
        max_binding_bytes: Option<u64>,
    ) -> Result<Self> {
        let caps = ctx.capabilities();
        let adapter = caps.max_storage_binding_bytes.min(caps.max_buffer_bytes);
        let limit = max_binding_bytes.map_or(adapter, |m| m.min(adapter));
        let plans: Vec<TensorPlan> = plans
            .into_iter()
            .flat_map(|p| split_rows(p, limit))
            .collect();
        let plans = check_plans(plans)?;
        let mut tensors = Vec::with_capacity(plans.len());
        for p in &plans {
            tensors.push(ctx.zeros(&p.name, &p.shape, p.dtype)?);
        }
        Ok(StreamUploader {
            ctx,
            plans,
            tensors,
            cursor: PlanCursor::default(),
            pending: Vec::new(),
            pending_at: 0,
            piece: piece_budget.max(1),
        })
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.cursor.pos
    }

    /// Bytes of GPU memory the tensors take.
    pub fn gpu_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size_bytes()).sum()
    }

    /// Whether every tensor has all its bytes.
    pub fn is_complete(&self) -> bool {
        self.cursor.current >= self.plans.len()
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<()> {
        while let Some((i, piece, done)) = self.cursor.next(&self.plans, &mut chunk) {
            self.pending.extend_from_slice(piece);
            self.flush(i, done)?;
            if done {
                self.pending_at = 0;
            }
        }
        Ok(())
    }

    /// Uploads whole units of the pending bytes once there are a piece's worth (or all of them
    /// when the tensor is complete).
    fn flush(&mut self, i: usize, tensor_done: bool) -> Result<()> {
        let plan = &self.plans[i];
        let unit = plan.unit();
        let piece = (self.piece / unit).max(1) * unit;
        while self.pending.len() >= piece || (tensor_done && !self.pending.is_empty()) {
            let n = if self.pending.len() >= piece {
                piece
            } else {
                self.pending.len()
            };
            self.write_piece(i, self.pending_at, n)?;
            self.pending.drain(..n);
            self.pending_at += n as u64;
        }
        Ok(())
    }

    /// Repacks and writes `len` pending bytes that start `at` bytes into tensor `i`.
    fn write_piece(&self, i: usize, at: u64, len: usize) -> Result<()> {
        let plan = &self.plans[i];
        let tensor = &self.tensors[i];
        let bytes = &self.pending[..len];
        let queue = &self.ctx.queue;
        let rename = |e: Error| match e {
            Error::InvalidTensor { detail, .. } => Error::InvalidTensor {
                tensor: plan.name.clone(),
                detail,
            },
            other => other,
        };
        match plan.dtype {
            d if d.is_quantized() => {
                let first = (at / d.block_bytes() as u64) as usize;
                let total = (plan.bytes / d.block_bytes() as u64) as usize;
                let packed = repack_blocks(d, bytes).map_err(rename)?;
                let q = quant_offset(d, first) as u64 * 4;
                queue.write_buffer(&tensor.buffer, q, bytemuck::cast_slice(&packed.quants));
                let s =
                    scale_offset(d, total, first).expect("pieces start on even blocks") as u64 * 4;
                queue.write_buffer(&tensor.buffer, s, bytemuck::cast_slice(&packed.scales));
            }
            DType::F16 | DType::BF16 if plan.cols() % 2 == 1 => {
                let cols = plan.cols();
                let rows = len / (2 * cols);
                let words = repack_tensor(plan.dtype, rows, cols, bytes).map_err(rename)?;
                let first_row = at / (2 * cols as u64);
                let dst = first_row * plan.dtype.padded_row_len(cols) as u64 * 2;
                queue.write_buffer(&tensor.buffer, dst, bytemuck::cast_slice(&words));
            }
            _ => {
                // Plain formats are stored as in the file; the tail of a tensor whose size is not
                // a multiple of 4 is zero-padded to a whole word.
                if len.is_multiple_of(4) {
                    queue.write_buffer(&tensor.buffer, at, bytes);
                } else {
                    let mut padded = bytes.to_vec();
                    padded.resize(len.div_ceil(4) * 4, 0);
                    queue.write_buffer(&tensor.buffer, at, &padded);
                }
            }
        }
        Ok(())
    }

    /// The uploaded tensors, in plan order by offset; an error when the stream ended early.
    pub fn finish(mut self) -> Result<Vec<GpuTensor>> {
        self.cursor.finish(&self.plans)?;
        Ok(std::mem::take(&mut self.tensors))
    }
}

impl crate::load::TensorSink for StreamUploader<'_> {
    type Tensor = GpuTensor;

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        StreamUploader::feed(self, chunk)
    }

    fn finish(self) -> Result<Vec<GpuTensor>> {
        StreamUploader::finish(self)
    }
}

/// A load that does not finish (an error, a truncated stream, an abort) frees the GPU memory it
/// allocated at once: in the browser, dropping a buffer alone waits for garbage collection.
impl Drop for StreamUploader<'_> {
    fn drop(&mut self) {
        for t in &self.tensors {
            t.destroy();
        }
    }
}
