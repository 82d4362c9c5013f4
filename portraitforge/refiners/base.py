"""The one shape every refiner stage has, plus the typed call signature of each stage kind.

Every stage is a small object with a `name` and `params()` (recorded in reports and image metadata)
and one typed call. Stages hold their models explicitly; there is no module-level state.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from portraitforge.types import AlignedCrop, Face, FloatArray, Identity, ImageRGB, SwapOutput


@runtime_checkable
class Stage(Protocol):
    name: str

    def params(self) -> dict[str, Any]: ...


class FaceAnalyzer(Stage, Protocol):
    """Detects faces with keypoints and computes identity embeddings in one embedding space."""

    embedding_space: str

    def detect(self, image: ImageRGB) -> list[Face]: ...

    def embed(self, image: ImageRGB, face: Face) -> FloatArray: ...

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        """Re-fit landmarks (and kps5) inside the face's box, e.g. on a processed image."""
        ...

    def distance(self, a: FloatArray, b: FloatArray) -> float: ...


class Upscaler(Stage, Protocol):
    scale: int

    def __call__(self, image: ImageRGB) -> ImageRGB: ...


class Swapper(Stage, Protocol):
    def __call__(self, crop: AlignedCrop, target_face: Face, identity: Identity, strength: float) -> SwapOutput:
        """`target_face` is given in crop coordinates."""
        ...


class Adjuster(Stage, Protocol):
    def __call__(self, image: ImageRGB, mask: FloatArray) -> ImageRGB: ...


class Blender(Stage, Protocol):
    def __call__(self, frame: ImageRGB, crop_image: ImageRGB, crop_mask: FloatArray, inverse: FloatArray) -> ImageRGB:
        """Paste `crop_image` back into `frame` through the crop->frame affine `inverse`."""
        ...
