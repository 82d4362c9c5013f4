"""19-class face parsing (BiSeNetV2 trained on CelebAMask-HQ, 448x448 TFLite).

The parser runs once per face on its own square crop. The result keeps that crop's label map and
its image -> crop affine, so any stage can fetch labels or class masks in *its* aligned crop (or
the full frame) with one nearest-neighbour warp instead of re-running the network.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import cv2
import numpy as np
from numpy.typing import NDArray

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.litert import LiteModel
from portraitforge.types import FloatArray, ImageRGB

LabelMap = NDArray[np.uint8]


class FaceClass(enum.IntEnum):
    """CelebAMask-HQ classes in the network's output order."""

    BACKGROUND = 0
    SKIN = 1
    L_BROW = 2
    R_BROW = 3
    L_EYE = 4
    R_EYE = 5
    EYE_G = 6  # eyeglasses
    L_EAR = 7
    R_EAR = 8
    EAR_R = 9  # earring
    NOSE = 10
    MOUTH = 11  # inner mouth
    U_LIP = 12
    L_LIP = 13
    NECK = 14
    NECK_L = 15  # necklace
    CLOTH = 16
    HAIR = 17
    HAT = 18


# Convenience groups for masks.
FACE_INTERIOR = (
    FaceClass.SKIN,
    FaceClass.L_BROW,
    FaceClass.R_BROW,
    FaceClass.L_EYE,
    FaceClass.R_EYE,
    FaceClass.EYE_G,
    FaceClass.NOSE,
    FaceClass.MOUTH,
    FaceClass.U_LIP,
    FaceClass.L_LIP,
)


# --- crop geometry shared with the hair matte -------------------------------------------------


def square_crop_matrix(box: FloatArray, size: int, scale: float, raise_frac: float = 0.0) -> FloatArray:
    """2x3 image -> crop affine of a `size` crop whose side is `scale` x the box's longer side,
    centred on the box centre moved up by `raise_frac` of the box height."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).ravel()[:4])
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise BadInputError(f"face box has no area: {[x1, y1, x2, y2]}")
    side = scale * max(w, h)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 - raise_frac * h
    s = size / side
    # Pixel-centre convention (as cv2.warpAffine): the centre maps to the crop's middle, (size - 1) / 2.
    tx = (size - 1) / 2.0 - cx * s
    ty = (size - 1) / 2.0 - cy * s
    return np.array([[s, 0.0, tx], [0.0, s, ty]], np.float32)


def warp_crop(image: ImageRGB, matrix: FloatArray, size: int) -> ImageRGB:
    """Resample `image` into a `size` crop; shrinks with INTER_AREA first when the crop is much
    smaller than the face (a bilinear warp at scale < 0.5 aliases hair and skin texture)."""
    m = np.asarray(matrix, np.float64).copy()
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    source = image
    if scale < 0.5:
        factor = min(1.0, 2.0 * scale)  # keep a 2x oversampled copy for the warp
        h, w = image.shape[:2]
        nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
        source = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = w / nw, h / nh
        # small pixel u maps to image x = fx * (u + 0.5) - 0.5
        pre = np.array([[fx, 0.0, (fx - 1.0) / 2.0], [0.0, fy, (fy - 1.0) / 2.0], [0.0, 0.0, 1.0]])
        m = m @ pre
    return cv2.warpAffine(
        source, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


def crop_to_crop(src_matrix: FloatArray, dst_matrix: FloatArray) -> FloatArray:
    """Affine from the source crop's pixels to the destination crop's pixels (via the image)."""
    inv = cv2.invertAffineTransform(np.asarray(src_matrix, np.float64))
    inv3 = np.vstack([inv, [0.0, 0.0, 1.0]])
    return np.asarray(dst_matrix, np.float64) @ inv3


def size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
    """An int is a square crop; a tuple is (width, height) as OpenCV takes it."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def identity_matrix() -> FloatArray:
    """image -> image; pass with (width, height) to get a map in full-frame coordinates."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)


# --- model I/O -----------------------------------------------------------------------------


def to_model_input(x: FloatArray, detail: dict[str, Any]) -> np.ndarray:
    """Float input -> the tensor's dtype, quantising with its (scale, zero point) when it is integer."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        raise ModelUnavailableError(f"integer input tensor {detail.get('name')} has no quantisation scale")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def from_model_output(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Integer activations -> real values; class-id outputs (int32/int64 without a scale) pass through."""
    scale, zero = detail["quantization"]
    if y.dtype.kind in "iu" and scale:
        return (y.astype(np.float32) - zero) * scale
    return y


# --- the parser ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceParsing:
    """Class ids of one face in the parser's crop, with the crop's image -> crop affine."""

    labels: LabelMap  # (S, S) FaceClass ids
    matrix: FloatArray  # 2x3 image -> parser crop

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def labels_in(
        self, matrix: FloatArray, size: int | tuple[int, int], outside: int = FaceClass.BACKGROUND
    ) -> LabelMap:
        """Label map in another crop (`matrix` maps image -> that crop); nearest neighbour, so ids stay
        ids. Pixels the parser's crop did not see get `outside`."""
        warp = crop_to_crop(self.matrix, matrix)
        out = cv2.warpAffine(
            self.labels,
            warp,
            size_wh(size),
            flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=int(outside),
        )
        return out.astype(np.uint8, copy=False)

    def labels_full(self, image_shape: tuple[int, ...]) -> LabelMap:
        return self.labels_in(identity_matrix(), (int(image_shape[1]), int(image_shape[0])))

    def mask(self, classes: Iterable[int]) -> NDArray[np.bool_]:
        """Boolean mask of `classes` in the parser's own crop."""
        return np.isin(self.labels, np.fromiter((int(c) for c in classes), np.uint8))

    def mask_in(
        self, classes: Iterable[int], matrix: FloatArray, size: int | tuple[int, int], soft: bool = False
    ) -> FloatArray:
        """float32 0/1 mask of `classes` in another crop; `soft` warps bilinearly for anti-aliased
        edges (the parser's crop is often coarser than a blend crop)."""
        binary = self.mask(classes).astype(np.float32)
        warp = crop_to_crop(self.matrix, matrix)
        flags = cv2.INTER_LINEAR if soft else cv2.INTER_NEAREST
        return cv2.warpAffine(binary, warp, size_wh(size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def fraction(self, cls: int, region: NDArray[np.bool_]) -> float:
        """Share of `region` (a mask in the parser's crop) labelled `cls`."""
        total = int(region.sum())
        return float((self.labels[region] == int(cls)).sum()) / total if total else 0.0


@dataclass
class SquareCropModel:
    """A TFLite net that reads a square crop around a face box ([1,S,S,channels] input): the face parser and
    the hair matte. `crop_scale` is the crop's side in face-box sizes, `crop_raise` its upward shift."""

    channels: ClassVar[int]
    model: LiteModel
    size: int
    crop_scale: float = 2.0  # each model states its own (below)
    crop_raise: float = 0.0

    @classmethod
    def load(cls, path: Path, num_threads: int | None = None) -> Self:
        model = LiteModel.load(path, num_threads=num_threads)
        return cls(model=model, size=model.square_input_side(cls.channels))

    def crop_matrix(self, face_box: FloatArray) -> FloatArray:
        return square_crop_matrix(face_box, self.size, self.crop_scale, self.crop_raise)

    def face_crop(self, image_rgb: ImageRGB, face_box: FloatArray, what: str) -> tuple[FloatArray, ImageRGB]:
        """(image -> crop matrix, the crop) for `face_box`; `what` names the model in the bad-input message."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise BadInputError(f"{what} expects an RGB uint8 image")
        matrix = self.crop_matrix(face_box)
        return matrix, warp_crop(image_rgb, matrix, self.size)


@dataclass
class FaceParser(SquareCropModel):
    """BiSeNetV2 19-class parser: 448x448 RGB (x - 128) / 128 of a crop 2x the face box, raised 0.1 box height."""

    channels: ClassVar[int] = 3
    crop_scale: float = 2.0
    crop_raise: float = 0.1
    name: str = "bisenetv2_face_parsing"

    def parse(self, image_rgb: ImageRGB, face_box: FloatArray) -> FaceParsing:
        matrix, crop = self.face_crop(image_rgb, face_box, "face parser")
        x = (crop.astype(np.float32)[None] - 128.0) / 128.0
        out = self.model.run(to_model_input(x, self.model.inputs[0]))[0]
        return FaceParsing(labels=self._labels(out), matrix=matrix)

    def labels(self, image_rgb: ImageRGB, face_box: FloatArray) -> LabelMap:
        """Class ids for every pixel of `image_rgb` (e.g. an aligned face crop); outside the parser's view
        is background."""
        return self.parse(image_rgb, face_box).labels_full(image_rgb.shape)

    def _labels(self, out: np.ndarray) -> LabelMap:
        # This file ends in an in-graph argmax ([S,S] int64); other exports give [1,S,S,19] scores.
        y = from_model_output(out, self.model.outputs[0])
        if y.ndim >= 3 and y.shape[-1] == len(FaceClass):
            y = np.argmax(y, axis=-1)
        labels = np.asarray(y).reshape(self.size, self.size)
        if labels.min() < 0 or labels.max() >= len(FaceClass):
            raise ModelUnavailableError(f"{self.model.path.name}: class ids outside 0..{len(FaceClass) - 1}")
        return labels.astype(np.uint8)
