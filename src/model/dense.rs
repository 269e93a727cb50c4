//! sentence-transformers `Dense` modules: projections of the pooled vector, `y = act(W·x + b)`,
//! before normalisation. EmbeddingGemma has two (768 → 3072 → 768, no bias, identity). They run
//! on the host, in f64 like the pooling: a few million multiply-adds per embedding, next to the
//! hundreds of millions of the model's pass.
//!
//! From a sentence-transformers folder they are `<dir>/config.json` (`in_features`,
//! `out_features`, `bias`, `activation_function`) and `<dir>/model.safetensors` (`linear.weight`
//! [out, in], `linear.bias`) for each module `modules.json` lists; from llama.cpp's
//! `gemma-embedding` conversion (`--sentence-transformers-dense-modules`), the tensors
//! `dense_2.weight` and `dense_3.weight`, applied without activation as llama.cpp does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::cpu::HostTensor;
use crate::error::Result;
use crate::formats::SafetensorsHeader;
use crate::gpu::{DType, GpuContext, GpuTensor};
use crate::load::folder::{dense_module_dirs, MODULE_WEIGHTS};
use crate::load::StoredTensor;
use crate::model::config::{config_error, MAX_FFN};

/// What follows a `Dense` module's product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
}

/// One `Dense` module.
#[derive(Clone, PartialEq)]
pub struct Dense {
    pub in_features: usize,
    pub out_features: usize,
    pub activation: DenseActivation,
    /// [out_features, in_features], row-major.
    weight: Arc<[f32]>,
    bias: Option<Arc<[f32]>>,
}

impl fmt::Debug for Dense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Dense({} → {}, {:?}{})",
            self.in_features,
            self.out_features,
            self.activation,
            if self.bias.is_some() { ", bias" } else { "" }
        )
    }
}

/// The tensor names of the GGUF conversion, in the order they apply.
const GGUF_DENSE: [&str; 2] = ["dense_2", "dense_3"];

impl Dense {
    /// From the weights (`[out, in]` row-major) and bias; `source` names them in errors.
    fn new(
        source: &str,
        (out_features, in_features): (usize, usize),
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        activation: DenseActivation,
    ) -> Result<Self> {
        if in_features == 0 || in_features.checked_mul(out_features) != Some(weight.len()) {
            return Err(config_error(
                source,
                format!(
                    "a Dense module of {in_features} → {out_features} features needs \
                     {out_features}×{in_features} weights, not {}",
                    weight.len()
                ),
            ));
        }
        if let Some(b) = &bias {
            if b.len() != out_features {
                return Err(config_error(
                    source,
                    format!(
                        "a Dense module of {out_features} outputs has a bias of {}",
                        b.len()
                    ),
                ));
            }
        }
        Ok(Dense {
            in_features,
            out_features,
            activation,
            weight: weight.into(),
            bias: bias.map(Into::into),
        })
    }

    /// `act(W·x + b)`.
    pub fn apply(&self, x: &[f64]) -> Vec<f64> {
        debug_assert_eq!(x.len(), self.in_features);
        self.weight
            .chunks_exact(self.in_features)
            .enumerate()
            .map(|(o, row)| {
                let mut y: f64 = row.iter().zip(x).map(|(&w, &v)| f64::from(w) * v).sum();
                if let Some(b) = &self.bias {
                    y += f64::from(b[o]);
                }
                match self.activation {
                    DenseActivation::Identity => y,
                    DenseActivation::Tanh => y.tanh(),
                }
            })
            .collect()
    }
}

/// The `Dense` modules of a sentence-transformers folder, in order, from their companion
/// configs and weights (see [`crate::load::folder::FolderPlan`]), chained from `hidden`
/// features. `source` names the model in errors.
pub fn from_folder(
    companions: &BTreeMap<String, String>,
    module_weights: &BTreeMap<String, Vec<u8>>,
    hidden: usize,
    source: &str,
) -> Result<Vec<Dense>> {
    let mut out = Vec::new();
    for dir in dense_module_dirs(companions, source)? {
        let cfg_name = format!("{source}/{dir}/config.json");
        let bad = |detail: String| config_error(&cfg_name, detail);
        let text = companions
            .get(&format!("{dir}/config.json"))
            .ok_or_else(|| bad("the Dense module's config.json was not loaded".into()))?;
        let cfg: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let features = |k: &str| -> Result<usize> {
            match cfg[k].as_u64() {
                Some(n) if n > 0 && n <= MAX_FFN => Ok(n as usize),
                _ => Err(bad(format!(
                    "'{k}' must be a whole number from 1 to {MAX_FFN}, not {}",
                    cfg[k]
                ))),
            }
        };
        let (inputs, outputs) = (features("in_features")?, features("out_features")?);
        let has_bias = cfg["bias"].as_bool().unwrap_or(true);
        // sentence-transformers' default is Tanh.
        let activation = match cfg["activation_function"]
            .as_str()
            .unwrap_or("torch.nn.modules.activation.Tanh")
        {
            "torch.nn.modules.linear.Identity" => DenseActivation::Identity,
            "torch.nn.modules.activation.Tanh" => DenseActivation::Tanh,
            other => {
                return Err(bad(format!(
                    "activation '{other}' is not supported (supported: \
                     torch.nn.modules.linear.Identity, torch.nn.modules.activation.Tanh)"
                )))
            }
        };
        let file = format!("{dir}/{MODULE_WEIGHTS}");
        let shown = format!("{source}/{file}");
        let bytes = module_weights.get(&file).ok_or_else(|| {
            config_error(&shown, "the Dense module's weights were not loaded".into())
        })?;
        let header = SafetensorsHeader::parse_file(bytes, &shown)?;
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = header
                .tensor(name)
                .ok_or_else(|| config_error(&shown, format!("there is no tensor '{name}'")))?;
            if t.shape != shape {
                return Err(config_error(
                    &shown,
                    format!("'{name}' is {:?}, the config says {shape:?}", t.shape),
                ));
            }
            let start = usize::try_from(t.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(t.bytes).unwrap_or(usize::MAX));
            let data = bytes
                .get(start..end)
                .ok_or_else(|| config_error(&shown, format!("'{name}' lies past the file")))?;
            crate::quant::dequantize_to_vec(t.dtype, data)
        };
        let weight = tensor("linear.weight", &[outputs, inputs])?;
        let bias = if has_bias {
            Some(tensor("linear.bias", &[outputs])?)
        } else {
            None
        };
        out.push(Dense::new(
            &shown,
            (outputs, inputs),
            weight,
            bias,
            activation,
        )?);
    }
    check_chain(&out, hidden, source)?;
    Ok(out)
}

/// The modules' features must chain: the first takes the pooled vector.
fn check_chain(dense: &[Dense], hidden: usize, source: &str) -> Result<()> {
    let mut width = hidden;
    for (i, d) in dense.iter().enumerate() {
        if d.in_features != width {
            return Err(config_error(
                source,
                format!(
                    "Dense module {i} takes {} features, but receives {width}",
                    d.in_features
                ),
            ));
        }
        width = d.out_features;
    }
    Ok(())
}

/// A GGUF conversion's `dense_2` / `dense_3` weights and biases, taken out of `tensors` (an
/// embedder converted without them has none), in order.
#[allow(clippy::type_complexity)]
fn take_gguf<T: StoredTensor>(
    tensors: &mut HashMap<String, T>,
    source: &str,
) -> Result<Vec<((usize, usize), T, Option<T>)>> {
    let mut out = Vec::new();
    for name in GGUF_DENSE {
        let Some(w) = tensors.remove(&format!("{name}.weight")) else {
            continue;
        };
        let bias = tensors.remove(&format!("{name}.bias"));
        match *w.shape() {
            [rows, cols] => out.push(((rows, cols), w, bias)),
            _ => {
                return Err(config_error(
                    source,
                    format!("'{name}.weight' is {:?}, not a matrix", w.shape()),
                ))
            }
        }
    }
    Ok(out)
}

/// The GGUF conversion's `Dense` modules for tensors in host memory (the CPU backend).
pub fn from_gguf_host(
    tensors: &mut HashMap<String, HostTensor>,
    hidden: usize,
    source: &str,
) -> Result<Vec<Dense>> {
    let mut out = Vec::new();
    for (shape, w, b) in take_gguf(tensors, source)? {
        let bias = b.map(|b| b.to_f32()).transpose()?;
        out.push(Dense::new(
            source,
            shape,
            w.to_f32()?,
            bias,
            DenseActivation::Identity,
        )?);
    }
    check_chain(&out, hidden, source)?;
    Ok(out)
}

/// The same for tensors on the GPU: read back (quantized formats dequantized on the GPU by an
/// embedding lookup of every row), then freed.
pub async fn from_gguf_gpu(
    ctx: &GpuContext,
    tensors: &mut HashMap<String, GpuTensor>,
    hidden: usize,
    source: &str,
) -> Result<Vec<Dense>> {
    let mut out = Vec::new();
    for (shape, w, b) in take_gguf(tensors, source)? {
        let weight = gpu_to_f32(ctx, &w).await;
        w.destroy();
        let bias = match b {
            Some(b) => {
                let v = gpu_to_f32(ctx, &b).await;
                b.destroy();
                Some(v?)
            }
            None => None,
        };
        out.push(Dense::new(
            source,
            shape,
            weight?,
            bias,
            DenseActivation::Identity,
        )?);
    }
    check_chain(&out, hidden, source)?;
    Ok(out)
}

/// A GPU tensor's values as f32 on the host.
async fn gpu_to_f32(ctx: &GpuContext, t: &GpuTensor) -> Result<Vec<f32>> {
    if matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) || t.shape().len() != 2 {
        return ctx.read_f32(t).await;
    }
    let rows = t.rows();
    let ids: Vec<i32> = (0..rows as i32).collect();
    let ids = ctx.upload_i32("dense rows", &[rows], &ids)?;
    let out = ctx.zeros("dense values", &[rows, t.cols()], DType::F32)?;
    let d = crate::kernels::embed(ctx, t, &ids, &out).await?;
    let mut rec = ctx.recorder();
    rec.dispatch(&d);
    let slot = rec.read(&out);
    let values = rec.submit_and_read().await?.f32(slot);
    ids.destroy();
    out.destroy();
    values
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::collections::BTreeMap;

    use super::{from_folder, DenseActivation};

    type Companions = BTreeMap<String, String>;
    type Weights = BTreeMap<String, Vec<u8>>;

    /// The tiny EmbeddingGemma fixture's modules.json and Dense modules, as a folder load
    /// brings them.
    fn fixture() -> (Companions, Weights) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tiny-embeddinggemma");
        let mut companions = BTreeMap::new();
        let mut weights = BTreeMap::new();
        for f in ["modules.json", "2_Dense/config.json", "3_Dense/config.json"] {
            companions.insert(f.to_string(), std::fs::read_to_string(dir.join(f)).unwrap());
        }
        for f in ["2_Dense/model.safetensors", "3_Dense/model.safetensors"] {
            weights.insert(f.to_string(), std::fs::read(dir.join(f)).unwrap());
        }
        (companions, weights)
    }

    #[test]
    fn reads_the_modules_in_order() {
        let (companions, weights) = fixture();
        let dense = from_folder(&companions, &weights, 48, "m").unwrap();
        let shapes: Vec<_> = dense
            .iter()
            .map(|d| {
                (
                    d.in_features,
                    d.out_features,
                    d.activation,
                    d.bias.is_some(),
                )
            })
            .collect();
        assert_eq!(
            shapes,
            [
                (48, 96, DenseActivation::Identity, false),
                (96, 48, DenseActivation::Identity, false)
            ]
        );
        // y = W·x: the first column of W for a unit x.
        let mut x = vec![0.0; 48];
        x[0] = 1.0;
        let y = dense[0].apply(&x);
        assert_eq!(y.len(), 96);
        assert_eq!(y[5], f64::from(dense[0].weight[5 * 48]));
    }

    #[test]
    fn bad_modules_are_typed_errors() {
        let check = |edit: &dyn Fn(&mut Companions, &mut Weights),
                     hidden: usize,
                     code: &str,
                     says: &str| {
            let (mut companions, mut weights) = fixture();
            edit(&mut companions, &mut weights);
            let e = from_folder(&companions, &weights, hidden, "m").unwrap_err();
            assert_eq!(e.code(), code, "{e}");
            assert!(e.to_string().contains(says), "{e} lacks {says:?}");
        };
        let modules = |c: &mut Companions, from: &str, to: &str| {
            let m = c["modules.json"].replace(from, to);
            c.insert("modules.json".into(), m);
        };
        // A module path that leaves the model's folder.
        check(
            &|c, _| modules(c, "\"2_Dense\"", "\"../2_Dense\""),
            48,
            "config",
            "../2_Dense",
        );
        check(
            &|c, _| modules(c, "\"3_Dense\"", "\"/etc\""),
            48,
            "config",
            "/etc",
        );
        // Features that do not chain from the hidden size.
        check(&|_, _| {}, 32, "config", "receives 32");
        // A config that does not match its weights.
        check(
            &|c, _| {
                let t = c["2_Dense/config.json"]
                    .replace("\"out_features\": 96", "\"out_features\": 95");
                c.insert("2_Dense/config.json".into(), t);
            },
            48,
            "config",
            "linear.weight",
        );
        check(
            &|c, _| {
                let t = c["3_Dense/config.json"].replace("linear.Identity", "activation.GELU");
                c.insert("3_Dense/config.json".into(), t);
            },
            48,
            "config",
            "activation.GELU",
        );
        // A bias the file lacks, weights that are not safetensors, weights not loaded.
        check(
            &|c, _| {
                let t = c["2_Dense/config.json"].replace("\"bias\": false", "\"bias\": true");
                c.insert("2_Dense/config.json".into(), t);
            },
            48,
            "config",
            "linear.bias",
        );
        check(
            &|_, w| {
                w.insert("3_Dense/model.safetensors".into(), vec![1, 2, 3]);
            },
            48,
            "file_truncated",
            "3_Dense",
        );
        check(
            &|_, w| {
                w.remove("2_Dense/model.safetensors");
            },
            48,
            "config",
            "not loaded",
        );
    }
}
