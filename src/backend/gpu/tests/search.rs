//! The search kernels (`select_candidates`, `select_beams`) and whole sessions:
//! selection against the CPU search's top-k, the dispatch count, non-finite values.

use super::*;
use crate::search::topk::{by_cum, by_key, top_k, Scored};

/// The search's selection kernels against the CPU search's top-k (`search::topk`), on
/// random keys drawn from a few values (so ties are everywhere: the tie-break by node id
/// decides), with invalid slots, unique node ids in random order. Exact equality: the
/// kernels only compare and copy (and mix with 0.5, exact in binary).
#[test]
fn selection_kernels_match_the_cpu_top_k() {
    let Some(rig) = rig(Numeric::F32, true, true) else {
        return;
    };
    let mut rng = Rng::new(21);
    // the last case is a level with 200,000 children: the radix select is O(slots)
    for &(slots, keep) in &[
        (512usize, 64usize),
        (96, 100),
        (40, 1),
        (2048, 256),
        (200_000, 64),
    ] {
        let pool = select_candidates_case(&rig, &mut rng, slots, keep);
        select_beams_cases(&rig, &mut rng, &pool, keep);
    }
}

/// Keys drawn from a few values, so ties are everywhere.
fn tie(rng: &mut Rng) -> f32 {
    (rng.f() * 8.0).round() / 4.0
}

/// `select_candidates` on `slots` random slots (keys, nodes, unseen counts; a fifth
/// invalid) against the CPU's top-`keep` by cumulative log-prob; returns that pool.
fn select_candidates_case(rig: &Rig, rng: &mut Rng, slots: usize, keep: usize) -> Vec<Scored> {
    let ar = Arenas::empty();
    {
        // select_candidates: slots [0, slots) of keys / nodes / unseen counts -> the pool
        let mut perm: Vec<usize> = (0..slots).collect();
        for i in (1..slots).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let nodes: Vec<i32> = (0..slots)
            .map(|e| {
                if rng.below(5) == 0 {
                    -1
                } else {
                    (perm[e] * 3 + 1) as i32
                }
            })
            .collect();
        let unseen: Vec<i32> = (0..slots).map(|_| 1 + rng.below(4) as i32).collect();
        let keys: Vec<f32> = (0..slots).map(|_| tie(rng)).collect();
        let (i0, ui) = (4, 4 + slots);
        let (i1, i2, uo) = (ui + slots, ui + slots + keep, ui + slots + 2 * keep);
        let mut ints = vec![7i32; uo + keep];
        ints[i0..i0 + slots].copy_from_slice(&nodes);
        ints[ui..ui + slots].copy_from_slice(&unseen);
        let mut act = keys.clone();
        act.resize(slots + keep, 0.0);
        let p = Params {
            rows: slots as u32,
            n: 32,
            live: 0,
            i0: i0 as u32,
            a: 0,
            keep: keep as u32,
            i1: i1 as u32,
            o: slots as u32,
            i2: i2 as u32,
            u_in: ui as u32,
            u_out: uo as u32,
            count: 1,
            ..Params::default()
        };
        rig.run_ids(Kernel::SelectCandidates, p, 1, &ar, &mut act, &mut ints);
        let mut want: Vec<Scored> = (0..slots)
            .filter(|&e| nodes[e] >= 0)
            .map(|e| Scored {
                node: nodes[e] as u32,
                parent: (e / 32) as u32,
                cum: keys[e],
                key: keys[e],
                unseen: unseen[e] as u32,
            })
            .collect();
        top_k(&mut want, keep, by_cum);
        let what = format!("select_candidates {slots} slots keep {keep}");
        assert_eq!(
            (ints[0], ints[1] as usize),
            (0, want.len()),
            "{what}: counts"
        );
        // the pool is a set (select_beams ranks it): compare in node order
        let mut got: Vec<(u32, f32, u32, u32)> = (0..want.len())
            .map(|r| {
                let (n, par, u) = (ints[i1 + r], ints[i2 + r], ints[uo + r]);
                (n as u32, act[slots + r], par as u32, u as u32)
            })
            .collect();
        got.sort_by_key(|g| g.0);
        let mut exp: Vec<(u32, f32, u32, u32)> = want
            .iter()
            .map(|w| (w.node, w.cum, w.parent, w.unseen))
            .collect();
        exp.sort_by_key(|g| g.0);
        assert_eq!(got, exp, "{what}: the pool");
        want
    }
}

/// `select_beams` on the pool `want`: the top `keep` by key (last level, need 0), and
/// before the last level with the full-feed rule (need = N: more beams in key order until
/// they hold N unseen leaves), with and without the PRM, against the CPU search's rule.
fn select_beams_cases(rig: &Rig, rng: &mut Rng, want: &[Scored], keep: usize) {
    let ar = Arenas::empty();
    {
        let m = want.len();
        let scores: Vec<f32> = (0..m).map(|_| tie(rng)).collect();
        for (prm, mix, need) in [
            (false, 0.0f32, 0usize),
            (true, 0.0, 0),
            (true, 0.5, 0),
            (true, 0.5, 3 * keep),
            (false, 0.0, 2 * keep + 1),
        ] {
            let cap = keep.max(need).min(m.max(1));
            let (pn, on, pu) = (4, 4 + m, 4 + m + cap);
            let mut ints = vec![7i32; pu + m];
            ints[1] = m as i32;
            for (r, w) in want.iter().enumerate() {
                ints[pn + r] = w.node as i32;
                ints[pu + r] = w.unseen as i32;
            }
            let mut act: Vec<f32> = want.iter().map(|w| w.cum).collect();
            act.extend_from_slice(&scores);
            act.resize(2 * m + cap, 0.0);
            let p = Params {
                n: 32,
                live: 1,
                i0: pn as u32,
                a: 0,
                b: m as u32,
                prm: prm as u32,
                mix,
                err: 3,
                keep: keep as u32,
                need: need as u32,
                u_in: pu as u32,
                i1: on as u32,
                o: (2 * m) as u32,
                count: 2,
                width: 0,
                ..Params::default()
            };
            let groups = (m as u32).div_ceil(WG).max(1);
            rig.run_ids(Kernel::SelectBeams, p, groups, &ar, &mut act, &mut ints);
            let mut pool = want.to_vec();
            for (s, &p) in pool.iter_mut().zip(&scores) {
                s.key = match (prm, mix) {
                    (false, _) => s.cum,
                    (true, 0.0) => p,
                    (true, mix) => (1.0 - mix) * p + mix * s.cum,
                };
            }
            // the CPU search's rule (src/search/mod.rs)
            top_k(&mut pool, keep.max(need), by_key);
            let mut kept = keep.min(pool.len());
            let mut held: usize = pool[..kept].iter().map(|s| s.unseen as usize).sum();
            while held < need && kept < pool.len() {
                held += pool[kept].unseen as usize;
                kept += 1;
            }
            pool.truncate(kept);
            let what = format!("select_beams pool {m} keep {keep} need {need} prm {prm} mix {mix}");
            assert_eq!(
                (ints[2] as usize, ints[3]),
                (pool.len(), 7),
                "{what}: count, error flag"
            );
            for (r, w) in pool.iter().enumerate() {
                let got = (ints[on + r] as u32, act[2 * m + r]);
                assert_eq!(got, (w.node, w.key), "{what}: rank {r}");
            }
        }
    }
}

/// The dispatch count the README quotes for the default bundle (2 encoder layers, 3
/// levels): 1 + 2 for the encoder (embedding + layer 0's q/k/v, then one per layer, the
/// last with the memory's keys and values), and per level the decoder step (every layer,
/// the head, the log-softmax, the trie expansion), top-K+, the PRM and top-K':
/// 3 + 3 * 4 = 15 per request, in one submission; 12 without the PRM.
#[test]
fn the_default_bundle_needs_15_dispatches_per_request() {
    let bundle = Bundle::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/ml1m")).unwrap();
    if rig(Numeric::F32, true, true).is_none() {
        return;
    }
    let model = GpuModel::load(&bundle).expect("ml1m loads on the GPU");
    let s = model.session(&SearchConfig::default()).unwrap();
    assert_eq!((s.plan.encoder.len(), s.plan.decoder.len()), (3, 3));
    assert_eq!((s.plan.select.len(), s.plan.finish.len()), (3, 3));
    assert_eq!(s.plan.dispatches(true), 15);
    assert_eq!(s.plan.dispatches(false), 12);
    assert!(s.plan.dispatches(true) <= 16, "issue 15's budget");
}

/// The device search flags a non-finite log-probability or PRM score (a norm gain of
/// 3e38, opened past the weight range for this test, makes the head's or the PRM's input
/// overflow) and the
/// session reports it as a Backend error naming which, like the CPU search does.
#[test]
fn the_device_search_reports_non_finite_values() {
    if rig(Numeric::F32, true, true).is_none() {
        return;
    }
    for (file, gain, what) in [
        ("decoder.onnx", "gen.dec_norm.w", "log-probability"),
        ("prm.onnx", "prm.n3.w", "PRM"),
    ] {
        let (_dir, bundle) = crate::bundle::onnx::tiny_with_weight(file, gain, 3e38);
        let m = bundle.manifest();
        let codes = vec![1i64; m.history * m.encoder_columns()];
        let mask = vec![1.0f32; m.history];
        let seen: Vec<u32> = Vec::new();
        let model = GpuModel::load(&bundle).unwrap();
        let mut s = model.session(&SearchConfig::default()).unwrap();
        let mut out = vec![(0u32, 0.0f32); 10];
        let e = s
            .search_on_device(&codes, &mask, &seen, &mut out)
            .expect_err("an overflowing gain must be reported");
        assert_eq!(e.code(), crate::ErrorCode::Backend, "{e}");
        assert!(
            e.to_string().contains(what) && e.to_string().contains("non-finite"),
            "{gain}: {e}"
        );
    }
}
