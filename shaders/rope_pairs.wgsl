// Which elements a RoPE frequency rotates, shared by rope.wgsl, rope_kv_write.wgsl and
// qk_norm_rope_kv.wgsl (which declare `p` with `neox` and `half`, rotary_dim / 2); `rotate` is in
// rope_rotate.wgsl.

// Offsets within a head of the two elements that frequency i rotates: (i, i + half) for NeoX,
// (2i, 2i + 1) interleaved.
fn pair_offsets(i: u32) -> vec2<u32> {
    if (p.neox == 1u) {
        return vec2<u32>(i, i + p.half);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// The other way: for element d of a head (d < 2 · half), the frequency i that rotates it, and 1
// when d is the second element of its pair (0 when the first).
fn pair_of(d: u32) -> vec2<u32> {
    if (p.neox == 1u) {
        let second = d >= p.half;
        return vec2<u32>(select(d, d - p.half, second), u32(second));
    }
    return vec2<u32>(d / 2u, d & 1u);
}
