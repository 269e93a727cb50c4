//! Model file headers: GGUF and safetensors, single files and split or sharded checkpoints, read
//! into one description of the tensors ([`ModelFiles`]) that the loader streams to the GPU.
//!
//! Both parsers work on a *prefix* of a file, so a loader can start with the first bytes of a
//! download and fetch more only when the header is longer: [`gguf::GgufHeader::parse`] and
//! [`safetensors::SafetensorsHeader::parse`] return either the complete header
//! ([`Parsed::Complete`]) or how many bytes they need at least ([`Parsed::NeedMore`]). Parsing
//! again from the start is cheap as long as the prefix grows geometrically: [`next_fetch_len`]
//! says how much to fetch, and a 10 MB header (a 262k-token vocabulary) is then read in about a
//! dozen attempts that together read fewer than three times its bytes.
//!
//! Both parsers are strict: every count, length and offset is checked before it is used, nothing
//! is allocated from a count before the bytes it describes are there, and every kind of bad
//! input is a typed [`Error`] that names the file. The limits are constants of [`gguf`] and
//! [`safetensors`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::error::{Error, Result};
use crate::quant::DType;

pub mod gguf;
pub mod invariants;
pub mod safetensors;

pub use self::gguf::{
    merge_splits, split_names, FromMeta, GgufHeader, GgufMetadata, GgufTensor, MetaArray, MetaValue,
};
pub use self::safetensors::{
    merge_shards, SafetensorsHeader, SafetensorsIndex, SafetensorsTensor, Shard,
};

/// The result of parsing a header from a prefix of a file.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The whole header was in the prefix. `header_len` is where the tensor data starts: for GGUF
    /// the end of the header aligned up to `general.alignment` (the padding itself need not be in
    /// the prefix), for safetensors `8 + N`.
    Complete { header: T, header_len: u64 },
    /// The prefix ended inside the header: parse again with at least `at_least` bytes (see
    /// [`next_fetch_len`] for how much to fetch).
    NeedMore { at_least: usize },
}

impl<T> Parsed<T> {
    /// The header of a whole file (its size known, so every shortfall was already
    /// `FileTruncated`; `NeedMore` is reported the same way rather than trusted not to happen).
    pub(crate) fn whole_file(self, file: &str) -> Result<T> {
        match self {
            Parsed::Complete { header, .. } => Ok(header),
            Parsed::NeedMore { at_least } => Err(Error::FileTruncated {
                file: file.to_owned(),
                detail: format!("its header needs at least {at_least} bytes"),
            }),
        }
    }

    /// The header, or `None` when more bytes are needed.
    pub fn complete(self) -> Option<T> {
        match self {
            Parsed::Complete { header, .. } => Some(header),
            Parsed::NeedMore { .. } => None,
        }
    }
}

/// How long a prefix to fetch next when a parser answered `NeedMore { at_least }` to a prefix
/// of `have` bytes: at least `at_least`, and at least double `have` (and 64 KiB), so that
/// re-parsing from the start reads in total fewer than three times the header's size (the
/// fetches before the last add up to less than twice it).
pub fn next_fetch_len(have: usize, at_least: usize) -> usize {
    at_least.max(have.saturating_mul(2)).max(64 << 10)
}

/// The container format of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    Safetensors,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Gguf => "GGUF",
            Format::Safetensors => "safetensors",
        })
    }
}

/// One tensor of a model, wherever it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// Row-major: `[.., rows, cols]` (GGUF's innermost-first dims reversed).
    pub shape: Vec<usize>,
    /// Index into [`ModelFiles::files`].
    pub file: usize,
    /// Absolute byte offset of the tensor's data in its file.
    pub offset: u64,
    /// Bytes of data, as stored (whole GGML blocks for quantized types).
    pub bytes: u64,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Metadata of a model, as its format stores it.
#[derive(Clone, Debug)]
pub enum ModelMetadata {
    /// The key-value pairs of the (first split's) GGUF header.
    Gguf(GgufMetadata),
    /// safetensors' `__metadata__` string map (of the first shard).
    Safetensors(BTreeMap<String, String>),
}

/// A model's files and the tensors in them: what a GGUF file, a split GGUF, a safetensors file or
/// a sharded safetensors checkpoint all become.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub format: Format,
    /// Display names (file names or URLs) of the files, in order: `TensorInfo::file` indexes this.
    pub files: Vec<String>,
    /// Where each file's tensor data starts (its header length).
    pub data_offsets: Vec<u64>,
    /// In file order, then offset order within each file.
    pub tensors: Vec<TensorInfo>,
    pub metadata: ModelMetadata,
    by_name: HashMap<String, usize>,
}

impl ModelFiles {
    /// Builds the table, rejecting two tensors with the same name (the error names both files).
    pub(crate) fn new(
        format: Format,
        files: Vec<String>,
        data_offsets: Vec<u64>,
        mut tensors: Vec<TensorInfo>,
        metadata: ModelMetadata,
    ) -> Result<ModelFiles> {
        tensors.sort_by_key(|t| (t.file, t.offset));
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if let Some(&j) = by_name.get(&t.name) {
                let first: &TensorInfo = &tensors[j];
                return Err(if first.file == t.file {
                    Error::DuplicateName {
                        file: files[t.file].clone(),
                        kind: "tensor",
                        name: t.name.clone(),
                    }
                } else {
                    let detail = format!(
                        "tensor '{}' is in both '{}' and '{}'",
                        t.name, files[first.file], files[t.file]
                    );
                    match format {
                        Format::Gguf => Error::SplitModel {
                            file: files[0].clone(),
                            detail,
                        },
                        Format::Safetensors => Error::ShardIndex {
                            file: files[0].clone(),
                            detail,
                        },
                    }
                });
            }
            by_name.insert(t.name.clone(), i);
        }
        Ok(ModelFiles {
            format,
            files,
            data_offsets,
            tensors,
            metadata,
            by_name,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The GGUF metadata, if this is a GGUF model.
    pub fn gguf_metadata(&self) -> Option<&GgufMetadata> {
        match &self.metadata {
            ModelMetadata::Gguf(m) => Some(m),
            ModelMetadata::Safetensors(_) => None,
        }
    }

    /// What `pocketlm info` prints.
    pub fn summary(&self) -> Summary {
        let mut by_dtype: Vec<DTypeTotal> = Vec::new();
        for t in &self.tensors {
            match by_dtype.iter_mut().find(|d| d.dtype == t.dtype) {
                Some(d) => {
                    d.tensors += 1;
                    d.bytes = d.bytes.saturating_add(t.bytes);
                }
                None => by_dtype.push(DTypeTotal {
                    dtype: t.dtype,
                    tensors: 1,
                    bytes: t.bytes,
                }),
            }
        }
        by_dtype.sort_by_key(|d| std::cmp::Reverse(d.bytes));
        // Saturating: without file sizes, split headers could claim more than u64 in total.
        let elements = self
            .tensors
            .iter()
            .fold(0u64, |n, t| n.saturating_add(t.elements() as u64));
        let (architecture, hparams) = match self.gguf_metadata() {
            Some(m) => {
                let arch = m.get_opt::<&str>("general.architecture").ok().flatten();
                (
                    arch.map(str::to_owned),
                    arch.map(|a| HyperParams::from_gguf(m, a)),
                )
            }
            None => (None, None),
        };
        let name = self.gguf_metadata().and_then(|m| {
            m.get_opt::<&str>("general.name")
                .ok()
                .flatten()
                .map(str::to_owned)
        });
        let (not_loaded, not_loaded_bytes) = self
            .tensors
            .iter()
            .filter(|t| crate::model::arch::other_modality(&t.name))
            .fold((0, 0u64), |(n, b), t| (n + 1, b.saturating_add(t.bytes)));
        Summary {
            format: self.format,
            files: self.files.len(),
            not_loaded,
            not_loaded_bytes,
            name,
            tensors: self.tensors.len(),
            elements,
            total_bytes: self
                .tensors
                .iter()
                .fold(0u64, |n, t| n.saturating_add(t.bytes)),
            by_dtype,
            architecture,
            hparams,
        }
    }
}

/// Tensors and bytes of one dtype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DTypeTotal {
    pub dtype: DType,
    pub tensors: usize,
    pub bytes: u64,
}

/// The main hyper-parameters a GGUF file declares (`{arch}.*` keys). A key that holds a
/// per-layer array (some architectures vary the head count or FFN width by layer) reports its
/// largest value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HyperParams {
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub rope_freq_base: Option<f32>,
    /// Length of `tokenizer.ggml.tokens`, else `{arch}.vocab_size`.
    pub vocab_size: Option<u64>,
}

impl HyperParams {
    fn from_gguf(m: &GgufMetadata, arch: &str) -> HyperParams {
        let int = |suffix: &str| -> Option<u64> {
            let key = format!("{arch}.{suffix}");
            match m.value(&key)? {
                MetaValue::Array(a) => a.max_u64(),
                v => u64::from_meta(v),
            }
        };
        let vocab_size = match m.value("tokenizer.ggml.tokens") {
            Some(MetaValue::Array(a)) => Some(a.len() as u64),
            _ => int("vocab_size"),
        };
        HyperParams {
            context_length: int("context_length"),
            embedding_length: int("embedding_length"),
            block_count: int("block_count"),
            feed_forward_length: int("feed_forward_length"),
            head_count: int("attention.head_count"),
            head_count_kv: int("attention.head_count_kv"),
            rope_freq_base: m
                .get_opt::<f32>(&format!("{arch}.rope.freq_base"))
                .ok()
                .flatten(),
            vocab_size,
        }
    }
}

/// An overview of a model: what `pocketlm info` prints (through `Display`).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub format: Format,
    pub files: usize,
    /// `general.name` (GGUF).
    pub name: Option<String>,
    pub tensors: usize,
    /// Total number of weights.
    pub elements: u64,
    pub total_bytes: u64,
    /// Largest total first.
    pub by_dtype: Vec<DTypeTotal>,
    /// `general.architecture` (GGUF).
    pub architecture: Option<String>,
    pub hparams: Option<HyperParams>,
    /// Tensors of a multimodal checkpoint's other modalities (its image encoder), which are
    /// never loaded, and their bytes.
    pub not_loaded: usize,
    pub not_loaded_bytes: u64,
}

/// `1536 B`, `2.0 KiB`, `97.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = if self.files == 1 {
            String::from("1 file")
        } else {
            format!("{} files", self.files)
        };
        writeln!(f, "format:       {} ({files})", self.format)?;
        if let Some(name) = &self.name {
            writeln!(f, "name:         {name}")?;
        }
        if let Some(arch) = &self.architecture {
            writeln!(f, "architecture: {arch}")?;
        }
        if let Some(h) = &self.hparams {
            let rows: [(&str, Option<String>); 8] = [
                ("context length", h.context_length.map(|v| v.to_string())),
                (
                    "embedding length",
                    h.embedding_length.map(|v| v.to_string()),
                ),
                ("layers", h.block_count.map(|v| v.to_string())),
                (
                    "feed-forward length",
                    h.feed_forward_length.map(|v| v.to_string()),
                ),
                ("attention heads", h.head_count.map(|v| v.to_string())),
                ("key-value heads", h.head_count_kv.map(|v| v.to_string())),
                ("rope base", h.rope_freq_base.map(|v| v.to_string())),
                ("vocabulary", h.vocab_size.map(|v| v.to_string())),
            ];
            for (label, value) in rows {
                if let Some(value) = value {
                    writeln!(f, "  {:<22}{value}", format!("{label}:"))?;
                }
            }
        }
        writeln!(
            f,
            "tensors:      {} ({} weights, {})",
            self.tensors,
            self.elements,
            human_bytes(self.total_bytes)
        )?;
        for d in &self.by_dtype {
            writeln!(
                f,
                "  {:<6}{:>6} tensors {:>12}",
                d.dtype.name(),
                d.tensors,
                human_bytes(d.bytes)
            )?;
        }
        if self.not_loaded > 0 {
            writeln!(
                f,
                "not loaded:   {} tensors ({}) of the image encoder: the language model runs \
                 alone",
                self.not_loaded,
                human_bytes(self.not_loaded_bytes)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(98 << 20), "98.0 MiB");
    }

    #[test]
    fn fetches_grow_geometrically() {
        // Re-parsing from the start after each fetch reads fewer than three times the header.
        let header = 10 << 20;
        let (mut have, mut touched) = (0usize, 0usize);
        while have < header {
            have = next_fetch_len(have, have + 1);
            touched += have.min(header);
        }
        assert!(touched < 3 * header, "{touched}");
    }

    #[test]
    fn two_tensors_of_one_name_in_one_file_are_a_duplicate() {
        let t = TensorInfo {
            name: "w".into(),
            dtype: DType::F32,
            shape: vec![2],
            file: 0,
            offset: 8,
            bytes: 8,
        };
        let e = ModelFiles::new(
            Format::Safetensors,
            vec!["m.safetensors".into()],
            vec![8],
            vec![t.clone(), TensorInfo { offset: 16, ..t }],
            ModelMetadata::Safetensors(BTreeMap::new()),
        )
        .unwrap_err();
        assert_eq!(e.code(), "duplicate_name");
        assert!(e.to_string().contains("m.safetensors"), "{e}");
    }
}
