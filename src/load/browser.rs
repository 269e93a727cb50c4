//! Byte sources of the browser: `fetch` (with the Cache API so weights are downloaded once),
//! `ReadableStream`s, `Blob`s/`File`s and JS byte arrays. Works on pages, in workers and in
//! extension service workers (everything goes through the global scope, not `window`).

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::{Error, Result};
use crate::load::{ByteSource, CHUNK};

/// The Cache API bucket holding downloaded model files.
pub const CACHE_NAME: &str = "pocketlm-weights-v1";

/// A file the package's downloader (www/src/storage.js) committed is stored as the pieces it
/// was downloaded in, each an entry of its own under [`OWN_KEYS`], and a small entry under the
/// file's URL that lists them (JSON `{keys, sizes}`) and carries this header (the count): the
/// file is written once, in pieces a resumed download can keep, and never copied.
const PIECES_HEADER: &str = "x-pocketlm-pieces";
/// The prefix of the package's own entries, which are not files (a download's pieces).
const OWN_KEYS: &str = "https://pocketlm.invalid/";

/// The pieces of a committed file (see [`PIECES_HEADER`]).
#[derive(serde::Deserialize)]
struct PieceList {
    keys: Vec<String>,
    sizes: Vec<u64>,
}

fn js_message(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn is_abort(e: &JsValue) -> bool {
    Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "AbortError")
}

fn io(name: &str, e: &JsValue) -> Error {
    if is_abort(e) {
        Error::Aborted
    } else {
        crate::load::io_error(name, js_message(e))
    }
}

fn global_get(key: &str) -> Option<JsValue> {
    Reflect::get(&js_sys::global(), &key.into())
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

/// `target[name]` as a function.
fn method(target: &JsValue, name: &str) -> std::result::Result<Function, JsValue> {
    Reflect::get(target, &name.into())?.dyn_into()
}

async fn call(
    target: &JsValue,
    name: &str,
    args: &[&JsValue],
) -> std::result::Result<JsValue, JsValue> {
    let f = method(target, name)?;
    let array = js_sys::Array::new();
    for a in args {
        array.push(a);
    }
    let p: Promise = f.apply(target, &array)?.dyn_into()?;
    JsFuture::from(p).await
}

/// A `ReadableStream` of bytes read to the end, or the bodies of a cached file's pieces one
/// after the other.
pub struct StreamSource {
    name: String,
    reader: Option<JsValue>,
    total: Option<u64>,
    /// The cache and the keys of the pieces not opened yet.
    pieces: Option<(JsValue, std::vec::IntoIter<String>)>,
}

fn reader_of(name: &str, stream: &JsValue) -> Result<JsValue> {
    let get_reader = method(stream, "getReader")
        .map_err(|_| crate::load::io_error(name, "not a ReadableStream"))?;
    get_reader.call0(stream).map_err(|e| io(name, &e))
}

impl StreamSource {
    pub fn new(name: impl Into<String>, stream: &JsValue, total: Option<u64>) -> Result<Self> {
        let name = name.into();
        let reader = Some(reader_of(&name, stream)?);
        Ok(StreamSource {
            name,
            reader,
            total,
            pieces: None,
        })
    }

    /// The file `name` made of the entries `keys` of `cache`, read in order.
    fn pieces(name: &str, cache: &JsValue, keys: Vec<String>, total: u64) -> Self {
        StreamSource {
            name: name.to_string(),
            reader: None,
            total: Some(total),
            pieces: Some((cache.clone(), keys.into_iter())),
        }
    }

    /// Stops reading (the download is cancelled when this is a fetch body).
    pub fn cancel(&self) {
        if let Some(reader) = &self.reader {
            if let Ok(f) = method(reader, "cancel") {
                let _ = f.call0(reader);
            }
        }
    }

    /// The reader to read from: the current one, or the next piece's (None at the end).
    async fn current(&mut self) -> Result<Option<JsValue>> {
        if self.reader.is_none() {
            let Some((cache, keys)) = self.pieces.as_mut() else {
                return Ok(None);
            };
            let Some(key) = keys.next() else {
                return Ok(None);
            };
            let hit = call(cache, "match", &[&key.as_str().into()])
                .await
                .map_err(|e| io(&self.name, &e))?;
            if hit.is_undefined() {
                return Err(crate::load::io_error(
                    &self.name,
                    "a piece of its cached copy is missing; delete it (PocketLM.cache.delete) and load it again",
                ));
            }
            let body = Reflect::get(&hit, &"body".into()).map_err(|e| io(&self.name, &e))?;
            self.reader = Some(reader_of(&self.name, &body)?);
        }
        Ok(self.reader.clone())
    }
}

impl ByteSource for StreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn total(&self) -> Option<u64> {
        self.total
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let r = loop {
            let Some(reader) = self.current().await? else {
                return Ok(None);
            };
            let r = call(&reader, "read", &[])
                .await
                .map_err(|e| io(&self.name, &e))?;
            if Reflect::get(&r, &"done".into())
                .ok()
                .and_then(|d| d.as_bool())
                != Some(true)
            {
                break r;
            }
            // The end of this stream: the next piece's, if any.
            self.reader = None;
        };
        let value = Reflect::get(&r, &"value".into()).map_err(|e| io(&self.name, &e))?;
        let bytes: Uint8Array = value.dyn_into().map_err(|_| {
            crate::load::io_error(&self.name, "the stream yielded something other than bytes")
        })?;
        Ok(Some(bytes.to_vec()))
    }
}

/// A JS `Uint8Array` (or `ArrayBuffer`) read a chunk at a time, so it is never copied into wasm
/// memory whole.
pub struct JsBytesSource {
    name: String,
    bytes: Uint8Array,
    at: u32,
}

impl JsBytesSource {
    pub fn new(name: impl Into<String>, bytes: Uint8Array) -> Self {
        JsBytesSource {
            name: name.into(),
            bytes,
            at: 0,
        }
    }
}

impl ByteSource for JsBytesSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn total(&self) -> Option<u64> {
        Some(u64::from(self.bytes.length()))
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let len = self.bytes.length();
        if self.at >= len {
            return Ok(None);
        }
        let end = (self.at + CHUNK as u32).min(len);
        let out = self.bytes.subarray(self.at, end).to_vec();
        self.at = end;
        Ok(Some(out))
    }
}

/// A downloaded (or cached) file: its body as a stream, and what it takes to undo the caching
/// when the file turns out to be bad.
pub struct Download {
    pub source: StreamSource,
    /// Whether the bytes come from the Cache API rather than the network.
    pub from_cache: bool,
    cache: Option<JsValue>,
    pending_put: Option<Promise>,
    url: String,
    /// The cache keys of a pieced copy's pieces.
    piece_keys: Vec<String>,
}

impl Download {
    /// Waits until the cache holds the file (so a load that resolved can be repeated without the
    /// network); a failed write was already reported as a warning.
    pub async fn settle(&mut self) {
        if let Some(put) = self.pending_put.take() {
            let _ = JsFuture::from(put).await;
        }
    }

    /// Removes the cached copy (after an integrity failure), once any pending write is done.
    pub async fn evict(&mut self) {
        self.settle().await;
        if let Some(cache) = &self.cache {
            for key in self.piece_keys.iter().chain([&self.url]) {
                let _ = call(cache, "delete", &[&key.as_str().into()]).await;
            }
        }
    }
}

async fn open_cache() -> Option<JsValue> {
    let caches = global_get("caches")?;
    call(&caches, "open", &[&CACHE_NAME.into()]).await.ok()
}

/// The header `name` of a `Response`.
fn header(response: &JsValue, name: &str) -> Option<String> {
    let headers = Reflect::get(response, &"headers".into()).ok()?;
    let get = method(&headers, "get").ok()?;
    get.call1(&headers, &name.into()).ok()?.as_string()
}

fn content_length(response: &JsValue) -> Option<u64> {
    header(response, "content-length")?.parse().ok()
}

/// Opens `url`: from the Cache API when `use_cache` and a copy is there (no network request),
/// otherwise with `fetch` — storing the response in the cache as it streams when `use_cache`
/// (a full quota only logs a warning). `signal` aborts the request.
pub async fn open_url(url: &str, use_cache: bool, signal: Option<&JsValue>) -> Result<Download> {
    let cache = if use_cache { open_cache().await } else { None };
    if let Some(cache) = &cache {
        if let Ok(hit) = call(cache, "match", &[&url.into()]).await {
            if !hit.is_undefined() {
                let (source, piece_keys) = match header(&hit, PIECES_HEADER) {
                    Some(_) => {
                        let text = call(&hit, "text", &[]).await.map_err(|e| io(url, &e))?;
                        let list: PieceList = text
                            .as_string()
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .filter(|l: &PieceList| l.keys.len() == l.sizes.len())
                            .ok_or_else(|| {
                                crate::load::io_error(
                                    url,
                                    "its cached copy's list of pieces is unreadable; delete it (PocketLM.cache.delete) and load it again",
                                )
                            })?;
                        let total = list.sizes.iter().sum();
                        let source = StreamSource::pieces(url, cache, list.keys.clone(), total);
                        (source, list.keys)
                    }
                    None => {
                        let body = Reflect::get(&hit, &"body".into()).map_err(|e| io(url, &e))?;
                        (
                            StreamSource::new(url, &body, content_length(&hit))?,
                            Vec::new(),
                        )
                    }
                };
                return Ok(Download {
                    source,
                    from_cache: true,
                    cache: Some(cache.clone()),
                    pending_put: None,
                    url: url.to_string(),
                    piece_keys,
                });
            }
        }
    }
    let fetch = global_get("fetch")
        .ok_or_else(|| crate::load::io_error(url, "this context has no fetch()"))?;
    let init = Object::new();
    if let Some(signal) = signal {
        let _ = Reflect::set(&init, &"signal".into(), signal);
    }
    let fetch: Function = fetch.dyn_into().map_err(|e| io(url, &e))?;
    let promise: Promise = fetch
        .call2(&js_sys::global(), &url.into(), &init)
        .map_err(|e| io(url, &e))?
        .dyn_into()
        .map_err(|e| io(url, &e))?;
    let response = JsFuture::from(promise).await.map_err(|e| io(url, &e))?;
    let status = Reflect::get(&response, &"status".into())
        .ok()
        .and_then(|s| s.as_f64())
        .unwrap_or(0.0) as u16;
    if !(200..300).contains(&status) {
        return Err(Error::Http {
            url: url.to_string(),
            status,
        });
    }
    let mut pending_put = None;
    if let Some(cache) = &cache {
        let clone = method(&response, "clone").map_err(|e| io(url, &e))?;
        let copy = clone.call0(&response).map_err(|e| io(url, &e))?;
        let put = method(cache, "put").map_err(|e| io(url, &e))?;
        if let Ok(p) = put.call2(cache, &url.into(), &copy) {
            if let Ok(p) = p.dyn_into::<Promise>() {
                // A full quota (or a private mode without storage) must not fail the load.
                let url_owned = url.to_string();
                let warn = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(
                    move |e: JsValue| {
                        web_sys::console::warn_1(
                        &format!(
                            "PocketLM: {url_owned} could not be cached ({}); it will be downloaded again next time",
                            js_message(&e)
                        )
                        .into(),
                    );
                    },
                );
                pending_put = Some(p.catch(&warn));
                // It must outlive this call (the write settles later); one small closure per
                // download.
                warn.forget();
            }
        }
    }
    let body = Reflect::get(&response, &"body".into()).map_err(|e| io(url, &e))?;
    Ok(Download {
        source: StreamSource::new(url, &body, content_length(&response))?,
        from_cache: false,
        cache,
        pending_put,
        url: url.to_string(),
        piece_keys: Vec::new(),
    })
}

/// The URLs of the files in the weights cache (not their pieces').
pub async fn cached_urls() -> Result<Vec<String>> {
    let Some(cache) = open_cache().await else {
        return Ok(Vec::new());
    };
    let keys = call(&cache, "keys", &[])
        .await
        .map_err(|e| io(CACHE_NAME, &e))?;
    Ok(js_sys::Array::from(&keys)
        .iter()
        .filter_map(|r| Reflect::get(&r, &"url".into()).ok()?.as_string())
        .filter(|u| !u.starts_with(OWN_KEYS))
        .collect())
}

/// Deletes the weights cache; returns whether there was one.
pub async fn clear_cache() -> Result<bool> {
    let Some(caches) = global_get("caches") else {
        return Ok(false);
    };
    let r = call(&caches, "delete", &[&CACHE_NAME.into()])
        .await
        .map_err(|e| io(CACHE_NAME, &e))?;
    Ok(r.as_bool().unwrap_or(false))
}

/// A URL opened only when its first chunk is wanted, so a model of many files downloads no more
/// of them at once than the loader reads.
pub struct LazyDownload {
    url: String,
    use_cache: bool,
    signal: Option<JsValue>,
    pub download: Option<Download>,
}

impl LazyDownload {
    pub fn new(url: impl Into<String>, use_cache: bool, signal: Option<JsValue>) -> Self {
        LazyDownload {
            url: url.into(),
            use_cache,
            signal,
            download: None,
        }
    }

    /// After a load: waits for the cache write of a good file, or cancels and evicts a bad one.
    pub async fn finish(&mut self, ok: bool, aborted: bool) {
        if let Some(d) = self.download.as_mut() {
            if ok {
                d.settle().await;
            } else {
                d.source.cancel();
                if !aborted {
                    // A bad file must not be served from the cache again.
                    d.evict().await;
                }
            }
        }
    }
}

impl ByteSource for LazyDownload {
    fn name(&self) -> &str {
        &self.url
    }

    fn total(&self) -> Option<u64> {
        self.download.as_ref().and_then(|d| d.source.total())
    }

    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.download.is_none() {
            self.download = Some(open_url(&self.url, self.use_cache, self.signal.as_ref()).await?);
        }
        match self.download.as_mut() {
            Some(d) => d.source.next_chunk().await,
            None => Ok(None),
        }
    }
}

/// Fetches a small text file (a safetensors index) through the same cache as the weights.
pub async fn fetch_small(url: &str, use_cache: bool, signal: Option<&JsValue>) -> Result<Vec<u8>> {
    let mut d = open_url(url, use_cache, signal).await?;
    let mut out = Vec::new();
    while let Some(chunk) = d.source.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    d.settle().await;
    Ok(out)
}
