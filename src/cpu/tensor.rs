//! Tensors in host memory for the CPU backend: each tensor's bytes exactly as the file stores
//! them (GGUF blocks, or safetensors' f32 / f16 / bf16), so the kernels dequantize inside their
//! dot products and a model takes the memory of its file.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::load::{check_plans, PlanCursor, StoredTensor, TensorPlan, TensorSink};
use crate::quant::DType;

/// A tensor's bytes in host memory, 8-byte aligned (rows of f32 and f16 can be read as such).
/// Cloning shares the bytes.
#[derive(Clone, Debug)]
pub struct HostTensor {
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    words: Arc<Vec<u64>>,
    len: usize,
}

impl HostTensor {
    /// A tensor of `dtype` holding `bytes` (whole blocks of the format).
    pub fn new(name: &str, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Self> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel.and_then(|n| dtype.bytes_for(n)) != Some(bytes.len()) {
            return Err(Error::InvalidTensor {
                tensor: name.into(),
                detail: format!(
                    "{} bytes of {dtype} do not hold shape {shape:?}",
                    bytes.len()
                ),
            });
        }
        let mut words = alloc_words(name, bytes.len())?;
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Ok(HostTensor {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            words: Arc::new(words),
            len: bytes.len(),
        })
    }

    /// An f32 tensor.
    pub fn from_f32(name: &str, shape: &[usize], values: &[f32]) -> Result<Self> {
        Self::new(name, shape, DType::F32, bytemuck::cast_slice(values))
    }

    /// The bytes, as the file stores them.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    /// The bytes of row `r` of a 2-D view ([rows, cols]).
    pub fn row_bytes(&self, r: usize) -> &[u8] {
        let per_row = self.dtype.bytes_for(self.cols()).unwrap_or(0);
        &self.bytes()[r * per_row..(r + 1) * per_row]
    }

    /// The values in f32 (dequantized when the format is quantized).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        crate::quant::dequantize_to_vec(self.dtype, self.bytes()).map_err(|e| match e {
            Error::InvalidTensor { detail, .. } => Error::InvalidTensor {
                tensor: self.name.clone(),
                detail,
            },
            other => other,
        })
    }
}

impl StoredTensor for HostTensor {
    fn name(&self) -> &str {
        &self.name
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn size_bytes(&self) -> u64 {
        self.len as u64
    }
}

/// Zeroed words for `bytes` bytes; an allocation that fails is a typed error, not an abort.
fn alloc_words(name: &str, bytes: usize) -> Result<Vec<u64>> {
    let n = bytes.div_ceil(8);
    let mut words = Vec::new();
    words.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        what: format!("tensor '{name}'"),
        bytes: bytes as u64,
    })?;
    words.resize(n, 0);
    Ok(words)
}

/// Receives a file's bytes in order and copies each tensor's into its own allocation.
pub struct HostSink {
    plans: Vec<TensorPlan>,
    buffers: Vec<Vec<u64>>,
    cursor: PlanCursor,
    /// Bytes of the current tensor received so far.
    filled: usize,
}

impl HostSink {
    /// Checks the plans and allocates every tensor, so a model larger than host memory allows
    /// is refused (with its size) before its data is read.
    pub fn new(plans: Vec<TensorPlan>) -> Result<Self> {
        let plans = check_plans(plans)?;
        let total: u64 = plans.iter().map(|p| p.bytes).sum();
        let limit = crate::cpu::max_model_bytes();
        if total > limit {
            return Err(Error::OutOfMemory {
                what: format!(
                    "a model of {total} bytes, above the {limit} bytes this build can address"
                ),
                bytes: total,
            });
        }
        let mut buffers = Vec::with_capacity(plans.len());
        for p in &plans {
            let bytes = usize::try_from(p.bytes).map_err(|_| Error::OutOfMemory {
                what: format!("tensor '{}'", p.name),
                bytes: p.bytes,
            })?;
            buffers.push(alloc_words(&p.name, bytes)?);
        }
        Ok(HostSink {
            plans,
            buffers,
            cursor: PlanCursor::default(),
            filled: 0,
        })
    }
}

impl TensorSink for HostSink {
    type Tensor = HostTensor;

    fn feed(&mut self, mut chunk: &[u8]) -> Result<()> {
        while let Some((i, piece, done)) = self.cursor.next(&self.plans, &mut chunk) {
            let dst = bytemuck::cast_slice_mut::<u64, u8>(&mut self.buffers[i]);
            dst[self.filled..self.filled + piece.len()].copy_from_slice(piece);
            self.filled = if done { 0 } else { self.filled + piece.len() };
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<HostTensor>> {
        self.cursor.finish(&self.plans)?;
        Ok(self
            .plans
            .into_iter()
            .zip(self.buffers)
            .map(|(p, words)| HostTensor {
                len: p.bytes as usize,
                name: p.name,
                shape: p.shape,
                dtype: p.dtype,
                words: Arc::new(words),
            })
            .collect())
    }
}
