//! A Hugging Face model folder (or URL prefix): the weights — `model.safetensors.index.json` and
//! its shards, or `model.safetensors`, or a GGUF file — plus the JSON files that describe the
//! model (`config.json`, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`,
//! the chat template's own file where it has one),
//! loaded as one model. Natively from a directory; the browser resolves a URL ending in `/` the
//! same way (src/web.rs).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::formats::SafetensorsIndex;

/// The index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The weights of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The text files that travel with the weights: `config.json` is required for safetensors
/// weights (they say nothing of the architecture themselves), the others are optional
/// (`modules.json`, the pooling settings and `sentence_bert_config.json` are those of a
/// sentence-transformers folder; the chat template may be in `chat_template.jinja`, as
/// transformers 4.52 and later save it, or a processor's `chat_template.json`).
pub const COMPANION_FILES: [&str; 9] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// The weights file of a sentence-transformers module folder (a `Dense` module's).
pub const MODULE_WEIGHTS: &str = "model.safetensors";

/// What a folder holds: where its weights are, and its companion files' text.
#[derive(Clone, Debug)]
pub struct FolderPlan {
    /// Weight files (paths or URLs), in order.
    pub weights: Vec<String>,
    pub index: Option<SafetensorsIndex>,
    /// Companion file name → its text, for those present (with each `Dense` module's
    /// `<dir>/config.json`).
    pub companions: BTreeMap<String, String>,
    /// `<dir>/model.safetensors` → its bytes, for each `Dense` module of `modules.json`
    /// (EmbeddingGemma's projections after pooling): small, read whole.
    pub module_weights: BTreeMap<String, Vec<u8>>,
}

/// The folders of the sentence-transformers `Dense` modules that `modules.json` lists, in order.
/// A folder must be a plain relative name (letters, digits, `_`, `-`, `.`; not `.` or `..`): a
/// model file is untrusted, and its modules must not reach outside the model's folder.
pub fn dense_module_dirs(
    companions: &BTreeMap<String, String>,
    folder: &str,
) -> Result<Vec<String>> {
    let Some(text) = companions.get("modules.json") else {
        return Ok(Vec::new());
    };
    let bad = |detail: String| Error::Config {
        source_name: join(folder, "modules.json"),
        detail,
    };
    let modules: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let mut dirs = Vec::new();
    for m in modules.as_array().into_iter().flatten() {
        if !m["type"].as_str().is_some_and(|t| t.ends_with(".Dense")) {
            continue;
        }
        let dir = m["path"].as_str().unwrap_or("");
        let plain = !dir.is_empty()
            && dir != "."
            && dir != ".."
            && dir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return Err(bad(format!(
                "a Dense module's path must be a folder name inside the model's folder, not {dir:?}"
            )));
        }
        dirs.push(dir.to_string());
    }
    Ok(dirs)
}

/// The error for a `Dense` module folder that lacks a file.
pub fn missing_module_file(folder: &str, file: &str) -> Error {
    Error::Io {
        source_name: join(folder, file),
        detail: "modules.json lists a Dense module whose folder lacks this file (its weights \
                 are read from model.safetensors only)"
            .into(),
    }
}

/// Checks a plan's companions: safetensors weights need `config.json`.
pub fn check_companions(folder: &str, plan: &FolderPlan) -> Result<()> {
    let safetensors = plan.weights.iter().any(|w| w.ends_with(".safetensors"));
    if safetensors && !plan.companions.contains_key("config.json") {
        return Err(Error::Io {
            source_name: folder.to_string(),
            detail: "safetensors weights need the model's config.json beside them, and there is \
                     none"
                .into(),
        });
    }
    Ok(())
}

/// The URLs (or paths) of `names` in `folder`.
pub fn join(folder: &str, name: &str) -> String {
    if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

#[cfg(not(target_arch = "wasm32"))]
/// Reads a model directory: its index and shards, or `model.safetensors`, or its one GGUF
/// model (all splits of a split one), and its companion files.
pub fn plan_directory(dir: &std::path::Path) -> Result<FolderPlan> {
    let name = dir.display().to_string();
    let io = |e: std::io::Error| crate::load::io_error(&name, e);
    let path = |f: &str| join(&name, f);
    let mut companions = BTreeMap::new();
    for f in COMPANION_FILES {
        match std::fs::read_to_string(dir.join(f)) {
            Ok(text) => {
                companions.insert(f.to_string(), text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::load::io_error(&path(f), e)),
        }
    }
    let (weights, index) = if dir.join(INDEX_FILE).is_file() {
        let json = std::fs::read(dir.join(INDEX_FILE)).map_err(io)?;
        let index = SafetensorsIndex::parse(&json, &path(INDEX_FILE))?;
        (
            index.shards.iter().map(|s| path(&s.file)).collect(),
            Some(index),
        )
    } else if dir.join(SINGLE_FILE).is_file() {
        (vec![path(SINGLE_FILE)], None)
    } else {
        let mut ggufs: Vec<String> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".gguf"))
            .collect();
        ggufs.sort();
        match ggufs.as_slice() {
            [first, ..]
                if crate::formats::split_names(first)
                    .is_ok_and(|s| s.len() == ggufs.len() && s.len() > 1) =>
            {
                (ggufs.iter().map(|f| path(f)).collect(), None)
            }
            [one] => (vec![path(one)], None),
            _ => {
                return Err(Error::Io {
                    source_name: name,
                    detail: format!(
                        "no model weights here: expected {INDEX_FILE}, {SINGLE_FILE} or one GGUF \
                         model (found {} .gguf files)",
                        ggufs.len()
                    ),
                })
            }
        }
    };
    let mut module_weights = BTreeMap::new();
    for module in dense_module_dirs(&companions, &name)? {
        let read = |f: &str| {
            let file = format!("{module}/{f}");
            std::fs::read(dir.join(&file)).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing_module_file(&name, &file),
                _ => crate::load::io_error(&path(&file), e),
            })
        };
        let config = read("config.json")?;
        let text = String::from_utf8(config).map_err(|_| Error::Config {
            source_name: path(&format!("{module}/config.json")),
            detail: "not UTF-8 text".into(),
        })?;
        companions.insert(format!("{module}/config.json"), text);
        module_weights.insert(format!("{module}/{MODULE_WEIGHTS}"), read(MODULE_WEIGHTS)?);
    }
    let plan = FolderPlan {
        weights,
        index,
        companions,
        module_weights,
    };
    check_companions(&name, &plan)?;
    Ok(plan)
}
