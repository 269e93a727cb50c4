// The activations of MLPs, shared by the element-wise kernels and the linear layers' gated
// epilogue.
//
// silu(g) = g / (1 + exp(-g)); exp(-g) overflowing to +inf for very negative g gives -0, the
// right limit.
//
// gelu(v): the tanh approximation 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))), evaluated as
// v·σ(2t) with t = √(2/π)·(v + 0.044715·v³), which equals it exactly in real arithmetic
// (0.5·(1 + tanh t) = 1 / (1 + e^(−2t))) but avoids both hazards of the literal form: 1 + tanh(t)
// cancels for negative t (so the result would carry an absolute, not relative, error), and WGSL's
// tanh is only "inherited from sinh/cosh", whose exp(±t) overflow for |t| > 88. Here the exponent
// is always −2|t| ≤ 0, so exp never overflows, and v is clamped to ±20 before cubing (beyond it
// σ(2t) is 0 or 1 to far below f32 precision), so no intermediate is ever infinite: WGSL lets
// implementations assume overflow never happens.

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

fn silu(g: f32) -> f32 {
    return g / (1.0 + exp(-g));
}

fn gelu(v: f32) -> f32 {
    let c = clamp(v, -20.0, 20.0);
    let t = SQRT_2_OVER_PI * (c + GELU_C * (c * c * c));
    let z = exp(-2.0 * abs(t));
    // σ(2t) = 1 / (1 + e^(−2t)) for t ≥ 0 and e^(2t) / (1 + e^(2t)) for t < 0.
    let s = select(z, 1.0, t >= 0.0) / (1.0 + z);
    return v * s;
}

// gelu_erf(v): the exact GELU v·Φ(v) = 0.5·v·(1 + erf(v/√2)) (BERT's "gelu"), with Φ from
// erfc(z), z = |v|/√2: Φ(v) = 1 − erfc(z)/2 for v ≥ 0 and erfc(z)/2 for v < 0, so the negative
// side keeps a relative error instead of cancelling in 1 + erf. erfc is Numerical Recipes'
// Chebyshev fit `erfcc`, erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), whose fractional error is
// below 1.2e-7 for every z ≥ 0. v is clamped to ±20 first: beyond, Φ is 0 or 1 to far below f32
// precision, and −z² stays finite.
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(p - z * z);
}

fn gelu_erf(v: f32) -> f32 {
    let c = clamp(v, -20.0, 20.0);
    let half_erfc = 0.5 * erfc_nonneg(abs(c) * FRAC_1_SQRT_2);
    return v * select(half_erfc, 1.0 - half_erfc, c >= 0.0);
}

// The gate's activation: GATE_ACT 0 is SiLU (SwiGLU), 1 is GELU-tanh (GeGLU), 2 the exact GELU.
fn gate_act(g: f32) -> f32 {
    if (GATE_ACT == 1u) {
        return gelu(g);
    }
    if (GATE_ACT == 2u) {
        return gelu_erf(g);
    }
    return silu(g);
}
