"""Grading by a second recogniser: one the swap engine never steers with, so a swap cannot fool it.

MobileFaceNet (192-d) grades the embedded engines (which are steered by dlib's geometry and descriptor);
dlib's descriptor grades inswapper (steered by ArcFace). A grader also looks like a face analyzer
(`detect` delegates, `embed`, `distance`, `model_info`), so the identity store keeps its embedding as one
more space and recomputes it when the grader's model file changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Face, FloatArray, GraderScore, Identity, ImageRGB


def cosine(a: FloatArray, b: FloatArray) -> float:
    va, vb = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb / denom) if denom > 0 else 0.0


class Embedder(Protocol):
    def embed(self, image_rgb: ImageRGB, kps5: FloatArray) -> FloatArray: ...

    def embed_many(self, faces: Sequence[tuple[ImageRGB, FloatArray]]) -> FloatArray: ...


@dataclass
class IdentityGrader:
    """Scores a refined face against the identity and the original face by cosine similarity.

    `detector` finds faces in identity photos (the store asks for that); `embed` needs only a face's
    five keypoints (MobileFaceNet) or re-fits the analyzer's landmarks first (dlib).
    """

    embedding_space: str
    threshold: float  # same-person cosine similarity
    detector: FaceAnalyzer = field(repr=False)
    embedder: Embedder | None = field(default=None, repr=False)  # kps5-based recogniser
    model_path: Path | None = None
    name: str = "grader"
    metric: str = "cosine"

    @property
    def match_threshold(self) -> float:
        """As a cosine distance, the form the identity store records."""
        return 1.0 - self.threshold

    def params(self) -> dict[str, Any]:
        return {"grader": self.name, "space": self.embedding_space, "threshold": self.threshold}

    def model_info(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.model_path) if self.model_path else None}

    def detect(self, image: ImageRGB) -> list[Face]:
        return self.detector.detect(image)

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        return self.detector.landmarks(image, face)

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        if self.embedder is not None:
            return np.asarray(self.embedder.embed(image, face.kps5), np.float32)
        if face.landmarks68 is None:  # e.g. an insightface face: dlib's descriptor needs its own 68 points
            face = self.detector.landmarks(image, face)
        return np.asarray(self.detector.embed(image, face), np.float32)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        return 1.0 - cosine(a, b)

    def similarity(self, a: FloatArray, b: FloatArray) -> float:
        return cosine(a, b)

    def reference_embedding(self, identity: Identity) -> FloatArray:
        """The identity's vector in this space from its reference crop (for identities that lack a stored one)."""
        return self.embed(identity.reference_crop, reference_face(identity))

    def score(
        self, result: ImageRGB, result_face: Face, original: ImageRGB, original_face: Face, identity_vec: FloatArray
    ) -> GraderScore:
        """Similarity of the refined face to the identity and to the face it replaced."""
        if self.embedder is not None:  # MobileFaceNet's graph takes two faces per call: one call for both
            vec, original_vec = self.embedder.embed_many([(result, result_face.kps5), (original, original_face.kps5)])
        else:
            vec, original_vec = self.embed(result, result_face), self.embed(original, original_face)
        return GraderScore(
            model=self.name,
            identity_similarity=self.similarity(vec, identity_vec),
            original_similarity=self.similarity(vec, original_vec),
            threshold=self.threshold,
        )


def reference_face(identity: Identity) -> Face:
    """The identity's face in its reference crop, from its stored points: 68 landmarks (dlib, mesh analyzers),
    the mesh, or the five keypoints an ArcFace analyzer keeps."""
    from portraitforge.refiners.detect import kps5_from_landmarks68

    stored = np.asarray(identity.reference_landmarks68, np.float32)
    landmarks: FloatArray | None = None
    if len(stored) == 68:
        kps5, points, landmarks = kps5_from_landmarks68(stored), stored, stored
    elif identity.reference_mesh is not None:
        from portraitforge.models.mediapipe_face import kps5_from_mesh

        kps5, points = kps5_from_mesh(identity.reference_mesh), identity.reference_mesh[:, :2]
    elif len(stored) == 5:
        # Five points span the inner face only: widen them to a face-sized box.
        kps5, centre = stored, stored.mean(0)
        half = 1.2 * float(np.linalg.norm(stored[1] - stored[0]))
        points = np.stack([centre - half, centre + half])
    else:
        raise ValueError(f"identity '{identity.name}' has no reference landmarks")
    box = np.array([*points.min(0), *points.max(0)], np.float32)
    return Face(box=box, score=1.0, kps5=np.asarray(kps5, np.float32), landmarks68=landmarks)


def mobilefacenet_grader(model_path: Path, detector: FaceAnalyzer) -> IdentityGrader:
    from portraitforge.models.mobilefacenet import MOBILEFACENET_SPACE, MOBILEFACENET_THRESHOLD, MobileFaceNet

    return IdentityGrader(
        embedding_space=MOBILEFACENET_SPACE,
        threshold=MOBILEFACENET_THRESHOLD,
        detector=detector,
        embedder=MobileFaceNet.load(model_path),
        model_path=model_path,
        name="mobilefacenet",
    )


def dlib_grader(analyzer: FaceAnalyzer) -> IdentityGrader:
    """dlib's descriptor as the grader of ArcFace-driven engines (inswapper). Cosine on dlib vectors over the
    276 pairs of ../shared/faces: same person >= 0.924, different people <= 0.915."""
    return IdentityGrader(
        embedding_space=analyzer.embedding_space,
        threshold=0.92,
        detector=analyzer,
        name="dlib",
    )
