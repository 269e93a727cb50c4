// workgroup_reduce for the full profile: the same contract as the baseline version, but each
// subgroup sums in registers (subgroupAdd), and only one value per subgroup goes through
// workgroup memory. Subgroups are taken to be consecutive runs of local_invocation_index, as on
// every Vulkan, Metal and D3D12 implementation. Call from uniform control flow. The loops over
// the RED_N values unroll, as in the baseline version.

var<workgroup> red_scratch: array<f32, RED_N * WG>;
var<private> red_in: array<f32, RED_N>;

fn workgroup_reduce(li: u32) -> array<f32, RED_N> {
    // All invocations are active here, so this is the subgroup size.
    let sg_size = subgroupAdd(1u);
    let slot = li / sg_size;
    let slots = (WG + sg_size - 1u) / sg_size;
    let leader = subgroupBroadcastFirst(li) == li;
    for (var r = 0u; r < RED_N; r++) { // unroll
        let s = subgroupAdd(red_in[r]);
        if (leader) {
            red_scratch[r * WG + slot] = s;
        }
    }
    workgroupBarrier();
    var total: array<f32, RED_N>;
    for (var r = 0u; r < RED_N; r++) { // unroll
        var t = 0.0;
        for (var i = 0u; i < slots; i++) {
            t += red_scratch[r * WG + i];
        }
        total[r] = t;
    }
    workgroupBarrier();
    return total;
}
