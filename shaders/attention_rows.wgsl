// attention.wgsl for CPU adapters (lavapipe, SwiftShader, a browser's fallback adapter): one
// invocation per query row (token t, head h), in registers, without workgroup memory or
// barriers. Those drivers run a workgroup's invocations as SIMD lanes of one thread and load
// workgroup memory lane by lane, as they do storage: attention.wgsl's tiles cost two such loads
// per multiply-add of its scores and one of its outputs, and a barrier between its steps.
// Here each invocation holds its q row (times the scale) and output accumulator as HD / 4 vec4s
// and walks the keys its row sees in its chunk with an online softmax, loading each key's and
// value's row as vec4s of cache words (rows of a multiple of 4 words). The cut into workgroups
// (GB heads of a kv head's group × TQ tokens = R rows, R ≤ WG), into chunks of the context, and
// what is written are attention.wgsl's: the normalised output (SINGLE), or per chunk the
// unnormalised output and (m, l) for attention_combine.wgsl, for the chunks the row sees a key
// of.
// Prelude: WG, HD, HW (cache words per row), GB, TQ, R, KV_F16, SINGLE, HD4 (HD / 4), RW4 (HW / 4),
// attention_common.wgsl, and the bindings of `ATTENTION_ROWS` (src/kernels/attention.rs).

// Elements 4i .. 4i + 4 of the k (or v) row at vec4 `base` of the cache.
fn kv_elems(use_v: bool, base: u32, i: u32) -> vec4<f32> {
    if (KV_F16 == 1u) {
        // Two words per four elements: word 2i and 2i + 1 of the row.
        var w: vec4<u32>;
        if (use_v) {
            w = v_cache[base + i / 2u];
        } else {
            w = k_cache[base + i / 2u];
        }
        if ((i & 1u) == 0u) {
            return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
        }
        return vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
    }
    if (use_v) {
        return bitcast<vec4<f32>>(v_cache[base + i]);
    }
    return bitcast<vec4<f32>>(k_cache[base + i]);
}

@compute @workgroup_size(WG)
fn attention_rows(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let cell = attention_cell(wid, nwg);
    if (!cell.live || li >= R) {
        return;
    }
    let lim = row_limit(li, cell.t0, cell.hb);
    if (lim == 0u) {
        return;
    }
    let first = cell.chunk * p.chunk_len;
    let c0 = max(first, row_low(li, cell.t0));
    let c1 = min(first + p.chunk_len, lim);
    // No key of this chunk is visible to the row: attention_combine reads no result of it.
    if (c0 >= c1) {
        return;
    }
    let t = cell.t0 + li / GB;
    let row = t * p.n_heads + cell.kh * p.group + cell.hb * GB + li % GB;

    var qv: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    for (var i = 0u; i < HD4; i++) { // unroll
        let at = row * HD + 4u * i;
        qv[i] = vec4<f32>(q[at], q[at + 1u], q[at + 2u], q[at + 3u]) * p.scale;
    }
    var m = NEG;
    var l = 0.0;
    for (var k = c0; k < c1; k++) {
        // Position k is row k % p.slots of the cache (a ring when the layer holds fewer).
        let base = ((k % p.slots) * p.kv_heads + cell.kh) * RW4;
        var sv = vec4<f32>(0.0);
        for (var i = 0u; i < HD4; i++) { // unroll
            sv = fma(qv[i], kv_elems(false, base, i), sv);
        }
        let s = cap_score((sv.x + sv.y) + (sv.z + sv.w));
        let mn = max(m, s);
        let alpha = exp(m - mn);
        let pr = exp(s - mn);
        l = fma(l, alpha, pr);
        for (var i = 0u; i < HD4; i++) { // unroll
            acc[i] = fma(vec4<f32>(pr), kv_elems(true, base, i), acc[i] * alpha);
        }
        m = mn;
    }

    for (var i = 0u; i < HD4; i++) { // unroll
        let a = acc[i];
        if (SINGLE == 1u) {
            let at = row * HD + 4u * i;
            out[at] = a.x / l;
            out[at + 1u] = a.y / l;
            out[at + 2u] = a.z / l;
            out[at + 3u] = a.w / l;
        } else {
            let at = (row * p.n_chunks + cell.chunk) * HD + 4u * i;
            out[at] = a.x;
            out[at + 1u] = a.y;
            out[at + 2u] = a.z;
            out[at + 3u] = a.w;
        }
    }
    if (SINGLE == 0u) {
        part_ml[row * p.n_chunks + cell.chunk] = vec2<f32>(m, l);
    }
}
