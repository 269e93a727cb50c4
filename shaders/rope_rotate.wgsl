// The rotation of a RoPE pair, shared by rope.wgsl, rope_kv_write.wgsl and qkv_rope.wgsl.

// (a, b) -> (a cos - b sin, a sin + b cos), with cs = (cos, sin).
fn rotate(v: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
}
