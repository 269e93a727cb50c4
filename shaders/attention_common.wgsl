// What attention.wgsl and attention_rows.wgsl share: which cache positions a query row sees.
// Prelude: GB, TQ, and the bindings of the attention kernels (p, step, segments).

// A workgroup's share: its block of GB heads (hb) of kv head kh's group, of TQ tokens from t0,
// in one chunk of the context; not live when the chunk or the tokens lie past the step's (the
// grid is sized for the largest).
struct AttentionCell {
    hb: u32,
    kh: u32,
    chunk: u32,
    t0: u32,
    live: bool,
}

fn attention_cell(wid: vec3<u32>, nwg: vec3<u32>) -> AttentionCell {
    var g = linear_workgroup(wid, nwg);
    let tb = g % p.token_blocks;
    g = g / p.token_blocks;
    let hb = g % p.head_blocks;
    g = g / p.head_blocks;
    let chunk = g / p.kv_heads;
    let t0 = tb * TQ;
    return AttentionCell(hb, g % p.kv_heads, chunk, t0, chunk < p.n_chunks && t0 < step.n_tokens);
}

// Stands for -infinity (WGSL has no infinite literals); far below any finite score.
const NEG: f32 = -1.0e30;

// The end (exclusive) of the cache positions the step's token t sees: up to its own position,
// with p.bidirectional every position of the step (a bidirectional window of W stops it W - 1
// positions after the query's), and with p.packed (inputs packed one after another) not past
// its own input, segments[t] = (first, end).
fn visible_end(t: u32) -> u32 {
    var end = step.offset + t + 1u;
    if (p.bidirectional != 0u) {
        end = step.offset + step.n_tokens;
        if (p.window > 0u) {
            end = min(end, step.offset + t + p.window);
        }
    }
    if (p.packed != 0u) {
        end = min(end, segments[t].y);
    }
    return end;
}

// Cache positions below the returned bound are visible to row r; 0 for rows without work
// (past the step's tokens, or past the last head of the group).
fn row_limit(r: u32, t0: u32, hb: u32) -> u32 {
    let t = t0 + r / GB;
    let hl = hb * GB + r % GB;
    if (t < step.n_tokens && hl < p.group) {
        return visible_end(t);
    }
    return 0u;
}

// The first cache position row r sees: with a sliding window of W positions, the query at
// position q sees keys from q - W + 1 on (transformers' sliding-window masks, causal and
// bidirectional); packed, not before the first of its input; otherwise 0. Never decreases with r.
fn row_low(r: u32, t0: u32) -> u32 {
    let t = min(t0 + r / GB, step.n_tokens - 1u);
    var low = 0u;
    if (p.packed != 0u) {
        low = segments[t].x;
    }
    let pos = step.offset + t;
    if (p.window > 0u && pos + 1u > p.window) {
        low = max(low, pos + 1u - p.window);
    }
    return low;
}

// Attention-logit soft-capping (Gemma 2): cap · tanh(s / cap). The argument is clamped where
// tanh is 1 to f32 precision, so its exp-based evaluation cannot overflow.
fn cap_score(s: f32) -> f32 {
    if (p.softcap > 0.0) {
        return p.softcap * tanh(clamp(s / p.softcap, -15.0, 15.0));
    }
    return s;
}
