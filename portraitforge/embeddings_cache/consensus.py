"""How photos become one identity: per-photo analysis and quality, same-person consensus and centroids.

`analyze_photo` embeds one photo (in every analyzer's space) and scores its quality; `build_consensus` drops
bad crops and photos of someone else (robust leave-one-out medians) and averages the rest into centroids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from portraitforge.atomic import file_sha256
from portraitforge.embeddings_cache.identity import REFERENCE_MARGIN, REFERENCE_MAX, REFERENCE_MIN
from portraitforge.embeddings_cache.records import STORED_CROP_SIZE, Metric, ModelRef
from portraitforge.errors import BadInputError, NoFaceError
from portraitforge.refiners.align import align_face, native_crop_size, points_to_crop, transform_points
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.refiners.detect import (
    DLIB_MATCH_THRESHOLD,
    DLIB_SPACE,
    DlibFaceAnalyzer,
    box_iou,
    kps5_from_landmarks68,
)
from portraitforge.types import Face, FloatArray, ImageRGB

# Quality gates that reject a photo before the consensus step (a "bad crop").
MIN_LANDMARKS_CONFIDENCE = 0.3
MIN_INTEROCULAR_PX = 16.0
# A photo also counts as an outlier when it sits far out of the spread of the other photos, even if it is
# under the match threshold (a blurred or half-occluded shot of the same person): beyond median + k * MAD
# of the distances, and at least this fraction of the threshold (tiny spreads would otherwise reject noise).
OUTLIER_MAD_K = 4.0
OUTLIER_MIN_FRACTION = 0.75

# Same-person thresholds per (space, metric) when the analyzer does not state `match_threshold`.
KNOWN_THRESHOLDS: dict[tuple[str, str], float] = {
    (DLIB_SPACE, "euclidean"): DLIB_MATCH_THRESHOLD,
    # 1 - cos, as detect_insightface.ARCFACE_MATCH_DISTANCE (not imported: that module pulls in onnxruntime).
    ("arcface-512", "cosine"): 0.6,
    ("arcface-512", "euclidean"): 1.095,  # the same cut-off on unit vectors: sqrt(2 * 0.6)
}


# --------------------------------------------------------------------------------------------- models


@dataclass
class ModelHashes:
    """Per-store memo of model file hashes (22 MB for dlib's descriptor), keyed by path, size and mtime."""

    known: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self.known:
            self.known[key] = file_sha256(path)
        return self.known[key]


def model_ref(analyzer: FaceAnalyzer, hashes: ModelHashes) -> ModelRef:
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


def matching_face(faces: list[Face], box: FloatArray, min_iou: float = 0.3) -> Face | None:
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
        match = matching_face(analyzer.detect(image), face.box)
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


def embed_crop(analyzer: FaceAnalyzer, photo: PhotoData) -> FloatArray | None:
    """Embed the face in a stored crop: detect it there, or fall back to the stored box (re-fitting landmarks)."""
    crop = np.ascontiguousarray(photo.crop)
    face = matching_face(analyzer.detect(crop), photo.crop_box, min_iou=0.2)
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
