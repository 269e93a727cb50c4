// y[m, n] = Σₖ W[n, k] · x[m, k] (+ bias, + y): a linear layer on one or a few activation rows,
// the shape of every decode step and of short prefill steps. Bound by reading W, so W is read
// exactly once per MT activation rows and x once per workgroup: each workgroup computes ROWS
// consecutive outputs of MT consecutive activation rows; every invocation walks k with stride WG,
// decodes its ROWS weights once per step and applies them to all MT rows, keeping MT · ROWS
// partial sums, then one workgroup_reduce. The sums live in vectors named by literals, not in
// arrays indexed by loop variables: one row (MT = 1, the decode step) in the lo/hi code below,
// several in the several_* functions that src/kernels/linear.rs generates for each MT and ROWS.
// With SWIGLU a workgroup's ROWS rows of W are the gate rows of ROWS / 2 output columns, then
// their up rows.
// With ROPE (qkv_rope.wgsl) they are the rows of ROWS / 4 quads (MT = 1).
// With NORM the reduction carries MT more values, each row's Σx² (red_in[MT · ROWS + t]).
// x is read through x_in(m, k): x[m, k], or with COMBINE split attention's partial results
// combined as they are loaded (combine_in.wgsl, MT = 1), or with RESIDUAL the residual stream
// with a post-norm added as it is loaded (residual_in.wgsl, MT = 1); after input_prologue,
// which is told whether the workgroup has the first output columns of its row.
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
    // Rows past the end repeat the last one (computed, never stored): every workgroup computes
    // ROWS rows, a count known when the pipeline is compiled, whatever n is.
    return min(n0 + r, p.n - 1u);
}

// The activation row of the workgroup's local row t: rows past the end repeat the last one
// (computed, never stored).
fn act_row(m0: u32, t: u32) -> u32 {
    return min(m0 + t, p.m - 1u);
}

fn clear_sums() {
    for (var r = 0u; r < RED_N; r++) { // unroll
        red_in[r] = 0.0;
    }
}

// total[i], picked with constant indices: an array indexed at run time anywhere in a kernel is
// one a driver may keep in memory instead of registers (see the note below), so the sums and
// totals here are only ever indexed by constants.
fn red_at(total: array<f32, RED_N>, i: u32) -> f32 {
    var v = 0.0;
    for (var j = 0u; j < RED_N; j++) { // unroll
        if (j == i) {
            v = total[j];
        }
    }
    return v;
}

fn store_rows(li: u32, m0: u32, n0: u32) {
    let total = workgroup_reduce(li);
    // Invocation li stores output column c of local row t.
    for (var o = li; o < MT * COLS; o += WG) {
        let t = o / COLS;
        let c = o % COLS;
        let m = m0 + t;
        var s = 1.0;
        if (NORM == 1u) {
            s = norm_scale(red_at(total, MT * ROWS + t));
        }
        let r = t * ROWS;
        if (ROPE == 1u) {
            if (m < p.m && n0 + c < p.n / 4u) {
                let q = r + 4u * c;
                let quad = vec4<f32>(red_at(total, q), red_at(total, q + 1u), red_at(total, q + 2u), red_at(total, q + 3u));
                finish_quad(m, n0 + c, quad * s);
            }
        } else if (m < p.m && n0 + c < p.n) {
            if (SWIGLU == 1u) {
                finish_swiglu(m, n0 + c, red_at(total, r + c) * s, red_at(total, r + c + COLS) * s);
            } else {
                finish(m, n0 + c, red_at(total, r + c) * s);
            }
        }
    }
}

// The decode step (MT = 1) keeps its ROWS (4 or 8) sums in two vec4s (rows 0..4, then 4..8) and
// each step's x in vec4s, and names every element with a literal: no array indexed by a loop
// variable in the loop over k, which a driver may keep in local memory instead of registers.
// The multiply-adds are the general path's, in its order, so the results are the same bits.

// x[m, k0 .. k0 + 4] through x_in.
fn x_in4(m: u32, k0: u32) -> vec4<f32> {
    return vec4<f32>(x_in(m, k0), x_in(m, k0 + 1u), x_in(m, k0 + 2u), x_in(m, k0 + 3u));
}

// s + the squares of x's elements, one fma at a time from x.x.
fn sq4(x: vec4<f32>, s: f32) -> f32 {
    return fma(x.w, x.w, fma(x.z, x.z, fma(x.y, x.y, fma(x.x, x.x, s))));
}

// x[m, k0 .. k0 + 4] through x_in; with NORM, their squares added to *ss in k order, and the
// values times the norm weight.
fn load_x4(m: u32, k0: u32, ss: ptr<function, f32>) -> vec4<f32> {
    let x = x_in4(m, k0);
    if (NORM == 1u) {
        *ss = sq4(x, *ss);
        return x * norm_g4(k0);
    }
    return x;
}

// x[m, k] through x_in; with NORM, x² added to *ss and x times the norm weight.
fn load_x1(m: u32, k: u32, ss: ptr<function, f32>) -> f32 {
    let x = x_in(m, k);
    if (NORM == 1u) {
        *ss = fma(x, x, *ss);
        return x * norm_g(k);
    }
    return x;
}

// s + Σᵢ w[i] · x[i] over 8 elements, one fma at a time from i = 0.
fn dot8(w: array<f32, 8>, xa: vec4<f32>, xb: vec4<f32>, s: f32) -> f32 {
    var r = fma(w[0], xa.x, s);
    r = fma(w[1], xa.y, r);
    r = fma(w[2], xa.z, r);
    r = fma(w[3], xa.w, r);
    r = fma(w[4], xb.x, r);
    r = fma(w[5], xb.y, r);
    r = fma(w[6], xb.z, r);
    return fma(w[7], xb.w, r);
}

// The decode step's sums into red_in for workgroup_reduce: rows 0..4 from lo, 4..8 from hi,
// and with NORM the row's Σx² after them. (Indices clamped where a branch is dead, so that
// every constant index is in bounds.)
fn put_sums(lo: vec4<f32>, hi: vec4<f32>, ss: f32) {
    red_in[0] = lo.x;
    red_in[1] = lo.y;
    red_in[2] = lo.z;
    red_in[3] = lo.w;
    if (ROWS == 8u) {
        red_in[min(4u, RED_N - 1u)] = hi.x;
        red_in[min(5u, RED_N - 1u)] = hi.y;
        red_in[min(6u, RED_N - 1u)] = hi.z;
        red_in[min(7u, RED_N - 1u)] = hi.w;
    }
    if (NORM == 1u) {
        red_in[min(ROWS, RED_N - 1u)] = ss;
    }
}

// acc + the 8-element dot products of rows r0 .. r0 + 4 (local rows) at group gg of block bi.
fn quant_rows4(n0: u32, r0: u32, nb: u32, bi: u32, gg: u32, xa: vec4<f32>, xb: vec4<f32>, acc: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(
        dot8(decode8(w_row(n0, r0) * nb + bi, gg, p.scale_base), xa, xb, acc.x),
        dot8(decode8(w_row(n0, r0 + 1u) * nb + bi, gg, p.scale_base), xa, xb, acc.y),
        dot8(decode8(w_row(n0, r0 + 2u) * nb + bi, gg, p.scale_base), xa, xb, acc.z),
        dot8(decode8(w_row(n0, r0 + 3u) * nb + bi, gg, p.scale_base), xa, xb, acc.w),
    );
}

// Weight k of rows r0 .. r0 + 4 (local rows), f32.
fn f32_rows4(n0: u32, r0: u32, k: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(
        w[w_row(n0, r0) * p.w_stride + k],
        w[w_row(n0, r0 + 1u) * p.w_stride + k],
        w[w_row(n0, r0 + 2u) * p.w_stride + k],
        w[w_row(n0, r0 + 3u) * p.w_stride + k],
    ));
}

// acc + the pair products of rows r0 .. r0 + 4 (local rows) at word j of each half-float row.
fn half_rows4(n0: u32, r0: u32, row_words: u32, j: u32, xv: vec2<f32>, acc: vec4<f32>) -> vec4<f32> {
    let a = unpack_half2(w[w_row(n0, r0) * row_words + j]);
    let b = unpack_half2(w[w_row(n0, r0 + 1u) * row_words + j]);
    let c = unpack_half2(w[w_row(n0, r0 + 2u) * row_words + j]);
    let d = unpack_half2(w[w_row(n0, r0 + 3u) * row_words + j]);
    return fma(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(xv.x),
               fma(vec4<f32>(a.y, b.y, c.y, d.y), vec4<f32>(xv.y), acc));
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
    input_prologue(li, m0, n0 == 0u);
    if (m0 < p.m && MT == 1u) {
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        var ss = 0.0;
        for (var k = li; k < p.k; k += WG) {
            let xv = vec4<f32>(load_x1(m0, k, &ss));
            lo = fma(f32_rows4(n0, 0u, k), xv, lo);
            if (ROWS == 8u) {
                hi = fma(f32_rows4(n0, 4u, k), xv, hi);
            }
        }
        put_sums(lo, hi, ss);
    } else if (m0 < p.m) {
        // Several activation rows (the generated several_* functions, src/kernels/linear.rs):
        // each weight loaded once for all of them.
        for (var k = li; k < p.k; k += WG) {
            several_f32(n0, m0, k);
        }
        several_put();
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
    input_prologue(li, m0, n0 == 0u);
    if (m0 < p.m) {
        let row_words = p.w_stride / 2u;
        let pairs = p.k / 2u;
        if (MT == 1u) {
            var lo = vec4<f32>(0.0);
            var hi = vec4<f32>(0.0);
            var ss = 0.0;
            for (var j = li; j < pairs; j += WG) {
                let x0 = load_x1(m0, 2u * j, &ss);
                let xv = vec2<f32>(x0, load_x1(m0, 2u * j + 1u, &ss));
                lo = half_rows4(n0, 0u, row_words, j, xv, lo);
                if (ROWS == 8u) {
                    hi = half_rows4(n0, 4u, row_words, j, xv, hi);
                }
            }
            put_sums(lo, hi, ss);
        } else {
            for (var j = li; j < pairs; j += WG) {
                several_half(n0, m0, row_words, j);
            }
            several_put();
        }
        // An odd k leaves one column, whose pair partner is padding: x[m0 + t, k - 1] through
        // x_in (with NORM, its square added to local row t's sum of squares, and times the norm
        // weight) times each row's last weight. (Indices clamped where a branch is dead, so that
        // every constant index is in bounds.)
        if ((p.k & 1u) == 1u && li == WG - 1u) {
            var wl: array<f32, ROWS>;
            for (var r = 0u; r < ROWS; r++) { // unroll
                wl[r] = unpack_half2(w[w_row(n0, r) * row_words + pairs]).x;
            }
            for (var t = 0u; t < MT; t++) { // unroll
                var xv = x_in(act_row(m0, t), p.k - 1u);
                if (NORM == 1u) {
                    let ss = min(MT * ROWS + t, RED_N - 1u);
                    red_in[ss] = fma(xv, xv, red_in[ss]);
                    xv *= norm_g(p.k - 1u);
                }
                for (var r = 0u; r < ROWS; r++) { // unroll
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
    input_prologue(li, m0, n0 == 0u);
    if (m0 < p.m) {
        let nb = p.k / QK;
        // (QK < 8 only for float formats, which never reach this entry point.)
        let groups_per_block = max(QK / 8u, 1u);
        if (MT == 1u) {
            // One activation row: its x once, then each row's weights as they are decoded.
            var lo = vec4<f32>(0.0);
            var hi = vec4<f32>(0.0);
            var ss = 0.0;
            for (var gi = li; gi < p.k / 8u; gi += WG) {
                let bi = gi / groups_per_block;
                let gg = gi % groups_per_block;
                let xa = load_x4(m0, 8u * gi, &ss);
                let xb = load_x4(m0, 8u * gi + 4u, &ss);
                lo = quant_rows4(n0, 0u, nb, bi, gg, xa, xb, lo);
                if (ROWS == 8u) {
                    hi = quant_rows4(n0, 4u, nb, bi, gg, xa, xb, hi);
                }
            }
            put_sums(lo, hi, ss);
        }
        if (MT > 1u) {
            // Several activation rows: each row's weights decoded once for all of them.
            for (var gi = li; gi < p.k / 8u; gi += WG) {
                several_quant(n0, m0, nb, gi / groups_per_block, gi % groups_per_block, 8u * gi);
            }
            several_put();
        }
    }
    store_rows(li, m0, n0);
}
