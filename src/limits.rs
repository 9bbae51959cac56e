//! The budgets a bundle and a search config must fit before anything is allocated.
//!
//! This module sits above `bundle` and `search` (it reads a [`Manifest`] and a
//! [`SearchConfig`]); neither of them imports it. Sessions check their config against it before
//! they allocate.
//!
//! Each manifest dimension is bounded on its own, but their products are what sessions
//! allocate and what requests compute: a few-MB bundle with a long history and a wide
//! feed-forward layer could ask for gigabytes, and a failed allocation aborts the process
//! (no C caller can catch that). So `check_session` computes, with checked arithmetic,
//! an upper bound of what one session of any engine holds and of the multiply-adds one
//! request performs, and refuses the pair as a `limits` error naming the numbers when
//! either is over its budget. Engines then allocate with fallible allocation
//! (`crate::alloc`), so even a machine with less memory than the budget gets an error, not an
//! abort.
//!
//! The budgets are far above the shipped bundles (the default session holds about 0.3 MB
//! and a request costs about 10 M multiply-adds; `promise bench` prints both).

use crate::bundle::Manifest;
use crate::error::{err, Result};
use crate::search::SearchConfig;

/// Most bytes one session (search buffers + an engine's buffers) may hold.
pub const MAX_SESSION_BYTES: u64 = 256 << 20;
/// Most multiply-adds one request may cost (encoder, every decoder level, every PRM call):
/// about a second on one phone core; the default request costs about 1% of it.
pub const MAX_REQUEST_MACS: u64 = 1 << 30;

/// `a * b * ...` or `None` on overflow.
fn prod(xs: &[usize]) -> Option<u64> {
    xs.iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(x as u64))
}

fn sum(xs: &[Option<u64>]) -> Option<u64> {
    xs.iter().try_fold(0u64, |acc, &x| acc.checked_add(x?))
}

/// What one session of `m` with `cfg` costs: (bytes held, multiply-adds per request), as
/// upper bounds over the engines. `None` when a product overflows u64.
pub(crate) fn session_cost(m: &Manifest, cfg: &SearchConfig) -> Option<(u64, u64)> {
    let dm = &m.dims;
    let (d, ff, pff) = (dm.d_model, dm.ff, dm.prm_ff);
    let hd = dm.heads.checked_mul(dm.head_dim)?;
    let pd = dm.prm_heads.checked_mul(dm.head_dim)?;
    let (h, l, c) = (m.history, m.levels, m.max_codebook());
    let (kb, mc) = (cfg.beam_capacity(), cfg.candidates);
    let (enc_l, dec_l) = (dm.encoder_layers, dm.decoder_layers);
    let rows = h.max(kb).max(mc);
    let widest = d.max(3 * hd).max(ff).max(pff).max(2 * pd);
    // f32 / i32 values: the widest activation over every row kind, the memory's keys and
    // values per decoder layer and for the PRM, each beam's self-attention cache (two
    // slots of [L, 2 hd] per layer), the head's logits, the search's pool (K' x C slots,
    // twice on the GPU: keys and nodes), and the seen/prefix bookkeeping
    let values = sum(&[
        prod(&[rows, widest, 6]),
        prod(&[h, hd, 2, dec_l]),
        prod(&[h, pd, 2]),
        prod(&[kb, l, hd, 4, dec_l]),
        prod(&[kb, c, 4]),
        prod(&[mc, 8]),
        prod(&[h, l, 2]),
        prod(&[m.num_items.min(crate::search::MAX_HISTORY), 2]),
    ])?;
    let bytes = values.checked_mul(4)?.checked_add(64 << 10)?;
    // multiply-adds: the encoder (q/k/v/o, attention over H keys, the FFN) and the
    // memory's keys/values; per level, each beam's new token through every decoder layer
    // (self-attention over <= L positions, cross-attention over H) and the head; the PRM
    // on every candidate of every level
    let enc = prod(&[h, enc_l])?.checked_mul(sum(&[
        prod(&[d, hd, 4]),
        prod(&[h, hd, 2]),
        prod(&[d, ff, 2]),
    ])?)?;
    let mem = prod(&[h, d, hd, 2, dec_l])?.checked_add(prod(&[h, d, pd, 2])?)?;
    let dec = prod(&[kb, l, dec_l])?.checked_mul(sum(&[
        prod(&[d, hd, 6]),
        prod(&[l, hd, 2]),
        prod(&[h, hd, 2]),
        prod(&[d, ff, 2]),
    ])?)?;
    let head = prod(&[kb, l, d, c])?;
    let prm = prod(&[mc, l])?.checked_mul(sum(&[
        prod(&[d, pd, 2]),
        prod(&[h, pd, 2]),
        prod(&[d, pff, 2]),
        prod(&[d, d]),
    ])?)?;
    let macs = sum(&[Some(enc), Some(mem), Some(dec), Some(head), Some(prm)])?;
    Some((bytes, macs))
}

/// Refuse a session whose memory or per-request work is over budget (module docs).
pub(crate) fn check_session(m: &Manifest, cfg: &SearchConfig) -> Result<()> {
    let dm = &m.dims;
    let what = || {
        format!(
            "history {}, d_model {}, heads {} x head_dim {}, ff {}, prm_ff {}, {} + {} layers, widest codebook {}, K' {} (beam capacity {}), K+ {}",
            m.history,
            dm.d_model,
            dm.heads,
            dm.head_dim,
            dm.ff,
            dm.prm_ff,
            dm.encoder_layers,
            dm.decoder_layers,
            m.max_codebook(),
            cfg.beams,
            cfg.beam_capacity(),
            cfg.candidates
        )
    };
    let Some((bytes, macs)) = session_cost(m, cfg) else {
        return Err(err!(
            Limits,
            "the session's size overflows 64 bits ({})",
            what()
        ));
    };
    if bytes > MAX_SESSION_BYTES {
        return Err(err!(
            Limits,
            "a session needs up to {bytes} bytes, over the budget of {MAX_SESSION_BYTES} ({})",
            what()
        ));
    }
    if macs > MAX_REQUEST_MACS {
        return Err(err!(
            Limits,
            "a request costs up to {macs} multiply-adds, over the budget of {MAX_REQUEST_MACS} ({})",
            what()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn manifest(edit: impl Fn(&mut serde_json::Value)) -> Manifest {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/ml1m/manifest.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir).unwrap()).unwrap();
        edit(&mut v);
        Manifest::from_json(&v.to_string()).unwrap()
    }

    #[test]
    fn the_shipped_default_is_far_inside_the_budgets() {
        let m = manifest(|_| {});
        let (bytes, macs) = session_cost(&m, &SearchConfig::default()).unwrap();
        assert!(bytes < MAX_SESSION_BYTES / 100, "{bytes}");
        assert!(macs < MAX_REQUEST_MACS / 20, "{macs}");
        check_session(&m, &SearchConfig::default()).unwrap();
    }

    #[test]
    fn products_of_bounded_dims_are_refused_with_their_numbers() {
        // each field within its own bound; together, gigabytes per session
        let m = manifest(|v| {
            v["history"] = 4096.into();
            v["model"]["ff"] = 65536.into();
        });
        let e = check_session(&m, &SearchConfig::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Limits, "{e}");
        assert!(
            e.to_string().contains("bytes") && e.to_string().contains("4096"),
            "{e}"
        );
        // a history window of 4,096 with the default widths: seconds of work per request
        let m = manifest(|v| v["history"] = 4096.into());
        let e = check_session(&m, &SearchConfig::plain(1, 1)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Limits, "{e}");
        assert!(e.to_string().contains("multiply-adds"), "{e}");
        // products past 64 bits are an error, not a wrap (the attention PRM's widths
        // count too; the shipped bundle's dense PRM has none)
        let m = manifest(|v| {
            v["model"]["prm_kind"] = "attention".into();
            v["model"]["prm_heads"] = 4.into();
            for f in [
                "d_model",
                "heads",
                "head_dim",
                "ff",
                "encoder_layers",
                "prm_ff",
            ] {
                v["model"][f] = 65536.into();
            }
        });
        let e = check_session(&m, &SearchConfig::default()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Limits, "{e}");
    }
}
