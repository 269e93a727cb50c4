// Element-wise addition for residual streams: `add` computes out = a + b, `add_in_place`
// computes out += b (the residual stream accumulating a block's output, with one read_write
// binding). Both entry points share `b` and `out`; only `add` uses `a`, so the in-place
// pipeline's layout leaves it out. Each invocation handles ELEMS elements, WG apart.
// Prelude: WG, ELEMS, and the bindings of `ADD` (src/kernels/elementwise.rs).

@compute @workgroup_size(WG)
fn add(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = linear_workgroup(wid, nwg) * WG * ELEMS + li;
    for (var j = 0u; j < ELEMS; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            out[i] = a[i] + b[i];
        }
    }
}

@compute @workgroup_size(WG)
fn add_in_place(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let base = linear_workgroup(wid, nwg) * WG * ELEMS + li;
    for (var j = 0u; j < ELEMS; j++) {
        let i = base + j * WG;
        if (i < p.n) {
            out[i] += b[i];
        }
    }
}
