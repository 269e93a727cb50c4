// Top-k and argmax over rows of f32 logits, for sampling on the GPU: a decode step reads back
// k (value, index) pairs per row instead of the whole vocabulary.
//
// Order: by value, descending; NaN counts as −inf; −0 equals +0; ties go to the lower index.
// Values are compared as order-preserving u32 keys made from their bits with integer operations
// only, so the order is exact (no flushing of subnormals, no float comparison quirks), and a
// (key, index) pair is unique, so the result is one total order whatever the schedule.
//
// The work runs in levels (the host plans them): each workgroup reduces a span of one row's
// input to its best K (key, index) pairs, which the next level reads as input; the last level
// has one workgroup per row and writes the first `final_k` results as (value bits, index), the
// value re-read from the logits (NaN written as −inf).
//
// `topk` (K ≥ 2) keeps TILE slots in workgroup memory: it sorts runs of K with a bitonic network
// (alternating directions), then halves the slots repeatedly: the element-wise better of a
// descending and an ascending run of K is a bitonic sequence holding the best K of both, which a
// bitonic merge sorts again (Shanbhag et al., "Efficient Top-K Query Processing on Massively
// Parallel Hardware", 2018). A span longer than TILE is consumed a tile at a time, the best K so
// far carried in the first K slots. `argmax` (K = 1) keeps the best pair per invocation in
// registers while scanning its span and finishes with a tree in workgroup memory.
//
// Bindings: `src` is the level's input: the logits themselves on the first level (bound twice,
// both read-only), then the previous level's pairs. Prelude: WG (power of two), K (power of two,
// 1..=64), TILE (power of two ≥ 2·K), KEEP (ceil(TILE / (2·WG))), the bindings of `TOPK`
// (src/kernels/sample.rs), order_key.wgsl, and `sample_key(row, e, bits)`, the key of a logit
// on the first level: its order_key, or with gumbel.wgsl the key of a Gumbel-perturbed logit
// (argmax only: a draw on the GPU).

// Index of padding: with key 0 it loses to every real element (the smallest real key, −inf's,
// is 0x007fffff).
const NONE: u32 = 0xffffffffu;

// Whether (ka, ia) ranks before (kb, ib).
fn better(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// Element e of `row` at this level, as (key, index).
fn load(row: u32, e: u32) -> vec2<u32> {
    if (p.mode == 0u) {
        return vec2<u32>(sample_key(row, e, src[row * p.vocab + e]), e);
    }
    let o = 2u * (row * p.n + e);
    return vec2<u32>(src[o], src[o + 1u]);
}

// Writes result i (0-based rank) of workgroup `part` of `row`.
fn emit(row: u32, part: u32, i: u32, item: vec2<u32>) {
    if (p.final_k == 0u) {
        let o = 2u * ((row * p.parts + part) * K + i);
        dst[o] = item.x;
        dst[o + 1u] = item.y;
    } else if (i < p.final_k) {
        let o = 2u * (row * p.final_k + i);
        dst[o] = canonical_bits(logits[row * p.vocab + item.y]);
        dst[o + 1u] = item.y;
    }
}

// ---- top-k (K ≥ 2) ----------------------------------------------------------------------

var<workgroup> sk: array<u32, TILE>;
var<workgroup> si: array<u32, TILE>;

// Orders slots i < j: the better one first when `desc`, last otherwise.
fn compare_exchange(i: u32, j: u32, desc: bool) {
    let ki = sk[i];
    let ii = si[i];
    let kj = sk[j];
    let ij = si[j];
    let swap = select(better(ki, ii, kj, ij), better(kj, ij, ki, ii), desc);
    if (swap) {
        sk[i] = kj;
        si[i] = ij;
        sk[j] = ki;
        si[j] = ii;
    }
}

// Sorts every run of K slots, run r descending when r is even, ascending when odd.
fn sort_runs(li: u32) {
    for (var size = 2u; size <= K; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = li; t < TILE / 2u; t += WG) {
                let i = (t / stride) * 2u * stride + t % stride;
                compare_exchange(i, i + stride, (i & size) == 0u);
            }
            workgroupBarrier();
        }
    }
}

// `count` slots of sorted runs (alternating directions) become count / 2 such slots holding the
// best K of each pair of runs.
fn halve(li: u32, count: u32) {
    // Slot li + n · WG of the result is keep[n] (n named by a literal: the loops unroll).
    var keep: array<vec2<u32>, KEEP>;
    for (var n = 0u; n < KEEP; n++) { // unroll
        let t = li + n * WG;
        if (t < count / 2u) {
            let a = 2u * K * (t / K) + t % K;
            let b = a + K;
            keep[n] = select(vec2<u32>(sk[b], si[b]), vec2<u32>(sk[a], si[a]), better(sk[a], si[a], sk[b], si[b]));
        }
    }
    workgroupBarrier();
    for (var n = 0u; n < KEEP; n++) { // unroll
        let t = li + n * WG;
        if (t < count / 2u) {
            sk[t] = keep[n].x;
            si[t] = keep[n].y;
        }
    }
    workgroupBarrier();
    for (var stride = K >> 1u; stride > 0u; stride >>= 1u) {
        for (var t = li; t < count / 4u; t += WG) {
            let i = (t / stride) * 2u * stride + t % stride;
            compare_exchange(i, i + stride, (i & K) == 0u);
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn topk(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.rows * p.parts) {
        return;
    }
    let row = g / p.parts;
    let part = g % p.parts;
    let end = min(p.n, (part + 1u) * p.span);
    var next = part * p.span;
    var carried = 0u;
    loop {
        for (var s = carried + li; s < TILE; s += WG) {
            let e = next + (s - carried);
            var item = vec2<u32>(0u, NONE);
            if (e < end) {
                item = load(row, e);
            }
            sk[s] = item.x;
            si[s] = item.y;
        }
        next += TILE - carried;
        carried = K;
        workgroupBarrier();
        sort_runs(li);
        for (var count = TILE; count > K; count >>= 1u) {
            halve(li, count);
        }
        if (next >= end) {
            break;
        }
    }
    for (var i = li; i < K; i += WG) {
        emit(row, part, i, vec2<u32>(sk[i], si[i]));
    }
}

// ---- argmax (K = 1) ---------------------------------------------------------------------

var<workgroup> ak: array<u32, WG>;
var<workgroup> ai: array<u32, WG>;

@compute @workgroup_size(WG)
fn argmax(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    if (g >= p.rows * p.parts) {
        return;
    }
    let row = g / p.parts;
    let part = g % p.parts;
    let end = min(p.n, (part + 1u) * p.span);
    var best = vec2<u32>(0u, NONE);
    for (var e = part * p.span + li; e < end; e += WG) {
        let item = load(row, e);
        if (better(item.x, item.y, best.x, best.y)) {
            best = item;
        }
    }
    ak[li] = best.x;
    ai[li] = best.y;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s && better(ak[li + s], ai[li + s], ak[li], ai[li])) {
            ak[li] = ak[li + s];
            ai[li] = ai[li + s];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        emit(row, part, 0u, vec2<u32>(ak[0], ai[0]));
    }
}
