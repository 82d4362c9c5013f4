"""Identity <-> files: the tensors of an identity (pack/unpack), their integrity checks, and safetensors/JSON I/O.

Tensors are read and written with the `safetensors` library (never pickle); an export's metadata (the sealed
`identity.json`) travels in the safetensors header and is read with `safe_open(...).metadata()` before any
tensor is used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from portraitforge.embeddings_cache.audit import utc_now
from portraitforge.embeddings_cache.consensus import CONSENSUS_METHOD, Consensus, PhotoData, SpaceSpec
from portraitforge.embeddings_cache.identity import REFERENCE_MARGIN
from portraitforge.embeddings_cache.records import (
    FORMAT,
    FORMAT_VERSION,
    STORED_CROP_SIZE,
    ConsentRecord,
    IdentityCorruptedError,
    IdentityRecord,
    PhotoRecord,
    ReferenceRecord,
    SpaceRecord,
    metadata_digest,
    seal,
    validate_name,
)
from portraitforge.errors import BadInputError
from portraitforge.types import FloatArray, Identity


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """Content hash over names, dtypes, shapes and bytes, independent of the file's header layout, so a
    stored identity and its export have the same digest."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        digest.update(key.encode("utf-8") + b"\0" + arr.dtype.str.encode() + repr(arr.shape).encode() + b"\0")
        digest.update(arr.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- packing


def _emb_key(space: str) -> str:
    return f"embeddings.{space}"


def _centroid_key(space: str) -> str:
    return f"centroid.{space}"


def pack(
    name: str,
    photos: list[PhotoData],
    specs: dict[str, SpaceSpec],
    consensus: Consensus,
    *,
    created: str,
    note: str | None,
    consent: ConsentRecord | None,
) -> tuple[IdentityRecord, dict[str, np.ndarray]]:
    n = len(photos)
    tensors: dict[str, np.ndarray] = {
        "crops": np.stack([p.crop for p in photos]).astype(np.uint8),
        "crop_landmarks": np.stack([p.crop_landmarks for p in photos]).astype(np.float32),
        "crop_boxes": np.stack([p.crop_box for p in photos]).astype(np.float32),
        "reference_crop": np.ascontiguousarray(photos[consensus.reference].reference_crop, dtype=np.uint8),
        "reference_landmarks68": photos[consensus.reference].reference_landmarks.astype(np.float32),
    }
    mesh = photos[consensus.reference].reference_mesh
    if mesh is not None:  # the mesh engine's reference, fitted on the whole photo (better than on the crop)
        tensors["reference_mesh"] = np.asarray(mesh, np.float32)
    spaces: dict[str, SpaceRecord] = {}
    for space, spec in specs.items():
        if space not in consensus.centroids:
            continue
        rows = np.full((n, spec.dim), np.nan, np.float32)
        for i, p in enumerate(photos):
            v = p.embeddings.get(space)
            if v is not None:
                rows[i] = v
        tensors[_emb_key(space)] = rows
        tensors[_centroid_key(space)] = consensus.centroids[space]
        has = [i for i in range(n) if photos[i].embeddings.get(space) is not None]
        spaces[space] = SpaceRecord(
            dim=spec.dim,
            metric=spec.metric,
            threshold=spec.threshold,
            model=spec.model,
            analyzer=spec.analyzer,
            kept=[i for i in consensus.kept if i in has],
            rejected=[i for i in has if i not in consensus.kept],
            method=CONSENSUS_METHOD,
        )
    records = [
        PhotoRecord(
            index=i,
            file=p.file,
            sha256=p.sha256,
            width=p.width,
            height=p.height,
            faces_found=p.faces_found,
            box=[round(float(v), 2) for v in p.box],
            quality=p.quality,
            quality_detail=p.quality_detail,
            kept=i in consensus.kept,
            reasons=consensus.reasons[i],
            notes=p.notes,
            distances=consensus.distances[i],
            spaces=[s for s in spaces if p.embeddings.get(s) is not None],
        )
        for i, p in enumerate(photos)
    ]
    now = utc_now()
    record = IdentityRecord(
        name=name,
        created=created or now,
        updated=now,
        note=note,
        consent=consent,
        photos=records,
        spaces=spaces,
        reference=ReferenceRecord(
            photo=consensus.reference,
            size=int(tensors["reference_crop"].shape[0]),
            margin=REFERENCE_MARGIN,
        ),
        tensors_digest=tensors_digest(tensors),
    )
    return seal(record), tensors


def unpack(record: IdentityRecord, tensors: dict[str, np.ndarray]) -> list[PhotoData]:
    """Stored photos back as `PhotoData` (for append/recompute); the reference photo keeps its native crop."""
    photos = []
    for p in record.photos:
        i = p.index
        embeddings: dict[str, FloatArray | None] = {}
        for space in record.spaces:
            row = tensors[_emb_key(space)][i]
            embeddings[space] = None if not np.all(np.isfinite(row)) else row.astype(np.float32)
        is_ref = i == record.reference.photo
        photos.append(
            PhotoData(
                file=p.file,
                sha256=p.sha256,
                width=p.width,
                height=p.height,
                faces_found=p.faces_found,
                box=np.asarray(p.box, np.float32),
                embeddings=embeddings,
                quality=p.quality,
                quality_detail=dict(p.quality_detail),
                crop=tensors["crops"][i],
                crop_landmarks=tensors["crop_landmarks"][i],
                crop_box=tensors["crop_boxes"][i],
                reference_crop=tensors["reference_crop"] if is_ref else tensors["crops"][i],
                reference_landmarks=tensors["reference_landmarks68"] if is_ref else tensors["crop_landmarks"][i],
                notes=list(p.notes),
                reference_mesh=tensors.get("reference_mesh") if is_ref else None,
            )
        )
    return photos


def specs_from_record(record: IdentityRecord) -> dict[str, SpaceSpec]:
    return {
        space: SpaceSpec(space, s.dim, s.metric, s.threshold, s.model, s.analyzer) for space, s in record.spaces.items()
    }


def validate(record: IdentityRecord, tensors: dict[str, np.ndarray], expected_name: str | None = None) -> None:
    """Every structural invariant an identity must satisfy; raises IdentityCorruptedError naming it."""

    def bad(reason: str) -> IdentityCorruptedError:
        return IdentityCorruptedError(f"identity '{record.name}' is corrupted: {reason}")

    if expected_name is not None and record.name != expected_name:
        raise IdentityCorruptedError(f"identity '{expected_name}' is corrupted: its metadata names '{record.name}'")
    try:
        validate_name(record.name)
    except BadInputError as exc:
        raise bad(f"invalid name ({exc})") from None
    if metadata_digest(record) != record.metadata_sha256:
        raise bad("metadata hash mismatch (identity.json was modified)")
    if tensors_digest(tensors) != record.tensors_digest:
        raise bad("tensor hash mismatch (embeddings file was modified or truncated)")
    n = len(record.photos)
    if n == 0 or [p.index for p in record.photos] != list(range(n)):
        raise bad("photo list is empty or out of order")
    expected = {"crops", "crop_landmarks", "crop_boxes", "reference_crop", "reference_landmarks68"}
    expected |= {"reference_mesh"} & set(tensors)  # optional: identities stored by a mesh analyzer
    expected |= {_emb_key(s) for s in record.spaces} | {_centroid_key(s) for s in record.spaces}
    if set(tensors) != expected:
        raise bad(f"unexpected tensors {sorted(set(tensors) ^ expected)}")

    def check(key: str, dtype: type, shape: tuple[int | None, ...]) -> np.ndarray:
        arr = tensors[key]
        if arr.dtype != np.dtype(dtype) or arr.ndim != len(shape):
            raise bad(f"tensor '{key}' has dtype {arr.dtype} and {arr.ndim} dims")
        if any(want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)):
            raise bad(f"tensor '{key}' has shape {arr.shape}, expected {shape}")
        if (
            arr.dtype.kind == "f"
            and key.startswith(("centroid.", "reference_", "crop_"))
            and not np.isfinite(arr).all()
        ):
            raise bad(f"tensor '{key}' has non-finite values")
        return arr

    check("crops", np.uint8, (n, STORED_CROP_SIZE, STORED_CROP_SIZE, 3))
    lm = check("crop_landmarks", np.float32, (n, None, 2))
    if lm.shape[1] not in (5, 68):
        raise bad("landmarks must have 5 or 68 points")
    check("crop_boxes", np.float32, (n, 4))
    ref = check("reference_crop", np.uint8, (None, None, 3))
    if ref.shape[0] != ref.shape[1] or ref.shape[0] != record.reference.size or not 16 <= ref.shape[0] <= 4096:
        raise bad("reference crop size does not match its record")
    check("reference_landmarks68", np.float32, (lm.shape[1], 2))
    if "reference_mesh" in tensors:
        check("reference_mesh", np.float32, (468, 3))
    kept = set(record.kept)
    if not kept or record.reference.photo not in kept:
        raise bad("reference photo is not a kept photo")
    if not record.spaces:
        raise bad("no embedding space")
    for space, s in record.spaces.items():
        rows = check(_emb_key(space), np.float32, (n, s.dim))
        check(_centroid_key(space), np.float32, (s.dim,))
        if s.threshold <= 0 or not np.isfinite(s.threshold):
            raise bad(f"space '{space}' has an invalid threshold")
        if not set(s.kept) <= kept or any(not np.isfinite(rows[i]).all() for i in s.kept):
            raise bad(f"space '{space}' keeps photos without embeddings")
    for p in record.photos:
        if p.kept == bool(p.reasons) or not 0.0 <= p.quality <= 1.0:
            raise bad(f"photo {p.index} has an inconsistent kept/quality record")


# --------------------------------------------------------------------------------------------- files


def record_json(record: IdentityRecord) -> bytes:
    return (json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_record(raw: bytes | str, name: str) -> IdentityRecord:
    try:
        return IdentityRecord.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise IdentityCorruptedError(
            f"identity '{name}' is corrupted: invalid metadata ({where}: {first.get('msg')})"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


def encode_tensors(tensors: dict[str, np.ndarray]) -> bytes:
    """A store's tensors file (the metadata lives in identity.json beside it)."""
    return st_save(tensors, metadata={"format": f"{FORMAT}-tensors"})


def decode_tensors(data: bytes, source: str) -> dict[str, np.ndarray]:
    """Tensors of a store file from bytes already read (the store compares them with identity.json's digest)."""
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise BadInputError(f"{source}: unreadable tensors ({_first_line(exc)})") from None


def encode_export(record: IdentityRecord, tensors: dict[str, np.ndarray]) -> bytes:
    """One self-contained .safetensors: all tensors, with the sealed metadata JSON in its header."""
    portable = seal(record.model_copy(update={"tensors_file": None}))
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "identity": portable.model_dump_json()}
    return st_save(tensors, metadata=header)


def read_export(source: Path) -> tuple[IdentityRecord, dict[str, np.ndarray]]:
    """An export's record and tensors. safetensors validates the header (size, JSON, offsets covering the file);
    the format and the record are checked before any tensor is read."""
    try:
        with safe_open(str(source), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != FORMAT:
                raise BadInputError(f"{source}: not a portraitforge identity export")
            if meta.get("format_version") != str(FORMAT_VERSION):
                raise BadInputError(f"{source}: unsupported identity format version {meta.get('format_version')}")
            record = parse_record(str(meta.get("identity", "")), source.name)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise BadInputError(f"{source}: not a readable safetensors file ({_first_line(exc)})") from None
    return record, tensors


def identity_from_record(record: IdentityRecord, tensors: dict[str, np.ndarray]) -> Identity:
    return Identity(
        name=record.name,
        embeddings={space: tensors[_centroid_key(space)].copy() for space in record.spaces},
        reference_crop=np.ascontiguousarray(tensors["reference_crop"]),
        reference_landmarks68=tensors["reference_landmarks68"].copy(),
        sources=[record.photos[i].sha256 for i in record.kept],
        cache_hit=True,
        reference_mesh=tensors["reference_mesh"].copy() if "reference_mesh" in tensors else None,
    )
