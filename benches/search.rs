//! Criterion benches, named by what they time:
//! - `search_bookkeeping/*`: the search alone against a fake scorer (pure arithmetic), so
//!   model cost cannot hide a regression in the beam tables, top-k or trie walk;
//! - `cpu_request/*`: whole requests on the default bundle on the CPU's fused engine (the
//!   anchor for the bookkeeping numbers: bookkeeping / request is the search's share);
//! - `cpu_tract_request/*`: the same through the tract engine (the ONNX graphs);
//! - `gpu_request/*`: the same through the GPU backend, when built with `--features gpu`
//!   and an adapter exists;
//! - `forward/<engine>/*`: each CPU engine's forward passes alone, through the backend's
//!   `Scorer` (no search): the encoder; the encoder plus the decoder over a request's
//!   three levels (1, 16, 16 beams, as K'=16 runs them); the PRM on 64 candidates;
//! - `cold_start/*`: open bundle -> load model -> session -> first recommendation, per CPU
//!   engine.
//!
//! Run: `cargo bench --bench search`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, Scorer, SearchConfig, Searcher};

#[path = "../tests/support/fake.rs"]
mod fake;
use fake::Fake;

fn bundle_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ml1m")
}

fn histories(n_items: u32) -> Vec<Vec<u32>> {
    (0..64u32)
        .map(|u| {
            (0..(5 + u * 13 % 80))
                .map(|j| (u * 131 + j * 17) % n_items)
                .collect()
        })
        .collect()
}

fn configs() -> Vec<(String, SearchConfig)> {
    vec![
        ("plain_k4".into(), SearchConfig::plain(4, 10)),
        (
            "prm_k4_c16".into(),
            SearchConfig {
                beams: 4,
                candidates: 16,
                results: 10,
                prm: true,
                mix: 0.0,
            },
        ),
        ("plain_k16".into(), SearchConfig::plain(16, 10)),
        (
            "prm_k16_c64".into(),
            SearchConfig {
                beams: 16,
                candidates: 64,
                results: 10,
                prm: true,
                mix: 0.0,
            },
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let bundle = Bundle::open(bundle_dir()).expect("default bundle");
    let cat = bundle.catalog().clone();
    let hs = histories(cat.num_items() as u32);
    let mut g = c.benchmark_group("search_bookkeeping");
    for (name, cfg) in configs() {
        let mut s = Searcher::new(cfg, &cat, bundle.manifest().history).unwrap();
        let m = bundle.manifest();
        let mut f = Fake::new(m.max_codebook(), m.levels, 7);
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                i = (i + 1) % hs.len();
                s.run(&cat, &mut f, &hs[i]).unwrap().len()
            })
        });
    }
    g.finish();
    let engine = |cpu_engine| LoadOptions::default().with_cpu_engine(cpu_engine);
    let model = Model::load(&bundle, Device::Cpu).unwrap();
    requests(c, "cpu_request", &model, &hs);
    #[cfg(feature = "cpu")]
    forward(c, &bundle, CpuEngine::Fused, "fused");
    if cfg!(feature = "tract") {
        let tract = Model::load_with(&bundle, Device::Cpu, &engine(CpuEngine::Tract)).unwrap();
        requests(c, "cpu_tract_request", &tract, &hs);
        #[cfg(feature = "cpu")]
        forward(c, &bundle, CpuEngine::Tract, "tract");
    }
    // the GPU backend's whole requests, where an adapter exists (on lavapipe these time
    // a software rasterizer: read them only on a real GPU)
    match Model::load(&bundle, Device::Gpu) {
        Ok(gpu) => requests(c, "gpu_request", &gpu, &hs),
        Err(e) => eprintln!("gpu_request skipped: {e}"),
    }
    let mut g = c.benchmark_group("cold_start");
    g.sample_size(10);
    for (name, e) in [("fused", CpuEngine::Fused), ("tract", CpuEngine::Tract)] {
        if e == CpuEngine::Tract && !cfg!(feature = "tract") {
            continue;
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let bundle = Bundle::open(bundle_dir()).unwrap();
                let model = Model::load_with(&bundle, Device::Cpu, &engine(e)).unwrap();
                let mut s = model.session(SearchConfig::default()).unwrap();
                s.recommend(&hs[0]).unwrap().len()
            })
        });
    }
    g.finish();
}

/// The forward passes of one CPU engine at K'=16, K+=64, without the search.
#[cfg(feature = "cpu")]
fn forward(c: &mut Criterion, bundle: &Bundle, engine: CpuEngine, name: &str) {
    use promise_rt::internals::CpuModel;
    let m = bundle.manifest();
    let (h, l, cmax) = (m.history, m.levels, m.max_codebook());
    let cfg = SearchConfig::default();
    let model = CpuModel::load(bundle, engine).unwrap();
    let mut s = model.session(&cfg).unwrap();
    // every column below 24: a code of any level, or an item (an item column)
    let codes: Vec<i64> = (0..h * m.encoder_columns())
        .map(|i| (i * 7 % 24) as i64)
        .collect();
    let mask = vec![1.0f32; h];
    let w = l - 1;
    // 16 beams: distinct level-0 codes at level 1, then each extended at level 2
    let lvl1: Vec<i64> = (0..16).flat_map(|b| [b as i64, 0]).collect();
    let lvl2: Vec<i64> = (0..16)
        .flat_map(|b| [b as i64, (b * 5 % 24) as i64])
        .collect();
    let nodes: Vec<i64> = (0..64).map(|i| 33 + i as i64 * 11).collect();
    let root = vec![0i64; w];
    let mut out = vec![0.0f32; 64 * cmax];
    let mut g = c.benchmark_group(format!("forward/{name}"));
    g.bench_function("encoder", |b| b.iter(|| s.encode(&codes, &mask).unwrap()));
    // the encoder resets the request (and the fused engine's cache): subtract `encoder`
    g.bench_function("encoder_and_decoder_3_levels_k16", |b| {
        b.iter(|| {
            s.encode(&codes, &mask).unwrap();
            s.decode(0, &root, 1, &mut out).unwrap();
            s.decode(1, &lvl1, 16, &mut out).unwrap();
            s.decode(2, &lvl2, 16, &mut out).unwrap();
        })
    });
    s.encode(&codes, &mask).unwrap();
    g.bench_function("prm_64", |b| {
        b.iter(|| s.score(&nodes, &mut out[..64]).unwrap())
    });
    g.finish();
}

/// Whole requests of `model` for every config, one group.
fn requests(c: &mut Criterion, group: &str, model: &Model, hs: &[Vec<u32>]) {
    let mut g = c.benchmark_group(group);
    for (name, cfg) in configs() {
        let mut s = model.session(cfg).unwrap();
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                i = (i + 1) % hs.len();
                s.recommend(&hs[i]).unwrap().len()
            })
        });
    }
    g.finish();
}

// no plots: criterion's plotters backend panics on machines without a system font
// (FontUnavailable), and the numbers are what we read
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
