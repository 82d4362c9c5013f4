"""Build an `Identity` from one photo with a face analyzer."""

from __future__ import annotations

import hashlib

from portraitforge.errors import NoFaceError
from portraitforge.refiners.align import align_face, native_crop_size, points_to_crop, transform_points
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Identity, ImageRGB

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
        # Fitted on the whole photo; the identity store keeps this same mesh, so both refine identically.
        reference_mesh=None if face.mesh is None else points_to_crop(face.mesh, crop.matrix),
    )
