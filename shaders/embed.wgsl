// out[i, :] = W[ids[i], :]: embedding lookup straight from a table in any format (quant.wgsl
// decodes it, bit for bit as ggml). An id outside [0, vocab) gives a row of zeros; the host
// checks ids before they get here. Prelude: WG, W_FORMAT, QK, and the bindings of `EMBED`
// (src/kernels/embed.rs).

// The row of W holding `id`, or -1 (a zero row, or nothing written when p.partial is 1).
fn row_of(id: i32) -> i32 {
    let r = id - i32(p.id0);
    if (id < 0 || r < 0 || u32(r) >= p.vocab) {
        return -1;
    }
    return r;
}

// Scale 1 leaves values untouched bit for bit (a multiply could flush subnormals).
fn scaled(v: f32) -> f32 {
    if (p.scale == 1.0) {
        return v;
    }
    return v * p.scale;
}

// Block formats: one invocation per group of 8 outputs.
@compute @workgroup_size(WG)
fn embed_quant(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * WG + li;
    let groups = p.cols / 8u;
    let i = t / groups;
    let gi = t % groups;
    if (i >= p.n) {
        return;
    }
    let id = row_of(ids[i]);
    if (id < 0 && p.partial == 1u) {
        return;
    }
    var v: array<f32, 8>;
    if (id >= 0) {
        let gpb = max(QK / 8u, 1u);
        v = decode8(u32(id) * (p.cols / QK) + gi / gpb, gi % gpb, p.scale_base);
    }
    for (var j = 0u; j < 8u; j++) {
        out[i * p.cols + 8u * gi + j] = scaled(v[j]);
    }
}

// Float formats: one invocation per output.
@compute @workgroup_size(WG)
fn embed_float(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = linear_workgroup(wid, nwg) * WG + li;
    let i = t / p.cols;
    let c = t % p.cols;
    if (i >= p.n) {
        return;
    }
    let id = row_of(ids[i]);
    if (id < 0 && p.partial == 1u) {
        return;
    }
    var v = 0.0;
    if (id >= 0) {
        v = float_at(u32(id) * p.w_stride + c);
    }
    out[i * p.cols + c] = scaled(v);
}
