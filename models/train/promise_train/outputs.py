"""Every file the pipeline writes goes through `output`: a fresh temporary file created
exclusively (O_EXCL, so never through a planted symlink or an existing file) in the
destination's own folder, renamed over the destination only once it is complete. A
crash leaves the destination as it was; the temporary file is removed on any error.

Destinations are checked first, with one-line errors: the folder must exist, and the
destination must not be a folder.
"""
from __future__ import annotations

import contextlib
import os
import tempfile


class OutputError(ValueError):
    """A destination the pipeline cannot write: what it is and what was expected."""


def check_destination(path: str, what: str = "--out") -> str:
    """The destination's folder, after checking it exists and `path` is not a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{what} {path}: is a folder, expected a file path")
    if not os.path.isdir(folder):
        raise OutputError(f"{what} {path}: the folder {folder} does not exist")
    return folder


@contextlib.contextmanager
def output(path: str, mode: str = "w", what: str = "--out", **kw):
    """`with output(path) as f:` writes `path` atomically through an exclusive temporary
    file beside it (text mode takes `encoding`/`newline` as `open` does)."""
    folder = check_destination(path, what)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(fd, 0o666 & ~umask)         # what open() would have made, not mkstemp's 0600
        with os.fdopen(fd, mode, **kw) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def output_folder(path: str, what: str) -> str:
    """A folder the pipeline writes into: created when missing (its parent must exist);
    an existing file there is an error, not overwritten."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{what} {path}: is a file, expected a folder")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputError(f"{what} {path}: the folder {parent} does not exist")
    os.makedirs(path, exist_ok=True)
    return path
