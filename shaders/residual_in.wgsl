// RESIDUAL = 1: the input of a matvec (matvec.wgsl, one activation row per workgroup) is the
// residual stream with a post-norm (Gemma's sandwich norms) that no dispatch has added yet:
//   x'[m, k] = x[m, k] + res_h[m, k] · s · res_g[k],  s = 1 / sqrt(Σₖ res_h[m, k]² / p.k + p.res_eps)
// rmsnorm.wgsl's formula with ADD, in the same operations (the sum of squares over this
// workgroup's invocations). Each workgroup first sums its row's res_h², then loads x' through
// x_in; the workgroup with the row's first output columns also stores x' to res_out, the
// stream's other buffer, for the dispatches after this one (x cannot be updated in place: the
// other workgroups are still reading it). The matvec loads each element of its row once.
// Rows past the step (m ≥ p.m) are neither read nor stored.
// Prelude: WG, and the bindings x, res_h, res_g, res_out, p (k, m, res_eps) of the matvec.

var<private> res_scale: f32;
var<private> res_store: bool;

// Call from uniform control flow, before the first x_in, with red_in cleared.
fn input_prologue(li: u32, m: u32, first: bool) {
    if (m < p.m) {
        for (var c = li; c < p.k; c += WG) {
            let v = res_h[m * p.k + c];
            red_in[0] = fma(v, v, red_in[0]);
        }
    }
    let total = workgroup_reduce(li);
    red_in[0] = 0.0;
    res_scale = 1.0 / sqrt(total[0] / f32(p.k) + p.res_eps);
    res_store = first;
}

fn x_in(m: u32, k: u32) -> f32 {
    let i = m * p.k + k;
    let v = x[i] + res_h[i] * res_scale * res_g[k];
    if (res_store) {
        res_out[i] = v;
    }
    return v;
}
