// A request's logit bias (OpenAI's `logit_bias`) added in place to one row of logits: `biases`
// lists (token, bias as f32 bits) pairs, each token once, the first `draw.n_bias` live (the rest
// of the buffer is capacity). Recorded after the penalties, before a grammar's mask and the pick.
// One invocation per entry.
// Prelude: WG, and the bindings of `bias_logits` (src/kernels/sample.rs).

@compute @workgroup_size(WG)
fn bias_logits(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= draw.n_bias) {
        return;
    }
    let token = biases[2u * i];
    if (token >= p.vocab || draw.row >= p.rows) {
        return;
    }
    let o = draw.row * p.vocab + token;
    logits[o] = logits[o] + bitcast<f32>(biases[2u * i + 1u]);
}
