"""Keep the photo's own fine detail on swapped skin, in frame space.

A swapped face passes through two resamplings (frame -> aligned crop -> frame) and carries the identity
photo's own grain, so next to the untouched photo it reads as a soft patch. On skin (never on eyes,
brows or lips, where the target's detail would print a ghost of its features) this stage replaces the
result's finest band with the original frame's: the identity keeps its low and mid frequencies, which is
where recognisers and people read identity, and the skin gets the photo's pores, noise and sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from portraitforge.refiners.align import matrix_scale
from portraitforge.refiners.blend import mask_roi
from portraitforge.types import FloatArray, ImageRGB


@dataclass
class DetailKeeper:
    # The finest band only (pores, grain, sensor noise): at 0.006 the target's fine folds came through too and cost
    # one pair by each recogniser on ../shared/faces (benchmarks/bench_pairs.py --detail).
    sigma: float = 0.004  # high-pass cut-off (Gaussian sigma) as a fraction of face height
    amount: float = 1.0  # share of the original's fine band that replaces the result's
    name: str = "detail"

    def params(self) -> dict[str, Any]:
        return {"detail_sigma": self.sigma, "detail_amount": self.amount}

    def __call__(
        self,
        result: ImageRGB,
        original: ImageRGB,
        crop_weight: FloatArray,
        inverse: FloatArray,
        face_height_crop: float,
    ) -> ImageRGB:
        """`crop_weight` (0..1, crop coordinates) says where the original's detail belongs."""
        if self.sigma <= 0 or self.amount <= 0:
            return result
        scale = matrix_scale(inverse)
        roi = mask_roi(crop_weight, inverse, pad=4)
        if roi is None:
            return result
        h, w = result.shape[:2]
        x0, y0, x1, y1 = max(roi.x0, 0), max(roi.y0, 0), min(roi.x1, w), min(roi.y1, h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return result
        shift = inverse.astype(np.float64).copy()
        shift[:, 2] -= (x0, y0)
        weight = (
            cv2.warpAffine(
                crop_weight.astype(np.float32), shift, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0
            )[..., None]
            * self.amount
        )
        sigma = max(0.7, self.sigma * face_height_crop * scale)
        res = result[y0:y1, x0:x1].astype(np.float32)
        orig = original[y0:y1, x0:x1].astype(np.float32)
        high_res = res - cv2.GaussianBlur(res, (0, 0), sigma)
        high_orig = orig - cv2.GaussianBlur(orig, (0, 0), sigma)
        out = result.copy()
        out[y0:y1, x0:x1] = np.clip(np.rint(res + weight * (high_orig - high_res)), 0, 255).astype(np.uint8)
        return out
