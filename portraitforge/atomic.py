"""File durability and identity shared by every writer of images, caches, stores and models: the one atomic
writer, the one directory fsync and the one sha256 of a file.

File mode policy (the only one in the package): a file written here gets the mode of the file it replaces, or,
for a new file, the mode a plain `open()` would give it (0o666 minus the umask, so 0o644 under the usual 022).
`tempfile.mkstemp` alone would leave 0o600, and an output image or a model readable only by its writer is a
surprise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in chunks by `hashlib.file_digest`."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename (or a new entry) in `path` durable."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def new_file_mode(target: Path) -> int:
    """The module's file mode policy: the replaced file's mode, else what a plain `open()` would create."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)  # the umask can only be read by setting it; put it straight back
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Temp file in the same folder + fsync + rename + fsync of the folder: readers see the old or the new
    file, never a partial one, and the new one survives a crash once this returns."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        os.fchmod(fd, new_file_mode(target))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target
