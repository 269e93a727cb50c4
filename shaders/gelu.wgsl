// out[i] = gelu(x[i]), the tanh approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
// Evaluated as x·σ(2t) with t = √(2/π)·(x + 0.044715·x³), which equals it exactly in real
// arithmetic (0.5·(1 + tanh t) = 1 / (1 + e^(−2t))) but avoids both hazards of the literal form:
// 1 + tanh(t) cancels for negative t (so the result would carry an absolute, not relative,
// error), and WGSL's tanh is only "inherited from sinh/cosh", whose exp(±t) overflow for
// |t| > 88. Here the exponent is always −2|t| ≤ 0, so exp never overflows, and x is clamped to
// ±20 before cubing (beyond it σ(2t) is 0 or 1 to far below f32 precision), so no intermediate is
// ever infinite: WGSL lets implementations assume overflow never happens.
// Each invocation handles ELEMS elements, WG apart so that neighbours touch neighbouring words.
// Prelude: WG, ELEMS.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const GELU_C: f32 = 0.044715;

fn gelu(v: f32) -> f32 {
    let c = clamp(v, -20.0, 20.0);
    let t = SQRT_2_OVER_PI * (c + GELU_C * (c * c * c));
    let z = exp(-2.0 * abs(t));
    // σ(2t) = 1 / (1 + e^(−2t)) for t ≥ 0 and e^(2t) / (1 + e^(2t)) for t < 0.
    let s = select(z, 1.0, t >= 0.0) / (1.0 + z);
    return v * s;
}

@compute @workgroup_size(WG)
fn gelu_tanh(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = linear_workgroup(wid, nwg) * WG * ELEMS + li;
    for (var j = 0u; j < ELEMS; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            out[i] = gelu(x[i]);
        }
    }
}
