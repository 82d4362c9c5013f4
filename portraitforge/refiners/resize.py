"""Output resolution: presets (original, 512, 1024, 2048), custom WxH, and fit modes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from portraitforge.types import ImageRGB

FitMode = Literal["pad", "crop", "stretch"]
PRESETS = ("original", "512", "1024", "2048")
MAX_SIDE = 16384
_WXH = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class Resolution:
    """`long_side` keeps the aspect ratio; `box` is an exact WxH filled according to the fit mode."""

    long_side: int | None = None
    box: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> Resolution:
        value = str(text).strip().lower()
        if value == "original":
            return cls()
        if value.isdigit():
            side = int(value)
            if not 16 <= side <= MAX_SIDE:
                raise ValueError(f"resolution {side} out of range 16..{MAX_SIDE}")
            return cls(long_side=side)
        match = _WXH.match(value)
        if not match:
            raise ValueError(f"resolution '{text}' is not one of {', '.join(PRESETS)} or WxH")
        w, h = int(match.group(1)), int(match.group(2))
        if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE):
            raise ValueError(f"resolution {w}x{h} out of range: each side must be 16..{MAX_SIDE}")
        return cls(box=(w, h))

    def __str__(self) -> str:
        if self.box:
            return f"{self.box[0]}x{self.box[1]}"
        return str(self.long_side) if self.long_side else "original"


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrink = width * height < w * h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def scale_for_output(image: ImageRGB, resolution: Resolution, fit: FitMode = "pad") -> ImageRGB:
    """Step 1, before refining: resample to the scale the output needs, without padding or cropping.

    Refining at output scale keeps the swapped face sharp; padding comes after refining so that a
    reflected copy of a face in the padding is never detected or swapped.
    """
    h, w = image.shape[:2]
    if resolution.long_side:
        s = resolution.long_side / max(h, w)
    elif resolution.box:
        bw, bh = resolution.box
        # stretch: refine at a uniform scale (a squashed face is neither detected nor swapped well),
        # then `fit_to_box` stretches the finished image.
        s = max(bw / w, bh / h) if fit == "crop" else min(bw / w, bh / h)
    else:
        return image
    width, height = max(1, round(w * s)), max(1, round(h * s))
    if resolution.box and fit == "crop":
        width, height = max(width, resolution.box[0]), max(height, resolution.box[1])
    elif resolution.box:
        width, height = min(width, resolution.box[0]), min(height, resolution.box[1])
    return _resize(image, width, height)


def fit_to_box(image: np.ndarray, resolution: Resolution, fit: FitMode = "pad") -> np.ndarray:
    """Step 2, after refining: centre-crop, reflect-pad or stretch to the exact box (no-op otherwise)."""
    if not resolution.box:
        return image
    bw, bh = resolution.box
    h, w = image.shape[:2]
    if (w, h) == (bw, bh):
        return image
    if fit == "stretch":
        return _resize(image, bw, bh)
    if fit == "crop" or (w >= bw and h >= bh):
        y0, x0 = max(0, (h - bh) // 2), max(0, (w - bw) // 2)
        image = np.ascontiguousarray(image[y0 : y0 + bh, x0 : x0 + bw])
        h, w = image.shape[:2]
    top, left = (bh - h) // 2, (bw - w) // 2
    bottom, right = bh - h - top, bw - w - left
    border = cv2.BORDER_REFLECT_101
    if max(top, bottom) >= h or max(left, right) >= w or min(h, w) < 2:
        border = cv2.BORDER_REPLICATE  # reflection cannot pad more than the image's own size
    return cv2.copyMakeBorder(image, top, bottom, left, right, border)


def apply_resolution(image: ImageRGB, resolution: Resolution, fit: FitMode = "pad") -> ImageRGB:
    return fit_to_box(scale_for_output(image, resolution, fit), resolution, fit)
