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

/// `Σ a[i]·b[i]` over the shorter length, in eight lanes (inlined, so that a caller compiled
/// for wider vectors runs it in them, with the same sums).
#[inline(always)]
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
    lanes_sum(acc, ta, tb)
}

/// [`dot`] of `a` with each of four rows at once (each at least `a.len()` long), each sum
/// exactly as `dot` forms it: four independent chains of additions, where one `dot` waits on
/// each addition of its one chain. `AVX2`: the caller is compiled for AVX2 and the CPU has it.
#[inline(always)]
fn dot4<const AVX2: bool>(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let n = a.len();
    let b = b.map(|b| &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: as the caller promises.
        return unsafe { dot4_avx2(a, b) };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return dot4_simd128(a, b);
    #[allow(unreachable_code)]
    b.map(|b| dot(a, b))
}

/// The eight lanes of [`dot`]'s sum, and its tail, summed as `dot` sums them.
#[inline(always)]
fn lanes_sum(acc: [f32; 8], a: &[f32], b: &[f32]) -> f32 {
    let mut tail = 0f32;
    for (x, y) in a.iter().zip(b) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let n = a.len();
    assert!(b.iter().all(|b| b.len() == n));
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c + 8 <= n {
        // SAFETY: c + 8 ≤ n, the length of `a` and of each row; loadu takes any alignment.
        unsafe {
            let x = _mm256_loadu_ps(a.as_ptr().add(c));
            for (acc, b) in acc.iter_mut().zip(b) {
                let y = _mm256_loadu_ps(b.as_ptr().add(c));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
        }
        c += 8;
    }
    let mut out = [0f32; 4];
    for ((o, acc), b) in out.iter_mut().zip(acc).zip(b) {
        let mut l = [0f32; 8];
        // SAFETY: `l` holds eight values.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc) };
        *o = lanes_sum(l, &a[c..], &b[c..]);
    }
    out
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn dot4_simd128(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use core::arch::wasm32::*;
    let n = a.len();
    assert!(b.iter().all(|b| b.len() == n));
    // Lanes 0..4 and 4..8 of each row's sum.
    let mut acc = [[f32x4_splat(0.0); 2]; 4];
    let mut c = 0;
    while c + 8 <= n {
        // SAFETY: c + 8 ≤ n, the length of `a` and of each row; v128_load takes any alignment.
        unsafe {
            let x = [0, 4].map(|h| v128_load(a.as_ptr().add(c + h) as *const v128));
            for (acc, b) in acc.iter_mut().zip(b) {
                for h in 0..2 {
                    let y = v128_load(b.as_ptr().add(c + 4 * h) as *const v128);
                    acc[h] = f32x4_add(acc[h], f32x4_mul(x[h], y));
                }
            }
        }
        c += 8;
    }
    let mut out = [0f32; 4];
    for ((o, acc), b) in out.iter_mut().zip(acc).zip(b) {
        let l = |v: v128| {
            [
                f32x4_extract_lane::<0>(v),
                f32x4_extract_lane::<1>(v),
                f32x4_extract_lane::<2>(v),
                f32x4_extract_lane::<3>(v),
            ]
        };
        let (lo, hi) = (l(acc[0]), l(acc[1]));
        let lanes = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
        *o = lanes_sum(lanes, &a[c..], &b[c..]);
    }
    out
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
///
/// The kernels run in chunks of [`GEMM_CHUNK`] rows of x, through [`gemm_tile_sums`], which is
/// not generic: so they are compiled in this crate, optimized even in the test builds (see the
/// workspace's profile), and only the loop over `put` is compiled where it is called.
pub fn gemm_tile(w: &[f32], x: &[f32], k: usize, put: &mut impl FnMut(usize, usize, f32)) {
    assert!(
        k > 0 && w.len() >= TILE_ROWS * k,
        "a tile is {TILE_ROWS} rows of {k}"
    );
    let mut sums = [0f32; GEMM_CHUNK * TILE_ROWS];
    let m = x.len() / k;
    for i0 in (0..m).step_by(GEMM_CHUNK) {
        let rows = GEMM_CHUNK.min(m - i0);
        let sums = &mut sums[..rows * TILE_ROWS];
        gemm_tile_sums(w, &x[i0 * k..(i0 + rows) * k], k, sums);
        for (i, row_sums) in sums.chunks_exact(TILE_ROWS).enumerate() {
            for (r, &v) in row_sums.iter().enumerate() {
                put(i0 + i, r, v);
            }
        }
    }
}

/// Rows of x per [`gemm_tile_sums`] call: a multiple of the rows every kernel takes at a time
/// (three, or two), so the rows are grouped into tiles as one call over all of them would.
const GEMM_CHUNK: usize = 24;

/// [`gemm_tile`]'s sums for the rows of `x`: `sums[i · 4 + r] = w_r · x_i`.
fn gemm_tile_sums(w: &[f32], x: &[f32], k: usize, sums: &mut [f32]) {
    let mut put = |i: usize, r: usize, v: f32| sums[i * TILE_ROWS + r] = v;
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { x86::gemm_tile(&w[..TILE_ROWS * k], x, k, &mut put) };
        return;
    }
    gemm_tile_4x2(w, x, k, &mut put);
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
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{add_tail, TILE_ROWS};

    /// Rows of x per step of [`gemm_tile`]: twelve eight-lane accumulators, three of x and one
    /// of w fill the sixteen ymm registers.
    const COLS: usize = 3;

    /// AVX2, FMA and F16C, detected at run time once (every AVX2 CPU has the other two). The
    /// check of every AVX2 kernel of the crate ([`crate::idot`]'s too).
    /// `POCKETLM_CPU_NO_AVX2=1` in the environment runs the SSE2 kernels instead, as on an
    /// x86-64 CPU without AVX2: how the tests check those on machines that have it (`make
    /// test-unit`), and how to time them (`pocketlm --backend cpu bench`).
    #[inline]
    pub(crate) fn has_avx2_fma() -> bool {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| {
            std::env::var_os("POCKETLM_CPU_NO_AVX2").is_none_or(|v| v.is_empty() || v == "0")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
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

/// `e^x` for the softmax's `x ≤ 0`, without branches so that loops over it vectorize (a libm
/// call per score was a third of attention's time): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`
/// (Cody and Waite's two-part ln 2), Cephes' degree-5 polynomial for `e^r`, and `2^n` built in
/// the exponent bits. Within 2 ulp of the true value from −87 up; below −87 it returns e^−87
/// (no sum of a softmax's terms, the largest of them 1, can notice the difference). The same
/// operations natively and in wasm, so the same values.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x / ln 2 to the nearest integer by adding and taking away 1.5 · 2^23.
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * 0.693_359_375) - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = (p * r) * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Where one KV head's keys and values sit in the cache: rows of `stride` values, the head's
/// values at `at` in each, position p in row p % `slots` (a ring when the cache holds fewer
/// positions than the context; `usize::MAX` otherwise).
#[derive(Clone, Copy, Debug)]
pub struct KvLayout {
    pub stride: usize,
    pub at: usize,
    pub slots: usize,
}

impl KvLayout {
    fn row(&self, p: usize) -> usize {
        (p % self.slots) * self.stride + self.at
    }
}

/// A KV cache's rows as [`attention_rows`] reads them: f32, or f16 values as [`kv_f16`] stores
/// them (half the memory and half the bytes each step reads; each chunk of keys and values is
/// converted to f32 once, exactly, for all the rows that read it).
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F32 { keys: &'a [f32], values: &'a [f32] },
    F16 { keys: &'a [u16], values: &'a [u16] },
}

impl KvRows<'_> {
    /// Values in each of keys and values.
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32 { keys, .. } => keys.len(),
            KvRows::F16 { keys, .. } => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `x` as an f16 KV cache holds it: rounded to the nearest f16 (ties to even), except that a
/// magnitude below f16's normal range (2^-14, about 6.1e-5) is stored as a zero of its sign and
/// one beyond 65504 (or a NaN) as ±65504. So every value held is a zero or a normal f16, which
/// converts back exactly in four vector operations ([`kv_f32`]; wasm has no instruction for
/// it) instead of ten; what the flush changes is within f16's rounding error of a value of
/// magnitude 0.125.
#[inline]
pub fn kv_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7FFF_FFFF;
    if a >= 0x477F_F000 {
        // At least 65520 (rounds past 65504), infinite or NaN.
        return sign | 0x7BFF;
    }
    if a < 0x3880_0000 {
        return sign;
    }
    // The exponent rebiased (127 → 15), then the 23-bit mantissa rounded to 10 bits, ties to
    // even; a carry out of the mantissa moves into the exponent, as it should.
    let m = a - (112 << 23);
    sign | ((m + 0xFFF + ((m >> 13) & 1)) >> 13) as u16
}

/// A value [`kv_f16`] stored, as f32 (exact): the f16's sign, exponent and mantissa moved into
/// an f32's places (a sign-extending shift leaves copies of the sign in the top three exponent
/// bits, which the mask clears), then times 2^112 for the exponent's bias.
#[inline(always)]
pub fn kv_f32(h: u16) -> f32 {
    let moved = ((i32::from(h as i16) << 13) as u32) & KV_MASK;
    f32::from_bits(moved) * KV_BIAS
}

const KV_MASK: u32 = 0x8FFF_E000;
/// 2^112.
const KV_BIAS: f32 = f32::from_bits((127 + 112) << 23);

/// [`kv_f32`] of each value (F16C's `vcvtph2ps` with `AVX2`, the same values on what
/// [`kv_f16`] stores).
#[inline(always)]
fn widen_f16<const AVX2: bool>(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let mut c = 0;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        use std::arch::x86_64::*;
        while c + 8 <= n {
            // SAFETY: c + 8 ≤ n, the length of both; the caller is compiled for F16C and the
            // CPU has it; loadu and storeu take any alignment.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(c).cast());
                _mm256_storeu_ps(dst.as_mut_ptr().add(c), _mm256_cvtph_ps(h));
            }
            c += 8;
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        let f32x4 = |h: v128| {
            let moved = v128_and(i32x4_shl(h, 13), u32x4_splat(KV_MASK));
            f32x4_mul(moved, f32x4_splat(KV_BIAS))
        };
        while c + 8 <= n {
            // SAFETY: c + 8 ≤ n, the length of both; wasm loads and stores take any alignment.
            unsafe {
                let h = v128_load(src.as_ptr().add(c).cast());
                let p = dst.as_mut_ptr().add(c).cast::<v128>();
                v128_store(p, f32x4(i32x4_extend_low_i16x8(h)));
                v128_store(p.add(1), f32x4(i32x4_extend_high_i16x8(h)));
            }
            c += 8;
        }
    }
    for (d, &h) in dst[c..].iter_mut().zip(&src[c..]) {
        *d = kv_f32(h);
    }
}

/// [`widen_f16`] as this CPU runs it in [`attention_rows`].
fn widen_kv(src: &[u16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2_fma() {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn widen_avx2(src: &[u16], dst: &mut [f32]) {
            widen_f16::<true>(src, dst)
        }
        // SAFETY: the CPU has AVX2, FMA and F16C (just checked).
        return unsafe { widen_avx2(src, dst) };
    }
    widen_f16::<false>(src, dst)
}

/// The f16 KV cache's conversions, run by the kernels' self-check ([`crate::idot::check`])
/// natively and in the browser's wasm engine: every value [`kv_f16`] can store (zeros and
/// normal f16s) converts to sign · 2^(e−15) · (1 + m/1024) in the vector code attention runs
/// (an odd length, so the scalar tail too), and [`kv_f16`] gives it back unchanged.
#[doc(hidden)]
pub fn check_kv_f16() -> Result<(), String> {
    let held: Vec<u16> = (0..=u16::MAX)
        .filter(|h| matches!((h >> 10) & 0x1F, 1..=30) || h & 0x7FFF == 0)
        .collect();
    let mut got = vec![f32::NAN; held.len()];
    widen_kv(&held[1..], &mut got[1..]);
    widen_kv(&held[..1], &mut got[..1]);
    for (&h, &v) in held.iter().zip(&got) {
        let (e, m) = (i32::from(h >> 10) & 0x1F, f64::from(h & 0x3FF));
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let want = if e == 0 {
            0.0
        } else {
            sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15)
        };
        if f64::from(v) != want || v.is_sign_negative() != (sign < 0.0) || kv_f16(v) != h {
            return Err(format!("f16 KV value {h:#06x} converts to {v:e}"));
        }
    }
    Ok(())
}

/// Key positions per step of [`attention_rows`]: one step's keys and values (2 · 32 · head_dim
/// values, 16 KiB at head_dim 64) stay in the L1 cache while every query row of the call uses
/// them.
pub const KEY_CHUNK: usize = 32;

/// The online-softmax state of one query row: the largest score so far and the sum of
/// `exp(score − max)`; its output row holds `Σ exp(score − max) · value`, not yet divided by the
/// sum. A row that has seen no key is `(−∞, 0)` with a zero output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxState {
    pub max: f32,
    pub sum: f32,
}

/// Attention of query rows (`qs`: rows of `head_dim` values, all reading the KV head `kv`)
/// over the key positions each sees (`spans[r]`, first and last inclusive; empty when first >
/// last): `scale`d scores, optional soft-cap, and an online softmax (flash attention) that
/// walks the keys in chunks of [`KEY_CHUNK`] and runs every row over a chunk before the next,
/// so that each key and value is read from memory once for all rows (the heads of a
/// grouped-query group, several tokens of a prompt) instead of once per row. Continues the
/// `states` and unnormalised `out` rows it is given (start them at [`SoftmaxState::EMPTY`] and
/// zero; finish with [`SoftmaxState::finish`]), so a long span can be split over calls.
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(
    qs: &[f32],
    spans: &[(usize, usize)],
    cache: KvRows,
    kv: KvLayout,
    scale: f32,
    cap: Option<f32>,
    states: &mut [SoftmaxState],
    out: &mut [f32],
) {
    let args = (qs, spans, cache, kv, scale, cap);
    #[cfg(target_arch = "x86_64")]
    if x86::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (just checked).
        return unsafe { attention_rows_avx2(args, states, out) };
    }
    attention_rows_body::<false>(args, states, out)
}

/// The inputs of [`attention_rows`] but its outputs.
type RowsArgs<'a> = (
    &'a [f32],
    &'a [(usize, usize)],
    KvRows<'a>,
    KvLayout,
    f32,
    Option<f32>,
);

/// [`attention_rows_body`] compiled for AVX2: the same operations in the same order, so the
/// same results, in eight lanes instead of four, with four keys' sums at once ([`dot4`]):
/// 2–2.3× the SSE2 code's speed (one layer's attention, one thread, head_dim 64 and 256).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn attention_rows_avx2(args: RowsArgs, states: &mut [SoftmaxState], out: &mut [f32]) {
    attention_rows_body::<true>(args, states, out)
}

#[inline(always)]
fn attention_rows_body<const AVX2: bool>(
    (qs, spans, cache, kv, scale, cap): RowsArgs,
    states: &mut [SoftmaxState],
    out: &mut [f32],
) {
    let hd = out.len() / spans.len().max(1);
    let live = spans.iter().filter(|(f, l)| f <= l);
    let (Some(lo), Some(hi)) = (live.clone().map(|s| s.0).min(), live.map(|s| s.1).max()) else {
        return;
    };
    let mut e = [0f32; KEY_CHUNK];
    // Where the chunk's positions start in the cache (one division each per chunk, not per row).
    let mut at = [0usize; KEY_CHUNK];
    // An f16 cache's chunk, converted once for all rows: keys, then values, row i at i · hd.
    let mut chunk = match cache {
        KvRows::F32 { .. } => Vec::new(),
        KvRows::F16 { .. } => vec![0f32; 2 * KEY_CHUNK * hd],
    };
    let mut c0 = lo;
    while c0 <= hi {
        let c1 = (c0 + KEY_CHUNK - 1).min(hi);
        for (a, p) in at.iter_mut().zip(c0..=c1) {
            *a = kv.row(p);
        }
        let (keys, values) = match cache {
            KvRows::F32 { keys, values } => (keys, values),
            KvRows::F16 { keys, values } => {
                let (ck, cv) = chunk.split_at_mut(KEY_CHUNK * hd);
                for (i, &a) in at[..c1 + 1 - c0].iter().enumerate() {
                    widen_f16::<AVX2>(&keys[a..a + hd], &mut ck[i * hd..(i + 1) * hd]);
                    widen_f16::<AVX2>(&values[a..a + hd], &mut cv[i * hd..(i + 1) * hd]);
                }
                for (i, a) in at.iter_mut().enumerate() {
                    *a = i * hd;
                }
                let (ck, cv) = chunk.split_at(KEY_CHUNK * hd);
                (ck, cv)
            }
        };
        for (r, &(first, last)) in spans.iter().enumerate() {
            let (f, l) = (first.max(c0), last.min(c1));
            if f > l {
                continue;
            }
            let q = &qs[r * hd..(r + 1) * hd];
            let e = &mut e[..l + 1 - f];
            let at = &at[f - c0..l + 1 - c0];
            let key = |a: usize| &keys[a..a + hd];
            let (mut quads, mut ats) = (e.chunks_exact_mut(4), at.chunks_exact(4));
            for (x, a) in quads.by_ref().zip(ats.by_ref()) {
                x.copy_from_slice(&dot4::<AVX2>(
                    q,
                    [key(a[0]), key(a[1]), key(a[2]), key(a[3])],
                ));
            }
            for (x, &a) in quads.into_remainder().iter_mut().zip(ats.remainder()) {
                *x = dot(q, key(a));
            }
            for x in e.iter_mut() {
                *x *= scale;
                if let Some(c) = cap {
                    *x = softcap(*x, c);
                }
            }
            let o = &mut out[r * hd..(r + 1) * hd];
            let st = &mut states[r];
            let max = e.iter().fold(st.max, |m, &x| m.max(x));
            if max > st.max {
                // Rescale what the row holds to the new maximum (nothing yet at −∞).
                let a = if st.sum == 0.0 {
                    0.0
                } else {
                    exp(st.max - max)
                };
                o.iter_mut().for_each(|v| *v *= a);
                st.sum *= a;
                st.max = max;
            }
            for x in e.iter_mut() {
                *x = exp(*x - max);
            }
            st.sum += e.iter().sum::<f32>();
            // Σ e · v, four keys per pass over the output row.
            let (mut quads, mut ats) = (e.chunks_exact(4), at.chunks_exact(4));
            for (w, a) in quads.by_ref().zip(ats.by_ref()) {
                let v = |i: usize| &values[a[i]..a[i] + hd];
                let (v0, v1, v2, v3) = (v(0), v(1), v(2), v(3));
                for d in 0..hd {
                    o[d] += (w[0] * v0[d] + w[1] * v1[d]) + (w[2] * v2[d] + w[3] * v3[d]);
                }
            }
            for (&w, &a) in quads.remainder().iter().zip(ats.remainder()) {
                let v = &values[a..a + hd];
                o.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
            }
        }
        c0 = c1 + 1;
    }
}

impl SoftmaxState {
    pub const EMPTY: Self = Self {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };

    /// Divides a finished row's output by its sum.
    pub fn finish(&self, out: &mut [f32]) {
        let inv = 1.0 / self.sum;
        out.iter_mut().for_each(|o| *o *= inv);
    }

    /// Merges the states and output rows of one query row's disjoint spans of keys into the
    /// first (`parts`: each state with its unnormalised output row).
    pub fn merge(parts: &mut [(SoftmaxState, &mut [f32])]) {
        let max = parts.iter().fold(f32::NEG_INFINITY, |m, p| m.max(p.0.max));
        let Some(((first, acc), rest)) = parts.split_first_mut() else {
            return;
        };
        let weight = |s: &SoftmaxState| if s.sum == 0.0 { 0.0 } else { exp(s.max - max) };
        let a = weight(first);
        first.sum *= a;
        acc.iter_mut().for_each(|v| *v *= a);
        for (s, o) in rest.iter() {
            let a = weight(s);
            first.sum += s.sum * a;
            acc.iter_mut().zip(o.iter()).for_each(|(v, &o)| *v += a * o);
        }
        first.max = max;
    }
}

#[cfg(test)]
mod tests {
    use super::{gemm_tile, gemm_tile_4x2, gemm_tile_sums, TILE_ROWS};

    /// [`exp`] within 2 ulp of e^x over the softmax's range (where e^x is a normal f32),
    /// exactly 1 at 0, and e^−87 below −87.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut x = -87.0f32;
        while x <= 10.0 {
            let (got, want) = (f64::from(super::exp(x)), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * want;
            assert!(
                (got - want).abs() <= 2.0 * ulp,
                "exp({x}) = {got}, e^x = {want}"
            );
            x += 0.001_37;
        }
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(-1000.0), super::exp(-87.0));
    }

    /// `make test-unit` runs this crate's tests and the CPU model tests a second time with
    /// `POCKETLM_CPU_NO_AVX2=1`: the SSE2 kernels must be what runs then.
    #[test]
    fn no_avx2_in_the_environment_runs_the_sse2_kernels() {
        #[cfg(target_arch = "x86_64")]
        if std::env::var_os("POCKETLM_CPU_NO_AVX2").is_some_and(|v| v == "1") {
            assert!(!super::x86::has_avx2_fma());
        }
    }

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
            // Past one chunk of rows (GEMM_CHUNK), and at its edge.
            (24, 8),
            (25, 16),
            (50, 37),
        ] {
            let w: Vec<f32> = (0..TILE_ROWS * k).map(value).collect();
            let x: Vec<f32> = (0..m * k).map(|i| value(i + 5000)).collect();
            let mut got = vec![f32::NAN; m * TILE_ROWS];
            gemm_tile(&w, &x, k, &mut |i, r, v| got[i * TILE_ROWS + r] = v);
            let mut got_4x2 = vec![f32::NAN; m * TILE_ROWS];
            gemm_tile_4x2(&w, &x, k, &mut |i, r, v| got_4x2[i * TILE_ROWS + r] = v);
            // In chunks of rows, the same sums, bit for bit, as all rows in one call.
            let mut whole = vec![f32::NAN; m * TILE_ROWS];
            gemm_tile_sums(&w, &x, k, &mut whole);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&whole), "m {m} k {k}");
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
