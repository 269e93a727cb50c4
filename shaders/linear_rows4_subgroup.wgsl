// linear_rows4.wgsl's entry point where every subgroup has SG invocations (SG > 0): it passes
// each invocation's index in its subgroup, and lane_vec4 broadcasts a value of one invocation to
// its whole subgroup, for the loads of x. A broadcast takes a constant invocation index: every
// call passes one (SG, SGL and the unrolled loops' indices are constants), so a compiler keeps
// only its case.

@compute @workgroup_size(WG)
fn linear_rows4_subgroup(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) sl: u32,
) {
    rows4(li, wid, nwg, sl);
}

// v of invocation `lane` of the subgroup.
fn lane_vec4(v: vec4<f32>, lane: u32) -> vec4<f32> {
    switch lane {
        case 0u: { return subgroupBroadcast(v, 0u); }
        case 1u: { return subgroupBroadcast(v, 1u); }
        case 2u: { return subgroupBroadcast(v, 2u); }
        case 3u: { return subgroupBroadcast(v, 3u); }
        case 4u: { return subgroupBroadcast(v, 4u); }
        case 5u: { return subgroupBroadcast(v, 5u); }
        case 6u: { return subgroupBroadcast(v, 6u); }
        case 7u: { return subgroupBroadcast(v, 7u); }
        case 8u: { return subgroupBroadcast(v, 8u); }
        case 9u: { return subgroupBroadcast(v, 9u); }
        case 10u: { return subgroupBroadcast(v, 10u); }
        case 11u: { return subgroupBroadcast(v, 11u); }
        case 12u: { return subgroupBroadcast(v, 12u); }
        case 13u: { return subgroupBroadcast(v, 13u); }
        case 14u: { return subgroupBroadcast(v, 14u); }
        case 15u: { return subgroupBroadcast(v, 15u); }
        case 16u: { return subgroupBroadcast(v, 16u); }
        case 17u: { return subgroupBroadcast(v, 17u); }
        case 18u: { return subgroupBroadcast(v, 18u); }
        case 19u: { return subgroupBroadcast(v, 19u); }
        case 20u: { return subgroupBroadcast(v, 20u); }
        case 21u: { return subgroupBroadcast(v, 21u); }
        case 22u: { return subgroupBroadcast(v, 22u); }
        case 23u: { return subgroupBroadcast(v, 23u); }
        case 24u: { return subgroupBroadcast(v, 24u); }
        case 25u: { return subgroupBroadcast(v, 25u); }
        case 26u: { return subgroupBroadcast(v, 26u); }
        case 27u: { return subgroupBroadcast(v, 27u); }
        case 28u: { return subgroupBroadcast(v, 28u); }
        case 29u: { return subgroupBroadcast(v, 29u); }
        case 30u: { return subgroupBroadcast(v, 30u); }
        case 31u: { return subgroupBroadcast(v, 31u); }
        default: { return v; }
    }
}
