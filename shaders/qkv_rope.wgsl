// ROPE = 1: the epilogue of a stacked q, k, v projection (src/kernels/linear.rs
// `linear_qkv_rope`) that rotates q and k and writes k and v straight into one layer of the KV
// cache: what rope_kv_write.wgsl does after the projection, without its dispatch.
// W's rows are Q_HEADS query heads, KV_HEADS key heads and KV_HEADS value heads of HD elements.
// The kernels work in quads: 4 columns of one head that hold two whole RoPE pairs and two whole
// words of an f16 cache row. Quad j of a head at column c = 4j (u = (c % HD) / 4 within it):
// - NeoX q/k heads: columns 2u, 2u + 1, HD/2 + 2u, HD/2 + 2u + 1 (pairs (0, 2) and (1, 3) of the
//   quad, frequencies 2u and 2u + 1);
// - interleaved q/k heads and v heads: columns 4u .. 4u + 4 (pairs (0, 1) and (2, 3)).
// The rotation and the stores are rope_kv_write.wgsl's (rope_rotate.wgsl, kv_store.wgsl): q goes
// rotated to y ([rows, Q_HEADS · HD], p.y_cols), k and v to position step.offset + m of the
// cache (ROW_WORDS words per head; row pos % KV_SLOTS: a ring for a sliding window's layer);
// rows past step.n_tokens are not stored.
// Prelude: Q_HEADS, KV_HEADS, HD (a multiple of 4, all of it rotating), NEOX, KV_F16, ROW_WORDS,
// the bindings table, k_cache, v_cache and step, and linear_common.wgsl's y and bias_at.

// The column of W (and of the projection's output) of element e (0..4) of quad j.
fn quad_col(j: u32, e: u32) -> u32 {
    let c = 4u * j;
    let head = c / HD;
    if (NEOX == 1u && head < Q_HEADS + KV_HEADS) {
        let u = (c % HD) / 4u;
        return head * HD + 2u * u + (e & 1u) + (e >> 1u) * (HD / 2u);
    }
    return c + e;
}

// Stores quad j of activation row m: r holds its four dot products (normed, without bias).
fn finish_quad(m: u32, j: u32, r: vec4<f32>) {
    if (m >= step.n_tokens) {
        return;
    }
    let pos = step.offset + m;
    let head = (4u * j) / HD;
    var col: array<u32, 4>;
    var v: vec4<f32>;
    for (var e = 0u; e < 4u; e++) { // unroll
        col[e] = quad_col(j, e);
        v[e] = r[e] + bias_at(col[e]);
    }
    if (head < Q_HEADS + KV_HEADS) {
        let i = pos * (HD / 2u) + 2u * (((4u * j) % HD) / 4u);
        if (NEOX == 1u) {
            let a = rotate(vec2<f32>(v.x, v.z), table[i]);
            let b = rotate(vec2<f32>(v.y, v.w), table[i + 1u]);
            v = vec4<f32>(a.x, b.x, a.y, b.y);
        } else {
            v = vec4<f32>(rotate(v.xy, table[i]), rotate(v.zw, table[i + 1u]));
        }
    }
    if (head < Q_HEADS) {
        for (var e = 0u; e < 4u; e++) { // unroll
            y[m * p.y_cols + col[e]] = v[e];
        }
        return;
    }
    let is_v = head >= Q_HEADS + KV_HEADS;
    let kv_head = head - Q_HEADS - select(0u, KV_HEADS, is_v);
    let row = ((pos % KV_SLOTS) * KV_HEADS + kv_head) * ROW_WORDS;
    let d0 = col[0] - head * HD;
    let d2 = col[2] - head * HD;
    if (KV_F16 == 1u) {
        // Elements 0, 1 (and 2, 3) are neighbours d, d + 1 with d even: one word each.
        let w0 = to_word(array<f32, 2>(v.x, v.y));
        let w1 = to_word(array<f32, 2>(v.z, v.w));
        if (is_v) {
            v_cache[row + d0 / 2u] = w0;
            v_cache[row + d2 / 2u] = w1;
        } else {
            k_cache[row + d0 / 2u] = w0;
            k_cache[row + d2 / 2u] = w1;
        }
        return;
    }
    let d = vec4<u32>(d0, d0 + 1u, d2, d2 + 1u);
    for (var e = 0u; e < 4u; e++) { // unroll
        let w = to_word(array<f32, 2>(v[e], 0.0));
        if (is_v) {
            v_cache[row + d[e]] = w;
        } else {
            k_cache[row + d[e]] = w;
        }
    }
}
