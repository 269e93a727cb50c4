//! Row and head kernels of the CPU backend.

/// Dequantizes one block: its bytes into its values.
pub type BlockFn = fn(&[u8], &mut [f32]);

/// How a weight row is stored.
#[derive(Clone, Copy, Debug)]
pub enum Weights {
    F32,
    F16,
    BF16,
    /// GGML blocks of `size` values (at most [`CHUNK`]) in `bytes` bytes each (decode's
    /// integer dot products read them through [`crate::idot`] instead).
    Blocks {
        size: usize,
        bytes: usize,
        dequant: BlockFn,
    },
}

/// Starts every 64-byte line of `bytes` (a later weight row) on its way into the cache before
/// the row's dot product needs it. Decode streams every weight from memory once per token. In
/// wasm, which has no prefetch instruction, one byte of each line is read: the loads are
/// independent, so the core keeps them all in flight while it works on the current row (in
/// Chromium a 70 MB Q4_0 matrix ran at half its in-cache speed without this and at its in-cache
/// speed with it). x86_64 prefetches (plain loads there made SmolLM2's decode 0.83× as fast;
/// prefetches, 1.05×); other targets do nothing.
#[inline]
pub fn touch(bytes: &[u8]) {
    #[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
    for b in bytes.iter().step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of x86_64; a prefetch never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>((b as *const u8).cast());
        }
        #[cfg(target_arch = "wasm32")]
        // SAFETY: a reference to a byte of the slice. Volatile, so that the load is made.
        unsafe {
            core::ptr::read_volatile(b);
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "wasm32")))]
    let _ = bytes;
}

/// Values converted at a time from plain f16 / bf16 rows, and the largest block.
pub const CHUNK: usize = 256;

/// `Σ a[i]·b[i]` over the shorter length, in eight lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Weight rows per tile of [`gemm_tile`].
pub const TILE_ROWS: usize = 4;

/// Row `row` of a weight matrix (`k` values in the format `w`) as f32 into `out` (`k` values).
pub fn dequant_row(w: Weights, row: &[u8], out: &mut [f32]) {
    match w {
        Weights::F32 => out.copy_from_slice(bytemuck::cast_slice(row)),
        Weights::F16 | Weights::BF16 => {
            widen(bytemuck::cast_slice(row), matches!(w, Weights::BF16), out)
        }
        Weights::Blocks {
            size,
            bytes,
            dequant,
            ..
        } => {
            for (block, vals) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(size)) {
                dequant(block, vals);
            }
        }
    }
}

/// Four rows of W (`w`: [4, k] f32) against every row of `x` ([m, k]): `put(i, r, w_r · x_i)`.
/// Several rows of x at a time against the four of w, their sums carried across k in vector
/// registers and each reduced once; x is read once per four weight rows and every dequantized
/// weight is reused by all m rows. What a product of several rows (prefill, an embedder's
/// batch) runs instead of one dot product per weight row and row of x. Written with intrinsics:
/// the compiler does not keep the accumulators in registers on its own (measured 2.5-3x slower
/// than the intrinsics at 1536×384×64).
///
/// On x86-64 CPUs with AVX2 and FMA (detected at run time): three rows of x at a time, twelve
/// eight-lane fused multiply-add sums (a 4×3 micro-kernel, seven vector loads per twelve
/// products, all sixteen ymm registers), which made the CPU backend's prefill of 128 tokens
/// 1.6–1.9× as fast as with the SSE2 4×2 kernel (SmolLM2 135M Q4_1 and Gemma 3 270M Q4_K_M,
/// one and two threads); the same 4×2 tile in AVX2 was 2–11% slower than 4×3. Elsewhere two
/// rows of x at a time, eight four-lane sums (a 4×2 micro-kernel, six vector loads per eight
/// products) with SSE2 (x86-64 without AVX2) or SIMD128 (wasm), and plain eight-lane dot
/// products on other targets.
pub fn gemm_tile(w: &[f32], x: &[f32], k: usize, put: &mut impl FnMut(usize, usize, f32)) {
    assert!(
        k > 0 && w.len() >= TILE_ROWS * k,
        "a tile is {TILE_ROWS} rows of {k}"
    );
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { x86::gemm_tile(&w[..TILE_ROWS * k], x, k, put) };
        return;
    }
    gemm_tile_4x2(w, x, k, put);
}

/// [`gemm_tile`] two rows of x at a time ([`tile_4x2`]), then the one left by dot products:
/// every target but x86-64 CPUs with AVX2 and FMA.
#[inline(always)]
fn gemm_tile_4x2(w: &[f32], x: &[f32], k: usize, put: &mut impl FnMut(usize, usize, f32)) {
    let m = x.len() / k;
    let mut i = 0;
    while i + 2 <= m {
        let sums = tile_4x2(&w[..TILE_ROWS * k], &x[i * k..(i + 2) * k], k);
        for (c, row_sums) in sums.iter().enumerate() {
            for (r, &v) in row_sums.iter().enumerate() {
                put(i + c, r, v);
            }
        }
        i += 2;
    }
    if i < m {
        let xr = &x[i * k..(i + 1) * k];
        for (r, row) in w.chunks_exact(k).take(TILE_ROWS).enumerate() {
            put(i, r, dot(row, xr));
        }
    }
}

/// `[[w_r · x_0], [w_r · x_1]]` for the four rows of `w` ([4, k]) and the two of `x` ([2, k]).
#[inline(always)]
fn tile_4x2(w: &[f32], x: &[f32], k: usize) -> [[f32; TILE_ROWS]; 2] {
    debug_assert!(w.len() == TILE_ROWS * k && x.len() == 2 * k);
    let body = k - k % 4;
    let mut out = tile_4x2_body(w, x, k, body);
    add_tail(&mut out, w, x, k, body);
    out
}

/// Adds to `out[c][r]` the products of row r of `w` ([4, k]) and row c of `x` ([C, k]) past
/// their first `body` values (the fewer than four that a tile's vectors leave).
#[inline(always)]
fn add_tail<const C: usize>(
    out: &mut [[f32; TILE_ROWS]; C],
    w: &[f32],
    x: &[f32],
    k: usize,
    body: usize,
) {
    if body < k {
        for (c, sums) in out.iter_mut().enumerate() {
            for (r, sum) in sums.iter_mut().enumerate() {
                let (wr, xr) = (&w[r * k + body..(r + 1) * k], &x[c * k + body..(c + 1) * k]);
                *sum += wr.iter().zip(xr).map(|(p, q)| p * q).sum::<f32>();
            }
        }
    }
}

/// The sums of [`tile_4x2`] over the first `body` (a multiple of 4) values of each row.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tile_4x2_body(w: &[f32], x: &[f32], k: usize, body: usize) -> [[f32; TILE_ROWS]; 2] {
    use std::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_mul_ps, _mm_setzero_ps, _mm_storeu_ps};
    assert!(w.len() >= TILE_ROWS * k && x.len() >= 2 * k && body <= k);
    // SAFETY: SSE2 is part of x86-64; every load reads 4 values at offset r·k + c or
    // (row)·k + c with c + 4 ≤ body ≤ k, inside `w` (4 rows of k) and `x` (2 rows of k).
    unsafe {
        let (wp, x0, x1) = (w.as_ptr(), x.as_ptr(), x.as_ptr().add(k));
        let mut a = [_mm_setzero_ps(); 8];
        let mut c = 0;
        while c < body {
            let xa = _mm_loadu_ps(x0.add(c));
            let xb = _mm_loadu_ps(x1.add(c));
            for r in 0..TILE_ROWS {
                let wv = _mm_loadu_ps(wp.add(r * k + c));
                a[r] = _mm_add_ps(a[r], _mm_mul_ps(wv, xa));
                a[TILE_ROWS + r] = _mm_add_ps(a[TILE_ROWS + r], _mm_mul_ps(wv, xb));
            }
            c += 4;
        }
        let mut out = [[0f32; TILE_ROWS]; 2];
        for (j, v) in a.iter().enumerate() {
            let mut o = [0f32; 4];
            _mm_storeu_ps(o.as_mut_ptr(), *v);
            out[j / TILE_ROWS][j % TILE_ROWS] = (o[0] + o[2]) + (o[1] + o[3]);
        }
        out
    }
}

/// The sums of [`tile_4x2`] over the first `body` (a multiple of 4) values of each row. With
/// the `relaxed-simd` feature, compiled with relaxed SIMD ([`madd`]): a function of its own
/// then, since a function with a target feature of its own is not inlined into callers without
/// it.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[cfg_attr(
    feature = "relaxed-simd",
    target_feature(enable = "relaxed-simd"),
    inline
)]
#[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
fn tile_4x2_body(w: &[f32], x: &[f32], k: usize, body: usize) -> [[f32; TILE_ROWS]; 2] {
    use core::arch::wasm32::{f32x4_extract_lane, f32x4_splat, v128, v128_load};
    assert!(w.len() >= TILE_ROWS * k && x.len() >= 2 * k && body <= k);
    // SAFETY: SIMD128 is enabled for this build; every load reads 4 values at offset r·k + c
    // or (row)·k + c with c + 4 ≤ body ≤ k, inside `w` (4 rows of k) and `x` (2 rows of k);
    // v128_load takes unaligned addresses.
    unsafe {
        let (wp, x0, x1) = (w.as_ptr(), x.as_ptr(), x.as_ptr().add(k));
        let mut a = [f32x4_splat(0.0); 8];
        let mut c = 0;
        while c < body {
            let xa = v128_load(x0.add(c) as *const v128);
            let xb = v128_load(x1.add(c) as *const v128);
            for r in 0..TILE_ROWS {
                let wv = v128_load(wp.add(r * k + c) as *const v128);
                a[r] = madd(wv, xa, a[r]);
                a[TILE_ROWS + r] = madd(wv, xb, a[TILE_ROWS + r]);
            }
            c += 4;
        }
        let mut out = [[0f32; TILE_ROWS]; 2];
        for (j, v) in a.iter().enumerate() {
            let o = [
                f32x4_extract_lane::<0>(*v),
                f32x4_extract_lane::<1>(*v),
                f32x4_extract_lane::<2>(*v),
                f32x4_extract_lane::<3>(*v),
            ];
            out[j / TILE_ROWS][j % TILE_ROWS] = (o[0] + o[2]) + (o[1] + o[3]);
        }
        out
    }
}

/// `w · x + acc`, lane by lane: one fused multiply-add (`f32x4.relaxed_madd`) in the build with
/// relaxed SIMD (the crate's `relaxed-simd` feature, which enables the target feature for the
/// functions that use it and only those: the rest of the build, its dependencies included, is
/// the same code as the SIMD128 build's and compiles once for both), which the browser
/// compiles to the CPU's FMA where it has one (x86-64 with FMA3,
/// ARM64): the 4×2 tile's inner step is then six loads and eight instructions instead of
/// sixteen. (A 4×3 tile, as on x86-64 with AVX2, was slower here: its twelve accumulators, three
/// rows of x and one of w are sixteen vector registers, one more than V8 leaves to code on
/// x86-64.) Relaxed SIMD lets an engine round once (fused) or twice (a multiply, then an add)
/// depending on the CPU, so the sums of that build may differ in their last bits from one CPU to
/// another; the SIMD128 build rounds twice everywhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[cfg_attr(
    feature = "relaxed-simd",
    target_feature(enable = "relaxed-simd"),
    inline
)]
#[cfg_attr(not(feature = "relaxed-simd"), inline(always))]
fn madd(
    w: core::arch::wasm32::v128,
    x: core::arch::wasm32::v128,
    acc: core::arch::wasm32::v128,
) -> core::arch::wasm32::v128 {
    #[cfg(feature = "relaxed-simd")]
    {
        core::arch::wasm32::f32x4_relaxed_madd(w, x, acc)
    }
    #[cfg(not(feature = "relaxed-simd"))]
    {
        use core::arch::wasm32::{f32x4_add, f32x4_mul};
        f32x4_add(acc, f32x4_mul(w, x))
    }
}

/// The sums of [`tile_4x2`] over the first `body` values of each row (other targets).
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn tile_4x2_body(w: &[f32], x: &[f32], k: usize, body: usize) -> [[f32; TILE_ROWS]; 2] {
    std::array::from_fn(|c| {
        std::array::from_fn(|r| dot(&w[r * k..r * k + body], &x[c * k..c * k + body]))
    })
}

/// [`gemm_tile`] with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{add_tail, TILE_ROWS};

    /// Rows of x per step of [`gemm_tile`]: twelve eight-lane accumulators, three of x and one
    /// of w fill the sixteen ymm registers.
    const COLS: usize = 3;

    /// AVX2 and FMA, detected at run time (cached by std, as [`crate::idot`]'s check).
    #[inline]
    pub(super) fn has_avx2_fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// [`super::gemm_tile`] (`w` exactly four rows of `k`): [`COLS`] rows of x at a time, then
    /// the two or one left.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn gemm_tile(
        w: &[f32],
        x: &[f32],
        k: usize,
        put: &mut impl FnMut(usize, usize, f32),
    ) {
        let m = x.len() / k;
        let mut i = 0;
        while i + COLS <= m {
            emit(tile::<COLS>(w, &x[i * k..(i + COLS) * k], k), i, put);
            i += COLS;
        }
        match m - i {
            2 => emit(tile::<2>(w, &x[i * k..(i + 2) * k], k), i, put),
            1 => emit(tile::<1>(w, &x[i * k..(i + 1) * k], k), i, put),
            _ => {}
        }
    }

    /// `put(i + c, r, sums[c][r])` for every sum of a tile.
    #[inline(always)]
    fn emit<const C: usize>(
        sums: [[f32; TILE_ROWS]; C],
        i: usize,
        put: &mut impl FnMut(usize, usize, f32),
    ) {
        for (c, row_sums) in sums.iter().enumerate() {
            for (r, &v) in row_sums.iter().enumerate() {
                put(i + c, r, v);
            }
        }
    }

    /// `out[c][r] = w_r · x_c` for the four rows of `w` ([4, k]) and the `C` of `x` ([C, k]):
    /// 4·C eight-lane sums over the first `k - k % 8` values, each folded to four lanes that
    /// take one more step of four when at least four values are left, then the scalar tail.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn tile<const C: usize>(w: &[f32], x: &[f32], k: usize) -> [[f32; TILE_ROWS]; C] {
        assert!(w.len() == TILE_ROWS * k && x.len() == C * k);
        let body8 = k - k % 8;
        let body = k - k % 4;
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let mut out = [[0f32; TILE_ROWS]; C];
        // SAFETY: AVX2 and FMA are enabled for this function. Every 8-value load is at offset
        // r·k + c (r < 4) of `w` or j·k + c (j < C) of `x` with c + 8 ≤ body8 ≤ k, so inside row
        // r of `w` ([4, k]) or row j of `x` ([C, k]); every 4-value load is at such an offset
        // with c = body8 and c + 4 = body ≤ k. The loads are unaligned ones; each store writes
        // 4 values into a 4-value array.
        unsafe {
            let mut a = [[_mm256_setzero_ps(); TILE_ROWS]; C];
            let mut xv = [_mm256_setzero_ps(); C];
            let mut c = 0;
            while c < body8 {
                for (j, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(xp.add(j * k + c));
                }
                for r in 0..TILE_ROWS {
                    let wv = _mm256_loadu_ps(wp.add(r * k + c));
                    for (aj, &xj) in a.iter_mut().zip(&xv) {
                        aj[r] = _mm256_fmadd_ps(wv, xj, aj[r]);
                    }
                }
                c += 8;
            }
            let mut h = [[_mm_setzero_ps(); TILE_ROWS]; C];
            for (hj, aj) in h.iter_mut().zip(&a) {
                for (hv, &v) in hj.iter_mut().zip(aj) {
                    *hv = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                }
            }
            if body > body8 {
                let mut xh = [_mm_setzero_ps(); C];
                for (j, v) in xh.iter_mut().enumerate() {
                    *v = _mm_loadu_ps(xp.add(j * k + body8));
                }
                for r in 0..TILE_ROWS {
                    let wv = _mm_loadu_ps(wp.add(r * k + body8));
                    for (hj, &xj) in h.iter_mut().zip(&xh) {
                        hj[r] = _mm_fmadd_ps(wv, xj, hj[r]);
                    }
                }
            }
            for (oj, hj) in out.iter_mut().zip(&h) {
                for (o, &v) in oj.iter_mut().zip(hj) {
                    let mut l = [0f32; 4];
                    _mm_storeu_ps(l.as_mut_ptr(), v);
                    *o = (l[0] + l[2]) + (l[1] + l[3]);
                }
            }
        }
        add_tail(&mut out, w, x, k, body);
        out
    }
}

/// f16 (or, with `bf16`, bfloat16) bits to f32.
fn widen(bits: &[u16], bf16: bool, out: &mut [f32]) {
    if bf16 {
        for (v, &h) in out.iter_mut().zip(bits) {
            *v = f32::from_bits(u32::from(h) << 16);
        }
    } else {
        for (v, &h) in out.iter_mut().zip(bits) {
            *v = crate::blocks::f16_to_f32(h);
        }
    }
}

/// `acc[i] = Σ_kk x[i·k + kk] · row[kk]` for every row i of x (`acc.len()` rows of `k`), with
/// the weight row as stored: each block (or chunk of a plain row) is converted once into `buf`
/// and dotted with every row of x.
pub fn row_dot(
    w: Weights,
    row: &[u8],
    x: &[f32],
    k: usize,
    acc: &mut [f32],
    buf: &mut [f32; CHUNK],
) {
    match w {
        Weights::F32 => {
            let w: &[f32] = bytemuck::cast_slice(row);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = dot(w, &x[i * k..(i + 1) * k]);
            }
        }
        Weights::F16 | Weights::BF16 => {
            acc.fill(0.0);
            let bits: &[u16] = bytemuck::cast_slice(row);
            for (c, part) in bits.chunks(CHUNK).enumerate() {
                let vals = &mut buf[..part.len()];
                widen(part, matches!(w, Weights::BF16), vals);
                let at = c * CHUNK;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += dot(vals, &x[i * k + at..i * k + at + part.len()]);
                }
            }
        }
        Weights::Blocks {
            size,
            bytes,
            dequant,
            ..
        } => {
            acc.fill(0.0);
            for (b, block) in row.chunks_exact(bytes).enumerate() {
                let vals = &mut buf[..size];
                dequant(block, vals);
                let at = b * size;
                for (i, a) in acc.iter_mut().enumerate() {
                    *a += dot(vals, &x[i * k + at..i * k + at + size]);
                }
            }
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)`.
#[inline]
fn rms_scale(row: &[f32], eps: f32) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt()
}

/// RMSNorm of each row of `w.len()` values of `x` into `out`: `x / sqrt(mean(x²) + eps) · w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let cols = w.len();
    for (row, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let scale = rms_scale(row, eps);
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// RMSNorm of each row of `x` in place.
pub fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let scale = rms_scale(row, eps);
        for (v, &g) in row.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

/// `x += rmsnorm(h)` per row (sandwich norms).
pub fn rmsnorm_add(h: &[f32], w: &[f32], eps: f32, x: &mut [f32]) {
    let cols = w.len();
    for (row, o) in h.chunks_exact(cols).zip(x.chunks_exact_mut(cols)) {
        let scale = rms_scale(row, eps);
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o += v * scale * g;
        }
    }
}

/// Rotates each head of `x` ([tokens, heads, head_dim]) for positions `offset..` with a cos/sin
/// table of `[positions, rotary_dim / 2, 2]`: pairs `(i, i + half)` with `neox`, else
/// `(2i, 2i + 1)`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    neox: bool,
    table: &[f32],
    offset: usize,
) {
    let half = rotary_dim / 2;
    for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let cs = &table[(offset + t) * half * 2..(offset + t + 1) * half * 2];
        for head in token.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (a, b) = if neox {
                    (i, i + half)
                } else {
                    (2 * i, 2 * i + 1)
                };
                let (c, s) = (cs[2 * i], cs[2 * i + 1]);
                let (va, vb) = (head[a], head[b]);
                head[a] = va * c - vb * s;
                head[b] = va * s + vb * c;
            }
        }
    }
}

/// silu(g) = g / (1 + exp(−g)).
pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// The tanh-approximated GELU as `v · σ(2t)` (pocketlm's shaders/act.wgsl says why).
pub fn gelu_tanh(v: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let c = v.clamp(-20.0, 20.0);
    let t = SQRT_2_OVER_PI * (c + 0.044715 * (c * c * c));
    let z = (-2.0 * t.abs()).exp();
    let s = if t >= 0.0 { 1.0 } else { z } / (1.0 + z);
    v * s
}

/// The exact GELU `v · Φ(v)`, Φ from Numerical Recipes' erfc fit as shaders/act.wgsl computes
/// it (the fit's published coefficients, as the shader writes them).
#[allow(clippy::excessive_precision)]
pub fn gelu_erf(v: f32) -> f32 {
    let c = v.clamp(-20.0, 20.0);
    let z = c.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.265_512_3
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let half_erfc = 0.5 * (t * (p - z * z).exp());
    v * if c >= 0.0 { 1.0 - half_erfc } else { half_erfc }
}

/// `act(gate) · up`, element-wise, into `gate`.
pub fn gated(gate: &mut [f32], up: &[f32], act: fn(f32) -> f32) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = act(*g) * u;
    }
}

/// `cap · tanh(x / cap)`, the argument clamped as the GPU kernels clamp it.
pub fn softcap(x: f32, cap: f32) -> f32 {
    cap * (x / cap).clamp(-15.0, 15.0).tanh()
}

/// One query head's attention over keys and values of the positions `first..=last` (rows of
/// `stride` values, this head's `q.len()` of them at `at`; position p in row p % `slots`, a
/// ring when the cache holds fewer positions than the context): `scale`d scores, optional
/// soft-cap, a softmax, and the weighted sum of values into `out`. `scores` is scratch of any
/// length.
#[allow(clippy::too_many_arguments)]
pub fn attention_head(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    (stride, at, slots): (usize, usize, usize),
    (first, last): (usize, usize),
    scale: f32,
    cap: Option<f32>,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    let row = |p: usize| (p % slots) * stride + at;
    scores.clear();
    scores.extend((first..=last).map(|p| {
        let x = dot(q, &keys[row(p)..row(p) + hd]) * scale;
        match cap {
            Some(c) => softcap(x, c),
            None => x,
        }
    }));
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut total = 0f32;
    for x in scores.iter_mut() {
        *x = (*x - max).exp();
        total += *x;
    }
    out.fill(0.0);
    for (p, &e) in (first..=last).zip(scores.iter()) {
        let v = &values[row(p)..row(p) + hd];
        for (o, &vv) in out.iter_mut().zip(v) {
            *o += e * vv;
        }
    }
    let inv = 1.0 / total;
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(test)]
mod tests {
    use super::{gemm_tile, gemm_tile_4x2, TILE_ROWS};

    /// Every (row of x, weight row) product of a tile, for odd and even counts of rows and row
    /// lengths with and without a tail of fewer than eight or four values, against f64 sums:
    /// [`gemm_tile`] as this CPU runs it, and its 4×2 kernel (which x86-64 CPUs with AVX2 and
    /// FMA run only here).
    #[test]
    fn gemm_tile_matches_plain_dot_products() {
        let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 311.0;
        for (m, k) in [
            (1, 4),
            (2, 5),
            (3, 32),
            (7, 37),
            (8, 384),
            (9, 3),
            (4, 8),
            (5, 12),
            (6, 13),
            (10, 39),
            (11, 576),
            (2, 7),
            (3, 1),
        ] {
            let w: Vec<f32> = (0..TILE_ROWS * k).map(value).collect();
            let x: Vec<f32> = (0..m * k).map(|i| value(i + 5000)).collect();
            let mut got = vec![f32::NAN; m * TILE_ROWS];
            gemm_tile(&w, &x, k, &mut |i, r, v| got[i * TILE_ROWS + r] = v);
            let mut got_4x2 = vec![f32::NAN; m * TILE_ROWS];
            gemm_tile_4x2(&w, &x, k, &mut |i, r, v| got_4x2[i * TILE_ROWS + r] = v);
            for i in 0..m {
                for r in 0..TILE_ROWS {
                    let want: f64 = (0..k)
                        .map(|c| f64::from(w[r * k + c]) * f64::from(x[i * k + c]))
                        .sum();
                    for (kernel, got) in [("gemm_tile", &got), ("4×2", &got_4x2)] {
                        let g = f64::from(got[i * TILE_ROWS + r]);
                        assert!(
                            (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{kernel}: m {m} k {k}: row {i} · weight row {r}: {g} against {want}"
                        );
                    }
                }
            }
        }
    }
}
