// x[i] = cap · tanh(x[i] / cap), in place: final-logit soft-capping (Gemma 2). The argument is
// clamped where tanh is ±1 to f32 precision, so WGSL's exp-based tanh cannot overflow.
// Each invocation handles ELEMS elements, WG apart. Prelude: WG, ELEMS, and the bindings of
// `softcap` (src/kernels/elementwise.rs).

@compute @workgroup_size(WG)
fn softcap(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = linear_workgroup(wid, nwg) * WG * ELEMS + li;
    for (var j = 0u; j < ELEMS; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            x[i] = p.cap * tanh(clamp(x[i] / p.cap, -15.0, 15.0));
        }
    }
}
