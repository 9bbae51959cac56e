//! `promise bench`: cold start (open, load, session, first request), warm latency
//! p50/p99, throughput, memory and allocations per request over real test histories.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

#[cfg(feature = "tract")]
use promise_rt::CpuEngine;
use promise_rt::{BackendInfo, Model, SearchConfig};

#[cfg(feature = "tract")]
use crate::flops;
use crate::{cfg_json, describe, load_data, Common, DataArgs, Failure, ALLOCS, LIVE};

/// Latency histogram with 1%-wide log buckets from 1 us to ~100 s: fixed size, no
/// allocation per sample. Quantiles are the bucket's upper edge (within 1%).
pub(crate) struct LatencyHistogram {
    counts: Vec<u64>,
    n: u64,
}

impl LatencyHistogram {
    const BUCKETS: usize = 1900;
    const BASE_MS: f64 = 1e-3;
    pub(crate) fn new() -> Self {
        LatencyHistogram {
            counts: vec![0; Self::BUCKETS],
            n: 0,
        }
    }
    pub(crate) fn add(&mut self, ms: f64) {
        let b = ((ms / Self::BASE_MS).max(1.0).ln() / 1.01f64.ln()).ceil() as usize;
        self.counts[b.min(Self::BUCKETS - 1)] += 1;
        self.n += 1;
    }
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::BASE_MS * 1.01f64.powi(b as i32);
            }
        }
        f64::NAN
    }
}

/// The floor figures for `bench --flops`.
#[derive(serde::Serialize)]
struct Floor {
    /// multiply-adds per request as the tract engine, the GPU and the fused engine run it
    graph_macs: u64,
    gpu_macs: u64,
    fused_macs: u64,
    /// the count for this model's backend
    backend_macs: u64,
    /// single-core f32 matmul rate at 128x256x256: tract's, the fused kernel's, the best
    tract_peak_gmacs: f64,
    fused_peak_gmacs: f64,
    peak_gmacs: f64,
    achieved_gmacs: f64,
    achieved_over_peak: f64,
    /// the fused (minimal) count at the peak rate
    floor_ms: f64,
}

#[cfg(feature = "tract")]
fn floor(model: &Model, cfg: &SearchConfig, p50_ms: f64) -> Result<Floor, Failure> {
    let macs = flops::per_request(model.bundle().manifest(), cfg);
    let tract_peak = flops::peak_gmacs(std::path::Path::new("."))?;
    let fused_peak = flops::fused_peak_gmacs();
    let peak = tract_peak.max(fused_peak);
    let backend_macs = match model.backend() {
        BackendInfo::Cpu {
            engine: CpuEngine::Tract,
            ..
        } => macs.graph,
        BackendInfo::Gpu { .. } => macs.gpu,
        _ => macs.fused,
    };
    let achieved = backend_macs as f64 / (p50_ms * 1e-3) / 1e9;
    Ok(Floor {
        graph_macs: macs.graph,
        gpu_macs: macs.gpu,
        fused_macs: macs.fused,
        backend_macs,
        tract_peak_gmacs: tract_peak,
        fused_peak_gmacs: fused_peak,
        peak_gmacs: peak,
        achieved_gmacs: achieved,
        achieved_over_peak: achieved / peak,
        floor_ms: macs.fused as f64 / (peak * 1e9) * 1e3,
    })
}
#[cfg(not(feature = "tract"))]
fn floor(_: &Model, _: &SearchConfig, _: f64) -> Result<Floor, Failure> {
    Err(Failure::Other(anyhow::anyhow!(
        "--flops needs the tract feature (it measures tract's matmul rate too)"
    )))
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// What `promise bench` reports besides the timings.
pub(crate) struct Options {
    pub json: bool,
    pub dump: Option<PathBuf>,
    pub flops: bool,
    pub warmup: bool,
}

/// The histories of `--pairs` examples as item indices of `c`'s bundle: unknown ids
/// dropped, histories left empty skipped (what `recommend_ids` would do, resolved before
/// the clock starts so that the timed call is the index path).
fn pair_histories(c: &Common, path: &Path) -> Result<Vec<Vec<u32>>, Failure> {
    let pairs = crate::ids::Pairs::load(path)?;
    let bundle = c.open()?;
    let ids = bundle.ids().ok_or_else(|| {
        anyhow::anyhow!(
            "--pairs holds the app's ids, but bundle {} carries no id table (ids.bin)",
            bundle.manifest().name
        )
    })?;
    Ok(pairs
        .iter()
        .map(|(h, _)| {
            h.iter()
                .filter_map(|id| ids.lookup(id.as_bytes()))
                .collect::<Vec<u32>>()
        })
        .filter(|h| !h.is_empty())
        .collect())
}

pub(crate) fn bench(
    c: &Common,
    d: &DataArgs,
    pairs: Option<&Path>,
    requests: usize,
    o: Options,
) -> Result<(), Failure> {
    let Options {
        json,
        dump,
        flops,
        warmup,
    } = o;
    if requests == 0 {
        return Err(Failure::Other(anyhow::anyhow!(
            "--requests is 0, expected at least 1"
        )));
    }
    let (owned, ds);
    let rows: Vec<(&[u32], u32)> = match pairs {
        Some(p) => {
            owned = pair_histories(c, p)?;
            owned.iter().map(|h| (&h[..], 0)).collect()
        }
        None => {
            ds = load_data(d)?;
            ds.split("test")
        }
    };
    let Some(&(first_history, _)) = rows.first() else {
        return Err(Failure::Other(anyhow::anyhow!(
            "no history to time (the test split has no users, or no --pairs history maps to the catalog)"
        )));
    };
    // reset the peak-RSS mark so that the data loading does not count (Linux >= 4.0)
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = rss_kib("VmRSS:");
    // resident memory by kind: anonymous (the heap: only the OS's swap can take it back)
    // and file-backed (mapped bundle pages: the OS drops them under pressure and reads them
    // again on the next touch)
    let kinds = || [rss_kib("RssAnon:"), rss_kib("RssFile:")];
    let kinds0 = kinds();
    // cold start, step by step: open (map + validate), load (engine), session (buffers),
    // the optional warm-up, then the first request
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t_load = Instant::now();
    let heap0 = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let bundle = c.open()?;
    let open_ms = ms(t);
    let t = Instant::now();
    let model = c.load_bundle(&bundle)?;
    let model_load_ms = ms(t);
    drop(bundle);
    let model_heap_kib = (LIVE.load(Ordering::Relaxed) - heap0) / 1024;
    let t = Instant::now();
    let mut session = c.session(&model, c.config())?;
    let session_ms = ms(t);
    let load_ms = ms(t_load);
    let warmup_ms = if warmup {
        let t = Instant::now();
        session.warmup()?;
        Some(ms(t))
    } else {
        None
    };
    let t = Instant::now();
    session.recommend(first_history)?;
    let first_request_ms = ms(t);
    let warm = 20.min(rows.len());
    for (h, _) in rows.iter().take(warm) {
        session.recommend(h)?;
    }
    // the same first request once the session is warm: what the cold one paid extra
    let t = Instant::now();
    session.recommend(first_history)?;
    let first_again_ms = ms(t);
    let cold = serde_json::json!({"open_ms": open_ms, "load_ms": model_load_ms, "session_ms": session_ms,
        "warmup_ms": warmup_ms, "first_request_ms": first_request_ms, "first_request_warm_ms": first_again_ms});
    // latencies go into a fixed log-scale histogram (1% wide buckets) allocated before
    // the warm-up RSS is read, so that a million-request soak measures the runtime's
    // memory and not a growing list of timings
    let mut hist = LatencyHistogram::new();
    let mut rss_trace = [0u64; 11];
    let rss_warm = rss_kib("VmRSS:");
    rss_trace[0] = rss_warm;
    let mut request_allocs = 0u64; // counted around `recommend` only, not the RSS probes
    let t = Instant::now();
    for i in 0..requests {
        let (h, _) = rows[(warm + i) % rows.len()];
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let s = Instant::now();
        session.recommend(h)?;
        hist.add(s.elapsed().as_secs_f64() * 1e3);
        request_allocs += ALLOCS.load(Ordering::Relaxed) - a0;
        let tenth = (i + 1) * 10 / requests;
        if tenth != i * 10 / requests {
            rss_trace[tenth.min(10)] = rss_kib("VmRSS:");
        }
    }
    let total = t.elapsed().as_secs_f64();
    let allocs = request_allocs as f64 / requests as f64;
    let (p50, p99) = (hist.quantile(0.5), hist.quantile(0.99));
    let rps = requests as f64 / total;
    let peak = rss_kib("VmHWM:");
    let steady = rss_kib("VmRSS:");
    let [anon, file] = kinds();
    let (anon_growth, file_growth) = (
        anon as i64 - kinds0[0] as i64,
        file as i64 - kinds0[1] as i64,
    );
    let growth = steady as i64 - rss_warm as i64;
    let bundle_kib = model.bundle().file_bytes() / 1024;
    // where the time goes: a second pass over the same requests with stage timing on (a
    // few clock reads per request, kept out of the p50 above)
    let stages = stage_breakdown(&mut session, &rows, warm, requests.min(STAGE_REQUESTS))?;
    if let Some(path) = dump {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", crate::shown(&path)))?,
        );
        for i in 0..requests {
            let (h, _) = rows[(warm + i) % rows.len()];
            let items: Vec<u32> = session.recommend(h)?.iter().map(|r| r.item).collect();
            writeln!(f, "{}", serde_json::to_string(&items).expect("json"))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", crate::shown(&path)))?;
        }
    }
    let floor = if flops {
        Some(floor(&model, session.config(), p50)?)
    } else {
        None
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"bundle": model.bundle().manifest().name, "device": format!("{:?}", model.device()), "floor": floor,
            "config": cfg_json(session.config()), "requests": requests, "p50_ms": p50, "p99_ms": p99, "requests_per_s": rps,
            "load_ms": load_ms, "peak_rss_kib": peak, "steady_rss_kib": steady, "rss_before_load_kib": rss0,
            "bundle_kib": bundle_kib, "allocs_per_request": allocs, "gpu_adapter": gpu_adapter(&model), "backend": model.backend().to_string(), "rss_after_warmup_kib": rss_warm,
            "rss_growth_kib": growth, "model_heap_kib": model_heap_kib,
            "rss_anon_since_load_kib": anon_growth, "rss_file_since_load_kib": file_growth,
            "tables_in_place": c.tables_in_place, "rss_trace_kib": rss_trace, "cold_start": cold,
            "stages_p50_ms": stages.as_ref().map(Stages::json)})
        );
    } else {
        println!(
            "bundle {} on {}, {}",
            model.bundle().manifest().name,
            model.backend(),
            describe(session.config())
        );
        println!(
            "{requests} requests over real {} histories (1 thread)",
            if pairs.is_some() {
                "--pairs"
            } else {
                "test-split"
            }
        );
        println!(
            "cold start: open {open_ms:.1} ms, load {model_load_ms:.1} ms, session {session_ms:.2} ms, {}first request {first_request_ms:.3} ms (the same request warm: {first_again_ms:.3} ms)",
            warmup_ms.map_or("no warm-up, ".to_string(), |w| format!("warm-up {w:.3} ms, "))
        );
        println!("warm latency p50 {p50:.3} ms  p99 {p99:.3} ms  throughput {rps:.0} requests/s");
        println!("load + session {load_ms:.0} ms; RSS before load {rss0} KiB (evaluation data included), steady {steady} KiB, peak since load {peak} KiB; bundle files {bundle_kib} KiB");
        println!("Rust heap held by the loaded model: {model_heap_kib} KiB (bundle files {bundle_kib} KiB; driver memory not included)");
        println!("resident since load: {anon_growth} KiB anonymous (heap), {file_growth} KiB file-backed (mapped bundle pages, reclaimable){}", if c.tables_in_place { "; tables read in place" } else { "" });
        println!("RSS growth over the timed requests: {growth} KiB (after warm-up {rss_warm} KiB)");
        println!("RSS at each tenth of the run (KiB): {rss_trace:?}");
        match &stages {
            Some(st) => println!("{}", st.line()),
            None => println!("stage breakdown: none (the search runs on the device)"),
        }
        println!("heap allocations per request: {allocs:.1} (the search itself makes none; the fused CPU engine none either; tract and wgpu do)");
        if let Some(f) = floor {
            println!(
                "multiply-adds per request: {:.2} M as the tract engine runs the graphs, {:.2} M on the GPU backend, {:.2} M on the fused CPU engine (the minimal)",
                f.graph_macs as f64 / 1e6,
                f.gpu_macs as f64 / 1e6,
                f.fused_macs as f64 / 1e6,
            );
            println!(
                "this core's f32 matmul rate at 128x256x256: tract {:.2} GMAC/s, fused kernel {:.2} GMAC/s; at p50 this backend does {:.2} GMAC/s = {:.1}% of the best; the minimal work at that rate would take {:.3} ms",
                f.tract_peak_gmacs,
                f.fused_peak_gmacs,
                f.achieved_gmacs,
                f.achieved_over_peak * 100.0,
                f.floor_ms
            );
        }
    }
    Ok(())
}

/// Requests timed by stage at most (the breakdown is medians; more adds nothing).
const STAGE_REQUESTS: usize = 5000;

/// Medians of each stage over the breakdown pass.
struct Stages {
    levels: usize,
    encoder: f64,
    decoder: Vec<f64>,
    prm: Vec<f64>,
    bookkeeping: f64,
    total: f64,
}

impl Stages {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"encoder": self.encoder, "decoder": self.decoder, "prm": self.prm,
            "bookkeeping": self.bookkeeping, "total": self.total})
    }
    fn line(&self) -> String {
        let per_level = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        format!(
            "where a request's time goes (medians, ms; per level 1..{}): encoder {:.3}, decoder {}, PRM {}, search bookkeeping {:.3}; request {:.3}",
            self.levels,
            self.encoder,
            per_level(&self.decoder),
            per_level(&self.prm),
            self.bookkeeping,
            self.total
        )
    }
}

/// Run `n` requests with stage timing on and take each stage's median; `None` when the
/// session cannot time stages (a GPU session searching on the device).
fn stage_breakdown(
    session: &mut promise_rt::Session,
    rows: &[(&[u32], u32)],
    skip: usize,
    n: usize,
) -> Result<Option<Stages>, Failure> {
    if session.set_stage_timing(true).is_err() {
        return Ok(None);
    }
    let levels = session.model().bundle().catalog().levels();
    let hist = || LatencyHistogram::new();
    let (mut enc, mut book, mut total) = (hist(), hist(), hist());
    let mut dec: Vec<LatencyHistogram> = (0..levels).map(|_| hist()).collect();
    let mut prm: Vec<LatencyHistogram> = (0..levels).map(|_| hist()).collect();
    let mut prm_ran = vec![false; levels];
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    for i in 0..n {
        let (h, _) = rows[(skip + i) % rows.len()];
        session.recommend(h)?;
        let t = *session
            .stage_times()
            .expect("stage timing was turned on above");
        enc.add(ms(t.encoder));
        book.add(ms(t.bookkeeping()));
        total.add(ms(t.total));
        for l in 0..levels {
            dec[l].add(ms(t.decoder[l]));
            if !t.prm[l].is_zero() {
                prm[l].add(ms(t.prm[l]));
                prm_ran[l] = true;
            }
        }
    }
    session.set_stage_timing(false)?;
    // a level without PRM calls (plain search, or a level the search does not score)
    // reads as 0; where it ran, the median is over the requests that called it
    let med = |h: &LatencyHistogram, ran: bool| if ran { h.quantile(0.5) } else { 0.0 };
    Ok(Some(Stages {
        levels,
        encoder: med(&enc, true),
        decoder: dec.iter().map(|h| med(h, true)).collect(),
        prm: prm.iter().zip(&prm_ran).map(|(h, &r)| med(h, r)).collect(),
        bookkeeping: med(&book, true),
        total: med(&total, true),
    }))
}

/// The GPU adapter a model runs on (`None` on the CPU), for the bench's JSON.
fn gpu_adapter(model: &Model) -> Option<String> {
    match model.backend() {
        BackendInfo::Gpu { adapter, .. } => Some(adapter),
        _ => None,
    }
}
