// Y[m, n] = Σₖ X[m, k] · W[n, k] (+ bias, + Y): a linear layer over many activation rows
// (prefill). Each workgroup computes a 64×64 tile of Y; its 16×16 invocations each own a 4×4
// sub-tile, strided by 16 so that neighbouring invocations read neighbouring workgroup-memory
// words. K is walked in steps of 16 through workgroup-memory tiles of X and W (zero-filled past
// the edges, so any m, n, k works; block formats have k a multiple of their block).
// With SWIGLU a tile's 64 rows of W are the gate rows of 32 output columns, then their up rows,
// so each invocation holds both dot products of its outputs.
// With NORM each invocation sums x² of the tile elements it loads (4 rows, one column in 16),
// and the partial sums meet in workgroup memory after the K loop.
// Prelude: linear_common.wgsl's (and quant.wgsl for block formats).

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [BK][BM]
var<workgroup> ws: array<f32, 1024>; // [BK][BN]

// Output columns per tile.
const COLS: u32 = BN >> SWIGLU;

// The W row of the tile's local row r (columns past the end repeat the last: never stored).
fn w_row(n0: u32, r: u32) -> u32 {
    if (SWIGLU == 1u) {
        return min(n0 + r % COLS, p.n - 1u) + p.n * (r / COLS);
    }
    return n0 + r;
}

@compute @workgroup_size(256)
fn matmul(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * BM;
    let n0 = (g % p.blocks) * COLS;
    let tx = li % 16u;
    let ty = li / 16u;
    var acc: array<f32, 16>;
    // NORM: Σx² of the elements this invocation loads, for rows li / BK + 16j.
    var sum_sq: array<f32, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = li; e < BM * BK; e += 256u) {
            let row = e / BK;
            let kk = e % BK;
            let gk = k0 + kk;
            var xv = 0.0;
            if (m0 + row < p.m && gk < p.k) {
                xv = x[(m0 + row) * p.k + gk];
                if (NORM == 1u) {
                    sum_sq[e / 256u] = fma(xv, xv, sum_sq[e / 256u]);
                    xv = xv * norm_g(gk);
                }
            }
            xs[kk * BM + row] = xv;
            if (QK == 1u) {
                var wv = 0.0;
                if (n0 + row % COLS < p.n && gk < p.k) {
                    wv = float_at(w_row(n0, row) * p.w_stride + gk);
                }
                ws[kk * BN + row] = wv;
            }
        }
        if (QK > 1u) {
            // 64 rows × 2 groups of 8: the first 128 invocations decode one group each.
            if (li < BN * 2u) {
                let row = li / 2u;
                let half = li % 2u;
                var wv: array<f32, 8>;
                if (n0 + row % COLS < p.n) {
                    let gi = k0 / 8u + half;
                    let gpb = max(QK / 8u, 1u);
                    wv = decode8(w_row(n0, row) * (p.k / QK) + gi / gpb, gi % gpb, p.scale_base);
                }
                for (var i = 0u; i < 8u; i++) {
                    ws[(8u * half + i) * BN + row] = wv[i];
                }
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[kk * BM + ty + 16u * i];
                b[i] = ws[kk * BN + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    // NORM: the scale of each of this invocation's 4 output rows (ty + 16i).
    var scale = array<f32, 4>(1.0, 1.0, 1.0, 1.0);
    if (NORM == 1u) {
        // xs[row · BK + c]: row's partial sum over the columns ≡ c (mod BK).
        for (var j = 0u; j < 4u; j++) {
            xs[li + 256u * j] = sum_sq[j];
        }
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            var t = 0.0;
            for (var c = 0u; c < BK; c++) {
                t += xs[(ty + 16u * i) * BK + c];
            }
            scale[i] = norm_scale(t);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < (4u >> SWIGLU); j++) {
            let gm = m0 + ty + 16u * i;
            let gn = n0 + tx + 16u * j;
            if (gm < p.m && gn < p.n) {
                if (SWIGLU == 1u) {
                    finish_swiglu(gm, gn, acc[i * 4u + j] * scale[i], acc[i * 4u + j + 2u] * scale[i]);
                } else {
                    finish(gm, gn, acc[i * 4u + j] * scale[i]);
                }
            }
        }
    }
}
