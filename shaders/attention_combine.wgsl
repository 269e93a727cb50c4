// Combines the per-chunk results of attention.wgsl: for each query row (token t, head h) and
// element d, with the chunks c that hold at least one visible key (from the first position the
// window or the input lets it see, to its own position, or with p.bidirectional the step's last
// or the window's; packed, those of token t's own input):
//   M = max m_c,  out = sum_c o_c[d] * exp(m_c - M) / sum_c l_c * exp(m_c - M).
// One invocation per output element; tokens past the step exit at once.
// Prelude: WG, and the bindings of `COMBINE` (src/kernels/attention.rs).

const NEG: f32 = -1.0e30;

@compute @workgroup_size(WG)
fn attention_combine(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    let row = e / p.head_dim;
    let d = e % p.head_dim;
    let t = row / p.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    // The positions token t sees, first and last: as attention.wgsl's row_low and visible_end.
    let pos = step.offset + t;
    var last = select(pos, step.offset + step.n_tokens - 1u, p.bidirectional != 0u);
    var low = 0u;
    if (p.window > 0u) {
        if (pos + 1u > p.window) {
            low = max(low, pos + 1u - p.window);
        }
        if (p.bidirectional != 0u) {
            last = min(last, pos + p.window - 1u);
        }
    }
    if (p.packed != 0u) {
        // Packed inputs: the chunks of token t's own input only.
        let s = segments[t];
        low = max(low, s.x);
        last = min(last, s.y - 1u);
    }
    let first = low / p.chunk_len;
    let n = min(last / p.chunk_len + 1u, p.n_chunks);
    let base = row * p.n_chunks;
    var mx = NEG;
    for (var c = first; c < n; c++) {
        mx = max(mx, part_ml[base + c].x);
    }
    var l = 0.0;
    var o = 0.0;
    for (var c = first; c < n; c++) {
        let ml = part_ml[base + c];
        let w = exp(ml.x - mx);
        l = fma(ml.y, w, l);
        o = fma(part_o[(base + c) * p.head_dim + d], w, o);
    }
    out[row * p.head_dim + d] = o / l;
}
