// Element-wise addition for residual streams: `add` computes out = a + b, `add_in_place`
// computes out += b (the residual stream accumulating a block's output, with one read_write
// binding). Both entry points share `b` (binding 1) and `out` (binding 2); only `add` uses `a`
// (binding 3), so the in-place pipeline's layout is bindings 0-2. (Output before an input breaks
// the usual order, but lets both variants live in one file without two variables sharing a
// binding.) Each invocation handles ELEMS elements, WG apart. Prelude: WG, ELEMS.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;

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
