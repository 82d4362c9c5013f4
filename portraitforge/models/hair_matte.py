"""Soft hair matte (MediaPipe's hair segmentation net, 512x512 TFLite).

Like the face parser, a result keeps its crop's matte and image -> crop affine so callers fetch it in
any aligned crop (bilinear) without re-running the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from portraitforge.errors import BadInputError
from portraitforge.models.face_parsing import (
    crop_to_crop,
    from_model_output,
    identity_matrix,
    size_wh,
    square_crop_matrix,
    to_model_input,
    warp_crop,
)
from portraitforge.models.litert import LiteModel
from portraitforge.types import FloatArray, ImageRGB


@dataclass(frozen=True)
class HairMatteResult:
    """P(hair) in 0..1 over the model's crop, with the crop's image -> crop affine."""

    alpha: FloatArray  # (S, S) float32
    matrix: FloatArray  # 2x3 image -> matte crop

    @property
    def size(self) -> int:
        return int(self.alpha.shape[0])

    def matte_in(self, matrix: FloatArray, size: int | tuple[int, int]) -> FloatArray:
        """The matte in another crop (`matrix` maps image -> that crop); 0 where this crop saw nothing."""
        warp = crop_to_crop(self.matrix, matrix)
        return cv2.warpAffine(
            self.alpha, warp, size_wh(size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )

    def matte_full(self, image_shape: tuple[int, ...]) -> FloatArray:
        return self.matte_in(identity_matrix(), (int(image_shape[1]), int(image_shape[0])))


@dataclass
class HairMatte:
    """Input [1,512,512,4]: RGB in [0,1] of a crop 2.2x the face box plus a zero previous-mask
    channel; output 2-class logits, softmax channel 1 = hair."""

    model: LiteModel
    size: int
    crop_scale: float = 2.2
    crop_raise: float = 0.1  # hair sits above and beside the face, rarely below the chin
    name: str = "hair_segmentation"

    @classmethod
    def load(cls, path: Path, num_threads: int | None = None) -> HairMatte:
        model = LiteModel.load(path, num_threads=num_threads)
        return cls(model=model, size=model.square_input_side(4))

    def crop_matrix(self, face_box: FloatArray) -> FloatArray:
        return square_crop_matrix(face_box, self.size, self.crop_scale, self.crop_raise)

    def matte(self, image_rgb: ImageRGB, face_box: FloatArray) -> HairMatteResult:
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise BadInputError("hair matte expects an RGB uint8 image")
        matrix = self.crop_matrix(face_box)
        crop = warp_crop(image_rgb, matrix, self.size)
        x = np.zeros((1, self.size, self.size, 4), np.float32)
        # Channel 3 is the previous frame's mask in MediaPipe's video graph; a still image has none.
        x[0, :, :, :3] = crop.astype(np.float32) / 255.0
        out = from_model_output(self.model.run(to_model_input(x, self.model.inputs[0]))[0], self.model.outputs[0])
        logits = np.asarray(out, np.float32).reshape(self.size, self.size, 2)
        # softmax over two classes = sigmoid of the logit difference
        alpha = 1.0 / (1.0 + np.exp(logits[..., 0] - logits[..., 1]))
        return HairMatteResult(alpha=alpha.astype(np.float32), matrix=matrix)
