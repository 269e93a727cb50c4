//! Model files of either format into GPU memory: the header decides the format, the tensors it
//! lists become the upload plan, and [`load_stream`] does the rest.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::formats::{
    next_fetch_len, GgufHeader, ModelFiles, Parsed, SafetensorsHeader, TensorInfo,
};
use crate::gpu::{GpuContext, GpuTensor};
use crate::load::{load_stream, ByteSource, HeaderStep, LoadOptions, TensorPlan};

/// The parsed header of one file, in whichever format it is.
#[derive(Clone, Debug)]
pub enum FileHeader {
    Gguf(GgufHeader),
    Safetensors(SafetensorsHeader),
}

impl FileHeader {
    /// The file's tensors (`file_index` is the file's place in a multi-file model).
    pub fn tensor_infos(&self, file_index: usize) -> Vec<TensorInfo> {
        match self {
            FileHeader::Gguf(h) => h.tensor_infos(file_index),
            FileHeader::Safetensors(h) => h.tensor_infos(file_index),
        }
    }

    /// The one-file model this header describes.
    pub fn into_model_files(self) -> Result<ModelFiles> {
        match self {
            FileHeader::Gguf(h) => h.into_model_files(),
            FileHeader::Safetensors(h) => h.into_model_files(),
        }
    }
}

/// Parses a prefix of a model file of either format (GGUF starts with its magic; anything else
/// is read as safetensors, whose errors then say what was expected). Asks for geometrically
/// growing prefixes, so a long header (a large vocabulary) is parsed a bounded number of times.
pub fn parse_header(
    prefix: &[u8],
    file_size: Option<u64>,
    name: &str,
) -> Result<HeaderStep<FileHeader>> {
    if prefix.len() < 4 && file_size.is_none_or(|s| s >= 4) {
        return Ok(HeaderStep::NeedMore(next_fetch_len(prefix.len(), 8)));
    }
    // safetensors: an 8-byte length, then a JSON object.
    if !prefix.starts_with(b"GGUF") && prefix.len() > 8 && prefix[8] != b'{' {
        return Err(Error::BadMagic {
            file: name.to_string(),
            format: "model",
            found: format!("{:?}", String::from_utf8_lossy(&prefix[..8])),
            expected: "\"GGUF\" (GGUF) or an 8-byte length and '{' (safetensors)",
        });
    }
    if prefix.starts_with(b"GGUF") {
        step(
            GgufHeader::parse(prefix, file_size, name)?,
            FileHeader::Gguf,
            prefix.len(),
        )
    } else {
        let parsed = SafetensorsHeader::parse(prefix, file_size, name)?;
        step(parsed, FileHeader::Safetensors, prefix.len())
    }
}

fn step<T>(
    parsed: Parsed<T>,
    wrap: fn(T) -> FileHeader,
    have: usize,
) -> Result<HeaderStep<FileHeader>> {
    Ok(match parsed {
        Parsed::Complete { header, .. } => {
            let header = wrap(header);
            let plans = header.tensor_infos(0).into_iter().map(plan).collect();
            HeaderStep::Done(header, plans)
        }
        Parsed::NeedMore { at_least } => HeaderStep::NeedMore(next_fetch_len(have, at_least)),
    })
}

fn plan(t: TensorInfo) -> TensorPlan {
    TensorPlan {
        name: t.name,
        dtype: t.dtype,
        shape: t.shape,
        offset: t.offset,
        bytes: t.bytes,
    }
}

/// Reads just enough of `source` to parse its header (`pocketlm info`: never the weights).
pub async fn read_header<S: ByteSource>(source: &mut S) -> Result<FileHeader> {
    let name = source.name().to_string();
    let total = source.total();
    let mut head = Vec::new();
    let mut needed = 0;
    loop {
        if head.len() >= needed {
            match parse_header(&head, total, &name)? {
                HeaderStep::Done(h, _) => return Ok(h),
                HeaderStep::NeedMore(n) => needed = n,
            }
        }
        match source.next_chunk().await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => {
                return match parse_header(&head, Some(head.len() as u64), &name)? {
                    HeaderStep::Done(h, _) => Ok(h),
                    HeaderStep::NeedMore(_) => Err(Error::FileTruncated {
                        file: name,
                        detail: format!("it ends after {} bytes, inside its header", head.len()),
                    }),
                }
            }
        }
    }
}

/// A model file in GPU memory.
pub struct LoadedModel {
    pub header: FileHeader,
    pub tensors: HashMap<String, GpuTensor>,
    /// Bytes of GPU memory the tensors take.
    pub gpu_bytes: u64,
    pub sha256: String,
}

/// Loads one model file (GGUF or safetensors) from `source` into GPU memory.
pub async fn load_model_file<S: ByteSource>(
    ctx: &GpuContext,
    source: &mut S,
    opts: &mut LoadOptions<'_>,
) -> Result<LoadedModel> {
    let total = source.total();
    let name = source.name().to_string();
    let loaded = load_stream(ctx, source, |p| parse_header(p, total, &name), opts).await?;
    let gpu_bytes = loaded.tensors.iter().map(|t| t.size_bytes()).sum();
    Ok(LoadedModel {
        header: loaded.header,
        tensors: loaded
            .tensors
            .into_iter()
            .map(|t| (t.name().to_string(), t))
            .collect(),
        gpu_bytes,
        sha256: loaded.sha256,
    })
}
