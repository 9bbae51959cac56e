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

/// Largest container `unpack` reads (the manifest's files together are bounded at open).
pub const MAX_CONTAINER_BYTES: u64 = 4 << 30;

/// Pack the bundle directory `dir` into the container file `out`, after checking that
/// the directory opens as a bundle and that every file matches its manifest checksum.
///
/// No file operation can be turned against the user: every member is a regular file (a
/// symlink only if it stays inside `dir`), read through one `fstat`ed handle; `out` may not
/// be one of the inputs (same device and inode); the bytes go to a fresh temporary file
/// created exclusively (`O_EXCL`, random name) beside `out`, are synced, then renamed over
/// it, so a reader never sees half a container and a planted symlink is never followed.
pub fn pack(dir: &Path, out: &Path) -> Result<u64> {
    // the checksums are verified once, on the bytes that are packed (below)
    let bundle = super::Bundle::open(dir)?;
    let root = std::fs::canonicalize(dir)
        .map_err(|e| err!(Io, "cannot resolve {}: {e}", dir.display()))?;
    let mut inputs = vec![file_id(&std::fs::metadata(&root), dir)?];
    let mut files = Vec::new();
    for name in std::iter::once("manifest.json".to_string()).chain(bundle.file_names()) {
        let p = dir.join(&name);
        let real = std::fs::canonicalize(&p)
            .map_err(|e| err!(Io, "cannot resolve {}: {e}", p.display()))?;
        if real.parent() != Some(root.as_path()) {
            return Err(err!(
                InvalidArgument,
                "{} leads outside the bundle directory (to {}); pack reads the bundle's own files only",
                p.display(),
                real.display()
            ));
        }
        let (f, len) = super::files::open_regular(&p)?;
        inputs.push(file_id(&f.metadata(), &p)?);
        files.push((name, super::files::read_exact_fallible(f, len, &p)?));
    }
    // what is packed is what is checked: every checksum, on these bytes
    let bytes = build(&files)?;
    super::Bundle::open_with_bytes_checked(bytes.clone())?;
    if let Ok(md) = std::fs::metadata(out) {
        let id = file_id(&Ok(md), out)?;
        if inputs.contains(&id) {
            return Err(err!(
                InvalidArgument,
                "the output {} is one of pack's inputs (the bundle directory or one of its files)",
                out.display()
            ));
        }
    }
    write_atomic(out, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Unpack the container file `file` into the directory `dir`: one it creates, or an
/// existing empty one (never through a symlink). Only `manifest.json` and the files the
/// manifest lists are written, each created exclusively under its checked plain name;
/// the container is `fstat`ed (a regular file of at most [`MAX_CONTAINER_BYTES`]) and its
/// header checked before the rest is read.
pub fn unpack(file: &Path, dir: &Path) -> Result<usize> {
    let (f, len) = super::files::open_regular(file)?;
    if len > MAX_CONTAINER_BYTES {
        return Err(err!(
            Limits,
            "{} is {len} bytes, over the {MAX_CONTAINER_BYTES}-byte limit of a container",
            file.display()
        ));
    }
    let mut head = [0u8; HEADER];
    {
        use std::io::{Read, Seek};
        // a file shorter than the header fails here like any non-container
        let whole = (&f).read_exact(&mut head).is_ok();
        if !whole || !is_container(&head) || u64_at(&head, 24) != len {
            return Err(err!(
                Manifest,
                "{} is not a .promise bundle of {len} bytes (magic \"PROMISE\\0\" and a header \
                 stating its length)",
                file.display()
            ));
        }
        (&f).rewind()
            .map_err(|e| err!(Io, "cannot read {}: {e}", file.display()))?;
    }
    let bytes = super::files::read_exact_fallible(f, len, file)?;
    // a container that does not open as a bundle (its checksums included) is not unpacked
    let bundle = super::Bundle::open_with_bytes_checked(bytes.clone())?;
    let index = parse(&bytes, &file.display().to_string())?;
    let listed: Vec<String> = std::iter::once("manifest.json".to_string())
        .chain(bundle.file_names())
        .collect();
    match std::fs::symlink_metadata(dir) {
        Ok(md) if md.file_type().is_symlink() || !md.is_dir() => {
            return Err(err!(
                InvalidArgument,
                "{} exists and is not a directory (a symlink is not followed)",
                dir.display()
            ))
        }
        Ok(_) => {
            let mut it = std::fs::read_dir(dir)
                .map_err(|e| err!(Io, "cannot list {}: {e}", dir.display()))?;
            if it.next().is_some() {
                return Err(err!(
                    InvalidArgument,
                    "{} is not empty; unpack writes into a new or empty directory",
                    dir.display()
                ));
            }
        }
        Err(_) => std::fs::create_dir(dir)
            .map_err(|e| err!(Io, "cannot create the directory {}: {e}", dir.display()))?,
    }
    let mut written = 0;
    for (name, r) in &index.entries {
        // parse checked the names (plain, visible, printable) and open the listing
        if !listed.contains(name) {
            continue;
        }
        let p = dir.join(name);
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.custom_flags(libc::O_NOFOLLOW);
        }
        let mut out = o
            .open(&p)
            .map_err(|e| err!(Io, "cannot create {}: {e}", p.display()))?;
        use std::io::Write;
        out.write_all(&bytes[r.clone()])
            .and_then(|()| out.sync_all())
            .map_err(|e| err!(Io, "cannot write {}: {e}", p.display()))?;
        written += 1;
    }
    Ok(written)
}

/// (device, inode) of a file, to tell whether two paths are one file.
fn file_id(md: &std::io::Result<std::fs::Metadata>, p: &Path) -> Result<(u64, u64)> {
    let md = md
        .as_ref()
        .map_err(|e| err!(Io, "cannot stat {}: {e}", p.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok((md.dev(), md.ino()))
    }
    #[cfg(not(unix))]
    {
        Ok((md.len(), 0))
    }
}

/// A name no other writer can have taken: `.{out}.{random}.tmp`.
fn temp_name(out: &std::ffi::OsStr, attempt: u32) -> std::ffi::OsString {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(attempt);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    let mut n = std::ffi::OsString::from(".");
    n.push(out);
    n.push(format!(".{:016x}.tmp", h.finish()));
    n
}

fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = out
        .file_name()
        .ok_or_else(|| err!(InvalidArgument, "{} is not a file name", out.display()))?;
    let (tmp, mut f) = (0..16)
        .find_map(|attempt| {
            let tmp = out.with_file_name(temp_name(name, attempt));
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            match o.open(&tmp) {
                Ok(f) => Some(Ok((tmp, f))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(err!(Io, "cannot create {}: {e}", tmp.display()))),
            }
        })
        .unwrap_or_else(|| {
            Err(err!(
                Io,
                "cannot create a temporary file beside {}",
                out.display()
            ))
        })?;
    let done = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| err!(Io, "cannot write {}: {e}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, out).map_err(|e| {
                err!(
                    Io,
                    "cannot rename {} to {}: {e}",
                    tmp.display(),
                    out.display()
                )
            })
        });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return done;
    }
    // the rename itself reaches the disk with the directory (best effort off Unix)
    if let Some(parent) = out.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
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
