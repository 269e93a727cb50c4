// One word of a KV-cache row, shared by kv_write.wgsl and rope_kv_write.wgsl: an f16 pair packed
// with pack2x16float (KV_F16 = 1; values beyond f16's range saturated to ±65504 first, since WGSL
// leaves their conversion undefined), or the f32 bits of src[0] (KV_F16 = 0).

const F16_MAX: f32 = 65504.0;

fn to_word(src: array<f32, 2>) -> u32 {
    if (KV_F16 == 1u) {
        return pack2x16float(clamp(vec2<f32>(src[0], src[1]), vec2<f32>(-F16_MAX), vec2<f32>(F16_MAX)));
    }
    return bitcast<u32>(src[0]);
}
