// dst = src, 16 bytes per invocation: the memory-bandwidth baseline the benchmarks compare
// kernels against. Prelude: WG.

struct Params {
    n: u32, // vec4s
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

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
