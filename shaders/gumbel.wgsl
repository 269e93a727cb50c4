// The Gumbel-max draw for topk.wgsl's argmax: element e of a row of logits x gets the key of
// x[e] · inv_temp + g(e), g(e) = −ln(−ln(u)) with u uniform in (0, 1) from a counter-based hash
// of (the draw's 64-bit key, the row, e). The argmax of those keys is a draw from
// softmax(x · inv_temp): plain temperature sampling without reading the row back or sorting it.
// A new key per step (the host's seeded generator) makes a new draw. src/sample.rs's
// `gumbel_uniform` computes the same u.

// lowbias32 (Chris Wellons' hash prospector): a 32-bit mixer with low bias.
fn mix32(h: u32) -> u32 {
    var x = h;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn sample_key(row: u32, e: u32, bits: u32) -> u32 {
    let h = mix32(e ^ mix32(row ^ mix32(draw.key_hi ^ mix32(draw.key_lo))));
    // 24 random bits, centred in their interval: u in [2^-25, 1 - 2^-25].
    let u = (f32(h >> 8u) + 0.5) * (1.0 / 16777216.0);
    let g = -log(-log(u));
    let x = bitcast<f32>(canonical_bits(bits));
    return order_key(bitcast<u32>(x * draw.inv_temp + g));
}
