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
// Prelude: WG, MT, RPI (W rows per invocation: its column's; the gate and up rows with SWIGLU;
// a quad's four rows with ROPE, qkv_rope.wgsl), and linear_common.wgsl's (and quant.wgsl).
// Loops over MT and RPI are unrolled (`// unroll`, gpu::pipeline::unroll): the accumulators are
// arrays indexed by them, which CPU drivers would otherwise address lane by lane.


struct Cell {
    // The output column, or the quad.
    n: u32,
    m0: u32,
    rows: u32,
    live: bool,
}

fn cell(li: u32, wid: vec3<u32>, nwg: vec3<u32>) -> Cell {
    let g = linear_workgroup(wid, nwg);
    let n = (g % p.blocks) * WG + li;
    let m0 = (g / p.blocks) * MT;
    let units = p.n >> (2u * ROPE);
    return Cell(n, m0, min(MT, p.m - min(m0, p.m)), n < units && m0 < p.m);
}

// The W row of the cell's i-th dot product.
fn w_row(c: Cell, i: u32) -> u32 {
    if (ROPE == 1u) {
        return quad_col(c.n, i);
    }
    return c.n + p.n * i;
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

fn sum4(a: vec4<f32>) -> f32 {
    return (a.x + a.y) + (a.z + a.w);
}

// Writes the MT results of a cell (only its live rows); acc[i · MT + t] holds dot product i of
// row t.
fn finish_cell(c: Cell, acc: array<vec4<f32>, RPI * MT>) {
    for (var t = 0u; t < MT; t++) { // unroll
        if (t < c.rows) {
            var s = 1.0;
            if (NORM == 1u) {
                s = norm_scale(sum4(sum_sq[t]));
            }
            let v = sum4(acc[t]) * s;
            if (ROPE == 1u) {
                let r = vec4<f32>(v, sum4(acc[MT + t]) * s, sum4(acc[2u * MT + t]) * s, sum4(acc[3u * MT + t]) * s);
                finish_quad(c.m0 + t, c.n, r);
            } else if (SWIGLU == 1u) {
                finish_swiglu(c.m0 + t, c.n, v, sum4(acc[MT + t]) * s);
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
    var acc: array<vec4<f32>, RPI * MT>;
    let nb = p.k / QK;
    let gpb = QK / 8u;
    var base: array<u32, RPI>;
    for (var i = 0u; i < RPI; i++) { // unroll
        base[i] = w_row(c, i) * nb;
    }
    for (var b = 0u; b < nb; b++) {
        for (var gg = 0u; gg < gpb; gg++) {
            var w0: array<vec4<f32>, RPI>;
            var w1: array<vec4<f32>, RPI>;
            for (var i = 0u; i < RPI; i++) { // unroll
                let wv = decode8(base[i] + b, gg, p.scale_base);
                w0[i] = vec4<f32>(wv[0], wv[1], wv[2], wv[3]);
                w1[i] = vec4<f32>(wv[4], wv[5], wv[6], wv[7]);
            }
            let k = b * QK + 8u * gg;
            for (var t = 0u; t < MT; t++) { // unroll
                let xa = x4n(c, t, k);
                let xb = x4n(c, t, k + 4u);
                for (var i = 0u; i < RPI; i++) { // unroll
                    acc[i * MT + t] = fma(w1[i], xb, fma(w0[i], xa, acc[i * MT + t]));
                }
            }
        }
    }
    finish_cell(c, acc);
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
    var acc: array<vec4<f32>, RPI * MT>;
    var row: array<u32, RPI>;
    for (var i = 0u; i < RPI; i++) { // unroll
        row[i] = w_row(c, i) * p.w_stride;
    }
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        var w0: array<vec4<f32>, RPI>;
        for (var i = 0u; i < RPI; i++) { // unroll
            let r = row[i] + k;
            w0[i] = bitcast<vec4<f32>>(vec4<u32>(w[r], w[r + 1u], w[r + 2u], w[r + 3u]));
        }
        for (var t = 0u; t < MT; t++) { // unroll
            let xa = x4n(c, t, k);
            for (var i = 0u; i < RPI; i++) { // unroll
                acc[i * MT + t] = fma(w0[i], xa, acc[i * MT + t]);
            }
        }
    }
    for (var k = k4; k < p.k; k++) {
        var w0: array<f32, RPI>;
        for (var i = 0u; i < RPI; i++) { // unroll
            w0[i] = bitcast<f32>(w[row[i] + k]);
        }
        for (var t = 0u; t < MT; t++) { // unroll
            let xa = x1n(c, t, k);
            for (var i = 0u; i < RPI; i++) { // unroll
                acc[i * MT + t].x = fma(w0[i], xa, acc[i * MT + t].x);
            }
        }
    }
    finish_cell(c, acc);
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
    var acc: array<vec4<f32>, RPI * MT>;
    var row: array<u32, RPI>;
    for (var i = 0u; i < RPI; i++) { // unroll
        row[i] = w_row(c, i) * (p.w_stride / 2u);
    }
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        var w0: array<vec4<f32>, RPI>;
        for (var i = 0u; i < RPI; i++) { // unroll
            let j = row[i] + k / 2u;
            w0[i] = vec4<f32>(unpack_half2(w[j]), unpack_half2(w[j + 1u]));
        }
        for (var t = 0u; t < MT; t++) { // unroll
            let xa = x4n(c, t, k);
            for (var i = 0u; i < RPI; i++) { // unroll
                acc[i * MT + t] = fma(w0[i], xa, acc[i * MT + t]);
            }
        }
    }
    for (var k = k4; k < p.k; k++) {
        var w0: array<f32, RPI>;
        for (var i = 0u; i < RPI; i++) { // unroll
            w0[i] = unpack_half2(w[row[i] + k / 2u])[k & 1u];
        }
        for (var t = 0u; t < MT; t++) { // unroll
            let xa = x1n(c, t, k);
            for (var i = 0u; i < RPI; i++) { // unroll
                acc[i * MT + t].x = fma(w0[i], xa, acc[i * MT + t].x);
            }
        }
    }
    finish_cell(c, acc);
}
