"""Face detection, landmarks and descriptors (dlib backend) and face selection."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import cv2
import numpy as np

from portraitforge.errors import BadInputError
from portraitforge.models.dlib_models import DlibModels
from portraitforge.types import Face, FloatArray, ImageRGB

DLIB_SPACE = "dlib-128"
DLIB_MATCH_THRESHOLD = 0.6  # dlib's documented same-person threshold for the 128-d descriptor


def kps5_from_landmarks68(landmarks: FloatArray) -> FloatArray:
    """ArcFace order: image-left eye, image-right eye, nose tip, left and right mouth corners."""
    return np.stack(
        [
            landmarks[36:42].mean(axis=0),
            landmarks[42:48].mean(axis=0),
            landmarks[30],
            landmarks[48],
            landmarks[54],
        ]
    ).astype(np.float32)


def landmarks_confidence(landmarks: FloatArray) -> float:
    """0..1: how well the fit matches a plausible face layout after a similarity alignment.

    dlib's predictor reports no confidence; a fit on a non-face or a badly cut face drifts far
    from the average layout, which this residual captures.
    """
    pts = landmarks.astype(np.float64)
    left, right = pts[36:42].mean(0), pts[42:48].mean(0)
    mouth = (pts[48] + pts[54]) / 2
    eye_mid = (left + right) / 2
    scale = np.linalg.norm(mouth - eye_mid) + np.linalg.norm(right - left) + 1e-6
    # Simple geometric sanity checks relative to face scale.
    checks = [
        right[0] - left[0] > 0.2 * scale,  # eyes ordered left to right
        pts[30][1] > eye_mid[1] - 0.1 * scale,  # nose below eyes
        mouth[1] > pts[30][1] - 0.1 * scale,  # mouth below nose tip
        pts[8][1] > mouth[1],  # chin below mouth
    ]
    sym = abs(np.linalg.norm(pts[30] - left) - np.linalg.norm(pts[30] - right)) / scale
    score = float(np.mean(checks)) * float(np.exp(-2.0 * sym))
    return round(max(0.0, min(1.0, score)), 4)


@dataclass
class DlibFaceAnalyzer:
    """HOG detector on a downscaled copy, 68 landmarks and the 128-d descriptor at full resolution."""

    models: DlibModels
    detect_max_side: int = 640
    upsample_fallback: bool = True
    min_score: float = 0.0
    name: str = "dlib"
    embedding_space: str = DLIB_SPACE

    @classmethod
    def load(cls, descriptor_backend: str = "auto", **kwargs: Any) -> DlibFaceAnalyzer:
        return cls(models=DlibModels.load(descriptor_backend=descriptor_backend), **kwargs)

    def params(self) -> dict[str, Any]:
        descriptor = "dlib" if self.models.descriptor_torch is None else "torch"
        return {
            "backend": self.name,
            "detect_max_side": self.detect_max_side,
            "min_score": self.min_score,
            "descriptor": descriptor,
        }

    def detect(self, image: ImageRGB) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError("detector expects an RGB uint8 image")
        h, w = image.shape[:2]
        if min(h, w) < 16:
            return []
        scale = min(1.0, self.detect_max_side / max(h, w))
        small = (
            image
            if scale == 1.0
            else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        )
        rects, scores, _ = self.models.detector.run(small, 0, self.min_score)
        if not rects and self.upsample_fallback and max(small.shape[:2]) <= 1200:
            # Small faces: one pyramid upsample finds faces down to ~40 px at 4x the cost.
            rects, scores, _ = self.models.detector.run(small, 1, self.min_score)
        faces: list[Face] = []
        for rect, score in zip(rects, scores, strict=True):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32) / scale
            faces.append(self._fit(image, box, float(score)))
        return order_faces(faces)

    def _fit(self, image: ImageRGB, box: FloatArray, score: float) -> Face:
        import dlib

        rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        shape = self.models.predictor68(image, rect)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        return Face(
            box=box.astype(np.float32),
            score=score,
            kps5=kps5_from_landmarks68(landmarks),
            landmarks68=landmarks,
            landmarks_confidence=landmarks_confidence(landmarks),
        )

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        refit = self._fit(image, face.box, face.score)
        return replace(
            face, landmarks68=refit.landmarks68, kps5=refit.kps5, landmarks_confidence=refit.landmarks_confidence
        )

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        import dlib

        if face.landmarks68 is None:
            raise ValueError("dlib descriptor needs 68 landmarks")
        if self.models.descriptor_torch is not None:  # same network and chip, ~10x faster than dlib-bin's
            return np.asarray(self.models.descriptor_torch.compute(image, face.landmarks68, face.box), np.float32)
        box = face.box
        rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks68]
        shape = dlib.full_object_detection(rect, parts)
        vec = self.models.descriptor.compute_face_descriptor(np.ascontiguousarray(image), shape, 0)
        return np.asarray(vec, dtype=np.float32)

    def with_embedding(self, image: ImageRGB, face: Face) -> Face:
        return replace(face, embedding=self.embed(image, face), embedding_space=self.embedding_space)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def box_iou(a: FloatArray, b: FloatArray) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x1 - x0)) * max(0.0, float(y1 - y0))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def order_faces(faces: list[Face]) -> list[Face]:
    """Stable reading order: left to right by box centre, ties broken top to bottom, then by size."""
    return sorted(faces, key=lambda f: (round(f.center[0], 1), round(f.center[1], 1), -f.area))


SelectMode = Literal["largest", "all", "index", "reference"]


def select_faces(
    faces: list[Face],
    mode: SelectMode = "largest",
    index: int = 0,
    reference_embedding: FloatArray | None = None,
    distance: Any = None,
) -> list[Face]:
    """Pick which detected faces to refine. `faces` must already be in `order_faces` order."""
    if not faces:
        return []
    if mode == "all":
        return list(faces)
    if mode == "largest":
        return [max(faces, key=lambda f: f.area)]
    if mode == "index":
        if not 0 <= index < len(faces):
            raise BadInputError(f"face index {index} out of range: {len(faces)} face(s) detected")
        return [faces[index]]
    if mode == "reference":
        if reference_embedding is None or distance is None:
            raise BadInputError("face selection 'reference' needs a reference image")
        if any(f.embedding is None for f in faces):
            raise ValueError("faces need embeddings for reference selection")
        return [min(faces, key=lambda f: distance(f.embedding, reference_embedding))]
    raise BadInputError(f"unknown face selection mode '{mode}'")
