// The order of logits shared by topk.wgsl, gumbel.wgsl and nucleus.wgsl: order-preserving u32
// keys made from a value's bits with integer operations only (exact: no flushing of subnormals,
// no float comparison quirks). NaN counts as −inf; −0 equals +0.

const NEG_INF: u32 = 0xff800000u;

fn canonical_bits(bits: u32) -> u32 {
    // NaN (any sign or payload) becomes −inf.
    return select(bits, NEG_INF, (bits & 0x7fffffffu) > 0x7f800000u);
}

// Larger key = larger value. −0 is mapped to +0 first, so the two tie.
fn order_key(bits: u32) -> u32 {
    var b = canonical_bits(bits);
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
