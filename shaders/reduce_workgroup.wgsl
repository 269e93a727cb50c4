// workgroup_reduce for the baseline profile: each invocation puts RED_N partial sums in red_in,
// and every invocation gets the RED_N workgroup totals back, summed by a tree in workgroup memory.
// Needs WG (a power of two) and RED_N. Call from uniform control flow. The loops over the RED_N
// values unroll, so red_in and the totals are indexed by constants only (kept in registers).

var<workgroup> red_scratch: array<f32, RED_N * WG>;
var<private> red_in: array<f32, RED_N>;

fn workgroup_reduce(li: u32) -> array<f32, RED_N> {
    for (var r = 0u; r < RED_N; r++) { // unroll
        red_scratch[r * WG + li] = red_in[r];
    }
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (li < stride) {
            for (var r = 0u; r < RED_N; r++) { // unroll
                red_scratch[r * WG + li] += red_scratch[r * WG + li + stride];
            }
        }
        workgroupBarrier();
    }
    var total: array<f32, RED_N>;
    for (var r = 0u; r < RED_N; r++) { // unroll
        total[r] = red_scratch[r * WG];
    }
    // The scratch may be reused by the caller's next reduction.
    workgroupBarrier();
    return total;
}
