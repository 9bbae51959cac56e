//! `promise bench --flops`: the floor. Counts the multiply-adds of one request and measures
//! this machine's single-core f32 matmul rate, so a latency can be read as achieved/peak.
//!
//! Three counts (matmuls and attention products; embeddings, norms and softmax are left
//! out, they are O(d) per token), live counts taken as their upper bounds
//! min(K', prefixes) and min(K+, K' * C_level):
//! - `graph`: what the tract engine executes. It runs the exported ONNX graphs at the
//!   session's padded shapes: the decoder at 1 row for level 0 and K' rows after, always
//!   for all L tokens, recomputing the cross-attention keys/values of the memory on every
//!   call; the PRM at min(K+, C0) rows for level 0 and K+ rows after.
//! - `gpu`: what the GPU backend computes: the memory's keys/values once per request, the
//!   decoder for the live beams over the tokens up to the current level, the head on the
//!   last token, the PRM on the live candidates.
//! - `fused`: what the fused CPU engine computes, the minimal: as `gpu`, but the decoder
//!   runs only each beam's new token (the earlier tokens' keys/values are cached from its
//!   parent), attending over the cached ones.

use std::path::Path;
use std::time::Instant;

use promise_rt::{Manifest, SearchConfig};

pub struct Macs {
    pub graph: u64,
    pub gpu: u64,
    pub fused: u64,
}

pub fn per_request(m: &Manifest, cfg: &SearchConfig) -> Macs {
    let d = m.dims.d_model as u64;
    let hd = (m.dims.heads * m.dims.head_dim) as u64;
    let ff = m.dims.ff as u64;
    let pd = (m.dims.prm_heads * m.dims.head_dim) as u64;
    let pff = m.dims.prm_ff as u64;
    let h = m.history as u64;
    let l = m.levels as u64;
    let c = m.max_codebook() as u64;
    let (kb, kp) = (cfg.beams as u64, cfg.candidates as u64);
    let enc_layers = m.dims.encoder_layers as u64;
    let dec_layers = m.dims.decoder_layers as u64;

    let encoder = enc_layers * (h * (4 * d * hd + 2 * d * ff) + 2 * h * h * hd);
    let mem_kv = dec_layers * 2 * h * d * hd; // cross-attention keys/values of the memory
                                              // decoder over `rows` beams and `t` tokens each, head on `head_tokens` of each row
    let decoder = |rows: u64, t: u64, head_tokens: u64, with_mem_kv: bool| {
        let per_layer = rows * t * (4 * d * hd + 2 * d * hd + 2 * d * ff)
            + 2 * rows * t * t * hd
            + 2 * rows * t * h * hd;
        dec_layers * per_layer + if with_mem_kv { mem_kv } else { 0 } + rows * head_tokens * d * c
    };
    let prm_kv = 2 * h * d * pd;
    let dense = m.dims.prm_kind == promise_rt::bundle::PrmKind::Dense;
    let prm = |rows: u64, with_kv: bool| {
        if dense {
            // u = memory[H - 1] @ w once, one dot product per node
            return rows * d + if with_kv { d * d } else { 0 };
        }
        rows * (2 * d * pd + 2 * h * pd + 2 * d * pff + d * d + d)
            + if with_kv { prm_kv } else { 0 }
    };

    // one new token per beam at position `t - 1` (t tokens in the cache), head on it
    let step = |rows: u64, t: u64| {
        let per_layer = rows * (6 * d * hd + 2 * d * ff) + 2 * rows * t * hd + 2 * rows * h * hd;
        dec_layers * per_layer + rows * d * c
    };
    let mut graph = encoder;
    let mut gpu = encoder + mem_kv + if cfg.prm { prm_kv } else { 0 };
    let mut fused = gpu;
    let mut prefixes = 1u64; // trie prefixes at the current depth (upper bound)
    for level in 0..l {
        let rows = if level == 0 { 1 } else { kb };
        graph += decoder(rows, l, l, true);
        let live = kb.min(prefixes);
        gpu += decoder(live, level + 1, 1, false);
        fused += step(live, level + 1);
        let cl = m.codebook[level as usize] as u64;
        prefixes *= cl;
        if cfg.prm {
            let graph_rows = if level == 0 {
                kp.min(m.codebook[0] as u64)
            } else {
                kp
            };
            graph += prm(graph_rows, true);
            gpu += prm(kp.min(live * cl), false);
            fused += prm(kp.min(live * cl), false);
        }
    }
    Macs { graph, gpu, fused }
}

/// Single-core f32 matmul rate of the fused engine's kernel at the same shape as
/// [`peak_gmacs`] (128 x 256 x 256), in GMAC/s.
pub fn fused_peak_gmacs() -> f64 {
    use promise_rt::internals::kernels::{matmul, Epilogue, Isa};
    let (m, k, n) = (128, 256, 256);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    let isa = Isa::detect();
    let mut run = |reps: usize| {
        let t = Instant::now();
        for _ in 0..reps {
            matmul(
                isa,
                (&x, k),
                m,
                &w,
                (k, n),
                (&mut out, n),
                Epilogue::default(),
            );
        }
        t.elapsed().as_secs_f64()
    };
    run(50); // warm-up
    let best = (0..5).map(|_| run(200)).fold(f64::MAX, f64::min);
    (m * k * n * 200) as f64 / best / 1e9
}

/// Single-core f32 matmul rate of tract on `benches/data/matmul_128x256x256.onnx` (the
/// shapes of our larger layers, so the rate our graphs could reach), in GMAC/s.
pub fn peak_gmacs(repo: &Path) -> anyhow::Result<f64> {
    use tract_onnx::prelude::*;
    let path = repo.join("benches/data/matmul_128x256x256.onnx");
    let plan = tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", crate::shown(&path)))?;
    let x = Tensor::from_shape(&[128, 256], &vec![0.5f32; 128 * 256])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_tvalue();
    let run = |n: usize| -> anyhow::Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            plan.run(tvec![x.clone()])
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    run(50)?; // warm-up
    let mut best = f64::MAX;
    for _ in 0..5 {
        best = best.min(run(200)?);
    }
    Ok((128.0 * 256.0 * 256.0 * 200.0) / best / 1e9)
}
