// RoPE and the KV-cache write of one step in one dispatch: rotates q [tokens, heads, head_dim] in
// place, and writes the rotated k rows and the v rows ([tokens, kv_heads, head_dim], f32; k is
// read, not modified) to one layer's cache at position step.offset + t, as kv_write.wgsl stores
// them (f16 pairs packed with pack2x16float, or f32 bits; p.row_words words per row).
// Per token, invocations 0 .. heads·half rotate one pair of q each (rope.wgsl's rope_qk), the next
// kv_heads·row_words write one word of k and of v: each k element is rotated on its own from the
// original pair, (a, b) -> (a cos - b sin, a sin + b cos), the same expressions as rope.wgsl.
// Tokens past step.n_tokens are left alone.
// Prelude: WG, KV_F16, the bindings of `rope_kv_write` (src/kernels/attention.rs); snippets
// rope_pairs.wgsl, rope_rotate.wgsl and kv_store.wgsl. A decode step's q, k, v projection does the
// same in its epilogue where it can (qkv_rope.wgsl), and this dispatch is not recorded.

// Element d of the k row starting at `src`, rotated for position `pos`.
fn k_rotated(src: u32, d: u32, pos: u32) -> f32 {
    if (d >= 2u * p.half) {
        return k_in[src + d];
    }
    let is = pair_of(d);
    let ab = src + pair_offsets(is.x);
    let r = rotate(vec2<f32>(k_in[ab.x], k_in[ab.y]), table[pos * p.half + is.x]);
    return select(r.x, r.y, is.y == 1u);
}

@compute @workgroup_size(WG)
fn rope_kv_write(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    let q_items = p.heads * p.half;
    let kv_items = p.kv_heads * p.row_words;
    let per_token = q_items + kv_items;
    let t = e / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let pos = step.offset + t;
    let rem = e % per_token;
    if (rem < q_items) {
        let head = rem / p.half;
        let i = rem % p.half;
        let ab = (t * p.heads + head) * p.head_dim + pair_offsets(i);
        let r = rotate(vec2<f32>(q[ab.x], q[ab.y]), table[pos * p.half + i]);
        q[ab.x] = r.x;
        q[ab.y] = r.y;
        return;
    }
    let kv = rem - q_items;
    let row = kv / p.row_words;
    let w = kv % p.row_words;
    let src = (t * p.kv_heads + row) * p.head_dim;
    var d = w;
    if (KV_F16 == 1u) {
        d = 2u * w;
    }
    var kk = array<f32, 2>(k_rotated(src, d, pos), 0.0);
    var vv = array<f32, 2>(v_in[src + d], 0.0);
    if (KV_F16 == 1u && d + 1u < p.head_dim) {
        kk[1] = k_rotated(src, d + 1u, pos);
        vv[1] = v_in[src + d + 1u];
    }
    let dst = (pos % p.slots) * kv_items + kv;
    k_cache[dst] = to_word(kk);
    v_cache[dst] = to_word(vv);
}
