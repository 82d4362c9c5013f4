"""The identity store: cached, versioned, verifiable identity embeddings built from several photos.

Layout of a store directory (default `home_dir()/"embeddings_cache"`)::

    .lock                                   # filelock: one writer at a time across processes
    audit.jsonl                             # one line per use of an identity (see audit.py)
    identities/<name>/identity.json         # metadata (pydantic-validated JSON, sealed by a sha256)
    identities/<name>/embeddings-<digest>.safetensors   # per-photo embeddings, centroids, crops

Writes are atomic: a new tensors file gets a content-addressed name, then `identity.json` (which
names it and carries its digest) is replaced in one `os.replace`. A crash at any point leaves either
the old or the new identity, never a mix. New identities are built in a hidden temp directory and
renamed into place. Nothing is ever pickled: tensors are safetensors, metadata is JSON.

Every load of a stored identity for use goes through `IdentityStore.get`, which checks consent (when it is
required) and writes the one audit line of that use, with its purpose; the schema is in records.py, the
photo analysis and consensus in consensus.py, the file formats in codec.py.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock
from filelock import Timeout as LockTimeout

from portraitforge.atomic import atomic_write_bytes, file_sha256, fsync_dir
from portraitforge.embeddings_cache.audit import AUDIT_FILE, AuditEntry, AuditLog, current_user, utc_now
from portraitforge.embeddings_cache.codec import (
    decode_tensors,
    encode_export,
    encode_tensors,
    identity_from_record,
    pack,
    parse_record,
    read_export,
    record_json,
    specs_from_record,
    tensors_digest,
    unpack,
    validate,
)
from portraitforge.embeddings_cache.consensus import (
    ModelHashes,
    PhotoData,
    SpaceSpec,
    analyze_photo,
    build_consensus,
    embed_crop,
    infer_metric,
    model_ref,
    space_threshold,
)
from portraitforge.embeddings_cache.records import (
    MAX_IMPORT_BYTES,
    METADATA_FILE,
    PURPOSES,
    STORE_DIRNAME,
    IdentityCorruptedError,
    IdentityRecord,
    Purpose,
    consent_status,
    make_consent,
    metadata_digest,
    seal,
    validate_name,
)
from portraitforge.errors import BadInputError, ModelUnavailableError, NoFaceError
from portraitforge.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image
from portraitforge.paths import home_dir
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.refiners.detect import DLIB_SPACE, DlibFaceAnalyzer
from portraitforge.types import Identity


def _expand_sources(images: Sequence[str | os.PathLike[str] | np.ndarray]) -> list[str | Path | np.ndarray]:
    out: list[str | Path | np.ndarray] = []
    for item in images:
        if isinstance(item, np.ndarray):
            out.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(c for c in path.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise BadInputError(f"{path}: folder contains no images")
            out.extend(found)
        else:
            out.append(path)
    if not out:
        raise BadInputError("no identity photos given")
    return out


# --------------------------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class IdentitySummary:
    name: str
    photos: int
    kept: int
    spaces: list[str]
    consent: bool
    note: str | None
    updated: str | None
    error: str | None = None  # set when the identity failed its integrity checks

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VerifyResult:
    name: str
    ok: bool
    problems: list[str]
    stale: list[str]
    recomputed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


OnStale = Literal["error", "recompute"]
ExistPolicy = Literal["error", "replace", "append"]


class IdentityStore:
    """Identities on disk. `store = IdentityStore(path)`, `store.add(name, photos)`, `store.get(name)`.

    `get` is the one way a stored identity is used: it audits the use with its purpose (the store's `purpose`
    unless the call gives one) and, with `require_consent=True`, refuses a missing, expired or out-of-scope
    consent. Loaded dlib models are kept on the instance (never module-level) so a notebook can call `add`
    repeatedly cheaply.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        require_consent: bool = False,
        lock_timeout: float = 120.0,
        purpose: Purpose = "api",
    ) -> None:
        self.root = Path(path).expanduser() if path is not None else home_dir() / STORE_DIRNAME
        self.require_consent = require_consent
        if purpose not in PURPOSES:
            raise BadInputError(f"unknown purpose '{purpose}' (one of: {', '.join(PURPOSES)})")
        self.purpose: Purpose = purpose  # what `get` audits a use as when the caller does not say
        self.lock_timeout = lock_timeout
        self._hashes = ModelHashes()
        self._default_analyzer: DlibFaceAnalyzer | None = None

    def __repr__(self) -> str:
        return f"IdentityStore({str(self.root)!r})"

    # ---- paths, lock, analyzers

    @property
    def identities_dir(self) -> Path:
        return self.root / "identities"

    @property
    def audit_log(self) -> AuditLog:
        return AuditLog(self.root / AUDIT_FILE, self.lock_timeout)

    def _dir(self, name: str) -> Path:
        return self.identities_dir / validate_name(name)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.identities_dir.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(self.root / ".lock"), timeout=self.lock_timeout):
                yield
        except LockTimeout:
            raise BadInputError(
                f"identity store {self.root} is locked by another process (waited {self.lock_timeout:g} s)"
            ) from None

    def _analyzers(self, analyzers: Sequence[FaceAnalyzer] | None) -> tuple[FaceAnalyzer, list[FaceAnalyzer]]:
        """dlib-128 is always computed; other analyzers add their spaces (keyed by `embedding_space`)."""
        given = list(analyzers or [])
        spaces = [a.embedding_space for a in given]
        if len(set(spaces)) != len(spaces):
            raise BadInputError(f"two analyzers share an embedding space: {spaces}")
        primary = next((a for a in given if a.embedding_space == DLIB_SPACE), None)
        if primary is None:
            if self._default_analyzer is None:
                self._default_analyzer = DlibFaceAnalyzer.load()
            primary = self._default_analyzer
        return primary, [a for a in given if a is not primary]

    def _spec(self, analyzer: FaceAnalyzer, dim: int) -> SpaceSpec:
        metric = infer_metric(analyzer, dim)
        return SpaceSpec(
            space=analyzer.embedding_space,
            dim=dim,
            metric=metric,
            threshold=space_threshold(analyzer, metric),
            model=model_ref(analyzer, self._hashes),
            analyzer=json.loads(json.dumps(analyzer.params(), default=str)),
        )

    # ---- reading

    def exists(self, name: str) -> bool:
        try:
            return (self._dir(name) / METADATA_FILE).is_file()
        except BadInputError:
            return False

    def names(self) -> builtins.list[str]:
        if not self.identities_dir.is_dir():
            return []
        return sorted(p.name for p in self.identities_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _unknown(self, name: str) -> BadInputError:
        known = self.names()
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
        return BadInputError(f"unknown identity '{name}' (known: {shown}; store: {self.root})")

    def load(self, name: str) -> tuple[IdentityRecord, dict[str, np.ndarray]]:
        """Metadata and tensors, integrity-checked. No embedding happens here."""
        folder = self._dir(name)
        if not folder.is_dir():
            raise self._unknown(name)
        # Readers take no lock; a writer replacing identity.json between our two reads is retried.
        for _attempt in range(5):
            try:
                raw = (folder / METADATA_FILE).read_bytes()
            except FileNotFoundError:
                if not folder.is_dir():
                    raise self._unknown(name) from None
                raise IdentityCorruptedError(f"identity '{name}' is corrupted: {METADATA_FILE} is missing") from None
            record = parse_record(raw, name)
            if not record.tensors_file or Path(record.tensors_file).name != record.tensors_file:
                raise IdentityCorruptedError(f"identity '{name}' is corrupted: bad tensors file reference")
            try:
                data = (folder / record.tensors_file).read_bytes()
            except FileNotFoundError:
                if (folder / METADATA_FILE).is_file() and (folder / METADATA_FILE).read_bytes() != raw:
                    continue  # replaced under us: read the new version
                raise IdentityCorruptedError(
                    f"identity '{name}' is corrupted: tensors file {record.tensors_file} is missing"
                ) from None
            try:
                tensors = decode_tensors(data, record.tensors_file)
            except BadInputError as exc:
                raise IdentityCorruptedError(f"identity '{name}' is corrupted: {exc}") from None
            validate(record, tensors, expected_name=name)
            return record, tensors
        raise IdentityCorruptedError(f"identity '{name}' keeps changing while being read")

    def show(self, name: str) -> dict[str, Any]:
        record, _ = self.load(name)
        return record.model_dump(mode="json")

    def stale_spaces(self, record: IdentityRecord, analyzer: FaceAnalyzer) -> str | None:
        """Why `record` cannot be used with `analyzer` as stored (None when it can)."""
        space = analyzer.embedding_space
        if space not in record.spaces:
            return f"identity '{record.name}' has no '{space}' embedding (it has: {', '.join(record.spaces)})"
        stored = record.spaces[space].model
        current = model_ref(analyzer, self._hashes)
        if stored.sha256 and current.sha256 and stored.sha256 != current.sha256:
            return (
                f"identity '{record.name}' was embedded with {stored.name} (sha256 {stored.sha256[:12]}), "
                f"the current model is {current.name} (sha256 {current.sha256[:12]})"
            )
        return None

    def get(
        self,
        name: str,
        analyzer: FaceAnalyzer | None = None,
        *,
        purpose: Purpose | None = None,
        require_consent: bool | None = None,
        on_stale: OnStale = "error",
        graders: Sequence[FaceAnalyzer] = (),
    ) -> Identity:
        """The cached identity (`cache_hit=True`): centroids per space, reference crop and landmarks.

        Every call is one use of the identity and writes one audit line: its `purpose` (default: the store's,
        "api" unless set) and whether the consent covers it. With consent required (here or on the store), a
        missing or expired consent, or one whose scope leaves out `purpose`, is refused with a BadInputError
        (and a `refused` audit line); without, the gap is only noted in the audit line.

        With `analyzer`, its embedding space is checked against the stored model version. A stale or missing
        space raises ModelUnavailableError, or with `on_stale="recompute"` is recomputed from the stored crops.
        `graders` (second recognisers that only score results) get their space recomputed when stale.
        """
        validate_name(name)
        use = self.purpose if purpose is None else purpose
        if use not in PURPOSES:
            raise BadInputError(f"unknown purpose '{use}' (one of: {', '.join(PURPOSES)})")
        record, tensors = self.load(name)
        gap = consent_status(record.consent, use)
        needs_consent = self.require_consent if require_consent is None else require_consent
        if needs_consent and gap is not None:
            refusal = (
                f"identity '{name}': {gap} and consent is required "
                f"(record it with: portraitforge identity consent {name} TEXT [--consent-scope ...] "
                "[--consent-until YYYY-MM-DD])"
            )
            self.audit_log.append(
                name, use, identity_digest=record.tensors_digest, purpose=use, consent=gap, refused=refusal
            )
            raise BadInputError(refusal)
        identity, digest = self._identity(name, record, tensors, analyzer, on_stale, graders)
        self.audit_log.append(name, use, identity_digest=digest, purpose=use, consent=gap or "ok")
        return identity

    def _identity(
        self,
        name: str,
        record: IdentityRecord,
        tensors: dict[str, np.ndarray],
        analyzer: FaceAnalyzer | None,
        on_stale: OnStale,
        graders: Sequence[FaceAnalyzer],
    ) -> tuple[Identity, str]:
        """`get` after the consent check: model staleness, recomputing from stored crops where allowed.
        Returns the identity and the digest of the stored version it came from."""
        if analyzer is not None:
            problem = self.stale_spaces(record, analyzer)
            if problem is not None:
                if on_stale != "recompute":
                    raise ModelUnavailableError(
                        f"{problem}; recompute it with: portraitforge identity verify --recompute"
                    )
                record, tensors = self.recompute(name, [analyzer])
                identity = identity_from_record(record, tensors)
                identity.cache_hit = False  # embeddings were just computed
                return identity, record.tensors_digest
        # A grader's space only scores results, so a missing or stale one is recomputed from the stored crops
        # (once: the store keeps it) rather than refused.
        stale = [g for g in graders if self.stale_spaces(record, g) is not None]
        if stale:
            record, tensors = self.recompute(name, stale)
        return identity_from_record(record, tensors), record.tensors_digest

    def verify(self, analyzers: Sequence[FaceAnalyzer] | None = None, recompute: bool = False) -> list[VerifyResult]:
        """Integrity of every identity, model staleness against `analyzers`, and leftovers of crashed writes."""
        results: list[VerifyResult] = []
        if self.identities_dir.is_dir():
            leftovers = sorted(p.name for p in self.identities_dir.iterdir() if p.name.startswith("."))
            if leftovers:
                results.append(VerifyResult("(store)", False, [f"leftover temporary entries: {leftovers}"], []))
        for name in self.names():
            problems: list[str] = []
            stale: list[str] = []
            recomputed = False
            try:
                validate_name(name)
                record, _ = self.load(name)
            except BadInputError as exc:
                results.append(VerifyResult(name, False, [exc.message], []))
                continue
            stale = [msg for a in analyzers or [] if (msg := self.stale_spaces(record, a)) is not None]
            if stale and recompute:
                try:
                    self.recompute(name, builtins.list(analyzers or []))
                    recomputed, stale = True, []
                except BadInputError as exc:
                    problems.append(f"recompute failed: {exc.message}")
            folder = self._dir(name)
            orphans = [p.name for p in folder.iterdir() if p.name != METADATA_FILE and p.name != record.tensors_file]
            if orphans and not recomputed:
                problems.append(f"unreferenced files: {sorted(orphans)}")
            results.append(VerifyResult(name, not problems and not stale, problems, stale, recomputed))
        return results

    # ---- writing

    def _write(self, folder: Path, record: IdentityRecord, tensors: dict[str, np.ndarray]) -> IdentityRecord:
        digest = tensors_digest(tensors)
        filename = f"embeddings-{digest[:16]}.safetensors"
        atomic_write_bytes(folder / filename, encode_tensors(tensors))
        record = seal(record.model_copy(update={"tensors_file": filename, "tensors_digest": digest}))
        atomic_write_bytes(folder / METADATA_FILE, record_json(record))
        for old in folder.glob("embeddings-*.safetensors"):
            if old.name != filename:
                old.unlink(missing_ok=True)
        return record

    def _commit(
        self,
        record: IdentityRecord,
        tensors: dict[str, np.ndarray],
        existing: ExistPolicy | Literal["update"],
        renaming_from: str | None = None,
    ) -> IdentityRecord:
        """Write under the lock. `existing`: "error" (must be new), "replace"/"append"/"update" (may exist)."""
        name = record.name
        folder = self._dir(name)
        if folder.exists():
            if existing == "error":
                raise BadInputError(f"identity '{name}' already exists (use --replace or --append)")
            return self._write(folder, record, tensors)
        clash = [n for n in self.names() if n.casefold() == name.casefold() and n != renaming_from]
        if clash:
            raise BadInputError(f"identity '{name}' clashes with '{clash[0]}' (names are case-insensitive)")
        tmp = self.identities_dir / f".tmp-{uuid.uuid4().hex}"
        # Face crops and embeddings are biometric data: the identity's folder is its owner's alone, whatever
        # the modes of the files inside (atomic.py's one policy gives them what a plain open() would).
        tmp.mkdir(parents=True, mode=0o700)
        try:
            record = self._write(tmp, record, tensors)
            os.rename(tmp, folder)  # atomic: the identity appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.identities_dir)
        return record

    def add(
        self,
        name: str,
        images: Sequence[str | os.PathLike[str] | np.ndarray],
        note: str | None = None,
        consent: str | None = None,
        analyzers: Sequence[FaceAnalyzer] | None = None,
        exist: ExistPolicy = "error",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        *,
        consent_by: str | None = None,
        consent_scope: str | Sequence[str] | None = None,
        consent_until: str | None = None,
    ) -> IdentityRecord:
        """Embed `images` (files, folders or RGB arrays) and store the identity.

        `consent` is the consent text; `consent_by` who gave it, `consent_scope` the purposes it covers
        (default: all), `consent_until` its last day (YYYY-MM-DD).

        Every photo is analysed before the store is touched: a photo without a face raises NoFaceError and
        leaves the store byte-for-byte unchanged. `exist="append"` adds photos to an existing identity.
        """
        validate_name(name)
        if exist not in ("error", "replace", "append"):
            raise BadInputError(f"unknown exist policy '{exist}'")
        consent_record = make_consent(
            consent, consent_by, consent_scope, consent_until, recorded_by=current_user(), recorded_at=utc_now()
        )
        primary, others = self._analyzers(analyzers)
        sources = _expand_sources(images)
        photos: list[PhotoData] = []
        seen: dict[str, str] = {}
        for k, src in enumerate(sources):
            if isinstance(src, np.ndarray):
                if src.ndim != 3 or src.shape[2] != 3 or src.dtype != np.uint8:
                    raise BadInputError(f"identity photo array {k} must be RGB uint8 (H x W x 3)")
                rgb, label = np.ascontiguousarray(src), f"array-{k}"
                sha = hashlib.sha256(rgb.tobytes()).hexdigest()
            else:
                path = Path(src)
                rgb = load_image(path, max_pixels=max_pixels).rgb  # validates the file (one-line errors)
                label, sha = path.name, file_sha256(path)
            if sha in seen:
                continue  # the same file twice would double its weight in the centroid
            seen[sha] = label
            photos.append(analyze_photo(rgb, label, sha, primary, others))
        specs: dict[str, SpaceSpec] = {}
        for analyzer in [primary, *others]:
            dim = next((len(v) for p in photos if (v := p.embeddings.get(analyzer.embedding_space)) is not None), 0)
            if dim:
                specs[analyzer.embedding_space] = self._spec(analyzer, dim)
        if exist != "append":
            consensus = build_consensus(name, photos, specs, primary.embedding_space)
            record, tensors = pack(name, photos, specs, consensus, created=utc_now(), note=note, consent=consent_record)
            with self._lock():
                record = self._commit(record, tensors, exist)
            self.audit_log.append(name, "add", identity_digest=record.tensors_digest)
            return record
        with self._lock():
            if not self.exists(name):
                consensus = build_consensus(name, photos, specs, primary.embedding_space)
                record, tensors = pack(
                    name, photos, specs, consensus, created=utc_now(), note=note, consent=consent_record
                )
            else:
                old, old_tensors = self.load(name)
                old_specs = specs_from_record(old)
                for space, spec in specs.items():
                    if space in old_specs and old_specs[space].model.sha256 != spec.model.sha256:
                        raise ModelUnavailableError(
                            f"identity '{name}' was embedded with another {space} model; run "
                            "portraitforge identity verify --recompute before appending"
                        )
                old_photos = unpack(old, old_tensors)
                known = {p.sha256 for p in old_photos}
                merged = old_photos + [p for p in photos if p.sha256 not in known]
                all_specs = {**old_specs, **specs}
                for p in merged:  # a space a photo was never embedded in stays missing (None) for it
                    for space in all_specs:
                        p.embeddings.setdefault(space, None)
                consensus = build_consensus(name, merged, all_specs, primary.embedding_space)
                record, tensors = pack(
                    name,
                    merged,
                    all_specs,
                    consensus,
                    created=old.created,
                    note=note if note is not None else old.note,
                    consent=consent_record or old.consent,
                )
            record = self._commit(record, tensors, "append")
        self.audit_log.append(name, "add", identity_digest=record.tensors_digest)
        return record

    def recompute(self, name: str, analyzers: Sequence[FaceAnalyzer]) -> tuple[IdentityRecord, dict[str, np.ndarray]]:
        """Re-embed the stored per-photo crops with `analyzers` (new model version or a missing space)."""
        self._require(name)
        with self._lock():
            record, tensors = self.load(name)
            photos = unpack(record, tensors)
            specs = specs_from_record(record)
            for analyzer in analyzers:
                space = analyzer.embedding_space
                vectors = [embed_crop(analyzer, p) for p in photos]
                dim = next((len(v) for v in vectors if v is not None), 0)
                if not dim:
                    raise NoFaceError(f"identity '{name}': {analyzer.name} finds no face in the stored crops")
                for p, v in zip(photos, vectors, strict=True):
                    p.embeddings[space] = v
                specs[space] = self._spec(analyzer, dim)
            primary = DLIB_SPACE if DLIB_SPACE in specs else next(iter(specs))
            consensus = build_consensus(name, photos, specs, primary)
            new_record, new_tensors = pack(
                name, photos, specs, consensus, created=record.created, note=record.note, consent=record.consent
            )
            new_record = self._commit(new_record, new_tensors, "update")
        self.audit_log.append(name, "recompute", identity_digest=new_record.tensors_digest)
        return new_record, new_tensors

    def set_consent(
        self,
        name: str,
        text: str | None,
        *,
        by: str | None = None,
        scope: str | Sequence[str] | None = None,
        until: str | None = None,
    ) -> IdentityRecord:
        """Record (or with None, withdraw) consent for an existing identity: who gave it (`by`), for which
        purposes (`scope`, default all) and until which day (`until`, YYYY-MM-DD, default no expiry)."""
        consent = make_consent(text, by, scope, until, recorded_by=current_user(), recorded_at=utc_now())
        self._require(name)
        with self._lock():
            record, tensors = self.load(name)
            record = record.model_copy(update={"consent": consent, "updated": utc_now()})
            record = self._commit(record, tensors, "update")
        self.audit_log.append(name, "consent" if text else "consent-withdrawn", identity_digest=record.tensors_digest)
        return record

    def _require(self, name: str) -> None:
        """Fail on an unknown name before taking the lock (which would create the store directory)."""
        if not self._dir(name).is_dir():
            raise self._unknown(name)

    def remove(self, name: str) -> None:
        self._require(name)
        with self._lock():
            folder = self._dir(name)
            if not folder.is_dir():
                raise self._unknown(name)
            trash = self.identities_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(folder, trash)  # atomic disappearance; the delete below may be slow
            shutil.rmtree(trash, ignore_errors=True)
            fsync_dir(self.identities_dir)
        self.audit_log.append(name, "remove")

    def rename(self, old: str, new: str) -> IdentityRecord:
        validate_name(new)
        self._require(old)
        with self._lock():
            record, tensors = self.load(old)
            if self._dir(new).exists():
                raise BadInputError(f"identity '{new}' already exists")
            renamed = record.model_copy(update={"name": new, "updated": utc_now()})
            # Write the new one completely first, then drop the old: a crash leaves both, never neither.
            result = self._commit(renamed, tensors, "error", renaming_from=old)
            trash = self.identities_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(self._dir(old), trash)
            shutil.rmtree(trash, ignore_errors=True)
        self.audit_log.append(new, f"rename from {old}", identity_digest=result.tensors_digest)
        return result

    # ---- exchange

    def export(self, name: str, file: str | os.PathLike[str]) -> Path:
        """One self-contained .safetensors: all tensors, with the metadata JSON in its header."""
        target = Path(file)
        if target.suffix.lower() != ".safetensors":
            raise BadInputError(f"{target}: export file must end in .safetensors")
        record, tensors = self.load(name)
        atomic_write_bytes(target, encode_export(record, tensors))
        self.audit_log.append(name, "export", target, identity_digest=record.tensors_digest)
        return target

    def import_(self, file: str | os.PathLike[str], name: str | None = None, replace: bool = False) -> IdentityRecord:
        """Validate an exported identity completely (format, schema, hashes, shapes, name) before writing."""
        source = Path(file)
        if not source.is_file():
            raise BadInputError(f"{source}: file not found")
        size = source.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise BadInputError(f"{source}: {size} bytes is larger than an identity export can be")
        record, tensors = read_export(source)
        validate(record, tensors)
        if record.tensors_file is not None:
            raise IdentityCorruptedError(f"identity '{record.name}' is corrupted: export names a store file")
        if name is not None and name != record.name:
            record = seal(record.model_copy(update={"name": validate_name(name)}))
        with self._lock():
            record = self._commit(record, tensors, "replace" if replace else "error")
        self.audit_log.append(record.name, "import", identity_digest=record.tensors_digest)
        return record

    # ---- audit

    def audit(
        self, identity: str | Identity, operation: str, output_path: str | os.PathLike[str] | None = None
    ) -> AuditEntry:
        """Append one line to the audit log: time, identity, operation, output file and its sha256. Uses of a
        stored identity are audited by `get` already; this is for other events (e.g. an output to record)."""
        name = identity if isinstance(identity, str) else identity.name
        digest: str | None = None
        if self.exists(name):
            with contextlib.suppress(BadInputError, OSError, json.JSONDecodeError):
                digest = json.loads((self._dir(name) / METADATA_FILE).read_bytes()).get("tensors_digest")
        return self.audit_log.append(name, operation, output_path, identity_digest=digest)

    # ---- listing (kept last: `list` shadows the builtin inside the class body)

    def list(self) -> builtins.list[IdentitySummary]:
        out: builtins.list[IdentitySummary] = []
        for name in self.names():
            try:
                record = parse_record((self.identities_dir / name / METADATA_FILE).read_bytes(), name)
                if metadata_digest(record) != record.metadata_sha256 or record.name != name:
                    raise IdentityCorruptedError(f"identity '{name}' is corrupted: metadata hash mismatch")
            except (BadInputError, OSError) as exc:
                msg = exc.message if isinstance(exc, BadInputError) else f"identity '{name}': {exc}"
                out.append(IdentitySummary(name, 0, 0, [], False, None, None, error=msg))
                continue
            out.append(
                IdentitySummary(
                    name=name,
                    photos=len(record.photos),
                    kept=len(record.kept),
                    spaces=builtins.list(record.spaces),
                    consent=record.consent is not None,
                    note=record.note,
                    updated=record.updated,
                )
            )
        return out
