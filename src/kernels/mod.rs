//! Host side of the WGSL kernels: each function checks its tensors (shapes, dtypes, limits) and
//! returns a ready [`Dispatch`], so nothing a caller passes can reach wgpu validation.

mod activation;
pub mod attention;
mod elementwise;
mod embed;
mod linear;
mod norm;
pub mod rope;
mod sample;

pub use activation::{gated, gelu, gelu_erf, swiglu, GateActivation};
pub use attention::{
    attention, kv_write, qk_norm_rope_kv_write, rope_kv_write, Attention, AttentionOptions,
    AttentionParts, AttentionScratch, KvCache, QkNorm, StepState, ATTENTION_MAX_HEAD_DIM,
};
pub use elementwise::{add, add_in_place, softcap};
pub use embed::{embed, embed_part, embed_scaled};
pub use linear::{
    combine_fits, concat_rows, linear, linear_qkv_rope, linear_split, linear_swiglu, linear_with,
    matmul, matvec, qkv_rope_fits, residual_fits, uses_f16_tiles, Linear, LinearKernel, Residual,
    RopeKv, MATMUL_TILE_ROWS, MATVEC_MAX_ROWS, SMALL_M_MAX_ROWS,
};
pub use norm::layernorm;
pub use norm::{rmsnorm, rmsnorm_add};
pub use rope::{
    rope, rope_angle, rope_cos_sin, rope_inv_freq, rope_inv_freq_with_factors, rope_qk,
    rope_table_data, Llama3Scaling, RopeConfig, RopeLayout, RopeTable,
};
pub use sample::{
    argmax, bias_logits, gumbel_argmax, logit_stats, mask_logits, mask_words, nucleus, penalize,
    topk, topk_output, topk_shape, Draw, DrawState, LogitStats, Nucleus, TopK, MASKED_LOGIT,
    TOPK_MAX,
};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, GpuContext, GpuTensor, Kernel, Slot, Specialization, Uniform};

/// Invocations per workgroup of the one-dimensional kernels: within the baseline profile's 256,
/// and a power of two as the tree reduction needs.
pub(crate) const WG: u32 = 256;

/// The specialization of a kernel that reduces `red_n` values per invocation with the profile's
/// reduction.
pub(crate) fn reduce_spec(ctx: &GpuContext, red_n: u32) -> Specialization {
    reduce_spec_wg(ctx, red_n, WG)
}

/// [`reduce_spec`] with another workgroup size (a power of two, at most [`WG`]).
pub(crate) fn reduce_spec_wg(ctx: &GpuContext, red_n: u32, wg: u32) -> Specialization {
    Specialization {
        subgroups: ctx.capabilities().subgroups,
        ..Default::default()
    }
    .with("WG", wg)
    .with("RED_N", red_n)
}

/// Splits `groups` workgroups over x and y so that neither exceeds the per-dimension limit.
pub(crate) fn grid(ctx: &GpuContext, kernel: &'static str, groups: u64) -> Result<[u32; 3]> {
    let max = u64::from(ctx.capabilities().max_workgroups_per_dimension.max(1));
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x).max(1);
    if y > max {
        return Err(Error::ShapeMismatch {
            kernel,
            detail: format!("{groups} workgroups exceed this device's {max}x{max} grid"),
        });
    }
    Ok([x as u32, y as u32, 1])
}

/// A buffer bound to one of a kernel's slots.
pub(crate) type Bind<'a> = (Slot, &'a wgpu::Buffer);

/// Builds a dispatch of `kernel`: `params` in a new uniform buffer at binding 0 and each buffer of
/// `binds` at its slot's binding (the kernel's [`crate::gpu::Interface`] numbers them; the order
/// of `binds` does not matter). The bound slots must be those the entry point uses.
pub(crate) async fn build<P: Uniform>(
    ctx: &GpuContext,
    kernel: &Kernel,
    spec: &Specialization,
    params: &P,
    binds: &[Bind<'_>],
    workgroups: [u32; 3],
) -> Result<Dispatch> {
    let iface = &kernel.interface;
    if iface.params != Some(Slot::uniform::<P>("p")) {
        return Err(mismatch(
            kernel.name,
            format!(
                "the host passes parameters of type {}, the kernel declares {:?}",
                P::NAME,
                iface.params
            ),
        ));
    }
    let mut entries = Vec::with_capacity(binds.len() + 1);
    for (slot, buffer) in binds {
        let Some(binding) = iface.binding_of(slot) else {
            return Err(mismatch(
                kernel.name,
                format!(
                    "the kernel has no binding '{}' ({:?})",
                    slot.name, slot.kind
                ),
            ));
        };
        if entries
            .iter()
            .any(|e: &wgpu::BindGroupEntry| e.binding == binding)
        {
            return Err(mismatch(
                kernel.name,
                format!("binding '{}' is bound twice", slot.name),
            ));
        }
        entries.push(wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        });
    }
    let pipeline = ctx.pipeline(kernel, spec).await?;
    // Uniform buffers are sized in 16-byte units.
    let mut bytes = bytemuck::bytes_of(params).to_vec();
    bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
    let uniform = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.name),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
    entries.push(wgpu::BindGroupEntry {
        binding: 0,
        resource: uniform.as_entire_binding(),
    });
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.name),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    Ok(Dispatch {
        label: kernel.name,
        pipeline,
        bind_group,
        workgroups,
        _uniform: crate::gpu::Held::new(uniform.size()),
        weight_bytes: 0,
    })
}

pub(crate) fn expect_dtype(
    kernel: &'static str,
    t: &GpuTensor,
    allowed: &[DType],
    expected: &'static str,
) -> Result<()> {
    if allowed.contains(&t.dtype()) {
        Ok(())
    } else {
        Err(Error::UnsupportedDType {
            kernel,
            tensor: t.name().to_string(),
            dtype: t.dtype(),
            expected,
        })
    }
}

/// A kernel's output must not share a buffer with any of its inputs.
pub(crate) fn expect_distinct(
    kernel: &'static str,
    output: &GpuTensor,
    inputs: &[&GpuTensor],
) -> Result<()> {
    for i in inputs {
        if i.buffer == output.buffer {
            return Err(Error::ShapeMismatch {
                kernel,
                detail: format!(
                    "output '{}' shares its buffer with input '{}'; in-place is not supported",
                    output.name(),
                    i.name()
                ),
            });
        }
    }
    Ok(())
}

pub(crate) fn mismatch(kernel: &'static str, detail: String) -> Error {
    Error::ShapeMismatch { kernel, detail }
}

/// A norm's eps (`what` names it in the message): finite and not negative.
pub(crate) fn check_eps(kernel: &'static str, what: &str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        return Ok(());
    }
    Err(mismatch(
        kernel,
        format!("{what} must be finite and >= 0, got {eps}"),
    ))
}

/// A dimension as the `u32` the shaders index with.
pub(crate) fn dim(kernel: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| mismatch(kernel, format!("{what} = {v} does not fit in 32 bits")))
}
