"""Small typed records that flow between stages. Nothing here holds models or global state."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from numpy.typing import NDArray

# cv2's stubs return loosely typed arrays, so dtypes are documented rather than enforced by mypy.
ImageRGB: TypeAlias = NDArray[Any]  # H x W x 3, RGB, uint8
FloatArray: TypeAlias = NDArray[Any]  # float32 vectors, points and masks


def fields_dict(record: object, *names: str) -> dict[str, Any]:
    """`{name: record.name}` for the named attributes, in the given order: the stages' `params()` and the
    records' `to_dict()` choose which fields a report shows and in what order (reports compare byte for byte),
    so `dataclasses.asdict` (every field, deep-copied) fits only the records that show all of theirs."""
    return {name: getattr(record, name) for name in names}


class Status(enum.StrEnum):
    OK = "OK"
    LOW_QUALITY = "LOW_QUALITY"
    NO_FACE = "NO_FACE"
    BAD_INPUT = "BAD_INPUT"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    INTERRUPTED = "INTERRUPTED"
    INTERNAL = "INTERNAL"


# Documented process exit codes (README "Exit codes"). Usage errors are 2, as click reports them.
EXIT_CODES: dict[Status, int] = {
    Status.OK: 0,
    Status.LOW_QUALITY: 0,  # becomes 7 with --strict
    Status.INTERNAL: 1,
    Status.BAD_INPUT: 3,
    Status.NO_FACE: 4,
    Status.MODEL_UNAVAILABLE: 5,
    Status.OUT_OF_MEMORY: 6,
    Status.INTERRUPTED: 130,
}
EXIT_USAGE = 2
EXIT_LOW_QUALITY_STRICT = 7

# Severity decides the exit code of a multi-file run: the worst status wins.
STATUS_SEVERITY: dict[Status, int] = {
    Status.OK: 0,
    Status.LOW_QUALITY: 1,
    Status.NO_FACE: 2,
    Status.BAD_INPUT: 3,
    Status.MODEL_UNAVAILABLE: 4,
    Status.OUT_OF_MEMORY: 5,
    Status.INTERNAL: 6,
    Status.INTERRUPTED: 7,
}


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates."""

    box: FloatArray  # (4,) x1, y1, x2, y2
    score: float  # detector confidence (backend specific scale)
    kps5: FloatArray  # (5, 2) ArcFace order: left eye, right eye, nose, left mouth, right mouth
    landmarks68: FloatArray | None = None  # (68, 2) iBUG order, when the backend has them
    landmarks_confidence: float = 1.0  # 0..1 plausibility of the landmark fit
    embedding: FloatArray | None = None
    embedding_space: str | None = None  # e.g. "dlib-128" or "arcface-512"; spaces never mix
    mesh: FloatArray | None = None  # (468, 3) MediaPipe face mesh: x, y in pixels, z in the same pixel units

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


@dataclass
class Identity:
    """Who a face should become: embeddings per space plus a reference face for landmark engines."""

    name: str
    embeddings: dict[str, FloatArray]  # space -> vector
    reference_crop: ImageRGB  # aligned face crop (RGB)
    reference_landmarks68: FloatArray  # (68, 2) in reference_crop coordinates
    sources: list[str] = field(default_factory=list)  # sha256 of source files
    cache_hit: bool = False  # True when loaded from the identity store without re-embedding
    reference_mesh: FloatArray | None = None  # (468, 3) mesh in reference_crop coordinates (mesh engine)

    def embedding(self, space: str) -> FloatArray:
        try:
            return self.embeddings[space]
        except KeyError:
            raise KeyError(f"identity '{self.name}' has no embedding in space '{space}'") from None


@dataclass(frozen=True)
class AlignedCrop:
    """A face crop and the similarity transform that produced it."""

    image: ImageRGB
    matrix: FloatArray  # 2x3, maps image -> crop
    inverse: FloatArray  # 2x3, maps crop -> image (exact inverse)

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class SwapOutput:
    image: ImageRGB  # swapped crop, same size as the input crop
    mask: FloatArray  # crop-sized float mask 0..1 of where the swap applies (feathered)
    landmarks68: FloatArray | None  # landmarks of the swapped face in crop coordinates
    source_scale: float = 1.0  # enlargement of the swapped-in pixels onto the crop (> 1: they were upsampled)
    detail_mask: FloatArray | None = None  # crop-sized 0..1: where the target's own fine detail belongs (skin)
    face_height: float | None = None  # face height in crop pixels (the unit of size-relative stages)


@dataclass(frozen=True)
class GraderScore:
    """A second recogniser's verdict (one the engine never steers with): cosine similarities."""

    model: str
    identity_similarity: float  # result face -> identity
    original_similarity: float  # result face -> the original target face
    threshold: float  # the grader's same-person similarity

    @property
    def passed(self) -> bool:
        return self.identity_similarity >= self.threshold and self.identity_similarity > self.original_similarity

    @property
    def score(self) -> int:
        """0-100 at a glance: 50 at the same-person threshold, 100 at a perfect match."""
        span = 1.0 - self.threshold
        value = 50.0 + 50.0 * (self.identity_similarity - self.threshold) / span if span > 0 else 0.0
        return int(round(min(100.0, max(0.0, value))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "identity_similarity": round(self.identity_similarity, 4),
            "original_similarity": round(self.original_similarity, 4),
            "threshold": self.threshold,
            "passed": self.passed,
            "score": self.score,
        }


@dataclass
class FaceQuality:
    identity_distance: float | None  # result face -> identity (same embedding space)
    original_distance: float | None  # result face -> original target face
    sharpness: float  # Laplacian variance inside the face mask (result)
    target_sharpness: float  # same measure on the target before the swap
    seam_score: float  # gradient jump across the mask edge relative to its surroundings (1 = none)
    source_scale: float = 1.0  # how much the identity's (or model's) pixels were enlarged onto the face
    grader: GraderScore | None = None  # the independent recogniser's verdict, when one is loaded


@dataclass
class FaceReport:
    index: int
    box: list[float]
    detection_score: float
    landmarks_confidence: float
    quality: FaceQuality | None = None
    identity: str | None = None  # which identity this face became (per-face mappings differ)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "identity": self.identity,
            "box": [round(v, 1) for v in self.box],
            "detection_score": round(self.detection_score, 4),
            "landmarks_confidence": round(self.landmarks_confidence, 4),
        }
        if self.quality is not None:
            q = self.quality
            out["quality"] = {
                "identity_distance": _round(q.identity_distance),
                "original_distance": _round(q.original_distance),
                "sharpness": round(q.sharpness, 2),
                "target_sharpness": round(q.target_sharpness, 2),
                "seam_score": round(q.seam_score, 4),
                "source_scale": round(q.source_scale, 3),
                "grader": None if q.grader is None else q.grader.to_dict(),
            }
        return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class RefineReport:
    status: Status
    message: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    faces: list[FaceReport] = field(default_factory=list)
    input_path: str | None = None
    output_path: str | None = None
    identity: str | None = None
    identity_cache_hit: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)  # output id, watermark, C2PA, NSFW gate

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "input": self.input_path,
            "output": self.output_path,
            "identity": self.identity,
            "identity_cache_hit": self.identity_cache_hit,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "faces": [f.to_dict() for f in self.faces],
            "warnings": self.warnings,
            "parameters": self.parameters,
            **({"provenance": self.provenance} if self.provenance else {}),
        }


@dataclass
class RefineResult:
    image: ImageRGB | None  # None unless status is OK or LOW_QUALITY
    report: RefineReport

    @property
    def ok(self) -> bool:
        return self.report.status in (Status.OK, Status.LOW_QUALITY)
