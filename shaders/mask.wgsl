// A grammar's token mask applied in place to one row of logits: a token whose bit is clear in
// `allowed` (one bit per token id, 32 per word, low bit first) gets the logit MASKED, far below
// any real logit and finite (temperature and the Gumbel noise keep it finite), so argmax, top-k,
// the Gumbel draw and the softmax statistics all give it no weight. Recorded after the
// penalties, before the pick. One invocation per token of the row.
// Prelude: WG, and the bindings of `mask_logits` (src/kernels/sample.rs).

const MASKED: f32 = -1.0e30;

@compute @workgroup_size(WG)
fn mask_logits(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= p.vocab || draw.row >= p.rows) {
        return;
    }
    if (((allowed[i >> 5u] >> (i & 31u)) & 1u) == 0u) {
        logits[draw.row * p.vocab + i] = MASKED;
    }
}
