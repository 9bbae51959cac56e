//! Plain Rust references of the CPU kernels (`cpu/kernels.rs`), written straight from
//! models/train/promise_train/model.py and accumulating in f64. The kernel tests run the kernels on
//! fresh random inputs and compare with these (test-only code). The GPU's stage kernels
//! are checked against the fused CPU engine instead (`gpu/tests`).

/// RMSNorm: x / sqrt(mean(x^2) + eps) * gain, per row.
pub fn rmsnorm(x: &[f32], gain: &[f32], rows: usize, n: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..n {
            out[r * n + j] = (row[j] as f64 * inv * gain[j] as f64) as f32;
        }
    }
    out
}

/// `matmul`: y = act(x @ (w * col_scale) + bias), optionally added to `acc`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    x: &[f32],
    w: &[f32],
    col_scale: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    acc: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let mut s = 0.0f64;
            for i in 0..k {
                s += x[r * k + i] as f64 * w[i * n + c] as f64;
            }
            let mut v = s * col_scale[c] as f64;
            if let Some(b) = bias {
                v += b[c] as f64;
            }
            if relu {
                v = v.max(0.0);
            }
            if let Some(a) = acc {
                v += a[r * n + c] as f64;
            }
            out[r * n + c] = v as f32;
        }
    }
    out
}

/// `attention`: softmax(q k^T * scale + bias) v per (row, query, head). `kvrow` = 0 shares
/// one key/value set across rows; `mask[s] = 0` adds -1e9; causal hides keys after t.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    rows: usize,
    tq: usize,
    skv: usize,
    kvrow: usize,
    heads: usize,
    dh: usize,
    causal: bool,
) -> Vec<f32> {
    let w = heads * dh;
    let scale = 1.0 / (dh as f64).sqrt();
    let mut out = vec![0.0; rows * tq * w];
    for b in 0..rows {
        for t in 0..tq {
            let qi = b * tq + t;
            for h in 0..heads {
                let mut logits = vec![f64::NEG_INFINITY; skv];
                for (s, l) in logits.iter_mut().enumerate() {
                    if causal && s > t {
                        continue;
                    }
                    let kr = (b * kvrow + s) * w + h * dh;
                    let mut dot = 0.0f64;
                    for i in 0..dh {
                        dot += q[qi * w + h * dh + i] as f64 * k[kr + i] as f64;
                    }
                    let bias = mask.map(|m| (1.0 - m[s] as f64) * -1e9).unwrap_or(0.0);
                    *l = dot * scale + bias;
                }
                let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = logits.iter().map(|&x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for i in 0..dh {
                    let mut s = 0.0;
                    for (sk, &ek) in e.iter().enumerate() {
                        s += ek * v[(b * kvrow + sk) * w + h * dh + i] as f64;
                    }
                    out[qi * w + h * dh + i] = (s / z) as f32;
                }
            }
        }
    }
    out
}

/// `log_softmax`: per row over n codes, codes >= cb get -1e9 added first.
pub fn log_softmax(x: &[f32], rows: usize, n: usize, cb: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * n];
    for r in 0..rows {
        let v: Vec<f64> = (0..n)
            .map(|j| x[r * n + j] as f64 + if j >= cb { -1e9 } else { 0.0 })
            .collect();
        let mx = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + v.iter().map(|&a| (a - mx).exp()).sum::<f64>().ln();
        for j in 0..n {
            out[r * n + j] = (v[j] - lse) as f32;
        }
    }
    out
}

/// The kernel tests' random source (xorshift; fresh inputs, never zeros).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.f() + 1.0) * 0.5 * n as f32) as usize % n
    }
}

/// |got - want| <= atol + rtol * |want| elementwise, finiteness equal.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], (atol, rtol): (f32, f32)) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs() && g.is_finite() == w.is_finite(),
            "{what}: element {i} is {g}, reference {w} (|diff| {err} > {atol} + {rtol} * |ref|)"
        );
    }
}
