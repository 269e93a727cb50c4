// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight: one workgroup per row. With ADD = 1
// the result is added to y instead (a post-norm on the way into the residual stream, Gemma's
// sandwich norms).
// Prelude: WG (power of two), RED_N (= 1), ADD, and the bindings of `rmsnorm`
// (src/kernels/norm.rs).

@compute @workgroup_size(WG)
fn rmsnorm(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_workgroup(wid, nwg);
    let base = row * p.cols;
    red_in[0] = 0.0;
    if (row < p.rows) {
        for (var c = li; c < p.cols; c += WG) {
            let v = x[base + c];
            red_in[0] = fma(v, v, red_in[0]);
        }
    }
    var total = workgroup_reduce(li);
    if (row < p.rows) {
        let scale = 1.0 / sqrt(total[0] / f32(p.cols) + p.eps);
        for (var c = li; c < p.cols; c += WG) {
            let v = x[base + c] * scale * weight[c];
            if (ADD == 1u) {
                y[base + c] = y[base + c] + v;
            } else {
                y[base + c] = v;
            }
        }
    }
}
