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

/// A `ReadableStream` of bytes read to the end.
pub struct StreamSource {
    name: String,
    reader: JsValue,
    total: Option<u64>,
}

impl StreamSource {
    pub fn new(name: impl Into<String>, stream: &JsValue, total: Option<u64>) -> Result<Self> {
        let name = name.into();
        let get_reader = method(stream, "getReader")
            .map_err(|_| crate::load::io_error(&name, "not a ReadableStream"))?;
        let reader = get_reader.call0(stream).map_err(|e| io(&name, &e))?;
        Ok(StreamSource {
            name,
            reader,
            total,
        })
    }

    /// Stops reading (the download is cancelled when this is a fetch body).
    pub fn cancel(&self) {
        if let Ok(f) = method(&self.reader, "cancel") {
            let _ = f.call0(&self.reader);
        }
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
        let r = call(&self.reader, "read", &[])
            .await
            .map_err(|e| io(&self.name, &e))?;
        if Reflect::get(&r, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            == Some(true)
        {
            return Ok(None);
        }
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
            let _ = call(cache, "delete", &[&self.url.as_str().into()]).await;
        }
    }
}

async fn open_cache() -> Option<JsValue> {
    let caches = global_get("caches")?;
    call(&caches, "open", &[&CACHE_NAME.into()]).await.ok()
}

fn content_length(response: &JsValue) -> Option<u64> {
    let headers = Reflect::get(response, &"headers".into()).ok()?;
    let get = method(&headers, "get").ok()?;
    get.call1(&headers, &"content-length".into())
        .ok()?
        .as_string()?
        .parse()
        .ok()
}

/// Opens `url`: from the Cache API when `use_cache` and a copy is there (no network request),
/// otherwise with `fetch` — storing the response in the cache as it streams when `use_cache`
/// (a full quota only logs a warning). `signal` aborts the request.
pub async fn open_url(url: &str, use_cache: bool, signal: Option<&JsValue>) -> Result<Download> {
    let cache = if use_cache { open_cache().await } else { None };
    if let Some(cache) = &cache {
        if let Ok(hit) = call(cache, "match", &[&url.into()]).await {
            if !hit.is_undefined() {
                let body = Reflect::get(&hit, &"body".into()).map_err(|e| io(url, &e))?;
                return Ok(Download {
                    source: StreamSource::new(url, &body, content_length(&hit))?,
                    from_cache: true,
                    cache: Some(cache.clone()),
                    pending_put: None,
                    url: url.to_string(),
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
    })
}

/// The URLs in the weights cache.
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
