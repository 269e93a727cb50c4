// Y[m, n] = Σₖ X[m, k] · W[n, k] (+ bias, + Y): a linear layer over many activation rows
// (prefill). Each workgroup computes a 64×64 tile of Y (64 activation rows × 64 rows of W); its
// 16×16 invocations each own a contiguous 4×4 sub-tile: activation rows 4ty..4ty+3, W rows
// 4tx..4tx+3, so each step of the inner loop reads one vec4 of X and one of W from workgroup
// memory for 16 multiply-adds.
// K is walked in steps of BK = 32 through workgroup-memory tiles of X and W stored k-major
// ([BK][64]), zero-filled past the edges, so any m, n, k works (block formats have k a multiple
// of their block, so of 32). Every invocation loads 8 consecutive k of one row of each tile: for
// block formats one group of 8 decoded once per tile (64 rows × 4 groups), for floats 8 values.
// Consecutive invocations take consecutive rows, so their stores to a k-row of the tile hit
// consecutive words (no bank conflicts) and the vec4 reads of the inner loop need no padding.
// With SWIGLU a tile holds 32 output columns: local W row 4t + j is the gate row (j < 2) or the
// up row (j ≥ 2) of column 2t + (j & 1), so each invocation holds both dot products of its two
// columns.
// With NORM each invocation sums x² of the elements it loads (its row, 8 columns of every 32),
// and the four partial sums of a row meet in workgroup memory after the K loop.
// With TF16 (full profile, asked for) the tiles hold f16 (TT): half the workgroup memory and
// half its traffic, products and sums still f32. So that no activation leaves f16's range, a
// first pass over the workgroup's rows finds each row's largest |x| (times the norm weight
// with NORM; Σx² too), and every x is multiplied by a power of two that puts that largest value
// in [2^14, 2^15) before its conversion; the dot product is multiplied back exactly at the end
// (with the norm scale). Each x and each decoded weight is then rounded once to f16 (WGSL
// rounds to either neighbour: at most 2^-10 relative for normal values), the only difference
// from the f32 tiles.
// The loops over an invocation's 4 rows, 4 columns and 8 loaded elements are unrolled (`// unroll`,
// gpu::pipeline::unroll), so the accumulators, the decoded weights and the scales are only ever
// indexed by constants: an array indexed at run time anywhere in a kernel, the epilogue
// included, is one a driver may keep in memory instead of registers for the whole kernel.
// Prelude: linear_common.wgsl's (and quant.wgsl for block formats), TF16, and the tiles'
// snippet (MATMUL_TILES_F32 or MATMUL_TILES_F16 in src/kernels/linear.rs): `alias TT`, the
// tiles `xs` and `ws` ([BK][TM / 4]: vec4 v of k-row kk holds rows 4v..4v+3) and
// `scratch_put(i, v)` / `scratch_at(i)` / `scratch4(v)`, 256 f32 of row statistics (i = 64j + r
// is partial j of row r; scratch4(v) is entries 4v..4v+3), in the X tile once the K loop is done
// (f32) or in memory of their own (f16).

const TM: u32 = 64u;
const BK: u32 = 32u;

// Output columns per tile.
const COLS: u32 = TM >> SWIGLU;

// The output column of the tile's local row r.
fn w_col(n0: u32, r: u32) -> u32 {
    if (SWIGLU == 1u) {
        return n0 + 2u * (r / 4u) + (r & 1u);
    }
    return n0 + r;
}

// The W row of the tile's local row r (columns past the end repeat the last: never stored).
fn w_row(n0: u32, r: u32) -> u32 {
    if (SWIGLU == 1u) {
        return min(w_col(n0, r), p.n - 1u) + p.n * ((r % 4u) / 2u);
    }
    return w_col(n0, r);
}

// Stores element (kk, r) of a tile.
fn put_x(kk: u32, r: u32, v: f32) {
    xs[kk * (TM / 4u) + r / 4u][r % 4u] = TT(v);
}
fn put_w(kk: u32, r: u32, v: f32) {
    ws[kk * (TM / 4u) + r / 4u][r % 4u] = TT(v);
}

// TF16: the power of two that brings a row's largest |x| into [2^14, 2^15), and its inverse
// (exponents clamped to f32's normal range; 0, infinities and NaN need no care: zeros stay
// zeros and the others give a non-finite result either way).
fn pow2_scale(mx: f32) -> vec2<f32> {
    let e = i32((bitcast<u32>(mx) >> 23u) & 0xffu) - 127;
    let s = clamp(14 - e, -126, 126);
    return vec2<f32>(bitcast<f32>(u32(s + 127) << 23u), bitcast<f32>(u32(127 - s) << 23u));
}

// Row r's value of the four partials in the scratch: their sum (`sum`) or their largest.
fn row_total(r: u32, sum: bool) -> f32 {
    let a = scratch_at(r);
    let b = scratch_at(r + TM);
    let c = scratch_at(r + 2u * TM);
    let d = scratch_at(r + 3u * TM);
    if (sum) {
        return (a + b) + (c + d);
    }
    return max(max(a, b), max(c, d));
}

@compute @workgroup_size(256)
fn matmul(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * TM;
    let n0 = (g % p.blocks) * COLS;
    let tx = li % 16u;
    let ty = li / 16u;
    // The row and the 8 columns of every BK this invocation loads.
    let lr = li % TM;
    let lk = 8u * (li / TM);
    let x_live = m0 + lr < p.m;
    let w_live = w_col(n0, lr) < p.n;
    // acc[i]: activation row 4ty + i, W rows 4tx..4tx+3.
    var acc: array<vec4<f32>, 4>;
    // NORM: Σx² of the elements this invocation loads.
    var sum_sq = 0.0;
    // TF16: what the x this invocation loads is multiplied by, and what each of its 4 output
    // rows is (with NORM, times the norm scale).
    var x_scale = 1.0;
    var out_scale = vec4<f32>(1.0);
    if (TF16 == 1u) {
        // The same elements and order as the K loop below: the same Σx².
        var mx = 0.0;
        if (x_live) {
            for (var k0 = 0u; k0 < p.k; k0 += BK) {
                for (var i = 0u; i < 8u; i++) {
                    let gk = k0 + lk + i;
                    if (gk < p.k) {
                        var xv = x[(m0 + lr) * p.k + gk];
                        if (NORM == 1u) {
                            sum_sq = fma(xv, xv, sum_sq);
                            xv = xv * norm_g(gk);
                        }
                        mx = max(mx, abs(xv));
                    }
                }
            }
        }
        scratch_put(li, mx);
        workgroupBarrier();
        x_scale = pow2_scale(row_total(lr, false)).x;
        for (var i = 0u; i < 4u; i++) { // unroll
            out_scale[i] = pow2_scale(row_total(4u * ty + i, false)).y;
        }
        if (NORM == 1u) {
            workgroupBarrier();
            scratch_put(li, sum_sq);
            workgroupBarrier();
            for (var i = 0u; i < 4u; i++) { // unroll
                out_scale[i] *= norm_scale(row_total(4u * ty + i, true));
            }
        }
    }
    let nb = p.k / QK;
    let gpb = max(QK / 8u, 1u);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 8u; i++) { // unroll
            let gk = k0 + lk + i;
            var xv = 0.0;
            if (x_live && gk < p.k) {
                xv = x[(m0 + lr) * p.k + gk];
                if (NORM == 1u) {
                    if (TF16 == 0u) {
                        sum_sq = fma(xv, xv, sum_sq);
                    }
                    xv = xv * norm_g(gk);
                }
            }
            put_x(lk + i, lr, xv * x_scale);
        }
        if (QK > 1u) {
            var wv: array<f32, 8>;
            if (w_live) {
                let gi = (k0 + lk) / 8u;
                wv = decode8(w_row(n0, lr) * nb + gi / gpb, gi % gpb, p.scale_base);
            }
            for (var i = 0u; i < 8u; i++) { // unroll
                put_w(lk + i, lr, wv[i]);
            }
        } else {
            for (var i = 0u; i < 8u; i++) { // unroll
                let gk = k0 + lk + i;
                var wv = 0.0;
                if (w_live && gk < p.k) {
                    wv = float_at(w_row(n0, lr) * p.w_stride + gk);
                }
                put_w(lk + i, lr, wv);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = vec4<f32>(xs[kk * (TM / 4u) + ty]);
            let b = vec4<f32>(ws[kk * (TM / 4u) + tx]);
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    // NORM: the scale of each of this invocation's 4 activation rows, from the 4 partial sums
    // of each row (invocations lr, lr + 64, lr + 128, lr + 192).
    var scale = out_scale;
    if (NORM == 1u && TF16 == 0u) {
        scratch_put(li, sum_sq);
        workgroupBarrier();
        let t = scratch4(ty) + scratch4(TM / 4u + ty) + scratch4(2u * (TM / 4u) + ty)
            + scratch4(3u * (TM / 4u) + ty);
        scale = vec4<f32>(norm_scale(t.x), norm_scale(t.y), norm_scale(t.z), norm_scale(t.w));
    }
    for (var i = 0u; i < 4u; i++) { // unroll
        let gm = m0 + 4u * ty + i;
        let v = acc[i] * scale[i];
        if (gm < p.m) {
            if (SWIGLU == 1u) {
                let gn = n0 + 2u * tx;
                if (gn < p.n) {
                    finish_swiglu(gm, gn, v.x, v.z);
                }
                if (gn + 1u < p.n) {
                    finish_swiglu(gm, gn + 1u, v.y, v.w);
                }
            } else {
                for (var j = 0u; j < 4u; j++) { // unroll
                    let gn = n0 + 4u * tx + j;
                    if (gn < p.n) {
                        finish(gm, gn, v[j]);
                    }
                }
            }
        }
    }
}
