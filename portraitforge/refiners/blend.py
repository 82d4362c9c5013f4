"""Paste a processed face crop back into the frame: poisson, multiband or feather blending.

All modes work on a padded region around the face, never on the full frame. Where that region
leaves the frame (faces touching the border) it is reflect-padded first, so cv2.seamlessClone
neither asserts nor shrinks the mask, and only the in-frame part is written back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from portraitforge.refiners.align import matrix_scale
from portraitforge.types import FloatArray, ImageRGB

BlendMode = Literal["poisson", "poisson-mixed", "multiband", "feather"]
BLEND_MODES: tuple[str, ...] = ("poisson", "poisson-mixed", "multiband", "feather")


@dataclass(frozen=True)
class Roi:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def mask_roi(crop_mask: FloatArray, inverse: FloatArray, pad: int) -> Roi | None:
    """Frame-space box around the mask's support, grown by `pad` pixels (may leave the frame)."""
    ys, xs = np.nonzero(crop_mask > 1e-3)
    if len(xs) == 0:
        return None
    corners = np.array(
        [[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1], [xs.max() + 1, ys.max() + 1]],
        np.float64,
    )
    frame_pts = corners @ inverse[:, :2].astype(np.float64).T + inverse[:, 2].astype(np.float64)
    x0, y0 = np.floor(frame_pts.min(0)).astype(int) - pad
    x1, y1 = np.ceil(frame_pts.max(0)).astype(int) + pad
    return Roi(int(x0), int(y0), int(x1), int(y1))


def extract_padded(frame: ImageRGB, roi: Roi) -> ImageRGB:
    """The frame inside `roi`; parts outside the frame are reflected from inside it."""
    h, w = frame.shape[:2]
    cx0, cy0 = max(roi.x0, 0), max(roi.y0, 0)
    cx1, cy1 = min(roi.x1, w), min(roi.y1, h)
    inner = frame[cy0:cy1, cx0:cx1]
    top, left = cy0 - roi.y0, cx0 - roi.x0
    bottom, right = roi.y1 - cy1, roi.x1 - cx1
    if top or left or bottom or right:
        border = cv2.BORDER_REFLECT_101 if min(inner.shape[:2]) > 1 else cv2.BORDER_REPLICATE
        # Reflection needs pads smaller than the region; replicate covers anything beyond that.
        if max(top, bottom) >= inner.shape[0] or max(left, right) >= inner.shape[1]:
            border = cv2.BORDER_REPLICATE
        inner = cv2.copyMakeBorder(inner, top, bottom, left, right, border)
    return np.ascontiguousarray(inner)


def laplacian_blend(src: np.ndarray, dst: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Multi-band blend (Burt & Adelson): low frequencies mix over wide areas, detail over narrow."""
    src_f, dst_f = src.astype(np.float32), dst.astype(np.float32)
    a = alpha.astype(np.float32)[..., None] if alpha.ndim == 2 else alpha.astype(np.float32)
    gs: list[np.ndarray] = [src_f]
    gd: list[np.ndarray] = [dst_f]
    ga: list[np.ndarray] = [a]
    for _ in range(levels):
        gs.append(cv2.pyrDown(gs[-1]))
        gd.append(cv2.pyrDown(gd[-1]))
        down = cv2.pyrDown(ga[-1])
        ga.append(down[..., None] if down.ndim == 2 else down)
    blended = gs[-1] * ga[-1] + gd[-1] * (1 - ga[-1])
    for level in range(levels - 1, -1, -1):
        size = (gs[level].shape[1], gs[level].shape[0])
        ls = gs[level] - cv2.pyrUp(gs[level + 1], dstsize=size)
        ld = gd[level] - cv2.pyrUp(gd[level + 1], dstsize=size)
        band = ls * ga[level] + ld * (1 - ga[level])
        blended = cv2.pyrUp(blended, dstsize=size) + band
    return blended


@dataclass
class FaceBlender:
    mode: BlendMode = "multiband"
    # Poisson boundary sits where the feathered mask crosses this level: deep enough inside the face
    # that it runs over target skin, not hair or background, which would bleed inwards.
    poisson_support: float = 0.5
    # Cubic keeps the crop's finest detail through the paste-back (bilinear at a sub-pixel offset is a
    # low-pass filter: about half the Laplacian variance of a sharp face is lost in that one step).
    interpolation: Literal["linear", "cubic"] = "linear"
    name: str = "blend"

    def params(self) -> dict[str, Any]:
        return {"blend": self.mode, "interpolation": self.interpolation}

    def __call__(self, frame: ImageRGB, crop_image: ImageRGB, crop_mask: FloatArray, inverse: FloatArray) -> ImageRGB:
        if self.mode not in BLEND_MODES:
            raise ValueError(f"unknown blend mode '{self.mode}'")
        scale = matrix_scale(inverse)
        pad = max(8, int(np.ceil(4 * scale)) + 4)
        roi = mask_roi(crop_mask, inverse, pad)
        out = frame.copy()
        if roi is None:
            return out
        shift = inverse.astype(np.float64).copy()
        shift[:, 2] -= (roi.x0, roi.y0)
        size = (roi.width, roi.height)
        flags = cv2.INTER_CUBIC if self.interpolation == "cubic" else cv2.INTER_LINEAR
        src = cv2.warpAffine(crop_image, shift, size, flags=flags, borderMode=cv2.BORDER_REFLECT_101)
        alpha = cv2.warpAffine(
            crop_mask.astype(np.float32),
            shift,
            size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        alpha = np.clip(alpha, 0.0, 1.0)
        dst = extract_padded(frame, roi)

        if self.mode in ("poisson", "poisson-mixed"):
            merged = self._poisson(src, dst, alpha)
        elif self.mode == "multiband":
            levels = int(np.clip(np.log2(max(min(size), 2) / 16.0), 1, 6))
            merged = laplacian_blend(src, dst, alpha, levels)
        else:
            merged = src.astype(np.float32) * alpha[..., None] + dst.astype(np.float32) * (1 - alpha[..., None])
        merged_u8 = np.clip(np.rint(merged), 0, 255).astype(np.uint8)

        h, w = frame.shape[:2]
        cx0, cy0, cx1, cy1 = max(roi.x0, 0), max(roi.y0, 0), min(roi.x1, w), min(roi.y1, h)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0:cy1, cx0:cx1] = merged_u8[cy0 - roi.y0 : cy1 - roi.y0, cx0 - roi.x0 : cx1 - roi.x0]
        return out

    def _poisson(self, src: ImageRGB, dst: ImageRGB, alpha: np.ndarray) -> np.ndarray:
        support = (alpha > self.poisson_support).astype(np.uint8) * 255
        # seamlessClone zeroes the mask's outer pixel ring; keep a margin so nothing is lost.
        support[:2, :] = 0
        support[-2:, :] = 0
        support[:, :2] = 0
        support[:, -2:] = 0
        x, y, bw, bh = cv2.boundingRect(support)
        if bw < 3 or bh < 3:
            return dst.astype(np.float32)
        center = (x + bw // 2, y + bh // 2)  # exactly maps the mask's box onto itself
        flag = cv2.MIXED_CLONE if self.mode == "poisson-mixed" else cv2.NORMAL_CLONE
        cloned = cv2.seamlessClone(src, dst, support, center, flag)
        # Poisson fixes colour; the feathered alpha then hides the hard support edge.
        a = alpha[..., None]
        return cloned.astype(np.float32) * a + dst.astype(np.float32) * (1 - a)
