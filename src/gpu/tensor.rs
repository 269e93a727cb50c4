//! Typed GPU tensors: a buffer plus the shape and element type the kernels check before use.

use std::sync::Arc;

use half::f16;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Held};
pub use crate::quant::DType;

/// A tensor resident in GPU memory. Cloning shares the buffer.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub(crate) buffer: wgpu::Buffer,
    name: String,
    shape: Vec<usize>,
    dtype: DType,
    held: Arc<Held>,
}

impl GpuTensor {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The innermost dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all but the innermost dimension.
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }

    /// Elements between the starts of consecutive rows in the buffer.
    pub fn row_stride(&self) -> usize {
        self.dtype.padded_row_len(self.cols())
    }

    pub fn size_bytes(&self) -> u64 {
        self.buffer.size()
    }

    /// The same buffer seen with another shape of as many elements (e.g. [tokens, heads · dim]
    /// as [tokens, heads, dim]). Formats whose rows are padded or blocked keep their row length.
    pub fn reshape(&self, shape: &[usize]) -> Result<GpuTensor> {
        let numel: usize = shape.iter().product();
        let same_rows = shape.last() == self.shape.last();
        if numel != self.numel() || !(same_rows || matches!(self.dtype, DType::F32 | DType::I32)) {
            return Err(Error::InvalidTensor {
                tensor: self.name.clone(),
                detail: format!(
                    "{:?} ({}) cannot be seen as {shape:?}",
                    self.shape, self.dtype
                ),
            });
        }
        Ok(GpuTensor {
            buffer: self.buffer.clone(),
            name: self.name.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            held: Arc::clone(&self.held),
        })
    }

    /// Frees the GPU memory now rather than when the last clone is dropped; using the tensor
    /// afterwards is a GPU validation error.
    pub fn destroy(&self) {
        self.buffer.destroy();
        self.held.release();
    }
}

/// Bytes a tensor of this shape and dtype occupies on the GPU (see [`crate::quant`] for the
/// layout); `None` on overflow or when a row is not a whole number of blocks.
fn storage_bytes(shape: &[usize], dtype: DType) -> Option<u64> {
    let cols = shape.last().copied().unwrap_or(1);
    let rows = shape[..shape.len().saturating_sub(1)]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let words = dtype.gpu_words(rows, cols)? as u64;
    // wgpu needs sizes that are non-zero multiples of 4.
    Some(words.checked_mul(4)?.max(4))
}

impl GpuContext {
    fn tensor_buffer(&self, name: &str, shape: &[usize], dtype: DType) -> Result<wgpu::Buffer> {
        let cols = shape.last().copied().unwrap_or(1);
        if !cols.is_multiple_of(dtype.block_size()) {
            return Err(Error::InvalidTensor {
                tensor: name.to_string(),
                detail: format!(
                    "rows of {cols} elements are not a whole number of {dtype} blocks of {}",
                    dtype.block_size()
                ),
            });
        }
        let bytes = storage_bytes(shape, dtype).ok_or_else(|| Error::InvalidTensor {
            tensor: name.to_string(),
            detail: format!("shape {shape:?} overflows the address space"),
        })?;
        let caps = self.capabilities();
        let limit = caps.max_storage_binding_bytes.min(caps.max_buffer_bytes);
        if bytes > limit {
            return Err(Error::TooLarge {
                tensor: name.to_string(),
                bytes,
                limit,
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A new tensor with every element zero.
    pub fn zeros(&self, name: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let buffer = self.tensor_buffer(name, shape, dtype)?;
        Ok(GpuTensor {
            held: Held::new(buffer.size()),
            buffer,
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads row-major `f32` data.
    pub fn upload_f32(&self, name: &str, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        self.upload_words(name, shape, DType::F32, data)
    }

    /// Uploads `i32` data (token ids, indices).
    pub fn upload_i32(&self, name: &str, shape: &[usize], data: &[i32]) -> Result<GpuTensor> {
        self.upload_words(name, shape, DType::I32, data)
    }

    /// Overwrites the start of an f32 tensor (queued before the next submit), as a model's
    /// earlier kernels or the host's inputs would.
    pub fn write_f32(&self, tensor: &GpuTensor, data: &[f32]) -> Result<()> {
        self.write_words(tensor, DType::F32, data)
    }

    /// Overwrites the start of an i32 tensor (token ids), queued before the next submit.
    pub fn write_i32(&self, tensor: &GpuTensor, data: &[i32]) -> Result<()> {
        self.write_words(tensor, DType::I32, data)
    }

    /// A new tensor of a one-word-per-element format holding `data`.
    fn upload_words<T: bytemuck::Pod>(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        data: &[T],
    ) -> Result<GpuTensor> {
        check_len(name, shape, data.len())?;
        let tensor = self.zeros(name, shape, dtype)?;
        self.write_words(&tensor, dtype, data)?;
        Ok(tensor)
    }

    fn write_words<T: bytemuck::Pod>(
        &self,
        tensor: &GpuTensor,
        dtype: DType,
        data: &[T],
    ) -> Result<()> {
        if tensor.dtype() != dtype || data.len() > tensor.numel() {
            return Err(Error::InvalidTensor {
                tensor: tensor.name().to_string(),
                detail: format!(
                    "{} {dtype} values do not fit this {} tensor of shape {:?}",
                    data.len(),
                    tensor.dtype(),
                    tensor.shape()
                ),
            });
        }
        if !data.is_empty() {
            self.queue
                .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Uploads row-major `f16` data, repacked into word-aligned rows.
    pub fn upload_f16(&self, name: &str, shape: &[usize], data: &[f16]) -> Result<GpuTensor> {
        check_len(name, shape, data.len())?;
        let tensor = self.zeros(name, shape, DType::F16)?;
        let cols = tensor.cols();
        let stride = tensor.row_stride();
        let mut packed: Vec<f16> = Vec::with_capacity(tensor.rows() * stride);
        if cols > 0 {
            for row in data.chunks(cols) {
                packed.extend_from_slice(row);
                packed.resize(packed.len() + stride - cols, f16::ZERO);
            }
        }
        if packed.len() % 2 == 1 {
            packed.push(f16::ZERO);
        }
        if !packed.is_empty() {
            self.queue
                .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(&packed));
        }
        Ok(tensor)
    }

    /// Uploads a tensor of any format from its bytes as GGUF (and safetensors, for the float
    /// formats) stores them: little-endian, row-major, blocks as in ggml.
    pub fn upload_gguf(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
    ) -> Result<GpuTensor> {
        let tensor = self.zeros(name, shape, dtype)?;
        let words = crate::quant::repack_tensor(dtype, tensor.rows(), tensor.cols(), bytes)
            .map_err(|e| match e {
                Error::InvalidTensor { detail, .. } => Error::InvalidTensor {
                    tensor: name.to_string(),
                    detail,
                },
                other => other,
            })?;
        if !words.is_empty() {
            self.queue
                .write_buffer(&tensor.buffer, 0, bytemuck::cast_slice(&words));
        }
        Ok(tensor)
    }

    /// Copies a tensor back to the host as `f32` (converting from its storage dtype).
    pub async fn read_f32(&self, tensor: &GpuTensor) -> Result<Vec<f32>> {
        let mut rec = self.recorder();
        let slot = rec.read(tensor);
        rec.submit_and_read().await?.f32(slot)
    }
}

fn check_len(name: &str, shape: &[usize], len: usize) -> Result<()> {
    let expected: usize = shape.iter().product();
    if expected != len {
        return Err(Error::InvalidTensor {
            tensor: name.to_string(),
            detail: format!("shape {shape:?} holds {expected} elements but {len} were given"),
        });
    }
    Ok(())
}

/// Decodes a plain-float tensor as stored on the GPU into row-major `f32`, dropping row padding;
/// `None` for quantized formats.
pub(crate) fn decode_f32(words: &[u32], shape: &[usize], dtype: DType) -> Option<Vec<f32>> {
    let numel: usize = shape.iter().product();
    let cols = shape.last().copied().unwrap_or(1);
    let half = |h: u16| match dtype {
        DType::BF16 => f32::from_bits(u32::from(h) << 16),
        _ => f16::from_bits(h).to_f32(),
    };
    match dtype {
        DType::F32 => Some(words[..numel].iter().map(|&w| f32::from_bits(w)).collect()),
        DType::F16 | DType::BF16 => {
            let halves: &[u16] = bytemuck::cast_slice(words);
            let stride = dtype.padded_row_len(cols);
            let mut out = Vec::with_capacity(numel);
            if let Some(rows) = numel.checked_div(cols) {
                for row in halves.chunks(stride).take(rows) {
                    out.extend(row[..cols].iter().map(|&h| half(h)));
                }
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_word_padded_per_row() {
        assert_eq!(storage_bytes(&[3, 5], DType::F32), Some(60));
        // f16 rows of 5 are stored as 6 halves: 3 rows × 12 bytes.
        assert_eq!(storage_bytes(&[3, 5], DType::F16), Some(36));
        assert_eq!(storage_bytes(&[1], DType::F16), Some(4));
        assert_eq!(storage_bytes(&[0, 7], DType::F32), Some(4));
        assert_eq!(storage_bytes(&[usize::MAX, 2], DType::F32), None);
    }

    #[test]
    fn decode_drops_row_padding() {
        let halves: Vec<f16> = [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        let words: Vec<u32> = bytemuck::cast_slice(&halves).to_vec();
        assert_eq!(
            decode_f32(&words, &[2, 3], DType::F16),
            Some(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        );
        let words: Vec<u32> = [1.5f32, -2.0].iter().map(|v| v.to_bits()).collect();
        assert_eq!(decode_f32(&words, &[2], DType::F32), Some(vec![1.5, -2.0]));
        let bf: Vec<u32> = vec![(0x3FC0u32 << 16) | 0xC000];
        assert_eq!(decode_f32(&bf, &[2], DType::BF16), Some(vec![-2.0, 1.5]));
        assert_eq!(decode_f32(&words, &[32], DType::Q8_0), None);
    }
}
