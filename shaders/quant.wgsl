// Dequantization of GGML block formats from the repacked GPU layout (src/quant/mod.rs): each
// `decode8_*` returns 8 consecutive elements, group `g` of block `b`, exactly as ggml's
// dequantize_row_* computes them (every product below is exact in f32 and the only rounding is
// where ggml rounds too). `sb` is the word where the scales begin. Kernels read the weights
// through `w: array<u32>`; the prelude's W_FORMAT (a ggml type number) picks the decoder.

// Two 16-bit floats of a word: f16 (unpack2x16float needs no shader-f16), or bf16.
fn unpack_half2(v: u32) -> vec2<f32> {
    if (W_FORMAT == 30u) {
        return vec2<f32>(bitcast<f32>(v << 16u), bitcast<f32>(v & 0xFFFF0000u));
    }
    return unpack2x16float(v);
}

// Element i of a float-format tensor (f32, f16, bf16) in the GPU layout.
fn float_at(i: u32) -> f32 {
    if (W_FORMAT == 0u) {
        return bitcast<f32>(w[i]);
    }
    return unpack_half2(w[i / 2u])[i & 1u];
}

// Four signed bytes of a word.
fn i8x4(v: u32) -> vec4<f32> {
    let s = vec4<i32>(bitcast<i32>(v << 24u), bitcast<i32>(v << 16u), bitcast<i32>(v << 8u), bitcast<i32>(v));
    return vec4<f32>(s >> vec4<u32>(24u));
}

// Four 4-bit fields of a word, at bit offsets shift, shift+8, shift+16, shift+24.
fn nib4(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u));
}

// The f16 scale of block b when two share a word.
fn half_scale(sb: u32, b: u32) -> f32 {
    return unpack2x16float(w[sb + b / 2u])[b & 1u];
}

fn byte_at(base: u32, i: u32) -> u32 {
    return (w[base + i / 4u] >> (8u * (i % 4u))) & 0xFFu;
}

fn pack8(a: vec4<f32>, c: vec4<f32>) -> array<f32, 8> {
    return array<f32, 8>(a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w);
}

// Q8_0: 32 × i8, value = q · d.
fn decode8_q8_0(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let d = half_scale(sb, b);
    let q = b * 8u + 2u * g;
    return pack8(i8x4(w[q]) * d, i8x4(w[q + 1u]) * d);
}

// Q4_0: element j < 16 is the low nibble of byte j, element j + 16 its high nibble;
// value = (q − 8) · d.
fn decode8_q4_0(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let d = half_scale(sb, b);
    let q = b * 4u + 2u * (g & 1u);
    let shift = 4u * (g >> 1u);
    return pack8((nib4(w[q], shift) - 8.0) * d, (nib4(w[q + 1u], shift) - 8.0) * d);
}

// Q4_1: as Q4_0 without the offset; value = q · d + m.
fn decode8_q4_1(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let dm = unpack2x16float(w[sb + b]);
    let q = b * 4u + 2u * (g & 1u);
    let shift = 4u * (g >> 1u);
    return pack8(fma(nib4(w[q], shift), vec4<f32>(dm.x), vec4<f32>(dm.y)),
                 fma(nib4(w[q + 1u], shift), vec4<f32>(dm.x), vec4<f32>(dm.y)));
}

// Q5_0: Q4_0's nibbles plus a fifth bit per element from qh (bit e for element e);
// value = (q − 16) · d.
fn decode8_q5_0(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let d = half_scale(sb, b);
    let q = b * 5u + 2u * (g & 1u);
    let shift = 4u * (g >> 1u);
    let qh = w[b * 5u + 4u] >> (8u * g);
    let h0 = vec4<f32>((vec4<u32>(qh) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) * 16.0;
    let h1 = vec4<f32>((vec4<u32>(qh) >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u)) * 16.0;
    return pack8((nib4(w[q], shift) + h0 - 16.0) * d, (nib4(w[q + 1u], shift) + h1 - 16.0) * d);
}

// Q4_K / Q5_K: ggml's get_scale_min_k4, the 6-bit scale and min of chunk j (0..8) from the
// 12 bytes of scales starting at word `base`.
fn scale_min_k4(base: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(base, j) & 63u), f32(byte_at(base, j + 4u) & 63u));
    }
    let sc = (byte_at(base, j + 4u) & 15u) | ((byte_at(base, j - 4u) >> 6u) << 4u);
    let mn = (byte_at(base, j + 4u) >> 4u) | ((byte_at(base, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// Q4_K: 8 chunks of 32 with 6-bit scales and mins (packed in 12 bytes); chunk pair c holds 64
// elements: low nibbles of qs[32c .. 32c + 32] (scale 2c), then their high nibbles (scale 2c + 1);
// value = (d · sc) · q − dmin · m.
fn decode8_q4_k(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 4u * b;
    let dm = unpack2x16float(w[s]);
    let c = g / 8u;
    let sub = g % 8u;
    let sm = scale_min_k4(s + 1u, 2u * c + sub / 4u);
    let d1 = vec4<f32>(dm.x * sm.x);
    let m1 = vec4<f32>(dm.y * sm.y);
    let q = b * 32u + 8u * c + 2u * (sub % 4u);
    let shift = 4u * (sub / 4u);
    return pack8(fma(d1, nib4(w[q], shift), -m1), fma(d1, nib4(w[q + 1u], shift), -m1));
}

// Q5_K: Q4_K's layout and scales (quants: qs[128], then qh[32]) plus a fifth bit per element:
// element l of chunk j (0..8) has it in bit j of qh[l]; value = (d · sc) · q − dmin · m.
fn decode8_q5_k(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 4u * b;
    let dm = unpack2x16float(w[s]);
    let c = g / 8u;
    let sub = g % 8u;
    let j = 2u * c + sub / 4u;
    let sm = scale_min_k4(s + 1u, j);
    let d1 = vec4<f32>(dm.x * sm.x);
    let m1 = vec4<f32>(dm.y * sm.y);
    let q = b * 40u + 8u * c + 2u * (sub % 4u);
    let qh = b * 40u + 32u + 2u * (sub % 4u);
    let shift = 4u * (sub / 4u);
    let h0 = vec4<f32>((vec4<u32>(w[qh]) >> vec4<u32>(j, j + 8u, j + 16u, j + 24u)) & vec4<u32>(1u)) * 16.0;
    let h1 = vec4<f32>((vec4<u32>(w[qh + 1u]) >> vec4<u32>(j, j + 8u, j + 16u, j + 24u)) & vec4<u32>(1u)) * 16.0;
    return pack8(fma(d1, nib4(w[q], shift) + h0, -m1), fma(d1, nib4(w[q + 1u], shift) + h1, -m1));
}

// Four 2-bit fields of a word, at bit offsets shift, shift+8, shift+16, shift+24.
fn crumb4(v: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(v) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(3u));
}

// Q2_K / Q3_K: two halves of 128 elements, each from 32 bytes of qs; in half h, element
// 32j + 16s + l (j < 4, s < 2, l < 16) is bits 2j of qs[32h + 16s + l], and each run of 16
// (element e) has scale e / 16. Group g covers bytes 8(g % 2) .. + 8 of run s = (g / 2) % 2 of
// plane j = (g / 4) % 4 of half h = g / 16: this is the word offset of those bytes within qs,
// and the shift.
fn k_low_bits(g: u32) -> vec2<u32> {
    return vec2<u32>(8u * (g / 16u) + 4u * ((g / 2u) % 2u) + 2u * (g % 2u), 2u * ((g / 4u) % 4u));
}

// Q2_K: value = (d · (sc & 15)) · q − dmin · (sc >> 4), sc the byte of the element's run of 16.
fn decode8_q2_k(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 5u * b;
    let dm = unpack2x16float(w[s]);
    let sc = byte_at(s + 1u, g / 2u);
    let dl = vec4<f32>(dm.x * f32(sc & 15u));
    let ml = vec4<f32>(dm.y * f32(sc >> 4u));
    let at = k_low_bits(g);
    let q = b * 16u + at.x;
    return pack8(fma(dl, crumb4(w[q], at.y), -ml), fma(dl, crumb4(w[q + 1u], at.y), -ml));
}

// Q3_K: Q2_K's 2-bit quants (after hmask[32] in the quant words) minus 4 where the element's
// bit 4h + j of hmask[16s + l] is clear; 6-bit scales, scale i's low 4 bits in byte i % 8
// (nibble i / 8), its high 2 in byte 8 + i % 4 (bits 2(i / 4)); value = (d · (sc − 32)) · q.
fn decode8_q3_k(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 4u * b;
    let d = unpack2x16float(w[s + 3u]).x;
    let i = g / 2u;
    let sc = ((byte_at(s, i % 8u) >> (4u * (i / 8u))) & 15u) | (((byte_at(s, 8u + i % 4u) >> (2u * (i / 4u))) & 3u) << 4u);
    let dl = vec4<f32>(d * f32(i32(sc) - 32));
    let at = k_low_bits(g);
    let q = b * 24u + 8u + at.x;
    let hm = b * 24u + 4u * ((g / 2u) % 2u) + 2u * (g % 2u);
    let bit = 4u * (g / 16u) + (g / 4u) % 4u;
    let h0 = vec4<f32>((vec4<u32>(w[hm]) >> vec4<u32>(bit, bit + 8u, bit + 16u, bit + 24u)) & vec4<u32>(1u)) * 4.0;
    let h1 = vec4<f32>((vec4<u32>(w[hm + 1u]) >> vec4<u32>(bit, bit + 8u, bit + 16u, bit + 24u)) & vec4<u32>(1u)) * 4.0;
    return pack8(dl * (crumb4(w[q], at.y) + h0 - 4.0), dl * (crumb4(w[q + 1u], at.y) + h1 - 4.0));
}

// Q6_K: two halves of 128; in half n, element 32t + l (t < 4, l < 32) has its low 4 bits in
// ql[64n + l + 32(t & 1)] (nibble t >> 1), its high 2 bits in qh[32n + l] (bits 2t), and the
// i8 scale sc[8n + l / 16 + 2t]; value = (d · sc) · (q − 32).
fn decode8_q6_k(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 5u * b;
    let d = unpack2x16float(w[s + 4u]).x;
    let n = g / 16u;
    let t = (g % 16u) / 4u;
    let l0 = 8u * (g % 4u);
    let si = 8u * n + l0 / 16u + 2u * t;
    let sc = f32(bitcast<i32>(byte_at(s, si) << 24u) >> 24u);
    let ql = b * 48u + (64u * n + l0 + 32u * (t & 1u)) / 4u;
    let qh = b * 48u + 32u + (32u * n + l0) / 4u;
    let lo_shift = 4u * (t >> 1u);
    let hi_shift = 2u * t;
    let ds = vec4<f32>(d * sc);
    var out: array<f32, 8>;
    for (var i = 0u; i < 2u; i++) { // unroll
        let lo = (vec4<u32>(w[ql + i]) >> vec4<u32>(lo_shift, lo_shift + 8u, lo_shift + 16u, lo_shift + 24u)) & vec4<u32>(15u);
        let hi = (vec4<u32>(w[qh + i]) >> vec4<u32>(hi_shift, hi_shift + 8u, hi_shift + 16u, hi_shift + 24u)) & vec4<u32>(3u);
        let v = ds * (vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0);
        out[4u * i] = v.x;
        out[4u * i + 1u] = v.y;
        out[4u * i + 2u] = v.z;
        out[4u * i + 3u] = v.w;
    }
    return out;
}

// Q5_1: Q5_0's quants (qs[16], then qh) with Q4_1's scale word; value = q · d + m.
fn decode8_q5_1(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let dm = unpack2x16float(w[sb + b]);
    let q = b * 5u + 2u * (g & 1u);
    let shift = 4u * (g >> 1u);
    let qh = w[b * 5u + 4u] >> (8u * g);
    let h0 = vec4<f32>((vec4<u32>(qh) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) * 16.0;
    let h1 = vec4<f32>((vec4<u32>(qh) >> vec4<u32>(4u, 5u, 6u, 7u)) & vec4<u32>(1u)) * 16.0;
    return pack8(fma(nib4(w[q], shift) + h0, vec4<f32>(dm.x), vec4<f32>(dm.y)),
                 fma(nib4(w[q + 1u], shift) + h1, vec4<f32>(dm.x), vec4<f32>(dm.y)));
}

// kvalues_iq4nl, the 16 levels of IQ4_NL and IQ4_XS, as i8 bytes (4 per word, little-endian):
// -127, -104, -83, -65 | -49, -35, -22, -10 | 1, 13, 25, 38 | 53, 69, 89, 113.
// A vector, not an array, so that indexing it with a runtime value needs no local copy.
const IQ4NL_LEVELS = vec4<u32>(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);

// The levels of four 4-bit fields of a word, at bit offsets shift, shift+8, shift+16, shift+24.
fn iq4nl4(v: u32, shift: u32) -> vec4<f32> {
    let q = (vec4<u32>(v) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(15u);
    let lv = IQ4NL_LEVELS;
    let words = vec4<u32>(lv[q.x >> 2u], lv[q.y >> 2u], lv[q.z >> 2u], lv[q.w >> 2u]);
    let bytes = bitcast<vec4<i32>>(words << (vec4<u32>(24u) - 8u * (q & vec4<u32>(3u))));
    return vec4<f32>(bytes >> vec4<u32>(24u));
}

// IQ4_NL: Q4_0's layout; value = d · kvalues[q].
fn decode8_iq4_nl(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let d = half_scale(sb, b);
    let q = b * 4u + 2u * (g & 1u);
    let shift = 4u * (g >> 1u);
    return pack8(d * iq4nl4(w[q], shift), d * iq4nl4(w[q + 1u], shift));
}

// IQ4_XS: 8 sub-blocks of 32, sub-block i from qs[16i .. 16i + 16] (low nibbles, then high) with
// the 6-bit scale ls: bits 4i of scales_l (scale word 1), 2 more at bits 2i of scales_h (the
// high half of scale word 0, d the low half); value = (d · (ls − 32)) · kvalues[q].
fn decode8_iq4_xs(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    let s = sb + 2u * b;
    let dh = w[s];
    let i = g / 4u;
    let t = g % 4u;
    let ls = ((w[s + 1u] >> (4u * i)) & 15u) | (((dh >> (16u + 2u * i)) & 3u) << 4u);
    let dl = unpack2x16float(dh).x * f32(i32(ls) - 32);
    let q = b * 32u + 4u * i + 2u * (t & 1u);
    let shift = 4u * (t >> 1u);
    return pack8(dl * iq4nl4(w[q], shift), dl * iq4nl4(w[q + 1u], shift));
}

fn decode8(b: u32, g: u32, sb: u32) -> array<f32, 8> {
    switch W_FORMAT {
        case 2u: { return decode8_q4_0(b, g, sb); }
        case 3u: { return decode8_q4_1(b, g, sb); }
        case 6u: { return decode8_q5_0(b, g, sb); }
        case 7u: { return decode8_q5_1(b, g, sb); }
        case 8u: { return decode8_q8_0(b, g, sb); }
        case 10u: { return decode8_q2_k(b, g, sb); }
        case 11u: { return decode8_q3_k(b, g, sb); }
        case 12u: { return decode8_q4_k(b, g, sb); }
        case 13u: { return decode8_q5_k(b, g, sb); }
        case 14u: { return decode8_q6_k(b, g, sb); }
        case 20u: { return decode8_iq4_nl(b, g, sb); }
        case 23u: { return decode8_iq4_xs(b, g, sb); }
        default: { return array<f32, 8>(); }
    }
}
