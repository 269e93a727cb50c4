// Repetition, presence and frequency penalties applied in place to one row of logits, as
// llama.cpp computes them (and src/sample.rs's `Sampler::penalize`): a seen token's logit is
// divided by the repetition penalty when positive and multiplied when not, then
// count · frequency + presence is subtracted. `pens` lists each distinct token of the penalty
// window once with its count, so no two invocations touch one logit; the first `draw.n_pen` are
// live (the rest of the buffer is capacity). One invocation per entry.
// Prelude: WG, and the bindings of `penalize` (src/kernels/sample.rs).

@compute @workgroup_size(WG)
fn penalize(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_workgroup(wid, nwg) * WG + li;
    if (i >= draw.n_pen) {
        return;
    }
    let token = pens[2u * i];
    let count = pens[2u * i + 1u];
    if (token >= p.vocab || draw.row >= p.rows) {
        return;
    }
    let o = draw.row * p.vocab + token;
    var l = logits[o];
    if (l <= 0.0) {
        l = l * draw.repetition;
    } else {
        l = l / draw.repetition;
    }
    logits[o] = l - (f32(count) * draw.frequency + draw.presence);
}
