// Shared by the linear-layer kernels (matvec, matmul, linear_rows): the epilogue. Prelude: the
// bindings (`p`, x, w, y, bias, y1, y2, norm_w and, for the vec4 kernel, ws; declared as
// `WORDS` and `VEC4` in src/kernels/linear.rs), W_FORMAT (ggml type number of W), QK (elements per block, 1 for floats),
// ACCUMULATE (1: y += result, the residual add), SWIGLU (1: W holds gate rows then up rows and
// the output is act(gate)·up, GATE_ACT choosing the activation as act.wgsl says), SPLIT (0..=2: outputs past y's columns go to y1, then y2), a
// `bias_at(n)` function (the bias, or 0), `put1`/`put2` (the extra outputs, or stubs), NORM (1: an RMSNorm prologue, y = rmsnorm(x) · Wᵀ) with the norm weight's accessors
// `norm_g(k)`, `norm_g4(k)` (elements k..k + 4) and `norm_g4v(i)` (its i-th vec4), or stubs;
// ROPE (1: the RoPE and KV-cache epilogue of a q, k, v projection) with qkv_rope.wgsl's
// `quad_col` and `finish_quad`, or stubs.
// The prologue: each kernel sums x² over its activation row while it walks k (one more
// multiply-add per loaded x), multiplies each x it loads by the weight, and multiplies each dot
// product by norm_scale(Σx²) before the epilogue: 1 / sqrt(Σx² / k + eps), rmsnorm.wgsl's
// formula, the same for all terms of a row, so applied once.

fn put0(i: u32, v: f32) {
    var r = v;
    if (ACCUMULATE == 1u) {
        r = y[i] + r;
    }
    y[i] = r;
}

// Writes output column n of activation row m to y, or with SPLIT to the output holding it.
fn store(m: u32, n: u32, v: f32) {
    if (SPLIT >= 1u && n >= p.y_cols) {
        let n1 = n - p.y_cols;
        if (SPLIT == 2u && n1 >= p.y1_cols) {
            let c2 = p.n - p.y_cols - p.y1_cols;
            put2(m * c2 + n1 - p.y1_cols, v);
        } else {
            put1(m * p.y1_cols + n1, v);
        }
        return;
    }
    put0(m * p.y_cols + p.y_col0 + n, v);
}

// Writes one output: bias, then the residual already in the output when accumulating.
fn finish(m: u32, n: u32, v: f32) {
    store(m, n, v + bias_at(n));
}

// SWIGLU: output column n from its gate (W row n) and up (W row p.n + n) dot products, with
// kernels::swiglu's formula: act.wgsl's gate_act(gate) · up (SiLU or GELU-tanh by GATE_ACT).
fn finish_swiglu(m: u32, n: u32, gate: f32, up: f32) {
    let g = gate + bias_at(n);
    let u = up + bias_at(p.n + n);
    store(m, n, gate_act(g) * u);
}

// NORM: the RMSNorm scale of an activation row from its sum of squares over k.
fn norm_scale(sum_sq: f32) -> f32 {
    return 1.0 / sqrt(sum_sq / f32(p.k) + p.eps);
}
