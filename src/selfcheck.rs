//! Runs kernels on the GPU against their CPU references. The tests drive it with random shapes;
//! `pocketlm selfcheck` (and `make demo`) runs a fixed set of model-sized and awkward shapes.

use std::fmt;

use crate::error::Result;
use crate::gpu::{DType, GpuContext};
pub use crate::kernels::LinearKernel;
use crate::kernels::{self, Linear};
use crate::quant::{dequantize_to_vec, random_gguf_bytes};
use crate::reference::{self, Rng};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Case {
    /// y [m, n] = x [m, k] · Wᵀ, W [n, k] stored as `weights`.
    Linear {
        kernel: LinearKernel,
        m: usize,
        n: usize,
        k: usize,
        weights: DType,
    },
    /// The same with both epilogues: y = y + (x · Wᵀ + bias).
    LinearFused {
        kernel: LinearKernel,
        m: usize,
        n: usize,
        k: usize,
        weights: DType,
    },
    RmsNorm {
        rows: usize,
        cols: usize,
        eps: f32,
    },
    SwiGlu {
        len: usize,
    },
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Case::Linear {
                kernel,
                m,
                n,
                k,
                weights,
            }
            | Case::LinearFused {
                kernel,
                m,
                n,
                k,
                weights,
            } => {
                let name = match kernel {
                    LinearKernel::Auto => "linear",
                    LinearKernel::Matvec => "matvec",
                    LinearKernel::Matmul => "matmul",
                };
                let fused = if matches!(self, Case::LinearFused { .. }) {
                    " + bias + residual"
                } else {
                    ""
                };
                write!(
                    f,
                    "{name} {weights} weights, x[{m}×{k}] · W[{n}×{k}]ᵀ{fused}"
                )
            }
            Case::RmsNorm { rows, cols, eps } => write!(f, "rmsnorm [{rows}×{cols}] eps {eps:e}"),
            Case::SwiGlu { len } => write!(f, "swiglu [{len}]"),
        }
    }
}

/// The comparison of one kernel run with its reference.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What ran (a case's description).
    pub what: String,
    pub values: usize,
    /// Largest |gpu − reference|.
    pub max_abs_err: f64,
    /// Largest |gpu − reference| / tolerance; the case passes when ≤ 1.
    pub worst_ratio: f64,
    /// Index and values of the worst element, for diagnostics.
    pub worst: Option<(usize, f32, f64)>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} values, max |err| {:.2e}, {:.1}% of tolerance",
            if self.passed() { "ok  " } else { "FAIL" },
            self.what,
            self.values,
            self.max_abs_err,
            self.worst_ratio * 100.0
        )?;
        if let (false, Some((i, gpu, r))) = (self.passed(), self.worst) {
            write!(f, " (element {i}: gpu {gpu:e}, reference {r:e})")?;
        }
        Ok(())
    }
}

/// Compares a GPU result with its reference element by element against `tolerance(i)`; a
/// tolerance of 0 demands equality, and NaN is infinitely wrong.
pub fn compare(
    what: impl fmt::Display,
    gpu: &[f32],
    reference: &[f64],
    tolerance: impl Fn(usize) -> f64,
) -> Outcome {
    let mut out = Outcome {
        what: what.to_string(),
        values: gpu.len(),
        max_abs_err: 0.0,
        worst_ratio: 0.0,
        worst: None,
    };
    if gpu.len() != reference.len() {
        out.worst_ratio = f64::INFINITY;
        return out;
    }
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let err = (f64::from(g) - r).abs();
        // NaN compares false everywhere: count it as infinitely wrong.
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else if err == 0.0 {
            0.0
        } else {
            err / tolerance(i)
        };
        out.max_abs_err = out
            .max_abs_err
            .max(if err.is_nan() { f64::INFINITY } else { err });
        if ratio > out.worst_ratio || out.worst.is_none() {
            out.worst_ratio = out.worst_ratio.max(ratio);
            out.worst = Some((i, g, r));
        }
    }
    out
}

/// Runs one case with data drawn from `seed`, on the GPU and on the CPU, and compares.
pub async fn run_case(ctx: &GpuContext, case: Case, seed: u64) -> Result<Outcome> {
    let mut rng = Rng::new(seed);
    match case {
        Case::Linear {
            kernel,
            m,
            n,
            k,
            weights,
        } => run_linear(ctx, case, kernel, [m, n, k], weights, false, &mut rng).await,
        Case::LinearFused {
            kernel,
            m,
            n,
            k,
            weights,
        } => run_linear(ctx, case, kernel, [m, n, k], weights, true, &mut rng).await,
        Case::RmsNorm { rows, cols, eps } => {
            // Rows of different scales, so the normalisation has something to do.
            let mut x = Vec::with_capacity(rows * cols);
            for _ in 0..rows {
                let s = rng.uniform(0.01, 20.0);
                x.extend(rng.vec(cols, -s, s));
            }
            let g = rng.vec(cols, -2.0, 2.0);
            let xt = ctx.upload_f32("x", &[rows, cols], &x)?;
            let gt = ctx.upload_f32("weight", &[cols], &g)?;
            let yt = ctx.zeros("y", &[rows, cols], DType::F32)?;
            let d = kernels::rmsnorm(ctx, &xt, &gt, eps, &yt).await?;
            let mut rec = ctx.recorder();
            rec.dispatch(&d);
            let slot = rec.read(&yt);
            let gpu = rec.submit_and_read().await?.f32(slot)?;
            let want = reference::rmsnorm(&x, cols, &g, eps);
            Ok(compare(case, &gpu, &want, |i| {
                reference::rmsnorm_tolerance(cols, want[i])
            }))
        }
        Case::SwiGlu { len } => {
            let gate = rng.vec(len, -12.0, 12.0);
            let up = rng.vec(len, -3.0, 3.0);
            let gt = ctx.upload_f32("gate", &[len], &gate)?;
            let ut = ctx.upload_f32("up", &[len], &up)?;
            let ot = ctx.zeros("out", &[len], DType::F32)?;
            let d = kernels::swiglu(ctx, &gt, &ut, &ot).await?;
            let mut rec = ctx.recorder();
            rec.dispatch(&d);
            let slot = rec.read(&ot);
            let gpu = rec.submit_and_read().await?.f32(slot)?;
            let want = reference::swiglu(&gate, &up);
            Ok(compare(case, &gpu, &want, |i| {
                reference::swiglu_tolerance(gate[i], want[i])
            }))
        }
    }
}

async fn run_linear(
    ctx: &GpuContext,
    case: Case,
    kernel: LinearKernel,
    [m, n, k]: [usize; 3],
    weights: DType,
    fused: bool,
    rng: &mut Rng,
) -> Result<Outcome> {
    let bytes = random_gguf_bytes(weights, n * k, rng);
    // The reference sees exactly the weights the GPU sees.
    let w = dequantize_to_vec(weights, &bytes)?;
    let x = rng.vec(m * k, -1.0, 1.0);
    let bias = rng.vec(n, -1.0, 1.0);
    let residual = rng.vec(m * n, -4.0, 4.0);
    let wt = ctx.upload_gguf("w", &[n, k], weights, &bytes)?;
    let xt = ctx.upload_f32("x", &[m, k], &x)?;
    let (yt, bt) = if fused {
        (
            ctx.upload_f32("y", &[m, n], &residual)?,
            Some(ctx.upload_f32("bias", &[n], &bias)?),
        )
    } else {
        (ctx.zeros("y", &[m, n], DType::F32)?, None)
    };
    let opts = Linear {
        kernel,
        bias: bt.as_ref(),
        accumulate: fused,
        ..Default::default()
    };
    let d = kernels::linear_with(ctx, &wt, &xt, &yt, &opts).await?;
    let mut rec = ctx.recorder();
    rec.dispatch(&d);
    let slot = rec.read(&yt);
    let gpu = rec.submit_and_read().await?.f32(slot)?;
    let (mut want, mut mag) = reference::linear(&w, n, k, &x, m);
    if fused {
        // Bias and residual are two more terms of the sum.
        for (i, (v, a)) in want.iter_mut().zip(&mut mag).enumerate() {
            let extra = [f64::from(bias[i % n]), f64::from(residual[i])];
            *v += extra[0] + extra[1];
            *a += extra[0].abs() + extra[1].abs();
        }
    }
    let terms = if fused { k + 2 } else { k };
    let tiles = TileBound::new(ctx, kernel, m, k, &x, &w);
    Ok(compare(case, &gpu, &want, |i| {
        tiles.widen(
            i / n.max(1),
            reference::linear_tolerance(terms, mag[i]),
            mag[i],
        )
    }))
}

/// Where a linear layer runs on the prefill GEMM's f16 tiles, what its bounds must allow for
/// ([`reference::f16_tiles_tolerance`]): the largest |x| of each activation row (normalised,
/// with the RMSNorm prologue) and the largest |w|.
pub struct TileBound {
    on: bool,
    k: usize,
    x_max: Vec<f64>,
    w_max: f64,
}

impl TileBound {
    /// A layer of `m` rows with `kernel` on `ctx`: `x` the activation rows as the products see
    /// them (`k` each), `w` the weights.
    pub fn new<X: Copy + Into<f64>>(
        ctx: &GpuContext,
        kernel: LinearKernel,
        m: usize,
        k: usize,
        x: &[X],
        w: &[f32],
    ) -> Self {
        let abs_max = |v: &[X]| v.iter().fold(0.0f64, |a, &b| a.max(b.into().abs()));
        TileBound {
            on: kernels::uses_f16_tiles(ctx, kernel, m),
            k,
            x_max: x.chunks(k.max(1)).map(abs_max).collect(),
            w_max: w.iter().fold(0.0f64, |a, &b| a.max(f64::from(b).abs())),
        }
    }

    /// `tol`, the bound of an output of activation row `row` whose products sum to `mag` in
    /// magnitude, widened where the tiles are f16.
    pub fn widen(&self, row: usize, tol: f64, mag: f64) -> f64 {
        if self.on {
            reference::f16_tiles_tolerance(self.k, tol, mag, self.x_max[row], self.w_max)
        } else {
            tol
        }
    }
}

/// Model-sized shapes (SmolLM2-135M: hidden 576, MLP 1536) and awkward ones (odd, prime, smaller
/// than one tile).
pub fn standard_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for weights in [DType::F32, DType::F16] {
        for (m, n, k) in [
            (1, 576, 576),
            (1, 1536, 576),
            (1, 576, 1536),
            (3, 37, 101),
            (12, 37, 101),
            (1, 1, 1),
        ] {
            cases.push(Case::Linear {
                kernel: LinearKernel::Matvec,
                m,
                n,
                k,
                weights,
            });
        }
        for (m, n, k) in [(16, 576, 576), (77, 130, 33), (5, 3, 1)] {
            cases.push(Case::Linear {
                kernel: LinearKernel::Matmul,
                m,
                n,
                k,
                weights,
            });
        }
    }
    for weights in [
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::IQ4_NL,
    ] {
        for (kernel, m, n, k) in [
            (LinearKernel::Matvec, 2, 37, 576),
            (LinearKernel::Matmul, 70, 65, 96),
        ] {
            cases.push(Case::Linear {
                kernel,
                m,
                n,
                k,
                weights,
            });
        }
    }
    for weights in [
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_XS,
    ] {
        for (kernel, m, n, k) in [
            (LinearKernel::Matvec, 1, 37, 768),
            (LinearKernel::Matmul, 70, 65, 512),
        ] {
            cases.push(Case::Linear {
                kernel,
                m,
                n,
                k,
                weights,
            });
        }
    }
    for (kernel, m, weights) in [
        (LinearKernel::Matvec, 1, DType::Q8_0),
        (LinearKernel::Matmul, 9, DType::F16),
    ] {
        cases.push(Case::LinearFused {
            kernel,
            m,
            n: 96,
            k: 256,
            weights,
        });
    }
    cases.push(Case::RmsNorm {
        rows: 7,
        cols: 576,
        eps: 1e-5,
    });
    cases.push(Case::RmsNorm {
        rows: 1,
        cols: 1,
        eps: 1e-6,
    });
    cases.push(Case::SwiGlu { len: 1536 * 3 + 1 });
    cases
}

/// Runs [`standard_cases`] and returns every outcome (the caller decides what a failure means).
pub async fn run_standard(ctx: &GpuContext) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for (i, case) in standard_cases().into_iter().enumerate() {
        out.push(run_case(ctx, case, 0x5EED_0000 + i as u64).await?);
    }
    Ok(out)
}
