"""Mesh face analysis: a face detector (MediaPipe BlazeFace or YuNet) plus MediaPipe's 468-point mesh.

Faces come out in the same `Face` shape as the other analyzers: box, score, ArcFace-order kps5, the iBUG 68
points approximated from the mesh (dlib's descriptor reads those), and the mesh itself. The identity space
stays dlib-128, so identities built with dlib keep working and dlib remains the fallback analyzer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from portraitforge.errors import BadInputError
from portraitforge.models.mediapipe_face import Detection, FaceMesh, kps5_from_mesh, landmarks68_from_mesh
from portraitforge.refiners.detect import DLIB_SPACE, DlibFaceAnalyzer, box_iou, order_faces
from portraitforge.types import Face, FloatArray, ImageRGB


class Detector(Protocol):
    def detect(self, image: ImageRGB) -> list[Detection]: ...


@dataclass
class CombinedDetector:
    """Several detectors over one image, overlapping boxes merged (the higher score wins).

    MediaPipe's full-range model finds small and far faces but misses a face that fills the frame (a close-up
    or an aligned crop); the short-range model finds exactly those, for ~1 ms more."""

    detectors: list[Detector] = field(repr=False)
    max_iou: float = 0.3

    def detect(self, image: ImageRGB) -> list[Detection]:
        return distinct((d for det in self.detectors for d in det.detect(image)), self.max_iou)


@dataclass
class MeshFaceAnalyzer:
    detector: Detector = field(repr=False)
    mesh: FaceMesh = field(repr=False)
    descriptor: DlibFaceAnalyzer = field(repr=False)  # dlib's 128-d descriptor on mesh-derived 68 points
    detector_name: str = "blazeface"
    min_presence: float = 0.5  # the mesh's own face-presence score: drops detector false positives
    name: str = "mesh"
    embedding_space: str = DLIB_SPACE

    def params(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "detector": self.detector_name,
            "min_presence": self.min_presence,
            "descriptor": self.descriptor.params().get("descriptor"),
        }

    def detect(self, image: ImageRGB) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError("detector expects an RGB uint8 image")
        if min(image.shape[:2]) < 16:
            return []
        faces = []
        for detection in self.detector.detect(image):
            fit = self.mesh.fit(image, detection)
            if fit.presence < self.min_presence:
                continue
            faces.append(self._face(fit.points, detection.box, detection.score, fit.presence))
        return order_faces(distinct(faces, max_iou=0.5))

    def fit_mesh(self, image: ImageRGB, kps5: FloatArray) -> FloatArray:
        """The mesh of a face known by its five keypoints (e.g. an identity's reference crop)."""
        return self.mesh.fit(image, np.asarray(kps5, np.float32)).points

    def _face(self, points: FloatArray, box: FloatArray, score: float, presence: float) -> Face:
        return Face(
            box=np.asarray(box, np.float32),
            score=float(score),
            kps5=kps5_from_mesh(points),
            landmarks68=landmarks68_from_mesh(points),
            landmarks_confidence=round(float(presence), 4),
            mesh=points,
        )

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        fit = self.mesh.fit(image, face)
        refit = self._face(fit.points, face.box, face.score, fit.presence)
        return replace(
            face,
            kps5=refit.kps5,
            landmarks68=refit.landmarks68,
            landmarks_confidence=refit.landmarks_confidence,
            mesh=refit.mesh,
        )

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        return self.descriptor.embed(image, face)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        return self.descriptor.distance(a, b)


class _Boxed(Protocol):
    @property
    def box(self) -> FloatArray: ...

    @property
    def score(self) -> float: ...


Boxed = TypeVar("Boxed", bound=_Boxed)


def distinct(items: Iterable[Boxed], max_iou: float) -> list[Boxed]:
    """Highest score first, dropping any item whose box overlaps a kept one by `max_iou` or more (tiled or
    combined detectors report one face more than once)."""
    kept: list[Boxed] = []
    for item in sorted(items, key=lambda x: -x.score):
        if all(box_iou(item.box, other.box) < max_iou for other in kept):
            kept.append(item)
    return kept
