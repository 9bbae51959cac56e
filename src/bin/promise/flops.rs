//! `promise bench --flops`: the floor. Counts the multiply-adds of one request and measures
//! this machine's single-core f32 matmul rate, so a latency can be read as achieved/peak.
//!
//! Two counts (matmuls and attention products; embeddings, norms and softmax are left out,
//! they are O(d) per token):
//! - `graph`: what the CPU backend executes. tract runs the exported ONNX graphs at the
//!   session's padded shapes: the decoder at 1 row for level 0 and K' rows after, always
//!   for all L tokens, recomputing the cross-attention keys/values of the memory on every
//!   call; the PRM at min(K+, C0) rows for level 0 and K+ rows after.
//! - `minimal`: what the model needs: the decoder only for the live beams and the tokens
//!   up to the current level, the memory's keys/values once per request, the head only for
//!   the last token, the PRM only for the live candidates (live counts taken as their
//!   upper bounds min(K', prefixes) and min(K+, K' * C_level)). This is what the GPU
//!   backend computes.

use std::path::Path;
use std::time::Instant;

use promise_rt::{Manifest, SearchConfig};

pub struct Macs {
    pub graph: u64,
    pub minimal: u64,
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
    let prm = |rows: u64, with_kv: bool| {
        rows * (2 * d * pd + 2 * h * pd + 2 * d * pff + d * d + d)
            + if with_kv { prm_kv } else { 0 }
    };

    let mut graph = encoder;
    let mut minimal = encoder + mem_kv + if cfg.prm { prm_kv } else { 0 };
    let mut prefixes = 1u64; // trie prefixes at the current depth (upper bound)
    for level in 0..l {
        let rows = if level == 0 { 1 } else { kb };
        graph += decoder(rows, l, l, true);
        let live = kb.min(prefixes);
        minimal += decoder(live, level + 1, 1, false);
        let cl = m.codebook[level as usize] as u64;
        prefixes *= cl;
        if cfg.prm {
            let graph_rows = if level == 0 {
                kp.min(m.codebook[0] as u64)
            } else {
                kp
            };
            graph += prm(graph_rows, true);
            minimal += prm(kp.min(live * cl), false);
        }
    }
    Macs { graph, minimal }
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
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", path.display()))?;
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
