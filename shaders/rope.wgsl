// Rotary position embeddings, in place on x [tokens, heads, head_dim] (and, for rope_qk, on a
// second tensor xk with its own head count). One invocation rotates one pair of elements:
//   (a, b) -> (a cos - b sin, a sin + b cos)
// with (cos, sin) read from a table of f32 values computed on the CPU for every position, indexed
// by position = step.offset + token. Pairs are (2i, 2i + 1) (interleaved) or (i, i + half) (NeoX),
// for i < half = rotary_dim / 2; elements past rotary_dim are untouched.
// Tokens past step.n_tokens are left alone, so one dispatch sized for the largest step serves all.
// Prelude: WG, the bindings of `rope` (src/kernels/rope.rs); snippets rope_pairs.wgsl
// (pair_offsets) and rope_rotate.wgsl (rotate).

@compute @workgroup_size(WG)
fn rope(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    let per_token = p.heads * p.half;
    let t = e / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let head = (e % per_token) / p.half;
    let i = e % p.half;
    let cs = table[(step.offset + t) * p.half + i];
    let ab = (t * p.heads + head) * p.head_dim + pair_offsets(i);
    let r = rotate(vec2<f32>(x[ab.x], x[ab.y]), cs);
    x[ab.x] = r.x;
    x[ab.y] = r.y;
}

@compute @workgroup_size(WG)
fn rope_qk(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    let per_token = (p.heads + p.heads_k) * p.half;
    let t = e / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let head = (e % per_token) / p.half;
    let i = e % p.half;
    let cs = table[(step.offset + t) * p.half + i];
    if (head < p.heads) {
        let ab = (t * p.heads + head) * p.head_dim + pair_offsets(i);
        let r = rotate(vec2<f32>(x[ab.x], x[ab.y]), cs);
        x[ab.x] = r.x;
        x[ab.y] = r.y;
    } else {
        let ab = (t * p.heads_k + head - p.heads) * p.head_dim + pair_offsets(i);
        let r = rotate(vec2<f32>(xk[ab.x], xk[ab.y]), cs);
        xk[ab.x] = r.x;
        xk[ab.y] = r.y;
    }
}
