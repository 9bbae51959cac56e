//! Where a bundle's bytes come from: a file read into the heap or memory-mapped
//! (`Bytes`), only ever a regular file, each of the size the manifest states; and the two
//! sources of a bundle's files (`Source`): a directory, or the entries of a one-file
//! container.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::{container, MAX_MANIFEST_BYTES};
use crate::error::{err, Result};

/// Bytes of one bundle file: a read-only memory map, or a heap copy.
pub(crate) enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
    /// A range of a container's bytes.
    Slice(Arc<Bytes>, std::ops::Range<usize>),
}

impl Bytes {
    /// Tell the OS that a mapping's pages are not needed now (`MADV_DONTNEED`): they leave
    /// the process's RSS and would be read from the file again if touched. A no-op for
    /// heap bytes and off Unix. Advisory: a failure is ignored.
    pub(crate) fn release_pages(&self) {
        match self {
            #[cfg(unix)]
            Bytes::Mapped(m) => {
                // SAFETY: a read-only private file mapping: dropping its pages only makes a
                // later read fault them in from the file again (the same bytes, under the
                // contract that bundle files are not changed while a bundle is opened or
                // loaded); no reference into the mapping is invalidated.
                #[allow(unsafe_code)]
                let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            }
            Bytes::Slice(whole, _) => whole.release_pages(),
            _ => {}
        }
    }
}

impl Bytes {
    /// Tell the OS that a mapping is read at random (`MADV_RANDOM`): a fault maps the one
    /// page it needs, without reading ahead or mapping its neighbours, so a table read in
    /// place keeps resident only the rows requests touch. A no-op for heap bytes and off
    /// Unix. Advisory: a failure is ignored.
    pub(crate) fn advise_random(&self) {
        match self {
            #[cfg(unix)]
            Bytes::Mapped(m) => {
                let _ = m.advise(memmap2::Advice::Random);
            }
            Bytes::Slice(whole, _) => whole.advise_random(),
            _ => {}
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
            Bytes::Slice(b, r) => &b[r.clone()],
        }
    }
}

/// Open `path` for reading only if it is a regular file (after following symlinks), and
/// return it with its size (`internals::open_regular`: the CLI's `--data` uses it too). Opened non-blocking, so a FIFO where a file belongs cannot
/// hang the open; then `fstat` on the opened file (no race with a rename) refuses FIFOs,
/// sockets, device files and directories as `io` errors at once.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    let f = o
        .open(path)
        .map_err(|e| err!(Io, "cannot open {}: {e}", path.display()))?;
    let md = f
        .metadata()
        .map_err(|e| err!(Io, "cannot stat {}: {e}", path.display()))?;
    if !md.is_file() {
        let kind = if md.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device?)"
        };
        return Err(err!(
            Io,
            "{} is {kind}; only regular files are read",
            path.display()
        ));
    }
    Ok((f, md.len()))
}

/// Read exactly `len` bytes of `f` into a vector whose allocation can fail gracefully
/// (sizes come from files: a failed allocation must be an error, not an abort).
pub(super) fn read_exact_fallible(mut f: File, len: u64, path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let n = usize::try_from(len).map_err(|_| {
        err!(
            Limits,
            "{} is {len} bytes, too large for this machine",
            path.display()
        )
    })?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        err!(
            Limits,
            "cannot allocate {n} bytes to read {} into memory",
            path.display()
        )
    })?;
    (&mut f)
        .take(len)
        .read_to_end(&mut v)
        .map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))?;
    if v.len() as u64 != len {
        return Err(err!(
            Io,
            "{} shrank while being read ({} of {len} bytes)",
            path.display(),
            v.len()
        ));
    }
    Ok(v)
}

/// A bundle file of exactly `expected` bytes (the manifest's size, checked before a byte
/// is read or mapped), mapped or read into memory.
pub(super) fn read_file(path: &Path, expected: u64, in_memory: bool) -> Result<Bytes> {
    let (f, len) = open_regular(path)?;
    if len != expected {
        return Err(err!(
            Checksum,
            "{} is {len} bytes, the manifest says {expected}",
            path.display()
        ));
    }
    map_or_read(f, len, path, in_memory)
}

/// The whole regular file `f` (`len` bytes): mapped, or read into the heap.
pub(super) fn map_or_read(f: File, len: u64, path: &Path, in_memory: bool) -> Result<Bytes> {
    if in_memory || len == 0 {
        // mapping an empty file fails on some platforms; an empty file is simply empty
        return Ok(Bytes::Owned(read_exact_fallible(f, len, path)?));
    }
    // SAFETY: the mapping is read-only. A file truncated while mapped faults on access, so
    // the runtime reads graph mappings only inside `Bundle::open` and `Model::load` (the
    // catalog, which requests read, is always copied to the heap); the contract is in the
    // module docs and the C header.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&f) }
        .map_err(|e| err!(Io, "cannot map {}: {e}", path.display()))?;
    Ok(Bytes::Mapped(map))
}

/// The byte range of the container entry `name`, which must be `expected` bytes long (the
/// manifest's size).
fn entry(
    index: &container::Index,
    name: &str,
    expected: u64,
    what: &str,
) -> Result<std::ops::Range<usize>> {
    let r = index.get(name).ok_or_else(|| {
        err!(
            Manifest,
            "{what} holds no {name:?}, which the manifest lists"
        )
    })?;
    if r.len() as u64 != expected {
        return Err(err!(
            Checksum,
            "{what}'s {name} is {} bytes, the manifest says {expected}",
            r.len()
        ));
    }
    Ok(r)
}

/// Where a bundle's files come from: a directory, or the entries of a one-file container
/// (a `.promise` file, a buffer in memory, a range of a file descriptor).
pub(super) enum Source<'a> {
    Dir(&'a Path),
    Container(&'a Arc<Bytes>, &'a container::Index),
}

impl Source<'_> {
    /// The bytes of the manifest.
    pub(super) fn manifest(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Source::Dir(dir) => {
                let mpath = dir.join("manifest.json");
                let (mf, mlen) = open_regular(&mpath)?;
                if mlen > MAX_MANIFEST_BYTES {
                    return Err(err!(
                        Manifest,
                        "{} is {mlen} bytes, expected at most {MAX_MANIFEST_BYTES}",
                        mpath.display()
                    ));
                }
                read_exact_fallible(mf, mlen, &mpath)
            }
            Source::Container(bytes, index) => {
                let r = index
                    .get("manifest.json")
                    .ok_or_else(|| err!(Manifest, "{what} holds no manifest.json"))?;
                if r.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(err!(
                        Manifest,
                        "{what}'s manifest.json is {} bytes, expected at most {MAX_MANIFEST_BYTES}",
                        r.len()
                    ));
                }
                Ok(bytes[r].to_vec())
            }
        }
    }

    /// The total length a catalog file of `expected` bytes (the manifest's size, checked
    /// first) states in its 64-byte header (bytes 56..64), reading only the header.
    pub(super) fn catalog_declared_len(
        &self,
        name: &str,
        expected: u64,
        what: &str,
    ) -> Result<u64> {
        let mut head = [0u8; 64];
        match self {
            Source::Dir(dir) => {
                use std::io::Read;
                let p = dir.join(name);
                let (f, len) = open_regular(&p)?;
                if len != expected {
                    return Err(err!(
                        Checksum,
                        "{} is {len} bytes, the manifest says {expected}",
                        p.display()
                    ));
                }
                if len < 64 {
                    return Err(err!(
                        Catalog,
                        "{name} is {len} bytes, expected at least the 64-byte header"
                    ));
                }
                (&f).take(64)
                    .read_exact(&mut head)
                    .map_err(|e| err!(Io, "cannot read {}: {e}", p.display()))?;
            }
            Source::Container(bytes, index) => {
                let r = entry(index, name, expected, what)?;
                if r.len() < 64 {
                    return Err(err!(
                        Catalog,
                        "{name} is {} bytes, expected at least the 64-byte header",
                        r.len()
                    ));
                }
                head.copy_from_slice(&bytes[r.start..r.start + 64]);
            }
        }
        Ok(u64::from_le_bytes(
            head[56..64].try_into().expect("8 bytes"),
        ))
    }

    /// The file `name` of exactly `expected` bytes (the manifest's size): mapped, or in
    /// the heap with `in_memory`.
    pub(super) fn file(
        &self,
        name: &str,
        expected: u64,
        in_memory: bool,
        what: &str,
    ) -> Result<Bytes> {
        match self {
            Source::Dir(dir) => read_file(&dir.join(name), expected, in_memory),
            Source::Container(bytes, index) => {
                let r = entry(index, name, expected, what)?;
                if in_memory {
                    let mut v = Vec::new();
                    v.try_reserve_exact(r.len()).map_err(|_| {
                        err!(Limits, "cannot allocate {} bytes to copy {name}", r.len())
                    })?;
                    v.extend_from_slice(&bytes[r]);
                    Ok(Bytes::Owned(v))
                } else {
                    Ok(Bytes::Slice(Arc::clone(bytes), r))
                }
            }
        }
    }
}
