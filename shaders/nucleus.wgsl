// The nucleus of one row of logits, found on the GPU without sorting it: the tokens that top-k
// (the k best), then top-p (the fewest best of those whose softmax mass reaches top_p · Z, Z
// over those) and min-p (exp(x − M) ≥ min_p) keep, as src/sample.rs's `finish` defines them,
// for a draw among them (a Gumbel argmax of the row `cut` writes, every other token −inf).
// Top-k's boundary is found as top-p's below, by count instead of mass (p.mode = 1): the key of
// the k-th best, which then bounds the mass passes from below (state[7]).
// Top-p's boundary is the largest order key κ with
// Σ_{key ≥ κ} exp(x − M) ≥ top_p · Z, found a byte of the key at a time, most significant
// first (a radix select by mass): `hist` sums the mass of the elements whose key matches the
// bytes chosen so far into 256 bins by the next byte, one histogram per workgroup; `pick`
// (one workgroup) adds the workgroups' histograms and takes the bin where the mass of the
// larger keys reaches the target. After four passes κ is a logit's exact key; its ties are all
// kept. Sums run in a fixed order, so a row gives the same κ on every run.
// state (u32 words, the host writes them all): [0] the row, [1] top_p (f32 bits; 1 = off),
// [2] min_p (f32 bits; 0 = off), [3] 0 (the key bytes chosen so far), [4] the mass of the keys
// above them, [5] the target mass, [6] top_k (0 = off), [7] 0 (the smallest key top-k keeps).
// Prelude: WG (256: one bin per invocation), order_key.wgsl, and the bindings of `nucleus`
// (src/kernels/sample.rs); p.level (0..4), p.mode (0: mass, 1: count), p.parts, p.span,
// p.vocab.

// exp(x − M) of an element with `bits`: 0 for −inf and NaN.
fn mass(bits: u32, m: f32) -> f32 {
    if ((bits & 0x7fffffffu) >= 0x7f800000u && bits != 0x7f800000u) {
        return 0.0;
    }
    return exp(bitcast<f32>(bits) - m);
}

var<workgroup> sd: array<u32, WG>;
var<workgroup> sw: array<f32, WG>;
var<workgroup> tot: array<f32, WG>;
// Live elements of the current chunk, counted in two counters taken in turn (chunk i counts in
// i % 2 while invocation 0 clears the other), so a chunk with none skips the 256-bin sums: after
// the first pass only the elements under the chosen bytes are live, a few chunks of the row.
var<workgroup> nlive: array<atomic<u32>, 2>;

@compute @workgroup_size(WG)
fn hist(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = linear_workgroup(wid, nwg);
    let row = state_in[0];
    let m = stats[row].x;
    let shift = 24u - 8u * p.level;
    let prefix = state_in[3];
    let low = select(state_in[7], 0u, p.mode == 1u);
    let start = min(g, p.parts) * p.span;
    let end = min(p.vocab, start + p.span);
    var acc = 0.0;
    var turn = 0u;
    for (var c = start; c < end; c += WG) {
        let e = c + li;
        var digit = WG;
        var w = 0.0;
        if (e < end) {
            let bits = logits[row * p.vocab + e];
            let key = order_key(bits);
            // The bytes above this pass's must equal those chosen (none on the first pass).
            let live = key >= low && (p.level == 0u || (key >> (shift + 8u)) == (prefix >> (shift + 8u)));
            if (live) {
                digit = (key >> shift) & 0xFFu;
                w = mass(bits, m);
                if (p.mode == 1u) {
                    // Top-k counts the tokens a draw may pick (not −inf, not NaN).
                    w = select(0.0, 1.0, key > order_key(NEG_INF));
                }
            }
        }
        sd[li] = digit;
        sw[li] = w;
        if (digit < WG) {
            atomicAdd(&nlive[turn], 1u);
        }
        if (li == 0u) {
            atomicStore(&nlive[turn ^ 1u], 0u);
        }
        workgroupBarrier();
        // The same count for every invocation (no adds until the next barrier).
        if (atomicLoad(&nlive[turn]) > 0u) {
            for (var j = 0u; j < WG; j++) {
                if (sd[j] == li) {
                    acc += sw[j];
                }
            }
        }
        workgroupBarrier();
        turn ^= 1u;
    }
    if (g < p.parts) {
        part_hist[g * WG + li] = acc;
    }
}

@compute @workgroup_size(WG)
fn pick(@builtin(local_invocation_index) li: u32) {
    var acc = 0.0;
    for (var g = 0u; g < p.parts; g++) {
        acc += hist_in[g * WG + li];
    }
    tot[li] = acc;
    workgroupBarrier();
    if (li != 0u) {
        return;
    }
    let shift = 24u - 8u * p.level;
    var above = bitcast<f32>(state[4]);
    var goal = bitcast<f32>(state[5]);
    if (p.level == 0u) {
        var z = 0.0;
        for (var b = 0u; b < WG; b++) {
            z += tot[WG - 1u - b];
        }
        above = 0.0;
        goal = select(bitcast<f32>(state[1]) * z, f32(state[6]), p.mode == 1u);
        state[3] = 0u;
    }
    // The largest bin whose mass with the larger keys' reaches the target; failing that (the
    // rounding of the sums), the smallest bin holding anything, so the whole prefix is kept.
    var chosen = 0u;
    var chosen_above = above;
    var found = false;
    var lowest = 0u;
    var lowest_above = above;
    var cum = above;
    for (var i = 0u; i < WG; i++) {
        let b = WG - 1u - i;
        let before = cum;
        cum += tot[b];
        if (tot[b] > 0.0) {
            lowest = b;
            lowest_above = before;
        }
        if (!found && tot[b] > 0.0 && cum >= goal) {
            chosen = b;
            chosen_above = before;
            found = true;
        }
    }
    if (!found) {
        chosen = lowest;
        chosen_above = lowest_above;
    }
    state[3] = state[3] | (chosen << shift);
    state[4] = bitcast<u32>(chosen_above);
    state[5] = bitcast<u32>(goal);
    if (p.mode == 1u && p.level == 3u) {
        state[7] = state[3];
    }
}

// The row to draw from: element e of the logits' row where its key is at least top-k's (state[7];
// 0 when top-k is off) and top-p's (state[3]) and exp(x − M) ≥ min_p, −inf elsewhere.
@compute @workgroup_size(WG)
fn cut(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_workgroup(wid, nwg) * WG + li;
    if (e >= p.vocab) {
        return;
    }
    let row = state_in[0];
    let m = stats[row].x;
    let top_p = bitcast<f32>(state_in[1]);
    let min_p = bitcast<f32>(state_in[2]);
    let bits = logits[row * p.vocab + e];
    let key = order_key(bits);
    var keep = key >= state_in[7] && (top_p >= 1.0 || key >= state_in[3]);
    if (min_p > 0.0) {
        keep = keep && mass(bits, m) >= min_p;
    }
    out[e] = select(NEG_INF, bits, keep);
}
