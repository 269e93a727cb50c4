// Helpers every kernel gets after its prelude.

// Kernels are launched on a 2-D grid when one dimension would exceed the per-dimension limit of
// 65535 workgroups; they see one linear workgroup index. Workgroups past the end of the work find
// nothing to do but still take part in barriers.
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
}
