//! Model files of either format into GPU memory: the header decides the format, the tensors it
//! lists become the upload plan, and [`load_stream`] does the rest.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::formats::{
    next_fetch_len, GgufHeader, ModelFiles, Parsed, SafetensorsHeader, TensorInfo,
};
use crate::gpu::GpuTensor;
use crate::load::{
    load_stream, ByteSource, HeaderStep, LoadOptions, LoadTarget, Progress, StoredTensor,
    TensorPlan,
};
use crate::model::arch::other_modality;

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
            // A multimodal checkpoint's image encoder stays in the file (its bytes are skipped):
            // only the language model runs.
            let plans = header
                .tensor_infos(0)
                .into_iter()
                .filter(|t| !other_modality(&t.name))
                .map(plan)
                .collect();
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

/// A model file in GPU memory (or host memory, for the CPU backend).
pub struct LoadedModel<T = GpuTensor> {
    pub header: FileHeader,
    pub tensors: HashMap<String, T>,
    /// Bytes of GPU (or host) memory the tensors take.
    pub gpu_bytes: u64,
    /// The file's sha256, computed (and checked) only where an expected one was given.
    pub sha256: Option<String>,
}

/// Loads one model file (GGUF or safetensors) from `source` into `target`'s memory.
pub async fn load_model_file<S: ByteSource, D: LoadTarget>(
    target: &D,
    source: &mut S,
    opts: &mut LoadOptions<'_>,
) -> Result<LoadedModel<D::Tensor>> {
    let name = source.name().to_string();
    let check = opts.check_header;
    let parse = |p: &[u8], size: Option<u64>| {
        let step = parse_header(p, size, &name)?;
        if let (HeaderStep::Done(header, _), Some(check)) = (&step, check) {
            check(header)?;
        }
        Ok(step)
    };
    let loaded = load_stream(target, source, parse, opts).await?;
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

/// One file of a model to load, with its expected sha256 if known.
pub struct ModelFile<S> {
    pub source: S,
    pub sha256: Option<String>,
}

/// A model of one or several files in GPU (or host) memory, described as one.
pub struct LoadedModelFiles<T = GpuTensor> {
    pub files: ModelFiles,
    pub tensors: HashMap<String, T>,
    pub gpu_bytes: u64,
    /// Per file, in order: its sha256 where an expected one was given (and checked).
    pub sha256: Vec<Option<String>>,
    /// The text files that came with the weights (`config.json`, `tokenizer.json`, …) by name.
    pub companions: std::collections::BTreeMap<String, String>,
    /// The weights of a sentence-transformers folder's `Dense` modules, by file
    /// (`2_Dense/model.safetensors`): see [`crate::load::folder::FolderPlan`].
    pub module_weights: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Loads a model made of several files as one: the splits of a GGUF model
/// (`…-00001-of-00003.gguf`, in any order) or the shards of a safetensors checkpoint (with its
/// `index`, which says which tensors each shard holds). Up to `concurrency` files download at
/// once; progress reports each file and the total; an abort stops them all. The files must
/// belong together (the split counts or the index agree) and no tensor may be in two of them.
pub async fn load_model<S: ByteSource, D: LoadTarget>(
    target: &D,
    files: Vec<ModelFile<S>>,
    index: Option<&crate::formats::SafetensorsIndex>,
    concurrency: usize,
    mut opts: LoadOptions<'_>,
) -> Result<LoadedModelFiles<D::Tensor>> {
    use std::cell::RefCell;

    use futures_util::stream::{self, StreamExt, TryStreamExt};

    let n = files.len();
    // Progress and size of every file (sizes may be learnt only when a download starts), shared
    // by the concurrent loads.
    let done = RefCell::new(vec![(0u64, None::<u64>); n]);
    let report = RefCell::new(opts.progress.take());
    let abort = opts.abort.clone();
    let budget = opts.piece_budget;
    let max_binding_bytes = opts.max_binding_bytes;
    // A file's header describes the model only when it is the model's only file.
    let check_header = opts.check_header.filter(|_| n == 1 && index.is_none());

    let loads = files.into_iter().enumerate().map(|(i, mut file)| {
        let (done, report, abort) = (&done, &report, abort.clone());
        async move {
            let mut forward = |p: &Progress| {
                let (all_done, all_total) = {
                    let mut d = done.borrow_mut();
                    d[i] = (p.bytes_done, p.bytes_total);
                    (d.iter().map(|f| f.0).sum(), d.iter().map(|f| f.1).sum())
                };
                if let Some(r) = report.borrow_mut().as_mut() {
                    r(&Progress {
                        file_index: i,
                        files: n,
                        all_done,
                        all_total,
                        ..p.clone()
                    });
                }
            };
            let mut file_opts = LoadOptions {
                progress: Some(&mut forward),
                abort,
                sha256: file.sha256.take(),
                piece_budget: budget,
                max_binding_bytes,
                check_header,
                check_companions: None,
            };
            let loaded = load_model_file(target, &mut file.source, &mut file_opts).await;
            if loaded.is_err() {
                // One failure ends the load: stop the other files between chunks.
                file_opts.abort.abort();
            }
            loaded.map(|l| (i, l))
        }
    });
    let mut results: Vec<(usize, LoadedModel<D::Tensor>)> = stream::iter(loads)
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    results.sort_by_key(|(i, _)| *i);

    let mut tensors = HashMap::new();
    let mut gpu_bytes = 0;
    let mut sha256 = Vec::with_capacity(n);
    let mut headers = Vec::with_capacity(n);
    for (_, loaded) in results {
        gpu_bytes += loaded.gpu_bytes;
        sha256.push(loaded.sha256);
        tensors.extend(loaded.tensors);
        headers.push(loaded.header);
    }
    let files = merge_headers(headers, index)?;
    Ok(LoadedModelFiles {
        files,
        tensors,
        gpu_bytes,
        sha256,
        companions: Default::default(),
        module_weights: Default::default(),
    })
}

/// One model from the headers of its files: a GGUF file or the splits of one, a safetensors file,
/// or the shards of a checkpoint with its `index` (in any order).
pub fn merge_headers(
    headers: Vec<FileHeader>,
    index: Option<&crate::formats::SafetensorsIndex>,
) -> Result<ModelFiles> {
    let mut ggufs = Vec::new();
    let mut safetensors = Vec::new();
    for h in headers {
        match h {
            FileHeader::Gguf(h) => ggufs.push(h),
            FileHeader::Safetensors(h) => safetensors.push(h),
        }
    }
    match (ggufs.len(), safetensors.len(), index) {
        (1, 0, _) => FileHeader::Gguf(ggufs.remove(0)).into_model_files(),
        (_, 0, _) => crate::formats::merge_splits(ggufs),
        (0, _, Some(index)) => {
            // merge_shards takes the shards in the index's order, whatever order they came in.
            let place = |h: &crate::formats::SafetensorsHeader| {
                index
                    .shards
                    .iter()
                    .position(|s| h.file == s.file || h.file.ends_with(&format!("/{}", s.file)))
            };
            safetensors.sort_by_key(|h| place(h).unwrap_or(usize::MAX));
            crate::formats::merge_shards(index, safetensors)
        }
        (0, 1, None) => FileHeader::Safetensors(safetensors.remove(0)).into_model_files(),
        (0, _, None) => Err(Error::ShardIndex {
            file: crate::load::folder::INDEX_FILE.into(),
            detail: format!(
                "{} safetensors files were given without the index that says how they belong \
                 together",
                safetensors.len()
            ),
        }),
        _ => Err(Error::SplitModel {
            file: "(several files)".into(),
            detail: "GGUF and safetensors files cannot make one model".into(),
        }),
    }
}

/// Loads a model directory (see [`crate::load::folder`]) as one model, its companion files too.
#[cfg(not(target_arch = "wasm32"))]
pub async fn load_directory<D: LoadTarget>(
    target: &D,
    dir: &std::path::Path,
    concurrency: usize,
    opts: LoadOptions<'_>,
) -> Result<LoadedModelFiles<D::Tensor>> {
    let plan = crate::load::folder::plan_directory(dir)?;
    if let Some(check) = opts.check_companions {
        check(&plan.companions)?;
    }
    let files = plan
        .weights
        .iter()
        .map(|w| {
            Ok(ModelFile {
                source: crate::load::FileSource::open(w.as_ref())?,
                sha256: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut model = load_model(target, files, plan.index.as_ref(), concurrency, opts).await?;
    model.companions = plan.companions;
    model.module_weights = plan.module_weights;
    Ok(model)
}
