//! A decoder's weights by role, taken from a loaded model's tensors (GPU or host) and checked
//! against its configuration: what every backend builds its forward pass from.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::load::{part_name, StoredTensor};
use crate::model::arch::{Need, Role, TEXT_MODEL_PREFIXES};
use crate::model::ModelConfig;

pub(crate) fn missing(name: String) -> Error {
    Error::InvalidTensor {
        tensor: name,
        detail: "the model has no such tensor".into(),
    }
}

/// The shape check: the error names the tensor and both shapes.
pub(crate) fn expect<T: StoredTensor>(t: &T, shape: &[usize]) -> Result<()> {
    if t.shape() == shape {
        Ok(())
    } else {
        Err(Error::InvalidTensor {
            tensor: t.name().to_string(),
            detail: format!(
                "has shape {:?}, but the model's configuration needs {shape:?}",
                t.shape()
            ),
        })
    }
}

/// A matrix of `rows` × `cols` given as row ranges.
fn expect_rows<T: StoredTensor>(parts: &[(usize, T)], rows: usize, cols: usize) -> Result<()> {
    if let [(_, t)] = parts {
        return expect(t, &[rows, cols]);
    }
    let total: usize = parts.iter().map(|(_, t)| t.rows()).sum();
    match parts.iter().find(|(_, t)| t.cols() != cols) {
        Some((_, t)) => expect(t, &[t.rows(), cols]),
        None if total != rows => Err(Error::InvalidTensor {
            tensor: parts[0].1.name().to_string(),
            detail: format!(
                "its parts hold {total} rows, but the model's configuration needs {rows}"
            ),
        }),
        None => Ok(()),
    }
}

/// Takes a model's tensors by role, in the checkpoint's naming.
struct Tensors<'a, T> {
    config: &'a ModelConfig,
    map: HashMap<String, T>,
    /// A multimodal checkpoint's prefixes for `model.` and `lm_head.` (see
    /// [`TEXT_MODEL_PREFIXES`]).
    nested: Option<(&'static str, &'static str)>,
}

impl<'a, T: StoredTensor> Tensors<'a, T> {
    fn new(config: &'a ModelConfig, map: HashMap<String, T>) -> Self {
        let nested = (!config.gguf_names)
            .then(|| {
                TEXT_MODEL_PREFIXES
                    .into_iter()
                    .find(|(model, _)| map.keys().any(|k| k.starts_with(model)))
            })
            .flatten();
        Tensors {
            config,
            map,
            nested,
        }
    }

    fn name(&self, role: Role, layer: usize) -> Option<String> {
        let name = self
            .config
            .spec()
            .tensor_name(role, layer, self.config.gguf_names)?;
        let Some((model, head)) = self.nested else {
            return Some(name);
        };
        Some(if let Some(rest) = name.strip_prefix("model.") {
            format!("{model}{rest}")
        } else if let Some(rest) = name.strip_prefix("lm_head.") {
            format!("{head}{rest}")
        } else {
            name
        })
    }

    fn name_or_role(&self, role: Role, layer: usize) -> String {
        self.name(role, layer)
            .unwrap_or_else(|| format!("{role:?} of layer {layer}"))
    }

    /// The tensor of `role`: `Ok(None)` when the architecture has no such role, or it is
    /// optional (or tied) and absent; an error naming the tensor when a required one is missing.
    fn take(&mut self, role: Role, layer: usize) -> Result<Option<T>> {
        let Some(need) = self.config.spec().need(role) else {
            return Ok(None);
        };
        let Some(name) = self.name(role, layer) else {
            return Ok(None);
        };
        match self.map.remove(&name) {
            Some(t) => Ok(Some(t)),
            None if self.map.contains_key(&part_name(&name, 0)) => Err(Error::InvalidTensor {
                tensor: name,
                detail: "is larger than one storage binding of this adapter; only the embedding \
                         and output tables are split over several"
                    .into(),
            }),
            None if need == Need::Required => Err(missing(name)),
            None => Ok(None),
        }
    }

    /// A matrix that may have been split by rows on upload (too large for one binding): its
    /// parts with their first rows, or the one tensor at row 0.
    fn take_rows(&mut self, role: Role) -> Result<Option<Vec<(usize, T)>>> {
        let Some(name) = self.name(role, 0) else {
            return Ok(None);
        };
        let mut parts = Vec::new();
        let mut row = 0;
        while let Some(t) = self.map.remove(&part_name(&name, parts.len())) {
            let rows = t.rows();
            parts.push((row, t));
            row += rows;
        }
        if parts.is_empty() {
            return Ok(self.take(role, 0)?.map(|t| vec![(0, t)]));
        }
        Ok(Some(parts))
    }

    fn required(&mut self, role: Role, layer: usize) -> Result<T> {
        match self.take(role, layer)? {
            Some(t) => Ok(t),
            None => Err(missing(self.name_or_role(role, layer))),
        }
    }

    /// A 1-D parameter of `n` values.
    fn vector(&mut self, role: Role, layer: usize, n: usize) -> Result<Option<T>> {
        let Some(x) = self.take(role, layer)? else {
            return Ok(None);
        };
        expect(&x, &[n])?;
        Ok(Some(x))
    }

    fn required_vector(&mut self, role: Role, layer: usize, n: usize) -> Result<T> {
        self.vector(role, layer, n)?
            .ok_or_else(|| missing(self.name_or_role(role, layer)))
    }
}

/// The weights of one layer, checked: matrices `M`, 1-D parameters `V` (as loaded: any format,
/// norms without the configuration's `norm_offset`, until a backend converts them).
pub(crate) struct LayerWeights<M, V = M> {
    /// The pre-norms; `None` where the block has none (OLMo 2).
    pub attn_norm: Option<V>,
    /// One stacked matrix (q rows, then k, then v), or [q, k, v].
    pub qkv: Vec<M>,
    /// With separate q, k, v: their biases (all or none).
    pub qkv_bias: Vec<Option<V>>,
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    pub o: M,
    pub post_attn_norm: Option<V>,
    pub ffn_norm: Option<V>,
    /// One stacked matrix (gate rows, then up), or [gate, up].
    pub gate_up: Vec<M>,
    pub down: M,
    pub post_ffn_norm: Option<V>,
}

/// A decoder's weights, checked against its configuration.
pub(crate) struct DecoderWeights<T> {
    /// The embedding table as (first row, part); one part unless it was split on upload.
    pub embed: Vec<(usize, T)>,
    /// The LM head likewise; `None` when tied to the embedding.
    pub output: Option<Vec<(usize, T)>>,
    pub out_norm: T,
    /// RoPE frequency factors: GGUF `rope_freqs`, LongRoPE short and long.
    pub rope_factors: [Option<T>; 3],
    pub layers: Vec<LayerWeights<T>>,
}

impl<T: StoredTensor> DecoderWeights<T> {
    /// Takes every tensor the configuration's architecture needs from `tensors`, checking shapes.
    pub fn take(c: &ModelConfig, tensors: HashMap<String, T>) -> Result<Self> {
        let mut t = Tensors::new(c, tensors);
        let (q_rows, kv_rows) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let embed = t
            .take_rows(Role::TokenEmbd)?
            .ok_or_else(|| missing(t.name_or_role(Role::TokenEmbd, 0)))?;
        expect_rows(&embed, c.vocab, c.hidden)?;
        let output = t.take_rows(Role::Output)?;
        if let Some(o) = &output {
            expect_rows(o, c.vocab, c.hidden)?;
        }
        let rope_factors = [
            t.take(Role::RopeFreqs, 0)?,
            t.take(Role::RopeFactorsShort, 0)?,
            t.take(Role::RopeFactorsLong, 0)?,
        ];
        let out_norm = t.required_vector(Role::OutputNorm, 0, c.hidden)?;
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let (attn_norm, ffn_norm) = if c.pre_norms {
                (
                    Some(t.required_vector(Role::AttnNorm, l, c.hidden)?),
                    Some(t.required_vector(Role::FfnNorm, l, c.hidden)?),
                )
            } else {
                (None, None)
            };
            // Per head, or over the whole projection (all heads).
            let (q_norm_len, k_norm_len) = if c.qk_norm_whole {
                (q_rows, kv_rows)
            } else {
                (c.head_dim, c.head_dim)
            };
            let q_norm = t.vector(Role::QNorm, l, q_norm_len)?;
            let k_norm = t.vector(Role::KNorm, l, k_norm_len)?;
            let post_attn_norm = t.vector(Role::PostAttnNorm, l, c.hidden)?;
            let post_ffn_norm = t.vector(Role::PostFfnNorm, l, c.hidden)?;
            let (qkv, qkv_bias) = match t.take(Role::Qkv, l)? {
                Some(w) => {
                    expect(&w, &[q_rows + 2 * kv_rows, c.hidden])?;
                    (vec![w], vec![None])
                }
                None => {
                    let q = t.required(Role::Q, l)?;
                    let k = t.required(Role::K, l)?;
                    let v = t.required(Role::V, l)?;
                    expect(&q, &[q_rows, c.hidden])?;
                    expect(&k, &[kv_rows, c.hidden])?;
                    expect(&v, &[kv_rows, c.hidden])?;
                    let biases = vec![
                        t.vector(Role::QBias, l, q_rows)?,
                        t.vector(Role::KBias, l, kv_rows)?,
                        t.vector(Role::VBias, l, kv_rows)?,
                    ];
                    let some = biases.iter().filter(|b| b.is_some()).count();
                    if some != 0 && some != 3 {
                        return Err(Error::InvalidTensor {
                            tensor: t.name_or_role(Role::QBias, l),
                            detail: "q, k and v must all have biases or none".into(),
                        });
                    }
                    (vec![q, k, v], biases)
                }
            };
            if c.qk_norm && (q_norm.is_none() || k_norm.is_none()) {
                return Err(missing(t.name_or_role(Role::QNorm, l)));
            }
            let o = t.required(Role::O, l)?;
            expect(&o, &[c.hidden, q_rows])?;
            let gate_up = match t.take(Role::GateUp, l)? {
                Some(w) => {
                    expect(&w, &[2 * c.ffn, c.hidden])?;
                    vec![w]
                }
                None => {
                    let g = t.required(Role::Gate, l)?;
                    let u = t.required(Role::Up, l)?;
                    expect(&g, &[c.ffn, c.hidden])?;
                    expect(&u, &[c.ffn, c.hidden])?;
                    vec![g, u]
                }
            };
            let down = t.required(Role::Down, l)?;
            expect(&down, &[c.hidden, c.ffn])?;
            if c.post_norms && (post_attn_norm.is_none() || post_ffn_norm.is_none()) {
                return Err(missing(t.name_or_role(Role::PostAttnNorm, l)));
            }
            layers.push(LayerWeights {
                attn_norm,
                qkv,
                qkv_bias,
                q_norm,
                k_norm,
                o,
                post_attn_norm,
                ffn_norm,
                gate_up,
                down,
                post_ffn_norm,
            });
        }
        Ok(DecoderWeights {
            embed,
            output,
            out_norm,
            rope_factors,
            layers,
        })
    }
}

impl<M, V> LayerWeights<M, V> {
    /// The layer's 1-D parameters in a fixed order, with the offset each gets (norms: the
    /// configuration's `norm_offset`; biases: 0).
    pub fn vectors(&self, norm_offset: f32) -> Vec<(&V, f32)> {
        let n = norm_offset;
        let mut v: Vec<(&V, f32)> = [&self.attn_norm, &self.ffn_norm]
            .into_iter()
            .flatten()
            .map(|t| (t, n))
            .collect();
        v.extend(self.qkv_bias.iter().flatten().map(|b| (b, 0.0)));
        for norm in [
            &self.q_norm,
            &self.k_norm,
            &self.post_attn_norm,
            &self.post_ffn_norm,
        ] {
            v.extend(norm.as_ref().map(|t| (t, n)));
        }
        v
    }

    /// The layer with each 1-D parameter replaced by the next of `new` (in [`Self::vectors`]'
    /// order), and the matrices mapped by `matrix`.
    pub fn map<U, W>(
        self,
        new: &mut impl Iterator<Item = W>,
        mut matrix: impl FnMut(M) -> U,
    ) -> LayerWeights<U, W> {
        let mut next = || new.next().expect("one replacement per vector");
        let attn_norm = self.attn_norm.map(|_| next());
        let ffn_norm = self.ffn_norm.map(|_| next());
        let qkv_bias = self
            .qkv_bias
            .into_iter()
            .map(|b| b.map(|_| next()))
            .collect();
        let q_norm = self.q_norm.map(|_| next());
        let k_norm = self.k_norm.map(|_| next());
        let post_attn_norm = self.post_attn_norm.map(|_| next());
        let post_ffn_norm = self.post_ffn_norm.map(|_| next());
        LayerWeights {
            attn_norm,
            qkv: self.qkv.into_iter().map(&mut matrix).collect(),
            qkv_bias,
            q_norm,
            k_norm,
            o: matrix(self.o),
            post_attn_norm,
            ffn_norm,
            gate_up: self.gate_up.into_iter().map(&mut matrix).collect(),
            down: matrix(self.down),
            post_ffn_norm,
        }
    }
}
