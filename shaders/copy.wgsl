// dst = src, 16 bytes per invocation: the memory-bandwidth baseline the benchmarks compare
// kernels against. Prelude: WG, and the bindings of `copy` (src/bench.rs).

@compute @workgroup_size(WG)
fn copy(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i < p.n) {
        dst[i] = src[i];
    }
}
