//! Two backends (or engines) agree: the same items in the same order on histories no
//! other test uses, for every search config.
//!
//! Order tolerance: two adjacent items may swap only when the reference side's own scores
//! for them differ by less than `TIE_TOL` (an exact near-tie that float rounding can
//! flip); scores of the same item agree within `SCORE_TOL`.

use promise_rt::{Model, SearchConfig};

/// Every shipped bundle: each numeric variant of both models, and the tiny test bundle.
pub const BUNDLES: [&str; 7] = [
    "models/tiny",
    "models/ml1m",
    "models/ml1m-f16",
    "models/ml1m-int8",
    "models/ml1m-large",
    "models/ml1m-large-f16",
    "models/ml1m-large-int8",
];

pub const SCORE_TOL: f32 = 1e-4;
pub const TIE_TOL: f32 = 1e-5;

/// Histories of 1..40 random catalogue items from a generator no other test uses.
pub fn fresh_histories(n: usize, items: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 7;
        s ^= s >> 9;
        s
    };
    (0..n)
        .map(|_| {
            let len = 1 + (next() % 40) as usize;
            (0..len).map(|_| (next() % items as u64) as u32).collect()
        })
        .collect()
}

pub fn configs() -> Vec<SearchConfig> {
    let prm = |beams, candidates, results, mix| SearchConfig {
        beams,
        candidates,
        results,
        prm: true,
        mix,
    };
    vec![
        SearchConfig::plain(1, 1),
        SearchConfig::plain(4, 10),
        SearchConfig::plain(16, 10),
        prm(1, 4, 3, 0.0),
        prm(4, 16, 10, 0.0),
        prm(4, 16, 10, 0.5),
        prm(8, 32, 10, 0.5),
        SearchConfig::default(), // K'=16, K+=64
    ]
}

/// Compare `got` (the GPU, or the fused CPU engine) with `want` (the CPU, or tract) on
/// every config over `histories`; returns (requests, near-tie swaps).
pub fn agree(
    want_model: &Model,
    got_model: &Model,
    histories: &[Vec<u32>],
    what: &str,
) -> (usize, usize) {
    let (mut n, mut swaps) = (0, 0);
    let (wn, gn) = (want_model.backend_name(), got_model.backend_name());
    for cfg in configs() {
        let mut c = want_model.session(cfg).expect("session");
        let mut g = got_model.session(cfg).expect("session");
        for h in histories {
            let want = c.recommend(h).expect("recommend").to_vec();
            let got = g.recommend(h).expect("recommend").to_vec();
            assert_eq!(got.len(), want.len(), "{what} {cfg:?}: result count");
            for (i, r) in got.iter().enumerate() {
                let same = r.item == want[i].item;
                let near = |j: usize| {
                    j < want.len()
                        && r.item == want[j].item
                        && (want[i].score - want[j].score).abs() < TIE_TOL
                };
                let swapped = !same && ((i > 0 && near(i - 1)) || near(i + 1));
                assert!(
                    same || swapped,
                    "{what} {cfg:?} history {h:?}: rank {i} is item {} in {}, {} in {}\n {:?}\n {:?}",
                    r.item,
                    gn,
                    want[i].item,
                    wn,
                    got,
                    want
                );
                if swapped {
                    swaps += 1;
                } else {
                    assert!(
                        (r.score - want[i].score).abs() <= SCORE_TOL,
                        "{what} {cfg:?}: item {} scores {} in {gn}, {} in {wn}",
                        r.item,
                        r.score,
                        want[i].score
                    );
                }
            }
            n += 1;
        }
    }
    (n, swaps)
}
