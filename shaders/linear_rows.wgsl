// y[m, n] = Σₖ W[n, k] · x[m, k] (+ bias, + y) for CPU implementations of WebGPU (lavapipe,
// SwiftShader, a browser's fallback adapter), which run a workgroup's invocations as SIMD lanes of
// one thread: there, spreading a dot product over a workgroup costs a workgroup-memory reduction
// and barriers (SwiftShader turns every invocation of a kernel with barriers into a coroutine),
// and idle lanes. Here each invocation computes whole dot products: one output column n for MT
// consecutive activation rows, so every weight is decoded once and used MT times, and no
// invocation waits for another. x is the same for all lanes of a workgroup (a broadcast load).
// With SWIGLU an invocation computes the gate (W row n) and up (W row p.n + n) dot products of
// its column. Accumulation is in vec4 lanes, summed at the end (any order meets the bound
// γ_{k+1}·Σ|xᵢwᵢ|).
// With NORM each invocation also sums x² of its MT rows as it loads them (sum_sq, in vec4 lanes
// like the dot products) and loads x times the norm weight.
// Prelude: WG, MT, and linear_common.wgsl's (and quant.wgsl).

struct Cell {
    n: u32,
    m0: u32,
    rows: u32,
    live: bool,
}

fn cell(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> Cell {
    let g = linear_workgroup(wid, nwg);
    let n = (g % p.blocks) * WG + li;
    let m0 = (g / p.blocks) * MT;
    return Cell(n, m0, min(MT, p.m - min(m0, p.m)), n < p.n && m0 < p.m);
}

// NORM: Σx² of each of the MT rows, in vec4 lanes.
var<private> sum_sq: array<vec4<f32>, MT>;

// x4 for the dot products: with NORM, adds the x² to row t's sum of squares and multiplies by the
// norm weight.
fn x4n(c: Cell, t: u32, k: u32) -> vec4<f32> {
    let v = x4(c, t, k);
    if (NORM == 1u) {
        sum_sq[t] = fma(v, v, sum_sq[t]);
        return v * norm_g4(k);
    }
    return v;
}

fn x1n(c: Cell, t: u32, k: u32) -> f32 {
    let v = x1(c, t, k);
    if (NORM == 1u) {
        sum_sq[t].x = fma(v, v, sum_sq[t].x);
        return v * norm_g(k);
    }
    return v;
}

// Writes the MT results of a cell (only its live rows).
fn finish_cell(c: Cell, acc: array<vec4<f32>, MT>, acc_up: array<vec4<f32>, MT>) {
    for (var t = 0u; t < MT; t++) {
        if (t < c.rows) {
            var s = 1.0;
            if (NORM == 1u) {
                let q = sum_sq[t];
                s = norm_scale((q.x + q.y) + (q.z + q.w));
            }
            let a = acc[t];
            let v = ((a.x + a.y) + (a.z + a.w)) * s;
            if (SWIGLU == 1u) {
                let b = acc_up[t];
                finish_swiglu(c.m0 + t, c.n, v, ((b.x + b.y) + (b.z + b.w)) * s);
            } else {
                finish(c.m0 + t, c.n, v);
            }
        }
    }
}

// x[m, k .. k + 4], where rows past the end read the last row (computed, never stored).
fn x4(c: Cell, t: u32, k: u32) -> vec4<f32> {
    let i = min(c.m0 + t, p.m - 1u) * p.k + k;
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

fn x1(c: Cell, t: u32, k: u32) -> f32 {
    return x[min(c.m0 + t, p.m - 1u) * p.k + k];
}

// Block formats: k is a multiple of the block size.
@compute @workgroup_size(WG)
fn linear_rows_quant(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = cell(li, wid, nwg);
    if (!c.live) {
        return;
    }
    var acc: array<vec4<f32>, MT>;
    var acc_up: array<vec4<f32>, MT>;
    let nb = p.k / QK;
    let gpb = QK / 8u;
    let base = c.n * nb;
    let base_up = (p.n + c.n) * nb;
    for (var b = 0u; b < nb; b++) {
        for (var gg = 0u; gg < gpb; gg++) {
            let wv = decode8(base + b, gg, p.scale_base);
            let w0 = vec4<f32>(wv[0], wv[1], wv[2], wv[3]);
            let w1 = vec4<f32>(wv[4], wv[5], wv[6], wv[7]);
            var u0 = vec4<f32>();
            var u1 = vec4<f32>();
            if (SWIGLU == 1u) {
                let uv = decode8(base_up + b, gg, p.scale_base);
                u0 = vec4<f32>(uv[0], uv[1], uv[2], uv[3]);
                u1 = vec4<f32>(uv[4], uv[5], uv[6], uv[7]);
            }
            let k = b * QK + 8u * gg;
            for (var t = 0u; t < MT; t++) {
                let xa = x4n(c, t, k);
                let xb = x4n(c, t, k + 4u);
                acc[t] = fma(w1, xb, fma(w0, xa, acc[t]));
                if (SWIGLU == 1u) {
                    acc_up[t] = fma(u1, xb, fma(u0, xa, acc_up[t]));
                }
            }
        }
    }
    finish_cell(c, acc, acc_up);
}

@compute @workgroup_size(WG)
fn linear_rows_f32(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = cell(li, wid, nwg);
    if (!c.live) {
        return;
    }
    var acc: array<vec4<f32>, MT>;
    var acc_up: array<vec4<f32>, MT>;
    let row = c.n * p.w_stride;
    let row_up = (p.n + c.n) * p.w_stride;
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        let w0 = bitcast<vec4<f32>>(vec4<u32>(w[row + k], w[row + k + 1u], w[row + k + 2u], w[row + k + 3u]));
        var u0 = vec4<f32>();
        if (SWIGLU == 1u) {
            u0 = bitcast<vec4<f32>>(vec4<u32>(w[row_up + k], w[row_up + k + 1u], w[row_up + k + 2u], w[row_up + k + 3u]));
        }
        for (var t = 0u; t < MT; t++) {
            let xa = x4n(c, t, k);
            acc[t] = fma(w0, xa, acc[t]);
            if (SWIGLU == 1u) {
                acc_up[t] = fma(u0, xa, acc_up[t]);
            }
        }
    }
    for (var k = k4; k < p.k; k++) {
        let w0 = bitcast<f32>(w[row + k]);
        var u0 = 0.0;
        if (SWIGLU == 1u) {
            u0 = bitcast<f32>(w[row_up + k]);
        }
        for (var t = 0u; t < MT; t++) {
            let xa = x1n(c, t, k);
            acc[t].x = fma(w0, xa, acc[t].x);
            if (SWIGLU == 1u) {
                acc_up[t].x = fma(u0, xa, acc_up[t].x);
            }
        }
    }
    finish_cell(c, acc, acc_up);
}

// f16 or bf16 weights, two per word; rows are padded to an even length.
@compute @workgroup_size(WG)
fn linear_rows_half(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = cell(li, wid, nwg);
    if (!c.live) {
        return;
    }
    var acc: array<vec4<f32>, MT>;
    var acc_up: array<vec4<f32>, MT>;
    let row = c.n * (p.w_stride / 2u);
    let row_up = (p.n + c.n) * (p.w_stride / 2u);
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        let j = row + k / 2u;
        let w0 = vec4<f32>(unpack_half2(w[j]), unpack_half2(w[j + 1u]));
        var u0 = vec4<f32>();
        if (SWIGLU == 1u) {
            let ju = row_up + k / 2u;
            u0 = vec4<f32>(unpack_half2(w[ju]), unpack_half2(w[ju + 1u]));
        }
        for (var t = 0u; t < MT; t++) {
            let xa = x4n(c, t, k);
            acc[t] = fma(w0, xa, acc[t]);
            if (SWIGLU == 1u) {
                acc_up[t] = fma(u0, xa, acc_up[t]);
            }
        }
    }
    for (var k = k4; k < p.k; k++) {
        let w0 = unpack_half2(w[row + k / 2u])[k & 1u];
        var u0 = 0.0;
        if (SWIGLU == 1u) {
            u0 = unpack_half2(w[row_up + k / 2u])[k & 1u];
        }
        for (var t = 0u; t < MT; t++) {
            let xa = x1n(c, t, k);
            acc[t].x = fma(w0, xa, acc[t].x);
            if (SWIGLU == 1u) {
                acc_up[t].x = fma(u0, xa, acc_up[t].x);
            }
        }
    }
    finish_cell(c, acc, acc_up);
}
