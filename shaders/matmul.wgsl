// Y[m, n] = sum_k X[m, k] * W[n, k]: a linear layer over many activation rows (prefill).
// Each workgroup computes a 64x64 tile of Y; its 16x16 invocations each own a 4x4 sub-tile,
// strided by 16 so that neighbouring invocations read neighbouring workgroup-memory words.
// K is walked in steps of 16 through workgroup-memory tiles of X and W (zero-filled past the
// edges, so any m, n, k works). Prelude: W_F16 (0: W is f32; 1: W is packed f16 pairs).

struct Params {
    n: u32,
    k: u32,
    m: u32,
    w_stride: u32, // elements between the starts of consecutive rows of W as stored
    tiles_n: u32,  // ceil(n / 64)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [BK][BM]
var<workgroup> ws: array<f32, 1024>; // [BK][BN]

fn load_w(n: u32, k: u32) -> f32 {
    let i = n * p.w_stride + k;
    if (W_F16 == 1u) {
        return unpack2x16float(w[i / 2u])[i & 1u];
    }
    return bitcast<f32>(w[i]);
}

@compute @workgroup_size(256)
fn matmul(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.tiles_n) * BM;
    let n0 = (g % p.tiles_n) * BN;
    let tx = li % 16u;
    let ty = li / 16u;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = li; e < BM * BK; e += 256u) {
            let row = e / BK;
            let kk = e % BK;
            let gk = k0 + kk;
            var xv = 0.0;
            if (m0 + row < p.m && gk < p.k) {
                xv = x[(m0 + row) * p.k + gk];
            }
            xs[kk * BM + row] = xv;
            var wv = 0.0;
            if (n0 + row < p.n && gk < p.k) {
                wv = load_w(n0 + row, gk);
            }
            ws[kk * BN + row] = wv;
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
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let gm = m0 + ty + 16u * i;
            let gn = n0 + tx + 16u * j;
            if (gm < p.m && gn < p.n) {
                y[gm * p.n + gn] = acc[i * 4u + j];
            }
        }
    }
}
