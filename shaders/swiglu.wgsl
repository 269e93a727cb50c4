// out[i] = act(gate[i]) * up[i]: the gated activation of Llama-family (SiLU, GATE_ACT = 0) and
// Gemma (GELU-tanh, GATE_ACT = 1) MLPs, with act.wgsl's functions.
// Prelude: WG, GATE_ACT, act.wgsl, and the bindings of `swiglu` (src/kernels/activation.rs).

@compute @workgroup_size(WG)
fn swiglu(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i < p.n) {
        out[i] = gate_act(gate[i]) * up[i];
    }
}
