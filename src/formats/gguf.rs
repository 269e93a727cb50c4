//! GGUF, llama.cpp's model format: versions 2 and 3, little-endian.
//!
//! ```text
//! "GGUF"  version: u32  tensor_count: u64  metadata_count: u64
//! metadata_count × { key: string, value_type: u32, value }
//! tensor_count   × { name: string, n_dims: u32, dims: n_dims × u64 (innermost first),
//!                    ggml_type: u32, offset: u64 (from the data section, a multiple of the alignment) }
//! padding to `general.alignment` (default 32), then the data section
//! ```
//! Strings are a u64 byte length and UTF-8 bytes; an array value is an element type (u32), a
//! count (u64) and the elements, which may themselves be arrays.
//!
//! The parser is strict and bounded. Limits (all checked before anything is allocated):
//! the header (everything before the data section) is at most [`MAX_HEADER_BYTES`] (512 MiB);
//! at most [`MAX_TENSORS`] tensors and [`MAX_METADATA_KEYS`] keys; keys and tensor names at most
//! [`MAX_NAME_BYTES`] bytes and not empty; 1 to [`MAX_DIMS`] (4) dimensions, each at least 1,
//! with at most `i64::MAX` elements in all (and `usize::MAX`: 2³² − 1 on wasm32); arrays nested
//! at most [`MAX_ARRAY_DEPTH`] deep; any array or string only as long as the header can hold.
//! A count is first multiplied by the smallest size of its items and the bytes checked to be in
//! the prefix, so a lying count costs nothing but a `NeedMore` or an error.

use std::collections::HashMap;
use std::fmt;

use super::{Format, ModelFiles, ModelMetadata, Parsed, TensorInfo};
use crate::error::{Error, Result};
use crate::quant::DType;

/// The first four bytes of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// `general.alignment` when the key is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest header accepted, in bytes (the data section may start a little later, at the
/// next multiple of the alignment). Real headers are under 20 MiB, vocabularies included.
pub const MAX_HEADER_BYTES: u64 = 512 << 20;
/// The most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 20;
/// The most metadata keys a file may declare.
pub const MAX_METADATA_KEYS: u64 = 1 << 20;
/// The longest key or tensor name, in bytes (the spec's limit for keys).
pub const MAX_NAME_BYTES: u64 = 65_535;
/// The most dimensions of a tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// How deep arrays of arrays may nest.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// The most files a split model may have.
pub const MAX_SPLITS: u32 = 9_999;

/// Metadata keys of split models (`name-00001-of-00003.gguf`), as llama.cpp's gguf-split and
/// gguf-py write them: `split.no` is 0-based.
pub const SPLIT_NO: &str = "split.no";
pub const SPLIT_COUNT: &str = "split.count";
pub const SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

// Metadata value types.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// The fewest bytes one value of a type takes (a string's length, an array's type and count).
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

/// Names of ggml types, for messages about the ones PocketLM does not run.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

fn supported_types() -> String {
    DType::ALL
        .iter()
        .map(|d| d.name().to_uppercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A metadata value, exactly as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array value: its element type is kept even when it is empty. The elements of an array of
/// arrays each have their own element type.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    /// The GGUF name of the value's type: `u32`, `string`, `array` …
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }

    /// The value of any integer type, for lossless conversions.
    fn integer(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A short description for error messages: `u16 7`, `a string`, `an array of 3 f32`.
    pub fn describe(&self) -> String {
        match self {
            MetaValue::String(_) => "a string".into(),
            MetaValue::Array(a) => format!("an array of {} {}", a.len(), a.element_type()),
            v => format!("{} {v}", v.type_name()),
        }
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
            MetaArray::Array(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The GGUF name of the element type.
    pub fn element_type(&self) -> &'static str {
        match self {
            MetaArray::U8(_) => "u8",
            MetaArray::I8(_) => "i8",
            MetaArray::U16(_) => "u16",
            MetaArray::I16(_) => "i16",
            MetaArray::U32(_) => "u32",
            MetaArray::I32(_) => "i32",
            MetaArray::F32(_) => "f32",
            MetaArray::Bool(_) => "bool",
            MetaArray::String(_) => "string",
            MetaArray::Array(_) => "array",
            MetaArray::U64(_) => "u64",
            MetaArray::I64(_) => "i64",
            MetaArray::F64(_) => "f64",
        }
    }

    /// The largest element of an array of non-negative integers (per-layer hyper-parameters).
    pub fn max_u64(&self) -> Option<u64> {
        fn max<T: Copy + TryInto<u64>>(v: &[T]) -> Option<u64> {
            v.iter().map(|&x| x.try_into().ok()).max().flatten()
        }
        match self {
            MetaArray::U8(v) => max(v),
            MetaArray::I8(v) => max(v),
            MetaArray::U16(v) => max(v),
            MetaArray::I16(v) => max(v),
            MetaArray::U32(v) => max(v),
            MetaArray::I32(v) => max(v),
            MetaArray::U64(v) => max(v),
            MetaArray::I64(v) => max(v),
            _ => None,
        }
    }
}

impl fmt::Display for MetaValue {
    /// Scalars as values, strings quoted (cut after 60 characters), arrays as their length and
    /// type with the first few elements.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::String(s) => write_short_string(f, s),
            MetaValue::Array(a) => write!(f, "{a}"),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v}"),
        }
    }
}

fn write_short_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => write!(f, "{:?}…", &s[..cut]),
        None => write!(f, "{s:?}"),
    }
}

impl fmt::Display for MetaArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 4;
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            for (i, x) in v.iter().take(SHOWN).enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x}")?;
            }
            if v.len() > SHOWN {
                f.write_str(", …")?;
            }
            Ok(())
        }
        write!(f, "[{} × {}: ", self.len(), self.element_type())?;
        match self {
            MetaArray::U8(v) => list(f, v)?,
            MetaArray::I8(v) => list(f, v)?,
            MetaArray::U16(v) => list(f, v)?,
            MetaArray::I16(v) => list(f, v)?,
            MetaArray::U32(v) => list(f, v)?,
            MetaArray::I32(v) => list(f, v)?,
            MetaArray::F32(v) => list(f, v)?,
            MetaArray::Bool(v) => list(f, v)?,
            MetaArray::String(v) => {
                let quoted: Vec<String> = v
                    .iter()
                    .take(SHOWN + 1)
                    .map(|s| MetaValue::String(s.clone()).to_string())
                    .collect();
                list(f, &quoted[..quoted.len().min(SHOWN)])?;
                if v.len() > SHOWN {
                    f.write_str(", …")?;
                }
            }
            MetaArray::Array(v) => list(f, v)?,
            MetaArray::U64(v) => list(f, v)?,
            MetaArray::I64(v) => list(f, v)?,
            MetaArray::F64(v) => list(f, v)?,
        }
        f.write_str("]")
    }
}

/// A Rust type a metadata value can be read as. Integers convert losslessly between widths and
/// signedness (`split.count` is a u16, `split.tensors.count` an i32), floats only widen, strings
/// and arrays must have exactly the type asked for.
pub trait FromMeta<'a>: Sized {
    /// What the caller expected, for the error message.
    const EXPECTED: &'static str;
    fn from_meta(value: &'a MetaValue) -> Option<Self>;
}

macro_rules! integer_from_meta {
    ($($t:ty),*) => {$(
        impl FromMeta<'_> for $t {
            const EXPECTED: &'static str = stringify!($t);
            fn from_meta(value: &MetaValue) -> Option<$t> {
                value.integer().and_then(|v| <$t>::try_from(v).ok())
            }
        }
    )*};
}
integer_from_meta!(u32, u64, i32, i64);

impl FromMeta<'_> for f32 {
    const EXPECTED: &'static str = "f32";
    fn from_meta(value: &MetaValue) -> Option<f32> {
        match *value {
            MetaValue::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl FromMeta<'_> for f64 {
    const EXPECTED: &'static str = "f64";
    fn from_meta(value: &MetaValue) -> Option<f64> {
        match *value {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl FromMeta<'_> for bool {
    const EXPECTED: &'static str = "bool";
    fn from_meta(value: &MetaValue) -> Option<bool> {
        match *value {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromMeta<'a> for &'a str {
    const EXPECTED: &'static str = "a string";
    fn from_meta(value: &'a MetaValue) -> Option<&'a str> {
        match value {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'a> FromMeta<'a> for &'a MetaArray {
    const EXPECTED: &'static str = "an array";
    fn from_meta(value: &'a MetaValue) -> Option<&'a MetaArray> {
        match value {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl<'a> FromMeta<'a> for &'a MetaValue {
    const EXPECTED: &'static str = "any value";
    fn from_meta(value: &'a MetaValue) -> Option<&'a MetaValue> {
        Some(value)
    }
}

macro_rules! array_from_meta {
    ($($t:ty => $variant:ident, $expected:literal;)*) => {$(
        impl<'a> FromMeta<'a> for &'a [$t] {
            const EXPECTED: &'static str = $expected;
            fn from_meta(value: &'a MetaValue) -> Option<&'a [$t]> {
                match value {
                    MetaValue::Array(MetaArray::$variant(v)) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
array_from_meta! {
    String => String, "an array of strings";
    i32 => I32, "an array of i32";
    u32 => U32, "an array of u32";
    f32 => F32, "an array of f32";
}

/// The key-value metadata of a GGUF file, in file order, with lookups by key.
#[derive(Clone, Debug)]
pub struct GgufMetadata {
    file: String,
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

impl GgufMetadata {
    /// The display name of the file this came from (used in error messages).
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key and value, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of a key.
    pub fn value(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// A required value of a given type: a missing key or a value of another type is an error
    /// naming the file and the key.
    pub fn get<'a, T: FromMeta<'a>>(&'a self, key: &str) -> Result<T> {
        self.get_opt(key)?.ok_or_else(|| Error::MissingMetadata {
            file: self.file.clone(),
            key: key.to_owned(),
        })
    }

    /// An optional value of a given type: `None` when the key is absent, an error when it holds
    /// another type.
    pub fn get_opt<'a, T: FromMeta<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => T::from_meta(v)
                .map(Some)
                .ok_or_else(|| Error::MetadataType {
                    file: self.file.clone(),
                    key: key.to_owned(),
                    expected: T::EXPECTED,
                    found: v.describe(),
                }),
        }
    }

    pub fn u32(&self, key: &str) -> Result<u32> {
        self.get(key)
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        self.get(key)
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        self.get(key)
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        self.get(key)
    }

    pub fn string_array(&self, key: &str) -> Result<&[String]> {
        self.get(key)
    }

    pub fn i32_array(&self, key: &str) -> Result<&[i32]> {
        self.get(key)
    }

    pub fn f32_array(&self, key: &str) -> Result<&[f32]> {
        self.get(key)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get("general.architecture")
    }
}

/// One tensor as a GGUF header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    /// As stored: innermost (contiguous) dimension first.
    pub dims: Vec<u64>,
    /// Row-major: `dims` reversed, `[.., rows, cols]`.
    pub shape: Vec<usize>,
    pub ggml_type: u32,
    pub dtype: DType,
    /// From the start of the data section (see [`GgufHeader::data_offset`]).
    pub offset: u64,
    pub bytes: u64,
}

/// A parsed GGUF header.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    /// The display name the caller gave (file name or URL), used in every error.
    pub file: String,
    pub version: u32,
    pub alignment: u64,
    pub metadata: GgufMetadata,
    /// In file order.
    pub tensors: Vec<GgufTensor>,
    /// Absolute offset of the data section: the end of the header aligned up.
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parses the header from a prefix of the file. `file_size`, when known, turns "needs more
    /// bytes than the file has" into [`Error::FileTruncated`] and enables the check that every
    /// tensor's data lies inside the file. `file` names the file in errors.
    ///
    /// Returns [`Parsed::NeedMore`] when the prefix ends inside the header; its `at_least` is a
    /// lower bound (exact for fixed-size items, e.g. the whole of an array of integers, or eight
    /// bytes per string of a string array).
    pub fn parse(prefix: &[u8], file_size: Option<u64>, file: &str) -> Result<Parsed<GgufHeader>> {
        // Bytes past the declared end of the file are not the file's.
        let prefix = match file_size.and_then(|s| usize::try_from(s).ok()) {
            Some(size) if size < prefix.len() => &prefix[..size],
            _ => prefix,
        };
        let mut r = Reader {
            buf: prefix,
            pos: 0,
            file,
            file_size,
        };
        match parse_header(&mut r) {
            Ok(header) => {
                let header_len = header.data_offset;
                Ok(Parsed::Complete { header, header_len })
            }
            Err(Stop::More(at_least)) => Ok(Parsed::NeedMore { at_least }),
            Err(Stop::Fail(e)) => Err(*e),
        }
    }

    /// Parses a whole file held in memory: a short file is an error, never `NeedMore`.
    pub fn parse_file(bytes: &[u8], file: &str) -> Result<GgufHeader> {
        GgufHeader::parse(bytes, Some(bytes.len() as u64), file)?.whole_file(file)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The absolute end of the last tensor's data: how much of the file a loader needs.
    pub fn data_end(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| {
                self.data_offset
                    .saturating_add(t.offset)
                    .saturating_add(t.bytes)
            })
            .max()
            .unwrap_or(self.data_offset)
    }

    /// The tensors as common descriptors with absolute offsets, all in file `file_index`.
    pub fn tensor_infos(&self, file_index: usize) -> Vec<TensorInfo> {
        self.tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                dtype: t.dtype,
                shape: t.shape.clone(),
                file: file_index,
                offset: self.data_offset.saturating_add(t.offset),
                bytes: t.bytes,
            })
            .collect()
    }

    /// A model in one file (a single split of a split model is an error: use [`merge_splits`]).
    pub fn into_model_files(self) -> Result<ModelFiles> {
        merge_splits(vec![self])
    }

    /// Writes this file again with random weights: `header` (the file's first bytes, at least
    /// up to the end of its tensor descriptions) as it is, zeros up to
    /// [`data_offset`](Self::data_offset), then every tensor's data at its offset as random but
    /// valid values of its format ([`crate::quant::random_gguf_bytes`], seeded by `seed`). The
    /// copy loads and runs as the original does, at the same speed: for timing a model whose
    /// weights are not at hand, from its header alone. The parser has checked the layout (no
    /// two tensors overlap, every tensor is whole blocks), so only writing can fail.
    #[cfg(feature = "harness")]
    pub fn write_random_weights(
        &self,
        header: &[u8],
        seed: u64,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        let mut at = header.len().min(self.data_offset as usize) as u64;
        out.write_all(&header[..at as usize])?;
        let mut order: Vec<&GgufTensor> = self.tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        let mut rng = crate::rng::Rng::new(seed);
        for t in order {
            let start = self.data_offset.saturating_add(t.offset);
            let gap = start.saturating_sub(at);
            std::io::copy(&mut std::io::Read::take(std::io::repeat(0), gap), out)?;
            // A block at a time, up to 1 MiB per write: what the header declares is never
            // held in memory at once.
            let (block, block_bytes) = (t.dtype.block_size(), t.dtype.block_bytes() as u64);
            let per_write = (1 << 20) / block_bytes;
            let mut left = t.bytes / block_bytes;
            while left > 0 {
                let blocks = left.min(per_write);
                let data =
                    crate::quant::random_gguf_bytes(t.dtype, blocks as usize * block, &mut rng);
                out.write_all(&data)?;
                left -= blocks;
            }
            at = start.saturating_add(t.bytes);
        }
        Ok(())
    }
}

/// Why parsing stopped: not enough bytes yet, or bad input.
enum Stop {
    More(usize),
    Fail(Box<Error>),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Fail(Box::new(e))
    }
}

type Step<T> = std::result::Result<T, Stop>;

/// A cursor over the prefix. Every read goes through `need`, which checks the header cap, the
/// file size and the prefix, in that order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
    file_size: Option<u64>,
}

impl<'a> Reader<'a> {
    fn fail(&self, detail: String) -> Stop {
        Error::InvalidHeader {
            file: self.file.to_owned(),
            detail,
        }
        .into()
    }

    fn limit(&self, what: String, value: u64, limit: u64) -> Stop {
        Error::HeaderLimit {
            file: self.file.to_owned(),
            what,
            value,
            limit,
        }
        .into()
    }

    /// Checks that `n` more bytes are there.
    fn need(&self, n: u64, what: &dyn Fn() -> String) -> Step<()> {
        let end = (self.pos as u64).saturating_add(n);
        if end > MAX_HEADER_BYTES {
            return Err(self.limit(
                format!("the header size needed to read {}", what()),
                end,
                MAX_HEADER_BYTES,
            ));
        }
        if let Some(size) = self.file_size {
            if end > size {
                return Err(Error::FileTruncated {
                    file: self.file.to_owned(),
                    detail: format!(
                        "reading {} needs {end} bytes of header but the file has {size}",
                        what()
                    ),
                }
                .into());
            }
        }
        if end > self.buf.len() as u64 {
            // end ≤ MAX_HEADER_BYTES fits usize on every target.
            return Err(Stop::More(end as usize));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Step<&'a [u8]> {
        self.need(n, what)?;
        let end = self.pos + n as usize;
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.fail(format!("internal: short read of {}", what())))?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Step<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Step<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Step<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, max: u64, what: &dyn Fn() -> String) -> Step<String> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > max {
            return Err(self.limit(format!("the length of {}", what()), len, max));
        }
        let at = self.pos;
        let bytes = self.bytes(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.fail(format!(
                "{} is not valid UTF-8 (bad byte at file offset {})",
                what(),
                at + e.valid_up_to()
            ))),
        }
    }

    /// `count` fixed-size little-endian items, converted by `f`.
    fn items<T, const N: usize>(
        &mut self,
        count: u64,
        f: fn([u8; N]) -> T,
        what: &dyn Fn() -> String,
    ) -> Step<Vec<T>> {
        // The caller checked count × N against the header cap.
        let bytes = self.bytes(count * N as u64, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }

    fn value(&mut self, ty: u32, key: &str) -> Step<MetaValue> {
        let what = || format!("the value of '{key}'");
        Ok(match ty {
            T_U8 => MetaValue::U8(self.array::<1>(&what)?[0]),
            T_I8 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            T_U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            T_I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            T_U32 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            T_I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            T_F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            T_BOOL => MetaValue::Bool(self.bool(&what)?),
            T_STRING => MetaValue::String(self.string(MAX_HEADER_BYTES, &what)?),
            T_ARRAY => MetaValue::Array(self.meta_array(key, 0)?),
            T_U64 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            T_I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            T_F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            _ => return Err(self.unknown_value_type(ty, key)),
        })
    }

    fn unknown_value_type(&self, ty: u32, key: &str) -> Stop {
        self.fail(format!(
            "metadata key '{key}' has value type {ty}, which is not a GGUF type (0 to 12)"
        ))
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Step<bool> {
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.fail(format!("{} is a bool stored as {b}, not 0 or 1", what()))),
        }
    }

    fn meta_array(&mut self, key: &str, depth: usize) -> Step<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.limit(
                format!("the nesting depth of arrays in '{key}'"),
                depth as u64 + 1,
                MAX_ARRAY_DEPTH as u64,
            ));
        }
        let what = || format!("the array '{key}'");
        let ty = self.u32(&what)?;
        let count = self.u64(&what)?;
        let min = min_value_bytes(ty).ok_or_else(|| self.unknown_value_type(ty, key))?;
        // Never trust the count: the bytes of `count` smallest items must be there before
        // anything is allocated, which also bounds the count by the header cap.
        let min_total = count.checked_mul(min).ok_or_else(|| {
            self.limit(
                format!("the length of the array '{key}'"),
                count,
                MAX_HEADER_BYTES / min,
            )
        })?;
        self.need(min_total, &what)?;
        Ok(match ty {
            T_U8 => MetaArray::U8(self.items(count, |[b]| b, &what)?),
            T_I8 => MetaArray::I8(self.items(count, i8::from_le_bytes, &what)?),
            T_U16 => MetaArray::U16(self.items(count, u16::from_le_bytes, &what)?),
            T_I16 => MetaArray::I16(self.items(count, i16::from_le_bytes, &what)?),
            T_U32 => MetaArray::U32(self.items(count, u32::from_le_bytes, &what)?),
            T_I32 => MetaArray::I32(self.items(count, i32::from_le_bytes, &what)?),
            T_F32 => MetaArray::F32(self.items(count, f32::from_le_bytes, &what)?),
            T_U64 => MetaArray::U64(self.items(count, u64::from_le_bytes, &what)?),
            T_I64 => MetaArray::I64(self.items(count, i64::from_le_bytes, &what)?),
            T_F64 => MetaArray::F64(self.items(count, f64::from_le_bytes, &what)?),
            T_BOOL => {
                let mut v = Vec::with_capacity(count as usize);
                for i in 0..count {
                    v.push(self.bool(&|| format!("element {i} of '{key}'"))?);
                }
                MetaArray::Bool(v)
            }
            T_STRING => {
                let mut v = Vec::with_capacity(count as usize);
                for i in 0..count {
                    v.push(self.string(MAX_HEADER_BYTES, &|| format!("element {i} of '{key}'"))?);
                }
                MetaArray::String(v)
            }
            T_ARRAY => {
                let mut v = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    v.push(self.meta_array(key, depth + 1)?);
                }
                MetaArray::Array(v)
            }
            _ => return Err(self.unknown_value_type(ty, key)),
        })
    }
}

fn parse_header(r: &mut Reader<'_>) -> Step<GgufHeader> {
    let file = r.file;
    // Wrong magic is reported as soon as the bytes that are there disagree.
    let head = &r.buf[..r.buf.len().min(4)];
    if head != &MAGIC[..head.len()] {
        return Err(bad_magic(file, r.buf));
    }
    r.array::<4>(&|| "the magic number".into())?;
    let version = r.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        let detail = match version {
            1 => "GGUF v1 (2023) is obsolete; convert the model again with a current llama.cpp"
                .to_owned(),
            v if (1..=3).contains(&v.swap_bytes()) => {
                "this is a big-endian GGUF file; only little-endian files are supported".to_owned()
            }
            _ => "PocketLM reads GGUF versions 2 and 3".to_owned(),
        };
        return Err(Error::UnsupportedFormatVersion {
            file: file.to_owned(),
            format: "GGUF",
            version: version.into(),
            detail,
        }
        .into());
    }
    let tensor_count = r.u64(&|| "the tensor count".into())?;
    let key_count = r.u64(&|| "the metadata key count".into())?;
    if tensor_count > MAX_TENSORS {
        return Err(r.limit("the tensor count".into(), tensor_count, MAX_TENSORS));
    }
    if key_count > MAX_METADATA_KEYS {
        return Err(r.limit(
            "the metadata key count".into(),
            key_count,
            MAX_METADATA_KEYS,
        ));
    }
    // The fewest bytes the declared counts take: a key-value pair is at least 13 bytes, a tensor
    // info at least 33 (a one-byte name, one dimension).
    r.need(key_count * 13 + tensor_count * 33, &|| {
        format!("{key_count} metadata keys and {tensor_count} tensor infos")
    })?;

    let mut entries: Vec<(String, MetaValue)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for i in 0..key_count {
        let key = r.string(MAX_NAME_BYTES, &|| format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(r.fail(format!("metadata key #{i} is empty")));
        }
        let ty = r.u32(&|| format!("the value type of '{key}'"))?;
        let value = r.value(ty, &key)?;
        if index.contains_key(&key) {
            return Err(Error::DuplicateName {
                file: file.to_owned(),
                kind: "metadata key",
                name: key,
            }
            .into());
        }
        index.insert(key.clone(), entries.len());
        entries.push((key, value));
    }
    let metadata = GgufMetadata {
        file: file.to_owned(),
        entries,
        index,
    };

    let alignment = match metadata.get_opt::<u32>("general.alignment")? {
        None => DEFAULT_ALIGNMENT,
        Some(a) if a.is_power_of_two() => a.into(),
        Some(a) => {
            return Err(r.fail(format!(
                "general.alignment is {a}, which is not a power of two"
            )))
        }
    };

    let mut tensors: Vec<GgufTensor> = Vec::new();
    for i in 0..tensor_count {
        tensors.push(tensor_info(r, i, alignment)?);
    }

    let header_end = r.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .filter(|&d| d <= MAX_HEADER_BYTES)
        .ok_or_else(|| {
            r.limit(
                format!(
                    "the data section offset (the header end {header_end} aligned to {alignment})"
                ),
                header_end.saturating_add(alignment),
                MAX_HEADER_BYTES,
            )
        })?;

    check_layout(file, &tensors, data_offset, r.file_size)?;

    Ok(GgufHeader {
        file: file.to_owned(),
        version,
        alignment,
        metadata,
        tensors,
        data_offset,
    })
}

fn bad_magic(file: &str, buf: &[u8]) -> Stop {
    let head = &buf[..buf.len().min(4)];
    let mut found = format!("\"{}\"", head.escape_ascii());
    if buf.get(8) == Some(&b'{') {
        found.push_str(", like a safetensors file");
    }
    Error::BadMagic {
        file: file.to_owned(),
        format: "GGUF",
        found,
        expected: "\"GGUF\"",
    }
    .into()
}

fn tensor_info(r: &mut Reader<'_>, i: u64, alignment: u64) -> Step<GgufTensor> {
    let file = r.file;
    let name = r.string(MAX_NAME_BYTES, &|| format!("the name of tensor #{i}"))?;
    if name.is_empty() {
        return Err(r.fail(format!("tensor #{i} has an empty name")));
    }
    let layout = |detail: String| -> Stop {
        Error::TensorLayout {
            file: file.to_owned(),
            tensor: name.clone(),
            detail,
        }
        .into()
    };
    let what = || format!("tensor '{name}'");
    let n_dims = r.u32(&what)?;
    if n_dims == 0 {
        return Err(layout("it has no dimensions".into()));
    }
    if n_dims > MAX_DIMS {
        return Err(r.limit(
            format!("the number of dimensions of tensor '{name}'"),
            n_dims.into(),
            MAX_DIMS.into(),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut elements: u64 = 1;
    for d in 0..n_dims {
        let dim = r.u64(&what)?;
        if dim == 0 {
            return Err(layout(format!(
                "dimension {d} is 0 (every dimension must be at least 1)"
            )));
        }
        elements = elements
            .checked_mul(dim)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                r.limit(
                    format!("the element count of tensor '{name}'"),
                    u64::MAX,
                    i64::MAX as u64,
                )
            })?;
        dims.push(dim);
    }
    let ggml_type = r.u32(&what)?;
    let offset = r.u64(&what)?;

    let dtype = DType::from_ggml_id(ggml_type).ok_or_else(|| -> Stop {
        Error::UnknownTensorType {
            file: file.to_owned(),
            tensor: name.clone(),
            dtype: match ggml_type_name(ggml_type) {
                Some(n) => format!("{n} (ggml type {ggml_type})"),
                None => format!("ggml type {ggml_type}, unknown to ggml too"),
            },
            supported: supported_types(),
        }
        .into()
    })?;
    let cols = dims[0];
    if !cols.is_multiple_of(dtype.block_size() as u64) {
        return Err(layout(format!(
            "its rows of {cols} elements are not a whole number of {dtype} blocks of {}",
            dtype.block_size()
        )));
    }
    let too_big = || {
        r.limit(
            format!("the element count of tensor '{name}' on this platform"),
            elements,
            usize::MAX as u64,
        )
    };
    let n = usize::try_from(elements).map_err(|_| too_big())?;
    let bytes = dtype.bytes_for(n).ok_or_else(too_big)? as u64;
    let shape = dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d).map_err(|_| too_big()))
        .collect::<Step<Vec<usize>>>()?;
    if !offset.is_multiple_of(alignment) {
        return Err(layout(format!(
            "its data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(GgufTensor {
        name,
        dims,
        shape,
        ggml_type,
        dtype,
        offset,
        bytes,
    })
}

/// No two tensors share a name or a byte, and every tensor lies inside the file.
fn check_layout(
    file: &str,
    tensors: &[GgufTensor],
    data_offset: u64,
    file_size: Option<u64>,
) -> Step<()> {
    let mut names: HashMap<&str, ()> = HashMap::with_capacity(tensors.len());
    for t in tensors {
        if names.insert(&t.name, ()).is_some() {
            return Err(Error::DuplicateName {
                file: file.to_owned(),
                kind: "tensor",
                name: t.name.clone(),
            }
            .into());
        }
    }
    // Overlaps first, then the file's end, so that a streamed header (size unknown) and the
    // whole file get the same verdict on overlapping tensors.
    let mut order: Vec<(&GgufTensor, u64)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = t
            .offset
            .checked_add(t.bytes)
            .and_then(|e| e.checked_add(data_offset))
            .ok_or_else(|| -> Stop {
                Error::TensorLayout {
                    file: file.to_owned(),
                    tensor: t.name.clone(),
                    detail: format!("its data offset {} is out of range", t.offset),
                }
                .into()
            })?;
        order.push((t, end));
    }
    order.sort_by_key(|(t, end)| (t.offset, *end));
    for pair in order.windows(2) {
        let [(p, p_end), (t, _)] = pair else {
            continue;
        };
        if data_offset + t.offset < *p_end {
            return Err(Error::TensorLayout {
                file: file.to_owned(),
                tensor: t.name.clone(),
                detail: format!(
                    "its data (bytes {}..{} of the data section) overlaps tensor '{}' (bytes {}..{})",
                    t.offset,
                    t.offset + t.bytes,
                    p.name,
                    p.offset,
                    p.offset + p.bytes
                ),
            }
            .into());
        }
    }
    if let Some(size) = file_size {
        if let Some((t, end)) = order.iter().find(|(_, end)| *end > size) {
            return Err(Error::TensorOutOfBounds {
                file: file.to_owned(),
                tensor: t.name.clone(),
                end: *end,
                size,
            }
            .into());
        }
    }
    Ok(())
}

/// Merges the headers of a split model (`name-00001-of-00003.gguf` …, each carrying
/// `split.no` (0-based), `split.count` and `split.tensors.count`), given in any order, into one
/// tensor table; the metadata is the first split's. A single file without split keys is a
/// model of one file. Errors name the files: a split missing or given twice, split counts that
/// disagree, a tensor count that does not add up, or a tensor in two splits.
pub fn merge_splits(splits: Vec<GgufHeader>) -> Result<ModelFiles> {
    let Some(first) = splits.first() else {
        return Err(Error::SplitModel {
            file: "(no file)".into(),
            detail: "no files were given".into(),
        });
    };
    let model = first.file.clone();
    let split_err = |detail: String| Error::SplitModel {
        file: model.clone(),
        detail,
    };

    let unsplit = splits.len() == 1 && first.metadata.value(SPLIT_COUNT).is_none();
    let mut slots: Vec<Option<GgufHeader>> = Vec::new();
    let mut count: Option<(u32, String)> = None;
    let mut declared_total: Option<(u64, String)> = None;
    if unsplit {
        slots.extend(splits.into_iter().map(Some));
    } else {
        for h in splits {
            let (Some(no), Some(n)) = (
                h.metadata.get_opt::<u32>(SPLIT_NO)?,
                h.metadata.get_opt::<u32>(SPLIT_COUNT)?,
            ) else {
                return Err(split_err(format!(
                    "'{}' has no '{SPLIT_NO}' and '{SPLIT_COUNT}' keys, so it is not one split of a model",
                    h.file
                )));
            };
            match &count {
                None => {
                    if n == 0 || n > MAX_SPLITS {
                        return Err(split_err(format!(
                            "'{}' says the model has {n} splits (1 to {MAX_SPLITS} allowed)",
                            h.file
                        )));
                    }
                    count = Some((n, h.file.clone()));
                    slots.resize_with(n as usize, || None);
                }
                Some((c, f)) if *c != n => {
                    return Err(split_err(format!(
                        "'{f}' says the model has {c} splits but '{}' says {n}",
                        h.file
                    )))
                }
                Some(_) => {}
            }
            if let Some(t) = h.metadata.get_opt::<u64>(SPLIT_TENSORS_COUNT)? {
                match &declared_total {
                    Some((d, f)) if *d != t => {
                        return Err(split_err(format!(
                            "'{f}' says the model has {d} tensors ({SPLIT_TENSORS_COUNT}) but '{}' says {t}",
                            h.file
                        )))
                    }
                    Some(_) => {}
                    None => declared_total = Some((t, h.file.clone())),
                }
            }
            let Some(slot) = slots.get_mut(no as usize) else {
                return Err(split_err(format!(
                    "'{}' is split number {} ({SPLIT_NO} = {no}) but the model has only {n}",
                    h.file,
                    u64::from(no) + 1
                )));
            };
            if let Some(other) = slot {
                return Err(split_err(format!(
                    "'{}' and '{}' are both split {} of {n}",
                    other.file,
                    h.file,
                    u64::from(no) + 1
                )));
            }
            *slot = Some(h);
        }
    }
    let n = slots.len();
    let missing: Vec<String> = (0..n)
        .filter(|&i| slots[i].is_none())
        .map(|i| (i + 1).to_string())
        .collect();
    if !missing.is_empty() {
        return Err(split_err(format!(
            "split {} of {n} missing: pass the headers of all {n} files ({})",
            missing.join(", "),
            split_names(&model)
                .map(|names| names.join(", "))
                .unwrap_or_default()
        )));
    }
    let headers: Vec<GgufHeader> = slots.into_iter().flatten().collect();
    let held: u64 = headers.iter().map(|h| h.tensors.len() as u64).sum();

    let mut tensors = Vec::with_capacity(held as usize);
    let mut files = Vec::with_capacity(headers.len());
    let mut data_offsets = Vec::with_capacity(headers.len());
    let mut metadata = None;
    for (i, h) in headers.into_iter().enumerate() {
        tensors.extend(h.tensor_infos(i));
        files.push(h.file);
        data_offsets.push(h.data_offset);
        if i == 0 {
            metadata = Some(h.metadata);
        }
    }
    let metadata = metadata.ok_or_else(|| split_err("no files were given".into()))?;
    // A tensor in two splits is reported before a count that does not add up.
    let model = ModelFiles::new(
        Format::Gguf,
        files,
        data_offsets,
        tensors,
        ModelMetadata::Gguf(metadata),
    )?;
    if let Some((declared, f)) = declared_total {
        if declared != held {
            return Err(split_err(format!(
                "'{f}' says the model has {declared} tensors ({SPLIT_TENSORS_COUNT}) but its splits hold {held}"
            )));
        }
    }
    Ok(model)
}

/// The names (or URLs) of every file of a split model, from any one of them:
/// `…/model-00002-of-00003.gguf?download=true` gives the three names with `00001`, `00002` and
/// `00003`, everything around the numbers kept. A name that is not a split is returned alone.
pub fn split_names(name: &str) -> Result<Vec<String>> {
    // The last "-NNNNN-of-MMMMM.gguf" in the name.
    let b = name.as_bytes();
    let mut found = None;
    let mut from = 0;
    while let Some(i) = name.get(from..).and_then(|s| s.find("-of-")) {
        let at = from + i;
        from = at + 1;
        let no_start = b[..at]
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map_or(0, |p| p + 1);
        let count_end = at
            + 4
            + b[at + 4..]
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(b.len() - at - 4);
        if no_start == 0
            || no_start == at
            || b[no_start - 1] != b'-'
            || count_end == at + 4
            || !b[count_end..].starts_with(b".gguf")
        {
            continue;
        }
        found = Some((no_start, at, count_end));
    }
    let Some((no_start, at, count_end)) = found else {
        return Ok(vec![name.to_owned()]);
    };
    let err = |detail: String| Error::SplitModel {
        file: name.to_owned(),
        detail,
    };
    let number = |digits: &str| digits.parse::<u32>().ok();
    let (Some(no), Some(count)) = (
        number(&name[no_start..at]),
        number(&name[at + 4..count_end]),
    ) else {
        return Err(err("its split numbers are too large".into()));
    };
    if count == 0 || no == 0 || no > count {
        return Err(err(format!(
            "it claims to be split {no} of {count}; splits are numbered from 1 to their count"
        )));
    }
    if count > MAX_SPLITS {
        return Err(err(format!(
            "it claims {count} splits, more than the {MAX_SPLITS} allowed"
        )));
    }
    let width = at - no_start;
    Ok((1..=count)
        .map(|k| format!("{}{k:0width$}{}", &name[..no_start], &name[at..]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny GGUF writer for hand-made headers.
    #[derive(Default)]
    struct W(Vec<u8>);
    impl W {
        fn u32(mut self, v: u32) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend(v.to_le_bytes());
            self
        }
        fn str(self, s: &str) -> Self {
            let mut w = self.u64(s.len() as u64);
            w.0.extend(s.as_bytes());
            w
        }
        fn head(n_tensors: u64, n_kv: u64) -> Self {
            W(b"GGUF".to_vec()).u32(3).u64(n_tensors).u64(n_kv)
        }
        fn tensor(self, name: &str, dims: &[u64], ty: u32, off: u64) -> Self {
            let mut w = self.str(name).u32(dims.len() as u32);
            for &d in dims {
                w = w.u64(d);
            }
            w.u32(ty).u64(off)
        }
    }

    fn parse(b: &[u8]) -> Result<Parsed<GgufHeader>> {
        GgufHeader::parse(b, None, "t.gguf")
    }

    #[test]
    fn minimal_header_parses_and_aligns() {
        let b = W::head(1, 1)
            .str("general.architecture")
            .u32(T_STRING)
            .str("llama")
            .tensor("w", &[64, 2], 0, 0)
            .0;
        let Parsed::Complete { header, header_len } = parse(&b).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(header_len % 32, 0);
        assert!(header_len >= b.len() as u64 && header_len < b.len() as u64 + 32);
        assert_eq!(header.metadata.architecture().unwrap(), "llama");
        let t = &header.tensors[0];
        assert_eq!((t.shape.as_slice(), t.bytes), (&[2usize, 64][..], 512));
        // Every shorter prefix asks for more, never for fewer bytes than it has.
        for n in 0..b.len() {
            match parse(&b[..n]).unwrap() {
                Parsed::NeedMore { at_least } => assert!(at_least > n && at_least <= b.len()),
                Parsed::Complete { .. } => panic!("complete at {n}"),
            }
        }
    }

    #[test]
    fn lying_array_count_needs_no_memory() {
        let b = W::head(0, 1)
            .str("tokenizer.ggml.tokens")
            .u32(T_ARRAY)
            .u32(T_STRING)
            .u64(1 << 40)
            .0;
        let e = parse(&b).unwrap_err();
        assert_eq!(e.code(), "header_limit", "{e}");
        let b = W::head(0, 1).str("a").u32(T_ARRAY).u32(T_U32).u64(1000).0;
        match parse(&b).unwrap() {
            Parsed::NeedMore { at_least } => assert_eq!(at_least, b.len() + 4000),
            _ => panic!(),
        }
    }

    #[test]
    fn integers_convert_losslessly_only() {
        let b = W::head(0, 2)
            .str("split.count")
            .u32(T_U32)
            .u32(3)
            .str("neg")
            .u32(T_I32)
            .u32(-5i32 as u32)
            .0;
        let h = parse(&b).unwrap().complete().unwrap();
        assert_eq!(h.metadata.u64("split.count").unwrap(), 3);
        assert_eq!(h.metadata.get::<i64>("neg").unwrap(), -5);
        let e = h.metadata.u32("neg").unwrap_err();
        assert_eq!(e.code(), "metadata_type");
        assert!(e.to_string().contains("i32 -5"), "{e}");
        assert_eq!(
            h.metadata.f32("split.count").unwrap_err().code(),
            "metadata_type"
        );
        assert_eq!(
            h.metadata.u32("nope").unwrap_err().code(),
            "missing_metadata"
        );
    }

    #[test]
    fn split_names_from_one_name() {
        assert_eq!(
            split_names("https://h/x/m-00002-of-00003.gguf?download=1").unwrap(),
            vec![
                "https://h/x/m-00001-of-00003.gguf?download=1",
                "https://h/x/m-00002-of-00003.gguf?download=1",
                "https://h/x/m-00003-of-00003.gguf?download=1",
            ]
        );
        assert_eq!(split_names("model.gguf").unwrap(), vec!["model.gguf"]);
        assert_eq!(
            split_names("a-of-b-1-of-2.gguf").unwrap(),
            vec!["a-of-b-1-of-2.gguf", "a-of-b-2-of-2.gguf"]
        );
        assert_eq!(
            split_names("m-00004-of-00003.gguf").unwrap_err().code(),
            "split_model"
        );
        assert_eq!(
            split_names("m-00000-of-00003.gguf").unwrap_err().code(),
            "split_model"
        );
        assert_eq!(
            split_names("m-1-of-99999999999.gguf").unwrap_err().code(),
            "split_model"
        );
        assert_eq!(split_names("-of-.gguf").unwrap(), vec!["-of-.gguf"]);
    }
}
