"""The model store: a directory of verified model files, with resumable, hash-checked downloads.

Layout: `<store>/<filename>` for models, `<filename>.verified` next to each (size, mtime and sha256 of
the last full check, so loading does not re-hash hundreds of MB every run), `<filename>.part` while a
download is in progress (kept on failure so the next attempt resumes with an HTTP Range request) and
`.downloads/` for archives. Files become visible only through an atomic rename after the hash check.

Store directory: `--models-dir` > $PORTRAITFORGE_HOME/models > XDG data dir (see `paths.home_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from filelock import FileLock

from portraitforge import __version__
from portraitforge.errors import ModelUnavailableError
from portraitforge.models.registry import DEFAULT_REGISTRY, ModelRegistry, ModelSpec
from portraitforge.paths import home_dir

OFFLINE_ENV = "PORTRAITFORGE_OFFLINE"
MIRROR_ENV = "PORTRAITFORGE_MODELS_MIRROR"
CHUNK = 1 << 20

ProgressFn = Callable[[str, int, int | None], None]  # (file name, bytes done, bytes total)
FileState = Literal["ok", "missing", "corrupt", "unverified", "present"]


class DownloadError(Exception):
    """One URL failed; the store tries the next one and reports the last reason."""


def default_models_dir(models_dir: str | os.PathLike[str] | None = None) -> Path:
    """`models_dir` > $PORTRAITFORGE_HOME/models > $XDG_DATA_HOME/portraitforge/models."""
    if models_dir:
        return Path(models_dir).expanduser()
    return home_dir() / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _fsync_dir(path: Path) -> None:
    # Make the rename durable; not every platform lets you open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class FileStatus:
    name: str
    path: Path
    state: FileState
    size: int | None
    sha256: str | None  # actual hash when computed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "state": self.state, "size": self.size}


@dataclass
class ModelStore:
    """Locates, verifies and fetches the files of a `ModelRegistry`. Holds no open files or sessions."""

    root: Path
    registry: ModelRegistry = DEFAULT_REGISTRY
    offline: bool = False
    mirror: str | None = None  # base URL tried before the registry URLs: <mirror>/<filename>
    timeout: float = 30.0
    progress: ProgressFn | None = None

    @classmethod
    def from_dir(
        cls,
        models_dir: str | os.PathLike[str] | None = None,
        registry: ModelRegistry = DEFAULT_REGISTRY,
        offline: bool | None = None,
        mirror: str | None = None,
        **kwargs: Any,
    ) -> ModelStore:
        """Store at the resolved directory; offline/mirror default to $PORTRAITFORGE_OFFLINE / _MODELS_MIRROR."""
        return cls(
            root=default_models_dir(models_dir),
            registry=registry,
            offline=_env_flag(OFFLINE_ENV) if offline is None else offline,
            mirror=mirror or os.environ.get(MIRROR_ENV) or None,
            **kwargs,
        )

    # ---- locating and checking -------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        return self.registry.get(name)

    def path(self, name: str) -> Path:
        return self.root / self.spec(name).filename

    def has(self, name: str) -> bool:
        """True when the file is present (cheap; does not hash)."""
        return self.path(name).is_file()

    def _marker(self, path: Path) -> Path:
        return path.with_name(path.name + ".verified")

    def _marker_matches(self, path: Path, spec: ModelSpec) -> bool:
        try:
            data = json.loads(self._marker(path).read_text())
            st = path.stat()
        except (OSError, ValueError):
            return False
        return bool(
            data.get("sha256") == spec.sha256
            and data.get("size") == st.st_size
            and data.get("mtime_ns") == st.st_mtime_ns
        )

    def _write_marker(self, path: Path, digest: str) -> None:
        st = path.stat()
        payload = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        tmp = self._marker(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self._marker(path))

    def check(self, name: str, full: bool = False, hash_if_needed: bool = True) -> FileStatus:
        """State of one file. `full` re-hashes even when the marker says the file was verified;
        `hash_if_needed=False` never hashes and reports an unmarked file as "present"."""
        spec = self.spec(name)
        path = self.root / spec.filename
        if not path.is_file():
            return FileStatus(name, path, "missing", None, None)
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            return FileStatus(name, path, "corrupt", size, None)
        if spec.sha256 is None:
            return FileStatus(name, path, "unverified", size, None)
        if not full and self._marker_matches(path, spec):
            return FileStatus(name, path, "ok", size, spec.sha256)
        if not full and not hash_if_needed:
            return FileStatus(name, path, "present", size, None)
        digest = sha256_file(path)
        if digest != spec.sha256:
            self._marker(path).unlink(missing_ok=True)
            return FileStatus(name, path, "corrupt", size, digest)
        self._write_marker(path, digest)
        return FileStatus(name, path, "ok", size, digest)

    def unavailable(self, spec: ModelSpec, reason: str) -> ModelUnavailableError:
        path = self.root / spec.filename
        return ModelUnavailableError(
            f"model file '{spec.filename}' is not available ({reason}); download {spec.primary_url} "
            f"and place it at {path} (or run: portraitforge models download {spec.name})"
        )

    def ensure(self, name: str, download: bool = True) -> Path:
        """Path of a verified file, fetching it when missing or corrupt (unless offline or `download=False`)."""
        spec = self.spec(name)
        status = self.check(name)
        if status.state in ("ok", "unverified"):
            return status.path
        if not download or self.offline:
            why = "offline" if self.offline else "downloads disabled"
            if status.state == "corrupt":
                raise self.unavailable(spec, f"the stored copy fails its size/sha256 check, {why}")
            raise self.unavailable(spec, f"missing, {why}")
        return self.download(name, force=status.state == "corrupt")

    # ---- fetching --------------------------------------------------------------------------------

    def download(self, name: str, force: bool = False) -> Path:
        """Fetch one file (resuming a previous partial download) and verify it before it becomes visible."""
        spec = self.spec(name)
        path = self.root / spec.filename
        if self.offline:
            raise self.unavailable(spec, "offline")
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not force:
                status = self.check(name)
                if status.state in ("ok", "unverified"):
                    return path  # another process finished it while we waited for the lock
            if path.exists():
                # A corrupt copy is set aside, not trusted, and replaced atomically below.
                path.unlink()
                self._marker(path).unlink(missing_ok=True)
            reasons: list[str] = []
            for url in self._urls(spec):
                try:
                    self._fetch(url, path, spec.sha256, spec.size, spec.filename)
                    return path
                except DownloadError as exc:
                    reasons.append(str(exc))
            if spec.archive is not None:
                try:
                    self._fetch_from_archive(spec)
                    return path
                except DownloadError as exc:
                    reasons.append(str(exc))
        raise self.unavailable(spec, reasons[-1] if reasons else "no download URL")

    def _urls(self, spec: ModelSpec) -> list[str]:
        urls = list(spec.urls)
        if self.mirror:
            urls.insert(0, self.mirror.rstrip("/") + "/" + spec.filename)
        return urls

    def _fetch(self, url: str, dest: Path, sha256: str | None, size: int | None, label: str) -> None:
        """Download `url` to `dest` via `dest.part`, resuming, hash-checking and renaming atomically."""
        part = dest.with_name(dest.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        if size is None or offset < size:
            self._stream(url, part, offset, size, label)
        digest = sha256_file(part)
        if sha256 is not None and digest != sha256:
            part.unlink()  # a bad partial must not be resumed
            raise DownloadError(f"sha256 mismatch for {url}: got {digest[:12]}..., expected {sha256[:12]}...")
        if size is not None and part.stat().st_size != size:
            part.unlink()
            raise DownloadError(f"size mismatch for {url}")
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        self._write_marker(dest, digest)

    def _stream(self, url: str, part: Path, offset: int, size: int | None, label: str) -> None:
        headers = {"User-Agent": f"portraitforge/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                resumed = offset > 0 and response.status == 206
                if offset and not resumed:
                    offset = 0  # the server ignored the Range header: start over
                total = size
                length = response.headers.get("Content-Length")
                if total is None and length is not None:
                    total = offset + int(length)
                with part.open("ab" if resumed else "wb") as out:
                    self._copy(response, out, offset, total, label)
                    out.flush()
                    os.fsync(out.fileno())
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                return  # nothing left to fetch; the hash check decides
            raise DownloadError(f"HTTP {exc.code} from {url}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            kept = part.stat().st_size if part.exists() else 0
            resume = f"; {kept} bytes kept, the next attempt resumes" if kept else ""
            raise DownloadError(f"download of {url} failed ({reason}){resume}") from None

    def _copy(self, response: IO[bytes], out: IO[bytes], done: int, total: int | None, label: str) -> None:
        while True:
            block = response.read(CHUNK)
            if not block:
                break
            out.write(block)
            done += len(block)
            if self.progress is not None:
                self.progress(label, done, total)
        if total is not None and done < total:
            # urllib does not always raise on a short body; treat it as an interrupted transfer.
            raise OSError("connection closed early")

    def _fetch_from_archive(self, spec: ModelSpec) -> None:
        assert spec.archive is not None
        archive = spec.archive
        downloads = self.root / ".downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        zip_path = downloads / archive.filename
        with FileLock(str(zip_path) + ".lock"):
            if not (zip_path.is_file() and (archive.sha256 is None or sha256_file(zip_path) == archive.sha256)):
                self._fetch(archive.url, zip_path, archive.sha256, archive.size, archive.filename)
        # Extract every registry file this archive carries, so one download serves the whole pack.
        siblings = [s for s in self.registry if s.archive is not None and s.archive.url == archive.url]
        try:
            with zipfile.ZipFile(zip_path) as zf:
                members = {Path(m).name: m for m in zf.namelist() if not m.endswith("/")}
                for sib in siblings:
                    dest = self.root / sib.filename
                    if sib is not spec and self.check(sib.name).state == "ok":
                        continue
                    assert sib.archive is not None
                    member = members.get(sib.archive.member)
                    if member is None:
                        if sib is spec:
                            raise DownloadError(f"{archive.filename} has no member {sib.archive.member}")
                        continue
                    self._extract(zf, member, dest, sib)
        except zipfile.BadZipFile:
            zip_path.unlink(missing_ok=True)
            raise DownloadError(f"{archive.filename} is not a valid zip archive") from None
        if all(self.check(s.name).state == "ok" for s in siblings):
            zip_path.unlink(missing_ok=True)

    def _extract(self, zf: zipfile.ZipFile, member: str, dest: Path, spec: ModelSpec) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with zf.open(member) as src, part.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        digest = sha256_file(part)
        if spec.sha256 is not None and digest != spec.sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch for {member} inside the archive")
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        self._write_marker(dest, digest)

    # ---- listing ---------------------------------------------------------------------------------

    def statuses(self, full: bool = False, hash_if_needed: bool = True) -> Iterator[FileStatus]:
        for spec in self.registry:
            yield self.check(spec.name, full=full, hash_if_needed=hash_if_needed)
