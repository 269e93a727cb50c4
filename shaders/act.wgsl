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

// The gate's activation: GATE_ACT 0 is SiLU (SwiGLU), 1 is GELU-tanh (GeGLU).
fn gate_act(g: f32) -> f32 {
    if (GATE_ACT == 1u) {
        return gelu(g);
    }
    return silu(g);
}
