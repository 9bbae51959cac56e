//! The one-file bundle (`.promise`): every file of a bundle directory in one container, so
//! that an app ships one asset and updates a model with one atomic rename, and so that a
//! bundle can be opened from memory or from a range of a file descriptor (an Android APK
//! asset). The layout is documented once, in models/README.md ("One-file bundles").
//!
//! The entries are the bundle directory's files: `manifest.json` and every file the
//! manifest lists. Reading checks everything before a byte of an entry is used: the
//! header's sizes against the container's real length, each entry inside the container,
//! aligned, in order without overlap, with a plain unique name. The bundle checks of
//! [`Bundle::open`](super::Bundle::open) then run on the entries exactly as on files.

use std::ops::Range;
use std::path::Path;

use crate::error::{err, Result};

/// The first 8 bytes of a `.promise` file.
pub const MAGIC: &[u8; 8] = b"PROMISE\0";
/// The container version this runtime reads and writes.
pub const VERSION: u32 = 1;
/// Alignment of every entry's offset.
pub const ALIGN: u64 = 64;
const HEADER: usize = 64;
const ENTRY: usize = 64;
const NAME: usize = 48;
/// Most entries a container may hold (the manifest and at most [`super::MAX_FILES`] files).
pub const MAX_ENTRIES: usize = super::MAX_FILES + 1;

/// The validated index of a container: each entry's name and byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    pub entries: Vec<(String, Range<usize>)>,
}

impl Index {
    /// The byte range of the entry `name`.
    pub fn get(&self, name: &str) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `bytes` start like a container (used to tell one from a directory's file).
pub fn is_container(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] == MAGIC
}

/// Validate the header and index of the container `bytes` (`what` names it in errors).
pub fn parse(bytes: &[u8], what: &str) -> Result<Index> {
    let len = bytes.len() as u64;
    if bytes.len() < HEADER || !is_container(bytes) {
        return Err(err!(
            Manifest,
            "{what} is not a .promise bundle (expected the magic \"PROMISE\\0\" and a {HEADER}-byte header, got {len} bytes)"
        ));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(err!(
            Manifest,
            "{what} is container version {version}, this runtime reads version {VERSION}"
        ));
    }
    let count = u32_at(bytes, 12) as usize;
    let index_at = u64_at(bytes, 16);
    let total = u64_at(bytes, 24);
    if total != len {
        return Err(err!(
            Manifest,
            "{what} says it is {total} bytes long, it is {len} (truncated or padded?)"
        ));
    }
    if count == 0 || count > MAX_ENTRIES {
        return Err(err!(
            Manifest,
            "{what} has {count} entries, expected 1..={MAX_ENTRIES}"
        ));
    }
    let index_end = (HEADER + count * ENTRY) as u64;
    if index_at != HEADER as u64 || index_end > len {
        return Err(err!(
            Manifest,
            "{what}'s index is at {index_at} with {count} entries, expected at {HEADER} and inside its {len} bytes"
        ));
    }
    let mut entries: Vec<(String, Range<usize>)> = Vec::with_capacity(count);
    let mut end_prev = index_end;
    for i in 0..count {
        let e = &bytes[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY];
        let raw = &e[..NAME];
        let n = raw.iter().position(|&b| b == 0).unwrap_or(NAME);
        if raw[n..].iter().any(|&b| b != 0) {
            return Err(err!(
                Manifest,
                "{what} entry {i}: its name has bytes after the NUL padding"
            ));
        }
        let name = std::str::from_utf8(&raw[..n])
            .map_err(|_| err!(Manifest, "{what} entry {i}: its name is not UTF-8"))?;
        let name = super::safe_name(name)?.to_owned();
        if entries.iter().any(|(other, _)| *other == name) {
            return Err(err!(Manifest, "{what} holds {name:?} twice"));
        }
        let (off, n) = (u64_at(e, NAME), u64_at(e, NAME + 8));
        let end = off.checked_add(n).filter(|&end| end <= len);
        let Some(end) = end else {
            return Err(err!(
                Manifest,
                "{what} entry {name:?} spans {off}..{off}+{n}, past the container's {len} bytes"
            ));
        };
        if off % ALIGN != 0 || off < end_prev {
            return Err(err!(
                Manifest,
                "{what} entry {name:?} starts at {off}, expected a multiple of {ALIGN} at or after {end_prev} (entries in order, no overlap)"
            ));
        }
        end_prev = end;
        // within the length of an in-memory slice: fits usize
        entries.push((name, off as usize..end as usize));
    }
    Ok(Index { entries })
}

/// The container holding `files` (name, bytes), in that order.
pub fn build(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    if files.is_empty() || files.len() > MAX_ENTRIES {
        return Err(err!(
            InvalidArgument,
            "a container holds 1..={MAX_ENTRIES} files, got {}",
            files.len()
        ));
    }
    let align = |x: u64| x.div_ceil(ALIGN) * ALIGN;
    let mut at = align((HEADER + files.len() * ENTRY) as u64);
    let mut index = Vec::with_capacity(files.len() * ENTRY);
    for (name, bytes) in files {
        let name = super::safe_name(name)?;
        if name.len() > NAME {
            return Err(err!(
                InvalidArgument,
                "file name {name:?} is {} bytes, a container holds names of at most {NAME}",
                name.len()
            ));
        }
        let mut e = [0u8; ENTRY];
        e[..name.len()].copy_from_slice(name.as_bytes());
        e[NAME..NAME + 8].copy_from_slice(&at.to_le_bytes());
        e[NAME + 8..].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        index.extend_from_slice(&e);
        at = align(at + bytes.len() as u64);
    }
    let total = files
        .last()
        .map(|(_, b)| {
            let last_off = u64_at(&index, index.len() - ENTRY + NAME);
            last_off + b.len() as u64
        })
        .unwrap_or(at);
    let mut out = Vec::new();
    out.try_reserve_exact(total as usize)
        .map_err(|_| err!(Limits, "cannot allocate {total} bytes for the container"))?;
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    out.extend_from_slice(&(HEADER as u64).to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.resize(HEADER, 0);
    out.extend_from_slice(&index);
    for (i, (_, bytes)) in files.iter().enumerate() {
        let off = u64_at(&index, i * ENTRY + NAME) as usize;
        out.resize(off, 0);
        out.extend_from_slice(bytes);
    }
    debug_assert_eq!(out.len() as u64, total);
    Ok(out)
}

/// Pack the bundle directory `dir` into the container file `out`, after checking that
/// the directory opens as a bundle. Written to a temporary file next to `out`, then
/// renamed over it: a reader never sees half a container.
pub fn pack(dir: &Path, out: &Path) -> Result<u64> {
    let bundle = super::Bundle::open(dir)?;
    let mut files = vec![(
        "manifest.json".to_string(),
        read(&dir.join("manifest.json"))?,
    )];
    for name in bundle.file_names() {
        files.push((name.clone(), read(&dir.join(&name))?));
    }
    let bytes = build(&files)?;
    // the container must open as the same bundle
    super::Bundle::from_bytes(bytes.clone())?;
    write_atomic(out, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Unpack the container file `file` into the new directory `dir` (which must not exist).
pub fn unpack(file: &Path, dir: &Path) -> Result<usize> {
    let bytes = read(file)?;
    // a container that does not open as a bundle is not unpacked
    super::Bundle::from_bytes(bytes.clone())?;
    let index = parse(&bytes, &file.display().to_string())?;
    std::fs::create_dir(dir)
        .map_err(|e| err!(Io, "cannot create the directory {}: {e}", dir.display()))?;
    for (name, r) in &index.entries {
        let p = dir.join(name);
        std::fs::write(&p, &bytes[r.clone()])
            .map_err(|e| err!(Io, "cannot write {}: {e}", p.display()))?;
    }
    Ok(index.entries.len())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| err!(Io, "cannot read {}: {e}", p.display()))
}

fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    let name = out
        .file_name()
        .ok_or_else(|| err!(InvalidArgument, "{} is not a file name", out.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = out.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(|e| err!(Io, "cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err!(
            Io,
            "cannot rename {} to {}: {e}",
            tmp.display(),
            out.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("manifest.json".into(), b"{}".to_vec()),
            ("a.bin".into(), vec![1; 100]),
            ("b.bin".into(), vec![]),
            ("c.bin".into(), vec![3; 64]),
        ]
    }

    #[test]
    fn build_then_parse_gives_every_file_back_aligned() {
        let f = files();
        let c = build(&f).unwrap();
        let idx = parse(&c, "test").unwrap();
        assert_eq!(idx.entries.len(), f.len());
        for ((name, bytes), (n, r)) in f.iter().zip(&idx.entries) {
            assert_eq!(name, n);
            assert_eq!(&c[r.clone()], &bytes[..]);
            assert_eq!(r.start as u64 % ALIGN, 0);
        }
    }

    #[test]
    fn every_lie_in_header_or_index_is_an_error_not_a_panic() {
        let c = build(&files()).unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("magic", {
                let mut x = c.clone();
                x[0] = b'X';
                x
            }),
            ("truncated", c[..c.len() - 1].to_vec()),
            ("padded", {
                let mut x = c.clone();
                x.push(0);
                x
            }),
        ];
        let patch = |at: usize, v: &[u8]| {
            let mut x = c.clone();
            x[at..at + v.len()].copy_from_slice(v);
            x
        };
        cases.push(("version", patch(8, &2u32.to_le_bytes())));
        cases.push(("no entries", patch(12, &0u32.to_le_bytes())));
        cases.push(("many entries", patch(12, &u32::MAX.to_le_bytes())));
        cases.push(("index offset", patch(16, &128u64.to_le_bytes())));
        let e1 = HEADER + ENTRY; // entry 1 ("a.bin")
        cases.push((
            "past the end",
            patch(e1 + NAME + 8, &u64::MAX.to_le_bytes()),
        ));
        cases.push((
            "unaligned",
            patch(e1 + NAME, &(c.len() as u64 - 100).to_le_bytes()),
        ));
        cases.push(("overlap", patch(e1 + NAME, &0u64.to_le_bytes())));
        cases.push(("duplicate name", patch(e1, b"manifest.json\0")));
        cases.push(("path in name", patch(e1, b"../x\0")));
        cases.push(("bytes after NUL", patch(e1 + 10, b"z")));
        cases.push(("non-UTF-8 name", patch(e1, &[0xff, 0xfe, 0])));
        for (what, bytes) in cases {
            let e = parse(&bytes, "t").expect_err(what);
            assert!(!e.to_string().is_empty(), "{what}: an error with a message");
        }
    }
}
