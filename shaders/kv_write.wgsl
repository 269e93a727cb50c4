// Appends a step's keys and values to one layer's KV cache: rows k_in/v_in [t, kv_heads, head_dim]
// (f32) go to cache position step.offset + t, row (step.offset + t) % p.slots (a ring when the
// layer holds fewer positions than the context: a sliding window's). The cache holds each (position, kv head) row in
// p.row_words u32 words: f16 pairs packed with pack2x16float (KV_F16 = 1; needs no shader-f16,
// odd head_dim padded with a zero half), or f32 bits (KV_F16 = 0). One invocation writes one word
// of k and the same word of v. Values beyond f16's range are saturated to ±65504 first (the
// conversion of out-of-range values is not defined by WGSL).
// Prelude: WG, KV_F16, the bindings of `kv_write` (src/kernels/attention.rs); snippet
// kv_store.wgsl (to_word).

@compute @workgroup_size(WG)
fn kv_write(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    let per_token = p.kv_heads * p.row_words;
    let t = e / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let rem = e % per_token;
    let row = rem / p.row_words;
    let w = rem % p.row_words;
    let src = (t * p.kv_heads + row) * p.head_dim;
    var d = w;
    if (KV_F16 == 1u) {
        d = 2u * w;
    }
    var kk = array<f32, 2>(k_in[src + d], 0.0);
    var vv = array<f32, 2>(v_in[src + d], 0.0);
    if (KV_F16 == 1u && d + 1u < p.head_dim) {
        kk[1] = k_in[src + d + 1u];
        vv[1] = v_in[src + d + 1u];
    }
    let dst = ((step.offset + t) % p.slots) * per_token + rem;
    k_cache[dst] = to_word(kk);
    v_cache[dst] = to_word(vv);
}
