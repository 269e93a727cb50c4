// y[m, n] = sum_k W[n, k] * x[m, k]: a linear layer applied to one (or a few) activation rows,
// the shape of every decode step. Bound by reading W, so W is read exactly once and x once per
// workgroup: each workgroup computes ROWS consecutive outputs of one activation row, every
// invocation walks k with stride WG keeping ROWS partial sums, then one workgroup_reduce.
// Prelude: WG (power of two), ROWS, RED_N (= ROWS).

struct Params {
    n: u32,        // outputs (rows of W)
    k: u32,        // inputs (columns of W)
    m: u32,        // activation rows
    w_stride: u32, // elements between the starts of consecutive rows of W as stored
    blocks: u32,   // ceil(n / ROWS)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn store_rows(li: u32, m: u32, n0: u32) {
    var total = workgroup_reduce(li);
    if (m < p.m && n0 + li < p.n && li < ROWS) {
        y[m * p.n + n0 + li] = total[li];
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
    let n0 = (g % p.blocks) * ROWS;
    for (var r = 0u; r < ROWS; r++) {
        red_in[r] = 0.0;
    }
    if (m < p.m) {
        let rows = min(ROWS, p.n - n0);
        let xb = m * p.k;
        for (var k = li; k < p.k; k += WG) {
            let xv = x[xb + k];
            for (var r = 0u; r < rows; r++) {
                red_in[r] = fma(bitcast<f32>(w[(n0 + r) * p.w_stride + k]), xv, red_in[r]);
            }
        }
    }
    store_rows(li, m, n0);
}

// W holds f16 pairs packed in u32 words; rows are padded to an even length.
@compute @workgroup_size(WG)
fn matvec_f16(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let m = g / p.blocks;
    let n0 = (g % p.blocks) * ROWS;
    for (var r = 0u; r < ROWS; r++) {
        red_in[r] = 0.0;
    }
    if (m < p.m) {
        let rows = min(ROWS, p.n - n0);
        let xb = m * p.k;
        let row_words = p.w_stride / 2u;
        let pairs = p.k / 2u;
        for (var j = li; j < pairs; j += WG) {
            let xv = vec2<f32>(x[xb + 2u * j], x[xb + 2u * j + 1u]);
            for (var r = 0u; r < rows; r++) {
                let wv = unpack2x16float(w[(n0 + r) * row_words + j]);
                red_in[r] = fma(wv.x, xv.x, fma(wv.y, xv.y, red_in[r]));
            }
        }
        // An odd k leaves one column, whose pair partner is padding.
        if ((p.k & 1u) == 1u && li == WG - 1u) {
            let xv = x[xb + p.k - 1u];
            for (var r = 0u; r < rows; r++) {
                let wv = unpack2x16float(w[(n0 + r) * row_words + pairs]);
                red_in[r] = fma(wv.x, xv, red_in[r]);
            }
        }
    }
    store_rows(li, m, n0);
}
