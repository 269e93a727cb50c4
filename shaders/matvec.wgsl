// y[m, n] = Σₖ W[n, k] · x[m, k] (+ bias, + y): a linear layer on one or a few activation rows,
// the shape of every decode step and of short prefill steps. Bound by reading W, so W is read
// exactly once per MT activation rows and x once per workgroup: each workgroup computes ROWS
// consecutive outputs of MT consecutive activation rows; every invocation walks k with stride WG,
// decodes its ROWS weights once per step and applies them to all MT rows, keeping MT · ROWS
// partial sums, then one workgroup_reduce.
// With SWIGLU a workgroup's ROWS rows of W are the gate rows of ROWS / 2 output columns, then
// their up rows.
// With ROPE (qkv_rope.wgsl) they are the rows of ROWS / 4 quads (MT = 1).
// With NORM the reduction carries MT more values, each row's Σx² (red_in[MT · ROWS + t]).
// x is read through x_in(m, k): x[m, k], or with COMBINE split attention's partial results
// combined as they are loaded (combine_in.wgsl, MT = 1), after combine_prologue.
// Prelude: WG (power of two), ROWS, MT, RED_N (= MT · (ROWS + NORM)), and linear_common.wgsl's.

// Output columns (quads with ROPE) per workgroup.
const COLS: u32 = ROWS >> (SWIGLU + 2u * ROPE);

// The W row of the workgroup's local row r.
fn w_row(n0: u32, r: u32) -> u32 {
    if (ROPE == 1u) {
        // Quads past the end repeat the last one: computed, never stored.
        return quad_col(min(n0 + r / 4u, p.n / 4u - 1u), r % 4u);
    }
    if (SWIGLU == 1u) {
        // Columns past the end repeat the last one: computed, never stored.
        return min(n0 + r % COLS, p.n - 1u) + p.n * (r / COLS);
    }
    return n0 + r;
}

// Local rows with work.
fn live_rows(n0: u32) -> u32 {
    if (SWIGLU == 1u || ROPE == 1u) {
        return ROWS;
    }
    return min(ROWS, p.n - n0);
}

// The activation row of the workgroup's local row t: rows past the end repeat the last one
// (computed, never stored).
fn act_row(m0: u32, t: u32) -> u32 {
    return min(m0 + t, p.m - 1u);
}

// x[m0 + t, k] through x_in; with NORM, adds x² to local row t's sum of squares and returns x
// times the norm weight of column k.
fn load_x(m0: u32, t: u32, k: u32) -> f32 {
    let x = x_in(act_row(m0, t), k);
    if (NORM == 1u) {
        red_in[MT * ROWS + t] = fma(x, x, red_in[MT * ROWS + t]);
        return x * norm_g(k);
    }
    return x;
}

fn clear_sums() {
    for (var r = 0u; r < RED_N; r++) {
        red_in[r] = 0.0;
    }
}

fn store_rows(li: u32, m0: u32, n0: u32) {
    var total = workgroup_reduce(li);
    // Invocation li stores output column c of local row t.
    for (var o = li; o < MT * COLS; o += WG) {
        let t = o / COLS;
        let c = o % COLS;
        let m = m0 + t;
        var s = 1.0;
        if (NORM == 1u) {
            s = norm_scale(total[MT * ROWS + t]);
        }
        let r = t * ROWS;
        if (ROPE == 1u) {
            if (m < p.m && n0 + c < p.n / 4u) {
                let q = r + 4u * c;
                finish_quad(m, n0 + c, vec4<f32>(total[q], total[q + 1u], total[q + 2u], total[q + 3u]) * s);
            }
        } else if (m < p.m && n0 + c < p.n) {
            if (SWIGLU == 1u) {
                finish_swiglu(m, n0 + c, total[r + c] * s, total[r + c + COLS] * s);
            } else {
                finish(m, n0 + c, total[r + c] * s);
            }
        }
    }
}

@compute @workgroup_size(WG)
fn matvec_f32(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * MT;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m0);
    if (m0 < p.m) {
        let rows = live_rows(n0);
        for (var k = li; k < p.k; k += WG) {
            var wv: array<f32, ROWS>;
            for (var r = 0u; r < rows; r++) {
                wv[r] = bitcast<f32>(w[w_row(n0, r) * p.w_stride + k]);
            }
            for (var t = 0u; t < MT; t++) {
                let xv = load_x(m0, t, k);
                for (var r = 0u; r < rows; r++) {
                    red_in[t * ROWS + r] = fma(wv[r], xv, red_in[t * ROWS + r]);
                }
            }
        }
    }
    store_rows(li, m0, n0);
}

// f16 or bf16 weights, two per word; rows are padded to an even length.
@compute @workgroup_size(WG)
fn matvec_half(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * MT;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m0);
    if (m0 < p.m) {
        let rows = live_rows(n0);
        let row_words = p.w_stride / 2u;
        let pairs = p.k / 2u;
        for (var j = li; j < pairs; j += WG) {
            var wv: array<vec2<f32>, ROWS>;
            for (var r = 0u; r < rows; r++) {
                wv[r] = unpack_half2(w[w_row(n0, r) * row_words + j]);
            }
            for (var t = 0u; t < MT; t++) {
                let xv = vec2<f32>(load_x(m0, t, 2u * j), load_x(m0, t, 2u * j + 1u));
                for (var r = 0u; r < rows; r++) {
                    let i = t * ROWS + r;
                    red_in[i] = fma(wv[r].x, xv.x, fma(wv[r].y, xv.y, red_in[i]));
                }
            }
        }
        // An odd k leaves one column, whose pair partner is padding.
        if ((p.k & 1u) == 1u && li == WG - 1u) {
            var wl: array<f32, ROWS>;
            for (var r = 0u; r < rows; r++) {
                wl[r] = unpack_half2(w[w_row(n0, r) * row_words + pairs]).x;
            }
            for (var t = 0u; t < MT; t++) {
                let xv = load_x(m0, t, p.k - 1u);
                for (var r = 0u; r < rows; r++) {
                    red_in[t * ROWS + r] = fma(wl[r], xv, red_in[t * ROWS + r]);
                }
            }
        }
    }
    store_rows(li, m0, n0);
}

// Block-quantized weights (quant.wgsl): each invocation takes groups of 8 elements, so k is a
// multiple of the block size (32 or 256) and of 8.
@compute @workgroup_size(WG)
fn matvec_quant(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * MT;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m0);
    if (m0 < p.m) {
        let rows = live_rows(n0);
        let nb = p.k / QK;
        // (QK < 8 only for float formats, which never reach this entry point.)
        let groups_per_block = max(QK / 8u, 1u);
        for (var gi = li; gi < p.k / 8u; gi += WG) {
            let bi = gi / groups_per_block;
            let gg = gi % groups_per_block;
            if (MT == 1u) {
                // One activation row: its x once, then each row's weights as they are decoded
                // (8 live decoded values, not 8 · ROWS).
                var xv: array<f32, 8>;
                for (var i = 0u; i < 8u; i++) {
                    xv[i] = load_x(m0, 0u, 8u * gi + i);
                }
                for (var r = 0u; r < rows; r++) {
                    let wv = decode8(w_row(n0, r) * nb + bi, gg, p.scale_base);
                    var s = red_in[r];
                    for (var i = 0u; i < 8u; i++) {
                        s = fma(wv[i], xv[i], s);
                    }
                    red_in[r] = s;
                }
                continue;
            }
            // Several: each row's weights decoded once for all of them.
            var wv: array<array<f32, 8>, ROWS>;
            for (var r = 0u; r < rows; r++) {
                wv[r] = decode8(w_row(n0, r) * nb + bi, gg, p.scale_base);
            }
            for (var t = 0u; t < MT; t++) {
                var xv: array<f32, 8>;
                for (var i = 0u; i < 8u; i++) {
                    xv[i] = load_x(m0, t, 8u * gi + i);
                }
                for (var r = 0u; r < rows; r++) {
                    var s = red_in[t * ROWS + r];
                    for (var i = 0u; i < 8u; i++) {
                        s = fma(wv[r][i], xv[i], s);
                    }
                    red_in[t * ROWS + r] = s;
                }
            }
        }
    }
    store_rows(li, m0, n0);
}
