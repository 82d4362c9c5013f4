"""insightface analysis backend: SCRFD det_10g (boxes + 5 keypoints), ArcFace w600k_r50 (512-d embedding)
and the genderage attribute model, all run through insightface's own model classes.

The classes are built on files from our `ModelStore` and sessions from our `OnnxSessionPool`; insightface's
FaceAnalysis / model-dir / auto-download logic is never used. insightface works on BGR images, the rest
of portraitforge on RGB, so every call converts at this boundary.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.onnx_runtime import OnnxSessionPool
from portraitforge.models.registry import ARCFACE_W600K_R50, GENDERAGE, SCRFD_10G
from portraitforge.models.store import ModelStore
from portraitforge.refiners.align import ARCFACE_TEMPLATE_112, umeyama
from portraitforge.refiners.detect import box_iou, order_faces
from portraitforge.types import Face, FloatArray, ImageRGB

ARCFACE_SPACE = "arcface-512"
# Cosine distance (1 - cosine similarity) under which two ArcFace embeddings are usually the same person.
# Approximate: published w600k_r50 verification thresholds sit around similarity 0.3-0.45.
ARCFACE_MATCH_DISTANCE = 0.6

# insightface's `arcface_dst`: the one template (align.py) in float32 on purpose, as `estimate_norm` builds it
# (the same literals, so bit-identical to insightface's own float32 array).
ARCFACE_DST = ARCFACE_TEMPLATE_112.astype(np.float32)

Gender = Literal["female", "male"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """insightface prints diagnostics (e.g. 'inswapper-shape:') on stdout, which would corrupt `--json`."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _similarity_umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst as 2x3 float64, with skimage's arithmetic (which insightface calls):
    statistics in the inputs' precision, the result in float64."""
    scale, rot, shift = umeyama(src, dst, keep_precision=True)
    m = np.zeros((2, 3), np.float64)
    m[:, :2] = scale * rot[:2, :2]
    m[:, 2] = shift[:2]
    return m


def norm_matrix(kps5: FloatArray, image_size: int, base: int | None = None) -> np.ndarray:
    """insightface `face_align.estimate_norm`: the 2x3 affine mapping image -> aligned crop of `image_size`.

    insightface picks the template from `image_size` (multiples of 112: ArcFace; of 128: shifted 8 px as
    inswapper expects). `base` forces one of them, needed for pixel-boost sizes such as 896 = 7x128 = 8x112.
    """
    if base is None:
        base = 112 if image_size % 112 == 0 else 128 if image_size % 128 == 0 else 0
    if base not in (112, 128) or image_size % base:
        raise ValueError("insightface alignment sizes are multiples of 112 or 128")
    ratio = float(image_size) / float(base)
    diff_x = 8.0 * ratio if base == 128 else 0.0
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    return _similarity_umeyama(np.asarray(kps5, np.float32), dst)


def norm_crop(
    image: ImageRGB, kps5: FloatArray, image_size: int, base: int | None = None
) -> tuple[ImageRGB, np.ndarray]:
    """insightface `norm_crop2`: aligned crop (black outside the frame, as insightface) and its matrix."""
    matrix = norm_matrix(kps5, image_size, base)
    return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0), matrix


def _bgr(image: ImageRGB) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def _check_rgb(image: ImageRGB) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("face analysis expects an RGB uint8 image of shape HxWx3")


def _build(cls: Any, path: Path, pool: OnnxSessionPool, **kwargs: Any) -> Any:
    with _quiet():
        return cls(model_file=str(path), session=pool.get(path), **kwargs)


def build_scrfd(path: Path, pool: OnnxSessionPool) -> Any:
    """insightface SCRFD on our pooled session. insightface >= 2.1 would otherwise build a second
    fixed-shape session per input size; `static_shape_sessions=False` keeps the one pooled session."""
    import inspect

    from insightface.model_zoo.scrfd import SCRFD

    extra: dict[str, Any] = {}
    if "static_shape_sessions" in inspect.signature(SCRFD.__init__).parameters:
        extra["static_shape_sessions"] = False
    return _build(SCRFD, path, pool, **extra)


def build_arcface(path: Path, pool: OnnxSessionPool) -> Any:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    return _build(ArcFaceONNX, path, pool)


def build_attribute(path: Path, pool: OnnxSessionPool) -> Any:
    from insightface.model_zoo.attribute import Attribute

    return _build(Attribute, path, pool)


@dataclass(frozen=True)
class InsightFaceModels:
    """Loaded insightface model objects (each wrapping one pooled ONNX session)."""

    detector: Any  # insightface.model_zoo.scrfd.SCRFD
    recognizer: Any  # insightface.model_zoo.arcface_onnx.ArcFaceONNX
    genderage: Any | None  # insightface.model_zoo.attribute.Attribute

    @classmethod
    def from_files(
        cls, detector: Path, recognizer: Path, genderage: Path | None, pool: OnnxSessionPool
    ) -> InsightFaceModels:
        try:
            import insightface  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailableError(f"insightface is not importable ({exc}); pip install insightface") from None
        return cls(
            detector=build_scrfd(detector, pool),
            recognizer=build_arcface(recognizer, pool),
            genderage=build_attribute(genderage, pool) if genderage is not None else None,
        )

    @classmethod
    def load(
        cls, store: ModelStore, pool: OnnxSessionPool, with_genderage: bool = True, download: bool = False
    ) -> InsightFaceModels:
        det = store.ensure(SCRFD_10G.name, download=download)
        rec = store.ensure(ARCFACE_W600K_R50.name, download=download)
        ga = store.ensure(GENDERAGE.name, download=download) if with_genderage else None
        return cls.from_files(det, rec, ga, pool)


@dataclass(frozen=True)
class GenderAge:
    gender: Gender
    age: int
    scores: tuple[float, float]  # raw (female, male) outputs of the genderage model


@dataclass
class InsightFaceAnalyzer:
    """FaceAnalyzer on insightface models. `landmarks68` stays None: this backend has 5 keypoints only.

    `gender` restricts `detect` to faces the genderage model classifies as that gender (None = all).
    """

    models: InsightFaceModels
    det_size: tuple[int, int] = (640, 640)
    det_thresh: float = 0.5
    nms_thresh: float = 0.4
    gender: Gender | None = None
    name: str = "insightface"
    embedding_space: str = ARCFACE_SPACE

    @classmethod
    def load(
        cls,
        store: ModelStore | None = None,
        pool: OnnxSessionPool | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> InsightFaceAnalyzer:
        models = InsightFaceModels.load(
            store if store is not None else ModelStore.from_dir(),
            pool if pool is not None else OnnxSessionPool(),
            with_genderage=True,
            download=download,
        )
        return cls(models=models, **kwargs)

    def params(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "det_size": list(self.det_size),
            "det_thresh": self.det_thresh,
            "nms_thresh": self.nms_thresh,
            "gender": self.gender,
        }

    # ---- detection -------------------------------------------------------------------------------

    def _detect_raw(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        det = self.models.detector
        # Thresholds are attributes on SCRFD in every insightface release (0.7 and 2.x alike).
        det.det_thresh = self.det_thresh
        det.nms_thresh = self.nms_thresh
        boxes, kpss = det.detect(bgr, input_size=tuple(self.det_size), max_num=0)
        if kpss is None:
            raise ModelUnavailableError("the SCRFD model has no keypoint outputs (need a *_kps / det_10g model)")
        return boxes, kpss

    def detect(self, image: ImageRGB) -> list[Face]:
        _check_rgb(image)
        if min(image.shape[:2]) < 16:
            return []
        boxes, kpss = self._detect_raw(_bgr(image))
        faces = [
            Face(
                box=box[:4].astype(np.float32),
                score=float(box[4]),
                kps5=kps.astype(np.float32),
                landmarks68=None,
                # SCRFD's score is a calibrated face probability; it doubles as keypoint plausibility.
                landmarks_confidence=float(np.clip(box[4], 0.0, 1.0)),
            )
            for box, kps in zip(boxes, kpss, strict=True)
        ]
        if self.gender is not None and self.models.genderage is not None:
            faces = [f for f in faces if self.gender_age(image, f).gender == self.gender]
        return order_faces(faces)

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        """Re-detect inside a window around `face` and take the keypoints of the best-overlapping box."""
        _check_rgb(image)
        h, w = image.shape[:2]
        cx, cy = face.center
        half = max(face.width, face.height) * 1.0
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return face
        boxes, kpss = self._detect_raw(_bgr(image[y0:y1, x0:x1]))
        if len(boxes) == 0:
            return face
        offset = np.array([x0, y0], np.float32)
        shifted = boxes[:, :4] + np.tile(offset, 2)
        ious = [box_iou(face.box, b) for b in shifted]
        best = int(np.argmax(ious))
        if ious[best] < 0.3:
            return face
        return replace(face, box=shifted[best].astype(np.float32), kps5=(kpss[best] + offset).astype(np.float32))

    # ---- embeddings ------------------------------------------------------------------------------

    def aligned_112(self, image: ImageRGB, face: Face) -> ImageRGB:
        """The RGB 112x112 crop ArcFace sees (insightface `norm_crop`)."""
        size = int(self.models.recognizer.input_size[0])
        return norm_crop(image, face.kps5, size)[0]

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        """L2-normalised 512-d ArcFace embedding (insightface's `normed_embedding`)."""
        _check_rgb(image)
        aligned = self.aligned_112(image, face)
        feat = np.asarray(self.models.recognizer.get_feat(_bgr(aligned)), np.float32).reshape(-1)
        norm = float(np.linalg.norm(feat))
        if not np.isfinite(norm) or norm == 0.0:
            raise BadInputError("ArcFace returned a zero or non-finite embedding")
        return (feat / norm).astype(np.float32)

    def with_embedding(self, image: ImageRGB, face: Face) -> Face:
        return replace(face, embedding=self.embed(image, face), embedding_space=self.embedding_space)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        """Cosine distance, 1 - cos(a, b): 0 identical, 1 orthogonal, 2 opposite."""
        va, vb = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
        if denom == 0.0:
            return 1.0
        return float(1.0 - va @ vb / denom)

    # ---- attributes ------------------------------------------------------------------------------

    def gender_age(self, image: ImageRGB, face: Face) -> GenderAge:
        """insightface `Attribute.get`: a box-centred crop at 1.5x the box, no rotation."""
        model = self.models.genderage
        if model is None:
            raise ModelUnavailableError("the genderage model is not loaded")
        size = int(model.input_size[0])
        scale = size / (max(face.width, face.height) * 1.5)
        cx, cy = face.center
        # Same matrix as insightface's face_align.transform(center, size, scale, rotation=0).
        matrix = np.array([[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale]], np.float64)
        crop = cv2.warpAffine(_bgr(image), matrix, (size, size), borderValue=0.0)
        mean, std = float(model.input_mean), float(model.input_std)
        blob = cv2.dnn.blobFromImage(crop, 1.0 / std, (size, size), (mean, mean, mean), swapRB=True)
        pred = model.session.run(model.output_names, {model.input_name: blob})[0][0]
        gender: Gender = "male" if int(np.argmax(pred[:2])) == 1 else "female"
        return GenderAge(gender=gender, age=int(np.round(pred[2] * 100)), scores=(float(pred[0]), float(pred[1])))


def select_by_gender(
    analyzer: InsightFaceAnalyzer, image: ImageRGB, faces: list[Face], gender: Gender | None
) -> list[Face]:
    """Faces classified as `gender` (all of them when `gender` is None), order kept."""
    if gender is None:
        return list(faces)
    return [f for f in faces if analyzer.gender_age(image, f).gender == gender]
