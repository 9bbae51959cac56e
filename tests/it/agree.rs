//! Two backends (or engines) agree: the same items in the same order on histories no
//! other test uses, for every search config.
//!
//! Order tolerance: two adjacent items may swap only when the reference side's own scores
//! for them differ by less than `TIE_TOL` (an exact near-tie that float rounding can
//! flip); scores of the same item agree within `SCORE_TOL`.

use promise_rt::{Model, SearchConfig};

/// Every shipped bundle: each numeric variant of both models, the tiny test bundle, and
/// two synthetic ones (models/train/promise_train/synth.py): a causal encoder that also reads an item
/// column (tests/data/causal) and an int8 PRM with the path query (tests/data/path).
pub const BUNDLES: [&str; 9] = [
    "models/tiny",
    "tests/data/causal",
    "tests/data/path",
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

/// Histories that leave few items unseen (every item but 0, 1, 3, 9, 10, 11 of them, in a
/// random order) and one that covers whole level-1 subtrees (every item whose level-1
/// code is even): where the full-feed rule decides what comes back.
pub fn coverage_histories(catalog: &promise_rt::Catalog, seed: u64) -> Vec<Vec<u32>> {
    let items = catalog.num_items() as u32;
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::new();
    for left in [0usize, 1, 3, 9, 10, 11] {
        let mut all: Vec<u32> = (0..items).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        all.truncate(all.len().saturating_sub(left));
        out.push(all);
    }
    out.push(
        (0..items)
            .filter(|&i| catalog.item_code(i, 0).is_multiple_of(2))
            .collect(),
    );
    out
}

/// The full-feed guarantee (src/search/mod.rs): min(N, unseen) distinct items, none seen.
pub fn assert_full_feed(
    got: &[promise_rt::Recommendation],
    h: &[u32],
    items: usize,
    n: usize,
    what: &str,
) {
    let mut seen = h.to_vec();
    seen.sort_unstable();
    seen.dedup();
    let unseen = items - seen.len();
    assert_eq!(
        got.len(),
        n.min(unseen),
        "{what}: {unseen} unseen items, a feed of {}",
        got.len()
    );
    let mut ids: Vec<u32> = got.iter().map(|r| r.item).collect();
    assert!(
        ids.iter().all(|i| seen.binary_search(i).is_err()),
        "{what}: a seen item came back"
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "{what}: an item came back twice");
}

/// The wide test bundle (tests/data/wide, a first level of 65,535 codes) and its
/// histories: 3 fresh ones and 3 that leave few items unseen.
pub fn wide() -> (promise_rt::Bundle, Vec<Vec<u32>>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wide");
    let bundle = promise_rt::Bundle::open(dir).expect("wide bundle");
    assert_eq!(bundle.manifest().codebook[0], 65_535);
    let items = bundle.catalog().num_items() as u32;
    let mut hist = fresh_histories(3, items, 0x31DE);
    hist.extend(
        coverage_histories(bundle.catalog(), 0x31DF)
            .into_iter()
            .take(3),
    );
    (bundle, hist)
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
    let (wn, gn) = (
        want_model.backend().to_string(),
        got_model.backend().to_string(),
    );
    for cfg in configs() {
        let mut c = want_model.session(cfg).expect("session");
        let mut g = got_model.session(cfg).expect("session");
        for h in histories {
            let want = c.recommend(h).expect("recommend").to_vec();
            let got = g.recommend(h).expect("recommend").to_vec();
            let items = want_model.bundle().catalog().num_items();
            assert_full_feed(
                &want,
                h,
                items,
                cfg.results,
                &format!("{what} {cfg:?} {wn}"),
            );
            assert_full_feed(&got, h, items, cfg.results, &format!("{what} {cfg:?} {gn}"));
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
