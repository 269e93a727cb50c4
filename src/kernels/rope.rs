//! Rotary position embeddings (RoPE), applied in place to q or k laid out [tokens, heads, head_dim].
//!
//! The rotation angles are computed on the CPU, once: the inverse frequencies ([`rope_inv_freq`],
//! with optional Llama-3 frequency scaling) and a cos/sin table for positions `0..max_positions`
//! ([`RopeTable`]). A table costs `max_positions · rotary_dim/2 · 8` bytes (2 MiB for 8192
//! positions of a 64-dim rotation) and spares the GPU `sin`/`cos`, whose WGSL accuracy (about
//! 2⁻¹¹ absolute) would be far worse than the f32 rounding of a table entry.
//!
//! The position of token `t` of a step is `step.offset + t`, read from the [`StepState`] uniform, so
//! the dispatch is built once and reused by every step.

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Interface, Kernel, Slot, Specialization};
use crate::kernels::attention::{StepState, STEP};
use crate::kernels::{build, dim, expect_dtype, grid, mismatch, WG};

const ROPE_SRC: &str = include_str!("../../shaders/rope.wgsl");
/// `pair_offsets`, shared with the fused RoPE + KV-cache write.
pub(crate) const ROPE_PAIRS: &str = include_str!("../../shaders/rope_pairs.wgsl");
/// `rotate`, shared with the fused RoPE + KV-cache write and the QKV projection's RoPE epilogue.
pub(crate) const ROPE_ROTATE: &str = include_str!("../../shaders/rope_rotate.wgsl");

/// Which elements of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i + 1)`: GPT-J, and llama.cpp's "normal" RoPE (GGUF Llama models, whose q/k
    /// weights the converter permuted for it).
    Interleaved,
    /// Pairs `(i, i + rotary_dim/2)`: GPT-NeoX and Hugging Face `rotate_half` (Llama, Qwen, Gemma,
    /// Phi checkpoints in safetensors).
    NeoX,
}

/// Llama-3 frequency scaling (`rope_scaling.rope_type = "llama3"`), as in Hugging Face
/// transformers' `_compute_llama3_parameters`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: u32,
}

impl Llama3Scaling {
    /// The values of Llama 3.1 / 3.2 checkpoints.
    pub const LLAMA_3_1: Llama3Scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
}

/// What a rotary embedding rotates and how fast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// Elements per head of the tensors it is applied to.
    pub head_dim: usize,
    /// The leading elements of each head that rotate (even, ≤ head_dim); the rest pass through.
    pub rotary_dim: usize,
    /// Base of the frequencies (`rope_theta`, GGUF `rope.freq_base`).
    pub theta: f32,
    pub layout: RopeLayout,
    pub llama3: Option<Llama3Scaling>,
}

impl RopeConfig {
    /// Full rotation of every element, no scaling.
    pub fn new(head_dim: usize, theta: f32, layout: RopeLayout) -> Self {
        RopeConfig {
            head_dim,
            rotary_dim: head_dim,
            theta,
            layout,
            llama3: None,
        }
    }

    fn validate(&self) -> Result<()> {
        const NAME: &str = "rope";
        if self.rotary_dim < 2
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return Err(mismatch(
                NAME,
                format!(
                    "rotary_dim {} must be even, at least 2 and at most head_dim {}",
                    self.rotary_dim, self.head_dim
                ),
            ));
        }
        if !(self.theta.is_finite() && self.theta > 1.0) {
            return Err(mismatch(
                NAME,
                format!("theta must be finite and > 1, got {}", self.theta),
            ));
        }
        if let Some(s) = self.llama3 {
            let ok = s.factor.is_finite()
                && s.factor > 0.0
                && s.low_freq_factor.is_finite()
                && s.low_freq_factor > 0.0
                && s.high_freq_factor.is_finite()
                && s.high_freq_factor > s.low_freq_factor
                && s.original_max_position_embeddings > 0;
            if !ok {
                return Err(mismatch(
                    NAME,
                    format!(
                        "llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor \
                         and original_max_position_embeddings > 0, got {s:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The `rotary_dim / 2` inverse frequencies, in f32 arithmetic in the order Hugging Face
/// transformers evaluates them: `1 / theta^(f32(2i) / rotary_dim)`, then, with Llama-3 scaling,
/// `wavelen = 2π / inv_freq`; wavelengths above `original / low_freq_factor` are divided by
/// `factor`, those below `original / high_freq_factor` are kept, and those between are blended
/// with `smooth = (original / wavelen − low) / (high − low)`:
/// `(1 − smooth) · inv / factor + smooth · inv`. (`theta^e` is rounded correctly from f64; torch's
/// f32 `pow` may differ in the last bit.)
pub fn rope_inv_freq(config: &RopeConfig) -> Result<Vec<f32>> {
    config.validate()?;
    let dim = config.rotary_dim as f32;
    let base = f64::from(config.theta);
    let mut inv: Vec<f32> = (0..config.rotary_dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / dim;
            1.0f32 / (base.powf(f64::from(e)) as f32)
        })
        .collect();
    if let Some(s) = config.llama3 {
        let old = s.original_max_position_embeddings as f32;
        let low_wavelen = old / s.low_freq_factor;
        let high_wavelen = old / s.high_freq_factor;
        let two_pi = std::f64::consts::TAU as f32;
        for f in &mut inv {
            let wavelen = two_pi / *f;
            let mut scaled = if wavelen > low_wavelen {
                *f / s.factor
            } else {
                *f
            };
            // Neither a high nor a low frequency (NaN cannot occur: theta > 1 keeps inv finite).
            if wavelen >= high_wavelen && wavelen <= low_wavelen {
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                scaled = (1.0 - smooth) * scaled / s.factor + smooth * scaled;
            }
            *f = scaled;
        }
    }
    Ok(inv)
}

/// The rotation angle of frequency `inv_freq` at `position`, rounded to f32 as Hugging Face does
/// (`position.float() * inv_freq`).
pub fn rope_angle(position: usize, inv_freq: f32) -> f32 {
    position as f32 * inv_freq
}

/// The cos/sin table the GPU reads: `[position][i] = (cos, sin)` of [`rope_angle`], each evaluated
/// in f64 and rounded to f32.
pub fn rope_cos_sin(config: &RopeConfig, max_positions: usize) -> Result<Vec<f32>> {
    Ok(cos_sin_of(&rope_inv_freq(config)?, max_positions))
}

/// The inverse frequencies of `config` divided by per-frequency `factors`, as llama.cpp applies
/// a GGUF `rope_freqs.weight` tensor (Llama 3.1+ scaling stored as data): `inv_freq[i] /
/// factors[i]`. `factors` must have `rotary_dim / 2` finite positive values.
pub fn rope_inv_freq_with_factors(config: &RopeConfig, factors: &[f32]) -> Result<Vec<f32>> {
    let inv = rope_inv_freq(config)?;
    if factors.len() != inv.len() || factors.iter().any(|f| !f.is_finite() || *f <= 0.0) {
        return Err(mismatch(
            "rope",
            format!(
                "frequency factors must be {} finite positive values (rotary_dim / 2), got {}                  values",
                inv.len(),
                factors.len()
            ),
        ));
    }
    Ok(inv.iter().zip(factors).map(|(f, s)| f / s).collect())
}

fn cos_sin_of(inv: &[f32], max_positions: usize) -> Vec<f32> {
    let mut table = Vec::with_capacity(max_positions * inv.len() * 2);
    for pos in 0..max_positions {
        for &f in inv {
            let a = f64::from(rope_angle(pos, f));
            table.push(a.cos() as f32);
            table.push(a.sin() as f32);
        }
    }
    table
}

/// The cos/sin table `[max_positions, rotary_dim / 2, 2]` of `config`: frequencies optionally
/// divided by `factors` (see [`rope_inv_freq_with_factors`]), every entry multiplied by `mscale`
/// (LongRoPE's attention factor; 1 leaves the table as it is).
pub fn rope_table_data(
    config: &RopeConfig,
    max_positions: usize,
    factors: Option<&[f32]>,
    mscale: f32,
) -> Result<Vec<f32>> {
    if !(mscale.is_finite() && mscale > 0.0) {
        return Err(mismatch(
            "rope",
            format!("the cos/sin scale must be finite and positive, got {mscale}"),
        ));
    }
    if max_positions == 0 {
        return Err(mismatch("rope", "max_positions must be at least 1".into()));
    }
    let inv = match factors {
        Some(f) => rope_inv_freq_with_factors(config, f)?,
        None => rope_inv_freq(config)?,
    };
    let mut data = cos_sin_of(&inv, max_positions);
    if mscale != 1.0 {
        data.iter_mut().for_each(|v| *v *= mscale);
    }
    Ok(data)
}

/// A RoPE configuration with its cos/sin table on the GPU, for positions `0..max_positions`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    table: GpuTensor,
    config: RopeConfig,
    max_positions: usize,
}

impl RopeTable {
    /// Computes and uploads the table; refused (typed error, before allocating) when it exceeds
    /// the adapter's binding limit.
    pub fn new(ctx: &GpuContext, config: RopeConfig, max_positions: usize) -> Result<Self> {
        Self::with_options(ctx, config, max_positions, None, 1.0)
    }

    /// As [`RopeTable::new`], with the frequencies divided by `factors` (see
    /// [`rope_inv_freq_with_factors`]).
    pub fn with_freq_factors(
        ctx: &GpuContext,
        config: RopeConfig,
        max_positions: usize,
        factors: &[f32],
    ) -> Result<Self> {
        Self::with_options(ctx, config, max_positions, Some(factors), 1.0)
    }

    /// The general form: frequencies optionally divided by `factors`, and every cos/sin entry
    /// multiplied by `mscale` (LongRoPE's attention factor; 1 leaves the table as it is).
    pub fn with_options(
        ctx: &GpuContext,
        config: RopeConfig,
        max_positions: usize,
        factors: Option<&[f32]>,
        mscale: f32,
    ) -> Result<Self> {
        config.validate()?;
        let half = config.rotary_dim / 2;
        // Allocating zeros first checks the size against the limits before any work is done.
        let table = ctx.zeros("rope cos/sin table", &[max_positions, half, 2], DType::F32)?;
        let data = rope_table_data(&config, max_positions, factors, mscale)?;
        ctx.queue
            .write_buffer(&table.buffer, 0, bytemuck::cast_slice(&data));
        Ok(RopeTable {
            table,
            config,
            max_positions,
        })
    }

    pub fn config(&self) -> &RopeConfig {
        &self.config
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub fn size_bytes(&self) -> u64 {
        self.table.size_bytes()
    }

    /// The cos/sin table on the GPU, `[max_positions, rotary_dim / 2, 2]` f32.
    pub(crate) fn table(&self) -> &GpuTensor {
        &self.table
    }
}

crate::uniform! {
    pub(crate) struct RopeParams {
        /// Heads of x.
        heads: u32,
        /// Heads of xk (`rope_qk` only).
        heads_k: u32,
        head_dim: u32,
        /// rotary_dim / 2.
        half: u32,
        /// 1: pairs (i, i + half); 0: pairs (2i, 2i + 1).
        neox: u32,
    }
}

/// The cos/sin table, `[positions, rotary_dim / 2]` pairs.
pub(crate) const TABLE: Slot = Slot::read("table", "vec2<f32>");
const X: Slot = Slot::read_write("x", "f32");
/// `rope_qk` only.
const XK: Slot = Slot::read_write("xk", "f32");

/// Checks one tensor a RoPE dispatch rotates and returns its head count.
pub(crate) fn check_target(
    name: &'static str,
    table: &RopeTable,
    step: &StepState,
    x: &GpuTensor,
) -> Result<usize> {
    expect_dtype(name, x, &[DType::F32], "f32 q/k")?;
    let hd = table.config.head_dim;
    let [tokens, heads, head_dim] = *x.shape() else {
        return Err(mismatch(
            name,
            format!(
                "'{}' must be 3-D [tokens, heads, head_dim], got {:?}",
                x.name(),
                x.shape()
            ),
        ));
    };
    if head_dim != hd || heads == 0 {
        return Err(mismatch(
            name,
            format!(
                "'{}' {:?} must have heads of {hd} elements (the RoPE table's head_dim)",
                x.name(),
                x.shape()
            ),
        ));
    }
    if tokens < step.max_tokens() {
        return Err(mismatch(
            name,
            format!(
                "'{}' {:?} holds {tokens} tokens, fewer than the {} a step may carry",
                x.name(),
                x.shape(),
                step.max_tokens()
            ),
        ));
    }
    Ok(heads)
}

pub(crate) fn check_table(name: &'static str, table: &RopeTable, step: &StepState) -> Result<()> {
    if table.max_positions < step.max_positions() {
        return Err(mismatch(
            name,
            format!(
                "the RoPE table covers {} positions, fewer than the step's {} (build the table \
                 for the whole context)",
                table.max_positions,
                step.max_positions()
            ),
        ));
    }
    Ok(())
}

async fn build_rope(
    ctx: &GpuContext,
    name: &'static str,
    entry: &'static str,
    table: &RopeTable,
    step: &StepState,
    targets: &[(&GpuTensor, usize)],
) -> Result<Dispatch> {
    let half = table.config.rotary_dim / 2;
    let heads: usize = targets.iter().map(|t| t.1).sum();
    let pairs = step
        .max_tokens()
        .checked_mul(heads)
        .and_then(|v| v.checked_mul(half))
        .ok_or_else(|| mismatch(name, "tokens × heads × rotary_dim overflows".into()))?;
    let params = RopeParams {
        heads: dim(name, "heads", targets[0].1)?,
        heads_k: dim(name, "k heads", targets.get(1).map_or(0, |t| t.1))?,
        head_dim: dim(name, "head_dim", table.config.head_dim)?,
        half: dim(name, "rotary_dim / 2", half)?,
        neox: u32::from(table.config.layout == RopeLayout::NeoX),
    };
    dim(name, "rotated pairs", pairs)?;
    const KERNEL: Kernel = Kernel::new(
        "rope",
        ROPE_SRC,
        "rope",
        Interface::new::<RopeParams>(&[STEP, TABLE, X, XK]),
    );
    let kernel = KERNEL.entry(name, entry);
    let spec = Specialization::default()
        .with("WG", WG)
        .snippet(ROPE_PAIRS)
        .snippet(ROPE_ROTATE);
    let wg = grid(ctx, name, (pairs as u64).div_ceil(u64::from(WG)))?;
    let mut binds = vec![step.bind(), (TABLE, &table.table.buffer)];
    binds.extend(targets.iter().zip([X, XK]).map(|(t, s)| (s, &t.0.buffer)));
    build(ctx, &kernel, &spec, &params, &binds, wg).await
}

/// Rotates `x` [tokens, heads, head_dim] (f32) in place: token `t` of a step at position
/// `step.offset + t`. Tokens past the step's `n_tokens` are left alone.
pub async fn rope(
    ctx: &GpuContext,
    table: &RopeTable,
    step: &StepState,
    x: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "rope";
    check_table(NAME, table, step)?;
    let heads = check_target(NAME, table, step, x)?;
    build_rope(ctx, NAME, "rope", table, step, &[(x, heads)]).await
}

/// Rotates q and k (each [tokens, heads, head_dim], any head counts) in one dispatch.
pub async fn rope_qk(
    ctx: &GpuContext,
    table: &RopeTable,
    step: &StepState,
    q: &GpuTensor,
    k: &GpuTensor,
) -> Result<Dispatch> {
    const NAME: &str = "rope_qk";
    check_table(NAME, table, step)?;
    let hq = check_target(NAME, table, step, q)?;
    let hk = check_target(NAME, table, step, k)?;
    if q.buffer == k.buffer {
        return Err(Error::ShapeMismatch {
            kernel: NAME,
            detail: format!(
                "q '{}' and k '{}' share a buffer; rotate it with `rope` instead",
                q.name(),
                k.name()
            ),
        });
    }
    build_rope(ctx, NAME, "rope_qk", table, step, &[(q, hq), (k, hk)]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Llama-3 rule in f64, written from the description in transformers.
    fn llama3_f64(inv: f64, s: &Llama3Scaling) -> f64 {
        let old = f64::from(s.original_max_position_embeddings);
        let (lo, hi) = (f64::from(s.low_freq_factor), f64::from(s.high_freq_factor));
        let factor = f64::from(s.factor);
        let wavelen = std::f64::consts::TAU / inv;
        if wavelen < old / hi {
            inv
        } else if wavelen > old / lo {
            inv / factor
        } else {
            let smooth = (old / wavelen - lo) / (hi - lo);
            (1.0 - smooth) * inv / factor + smooth * inv
        }
    }

    #[test]
    fn inverse_frequencies_follow_theta() {
        let cfg = RopeConfig::new(8, 10_000.0, RopeLayout::NeoX);
        let inv = rope_inv_freq(&cfg).unwrap();
        assert_eq!(inv.len(), 4);
        assert_eq!(inv[0], 1.0);
        for (i, &f) in inv.iter().enumerate() {
            let want = 10_000f64.powf(-(2.0 * i as f64) / 8.0);
            assert!(
                (f64::from(f) / want - 1.0).abs() < 3e-7,
                "{i}: {f} vs {want}"
            );
        }
        // Partial rotation: the exponent's denominator is rotary_dim, not head_dim.
        let partial = RopeConfig {
            rotary_dim: 4,
            ..cfg
        };
        let inv = rope_inv_freq(&partial).unwrap();
        assert_eq!(inv.len(), 2);
        assert!((f64::from(inv[1]) - 0.01).abs() < 1e-9);
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        // Llama 3.2 1B: head_dim 64, theta 500000, factor 32.
        let s = Llama3Scaling {
            factor: 32.0,
            ..Llama3Scaling::LLAMA_3_1
        };
        let plain = RopeConfig::new(64, 500_000.0, RopeLayout::NeoX);
        let scaled = RopeConfig {
            llama3: Some(s),
            ..plain
        };
        let a = rope_inv_freq(&plain).unwrap();
        let b = rope_inv_freq(&scaled).unwrap();
        let (mut kept, mut divided, mut blended) = (0, 0, 0);
        for (&x, &y) in a.iter().zip(&b) {
            let want = llama3_f64(f64::from(x), &s);
            assert!((f64::from(y) / want - 1.0).abs() < 1e-6, "{y} vs {want}");
            if y == x {
                kept += 1;
            } else if (f64::from(y) - f64::from(x) / 32.0).abs() <= 1e-7 * f64::from(x) {
                divided += 1;
            } else {
                blended += 1;
            }
        }
        assert!(
            kept > 0 && divided > 0 && blended > 0,
            "{kept} {divided} {blended}"
        );
        assert_eq!(b[0], 1.0);
        assert_eq!(b[31], a[31] / 32.0);
    }

    #[test]
    fn table_holds_cos_and_sin_of_f32_angles() {
        let cfg = RopeConfig::new(4, 10_000.0, RopeLayout::Interleaved);
        let t = rope_cos_sin(&cfg, 3).unwrap();
        assert_eq!(t.len(), 3 * 2 * 2);
        assert_eq!(&t[..4], &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!(t[4], 1f64.cos() as f32);
        assert_eq!(t[5], 1f64.sin() as f32);
        let a = f64::from(2.0f32 * 0.01f32);
        assert_eq!(t[10], a.cos() as f32);
    }

    #[test]
    fn bad_configs_are_refused() {
        let ok = RopeConfig::new(6, 10_000.0, RopeLayout::NeoX);
        for bad in [
            RopeConfig {
                rotary_dim: 5,
                ..ok
            },
            RopeConfig {
                rotary_dim: 8,
                ..ok
            },
            RopeConfig {
                rotary_dim: 0,
                ..ok
            },
            RopeConfig { theta: 1.0, ..ok },
            RopeConfig {
                llama3: Some(Llama3Scaling {
                    low_freq_factor: 4.0,
                    high_freq_factor: 1.0,
                    ..Llama3Scaling::LLAMA_3_1
                }),
                ..ok
            },
        ] {
            assert_eq!(rope_inv_freq(&bad).unwrap_err().code(), "shape_mismatch");
        }
    }
}
