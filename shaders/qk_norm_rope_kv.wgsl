// A per-head RMSNorm of q and k (Qwen3, Gemma 3) before RoPE and the KV-cache write, in one
// dispatch: rmsnorm.wgsl over each head of q and k with its weight (q_norm, k_norm: [head_dim]),
// then what rope_kv_write.wgsl does with the normed rows: q [tokens, heads, head_dim] rotated in
// place, the rotated k rows and the v rows ([tokens, kv_heads, head_dim], f32; k is read, not
// modified) written to one layer's cache at position step.offset + t.
// One workgroup per (token, head): heads of q first, then the kv heads of k (with the same row
// of v). The sum of squares and the normed values are rmsnorm.wgsl's, term for term and in the
// same order (the same WG and workgroup_reduce), and the rotation is rope_kv_write.wgsl's, so
// the results are those of the three dispatches this replaces. The normed row waits in
// workgroup memory for the rotation, which reads two elements of it.
// Tokens past step.n_tokens are left alone.
// Prelude: WG (power of two), RED_N (= 1), KV_F16, HEAD_DIM (= p.head_dim), the bindings of
// `qk_norm_rope_kv_write` (src/kernels/attention.rs); snippets rope_pairs.wgsl, rope_rotate.wgsl
// and kv_store.wgsl.

var<workgroup> normed: array<f32, HEAD_DIM>;

// Element d of the normed row, rotated for position `pos` (k_rotated of rope_kv_write.wgsl).
fn normed_rotated(d: u32, pos: u32) -> f32 {
    if (d >= 2u * p.half) {
        return normed[d];
    }
    let is = pair_of(d);
    let ab = pair_offsets(is.x);
    let r = rotate(vec2<f32>(normed[ab.x], normed[ab.y]), table[pos * p.half + is.x]);
    return select(r.x, r.y, is.y == 1u);
}

@compute @workgroup_size(WG)
fn qk_norm_rope_kv_write(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = linear_workgroup(wid, nwg);
    let per_token = p.heads + p.kv_heads;
    let t = r / per_token;
    let live = t < step.n_tokens;
    let head = r % per_token;
    let is_q = head < p.heads;
    let kv_head = head - p.heads;
    var src = (t * p.heads + head) * p.head_dim;
    if (!is_q) {
        src = (t * p.kv_heads + kv_head) * p.head_dim;
    }
    red_in[0] = 0.0;
    if (live) {
        for (var c = li; c < p.head_dim; c += WG) {
            var v: f32;
            if (is_q) {
                v = q[src + c];
            } else {
                v = k_in[src + c];
            }
            red_in[0] = fma(v, v, red_in[0]);
        }
    }
    var total = workgroup_reduce(li);
    let scale = 1.0 / sqrt(total[0] / f32(p.head_dim) + p.eps);
    if (live) {
        for (var c = li; c < p.head_dim; c += WG) {
            if (is_q) {
                normed[c] = q[src + c] * scale * q_norm[c];
            } else {
                normed[c] = k_in[src + c] * scale * k_norm[c];
            }
        }
    }
    workgroupBarrier();
    if (!live) {
        return;
    }
    let pos = step.offset + t;
    if (is_q) {
        for (var i = li; i < p.half; i += WG) {
            let ab = pair_offsets(i);
            let rot = rotate(vec2<f32>(normed[ab.x], normed[ab.y]), table[pos * p.half + i]);
            q[src + ab.x] = rot.x;
            q[src + ab.y] = rot.y;
        }
        // Past the rotary dimensions the normed values stay as they are.
        for (var c = 2u * p.half + li; c < p.head_dim; c += WG) {
            q[src + c] = normed[c];
        }
        return;
    }
    let dst = (pos % p.slots) * p.kv_heads * p.row_words + kv_head * p.row_words;
    for (var w = li; w < p.row_words; w += WG) {
        var d = w;
        if (KV_F16 == 1u) {
            d = 2u * w;
        }
        var kk = array<f32, 2>(normed_rotated(d, pos), 0.0);
        var vv = array<f32, 2>(v_in[src + d], 0.0);
        if (KV_F16 == 1u && d + 1u < p.head_dim) {
            kk[1] = normed_rotated(d + 1u, pos);
            vv[1] = v_in[src + d + 1u];
        }
        k_cache[dst + w] = to_word(kk);
        v_cache[dst + w] = to_word(vv);
    }
}
