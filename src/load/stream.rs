//! One model file from a [`ByteSource`] into GPU memory: the header is parsed as soon as enough
//! bytes are there, every tensor is allocated (so a model too large for the device fails before
//! the rest is downloaded), then the data streams through a [`StreamUploader`], with progress
//! reports, cancellation between chunks and, where an expected one is given, the file's sha256
//! checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuTensor};
use crate::load::{ByteSource, StreamUploader, TensorPlan, DEFAULT_PIECE_BUDGET};

/// What the model layer needs to know of a loaded tensor, wherever it lives.
pub trait StoredTensor: Clone {
    fn name(&self) -> &str;
    /// Row-major, innermost last.
    fn shape(&self) -> &[usize];
    fn dtype(&self) -> crate::quant::DType;
    /// Bytes of device (or host) memory it takes.
    fn size_bytes(&self) -> u64;
    /// Product of all but the innermost dimension.
    fn rows(&self) -> usize {
        let s = self.shape();
        s[..s.len().saturating_sub(1)].iter().product()
    }
    /// The innermost dimension (1 for a scalar).
    fn cols(&self) -> usize {
        self.shape().last().copied().unwrap_or(1)
    }
}

/// Receives a file's bytes in order and keeps its tensors (see [`LoadTarget`]).
pub trait TensorSink {
    type Tensor;
    fn feed(&mut self, chunk: &[u8]) -> Result<()>;
    /// The tensors, in plan order by offset; an error when the stream ended early.
    fn finish(self) -> Result<Vec<Self::Tensor>>;
}

/// Where a load puts a model's tensors: GPU memory ([`GpuContext`]), or host memory for the CPU
/// backend ([`crate::cpu::CpuContext`]).
pub trait LoadTarget {
    type Tensor: StoredTensor;
    type Sink<'a>: TensorSink<Tensor = Self::Tensor>
    where
        Self: 'a;
    /// Allocates every tensor `plans` lists (so a model that does not fit fails here, before its
    /// data is downloaded) and prepares to receive the file from offset 0.
    fn sink<'a>(&'a self, plans: Vec<TensorPlan>, opts: &LoadOptions<'_>)
        -> Result<Self::Sink<'a>>;
    /// After the data: whether the device is still usable.
    fn check_health(&self) -> Result<()>;
}

impl StoredTensor for GpuTensor {
    fn name(&self) -> &str {
        GpuTensor::name(self)
    }
    fn shape(&self) -> &[usize] {
        GpuTensor::shape(self)
    }
    fn dtype(&self) -> crate::quant::DType {
        GpuTensor::dtype(self)
    }
    fn size_bytes(&self) -> u64 {
        GpuTensor::size_bytes(self)
    }
}

impl LoadTarget for GpuContext {
    type Tensor = GpuTensor;
    type Sink<'a> = StreamUploader<'a>;

    fn sink<'a>(
        &'a self,
        plans: Vec<TensorPlan>,
        opts: &LoadOptions<'_>,
    ) -> Result<StreamUploader<'a>> {
        StreamUploader::with_binding_limit(self, plans, opts.piece_budget, opts.max_binding_bytes)
    }

    fn check_health(&self) -> Result<()> {
        GpuContext::check_health(self)
    }
}

/// What a header parser says about a prefix of the file.
pub enum HeaderStep<H> {
    /// The header continues: at least this many bytes of the file are needed in all.
    NeedMore(usize),
    /// The header and the tensors it lists.
    Done(H, Vec<TensorPlan>),
}

/// Cancels a load from another task or thread (in the browser: an `AbortSignal`).
#[derive(Clone, Debug, Default)]
pub struct AbortFlag(Arc<AtomicBool>);

impl AbortFlag {
    pub fn abort(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_aborted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How far a load has come: the file that just advanced, and all files together (a model of
/// several files, split or sharded, loads them concurrently).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub file: String,
    /// Which of the model's `files` this is.
    pub file_index: usize,
    pub files: usize,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Over all files; the total is known once every file's size is.
    pub all_done: u64,
    pub all_total: Option<u64>,
}

/// Options of a load.
pub struct LoadOptions<'a> {
    /// Called after every chunk.
    pub progress: Option<&'a mut dyn FnMut(&Progress)>,
    pub abort: AbortFlag,
    /// The file's expected sha256 (64 hex digits); a mismatch fails the load.
    pub sha256: Option<String>,
    /// Host memory for repacking pieces.
    pub piece_budget: usize,
    /// Matrices whose GPU layout is larger than this are split by rows into several tensors
    /// (see [`crate::load::part_name`]); default (and at most): the adapter's storage-binding
    /// limit. Smaller values exercise the split path on small models.
    pub max_binding_bytes: Option<u64>,
    /// Called with the header of a model's only file as soon as it is parsed, before any
    /// tensor is allocated or read: an error ends the load there (an engine's load refuses a
    /// model it cannot run before its weights download).
    pub check_header: Option<&'a HeaderCheck>,
    /// Called with a model folder's companion files (`config.json`, …) once they are read,
    /// before any weight file is opened: an error ends the load there.
    pub check_companions: Option<&'a CompanionsCheck>,
}

/// See [`LoadOptions::check_header`].
pub type HeaderCheck = dyn Fn(&crate::load::FileHeader) -> Result<()>;
/// See [`LoadOptions::check_companions`].
pub type CompanionsCheck = dyn Fn(&std::collections::BTreeMap<String, String>) -> Result<()>;

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            progress: None,
            abort: AbortFlag::default(),
            sha256: None,
            piece_budget: DEFAULT_PIECE_BUDGET,
            max_binding_bytes: None,
            check_header: None,
            check_companions: None,
        }
    }
}

/// A loaded file: its parsed header and its tensors (ordered by file offset).
pub struct LoadedFile<H, T = GpuTensor> {
    pub header: H,
    pub tensors: Vec<T>,
    pub bytes: u64,
    /// The file's sha256 (64 hex digits), computed only where an expected one was given (and
    /// then equal to it).
    pub sha256: Option<String>,
}

/// Reads `source` to the end, parsing its header with `parse(prefix, file_size)` and uploading its
/// tensors into `target`.
pub async fn load_stream<S: ByteSource, H, D: LoadTarget>(
    target: &D,
    source: &mut S,
    parse: impl Fn(&[u8], Option<u64>) -> Result<HeaderStep<H>>,
    opts: &mut LoadOptions<'_>,
) -> Result<LoadedFile<H, D::Tensor>> {
    let name = source.name().to_string();
    // Hashing costs more than the rest of a load from the cache in wasm (no SHA instructions
    // there): only a file with an expected digest is hashed.
    let mut hasher = opts.sha256.is_some().then(Sha256::new);
    let mut done = 0u64;
    // The total is asked for each time: a lazily opened source learns it with its first chunk.
    let report = |done: u64, total: Option<u64>, opts: &mut LoadOptions<'_>| {
        if let Some(p) = opts.progress.as_mut() {
            p(&Progress {
                file: name.clone(),
                file_index: 0,
                files: 1,
                bytes_done: done,
                bytes_total: total,
                all_done: done,
                all_total: total,
            });
        }
    };

    // The header: gather chunks until the parser has all it needs.
    let mut head = Vec::new();
    let mut needed = 0usize;
    let (header, plans) = loop {
        if head.len() >= needed {
            match parse(&head, source.total())? {
                HeaderStep::Done(h, plans) => break (h, plans),
                HeaderStep::NeedMore(n) => needed = n.max(head.len() + 1),
            }
        }
        if opts.abort.is_aborted() {
            return Err(Error::Aborted);
        }
        match source.next_chunk().await? {
            Some(chunk) => {
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                done += chunk.len() as u64;
                head.extend_from_slice(&chunk);
                report(done, source.total(), opts);
            }
            None => {
                // Let the parser say precisely what is missing.
                match parse(&head, source.total())? {
                    HeaderStep::Done(h, plans) => break (h, plans),
                    HeaderStep::NeedMore(n) => {
                        return Err(Error::FileTruncated {
                            file: name,
                            detail: format!(
                                "the header needs at least {n} bytes but the file has {}",
                                head.len()
                            ),
                        })
                    }
                }
            }
        }
    };

    let mut uploader = target.sink(plans, opts)?;
    uploader.feed(&head)?;
    drop(head);
    while let Some(chunk) = {
        if opts.abort.is_aborted() {
            // Dropping the uploader frees the tensors allocated so far.
            return Err(Error::Aborted);
        }
        source.next_chunk().await?
    } {
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
        done += chunk.len() as u64;
        uploader.feed(&chunk)?;
        report(done, source.total(), opts);
    }
    let tensors = uploader.finish().map_err(|e| match e {
        Error::InvalidTensor { tensor, detail } => Error::FileTruncated {
            file: name.clone(),
            detail: format!("tensor '{tensor}': {detail}"),
        },
        other => other,
    })?;
    let sha256 = hasher.map(|h| {
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    });
    if let (Some(expected), Some(actual)) = (&opts.sha256, &sha256) {
        if !expected.eq_ignore_ascii_case(actual) {
            return Err(Error::Integrity {
                source_name: name,
                expected: expected.clone(),
                actual: actual.clone(),
            });
        }
    }
    target.check_health()?;
    Ok(LoadedFile {
        header,
        tensors,
        bytes: done,
        sha256,
    })
}
