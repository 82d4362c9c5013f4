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
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import shutil
import struct
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from portraitforge.atomic import atomic_write_bytes, fsync_dir
from portraitforge.embeddings_cache.audit import AUDIT_FILE, AuditEntry, AuditLog, current_user, file_sha256, utc_now
from portraitforge.embeddings_cache.identity import REFERENCE_MARGIN, REFERENCE_MAX, REFERENCE_MIN
from portraitforge.errors import BadInputError, ModelUnavailableError, NoFaceError
from portraitforge.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image
from portraitforge.paths import home_dir
from portraitforge.refiners.align import align_face, native_crop_size, points_to_crop, transform_points
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.refiners.detect import (
    DLIB_MATCH_THRESHOLD,
    DLIB_SPACE,
    DlibFaceAnalyzer,
    box_iou,
    kps5_from_landmarks68,
)
from portraitforge.types import Face, FloatArray, Identity, ImageRGB

FORMAT = "portraitforge-identity"
FORMAT_VERSION = 1
STORE_DIRNAME = "embeddings_cache"
METADATA_FILE = "identity.json"
STORED_CROP_SIZE = 320  # per-photo aligned crops kept so embeddings can be recomputed for a new model
MAX_NAME_CHARS = 64
MAX_NAME_BYTES = 200
MAX_IMPORT_BYTES = 512 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024

# Quality gates that reject a photo before the consensus step (a "bad crop").
MIN_LANDMARKS_CONFIDENCE = 0.3
MIN_INTEROCULAR_PX = 16.0
# A photo also counts as an outlier when it sits far out of the spread of the other photos, even if it is
# under the match threshold (a blurred or half-occluded shot of the same person): beyond median + k * MAD
# of the distances, and at least this fraction of the threshold (tiny spreads would otherwise reject noise).
OUTLIER_MAD_K = 4.0
OUTLIER_MIN_FRACTION = 0.75

Metric = Literal["euclidean", "cosine"]
# Same-person thresholds per (space, metric) when the analyzer does not state `match_threshold`.
KNOWN_THRESHOLDS: dict[tuple[str, str], float] = {
    (DLIB_SPACE, "euclidean"): DLIB_MATCH_THRESHOLD,
    # 1 - cos, as detect_insightface.ARCFACE_MATCH_DISTANCE (not imported: that module pulls in onnxruntime).
    ("arcface-512", "cosine"): 0.6,
    ("arcface-512", "euclidean"): 1.095,  # the same cut-off on unit vectors: sqrt(2 * 0.6)
}

_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
    | {"COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
)
_NAME_PUNCTUATION = frozenset(" _-.'()+")


class IdentityCorruptedError(BadInputError):
    """A stored or imported identity failed its integrity checks."""


# --------------------------------------------------------------------------------------------- names


def validate_name(name: str) -> str:
    """Identity names become directory names, so anything that could escape or confuse a filesystem
    (separators, `..`, control characters, reserved device names, trailing dots) is refused."""
    if not isinstance(name, str) or not name:
        raise BadInputError("identity name is empty")
    shown = name.encode("unicode_escape").decode("ascii")[:80]
    if name != name.strip():
        raise BadInputError(f"identity name '{shown}' has leading or trailing whitespace")
    if unicodedata.normalize("NFC", name) != name:
        raise BadInputError(f"identity name '{shown}' is not in Unicode NFC form")
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadInputError(f"identity name '{shown[:20]}...' is too long (at most {MAX_NAME_CHARS} characters)")
    if name in (".", "..") or ".." in name:
        raise BadInputError(f"identity name '{shown}' must not contain '..'")
    for ch in name:
        if unicodedata.category(ch).startswith("C"):
            raise BadInputError(f"identity name '{shown}' contains a control or invisible character")
        if not (ch.isalnum() or ch in _NAME_PUNCTUATION):
            raise BadInputError(
                f"identity name '{shown}' contains '{ch}': use letters, digits, spaces and "
                f"{''.join(sorted(_NAME_PUNCTUATION))}"
            )
    if name[0] in ".-" or name[-1] == ".":
        raise BadInputError(f"identity name '{shown}' must not start with '.' or '-' or end with '.'")
    stem = name.split(".")[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        raise BadInputError(f"identity name '{shown}' is a reserved device name on Windows")
    return name


# --------------------------------------------------------------------------------------------- metadata


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Strict):
    name: str
    sha256: str | None  # None when the analyzer cannot point at its model file


class ConsentRecord(_Strict):
    text: str
    recorded_at: str
    recorded_by: str | None = None


class PhotoRecord(_Strict):
    index: int
    file: str  # base name only: paths would leak the machine layout into exports
    sha256: str  # of the source file's bytes (of the pixels for in-memory arrays)
    width: int
    height: int
    faces_found: int
    box: list[float]
    quality: float  # 0..1, see `photo_quality`
    quality_detail: dict[str, float]
    kept: bool
    reasons: list[str]  # why it was rejected (empty when kept)
    notes: list[str] = []
    distances: dict[str, float | None]  # distance to the final centroid, per space
    spaces: list[str]  # spaces in which this photo has an embedding


class SpaceRecord(_Strict):
    dim: int
    metric: Metric
    threshold: float
    model: ModelRef
    analyzer: dict[str, Any]
    kept: list[int]
    rejected: list[int]
    method: str


class ReferenceRecord(_Strict):
    photo: int
    size: int
    margin: float


class IdentityRecord(_Strict):
    format: Literal["portraitforge-identity"] = "portraitforge-identity"
    format_version: Literal[1] = 1
    name: str
    created: str
    updated: str
    note: str | None = None
    consent: ConsentRecord | None = None
    photos: list[PhotoRecord]
    spaces: dict[str, SpaceRecord]
    reference: ReferenceRecord
    tensors_file: str | None = None  # only inside a store; exports carry the tensors themselves
    tensors_digest: str
    metadata_sha256: str = ""

    @property
    def kept(self) -> list[int]:
        return [p.index for p in self.photos if p.kept]

    @property
    def rejected(self) -> list[PhotoRecord]:
        return [p for p in self.photos if not p.kept]


def metadata_digest(record: IdentityRecord) -> str:
    payload = record.model_dump(mode="json", exclude={"metadata_sha256"})
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: IdentityRecord) -> IdentityRecord:
    return record.model_copy(update={"metadata_sha256": metadata_digest(record)})


def tensors_digest(tensors: dict[str, np.ndarray]) -> str:
    """Content hash over names, dtypes, shapes and bytes, independent of the file's header layout, so a
    stored identity and its export have the same digest."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        arr = np.ascontiguousarray(tensors[key])
        digest.update(key.encode("utf-8") + b"\0" + arr.dtype.str.encode() + repr(arr.shape).encode() + b"\0")
        digest.update(arr.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- models


@dataclass
class _ModelHashes:
    """Per-store memo of model file hashes (22 MB for dlib's descriptor), keyed by path, size and mtime."""

    known: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self.known:
            self.known[key] = file_sha256(path)
        return self.known[key]


def model_ref(analyzer: FaceAnalyzer, hashes: _ModelHashes) -> ModelRef:
    """The model file behind an analyzer's embedding space.

    Analyzers may expose `model_info() -> {"name": ..., "sha256": ...}` (or `"path"`); the dlib analyzer's
    descriptor is found in the face-recognition-models wheel.
    """
    info_fn = getattr(analyzer, "model_info", None)
    if callable(info_fn):
        info = dict(info_fn())
        sha = info.get("sha256")
        if sha is None and info.get("path"):
            sha = hashes.sha256(Path(info["path"]))
        return ModelRef(name=str(info.get("name") or analyzer.name), sha256=sha)
    if isinstance(analyzer, DlibFaceAnalyzer):
        from portraitforge.models.dlib_models import DESCRIPTOR_RESNET, face_recognition_models_dir

        path = face_recognition_models_dir() / DESCRIPTOR_RESNET
        return ModelRef(name=DESCRIPTOR_RESNET, sha256=hashes.sha256(path) if path.is_file() else None)
    # insightface's ArcFaceONNX (behind InsightFaceAnalyzer.models.recognizer) keeps its ONNX path in `model_file`.
    recognizer = getattr(getattr(analyzer, "models", None), "recognizer", None)
    model_file = getattr(recognizer, "model_file", None)
    if isinstance(model_file, str) and Path(model_file).is_file():
        return ModelRef(name=Path(model_file).name, sha256=hashes.sha256(Path(model_file)))
    return ModelRef(name=analyzer.name, sha256=None)


def vector_distance(a: FloatArray, b: FloatArray, metric: str) -> float:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        denom = float(np.linalg.norm(a64) * np.linalg.norm(b64))
        return 1.0 - float(a64 @ b64) / denom if denom > 0 else 1.0
    return float(np.linalg.norm(a64 - b64))


def infer_metric(analyzer: FaceAnalyzer, dim: int) -> Metric:
    """FaceAnalyzer exposes `distance()` but not which metric it is; stored identities must be re-checkable
    without the analyzer, so probe it once on two fixed vectors and record the answer."""
    stated = getattr(analyzer, "metric", None)
    if stated in ("euclidean", "cosine"):
        return "cosine" if stated == "cosine" else "euclidean"
    if analyzer.embedding_space == DLIB_SPACE:
        return "euclidean"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, dim)).astype(np.float32)
    got = float(analyzer.distance(a, b))
    for metric in ("euclidean", "cosine"):
        if abs(got - vector_distance(a, b, metric)) < 1e-3 * max(1.0, abs(got)):
            return "cosine" if metric == "cosine" else "euclidean"
    raise BadInputError(f"analyzer '{analyzer.name}': distance() is neither euclidean nor cosine")


def space_threshold(analyzer: FaceAnalyzer, metric: str) -> float:
    stated = getattr(analyzer, "match_threshold", None)
    if isinstance(stated, int | float) and stated > 0:
        return float(stated)
    try:
        return KNOWN_THRESHOLDS[(analyzer.embedding_space, metric)]
    except KeyError:
        raise BadInputError(
            f"no same-person threshold known for space '{analyzer.embedding_space}' ({metric}); "
            "give the analyzer a `match_threshold`"
        ) from None


# --------------------------------------------------------------------------------------------- photos


@dataclass
class PhotoData:
    """One photo's analysis, computed outside the store lock (embedding is the slow part)."""

    file: str
    sha256: str
    width: int
    height: int
    faces_found: int
    box: FloatArray
    embeddings: dict[str, FloatArray | None]
    quality: float
    quality_detail: dict[str, float]
    crop: ImageRGB  # STORED_CROP_SIZE aligned crop, for recomputing embeddings later
    crop_landmarks: FloatArray  # landmarks in `crop` coordinates
    crop_box: FloatArray  # detection box in `crop` coordinates (axis-aligned hull)
    reference_crop: ImageRGB  # native-size aligned crop (as identity_from_image builds it)
    reference_landmarks: FloatArray
    notes: list[str] = field(default_factory=list)
    reference_mesh: FloatArray | None = None  # (468, 3) in `reference_crop` coordinates, from a mesh analyzer


def photo_quality(face: Face, crop: ImageRGB) -> tuple[float, dict[str, float]]:
    """0..1: landmark plausibility (includes frontal symmetry) x face size x sharpness."""
    interocular = float(np.linalg.norm(face.kps5[1] - face.kps5[0]))
    size_score = min(1.0, interocular / 64.0)  # ~64 px between the eyes fills a 256 px reference crop
    c = crop.shape[0]
    centre = cv2.cvtColor(crop[c // 4 : 3 * c // 4, c // 4 : 3 * c // 4], cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(centre, cv2.CV_32F, ksize=3).var())
    # Laplacian variance of the 320 px crop: ~300 for a Gaussian blur of sigma 2-3, thousands when sharp.
    sharp_score = sharpness / (sharpness + 300.0)
    quality = float(face.landmarks_confidence) * size_score * sharp_score
    detail = {
        "landmarks_confidence": round(float(face.landmarks_confidence), 4),
        "interocular_px": round(interocular, 1),
        "sharpness": round(sharpness, 1),
        "detection_score": round(float(face.score), 4),
    }
    return round(quality, 4), detail


def _matching_face(faces: list[Face], box: FloatArray, min_iou: float = 0.3) -> Face | None:
    best = max(faces, key=lambda f: box_iou(f.box, box), default=None)
    return best if best is not None and box_iou(best.box, box) >= min_iou else None


def analyze_photo(
    image: ImageRGB, file: str, sha256: str, primary: FaceAnalyzer, others: Sequence[FaceAnalyzer]
) -> PhotoData:
    """The largest face (as `identity_from_image` picks it) gives the crop, landmarks and every embedding."""
    faces = primary.detect(image)
    if not faces:
        raise NoFaceError(f"{file}: no face found; nothing was written to the identity store")
    face = max(faces, key=lambda f: f.area)
    notes = [f"{len(faces)} faces found, used the largest"] if len(faces) > 1 else []
    embeddings: dict[str, FloatArray | None] = {primary.embedding_space: primary.embed(image, face)}
    for analyzer in others:
        match = _matching_face(analyzer.detect(image), face.box)
        if match is None:
            notes.append(f"{analyzer.embedding_space}: the face was not detected by {analyzer.name}")
            embeddings[analyzer.embedding_space] = None
        else:
            embeddings[analyzer.embedding_space] = np.asarray(analyzer.embed(image, match), np.float32)
    landmarks = face.landmarks68 if face.landmarks68 is not None else face.kps5
    stored = align_face(image, face.kps5, STORED_CROP_SIZE, REFERENCE_MARGIN)
    corners = np.array([[face.box[0], face.box[1]], [face.box[2], face.box[1]], [face.box[0], face.box[3]],
                        [face.box[2], face.box[3]]], np.float32)  # fmt: skip
    in_crop = transform_points(corners, stored.matrix)
    size = native_crop_size(face.kps5, REFERENCE_MARGIN, REFERENCE_MIN, REFERENCE_MAX)
    reference = align_face(image, face.kps5, size, REFERENCE_MARGIN)
    quality, detail = photo_quality(face, stored.image)
    return PhotoData(
        file=file,
        sha256=sha256,
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        faces_found=len(faces),
        box=np.asarray(face.box, np.float32),
        embeddings=embeddings,
        quality=quality,
        quality_detail=detail,
        crop=stored.image,
        crop_landmarks=transform_points(landmarks, stored.matrix),
        crop_box=np.concatenate([in_crop.min(0), in_crop.max(0)]).astype(np.float32),
        reference_crop=reference.image,
        reference_landmarks=transform_points(landmarks, reference.matrix),
        notes=notes,
        reference_mesh=None if face.mesh is None else points_to_crop(face.mesh, reference.matrix),
    )


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


# --------------------------------------------------------------------------------------------- consensus


@dataclass(frozen=True)
class SpaceSpec:
    space: str
    dim: int
    metric: Metric
    threshold: float
    model: ModelRef
    analyzer: dict[str, Any]


CONSENSUS_METHOD = (
    "iterative leave-one-out median rejection (drop the photo farthest from the median of the others "
    f"while above the threshold), then median+{OUTLIER_MAD_K:g}*MAD spread check; centroid = mean of inliers"
)


def robust_inliers(
    vectors: dict[int, FloatArray], metric: str, threshold: float, space: str
) -> tuple[list[int], dict[int, str]]:
    """Which photos agree on one person in one embedding space, and why the others were rejected.

    Each round compares every photo with the coordinate-wise median of the *other* photos (leave-one-out,
    so an outlier cannot pull its own reference) and drops the farthest one while it exceeds the
    same-person threshold. A median tolerates up to half the photos being wrong.
    """
    kept = sorted(vectors)
    rejected: dict[int, str] = {}

    def loo_distances(members: list[int]) -> dict[int, float]:
        out = {}
        for i in members:
            others = np.stack([vectors[j] for j in members if j != i])
            out[i] = vector_distance(vectors[i], np.median(others, axis=0), metric)
        return out

    while len(kept) >= 2:
        dist = loo_distances(kept)
        worst = max(kept, key=lambda i: (dist[i], i))
        if dist[worst] <= threshold:
            break
        rejected[worst] = (
            f"{space}: distance {dist[worst]:.3f} to the median of the other photos exceeds the "
            f"same-person threshold {threshold:g} (a different person?)"
        )
        kept.remove(worst)
    if len(kept) >= 4:
        dist = loo_distances(kept)
        values = np.array([dist[i] for i in kept])
        med = float(np.median(values))
        mad = 1.4826 * float(np.median(np.abs(values - med)))
        limit = max(med + OUTLIER_MAD_K * mad, OUTLIER_MIN_FRACTION * threshold)
        for i in list(kept):
            if dist[i] > limit:
                rejected[i] = (
                    f"{space}: distance {dist[i]:.3f} is far outside the spread of the other photos "
                    f"(median {med:.3f}, limit {limit:.3f}; a bad crop?)"
                )
                kept.remove(i)
    return kept, rejected


def _centroid(vectors: list[FloatArray]) -> FloatArray:
    stack = np.stack(vectors).astype(np.float64)
    mean = stack.mean(axis=0)
    norms = np.linalg.norm(stack, axis=1)
    if np.allclose(norms, 1.0, atol=1e-3):  # unit-norm spaces (ArcFace) keep a unit-norm centroid
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return mean.astype(np.float32)


@dataclass
class Consensus:
    kept: list[int]
    reasons: dict[int, list[str]]
    centroids: dict[str, FloatArray]
    distances: dict[int, dict[str, float | None]]
    reference: int


def build_consensus(name: str, photos: list[PhotoData], specs: dict[str, SpaceSpec], primary: str) -> Consensus:
    reasons: dict[int, list[str]] = {i: [] for i in range(len(photos))}
    for i, p in enumerate(photos):
        lm_conf = p.quality_detail.get("landmarks_confidence", 1.0)
        if lm_conf < MIN_LANDMARKS_CONFIDENCE:
            reasons[i].append(f"bad crop: landmark fit confidence {lm_conf:.2f} < {MIN_LANDMARKS_CONFIDENCE}")
        iod = p.quality_detail.get("interocular_px", 1e9)
        if iod < MIN_INTEROCULAR_PX:
            reasons[i].append(f"bad crop: face too small ({iod:.0f} px between the eyes)")
    candidates = [i for i in range(len(photos)) if not reasons[i]]
    if not candidates:
        raise BadInputError(f"identity '{name}': no usable photo ({'; '.join(reasons[0])})")
    for space, spec in specs.items():
        vectors = {i: v for i in candidates if (v := photos[i].embeddings.get(space)) is not None}
        _, rejected = robust_inliers(vectors, spec.metric, spec.threshold, space)
        for i, why in rejected.items():
            reasons[i].append(why)
    kept = [i for i in candidates if not reasons[i]]
    if len(candidates) >= 2 and 2 * len(kept) <= len(candidates):
        raise BadInputError(
            f"identity '{name}': the photos do not agree on one person (only {len(kept)} of "
            f"{len(candidates)} usable photos match each other); pass photos of a single person"
        )
    centroids: dict[str, FloatArray] = {}
    for space in specs:
        members = [v for i in kept if (v := photos[i].embeddings.get(space)) is not None]
        if members:
            centroids[space] = _centroid(members)
    if primary not in centroids:
        raise BadInputError(f"identity '{name}': no photo has a '{primary}' embedding")
    distances: dict[int, dict[str, float | None]] = {}
    for i, p in enumerate(photos):
        distances[i] = {}
        for space, spec in specs.items():
            v = p.embeddings.get(space)
            c = centroids.get(space)
            distances[i][space] = None if v is None or c is None else round(vector_distance(v, c, spec.metric), 5)
    threshold = specs[primary].threshold

    def reference_score(i: int) -> float:
        d = distances[i][primary] or 0.0
        return photos[i].quality * (1.0 - 0.5 * min(1.0, d / threshold))

    reference = max(kept, key=lambda i: (reference_score(i), -i))
    return Consensus(kept=kept, reasons=reasons, centroids=centroids, distances=distances, reference=reference)


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


def _record_json(record: IdentityRecord) -> bytes:
    return (json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parse_record(raw: bytes | str, name: str) -> IdentityRecord:
    try:
        return IdentityRecord.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise IdentityCorruptedError(
            f"identity '{name}' is corrupted: invalid metadata ({where}: {first.get('msg')})"
        ) from None


def _safetensors_header(data: bytes, source: str) -> dict[str, Any]:
    """The JSON header of a safetensors blob, read by hand so that its metadata can be validated before any
    tensor is materialised (safetensors' own loader returns tensors, not the metadata)."""
    if len(data) < 8:
        raise BadInputError(f"{source}: not a safetensors file (too short)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise BadInputError(f"{source}: not a safetensors file (bad header size)")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInputError(f"{source}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise BadInputError(f"{source}: not a safetensors file (header is not an object)")
    return header


def _load_tensors(data: bytes, source: str) -> dict[str, np.ndarray]:
    try:
        return dict(st_load(data))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise BadInputError(f"{source}: unreadable tensors ({str(exc).splitlines()[0][:120]})") from None


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

    `require_consent=True` makes `get` refuse identities without a consent record. Loaded dlib models are
    kept on the instance (never module-level) so a notebook can call `add` repeatedly cheaply.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, require_consent: bool = False, lock_timeout: float = 120.0
    ) -> None:
        self.root = Path(path).expanduser() if path is not None else home_dir() / STORE_DIRNAME
        self.require_consent = require_consent
        self.lock_timeout = lock_timeout
        self._hashes = _ModelHashes()
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
            record = _parse_record(raw, name)
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
                tensors = _load_tensors(data, record.tensors_file)
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
        require_consent: bool | None = None,
        on_stale: OnStale = "error",
        graders: Sequence[FaceAnalyzer] = (),
    ) -> Identity:
        """The cached identity (`cache_hit=True`): centroids per space, reference crop and landmarks.

        With `analyzer`, its embedding space is checked against the stored model version. A stale or missing
        space raises ModelUnavailableError, or with `on_stale="recompute"` is recomputed from the stored crops.
        `graders` (second recognisers that only score results) get their space recomputed when stale.
        """
        validate_name(name)
        record, tensors = self.load(name)
        needs_consent = self.require_consent if require_consent is None else require_consent
        if needs_consent and record.consent is None:
            raise BadInputError(
                f"identity '{name}' has no consent record and consent is required "
                f"(record one with: portraitforge identity consent {name} TEXT)"
            )
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
                return identity
        # A grader's space only scores results, so a missing or stale one is recomputed from the stored crops
        # (once: the store keeps it) rather than refused.
        stale = [g for g in graders if self.stale_spaces(record, g) is not None]
        if stale:
            record, tensors = self.recompute(name, stale)
        return identity_from_record(record, tensors)

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
        atomic_write_bytes(folder / filename, st_save(tensors, metadata={"format": f"{FORMAT}-tensors"}))
        record = seal(record.model_copy(update={"tensors_file": filename, "tensors_digest": digest}))
        atomic_write_bytes(folder / METADATA_FILE, _record_json(record))
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
        tmp.mkdir(parents=True)
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
    ) -> IdentityRecord:
        """Embed `images` (files, folders or RGB arrays) and store the identity.

        Every photo is analysed before the store is touched: a photo without a face raises NoFaceError and
        leaves the store byte-for-byte unchanged. `exist="append"` adds photos to an existing identity.
        """
        validate_name(name)
        if exist not in ("error", "replace", "append"):
            raise BadInputError(f"unknown exist policy '{exist}'")
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
        consent_record = (
            ConsentRecord(text=consent, recorded_at=utc_now(), recorded_by=current_user()) if consent else None
        )
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
                vectors = [_embed_crop(analyzer, p) for p in photos]
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

    def set_consent(self, name: str, text: str | None) -> IdentityRecord:
        """Record (or with None, withdraw) consent for an existing identity."""
        self._require(name)
        with self._lock():
            record, tensors = self.load(name)
            consent = ConsentRecord(text=text, recorded_at=utc_now(), recorded_by=current_user()) if text else None
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
        portable = seal(record.model_copy(update={"tensors_file": None}))
        header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "identity": portable.model_dump_json()}
        atomic_write_bytes(target, st_save(tensors, metadata=header))
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
        data = source.read_bytes()
        meta = _safetensors_header(data, str(source)).get("__metadata__")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise BadInputError(f"{source}: not a portraitforge identity export")
        if meta.get("format_version") != str(FORMAT_VERSION):
            raise BadInputError(f"{source}: unsupported identity format version {meta.get('format_version')}")
        record = _parse_record(str(meta.get("identity", "")), source.name)
        tensors = _load_tensors(data, str(source))
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
        """Append one line to the audit log: time, identity, operation, output file and its sha256."""
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
                record = _parse_record((self.identities_dir / name / METADATA_FILE).read_bytes(), name)
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


def _embed_crop(analyzer: FaceAnalyzer, photo: PhotoData) -> FloatArray | None:
    """Embed the face in a stored crop: detect it there, or fall back to the stored box (re-fitting landmarks)."""
    crop = np.ascontiguousarray(photo.crop)
    face = _matching_face(analyzer.detect(crop), photo.crop_box, min_iou=0.2)
    if face is None:
        lm = photo.crop_landmarks
        kps5 = lm if lm.shape[0] == 5 else kps5_from_landmarks68(lm)
        seed = Face(box=photo.crop_box, score=0.0, kps5=kps5.astype(np.float32), landmarks68=None)
        try:
            face = analyzer.landmarks(crop, seed)
        except (NotImplementedError, ValueError):
            return None
    try:
        return np.asarray(analyzer.embed(crop, face), np.float32)
    except ValueError:
        return None


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
