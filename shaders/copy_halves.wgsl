// dst's 16-bit halves [d0, d0 + count) = src's halves [s0, s0 + count), other halves of the words
// touched kept: concat_rows's copy of f16 block scales (two per word) to an odd position, which
// a buffer copy (4-byte granular) cannot do. One invocation per word of dst. Prelude: WG, and
// the bindings of `copy_halves` (src/kernels/linear.rs).

fn src_half(h: u32) -> u32 {
    return (src[h / 2u] >> (16u * (h & 1u))) & 0xFFFFu;
}

@compute @workgroup_size(WG)
fn copy_halves(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.words) {
        return;
    }
    let word = p.d0 / 2u + i;
    var v = dst[word];
    for (var e = 0u; e < 2u; e++) {
        let h = 2u * word + e;
        if (h >= p.d0 && h < p.d0 + p.count) {
            let shift = 16u * e;
            v = (v & ~(0xFFFFu << shift)) | (src_half(p.s0 + h - p.d0) << shift);
        }
    }
    dst[word] = v;
}
