// Causal grouped-query attention against a KV cache, split over the context (flash decoding).
//
// Query token t of a step sits at position step.offset + t and sees cache positions 0..=that, or,
// with p.bidirectional (encoders), every position of the step and before it; packed inputs (a
// batch of embedder inputs), only those of its own input. A sliding window of
// W positions limits that to q - W + 1 ..= q (causal) or to |q - k| < W (bidirectional:
// EmbeddingGemma's local layers).
// The context is cut into chunks of p.chunk_len positions; a workgroup handles one chunk for one
// kv head, GB of the query heads that share it and TQ consecutive tokens: R = GB * TQ query rows
// that all read each key and value once from the cache. It walks its chunk in tiles of TK keys
// with an online softmax (running max m, running sum l, output accumulator rescaled by
// exp(m_old - m_new)), and writes either the normalised output (SINGLE = 1: one chunk spans the
// whole context) or the chunk's (unnormalised output, m, l) for attention_combine.wgsl.
// The grid is sized for the largest context and step; workgroups whose tokens or chunk lie past
// the current step exit at once, so the dispatch is built once.
//
// Per tile, all invocations: stage K (f32, rows padded to KS = HD + 1 floats against bank
// conflicts) -> scores, R*TK dot products, split in P parts when R*TK < WG -> per-row max (R
// invocations) while all stage V over K -> probabilities -> each invocation updates OUTS of the
// R*HD output accumulators.
//
// Prelude: WG, HD, HW (cache words per row: HD/2 rounded up for f16, HD for f32), KS, GB, TQ,
// R, TK, P, PART (R*TK*P, or 1 when P = 1), OUTS (ceil(R*HD / WG)), KV_F16, SINGLE, and the
// bindings of `ATTENTION` (src/kernels/attention.rs), and attention_common.wgsl.

var<workgroup> q_s: array<f32, R * HD>;
var<workgroup> kv_s: array<f32, TK * KS>;
var<workgroup> part_s: array<f32, PART>;
var<workgroup> sc_s: array<f32, R * TK>;
var<workgroup> m_s: array<f32, R>;
var<workgroup> alpha_s: array<f32, R>;

// Stages `len` rows of the k (or v) cache, from position k0, in kv_s as f32; rows past len are 0.
// Position k is row k % p.slots (a ring when the layer holds fewer positions than the context).
fn stage(use_v: bool, k0: u32, len: u32, kh: u32, li: u32) {
    let base = k0 % p.slots;
    for (var e = li; e < TK * HW; e += WG) {
        let j = e / HW;
        let w = e % HW;
        var word = 0u;
        if (j < len) {
            var slot = base + j;
            if (slot >= p.slots) {
                slot -= p.slots;
            }
            let idx = (slot * p.kv_heads + kh) * HW + w;
            if (use_v) {
                word = v_cache[idx];
            } else {
                word = k_cache[idx];
            }
        }
        if (KV_F16 == 1u) {
            let pair = unpack2x16float(word);
            kv_s[j * KS + 2u * w] = pair.x;
            if (2u * w + 1u < HD) {
                kv_s[j * KS + 2u * w + 1u] = pair.y;
            }
        } else {
            kv_s[j * KS + w] = bitcast<f32>(word);
        }
    }
}

@compute @workgroup_size(WG)
fn attention(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let cell = attention_cell(wid, nwg);
    if (!cell.live) {
        return;
    }
    let hb = cell.hb;
    let kh = cell.kh;
    let chunk = cell.chunk;
    let t0 = cell.t0;
    // Keys below `hi` are visible to some row of this workgroup.
    let hi = visible_end(min(t0 + TQ, step.n_tokens) - 1u);
    let first = chunk * p.chunk_len;
    if (first >= hi) {
        return;
    }
    let c1 = min(first + p.chunk_len, hi);
    // No row sees a key before its first row's window or input (and attention_combine reads no
    // chunk that ends there): the tiles start at the later of that and the chunk's start, so a
    // window's layer reads at most window + TQ − 1 positions (which a ring of slots holds).
    let low = row_low(0u, t0);
    if (c1 <= low) {
        return;
    }
    let c0 = max(first, low);

    for (var e = li; e < R * HD; e += WG) {
        let r = e / HD;
        let t = t0 + r / GB;
        let hl = hb * GB + r % GB;
        var v = 0.0;
        if (t < step.n_tokens && hl < p.group) {
            v = q[(t * p.n_heads + kh * p.group + hl) * HD + e % HD] * p.scale;
        }
        q_s[e] = v;
    }

    var acc: array<f32, OUTS>;
    var lsum: array<f32, OUTS>;
    var m_run = NEG; // meaningful in invocations li < R, which own row li's statistics

    for (var k0 = c0; k0 < c1; k0 += TK) {
        let len = min(TK, c1 - k0);
        stage(false, k0, len, kh, li);
        workgroupBarrier();

        if (P == 1u) {
            for (var e = li; e < R * TK; e += WG) {
                let r = e / TK;
                let j = e % TK;
                var s = 0.0;
                for (var d = 0u; d < HD; d++) {
                    s = fma(q_s[r * HD + d], kv_s[j * KS + d], s);
                }
                sc_s[e] = cap_score(s);
            }
        } else {
            for (var e = li; e < R * TK * P; e += WG) {
                let part = e % P;
                let rj = e / P;
                let r = rj / TK;
                let j = rj % TK;
                var s = 0.0;
                for (var d = part; d < HD; d += P) {
                    s = fma(q_s[r * HD + d], kv_s[j * KS + d], s);
                }
                part_s[e] = s;
            }
            workgroupBarrier();
            for (var e = li; e < R * TK; e += WG) {
                var s = 0.0;
                for (var i = 0u; i < P; i++) {
                    s += part_s[e * P + i];
                }
                sc_s[e] = cap_score(s);
            }
        }
        workgroupBarrier();

        if (li < R) {
            let lim = row_limit(li, t0, hb);
            let low = row_low(li, t0);
            var mt = m_run;
            for (var j = 0u; j < len; j++) {
                if (k0 + j < lim && k0 + j >= low) {
                    mt = max(mt, sc_s[li * TK + j]);
                }
            }
            alpha_s[li] = exp(m_run - mt);
            m_s[li] = mt;
            m_run = mt;
        }
        // K is no longer needed: V takes its place.
        stage(true, k0, len, kh, li);
        workgroupBarrier();

        for (var e = li; e < R * TK; e += WG) {
            let r = e / TK;
            var pr = 0.0;
            let key = k0 + e % TK;
            if (key < row_limit(r, t0, hb) && key >= row_low(r, t0)) {
                pr = exp(sc_s[e] - m_s[r]);
            }
            sc_s[e] = pr;
        }
        workgroupBarrier();

        for (var i = 0u; i < OUTS; i++) { // unroll
            let o = li + i * WG;
            if (o < R * HD) {
                let r = o / HD;
                let d = o % HD;
                let alpha = alpha_s[r];
                var a = acc[i] * alpha;
                var l = lsum[i] * alpha;
                for (var j = 0u; j < len; j++) {
                    let pr = sc_s[r * TK + j];
                    a = fma(pr, kv_s[j * KS + d], a);
                    l += pr;
                }
                acc[i] = a;
                lsum[i] = l;
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < OUTS; i++) { // unroll
        let o = li + i * WG;
        if (o < R * HD) {
            let r = o / HD;
            let d = o % HD;
            let t = t0 + r / GB;
            let hl = hb * GB + r % GB;
            if (t < step.n_tokens && hl < p.group) {
                let row = t * p.n_heads + kh * p.group + hl;
                if (SINGLE == 1u) {
                    out[row * HD + d] = acc[i] / lsum[i];
                } else {
                    out[(row * p.n_chunks + chunk) * HD + d] = acc[i];
                    if (d == 0u) {
                        part_ml[row * p.n_chunks + chunk] = vec2<f32>(m_s[r], lsum[i]);
                    }
                }
            }
        }
    }
}
