// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * weight (+ bias): one workgroup per row.
// The variance is computed in two passes, sum((x - mean)^2) after the mean is known, never as
// E[x^2] - E[x]^2 (which cancels catastrophically when |mean| >> std). The row is read three
// times (sum, squared deviations, output); the second and third reads of a row of a few KiB hit
// the cache. (Keeping it in a private array instead made the kernel 3x slower on CPU Vulkan
// drivers, which spill such arrays to memory.)
// Entry points: `layernorm` and `layernorm_bias`; only the second statically uses `bias`, so each
// pipeline's layout has exactly the bindings it reads.
// Prelude: WG (power of two), RED_N (= 1), and the bindings of `layernorm` (src/kernels/norm.rs).

// (mean, 1 / sqrt(var + eps)) of `row`, for every invocation. Workgroups past the last row take
// part in the reductions with zeros. Call from uniform control flow.
fn row_stats(li: u32, row: u32) -> vec2<f32> {
    let live = row < p.rows;
    let base = row * p.cols;
    red_in[0] = 0.0;
    if (live) {
        for (var c = li; c < p.cols; c += WG) {
            red_in[0] += x[base + c];
        }
    }
    var sum = workgroup_reduce(li);
    let mean = sum[0] / f32(p.cols);

    red_in[0] = 0.0;
    if (live) {
        for (var c = li; c < p.cols; c += WG) {
            let d = x[base + c] - mean;
            red_in[0] = fma(d, d, red_in[0]);
        }
    }
    var sq = workgroup_reduce(li);
    return vec2<f32>(mean, inverseSqrt(sq[0] / f32(p.cols) + p.eps));
}

@compute @workgroup_size(WG)
fn layernorm(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_workgroup(wid, nwg);
    let s = row_stats(li, row);
    if (row < p.rows) {
        let base = row * p.cols;
        for (var c = li; c < p.cols; c += WG) {
            y[base + c] = (x[base + c] - s.x) * s.y * weight[c];
        }
    }
}

@compute @workgroup_size(WG)
fn layernorm_bias(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_workgroup(wid, nwg);
    let s = row_stats(li, row);
    if (row < p.rows) {
        let base = row * p.cols;
        for (var c = li; c < p.cols; c += WG) {
            y[base + c] = fma((x[base + c] - s.x) * s.y, weight[c], bias[c]);
        }
    }
}
