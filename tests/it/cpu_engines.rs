//! The CPU backend's two engines agree: the fused kernels (default) return the same items
//! in the same order as the bundle's ONNX graphs run by tract, on histories no other test
//! uses, for every search config and every shipped bundle (f32, f16, int8; small, large).

#[cfg(feature = "tract")]
use promise_rt::{BackendInfo, Bundle, Device, Model};
use promise_rt::{CpuEngine, LoadOptions};

#[cfg(feature = "tract")]
use crate::agree::{agree, coverage_histories, fresh_histories, BUNDLES};
#[cfg(feature = "tract")]
use crate::util::repo;

#[cfg(feature = "tract")]
fn load(bundle: &Bundle, engine: CpuEngine) -> Model {
    let opts = LoadOptions::default().with_cpu_engine(engine);
    Model::load_with(bundle, Device::Cpu, &opts).expect("cpu model")
}

#[cfg(feature = "tract")]
#[test]
fn fused_engine_matches_tract_on_fresh_histories_for_every_bundle() {
    for (bi, dir) in BUNDLES.iter().enumerate() {
        let bundle = Bundle::open(repo().join(dir)).expect("bundle");
        let tract = load(&bundle, CpuEngine::Tract);
        let fused = load(&bundle, CpuEngine::Fused);
        assert!(
            matches!(
                fused.backend(),
                BackendInfo::Cpu {
                    engine: CpuEngine::Fused,
                    ..
                }
            ),
            "{}",
            fused.backend()
        );
        let items = bundle.catalog().num_items() as u32;
        let mut hist = fresh_histories(8, items, 0xF05ED + bi as u64);
        hist.extend(coverage_histories(bundle.catalog(), 0xFEED + bi as u64));
        let (n, swaps) = agree(&tract, &fused, &hist, dir);
        eprintln!("{dir}: fused == tract on {n} requests ({swaps} near-tie swaps)");
    }
}

/// A bundle whose first level has 65,535 codes (3,000 items, random weights, made by
/// models/train/promise_train/synth.py): both engines answer, agree, and fill the feed.
#[cfg(feature = "tract")]
#[test]
fn a_65535_code_level_works_on_both_engines() {
    let (bundle, hist) = crate::agree::wide();
    let tract = load(&bundle, CpuEngine::Tract);
    let fused = load(&bundle, CpuEngine::Fused);
    let (n, _) = agree(&tract, &fused, &hist, "tests/data/wide");
    eprintln!("wide: fused == tract on {n} requests");
}

#[test]
fn the_cpu_engine_is_named_and_parsed() {
    assert_eq!("fused".parse::<CpuEngine>().unwrap(), CpuEngine::Fused);
    assert_eq!("tract".parse::<CpuEngine>().unwrap(), CpuEngine::Tract);
    let e = "onnx".parse::<CpuEngine>().unwrap_err();
    assert!(e.to_string().contains("\"onnx\""), "{e}");
    assert_eq!(LoadOptions::default().cpu_engine, CpuEngine::Fused);
}

/// A session's history window (`Session::set_history_window`): outside 1..=H a `config`
/// error naming the value; inside, the encoder reads only the last items (the fused engine
/// skips the rest, tract reads them masked: the same feed), and every item of the history
/// is still excluded.
#[cfg(feature = "tract")]
#[test]
fn a_shorter_history_window_is_the_same_on_both_engines_and_still_excludes_the_history() {
    use promise_rt::{ErrorCode, SearchConfig};
    let bundle = Bundle::open(repo().join("models/ml1m")).expect("bundle");
    let h = bundle.manifest().history;
    let (fused, tract) = (
        load(&bundle, CpuEngine::Fused),
        load(&bundle, CpuEngine::Tract),
    );
    let mut f = fused.session(SearchConfig::default()).unwrap();
    let mut t = tract.session(SearchConfig::default()).unwrap();
    assert_eq!(f.history_window(), h);
    for bad in [0, h + 1] {
        let e = f.set_history_window(bad).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Config, "{e}");
        assert!(e.to_string().contains(&format!("window {bad}")), "{e}");
    }
    let history: Vec<u32> = (0..60u32).map(|i| (i * 37) % 3706).collect();
    let items = |s: &mut promise_rt::Session| -> Vec<u32> {
        s.recommend(&history)
            .unwrap()
            .iter()
            .map(|r| r.item)
            .collect()
    };
    let full = items(&mut f);
    for s in [&mut f, &mut t] {
        s.set_history_window(5).unwrap();
    }
    let (short_f, short_t) = (items(&mut f), items(&mut t));
    assert_eq!(
        short_f, short_t,
        "fused and tract differ with a window of 5"
    );
    assert_ne!(short_f, full, "a window of 5 of 60 items changed nothing");
    assert!(
        short_f.iter().all(|i| !history.contains(i)),
        "a history item was recommended"
    );
    assert_eq!(short_f.len(), 10);
}

/// A decoder head of all 1.0 makes every code of every level exactly as likely: the pools
/// are decided by the search's tie-break alone (smaller node id first), and both engines
/// must follow it to the same items in the same order, scores bit-equal.
#[cfg(feature = "tract")]
#[test]
fn exact_ties_follow_the_documented_tie_break_on_both_engines() {
    let d = crate::util::copy_bundle(&crate::util::tiny());
    crate::util::fill_weight(d.path(), "decoder.onnx", "gen.head", 1.0);
    let bundle = Bundle::open(d.path()).expect("tied bundle");
    let (tract, fused) = (
        load(&bundle, CpuEngine::Tract),
        load(&bundle, CpuEngine::Fused),
    );
    let items = bundle.catalog().num_items() as u32;
    for plain in [true, false] {
        let cfg = if plain {
            promise_rt::SearchConfig::plain(4, 10)
        } else {
            promise_rt::SearchConfig::with_beams(4, 10, true)
        };
        let (mut a, mut b) = (tract.session(cfg).unwrap(), fused.session(cfg).unwrap());
        for h in fresh_histories(16, items, 0x71E5) {
            let x: Vec<(u32, u32)> = a
                .recommend(&h)
                .unwrap()
                .iter()
                .map(|r| (r.item, r.score.to_bits()))
                .collect();
            let y: Vec<(u32, u32)> = b
                .recommend(&h)
                .unwrap()
                .iter()
                .map(|r| (r.item, r.score.to_bits()))
                .collect();
            if plain {
                assert_eq!(x, y, "plain search on a tied head, history {h:?}");
            } else {
                let xi: Vec<u32> = x.iter().map(|p| p.0).collect();
                let yi: Vec<u32> = y.iter().map(|p| p.0).collect();
                assert_eq!(xi, yi, "PRM search on a tied head, history {h:?}");
            }
        }
    }
}

/// Stage timing splits a request into the encoder, the decoder and PRM per level, and the
/// search's bookkeeping, without changing its feed; a plain search shows no PRM time; off,
/// there is no breakdown.
#[test]
fn stage_timing_splits_a_request_and_leaves_its_feed_alone() {
    use promise_rt::{Bundle, Device, Model, SearchConfig};
    let bundle = Bundle::open(crate::util::repo().join("models/ml1m")).expect("bundle");
    let opts = LoadOptions::default().with_cpu_engine(CpuEngine::Fused);
    let model = Model::load_with(&bundle, Device::Cpu, &opts).expect("model");
    let levels = bundle.catalog().levels();
    let history: Vec<u32> = (0..30).map(|i| i * 7).collect();
    for cfg in [SearchConfig::default(), SearchConfig::plain(16, 10)] {
        let mut s = model.session(cfg).expect("session");
        assert!(
            s.stage_times().is_none(),
            "no breakdown before it is asked for"
        );
        let plain_feed = s.recommend(&history).expect("request").to_vec();
        s.set_stage_timing(true).expect("timing on");
        let timed_feed = s.recommend(&history).expect("request").to_vec();
        assert_eq!(plain_feed, timed_feed, "timing changed the feed ({cfg:?})");
        let t = *s.stage_times().expect("a breakdown");
        assert!(!t.encoder.is_zero(), "{t:?}");
        for l in 0..levels {
            assert!(!t.decoder[l].is_zero(), "level {l}: {t:?}");
            assert_eq!(
                t.prm[l].is_zero(),
                !cfg.prm,
                "level {l}, prm {}: {t:?}",
                cfg.prm
            );
        }
        for l in levels..t.decoder.len() {
            assert!(t.decoder[l].is_zero() && t.prm[l].is_zero(), "{t:?}");
        }
        let parts = t.encoder + t.decoder.iter().sum::<std::time::Duration>() + t.prm.iter().sum();
        assert!(t.total >= parts, "the parts exceed the request: {t:?}");
        assert_eq!(t.total - parts, t.bookkeeping());
        s.set_stage_timing(false).expect("timing off");
        s.recommend(&history).expect("request");
        assert!(s.stage_times().is_none());
    }
}

/// The fused engine with its catalog-sized tables read in place from the memory map
/// (`LoadOptions::tables_in_place`) computes exactly what it computes on its heap copy:
/// the same items and bit-identical scores, for every shipped bundle (f32, f16, int8), a
/// one-file bundle, and a bundle read into memory.
#[test]
fn tables_read_in_place_give_bit_identical_feeds() {
    use crate::agree::{configs, fresh_histories, BUNDLES};
    use promise_rt::{Bundle, Device, Model, OpenOptions};
    let root = crate::util::repo();
    let mut cases: Vec<(String, Bundle)> = BUNDLES
        .iter()
        .map(|d| (d.to_string(), Bundle::open(root.join(d)).expect("bundle")))
        .collect();
    cases.push((
        "models/ml1m.promise".into(),
        Bundle::open(root.join("models/ml1m.promise")).expect("one-file bundle"),
    ));
    cases.push((
        "models/ml1m-int8 in memory".into(),
        Bundle::open_with(
            root.join("models/ml1m-int8"),
            OpenOptions::default().with_in_memory(true),
        )
        .expect("bundle in memory"),
    ));
    for (what, bundle) in &cases {
        let load = |in_place| {
            let opts = LoadOptions::default()
                .with_cpu_engine(CpuEngine::Fused)
                .with_tables_in_place(in_place);
            Model::load_with(bundle, Device::Cpu, &opts).expect("model")
        };
        let (copied, in_place) = (load(false), load(true));
        let items = bundle.catalog().num_items() as u32;
        let hist = fresh_histories(6, items, 0x1A_91ACE);
        for cfg in configs() {
            let mut a = copied.session(cfg).unwrap();
            let mut b = in_place.session(cfg).unwrap();
            let feed = |s: &mut promise_rt::Session, h: &[u32]| -> Vec<(u32, u32)> {
                let f = s.recommend(h).unwrap();
                f.iter().map(|r| (r.item, r.score.to_bits())).collect()
            };
            for h in &hist {
                assert_eq!(
                    feed(&mut b, h),
                    feed(&mut a, h),
                    "{what} {cfg:?} history {h:?}"
                );
            }
        }
    }
}
