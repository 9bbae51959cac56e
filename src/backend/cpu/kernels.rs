//! The fused CPU engine's kernels: plain loops over f32 slices that the compiler
//! vectorises. The one hot spot, the matmul tile, is compiled twice on x86-64 (the
//! portable SSE2 baseline, and AVX2 + FMA picked at run time) and uses the native FMA of
//! NEON on AArch64; nothing here is x86-only. Every kernel has its f64 reference in
//! `backend/reference.rs` and a test against it at the bottom of this file.
//!
//! Layouts: row-major everywhere. A weight is `[k, n]` (`x @ W`, as the ONNX graphs store
//! it); activations are `[rows, width]` with a row stride (`ldx`, `ldo`, `ld`) so that
//! a kernel can read one block of a fused projection (q, k, v side by side).

/// Columns of one matmul tile (two AVX registers, four NEON registers).
const NR: usize = 16;
/// Rows of one matmul tile: 4 x 16 accumulators fit the 16 AVX registers with room for
/// the weight row and the broadcast.
const MR: usize = 4;
/// RMSNorm epsilon of models/train/promise_train/model.py.
pub const NORM_EPS: f32 = crate::bundle::onnx::NORM_EPS;
/// The additive bias of a masked key (models/train/promise_train/model.py `NEG`).
pub const NEG: f32 = crate::bundle::onnx::MASK_NEG;

/// The instruction set the matmul runs with, found once when a model loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable code: SSE2 on x86-64, NEON with FMA on AArch64, scalar elsewhere.
    Portable,
    /// x86-64 with AVX2 and FMA, detected at run time.
    Avx2Fma,
}

impl Isa {
    /// The best this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable if cfg!(target_arch = "aarch64") => "neon",
            Isa::Portable if cfg!(target_arch = "x86_64") => "sse2",
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}

/// What the matmul does with each value of `x @ W` before it stores it:
/// `v = x @ W (+ bias[c]) (relu)`, then `out = v` or `out += v`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub relu: bool,
    pub accumulate: bool,
}

impl Epilogue<'_> {
    /// `out += x @ W`: a residual branch.
    pub const ADD: Epilogue<'static> = Epilogue {
        bias: None,
        relu: false,
        accumulate: true,
    };
    /// `out = relu(x @ W)`.
    pub const RELU: Epilogue<'static> = Epilogue {
        bias: None,
        relu: true,
        accumulate: false,
    };
}

/// `out[r * ldo + c] (+)= epilogue(sum_i x[r * ldx + i] * w[i * n + c])` for r < rows,
/// c < n. `w` is `[k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    isa: Isa,
    (x, ldx): (&[f32], usize),
    rows: usize,
    w: &[f32],
    (k, n): (usize, usize),
    (out, ldo): (&mut [f32], usize),
    ep: Epilogue,
) {
    if rows == 0 || n == 0 {
        return;
    }
    // the tile loop reads without bounds checks: these make it sound
    assert!(w.len() >= k * n && ldx >= k && ldo >= n, "matmul shapes");
    assert!(
        x.len() >= (rows - 1) * ldx + k && out.len() >= (rows - 1) * ldo + n,
        "matmul buffers"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2Fma
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 and FMA (checked on the line above), the only
        // requirement of a `#[target_feature]` function; the body is safe Rust.
        unsafe {
            matmul_avx2_fma((x, ldx), rows, w, (k, n), (out, ldo), ep)
        };
        return;
    }
    let _ = isa;
    matmul_body::<{ cfg!(target_arch = "aarch64") }>((x, ldx), rows, w, (k, n), (out, ldo), ep)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn matmul_avx2_fma(
    x: (&[f32], usize),
    rows: usize,
    w: &[f32],
    kn: (usize, usize),
    out: (&mut [f32], usize),
    ep: Epilogue,
) {
    matmul_body::<true>(x, rows, w, kn, out, ep)
}

/// `a * b + c`, fused where the target has FMA (`FMA` is only true where `mul_add` is one
/// instruction, never a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn matmul_body<const FMA: bool>(
    (x, ldx): (&[f32], usize),
    rows: usize,
    w: &[f32],
    (k, n): (usize, usize),
    (out, ldo): (&mut [f32], usize),
    ep: Epilogue,
) {
    let w = &w[..k * n];
    let mut r = 0;
    while r + MR <= rows {
        tile_rows::<MR, FMA>((x, ldx), r, w, (k, n), (out, ldo), ep);
        r += MR;
    }
    while r < rows {
        tile_rows::<1, FMA>((x, ldx), r, w, (k, n), (out, ldo), ep);
        r += 1;
    }
}

#[inline(always)]
fn finish(v: f32, c: usize, o: &mut f32, ep: &Epilogue) {
    let mut v = v;
    if let Some(b) = ep.bias {
        v += b[c];
    }
    if ep.relu {
        v = v.max(0.0);
    }
    if ep.accumulate {
        *o += v;
    } else {
        *o = v;
    }
}

/// Store one row of a tile: whole-vector loops, so the epilogue vectorises too.
#[inline(always)]
fn finish_tile(mut v: [f32; NR], bias: Option<&[f32]>, o: &mut [f32], ep: &Epilogue) {
    if let Some(b) = bias {
        for (v, b) in v.iter_mut().zip(b) {
            *v += b;
        }
    }
    if ep.relu {
        for v in v.iter_mut() {
            *v = v.max(0.0);
        }
    }
    if ep.accumulate {
        for (o, v) in o.iter_mut().zip(v) {
            *o += v;
        }
    } else {
        o.copy_from_slice(&v);
    }
}

/// Rows `r0..r0 + R` of the product: NR columns at a time, then the leftover columns.
#[inline(always)]
fn tile_rows<const R: usize, const FMA: bool>(
    (x, ldx): (&[f32], usize),
    r0: usize,
    w: &[f32],
    (k, n): (usize, usize),
    (out, ldo): (&mut [f32], usize),
    ep: Epilogue,
) {
    let xb = &x[r0 * ldx..(r0 + R - 1) * ldx + k];
    let mut j = 0;
    while j + NR <= n {
        let mut acc = [[0.0f32; NR]; R];
        for i in 0..k {
            #[allow(unsafe_code)]
            // SAFETY: i < k and j + NR <= n, so the NR values at i * n + j lie in w
            // (w.len() >= k * n, asserted in `matmul`), and (R - 1) * ldx + i < xb.len()
            // (xb ends at row R - 1's k-th value). Bounds checks here cost a quarter of
            // the matmul's time (measured with perf on the default bundle).
            let (wv, xs) = unsafe {
                let wv = &*(w.as_ptr().add(i * n + j) as *const [f32; NR]);
                let xs: [f32; R] = std::array::from_fn(|r| *xb.get_unchecked(r * ldx + i));
                (wv, xs)
            };
            for r in 0..R {
                for c in 0..NR {
                    acc[r][c] = madd::<FMA>(xs[r], wv[c], acc[r][c]);
                }
            }
        }
        let bias = ep.bias.map(|b| &b[j..j + NR]);
        for (r, a) in acc.into_iter().enumerate() {
            let o = &mut out[(r0 + r) * ldo + j..(r0 + r) * ldo + j + NR];
            finish_tile(a, bias, o, &ep);
        }
        j += NR;
    }
    for c in j..n {
        for r in 0..R {
            let xr = &xb[r * ldx..r * ldx + k];
            let mut s = 0.0f32;
            for (i, &xv) in xr.iter().enumerate() {
                s = madd::<FMA>(xv, w[i * n + c], s);
            }
            finish(s, c, &mut out[(r0 + r) * ldo + c], &ep);
        }
    }
}

/// `sum a[i] * b[i]` in 8 lanes (a serial float sum does not vectorise).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// RMSNorm per row: `out = x / sqrt(mean(x^2) + eps) * gain` (width `gain.len()`).
pub fn rmsnorm((x, ldx): (&[f32], usize), rows: usize, gain: &[f32], out: &mut [f32]) {
    let d = gain.len();
    for r in 0..rows {
        let row = &x[r * ldx..r * ldx + d];
        let ms = dot(row, row) / d as f32;
        let inv = 1.0 / (ms + NORM_EPS).sqrt();
        for ((o, &v), &g) in out[r * d..(r + 1) * d].iter_mut().zip(row).zip(gain) {
            *o = v * inv * g;
        }
    }
}

/// Scaled dot-product attention of one query over `len` keys, all heads:
/// `out[h*dh + i] = sum_s softmax_s(q_h . k_s / sqrt(dh) + bias[s]) v_s[h*dh + i]`.
/// Key s is `keys[s * ld..]`, its value `values[s * ld..]` (`heads * dh` wide each);
/// `bias` (the mask, 0 or [`NEG`]) is optional; `logits` is scratch of at least `len`.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    (keys, values, ld): (&[f32], &[f32], usize),
    len: usize,
    (heads, dh): (usize, usize),
    bias: Option<&[f32]>,
    logits: &mut [f32],
    out: &mut [f32],
) {
    let scale = 1.0 / (dh as f32).sqrt();
    let logits = &mut logits[..len];
    for h in 0..heads {
        let qh = &q[h * dh..(h + 1) * dh];
        let mut mx = f32::NEG_INFINITY;
        for (s, l) in logits.iter_mut().enumerate() {
            let kh = &keys[s * ld + h * dh..s * ld + (h + 1) * dh];
            *l = dot(qh, kh) * scale + bias.map_or(0.0, |b| b[s]);
            mx = mx.max(*l);
        }
        let mut z = 0.0f32;
        for l in logits.iter_mut() {
            *l = (*l - mx).exp();
            z += *l;
        }
        let oh = &mut out[h * dh..(h + 1) * dh];
        oh.fill(0.0);
        for (s, &e) in logits.iter().enumerate() {
            let vh = &values[s * ld + h * dh..s * ld + (h + 1) * dh];
            for (o, &v) in oh.iter_mut().zip(vh) {
                *o += e * v;
            }
        }
        let inv = 1.0 / z;
        for o in oh.iter_mut() {
            *o *= inv;
        }
    }
}

/// [`attend`] for `rows` queries (row r at `q[r * ldq..]`) against the same keys, writing
/// row r of `out` (`heads * dh` wide, packed).
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    (q, ldq): (&[f32], usize),
    rows: usize,
    kv: (&[f32], &[f32], usize),
    len: usize,
    (heads, dh): (usize, usize),
    bias: Option<&[f32]>,
    logits: &mut [f32],
    out: &mut [f32],
) {
    let w = heads * dh;
    for r in 0..rows {
        let o = &mut out[r * w..(r + 1) * w];
        attend(&q[r * ldq..], kv, len, (heads, dh), bias, logits, o);
    }
}

/// Log-softmax of one row of `n` logits; codes `>= cb` (beyond this level's codebook) get
/// [`NEG`] added first, as the graph's level mask does.
pub fn log_softmax(x: &[f32], cb: usize, out: &mut [f32]) {
    let n = x.len();
    for j in 0..n {
        out[j] = x[j] + if j >= cb { NEG } else { 0.0 };
    }
    let mx = out[..n].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = out[..n].iter().map(|&v| (v - mx).exp()).sum();
    let ln_z = z.ln();
    // (x - max) - ln z, in this order: equal logits give bit-equal log-probs in every row
    // (x - (max + ln z) rounds differently per row), so exact ties stay exact and the
    // search's tie-break decides, as on tract and the GPU
    for o in out[..n].iter_mut() {
        *o = (*o - mx) - ln_z;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::reference as r;
    use crate::backend::reference::{assert_close, Rng};

    /// |kernel - f64 reference| <= atol + rtol * |reference| (f32 accumulation).
    const MATMUL_TOL: (f32, f32) = (5e-5, 1e-5);
    const NORM_TOL: (f32, f32) = (1e-5, 1e-5);
    const ATTENTION_TOL: (f32, f32) = (1e-5, 1e-5);
    const LOG_SOFTMAX_TOL: (f32, f32) = (2e-5, 1e-6);

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::detect());
        }
        v
    }

    #[test]
    fn matmul_matches_reference() {
        let mut rng = Rng::new(11);
        // tile-sized and ragged shapes: rows around MR, columns around NR, n = 1 (the PRM's
        // output), strided input and output, every epilogue
        let shapes = [
            (1, 64, 64),
            (3, 16, 17),
            (4, 64, 192),
            (5, 33, 1),
            (48, 64, 256),
            (64, 128, 128),
            (7, 256, 40),
        ];
        for isa in isas() {
            for (si, &(rows, k, n)) in shapes.iter().enumerate() {
                for mode in 0..4 {
                    let (ldx, ldo) = (k + si % 3, n + 2 * (si % 2));
                    let x = rng.vec(rows * ldx);
                    let w = rng.vec(k * n);
                    let bias = rng.vec(n);
                    let init = rng.vec(rows * ldo);
                    let ep = Epilogue {
                        bias: (mode & 1 == 1).then_some(&bias[..]),
                        relu: mode == 1 || mode == 2,
                        accumulate: mode == 3,
                    };
                    let mut got = init.clone();
                    matmul(isa, (&x, ldx), rows, &w, (k, n), (&mut got, ldo), ep);
                    // the reference on the packed views
                    let xp: Vec<f32> = (0..rows)
                        .flat_map(|r| x[r * ldx..r * ldx + k].to_vec())
                        .collect();
                    let acc: Vec<f32> = (0..rows)
                        .flat_map(|r| init[r * ldo..r * ldo + n].to_vec())
                        .collect();
                    let ones = vec![1.0; n];
                    let want = r::matmul(
                        &xp,
                        &w,
                        &ones,
                        ep.bias,
                        ep.relu,
                        ep.accumulate.then_some(&acc[..]),
                        rows,
                        k,
                        n,
                    );
                    let gotp: Vec<f32> = (0..rows)
                        .flat_map(|r| got[r * ldo..r * ldo + n].to_vec())
                        .collect();
                    let what = format!("matmul {} {rows}x{k}x{n} mode {mode}", isa.name());
                    assert_close(&what, &gotp, &want, MATMUL_TOL);
                    // the padding between strided rows is untouched
                    for rr in 0..rows {
                        assert_eq!(
                            got[rr * ldo + n..rr * ldo + ldo],
                            init[rr * ldo + n..rr * ldo + ldo],
                            "{what}: padding"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rmsnorm_matches_reference() {
        let mut rng = Rng::new(12);
        for &(rows, d) in &[(1, 16), (20, 64), (7, 128)] {
            let x = rng.vec(rows * d);
            let g = rng.vec(d);
            let mut got = vec![0.0; rows * d];
            rmsnorm((&x, d), rows, &g, &mut got);
            let want = r::rmsnorm(&x, &g, rows, d, NORM_EPS);
            assert_close(&format!("rmsnorm {rows}x{d}"), &got, &want, NORM_TOL);
        }
    }

    #[test]
    fn attention_matches_reference() {
        let mut rng = Rng::new(13);
        for &(len, heads, dh, masked) in &[
            (1, 1, 16, false),
            (3, 4, 16, false),
            (20, 4, 16, true),
            (20, 2, 16, true),
            (5, 4, 4, true),
        ] {
            let w = heads * dh;
            let ld = 2 * w + 3; // keys and values side by side with a gap, as in a fused projection
            let q = rng.vec(w);
            let kv = rng.vec(len * ld);
            let mask: Vec<f32> = (0..len)
                .map(|s| if masked && s % 3 == 1 { 0.0 } else { 1.0 })
                .collect();
            let bias: Vec<f32> = mask.iter().map(|m| (1.0 - m) * NEG).collect();
            let mut logits = vec![0.0; len];
            let mut got = vec![0.0; w];
            attend(
                &q,
                (&kv, &kv[w..], ld),
                len,
                (heads, dh),
                masked.then_some(&bias[..]),
                &mut logits,
                &mut got,
            );
            let k: Vec<f32> = (0..len)
                .flat_map(|s| kv[s * ld..s * ld + w].to_vec())
                .collect();
            let v: Vec<f32> = (0..len)
                .flat_map(|s| kv[s * ld + w..s * ld + 2 * w].to_vec())
                .collect();
            let want = r::attention(
                &q,
                &k,
                &v,
                masked.then_some(&mask[..]),
                1,
                1,
                len,
                0,
                heads,
                dh,
                false,
            );
            assert_close(
                &format!("attention len {len} heads {heads}x{dh}"),
                &got,
                &want,
                ATTENTION_TOL,
            );
        }
    }

    #[test]
    fn log_softmax_matches_reference() {
        let mut rng = Rng::new(14);
        for &(n, cb) in &[(32, 32), (32, 24), (5, 1)] {
            let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 8.0).collect();
            let mut got = vec![0.0; n];
            log_softmax(&x, cb, &mut got);
            let want = r::log_softmax(&x, 1, n, cb);
            assert_close(
                &format!("log_softmax {n} cb {cb}"),
                &got,
                &want,
                LOG_SOFTMAX_TOL,
            );
        }
    }
}
