// out[i] = act(x[i]): GELU, the tanh approximation (GATE_ACT 1) or the exact one (GATE_ACT 2);
// act.wgsl says how each is evaluated.
// Each invocation handles ELEMS elements, WG apart so that neighbours touch neighbouring words.
// Prelude: WG, ELEMS, act.wgsl, and the bindings of `gelu` (src/kernels/activation.rs).

@compute @workgroup_size(WG)
fn gelu_elementwise(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = linear_workgroup(wid, nwg) * WG * ELEMS + li;
    for (var j = 0u; j < ELEMS; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            out[i] = gate_act(x[i]);
        }
    }
}
