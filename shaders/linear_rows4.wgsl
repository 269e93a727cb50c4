// linear_rows.wgsl for every weight format, read through vec4 views of x and W: the 32-element
// blocks of Q4_0, Q4_1, IQ4_NL and Q8_0 (one or two vec4s of words), IQ4_XS's sub-blocks (one),
// Q5_0's and Q5_1's blocks (five words: not vec4-aligned), the float formats in runs of 32
// (rows of a multiple of 32: eight vec4s of f32 words, four of f16 or bf16 pairs), and the
// K-quants a half super-block (128 weights) per step (SUB = 4), so that the quant words and
// scales its sub-blocks share are loaded once (Q2_K: two vec4s, Q3_K and Q4_K: four, Q5_K and
// Q6_K: six). CPU drivers pay per load instruction (lavapipe
// runs each storage load lane by lane), so a block of 32 weights is one or two loads plus its
// scale, and each x vec4 is loaded once per block for all NR rows of W an invocation computes
// (COLS = NR output columns, or NR / 2 with SWIGLU: their gate rows, then their up rows; with
// ROPE, NR = 4, the four rows of one quad of qkv_rope.wgsl).
// Element values are exactly quant.wgsl's (ggml's). With NORM each invocation sums x² of its MT
// rows as it loads them and loads x times the norm weight (linear_common.wgsl).
// Where every subgroup has SG invocations (SG > 0), x is loaded through subgroup broadcasts:
// each invocation loads SV / SG of a step's x vec4s and gets the others from its subgroup
// (lavapipe and SwiftShader load storage lane by lane, an x vec4 that every lane loads costing
// as much as a weight vec4: 1.3-1.5x the matvec's speed on lavapipe, 1.1x on SwiftShader).
// Prelude: WG, MT, NR, COLS (output columns or quads per invocation: NR >> (SWIGLU + 2 ROPE)),
// SUB (32-element sub-blocks per step: 1, or 4 for the K-quants), SV (x vec4s per step: 8 SUB),
// SG (the subgroup size, or 0: no broadcasts), SGL (SG, at least 1), XL (SV / SGL),
// and linear_common.wgsl's, with the `VEC4` bindings: x: array<vec4<f32>>,
// w: array<vec4<u32>>, and ws: the same W as array<u32>. Loops over constant bounds are unrolled
// (`// unroll`, gpu::pipeline::unroll), as in linear_rows.wgsl.

// A word of the scales region (through the word view `ws` of W).
fn word(i: u32) -> u32 {
    return ws[i];
}

// Fields are decoded in place: a field masked where it sits, at byte j of a word, converts to
// its value times 2^8j exactly, and the block's scale times 2^-8j (BYTE_SCALE) undoes that in
// the multiply the dequantization does anyway. So a word's four fields cost one mask, not one
// shift each: CPU drivers run a vector shift by per-component amounts one lane at a time (about
// half of SwiftShader's matvec time went there). The products are exact, so the values are
// bit for bit those of shifting each field down (quant.wgsl's).
const BYTE_SCALE = vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0 / 16777216.0);
const NIB_MASKS = vec4<u32>(0xFu, 0xF00u, 0xF0000u, 0xF000000u);

// The 4-bit fields at bits shift + 8j of v (j = 0..3), each times 2^8j.
fn nib4p(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v >> shift) & NIB_MASKS));
}

// The signed bytes b_j of v: (b_j + 128) · 2^8j for j < 3 and b_3 itself (a top byte in place
// would not fit an i32); value = i8x4p(v) · (d · I8_SCALE) + d · I8_OFFSET = b_j · d.
const I8_SCALE = vec4<f32>(1.0, 1.0 / 256.0, 1.0 / 65536.0, 1.0);
const I8_OFFSET = vec4<f32>(-128.0, -128.0, -128.0, 0.0);
fn i8x4p(v: u32) -> vec4<f32> {
    let u = vec3<u32>(v ^ 0x808080u) & vec3<u32>(0xFFu, 0xFF00u, 0xFF0000u);
    return vec4<f32>(vec4<i32>(bitcast<vec3<i32>>(u), bitcast<i32>(v) >> 24u));
}

// The 5-bit fields of v (a nibble and a fifth bit at bit 4 of each byte), 2-bit fields and
// 3-bit fields, in place (times 2^8j, as nib4p).
const FIVE_MASKS = vec4<u32>(0x1Fu, 0x1F00u, 0x1F0000u, 0x1F000000u);
const CRUMB_MASKS = vec4<u32>(0x3u, 0x300u, 0x30000u, 0x3000000u);
const THREE_MASKS = vec4<u32>(0x7u, 0x700u, 0x70000u, 0x7000000u);
fn fields4p(v: u32, masks: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v) & masks));
}

// Bits 0..3 of n spread to bits 0, 8, 16, 24: the four shifted copies n · (1 + 2^7 + 2^14 +
// 2^21) do not overlap, and copy j holds bit j at 8j.
fn spread4(n: u32) -> u32 {
    return ((n & 15u) * 0x00204081u) & 0x01010101u;
}

// Byte i of the scale words from word `base` (through the word view).
fn byte_w(base: u32, i: u32) -> u32 {
    return (word(base + i / 4u) >> (8u * (i % 4u))) & 0xFFu;
}

// IQ4_NL's levels, packed as in quant.wgsl (kvalues_iq4nl as i8 bytes, 4 per word).
const IQ4NL_LEVELS = vec4<u32>(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);

fn iq4nl4v(v: u32, shift: u32) -> vec4<f32> {
    let q = (vec4<u32>(v) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u);
    let lv = IQ4NL_LEVELS;
    let words = vec4<u32>(lv[q.x >> 2u], lv[q.y >> 2u], lv[q.z >> 2u], lv[q.w >> 2u]);
    let bytes = bitcast<vec4<i32>>(words << (vec4<u32>(24u) - 8u * (q & vec4<u32>(3u))));
    return vec4<f32>(bytes >> vec4<u32>(24u));
}

// Q4_K's 6-bit scale and min of sub-block j (0..8) from the scale words s0..s2 (ggml's
// get_scale_min_k4 on bytes held in registers).
fn sm_q4_k(s: vec3<u32>, j: u32) -> vec2<f32> {
    let sh = 8u * (j % 4u);
    let bj = (s[j / 4u] >> sh) & 0xFFu;
    let bj4 = (s[(j + 4u) / 4u] >> sh) & 0xFFu;
    if (j < 4u) {
        return vec2<f32>(f32(bj & 63u), f32(bj4 & 63u));
    }
    let bjm = (s[(j - 4u) / 4u] >> sh) & 0xFFu;
    return vec2<f32>(f32((bj4 & 15u) | ((bjm >> 6u) << 4u)), f32((bj4 >> 4u) | ((bj >> 6u) << 4u)));
}

// Q6_K's i8 scale `idx` (0..16) of the super-block whose scales start at word s.
fn sc_q6_k(s: u32, idx: u32) -> f32 {
    let byte = (word(s + idx / 4u) >> (8u * (idx % 4u))) & 0xFFu;
    return f32(bitcast<i32>(byte << 24u) >> 24u);
}

// Four 6-bit Q6_K quants in place (times 2^8j, as nib4p): low nibbles of `lo` at `lo_shift`,
// high crumbs of `hi` at `hi_shift`.
fn q6_k_4p(lo: u32, lo_shift: u32, hi: u32, hi_shift: u32) -> vec4<f32> {
    let l = vec4<u32>(lo >> lo_shift) & NIB_MASKS;
    let h = vec4<u32>((hi >> hi_shift) << 4u) & vec4<u32>(0x30u, 0x3000u, 0x300000u, 0x30000000u);
    return vec4<f32>(bitcast<vec4<i32>>(l | h));
}

// The two 16-bit floats of a word: f16, or bf16 (W_FORMAT 30).
fn half2(v: u32) -> vec2<f32> {
    if (W_FORMAT == 30u) {
        return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xFFFF0000u));
    }
    return unpack2x16float(v);
}

// The 32 weights of block b as 8 vec4s, in element order (the K-quants go through block128).
// For IQ4_XS (super-blocks of 256) b counts 32-element sub-blocks: sub-block b % 8 of
// super-block b / 8. The float formats (rows of a multiple of 32) are read as blocks of 32 too.
fn block32(b: u32) -> array<vec4<f32>, 8> {
    var o: array<vec4<f32>, 8>;
    if (W_FORMAT == 0u) {
        for (var i = 0u; i < 8u; i++) { // unroll
            o[i] = bitcast<vec4<f32>>(w[8u * b + i]);
        }
        return o;
    }
    if (W_FORMAT == 1u || W_FORMAT == 30u) {
        for (var i = 0u; i < 4u; i++) { // unroll
            let v = w[4u * b + i];
            o[2u * i] = vec4<f32>(half2(v.x), half2(v.y));
            o[2u * i + 1u] = vec4<f32>(half2(v.z), half2(v.w));
        }
        return o;
    }
    if (W_FORMAT == 23u) {
        // IQ4_XS: sub-block i is one vec4 of qs (low nibbles, then high) with the 6-bit scale
        // ls (bits 4i of scale word 1, two more at bits 16 + 2i of word 0, whose low half is d);
        // value = (d · (ls − 32)) · kvalues[q], decode8_iq4_xs's.
        let g = b / 8u;
        let i = b % 8u;
        let s = p.scale_base + 2u * g;
        let dh = word(s);
        let ls = ((word(s + 1u) >> (4u * i)) & 15u) | (((dh >> (16u + 2u * i)) & 3u) << 4u);
        let dl = unpack2x16float(dh).x * f32(i32(ls) - 32);
        let q = w[8u * g + i];
        for (var c = 0u; c < 4u; c++) { // unroll
            o[c] = dl * iq4nl4v(q[c], 0u);
            o[c + 4u] = dl * iq4nl4v(q[c], 4u);
        }
        return o;
    }
    if (W_FORMAT == 6u || W_FORMAT == 7u) {
        // Q5_0 / Q5_1: five words per block (qs[16], then qh), read through the word view; the
        // fifth bit of element e is bit e of qh, spread to bit 4 of the element's byte.
        // Q5_0: value = (q − 16) · d; Q5_1: value = q · d + m.
        let q = vec4<u32>(word(5u * b), word(5u * b + 1u), word(5u * b + 2u), word(5u * b + 3u));
        let qh = word(5u * b + 4u);
        var dv: vec4<f32>;
        var off: vec4<f32>;
        if (W_FORMAT == 7u) {
            let dm = unpack2x16float(word(p.scale_base + b));
            dv = dm.x * BYTE_SCALE;
            off = vec4<f32>(dm.y);
        } else {
            let d = unpack2x16float(word(p.scale_base + b / 2u))[b & 1u];
            dv = d * BYTE_SCALE;
            off = vec4<f32>(-16.0 * d);
        }
        for (var i = 0u; i < 4u; i++) { // unroll
            let lo = (q[i] & 0x0F0F0F0Fu) | (spread4(qh >> (4u * i)) << 4u);
            let hi = ((q[i] >> 4u) & 0x0F0F0F0Fu) | (spread4(qh >> (16u + 4u * i)) << 4u);
            o[i] = fields4p(lo, FIVE_MASKS) * dv + off;
            o[i + 4u] = fields4p(hi, FIVE_MASKS) * dv + off;
        }
        return o;
    }
    if (W_FORMAT == 8u) {
        // Q8_0: value = q · d.
        let d = unpack2x16float(word(p.scale_base + b / 2u))[b & 1u];
        let q0 = w[2u * b];
        let q1 = w[2u * b + 1u];
        let dv = d * I8_SCALE;
        let off = d * I8_OFFSET;
        for (var i = 0u; i < 4u; i++) { // unroll
            o[i] = i8x4p(q0[i]) * dv + off;
            o[i + 4u] = i8x4p(q1[i]) * dv + off;
        }
    } else {
        // Q4_0 / Q4_1 / IQ4_NL: element j < 16 is the low nibble of byte j, j + 16 its high
        // nibble.
        let q = w[b];
        if (W_FORMAT == 20u) {
            // value = d · kvalues[q]
            let d = unpack2x16float(word(p.scale_base + b / 2u))[b & 1u];
            for (var i = 0u; i < 4u; i++) { // unroll
                o[i] = d * iq4nl4v(q[i], 0u);
                o[i + 4u] = d * iq4nl4v(q[i], 4u);
            }
        } else if (W_FORMAT == 3u) {
            // value = q · d + m
            let dm = unpack2x16float(word(p.scale_base + b));
            let d = dm.x * BYTE_SCALE;
            let m = vec4<f32>(dm.y);
            for (var i = 0u; i < 4u; i++) { // unroll
                o[i] = nib4p(q[i], 0u) * d + m;
                o[i + 4u] = nib4p(q[i], 4u) * d + m;
            }
        } else {
            // value = (q − 8) · d
            let d = unpack2x16float(word(p.scale_base + b / 2u))[b & 1u];
            let dv = d * BYTE_SCALE;
            let off = vec4<f32>(-8.0 * d);
            for (var i = 0u; i < 4u; i++) { // unroll
                o[i] = nib4p(q[i], 0u) * dv + off;
                o[i + 4u] = nib4p(q[i], 4u) * dv + off;
            }
        }
    }
    return o;
}

// The 128 weights of half h = s % 2 of K-quant super-block s / 2 (sub-blocks 4h .. 4h + 4) as
// 32 vec4s, in element order: the quant words these sub-blocks share (Q4_K's and Q5_K's chunk
// pairs hold two, Q6_K's high crumbs and Q2_K's and Q3_K's planes four) are loaded once, and
// the scales once. Each value is exactly ggml's (quant.wgsl's decode8_*).
fn block128(s: u32) -> array<vec4<f32>, 32> {
    var o: array<vec4<f32>, 32>;
    let g = s / 2u;
    let h = s % 2u;
    if (W_FORMAT == 12u || W_FORMAT == 13u) {
        // Q4_K / Q5_K: chunk pairs 2h and 2h + 1 (two vec4s of qs each); Q5_K's two vec4s of
        // qh serve all four sub-blocks.
        let per = select(8u, 10u, W_FORMAT == 13u);
        let sb = p.scale_base + 4u * g;
        let dm = unpack2x16float(word(sb));
        let sc = vec3<u32>(word(sb + 1u), word(sb + 2u), word(sb + 3u));
        let q = array<vec4<u32>, 4>(w[per * g + 4u * h], w[per * g + 4u * h + 1u], w[per * g + 4u * h + 2u], w[per * g + 4u * h + 3u]);
        var qh: array<vec4<u32>, 2>;
        if (W_FORMAT == 13u) {
            qh = array<vec4<u32>, 2>(w[per * g + 8u], w[per * g + 9u]);
        }
        for (var u = 0u; u < 4u; u++) { // unroll
            let j = 4u * h + u;
            let sm = sm_q4_k(sc, j);
            let d1 = (dm.x * sm.x) * BYTE_SCALE;
            let m1 = vec4<f32>(-(dm.y * sm.y));
            let shift = 4u * (u & 1u);
            for (var i = 0u; i < 4u; i++) { // unroll
                for (var r = 0u; r < 2u; r++) { // unroll
                    let v = q[2u * (u / 2u) + r][i];
                    if (W_FORMAT == 13u) {
                        let f = ((v >> shift) & 0x0F0F0F0Fu) | (((qh[r][i] >> j) & 0x01010101u) << 4u);
                        o[8u * u + 4u * r + i] = fields4p(f, FIVE_MASKS) * d1 + m1;
                    } else {
                        o[8u * u + 4u * r + i] = nib4p(v, shift) * d1 + m1;
                    }
                }
            }
        }
        return o;
    }
    if (W_FORMAT == 14u) {
        // Q6_K: half h's low nibbles (four vec4s of ql: sub-blocks t and t + 2 share two) and
        // high crumbs (two vec4s of qh for all four).
        let sb = p.scale_base + 5u * g;
        let d = unpack2x16float(word(sb + 4u)).x;
        let base = 12u * g;
        let lo = array<vec4<u32>, 4>(w[base + 4u * h], w[base + 4u * h + 1u], w[base + 4u * h + 2u], w[base + 4u * h + 3u]);
        let hi = array<vec4<u32>, 2>(w[base + 8u + 2u * h], w[base + 8u + 2u * h + 1u]);
        for (var t = 0u; t < 4u; t++) { // unroll
            for (var r = 0u; r < 2u; r++) { // unroll
                let ds = d * sc_q6_k(sb, 8u * h + 2u * t + r);
                let dv = ds * BYTE_SCALE;
                let off = vec4<f32>(-32.0 * ds);
                for (var i = 0u; i < 4u; i++) { // unroll
                    o[8u * t + 4u * r + i] = q6_k_4p(lo[2u * (t & 1u) + r][i], 4u * (t >> 1u), hi[r][i], 2u * t) * dv + off;
                }
            }
        }
        return o;
    }
    if (W_FORMAT == 10u || W_FORMAT == 11u) {
        // Q2_K / Q3_K: half h's two vec4s of qs hold its four planes (and Q3_K's two vec4s of
        // hmask, bits 4h + plane, both halves').
        var q: array<vec4<u32>, 2>;
        var hm: array<vec4<u32>, 2>;
        var sb: u32;
        var d: vec2<f32>;
        if (W_FORMAT == 10u) {
            sb = p.scale_base + 5u * g;
            d = unpack2x16float(word(sb));
            q = array<vec4<u32>, 2>(w[4u * g + 2u * h], w[4u * g + 2u * h + 1u]);
        } else {
            sb = p.scale_base + 4u * g;
            d = unpack2x16float(word(sb + 3u));
            q = array<vec4<u32>, 2>(w[6u * g + 2u + 2u * h], w[6u * g + 3u + 2u * h]);
            hm = array<vec4<u32>, 2>(w[6u * g], w[6u * g + 1u]);
        }
        for (var u = 0u; u < 4u; u++) { // unroll
            for (var r = 0u; r < 2u; r++) { // unroll
                // The run of 16: scale index.
                let run = 8u * h + 2u * u + r;
                var dv: vec4<f32>;
                var off: vec4<f32>;
                var f: vec4<u32>;
                if (W_FORMAT == 10u) {
                    let sc = byte_w(sb + 1u, run);
                    dv = (d.x * f32(sc & 15u)) * BYTE_SCALE;
                    off = vec4<f32>(-(d.y * f32(sc >> 4u)));
                    f = (q[r] >> vec4<u32>(2u * u)) & vec4<u32>(0x03030303u);
                } else {
                    let sc = ((byte_w(sb, run % 8u) >> (4u * (run / 8u))) & 15u)
                        | (((byte_w(sb, 8u + run % 4u) >> (2u * (run / 4u))) & 3u) << 4u);
                    let dl = d.x * f32(i32(sc) - 32);
                    dv = dl * BYTE_SCALE;
                    off = vec4<f32>(-4.0 * dl);
                    let bits = (hm[r] >> vec4<u32>(4u * h + u)) & vec4<u32>(0x01010101u);
                    f = ((q[r] >> vec4<u32>(2u * u)) & vec4<u32>(0x03030303u)) | (bits << vec4<u32>(2u));
                }
                for (var i = 0u; i < 4u; i++) { // unroll
                    if (W_FORMAT == 10u) {
                        o[8u * u + 4u * r + i] = fields4p(f[i], CRUMB_MASKS) * dv + off;
                    } else {
                        o[8u * u + 4u * r + i] = fields4p(f[i], THREE_MASKS) * dv + off;
                    }
                }
            }
        }
        return o;
    }
    return o;
}

@compute @workgroup_size(WG)
fn linear_rows4(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    rows4(li, wid, nwg, 0u);
}

// The kernel's body. sl: the invocation's index in its subgroup where x is loaded through
// subgroup broadcasts (SG > 0: the entry point linear_rows4_subgroup.wgsl adds), else 0.
fn rows4(li: u32, wid: vec3<u32>, nwg: vec3<u32>, sl: u32) {
    let g = linear_workgroup(wid, nwg);
    let m0 = (g / p.blocks) * MT;
    if (m0 >= p.m) {
        return;
    }
    // Output columns, or quads. Invocations past the last compute the last one's (a subgroup's
    // broadcasts need all of its invocations) and store nothing.
    let units = p.n >> (2u * ROPE);
    let c = ((g % p.blocks) * WG + li) * COLS;
    let live = c < units;
    let c0 = min(c, units - 1u);
    // Steps of SUB sub-blocks of 32 per row.
    let nb = p.k / (32u * SUB);
    let k4 = p.k / 4u;
    // First block of each W row; columns past the end repeat the last (computed, never stored).
    var rows: array<u32, NR>;
    for (var i = 0u; i < NR; i++) { // unroll
        if (ROPE == 1u) {
            rows[i] = quad_col(c0, i) * nb;
        } else {
            rows[i] = (min(c0 + i % COLS, p.n - 1u) + p.n * (i / COLS)) * nb;
        }
    }
    var xrow: array<u32, MT>;
    for (var t = 0u; t < MT; t++) { // unroll
        xrow[t] = min(m0 + t, p.m - 1u) * k4;
    }
    var acc: array<vec4<f32>, NR * MT>;
    var sum_sq: array<vec4<f32>, MT>;
    for (var b = 0u; b < nb; b++) {
        var xs: array<vec4<f32>, SV * MT>;
        for (var t = 0u; t < MT; t++) { // unroll
            // With SG > 0, the step's SV vec4s of x (and of the norm weight), SV / SG per
            // invocation: invocation sl of its subgroup loads vec4s sl, sl + SG, …, and each
            // reaches every invocation by a broadcast (CPU drivers load storage lane by lane, so
            // loading each vec4 in every lane costs SG times the loads).
            var xl: array<vec4<f32>, XL>;
            var gl: array<vec4<f32>, XL>;
            if (SG > 0u) {
                for (var i = 0u; i < XL; i++) { // unroll
                    xl[i] = x[xrow[t] + SV * b + SG * i + sl];
                    if (NORM == 1u) {
                        gl[i] = norm_g4v(SV * b + SG * i + sl);
                    }
                }
            }
            for (var j = 0u; j < SV; j++) { // unroll
                var v: vec4<f32>;
                var gn: vec4<f32>;
                if (SG > 0u) {
                    v = lane_vec4(xl[j / SGL], j % SGL);
                    gn = lane_vec4(gl[j / SGL], j % SGL);
                } else {
                    v = x[xrow[t] + SV * b + j];
                    gn = norm_g4v(SV * b + j);
                }
                if (NORM == 1u) {
                    sum_sq[t] = fma(v, v, sum_sq[t]);
                    v = v * gn;
                }
                xs[t * SV + j] = v;
            }
        }
        for (var i = 0u; i < NR; i++) { // unroll
            if (SUB == 4u) {
                let wv = block128(rows[i] + b);
                for (var t = 0u; t < MT; t++) { // unroll
                    var a = acc[i * MT + t];
                    for (var j = 0u; j < 32u; j++) { // unroll
                        a = fma(wv[j], xs[t * SV + j], a);
                    }
                    acc[i * MT + t] = a;
                }
            } else {
                let wv = block32(rows[i] + b);
                for (var t = 0u; t < MT; t++) { // unroll
                    var a = acc[i * MT + t];
                    for (var j = 0u; j < 8u; j++) { // unroll
                        a = fma(wv[j], xs[t * SV + j], a);
                    }
                    acc[i * MT + t] = a;
                }
            }
        }
    }
    for (var t = 0u; t < MT; t++) { // unroll
        if (live && m0 + t < p.m) {
            var s = 1.0;
            if (NORM == 1u) {
                let q = sum_sq[t];
                s = norm_scale((q.x + q.y) + (q.z + q.w));
            }
            if (ROPE == 1u) {
                var r: vec4<f32>;
                for (var i = 0u; i < 4u; i++) { // unroll
                    let a = acc[i * MT + t];
                    r[i] = (a.x + a.y) + (a.z + a.w);
                }
                finish_quad(m0 + t, c0, r * s);
            } else {
                for (var c = 0u; c < COLS; c++) { // unroll
                    if (c0 + c < p.n) {
                        let a = acc[c * MT + t];
                        let v = ((a.x + a.y) + (a.z + a.w)) * s;
                        if (SWIGLU == 1u) {
                            let u = acc[(c + COLS) * MT + t];
                            finish_swiglu(m0 + t, c0 + c, v, ((u.x + u.y) + (u.z + u.w)) * s);
                        } else {
                            finish(m0 + t, c0 + c, v);
                        }
                    }
                }
            }
        }
    }
}
