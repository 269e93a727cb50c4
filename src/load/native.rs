//! Loading a model natively from what a user types: a file path (any split of a split GGUF
//! model brings the others), an http(s) URL, or a model folder.

use std::path::Path;

use crate::error::Result;
use crate::formats::split_names;

use crate::load::{
    load_directory, load_model, ByteSource, FileSource, HttpSource, LoadOptions, LoadTarget,
    LoadedModelFiles, ModelFile,
};

/// A file or a download.
pub enum NativeSource {
    File(FileSource),
    Http(HttpSource),
}

impl NativeSource {
    /// Opens a path, or starts the download of an http(s) URL.
    pub fn open(spec: &str) -> Result<Self> {
        if is_url(spec) {
            Ok(NativeSource::Http(HttpSource::get(spec)?))
        } else {
            Ok(NativeSource::File(FileSource::open(Path::new(spec))?))
        }
    }
}

impl ByteSource for NativeSource {
    fn name(&self) -> &str {
        match self {
            NativeSource::File(s) => s.name(),
            NativeSource::Http(s) => s.name(),
        }
    }

    fn total(&self) -> Option<u64> {
        match self {
            NativeSource::File(s) => s.total(),
            NativeSource::Http(s) => s.total(),
        }
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        match self {
            NativeSource::File(s) => s.next_chunk().await,
            NativeSource::Http(s) => s.next_chunk().await,
        }
    }
}

pub fn is_url(spec: &str) -> bool {
    spec.starts_with("http://") || spec.starts_with("https://")
}

/// The model folder a local `spec` stands for: a directory, or the directory of a checkpoint's
/// `model.safetensors.index.json` (its config and tokenizer files are there).
pub fn local_folder(spec: &str) -> Option<&Path> {
    if is_url(spec) {
        return None;
    }
    let path = Path::new(spec);
    if path.is_dir() {
        return Some(path);
    }
    let index = path.file_name()? == crate::load::folder::INDEX_FILE;
    path.parent().filter(|dir| index && dir.is_dir())
}

/// Loads the model `spec` names into GPU memory: a folder (weights and companion files), or a
/// file or URL with the other splits of a split GGUF model. Up to 4 files load at once.
pub async fn load_native<D: LoadTarget>(
    target: &D,
    spec: &str,
    opts: LoadOptions<'_>,
) -> Result<LoadedModelFiles<D::Tensor>> {
    const CONCURRENCY: usize = 4;
    if let Some(dir) = local_folder(spec) {
        return load_directory(target, dir, CONCURRENCY, opts).await;
    }
    let files = split_names(spec)?
        .iter()
        .map(|name| {
            Ok(ModelFile {
                source: NativeSource::open(name)?,
                sha256: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    load_model(target, files, None, CONCURRENCY, opts).await
}
