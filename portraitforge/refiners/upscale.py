"""Upscaler stage: face crops (or frames) are enlarged before the swap works on them.

`none` and `lanczos` live here; Real-ESRGAN models plug into the same `Upscaler` interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2

from portraitforge.errors import BadInputError
from portraitforge.refiners.base import Upscaler
from portraitforge.types import ImageRGB


@dataclass
class NoUpscaler:
    name: str = "none"
    scale: int = 1

    def params(self) -> dict[str, Any]:
        return {"upscaler": self.name}

    def __call__(self, image: ImageRGB) -> ImageRGB:
        return image


@dataclass
class LanczosUpscaler:
    scale: int = 2
    name: str = "lanczos"

    def params(self) -> dict[str, Any]:
        return {"upscaler": self.name, "scale": self.scale}

    def __call__(self, image: ImageRGB) -> ImageRGB:
        h, w = image.shape[:2]
        return cv2.resize(image, (w * self.scale, h * self.scale), interpolation=cv2.INTER_LANCZOS4)


def build_upscaler(name: str) -> Upscaler:
    """Upscaler by registry name."""
    if name == "none":
        return NoUpscaler()
    if name == "lanczos":
        return LanczosUpscaler(scale=2)
    raise BadInputError(f"unknown upscaler '{name}' (available: none, lanczos)")
