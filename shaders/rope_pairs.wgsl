// Which elements a RoPE frequency rotates, shared by rope.wgsl and rope_kv_write.wgsl (which
// declare `p` with `neox` and `half`, rotary_dim / 2); `rotate` is in rope_rotate.wgsl.

// Offsets within a head of the two elements that frequency i rotates: (i, i + half) for NeoX,
// (2i, 2i + 1) interleaved.
fn pair_offsets(i: u32) -> vec2<u32> {
    if (p.neox == 1u) {
        return vec2<u32>(i, i + p.half);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}
