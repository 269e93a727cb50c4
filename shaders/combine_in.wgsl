// COMBINE = 1: the input of a matvec (matvec.wgsl) is split attention's partial results, combined
// as they are loaded: attention_combine.wgsl's formula without its dispatch. Row m of x (token m
// of the step, at position step.offset + m, causal, with a window of C_WINDOW positions when > 0)
// is C_HEADS heads of C_HD elements; element d of head h is
//   sum_c part_o[(m · C_HEADS + h) · C_CHUNKS + c, d] · exp(m_c − M) / sum_c l_c · exp(m_c − M)
// over the chunks c holding a visible key, M = max m_c, with the same operations in the same
// order as the combine pass. Each workgroup (one row) first puts every head's chunk weights
// exp(m_c − M) and their sum in workgroup memory, then loads x through x_in. Rows past the step
// read 0.
// Prelude: C_HEADS, C_HD, C_CHUNKS, C_CHUNK_LEN, C_WINDOW, WG, the bindings part_o, part_ml, step.

var<workgroup> comb_w: array<f32, C_HEADS * C_CHUNKS>;
var<workgroup> comb_l: array<f32, C_HEADS>;
// The chunks [x, y) the workgroup's row sees.
var<private> comb_range: vec2<u32>;

// Call from uniform control flow, before the first x_in.
fn input_prologue(li: u32, m: u32, first: bool) {
    let pos = step.offset + m;
    var low = 0u;
    if (C_WINDOW > 0u && pos + 1u > C_WINDOW) {
        low = pos + 1u - C_WINDOW;
    }
    comb_range = vec2<u32>(low / C_CHUNK_LEN, min(pos / C_CHUNK_LEN + 1u, C_CHUNKS));
    if (m < step.n_tokens) {
        for (var h = li; h < C_HEADS; h += WG) {
            let base = (m * C_HEADS + h) * C_CHUNKS;
            var mx = -1.0e30;
            for (var c = comb_range.x; c < comb_range.y; c++) {
                mx = max(mx, part_ml[base + c].x);
            }
            var l = 0.0;
            for (var c = comb_range.x; c < comb_range.y; c++) {
                let ml = part_ml[base + c];
                let w = exp(ml.x - mx);
                comb_w[h * C_CHUNKS + c] = w;
                l = fma(ml.y, w, l);
            }
            comb_l[h] = l;
        }
    }
    workgroupBarrier();
}

fn x_in(m: u32, k: u32) -> f32 {
    if (m >= step.n_tokens) {
        return 0.0;
    }
    let h = k / C_HD;
    let base = (m * C_HEADS + h) * C_CHUNKS;
    var o = 0.0;
    for (var c = comb_range.x; c < comb_range.y; c++) {
        o = fma(part_o[(base + c) * C_HD + k % C_HD], comb_w[h * C_CHUNKS + c], o);
    }
    return o / comb_l[h];
}
