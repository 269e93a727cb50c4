//! Where model bytes come from: a sequential stream of chunks with, when the source knows it,
//! a total size. Natively: files and HTTP(S) URLs. In the browser (src/web.rs builds them):
//! fetch responses, JS bytes, `ReadableStream`s and `File`s.

use std::future::Future;

use crate::error::{Error, Result};

/// Bytes read per chunk from files and the network.
pub const CHUNK: usize = 1 << 20;

/// A model file read front to back.
pub trait ByteSource {
    /// How the file is named in messages (path or URL).
    fn name(&self) -> &str;
    /// The file's size, when known before reading it (file metadata, Content-Length).
    fn total(&self) -> Option<u64>;
    /// The next chunk, or `None` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>>>;
}

/// A source lent out (so its owner can still act on it after the load, e.g. evict a cached copy).
impl<S: ByteSource> ByteSource for &mut S {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn total(&self) -> Option<u64> {
        (**self).total()
    }

    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>>> {
        (**self).next_chunk()
    }
}

/// An I/O failure while reading `name`.
pub fn io_error(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Io {
        source_name: name.to_string(),
        detail: e.to_string(),
    }
}

/// Bytes already in memory (tests, and JS `ArrayBuffer`s).
pub struct MemorySource {
    name: String,
    data: Vec<u8>,
    at: usize,
    chunk: usize,
}

impl MemorySource {
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        Self::with_chunk(name, data, CHUNK)
    }

    /// Hands the bytes out `chunk` at a time (tests use odd sizes).
    pub fn with_chunk(name: impl Into<String>, data: Vec<u8>, chunk: usize) -> Self {
        MemorySource {
            name: name.into(),
            data,
            at: 0,
            chunk: chunk.max(1),
        }
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn total(&self) -> Option<u64> {
        Some(self.data.len() as u64)
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.at >= self.data.len() {
            return Ok(None);
        }
        let end = (self.at + self.chunk).min(self.data.len());
        let out = self.data[self.at..end].to_vec();
        self.at = end;
        Ok(Some(out))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::fs::File;
    use std::io::Read;
    use std::path::Path;

    use super::*;

    /// Up to [`CHUNK`] bytes from a blocking reader; `None` at the end.
    fn read_chunk(reader: &mut impl Read, name: &str) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; CHUNK];
        let n = reader.read(&mut buf).map_err(|e| io_error(name, e))?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// A file on disk.
    pub struct FileSource {
        name: String,
        file: File,
        total: u64,
    }

    impl FileSource {
        pub fn open(path: &Path) -> Result<Self> {
            let name = path.display().to_string();
            let file = File::open(path).map_err(|e| io_error(&name, e))?;
            let total = file.metadata().map_err(|e| io_error(&name, e))?.len();
            Ok(FileSource { name, file, total })
        }
    }

    impl ByteSource for FileSource {
        fn name(&self) -> &str {
            &self.name
        }

        fn total(&self) -> Option<u64> {
            Some(self.total)
        }

        async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
            read_chunk(&mut self.file, &self.name)
        }
    }

    /// An HTTP(S) download, streamed.
    pub struct HttpSource {
        name: String,
        reader: Box<dyn Read + Send>,
        total: Option<u64>,
    }

    impl HttpSource {
        pub fn get(url: &str) -> Result<Self> {
            let response = ureq::get(url).call().map_err(|e| match e {
                ureq::Error::StatusCode(status) => Error::Http {
                    url: url.to_string(),
                    status,
                },
                other => io_error(url, other),
            })?;
            let total = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let reader = Box::new(response.into_body().into_reader());
            Ok(HttpSource {
                name: url.to_string(),
                reader,
                total,
            })
        }
    }

    impl ByteSource for HttpSource {
        fn name(&self) -> &str {
            &self.name
        }

        fn total(&self) -> Option<u64> {
            self.total
        }

        async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
            read_chunk(&mut self.reader, &self.name)
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{FileSource, HttpSource};
