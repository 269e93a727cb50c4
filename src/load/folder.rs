//! A Hugging Face model folder (or URL prefix): the weights — `model.safetensors.index.json` and
//! its shards, or `model.safetensors`, or a GGUF file — plus the JSON files that describe the
//! model (`config.json`, `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`),
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
/// sentence-transformers folder).
pub const COMPANION_FILES: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

/// What a folder holds: where its weights are, and its companion files' text.
#[derive(Clone, Debug)]
pub struct FolderPlan {
    /// Weight files (paths or URLs), in order.
    pub weights: Vec<String>,
    pub index: Option<SafetensorsIndex>,
    /// Companion file name → its text, for those present.
    pub companions: BTreeMap<String, String>,
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
    let plan = FolderPlan {
        weights,
        index,
        companions,
    };
    check_companions(&name, &plan)?;
    Ok(plan)
}
