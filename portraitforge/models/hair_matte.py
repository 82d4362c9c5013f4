"""Soft hair matte (MediaPipe's hair segmentation net, 512x512 TFLite).

Like the face parser, a result keeps its crop's matte and image -> crop affine so callers fetch it in
any aligned crop (bilinear) without re-running the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from portraitforge.models.face_parsing import (
    SquareCropModel,
    crop_to_crop,
    from_model_output,
    identity_matrix,
    size_wh,
    to_model_input,
)
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
class HairMatte(SquareCropModel):
    """Input [1,512,512,4]: RGB in [0,1] of a crop 2.2x the face box plus a zero previous-mask
    channel; output 2-class logits, softmax channel 1 = hair."""

    channels: ClassVar[int] = 4
    crop_scale: float = 2.2
    crop_raise: float = 0.1  # hair sits above and beside the face, rarely below the chin
    name: str = "hair_segmentation"

    def matte(self, image_rgb: ImageRGB, face_box: FloatArray) -> HairMatteResult:
        matrix, crop = self.face_crop(image_rgb, face_box, "hair matte")
        x = np.zeros((1, self.size, self.size, 4), np.float32)
        # Channel 3 is the previous frame's mask in MediaPipe's video graph; a still image has none.
        x[0, :, :, :3] = crop.astype(np.float32) / 255.0
        out = from_model_output(self.model.run(to_model_input(x, self.model.inputs[0]))[0], self.model.outputs[0])
        logits = np.asarray(out, np.float32).reshape(self.size, self.size, 2)
        # softmax over two classes = sigmoid of the logit difference
        alpha = 1.0 / (1.0 + np.exp(logits[..., 0] - logits[..., 1]))
        return HairMatteResult(alpha=alpha.astype(np.float32), matrix=matrix)
