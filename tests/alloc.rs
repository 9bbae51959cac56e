//! Proof of "allocation-free": a counting global allocator (this binary only) shows that,
//! after a session exists and has served one request, `recommend` makes zero heap
//! allocations in the search and its bookkeeping (fake scorer), for plain and PRM search.
//! The fused CPU engine's whole request (search and forward passes) allocates nothing
//! either. It also prints what the tract engine's forward passes allocate per request (not
//! asserted: that is tract's, measured and reported).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use promise_rt::bundle::catalog::{build, Catalog};
use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, SearchConfig, Searcher};

struct Counting;
thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
    // bytes allocated minus bytes freed on this thread
    static BYTES: Cell<i64> = const { Cell::new(0) };
}
fn add_bytes(n: i64) {
    let _ = BYTES.try_with(|b| b.set(b.get() + n));
}
// SAFETY: forwards to the system allocator unchanged; counts calls and bytes per thread.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        add_bytes(l.size() as i64);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        add_bytes(-(l.size() as i64));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        add_bytes(n as i64 - l.size() as i64);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static A: Counting = Counting;

fn count() -> u64 {
    COUNT.with(|c| c.get())
}

#[path = "support/fake.rs"]
mod fake;
use fake::Fake;

#[test]
fn the_search_allocates_nothing_per_request() {
    // a catalog shaped like ML-1M's: 3 levels, codebook 32
    let sids: Vec<Vec<u16>> = (0..3706u32)
        .map(|i| vec![(i % 32) as u16, ((i / 32) % 32) as u16, (i / 1024) as u16])
        .collect();
    let cat = Catalog::from_bytes(build(&sids, &[32, 32, 4]).unwrap()).unwrap();
    let mut histories: Vec<Vec<u32>> = (0..50u32)
        .map(|u| {
            (0..(1 + u * 7 % 90))
                .map(|j| (u * 131 + j * 17) % 3706)
                .collect()
        })
        .collect();
    // the full-feed rule at work: every item but a few, and whole level-1 subtrees
    histories.extend(all_but(3706, &[5, 77, 1000]));
    for cfg in [
        SearchConfig::plain(1, 1),
        SearchConfig::plain(16, 10),
        SearchConfig {
            beams: 4,
            candidates: 16,
            results: 10,
            prm: true,
            mix: 0.0,
        },
        SearchConfig {
            beams: 32,
            candidates: 256,
            results: 100,
            prm: true,
            mix: 0.3,
        },
    ] {
        let mut s = Searcher::new(cfg, &cat, 20).unwrap();
        let mut f = Fake::new(32, cat.levels(), 7);
        s.run(&cat, &mut f, &histories[0]).unwrap(); // first request
        let before = count();
        let mut served = 0;
        for h in &histories {
            served += s.run(&cat, &mut f, h).unwrap().len();
        }
        let allocs = count() - before;
        assert!(served > 0);
        assert_eq!(
            allocs,
            0,
            "{cfg:?}: {allocs} allocations in {} requests",
            histories.len()
        );
        // errors do not allocate either... except their message: measured, not asserted
        let before = count();
        let _ = s.run(&cat, &mut f, &[]);
        println!("{cfg:?}: 0 allocations per request in the search; an error costs {} allocation(s) (its message)", count() - before);
    }
}

/// Histories of every item but `left[..k]` for each k, and every item whose first code is
/// even (whole level-1 subtrees of the catalogs here).
fn all_but(items: u32, left: &[u32]) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = (0..=left.len())
        .map(|k| (0..items).filter(|i| !left[..k].contains(i)).collect())
        .collect();
    out.push((0..items).filter(|i| i % 2 == 0).collect());
    out
}

fn cpu_model(bundle: &str, engine: CpuEngine) -> Model {
    cpu_model_with(bundle, LoadOptions::default().with_cpu_engine(engine))
}

fn cpu_model_with(bundle: &str, opts: LoadOptions) -> Model {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(bundle);
    Model::load_with(&Bundle::open(dir).unwrap(), Device::Cpu, &opts).unwrap()
}

#[test]
fn a_whole_request_on_the_fused_cpu_engine_allocates_nothing() {
    // (also with the catalog-sized tables read in place from the memory map)
    for (bundle, in_place) in [
        ("models/tiny", false),
        ("models/ml1m", false),
        ("models/ml1m-int8", true),
    ] {
        let opts = LoadOptions::default()
            .with_cpu_engine(CpuEngine::Fused)
            .with_tables_in_place(in_place);
        let model = cpu_model_with(bundle, opts);
        for cfg in [
            SearchConfig::plain(1, 1),
            SearchConfig::plain(4, 10),
            SearchConfig::default(),
            SearchConfig {
                beams: 32,
                candidates: 256,
                results: 100,
                prm: true,
                mix: 0.3,
            },
        ] {
            let mut s = model.session(cfg).unwrap();
            s.recommend(&[1, 2, 3]).unwrap(); // first request
            let items = model.bundle().catalog().num_items() as u32;
            let covering = all_but(items, &[5, 77, 1000]);
            let before = count();
            let mut served = 0;
            for u in 0..20u32 {
                served += s
                    .recommend(&[u, u + 1, u + 7, 100 + u, 3 * u])
                    .unwrap()
                    .len();
            }
            for h in &covering {
                served += s.recommend(h).unwrap().len();
            }
            let allocs = count() - before;
            assert!(served > 0);
            assert_eq!(
                allocs, 0,
                "{bundle} (in place: {in_place}) {cfg:?}: {allocs} allocations in 20 requests"
            );
        }
    }
}

#[cfg(feature = "tract")]
#[test]
fn tract_forward_passes_allocations_are_measured() {
    let model = cpu_model("models/tiny", CpuEngine::Tract);
    for cfg in [
        SearchConfig::plain(4, 10),
        SearchConfig {
            beams: 16,
            candidates: 64,
            results: 10,
            prm: true,
            mix: 0.0,
        },
    ] {
        let mut s = model.session(cfg).unwrap();
        s.recommend(&[1, 2, 3]).unwrap();
        let before = count();
        let n = 20;
        for u in 0..n {
            s.recommend(&[u, u + 1, u + 7, 100 + u]).unwrap();
        }
        let per = (count() - before) as f64 / n as f64;
        println!("tract engine, {cfg:?}: {per:.0} heap allocations per request, all inside tract's forward passes (the search makes 0, see the other test)");
        assert!(
            per > 0.0,
            "the counter must see tract's allocations, or it counts nothing"
        );
    }
}

/// The per-level trace (`promise eval --per-level`): a traced request allocates nothing
/// either, keeps at most max(K', N) nodes per level, each at its level's depth, and its
/// last level is exactly the result leaves.
#[test]
fn a_traced_request_records_each_level_and_allocates_nothing() {
    let model = cpu_model("models/ml1m", CpuEngine::Fused);
    let cat = model.bundle().catalog().clone();
    let cfg = SearchConfig::default();
    let mut s = model.session(cfg).unwrap();
    s.set_trace(true).unwrap();
    s.recommend(&[1, 2, 3]).unwrap();
    let before = count();
    for u in 0..20u32 {
        s.recommend(&[u, u + 1, u + 7, 100 + u]).unwrap();
    }
    assert_eq!(count() - before, 0, "a traced request allocated");
    let recs: Vec<u32> = s
        .recommend(&[4, 8, 15, 16, 23, 42])
        .unwrap()
        .iter()
        .map(|r| r.item)
        .collect();
    for b in 0..cat.levels() {
        let kept = s.kept(b);
        assert!(!kept.is_empty() && kept.len() <= cfg.beam_capacity().max(cfg.results));
        assert!(
            kept.iter().all(|n| cat.depth_nodes(b + 1).contains(n)),
            "level {b}"
        );
    }
    let leaves: Vec<u32> = s.kept(cat.levels() - 1).to_vec();
    let items: Vec<u32> = leaves.iter().map(|&l| cat.leaf_item(l)).collect();
    assert_eq!(items, recs);
    s.set_trace(false).unwrap();
    s.recommend(&[1, 2, 3]).unwrap();
    assert!(s.kept(0).is_empty());
}

/// With `LoadOptions::tables_in_place` the fused engine holds no copy of the tables that
/// grow with the catalog: the model's heap shrinks by at least the int8 bundle's PRM node
/// rows and encoder item rows (what a copy holds), and what remains is the per-model
/// weights and buffers (widened to f32) that do not grow with the catalog.
#[test]
fn tables_read_in_place_leave_the_heap() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ml1m-int8");
    let bundle = Bundle::open(&dir).unwrap();
    let m = bundle.manifest();
    let (d, nodes, items) = (m.dims.d_model, m.num_nodes, bundle.catalog().num_items());
    let heap = |in_place| {
        let opts = LoadOptions::default()
            .with_cpu_engine(CpuEngine::Fused)
            .with_tables_in_place(in_place);
        let before = BYTES.with(|b| b.get());
        let model = Model::load_with(&bundle, Device::Cpu, &opts).unwrap();
        let held = BYTES.with(|b| b.get()) - before;
        drop(model);
        held
    };
    let (copied, in_place) = (heap(false), heap(true));
    // int8 rows and their f32 scales, and the node biases (f32)
    let tables = ((nodes + items) * (d + 4) + nodes * 4) as i64;
    println!(
        "ml1m-int8 model heap: {copied} bytes copied, {in_place} in place (tables {tables} bytes)"
    );
    assert!(
        copied - in_place >= tables,
        "in place saves {} bytes, the tables are {tables}",
        copied - in_place
    );
}
