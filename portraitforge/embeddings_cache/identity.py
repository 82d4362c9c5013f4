"""Build an `Identity` from one photo with a face analyzer."""

from __future__ import annotations

import hashlib

import numpy as np

from portraitforge.errors import NoFaceError
from portraitforge.refiners.align import align_face, native_crop_size, points_to_crop, transform_points
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Face, FloatArray, Identity, ImageRGB

REFERENCE_MARGIN = 0.45
# Native resolution (no upsampling): the pipeline's upscaler enlarges small references when it is set.
REFERENCE_MIN, REFERENCE_MAX = 128, 512


def identity_from_image(analyzer: FaceAnalyzer, image: ImageRGB, name: str, source: str | None = None) -> Identity:
    """The largest face becomes the identity: its embedding plus an aligned reference crop."""
    faces = analyzer.detect(image)
    if not faces:
        raise NoFaceError(f"identity '{name}': no face found in {source or 'the identity image'}")
    face = max(faces, key=lambda f: f.area)
    embedding = analyzer.embed(image, face)
    size = native_crop_size(face.kps5, REFERENCE_MARGIN, REFERENCE_MIN, REFERENCE_MAX)
    crop = align_face(image, face.kps5, size, REFERENCE_MARGIN)
    landmarks = face.landmarks68 if face.landmarks68 is not None else face.kps5
    digest = hashlib.sha256(image.tobytes()).hexdigest()
    return Identity(
        name=name,
        embeddings={analyzer.embedding_space: embedding},
        reference_crop=crop.image,
        reference_landmarks68=transform_points(landmarks, crop.matrix),
        sources=[digest],
        reference_mesh=_reference_mesh(analyzer, crop.image, face, crop.matrix),
    )


def _reference_mesh(analyzer: FaceAnalyzer, crop: ImageRGB, face: Face, matrix: FloatArray) -> FloatArray | None:
    """The mesh fitted on the reference crop itself, as it is for an identity loaded from the store (which keeps
    the crop, not the photo): a fresh and a stored identity then refine identically."""
    if face.mesh is None:
        return None
    fit_mesh = getattr(analyzer, "fit_mesh", None)
    if fit_mesh is None:
        return points_to_crop(face.mesh, matrix)
    # The same five points a stored identity's are derived from (its 68 landmarks in the crop).
    if face.landmarks68 is not None:
        from portraitforge.refiners.detect import kps5_from_landmarks68

        kps5 = kps5_from_landmarks68(transform_points(face.landmarks68, matrix))
    else:
        kps5 = transform_points(face.kps5, matrix)
    return np.asarray(fit_mesh(crop, kps5), np.float32)
