//! Runs kernels on the GPU against their CPU references. The tests drive it with random shapes;
//! `pocketlm selfcheck` (and `make demo`) runs a fixed set of model-sized and awkward shapes.

use std::fmt;

use half::f16;

use crate::error::Result;
use crate::gpu::{DType, GpuContext};
use crate::kernels;
use crate::reference::{self, Rng};

/// Which linear-layer kernel to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKernel {
    Matvec,
    Matmul,
}

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
            } => {
                let name = match kernel {
                    LinearKernel::Matvec => "matvec",
                    LinearKernel::Matmul => "matmul",
                };
                write!(f, "{name} {weights} weights, x[{m}×{k}] · W[{n}×{k}]ᵀ")
            }
            Case::RmsNorm { rows, cols, eps } => write!(f, "rmsnorm [{rows}×{cols}] eps {eps:e}"),
            Case::SwiGlu { len } => write!(f, "swiglu [{len}]"),
        }
    }
}

/// The comparison of one kernel run with its reference.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: Case,
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
            self.case,
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

fn compare(
    case: Case,
    gpu: &[f32],
    reference: &[f64],
    tolerance: impl Fn(usize) -> f64,
) -> Outcome {
    let mut out = Outcome {
        case,
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
        } => {
            let mut w = rng.vec(n * k, -1.0, 1.0);
            let x = rng.vec(m * k, -1.0, 1.0);
            let wt = match weights {
                DType::F32 => ctx.upload_f32("w", &[n, k], &w)?,
                DType::F16 => {
                    let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                    // The reference sees exactly the weights the GPU sees.
                    w = h.iter().map(|v| v.to_f32()).collect();
                    ctx.upload_f16("w", &[n, k], &h)?
                }
                other => {
                    return Err(crate::Error::UnsupportedDType {
                        kernel: "selfcheck",
                        tensor: "w".into(),
                        dtype: other,
                        expected: "f32 or f16",
                    })
                }
            };
            let xt = ctx.upload_f32("x", &[m, k], &x)?;
            let yt = ctx.zeros("y", &[m, n], DType::F32)?;
            let d = match kernel {
                LinearKernel::Matvec => kernels::matvec(ctx, &wt, &xt, &yt).await?,
                LinearKernel::Matmul => kernels::matmul(ctx, &wt, &xt, &yt).await?,
            };
            let mut rec = ctx.recorder();
            rec.dispatch(&d);
            let slot = rec.read(&yt);
            let gpu = rec.submit_and_read().await?.f32(slot)?;
            let (want, mag) = reference::linear(&w, n, k, &x, m);
            Ok(compare(case, &gpu, &want, |i| {
                reference::linear_tolerance(k, mag[i])
            }))
        }
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
