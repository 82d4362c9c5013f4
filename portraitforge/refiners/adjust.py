"""Face-region adjustments: edge-preserving skin smoothing, brightness, contrast, saturation.

All defaults are neutral (the stage returns its input unchanged). Every change is weighted by the
face mask, so nothing outside the face moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from portraitforge.types import FloatArray, ImageRGB, fields_dict


@dataclass
class FaceAdjuster:
    smoothing: float = 0.0  # 0..1, bilateral-filtered skin mixed in
    brightness: float = 0.0  # -1..1, shift of L in LAB by up to 50 levels
    contrast: float = 0.0  # -1..1, scale of L around its face mean by up to 2x / 0.5x
    saturation: float = 0.0  # -1..1, scale of chroma by up to 2x / 0x
    name: str = "adjust"

    def params(self) -> dict[str, Any]:
        return fields_dict(self, "smoothing", "brightness", "contrast", "saturation")

    @property
    def neutral(self) -> bool:
        return self.smoothing == 0 and self.brightness == 0 and self.contrast == 0 and self.saturation == 0

    def __call__(self, image: ImageRGB, mask: FloatArray) -> ImageRGB:
        if self.neutral:
            return image
        out = image.astype(np.float32)
        a = np.clip(mask, 0, 1).astype(np.float32)[..., None]
        if self.smoothing > 0:
            # Edge-preserving: pores and blemishes (small contrast) go, eyes, brows and lips (large) stay.
            diameter = max(5, int(np.sqrt(float((mask > 0.5).sum())) * 0.05) | 1)
            smooth = cv2.bilateralFilter(image, diameter, 40, diameter * 1.5).astype(np.float32)
            out = out + (smooth - out) * a * float(self.smoothing)
        if self.brightness or self.contrast or self.saturation:
            lab = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
            sel = mask > 0.5
            l_mean = float(lab[..., 0][sel].mean()) if sel.any() else 128.0
            l_new = (lab[..., 0] - l_mean) * float(2.0**self.contrast) + l_mean + 50.0 * float(self.brightness)
            chroma_gain = float(1.0 + self.saturation)
            ab_new = (lab[..., 1:] - 128.0) * chroma_gain + 128.0
            adjusted = np.concatenate([l_new[..., None], ab_new], axis=2)
            adjusted_rgb = cv2.cvtColor(np.clip(adjusted, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
            out = out + (adjusted_rgb.astype(np.float32) - out) * a
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
