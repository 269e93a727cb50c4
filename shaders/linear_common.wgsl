// Shared by the linear-layer kernels (matvec, matmul): parameters, bindings and the epilogue.
// Prelude: W_FORMAT (ggml type number of W), QK (elements per block, 1 for floats),
// ACCUMULATE (1: y += result, the residual add), and a `bias_at(n)` function (the bias binding,
// or 0).

struct Params {
    n: u32,          // outputs (rows of W)
    k: u32,          // inputs (columns of W)
    m: u32,          // activation rows
    w_stride: u32,   // float formats: elements between the starts of rows of W as stored
    blocks: u32,     // matvec: ceil(n / ROWS); matmul: ceil(n / 64)
    scale_base: u32, // block formats: the word where the scales begin
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

// Writes one output: bias, then the residual already in y when accumulating.
fn finish(m: u32, n: u32, v: f32) {
    let i = m * p.n + n;
    var r = v + bias_at(n);
    if (ACCUMULATE == 1u) {
        r = y[i] + r;
    }
    y[i] = r;
}
