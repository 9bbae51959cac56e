//! `pack` and `unpack` cannot be turned against the user's files (issue 29): no write
//! through a planted symlink, no output onto an input, no member from outside the bundle,
//! no file the manifest does not list, no hang or unbounded read on a special file.

use std::path::Path;

use promise_rt::bundle::container::{build, pack, unpack};
use promise_rt::{Bundle, ErrorCode};

use crate::util::{copy_bundle, tiny};

fn members(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let b = Bundle::open(dir).unwrap();
    std::iter::once("manifest.json".to_string())
        .chain(b.file_names())
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

#[cfg(unix)]
#[test]
fn pack_never_writes_through_a_symlink_or_onto_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    // a symlink planted at the output's name and at the old fixed temporary name
    let out = tmp.path().join("out.promise");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    std::os::unix::fs::symlink(&victim, tmp.path().join(".out.promise.tmp")).unwrap();
    pack(&tiny(), &out).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!std::fs::symlink_metadata(&out)
        .unwrap()
        .file_type()
        .is_symlink());
    Bundle::open(&out).unwrap();
    // onto its own input: refused, the source intact
    let d = copy_bundle(&tiny());
    let before = std::fs::read(d.path().join("manifest.json")).unwrap();
    for target in ["manifest.json", "catalog.bin", "encoder.onnx"] {
        let e = pack(d.path(), &d.path().join(target)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{target}: {e}");
        assert!(e.to_string().contains("one of pack's inputs"), "{e}");
    }
    // a symlink to an input is the input
    let link = tmp.path().join("link.promise");
    std::os::unix::fs::symlink(d.path().join("prm.onnx"), &link).unwrap();
    assert!(pack(d.path(), &link).is_err());
    assert_eq!(
        std::fs::read(d.path().join("manifest.json")).unwrap(),
        before
    );
    Bundle::open(d.path()).unwrap();
}

#[cfg(unix)]
#[test]
fn pack_refuses_members_from_outside_and_stale_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    // a member that is a symlink leaving the directory
    let d = copy_bundle(&tiny());
    let outside = tmp.path().join("catalog.bin");
    std::fs::rename(d.path().join("catalog.bin"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, d.path().join("catalog.bin")).unwrap();
    let e = pack(d.path(), &tmp.path().join("a.promise")).unwrap_err();
    assert!(
        e.to_string().contains("outside the bundle directory"),
        "{e}"
    );
    assert!(!tmp.path().join("a.promise").exists());
    // a member whose sha256 no longer matches the manifest (same size)
    let d = copy_bundle(&tiny());
    let p = d.path().join("prm.onnx");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let e = pack(d.path(), &tmp.path().join("b.promise")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Checksum, "{e}");
    assert!(!tmp.path().join("b.promise").exists());
}

#[test]
fn a_container_holds_only_what_its_manifest_lists() {
    let mut files = members(&tiny());
    files.push(("notes.txt".into(), b"echo owned".to_vec()));
    let e = Bundle::from_bytes(build(&files).unwrap()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
    assert!(e.to_string().contains("does not list"), "{e}");
    // names that are not plain, visible, printable: refused by build and by the reader
    for bad in [".bashrc", "a\nb", "esc\u{1b}[31m", "dir/x"] {
        let mut files = members(&tiny());
        files.push((bad.into(), vec![1]));
        assert!(build(&files).is_err(), "{bad:?}");
        // the same name patched into a valid container's last index entry
        let mut files = members(&tiny());
        files.push(("zzzz".into(), vec![1]));
        let mut bytes = build(&files).unwrap();
        let at = 64 + (files.len() - 1) * 64;
        bytes[at..at + 48].fill(0);
        bytes[at..at + bad.len()].copy_from_slice(bad.as_bytes());
        let e = Bundle::from_bytes(bytes).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Manifest, "{bad:?}: {e}");
        assert!(
            !e.to_string().contains('\n') && !e.to_string().contains('\u{1b}'),
            "{e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn unpack_writes_listed_files_into_a_new_or_empty_directory_only() {
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("t.promise");
    pack(&tiny(), &packed).unwrap();
    // an empty directory is fine, a symlink to one is not
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let e = unpack(&packed, &link).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert_eq!(unpack(&packed, &empty).unwrap(), 5);
    Bundle::open(&empty).unwrap();
    // special files are refused at once, before a byte is read
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo = tmp.path().join("fifo.promise");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: a valid NUL-terminated path
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0);
    let dir = tmp.path().join("from-fifo");
    let dir2 = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(unpack(&fifo, &dir2).map(|_| ()));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("unpack of a FIFO hangs");
    assert_eq!(r.unwrap_err().code(), ErrorCode::Io);
    assert!(!dir.exists());
    let e = unpack(Path::new("/dev/zero"), &tmp.path().join("zero")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{e}");
    // a large file that is not a container: refused on its header, not read whole
    let big = tmp.path().join("big.promise");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    let e = unpack(&big, &tmp.path().join("big")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Manifest, "{e}");
}
