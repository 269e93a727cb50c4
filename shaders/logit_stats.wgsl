// The softmax statistics of rows of logits: per row, its max M and Z = Σ exp(x − M), which with
// the GPU's top candidates give each candidate's exact probability exp(x − M) / Z (top-p over
// the whole vocabulary without reading the row back). NaN counts as −inf; −inf (and f32's
// lowest finite value, the empty sum's max) adds nothing; a row with nothing else gives
// (f32's lowest value, 0). Two entry points: `stats_partial` reduces a span of a row per
// workgroup to (m, s) in `part_ms`, `stats_combine` (one workgroup per row) merges a row's parts
// into `stats`.
// Pairs merge as (m, s) ⊕ (m', s') = (max, s·exp(m − max) + s'·exp(m' − max)).
// Prelude: WG (power of two), and the bindings of `logit_stats` (src/kernels/sample.rs).

// The max of an empty sum (WGSL constants cannot be infinite).
const EMPTY: f32 = -0x1.fffffep+127f;

var<workgroup> wm: array<f32, WG>;
var<workgroup> ws: array<f32, WG>;

fn scaled(s: f32, m: f32, to: f32) -> f32 {
    // An empty part adds nothing; +inf − +inf would be NaN.
    if (s == 0.0 || m == to) {
        return s;
    }
    return s * exp(m - to);
}

fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, scaled(a.y, a.x, m) + scaled(b.y, b.x, m));
}

// The workgroup's merged pair, in every invocation's return value after the barriers.
fn reduce_pairs(li: u32, mine: vec2<f32>) -> vec2<f32> {
    wm[li] = mine.x;
    ws[li] = mine.y;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let r = merge(vec2<f32>(wm[li], ws[li]), vec2<f32>(wm[li + s], ws[li + s]));
            wm[li] = r.x;
            ws[li] = r.y;
        }
        workgroupBarrier();
    }
    return vec2<f32>(wm[0], ws[0]);
}

fn value(bits: u32) -> f32 {
    // NaN (any payload) as nothing.
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return EMPTY;
    }
    return bitcast<f32>(bits);
}

@compute @workgroup_size(WG)
fn stats_partial(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let live = g < p.rows * p.parts;
    let row = g / p.parts;
    let part = g % p.parts;
    var acc = vec2<f32>(EMPTY, 0.0);
    if (live) {
        let end = min(p.vocab, (part + 1u) * p.span);
        for (var e = part * p.span + li; e < end; e += WG) {
            let x = value(logits[row * p.vocab + e]);
            if (x > EMPTY) {
                acc = merge(acc, vec2<f32>(x, 1.0));
            }
        }
    }
    let r = reduce_pairs(li, acc);
    if (live && li == 0u) {
        part_ms[row * p.parts + part] = r;
    }
}

@compute @workgroup_size(WG)
fn stats_combine(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_workgroup(wid, nwg);
    let live = row < p.rows;
    var acc = vec2<f32>(EMPTY, 0.0);
    if (live) {
        for (var i = li; i < p.parts; i += WG) {
            acc = merge(acc, part_in[row * p.parts + i]);
        }
    }
    let r = reduce_pairs(li, acc);
    if (live && li == 0u) {
        stats[row] = r;
    }
}
