//! safetensors: an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{"name": {"dtype": "F16", "shape": [rows, cols], "data_offsets": [begin, end]}, …,
//! "__metadata__": {"key": "value"}}`), then the data, whose offsets count from byte `8 + N`.
//! Sharded checkpoints add `model.safetensors.index.json`, whose `weight_map` says which shard
//! holds each tensor.
//!
//! The header is read from a prefix of the file, before any data has arrived. Each entry is
//! checked like the `safetensors` crate checks it, and then the crate's own `Metadata::new`
//! validates the table again: tensors contiguous from offset 0 (in offset order, no gaps, no
//! overlaps), each tensor's byte count equal to its shape × dtype size, and, when the file size is
//! known, the data ending exactly at the end of the file. Limits: the JSON header is at most
//! [`MAX_HEADER_BYTES`] (100 MB, the crate's own limit), an index file at most
//! [`MAX_INDEX_BYTES`]; element counts must fit `usize` and byte counts `u64`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use ::safetensors::tensor::{Metadata, TensorInfo as CrateTensorInfo};
use ::safetensors::Dtype;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Format, ModelFiles, ModelMetadata, Parsed, TensorInfo};
use crate::error::{Error, Result};
use crate::quant::DType;

/// The longest JSON header accepted (the `safetensors` crate's `MAX_HEADER_SIZE`).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The longest `model.safetensors.index.json` accepted.
pub const MAX_INDEX_BYTES: usize = 100_000_000;

/// The dtypes PocketLM runs from safetensors files.
const SUPPORTED: &str = "F32, F16, BF16";

fn dtype_of(name: &str) -> Option<(DType, Dtype)> {
    Some(match name {
        "F32" => (DType::F32, Dtype::F32),
        "F16" => (DType::F16, Dtype::F16),
        "BF16" => (DType::BF16, Dtype::BF16),
        _ => return None,
    })
}

/// One tensor as a safetensors header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsTensor {
    pub name: String,
    pub dtype: DType,
    /// Row-major, as stored.
    pub shape: Vec<usize>,
    /// Absolute offset in the file (`8 + N + begin`).
    pub offset: u64,
    pub bytes: u64,
}

/// A parsed safetensors header.
#[derive(Clone, Debug)]
pub struct SafetensorsHeader {
    /// The display name the caller gave (file name or URL), used in every error.
    pub file: String,
    /// `8 + N`: where the data starts.
    pub header_len: u64,
    /// In offset order.
    pub tensors: Vec<SafetensorsTensor>,
    /// `__metadata__`, if any.
    pub metadata: BTreeMap<String, String>,
    /// Bytes of tensor data (the end of the last tensor, from `header_len`).
    pub data_len: u64,
}

impl SafetensorsHeader {
    /// Parses the header from a prefix of the file. `file_size`, when known, turns "needs more
    /// bytes than the file has" into [`Error::FileTruncated`] and enables the check that the
    /// data fills the rest of the file exactly. `file` names the file in errors.
    pub fn parse(
        prefix: &[u8],
        file_size: Option<u64>,
        file: &str,
    ) -> Result<Parsed<SafetensorsHeader>> {
        let prefix = match file_size.and_then(|s| usize::try_from(s).ok()) {
            Some(size) if size < prefix.len() => &prefix[..size],
            _ => prefix,
        };
        let invalid = |detail: String| Error::InvalidHeader {
            file: file.to_owned(),
            detail,
        };
        let truncated = |needed: u64, size: u64| Error::FileTruncated {
            file: file.to_owned(),
            detail: format!("its header needs {needed} bytes but the file has {size}"),
        };
        // (Only once all four bytes are there: a header length may start with "G".)
        if let Some(b"GGUF") = prefix.get(..4) {
            return Err(Error::BadMagic {
                file: file.to_owned(),
                format: "safetensors",
                found: "\"GGUF\" (a GGUF file)".into(),
                expected: "an 8-byte header length, then a JSON object",
            });
        }
        let Some(len_bytes) = prefix.get(..8) else {
            return match file_size {
                Some(size) if size < 8 => Err(truncated(8, size)),
                _ => Ok(Parsed::NeedMore { at_least: 8 }),
            };
        };
        let mut n = [0u8; 8];
        n.copy_from_slice(len_bytes);
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES {
            return Err(Error::HeaderLimit {
                file: file.to_owned(),
                what: "the JSON header length (the first 8 bytes)".into(),
                value: n,
                limit: MAX_HEADER_BYTES,
            });
        }
        if n < 2 {
            return Err(invalid(format!(
                "the JSON header length is {n}, too short for a JSON object"
            )));
        }
        // Reject a non-JSON start as soon as it is there, not after N bytes have arrived.
        let json_start = &prefix[8..prefix.len().min(8 + n as usize)];
        if let Some(&c) = json_start.iter().find(|c| !c.is_ascii_whitespace()) {
            if c != b'{' {
                return Err(Error::BadMagic {
                    file: file.to_owned(),
                    format: "safetensors",
                    found: format!(
                        "a header length of {n} followed by \"{}\"",
                        json_start[..json_start.len().min(8)].escape_ascii()
                    ),
                    expected: "an 8-byte header length, then a JSON object",
                });
            }
        }
        let header_len = 8 + n;
        if let Some(size) = file_size {
            if header_len > size {
                return Err(truncated(header_len, size));
            }
        }
        // header_len ≤ 8 + MAX_HEADER_BYTES fits usize on every target.
        let Some(json) = prefix.get(8..header_len as usize) else {
            return Ok(Parsed::NeedMore {
                at_least: header_len as usize,
            });
        };
        let json = std::str::from_utf8(json).map_err(|e| {
            invalid(format!(
                "the JSON header is not valid UTF-8 (bad byte at file offset {})",
                8 + e.valid_up_to()
            ))
        })?;
        let header = parse_json(json, header_len, file_size, file)?;
        Ok(Parsed::Complete { header, header_len })
    }

    /// Parses a whole file held in memory: a short file is an error, never `NeedMore`.
    pub fn parse_file(bytes: &[u8], file: &str) -> Result<SafetensorsHeader> {
        SafetensorsHeader::parse(bytes, Some(bytes.len() as u64), file)?.whole_file(file)
    }

    pub fn tensor(&self, name: &str) -> Option<&SafetensorsTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensors as common descriptors, all in file `file_index`.
    pub fn tensor_infos(&self, file_index: usize) -> Vec<TensorInfo> {
        self.tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                file: file_index,
                offset: t.offset,
                bytes: t.bytes,
            })
            .collect()
    }

    /// A model in one file.
    pub fn into_model_files(self) -> Result<ModelFiles> {
        let tensors = self.tensor_infos(0);
        ModelFiles::new(
            Format::Safetensors,
            vec![self.file],
            vec![self.header_len],
            tensors,
            ModelMetadata::Safetensors(self.metadata),
        )
    }
}

/// The entry of one tensor, before its fields are checked.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// A JSON object's entries in order, duplicates kept (serde's maps keep the last silently).
struct Pairs<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Pairs<V>, A::Error> {
                let mut pairs = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<V>()?;
                    pairs.push((key, value));
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

fn parse_json(
    json: &str,
    header_len: u64,
    file_size: Option<u64>,
    file: &str,
) -> Result<SafetensorsHeader> {
    let invalid = |detail: String| Error::InvalidHeader {
        file: file.to_owned(),
        detail,
    };
    let entries: Pairs<&RawValue> = serde_json::from_str(json)
        .map_err(|e| invalid(format!("the JSON header is not a valid JSON object: {e}")))?;

    let mut metadata = None;
    let mut seen: HashMap<&str, ()> = HashMap::with_capacity(entries.0.len());
    // (tensor, crate dtype, begin, end, kept: not a skipped buffer)
    let mut tensors: Vec<(SafetensorsTensor, Dtype, u64, u64, bool)> =
        Vec::with_capacity(entries.0.len());
    for (name, raw) in &entries.0 {
        if seen.insert(name, ()).is_some() {
            return Err(Error::DuplicateName {
                file: file.to_owned(),
                kind: if name == "__metadata__" {
                    "key"
                } else {
                    "tensor"
                },
                name: name.clone(),
            });
        }
        if name == "__metadata__" {
            let m: BTreeMap<String, String> = serde_json::from_str(raw.get()).map_err(|e| {
                invalid(format!(
                    "__metadata__ must be an object of strings to strings: {e}"
                ))
            })?;
            metadata = Some(m);
            continue;
        }
        let layout = |detail: String| Error::TensorLayout {
            file: file.to_owned(),
            tensor: name.clone(),
            detail,
        };
        let t: RawTensor = serde_json::from_str(raw.get()).map_err(|e| {
            layout(format!(
                "its entry is not {{\"dtype\", \"shape\", \"data_offsets\"}}: {e}"
            ))
        })?;
        // Older transformers versions saved BERT's `embeddings.position_ids` buffer (0, 1, 2, …
        // as I64) with the parameters: not a weight, and nothing reads it. Its bytes are checked
        // like any tensor's, then it is left out of the header's tensors.
        let buffer = name.ends_with(".position_ids") && matches!(t.dtype.as_str(), "I64" | "I32");
        let (dtype, crate_dtype) = match (buffer, t.dtype.as_str()) {
            (true, "I64") => (DType::F32, Dtype::I64),
            (true, _) => (DType::F32, Dtype::I32),
            _ => dtype_of(&t.dtype).ok_or_else(|| Error::UnknownTensorType {
                file: file.to_owned(),
                tensor: name.clone(),
                dtype: t.dtype.clone(),
                supported: SUPPORTED.into(),
            })?,
        };
        let element_bytes = if crate_dtype == Dtype::I64 { 8 } else { 4 };
        let too_big = || Error::HeaderLimit {
            file: file.to_owned(),
            what: format!("the element count of tensor '{name}' (shape {:?})", t.shape),
            value: u64::MAX,
            limit: usize::MAX as u64,
        };
        let elements = t
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| usize::try_from(n).is_ok())
            .ok_or_else(too_big)?;
        let shape = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| too_big()))
            .collect::<Result<Vec<usize>>>()?;
        let bytes = elements
            .checked_mul(if buffer {
                element_bytes
            } else {
                dtype.block_bytes() as u64
            })
            .ok_or_else(too_big)?;
        let (begin, end) = t.data_offsets;
        if end < begin {
            return Err(layout(format!(
                "its data_offsets [{begin}, {end}] end before they begin"
            )));
        }
        if end - begin != bytes {
            return Err(layout(format!(
                "its data_offsets [{begin}, {end}] hold {} bytes, but shape {:?} of {} needs {bytes}",
                end - begin,
                t.shape,
                t.dtype
            )));
        }
        let offset = header_len
            .checked_add(begin)
            .ok_or_else(|| layout(format!("its data offset {begin} is out of range")))?;
        tensors.push((
            SafetensorsTensor {
                name: name.clone(),
                dtype,
                shape,
                offset,
                bytes,
            },
            crate_dtype,
            begin,
            end,
            !buffer,
        ));
    }

    // Offset order, as the crate sorts (zero-sized tensors first at a shared offset).
    tensors.sort_by_key(|t| (t.2, t.3));
    let mut data_len = 0u64;
    let mut prev: Option<&str> = None;
    for (t, _, begin, end, _) in &tensors {
        if *begin != data_len {
            let detail = match prev {
                None => format!(
                    "its data begins at offset {begin}, but the first tensor must begin at 0"
                ),
                Some(p) if *begin < data_len => {
                    format!("its data [{begin}, {end}) overlaps tensor '{p}', which ends at {data_len}")
                }
                Some(p) => format!(
                    "its data begins at {begin}, leaving a gap after tensor '{p}', which ends at {data_len} (safetensors data is contiguous)"
                ),
            };
            return Err(Error::TensorLayout {
                file: file.to_owned(),
                tensor: t.name.clone(),
                detail,
            });
        }
        data_len = *end;
        prev = Some(&t.name);
    }
    if let Some(size) = file_size {
        let data_room = size - header_len; // header_len ≤ size was checked by the caller
        if data_len > data_room {
            let t = tensors
                .iter()
                .find(|t| t.3 > data_room)
                .map_or_else(String::new, |t| t.0.name.clone());
            return Err(Error::TensorOutOfBounds {
                file: file.to_owned(),
                tensor: t,
                end: header_len.saturating_add(data_len),
                size,
            });
        }
        if data_len < data_room {
            return Err(invalid(format!(
                "{} bytes follow the last tensor's data (the tensors cover {data_len} of the {data_room} data bytes)",
                data_room - data_len
            )));
        }
    }

    // The crate's validation of the same table (where its usize offsets can hold it: a shard of
    // over 4 GiB on wasm32 cannot be described by the crate, and was checked above).
    let crate_table: Option<Vec<(String, CrateTensorInfo)>> = tensors
        .iter()
        .map(|(t, dtype, begin, end, _)| {
            Some((
                t.name.clone(),
                CrateTensorInfo {
                    dtype: *dtype,
                    shape: t.shape.clone(),
                    data_offsets: (usize::try_from(*begin).ok()?, usize::try_from(*end).ok()?),
                },
            ))
        })
        .collect();
    if let Some(table) = crate_table {
        Metadata::new(None, table)
            .map_err(|e| invalid(format!("the safetensors crate rejects it: {e}")))?;
    }

    Ok(SafetensorsHeader {
        file: file.to_owned(),
        header_len,
        tensors: tensors.into_iter().filter(|t| t.4).map(|t| t.0).collect(),
        metadata: metadata.unwrap_or_default(),
        data_len,
    })
}

/// One shard of a sharded checkpoint and the tensors the index puts in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// File name as the index gives it (relative to the index file).
    pub file: String,
    /// In index order.
    pub tensors: Vec<String>,
}

/// `model.safetensors.index.json`.
#[derive(Clone, Debug)]
pub struct SafetensorsIndex {
    /// The display name the caller gave, used in every error.
    pub file: String,
    /// Sorted by file name (`model-00001-of-00002.safetensors` first).
    pub shards: Vec<Shard>,
    /// `metadata.total_size`, when given (informative only: exporters disagree on what it counts).
    pub total_size: Option<u64>,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    weight_map: Pairs<String>,
}

impl SafetensorsIndex {
    pub fn parse(json: &[u8], file: &str) -> Result<SafetensorsIndex> {
        let err = |detail: String| Error::ShardIndex {
            file: file.to_owned(),
            detail,
        };
        if json.len() > MAX_INDEX_BYTES {
            return Err(Error::HeaderLimit {
                file: file.to_owned(),
                what: "the size of the index file".into(),
                value: json.len() as u64,
                limit: MAX_INDEX_BYTES as u64,
            });
        }
        let raw: RawIndex = serde_json::from_slice(json).map_err(|e| {
            err(format!(
                "it is not a safetensors index (a JSON object with a \"weight_map\"): {e}"
            ))
        })?;
        let total_size = raw
            .metadata
            .as_ref()
            .and_then(|m| m.get("total_size"))
            .and_then(|t| t.as_u64().or_else(|| t.as_f64().map(|f| f as u64)));
        let mut shard_of: HashMap<&str, &str> = HashMap::with_capacity(raw.weight_map.0.len());
        let mut by_shard: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (tensor, shard) in &raw.weight_map.0 {
            if shard.is_empty() || shard.contains(['/', '\\']) || shard == "." || shard == ".." {
                return Err(err(format!(
                    "tensor '{tensor}' is placed in '{shard}', which is not a plain file name"
                )));
            }
            if let Some(first) = shard_of.insert(tensor, shard) {
                return Err(if first == shard {
                    Error::DuplicateName {
                        file: file.to_owned(),
                        kind: "weight_map key",
                        name: tensor.clone(),
                    }
                } else {
                    err(format!(
                        "tensor '{tensor}' is listed in both '{first}' and '{shard}'"
                    ))
                });
            }
            by_shard.entry(shard).or_default().push(tensor.clone());
        }
        if by_shard.is_empty() {
            return Err(err("its weight_map is empty".into()));
        }
        Ok(SafetensorsIndex {
            file: file.to_owned(),
            shards: by_shard
                .into_iter()
                .map(|(file, tensors)| Shard {
                    file: file.to_owned(),
                    tensors,
                })
                .collect(),
            total_size,
        })
    }

    /// The index into `shards` of the shard holding a tensor.
    pub fn shard_of(&self, tensor: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.tensors.iter().any(|t| t == tensor))
    }
}

/// Merges the headers of a sharded checkpoint, given in the order of `index.shards`, into one
/// tensor table (metadata from the first shard). Errors name the index file: a shard header
/// missing or extra, a tensor the index lists but its shard lacks, a tensor in a shard that the
/// index does not place there, or a tensor in two shards.
pub fn merge_shards(
    index: &SafetensorsIndex,
    shards: Vec<SafetensorsHeader>,
) -> Result<ModelFiles> {
    let err = |detail: String| Error::ShardIndex {
        file: index.file.clone(),
        detail,
    };
    if shards.len() != index.shards.len() {
        let names: Vec<&str> = index.shards.iter().map(|s| s.file.as_str()).collect();
        return Err(err(format!(
            "the index lists {} shards ({}) but {} shard headers were given",
            names.len(),
            names.join(", "),
            shards.len()
        )));
    }
    let mut placed: HashMap<&str, usize> = HashMap::new();
    for (i, s) in index.shards.iter().enumerate() {
        for t in &s.tensors {
            placed.insert(t, i);
        }
    }
    for (i, (entry, header)) in index.shards.iter().zip(&shards).enumerate() {
        for t in &entry.tensors {
            if header.tensor(t).is_none() {
                return Err(err(format!(
                    "tensor '{t}' is listed in the index under '{}' but '{}' does not hold it",
                    entry.file, header.file
                )));
            }
        }
        for t in &header.tensors {
            match placed.get(t.name.as_str()) {
                Some(&j) if j == i => {}
                Some(&j) => {
                    return Err(err(format!(
                        "tensor '{}' is in '{}' but the index places it in '{}'",
                        t.name, header.file, index.shards[j].file
                    )))
                }
                None => {
                    return Err(err(format!(
                        "tensor '{}' is in '{}' but the index does not list it",
                        t.name, header.file
                    )))
                }
            }
        }
    }
    let mut tensors = Vec::new();
    let mut files = Vec::with_capacity(shards.len());
    let mut data_offsets = Vec::with_capacity(shards.len());
    let mut metadata = None;
    for (i, h) in shards.into_iter().enumerate() {
        tensors.extend(h.tensor_infos(i));
        files.push(h.file);
        data_offsets.push(h.header_len);
        if i == 0 {
            metadata = Some(h.metadata);
        }
    }
    ModelFiles::new(
        Format::Safetensors,
        files,
        data_offsets,
        tensors,
        ModelMetadata::Safetensors(metadata.unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str, data: usize) -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend(json.as_bytes());
        b.resize(b.len() + data, 0);
        b
    }

    #[test]
    fn header_from_prefix_then_complete() {
        let json = r#"{"b":{"dtype":"F16","shape":[3],"data_offsets":[8,14]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#;
        let b = file(json, 14);
        for n in 0..8 + json.len() {
            assert!(matches!(
                SafetensorsHeader::parse(&b[..n], None, "x").unwrap(),
                Parsed::NeedMore { .. }
            ));
        }
        let h = SafetensorsHeader::parse_file(&b, "x").unwrap();
        let names: Vec<&str> = h.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(h.tensors[1].offset, 8 + json.len() as u64 + 8);
        assert_eq!(h.metadata["format"], "pt");
    }

    #[test]
    fn duplicate_tensor_names_are_caught() {
        let json = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let e = SafetensorsHeader::parse(&file(json, 4), None, "x").unwrap_err();
        assert_eq!(e.code(), "duplicate_name", "{e}");
    }

    #[test]
    fn other_dtypes_name_the_tensor() {
        let json = r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#;
        let e = SafetensorsHeader::parse(&file(json, 16), None, "x").unwrap_err();
        assert_eq!(e.code(), "unknown_tensor_type");
        assert!(
            e.to_string().contains("'ids'") && e.to_string().contains("I64"),
            "{e}"
        );
    }
}
