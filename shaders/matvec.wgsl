// y[m, n] = Σₖ W[n, k] · x[m, k] (+ bias, + y): a linear layer on one or a few activation rows,
// the shape of every decode step. Bound by reading W, so W is read exactly once and x once per
// workgroup: each workgroup computes ROWS consecutive outputs of one activation row; every
// invocation walks k with stride WG keeping ROWS partial sums, then one workgroup_reduce.
// With SWIGLU a workgroup's ROWS rows of W are the gate rows of ROWS / 2 output columns, then
// their up rows.
// With ROPE (qkv_rope.wgsl) they are the rows of ROWS / 4 quads.
// With NORM the reduction carries one more value, the row's Σx² (red_in[ROWS]).
// x is read through x_in(m, k): x[m, k], or with COMBINE split attention's partial results
// combined as they are loaded (combine_in.wgsl), after combine_prologue.
// Prelude: WG (power of two), ROWS, RED_N (= ROWS + NORM), and linear_common.wgsl's.

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

// NORM: adds x² to the row's sum of squares and returns x times the norm weight of column k.
fn norm_in(x: f32, k: u32) -> f32 {
    if (NORM == 1u) {
        red_in[RED_N - 1u] = fma(x, x, red_in[RED_N - 1u]);
        return x * norm_g(k);
    }
    return x;
}

fn clear_sums() {
    for (var r = 0u; r < RED_N; r++) {
        red_in[r] = 0.0;
    }
}

fn store_rows(li: u32, m: u32, n0: u32) {
    var total = workgroup_reduce(li);
    var s = 1.0;
    if (NORM == 1u) {
        s = norm_scale(total[RED_N - 1u]);
    }
    if (ROPE == 1u) {
        if (m < p.m && li < COLS && n0 + li < p.n / 4u) {
            let r = 4u * li;
            finish_quad(m, n0 + li, vec4<f32>(total[r], total[r + 1u], total[r + 2u], total[r + 3u]) * s);
        }
        return;
    }
    if (m < p.m && n0 + li < p.n && li < COLS) {
        if (SWIGLU == 1u) {
            finish_swiglu(m, n0 + li, total[li] * s, total[li + COLS] * s);
        } else {
            finish(m, n0 + li, total[li] * s);
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
    let m = g / p.blocks;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m);
    if (m < p.m) {
        let rows = live_rows(n0);
        for (var k = li; k < p.k; k += WG) {
            let xv = norm_in(x_in(m, k), k);
            for (var r = 0u; r < rows; r++) {
                red_in[r] = fma(bitcast<f32>(w[w_row(n0, r) * p.w_stride + k]), xv, red_in[r]);
            }
        }
    }
    store_rows(li, m, n0);
}

// f16 or bf16 weights, two per word; rows are padded to an even length.
@compute @workgroup_size(WG)
fn matvec_half(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m = g / p.blocks;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m);
    if (m < p.m) {
        let rows = live_rows(n0);
        let row_words = p.w_stride / 2u;
        let pairs = p.k / 2u;
        for (var j = li; j < pairs; j += WG) {
            let xv = vec2<f32>(norm_in(x_in(m, 2u * j), 2u * j), norm_in(x_in(m, 2u * j + 1u), 2u * j + 1u));
            for (var r = 0u; r < rows; r++) {
                let wv = unpack_half2(w[w_row(n0, r) * row_words + j]);
                red_in[r] = fma(wv.x, xv.x, fma(wv.y, xv.y, red_in[r]));
            }
        }
        // An odd k leaves one column, whose pair partner is padding.
        if ((p.k & 1u) == 1u && li == WG - 1u) {
            let xv = norm_in(x_in(m, p.k - 1u), p.k - 1u);
            for (var r = 0u; r < rows; r++) {
                let wv = unpack_half2(w[w_row(n0, r) * row_words + pairs]);
                red_in[r] = fma(wv.x, xv, red_in[r]);
            }
        }
    }
    store_rows(li, m, n0);
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
    let m = g / p.blocks;
    let n0 = (g % p.blocks) * COLS;
    clear_sums();
    combine_prologue(li, m);
    if (m < p.m) {
        let rows = live_rows(n0);
        let nb = p.k / QK;
        // (QK < 8 only for float formats, which never reach this entry point.)
        let groups_per_block = max(QK / 8u, 1u);
        for (var gi = li; gi < p.k / 8u; gi += WG) {
            var xv: array<f32, 8>;
            for (var i = 0u; i < 8u; i++) {
                xv[i] = norm_in(x_in(m, 8u * gi + i), 8u * gi + i);
            }
            let bi = gi / groups_per_block;
            let gg = gi % groups_per_block;
            for (var r = 0u; r < rows; r++) {
                let wv = decode8(w_row(n0, r) * nb + bi, gg, p.scale_base);
                var s = red_in[r];
                for (var i = 0u; i < 8u; i++) {
                    s = fma(wv[i], xv[i], s);
                }
                red_in[r] = s;
            }
        }
    }
    store_rows(li, m, n0);
}
