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
// Prelude: linear_common.wgsl's (and quant.wgsl for block formats).

const TM: u32 = 64u;
const BK: u32 = 32u;

// [BK][TM / 4]: vec4 v of k-row kk holds rows 4v..4v+3.
var<workgroup> xs: array<vec4<f32>, 512>;
var<workgroup> ws: array<vec4<f32>, 512>;

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
    xs[kk * (TM / 4u) + r / 4u][r % 4u] = v;
}
fn put_w(kk: u32, r: u32, v: f32) {
    ws[kk * (TM / 4u) + r / 4u][r % 4u] = v;
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
    let nb = p.k / QK;
    let gpb = max(QK / 8u, 1u);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 8u; i++) {
            let gk = k0 + lk + i;
            var xv = 0.0;
            if (x_live && gk < p.k) {
                xv = x[(m0 + lr) * p.k + gk];
                if (NORM == 1u) {
                    sum_sq = fma(xv, xv, sum_sq);
                    xv = xv * norm_g(gk);
                }
            }
            put_x(lk + i, lr, xv);
        }
        if (QK > 1u) {
            var wv: array<f32, 8>;
            if (w_live) {
                let gi = (k0 + lk) / 8u;
                wv = decode8(w_row(n0, lr) * nb + gi / gpb, gi % gpb, p.scale_base);
            }
            for (var i = 0u; i < 8u; i++) {
                put_w(lk + i, lr, wv[i]);
            }
        } else {
            for (var i = 0u; i < 8u; i++) {
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
            let a = xs[kk * (TM / 4u) + ty];
            let b = ws[kk * (TM / 4u) + tx];
            acc[0] = fma(vec4<f32>(a.x), b, acc[0]);
            acc[1] = fma(vec4<f32>(a.y), b, acc[1]);
            acc[2] = fma(vec4<f32>(a.z), b, acc[2]);
            acc[3] = fma(vec4<f32>(a.w), b, acc[3]);
        }
        workgroupBarrier();
    }
    // NORM: the scale of each of this invocation's 4 activation rows, from the 4 partial sums
    // of each row (invocations lr, lr + 64, lr + 128, lr + 192).
    var scale = vec4<f32>(1.0);
    if (NORM == 1u) {
        put_x(li / TM, lr, sum_sq);
        workgroupBarrier();
        let t = xs[ty] + xs[TM / 4u + ty] + xs[2u * (TM / 4u) + ty] + xs[3u * (TM / 4u) + ty];
        scale = vec4<f32>(norm_scale(t.x), norm_scale(t.y), norm_scale(t.z), norm_scale(t.w));
    }
    for (var i = 0u; i < 4u; i++) {
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
                for (var j = 0u; j < 4u; j++) {
                    let gn = n0 + 4u * tx + j;
                    if (gn < p.n) {
                        finish(gm, gn, v[j]);
                    }
                }
            }
        }
    }
}
