"""inswapper_128 swap engine on ArcFace identities, with crop-local paste-back and pixel boost.

Preprocessing is insightface's (`INSwapper.get`) exactly: `norm_crop2(img, kps, 128)`, then
`blobFromImage(bgr, 1/255, (128, 128), 0, swapRB=True)`; the latent is `normed_embedding @ emap`
divided by its L2 norm (`emap` = the graph's last initializer); the output is RGB in [0, 1].

Paste-back differs on purpose: insightface warps a white mask, a diff mask and the result over the
whole frame (`paste_back=True`), which costs O(frame) per face. Here the swapped 128 px face is warped
into the aligned face *crop* only, with a feathered mask in crop coordinates; the pipeline's
`FaceBlender` then blends that crop on a small ROI of the frame.

Beyond 128 px (faces larger than the model's resolution):
- pixel boost (FaceFusion style): align at k*128, split into k*k sub-sampled 128 px images
  (`aligned[i::k, j::k]`), swap each with the same latent, re-interleave. The model sees every pixel.
- `swap_order="swap-upscale"`: swap at 128*k, then enlarge the swapped face with `upscaler`.
- `swap_order="upscale-swap"`: enlarge the target crop with `upscaler` first, then align and swap.
See `DEFAULT_SWAP_ORDER` for the measured default (upscale, then swap with automatic pixel boost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.onnx_runtime import OnnxSessionPool
from portraitforge.models.registry import INSWAPPER_128
from portraitforge.models.store import ModelStore
from portraitforge.refiners.align import matrix_scale, upscale_matrix
from portraitforge.refiners.base import Upscaler
from portraitforge.refiners.detect_insightface import ARCFACE_SPACE, _quiet, norm_matrix
from portraitforge.types import AlignedCrop, Face, FloatArray, Identity, ImageRGB, SwapOutput, fields_dict

SwapOrder = Literal["swap-upscale", "upscale-swap"]
MaskKind = Literal["box", "ellipse"]
MODEL_SIZE = 128
MAX_PIXEL_BOOST = 4
# Default order, measured with benchmarks/bench_swap_order.py on real face crops of 272-512 px, using a
# pass-through model of the inswapper signature (the ideal swap returns the crop; PSNR / Laplacian-variance
# ratio inside the swapped region, lanczos x4 as the upscaler):
#   plain 128 (no boost)          35.6-41.1 dB  sharpness 0.29-0.67
#   swap -> upscale (boost 1)     35.7-42.2 dB  sharpness 0.31-0.68   (upscaling a 128 px result adds little)
#   boost auto, no upscaler       45.8-51.0 dB  sharpness 0.66-0.86
#   upscale -> swap + boost auto  56.9-57.5 dB  sharpness 0.98-1.02   (best; 16 model runs, ~3x the time)
# The low-frequency edit of the synthetic swap model agrees across all orders to <= 0.22 levels, so the
# order changes detail, not what the model does. Identity (ArcFace cosine) cannot be measured without the
# real weights. Hence: enlarge the crop first, then let pixel boost feed the model at that resolution.
# This is also the mission's stage order (detect -> crop -> upscale -> swap -> blend).
DEFAULT_SWAP_ORDER: SwapOrder = "upscale-swap"


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise BadInputError("embedding has zero or non-finite norm")
    return v / norm


@dataclass(frozen=True)
class InswapperModel:
    """insightface's `INSwapper` constructed on a local file and a pooled session."""

    swapper: Any  # insightface.model_zoo.inswapper.INSwapper

    @classmethod
    def from_file(cls, path: str | Path, pool: OnnxSessionPool) -> InswapperModel:
        try:
            from insightface.model_zoo.inswapper import INSwapper
        except ImportError as exc:
            raise ModelUnavailableError(f"insightface is not importable ({exc}); pip install insightface") from None
        with _quiet():  # INSwapper prints its input shape on stdout
            swapper = INSwapper(model_file=str(path), session=pool.get(path))
        if tuple(swapper.input_size) != (MODEL_SIZE, MODEL_SIZE) or swapper.emap.shape != (512, 512):
            raise ModelUnavailableError(f"{path} does not look like inswapper_128 (input {swapper.input_size})")
        return cls(swapper=swapper)

    @classmethod
    def load(cls, store: ModelStore, pool: OnnxSessionPool, download: bool = False) -> InswapperModel:
        return cls.from_file(store.ensure(INSWAPPER_128.name, download=download), pool)

    @property
    def emap(self) -> np.ndarray:
        return np.asarray(self.swapper.emap)

    def latent(self, embedding: FloatArray) -> np.ndarray:
        """(1, 512) float32: normed embedding @ emap, L2-normalised (insightface's arithmetic)."""
        normed = np.asarray(embedding, np.float32).reshape(1, -1)
        normed = normed / np.linalg.norm(normed)
        latent = np.dot(normed, self.emap)
        latent /= np.linalg.norm(latent)
        return latent.astype(np.float32)

    def blob(self, aligned_rgb: ImageRGB) -> np.ndarray:
        """1x3x128x128 float32 RGB/255, built from BGR with swapRB exactly as `INSwapper.get` does."""
        s = self.swapper
        mean = float(s.input_mean)
        return cv2.dnn.blobFromImage(
            np.ascontiguousarray(aligned_rgb[..., ::-1]),
            1.0 / s.input_std,
            s.input_size,
            (mean, mean, mean),
            swapRB=True,
        )

    def run(self, aligned_rgb: ImageRGB, latent: np.ndarray) -> np.ndarray:
        """Swap one aligned 128x128 RGB uint8 face; returns 128x128x3 RGB float32 in [0, 1]."""
        s = self.swapper
        feed = {s.input_names[0]: self.blob(aligned_rgb), s.input_names[1]: np.asarray(latent, np.float32)}
        pred = s.session.run(s.output_names, feed)[0]
        return np.clip(pred[0].transpose(1, 2, 0), 0.0, 1.0).astype(np.float32)


def implode_pixel_boost(aligned: np.ndarray, boost: int) -> np.ndarray:
    """(128k, 128k, C) -> (k*k, 128, 128, C); tile (i, j) is aligned[i::k, j::k] (FaceFusion's layout)."""
    size = aligned.shape[0] // boost
    tiles = aligned.reshape(size, boost, size, boost, -1).transpose(1, 3, 0, 2, 4)
    return tiles.reshape(boost * boost, size, size, -1)


def explode_pixel_boost(tiles: np.ndarray, boost: int) -> np.ndarray:
    """Inverse of `implode_pixel_boost`."""
    size = tiles.shape[1]
    grid = tiles.reshape(boost, boost, size, size, -1).transpose(2, 0, 3, 1, 4)
    return grid.reshape(size * boost, size * boost, -1)


def aligned_mask(size: int, kind: MaskKind = "box", blur: float = 0.3, padding: float = 0.0) -> np.ndarray:
    """Feathered mask in aligned-face coordinates (float32 0..1).

    "box" follows FaceFusion's static box mask (the whole aligned square, its border faded over
    `blur`/2 of the size); "ellipse" keeps to the face oval of the ArcFace template (less hair/background).
    `padding` shrinks the shape by that fraction of the size on every side.
    """
    shape = np.zeros((size, size), np.uint8)
    fade = max(1.0, size * 0.5 * blur)
    edge = max(1, int(size * padding))
    if kind == "box":
        shape[edge : size - edge, edge : size - edge] = 1
    elif kind == "ellipse":
        # Oval around the 128-template face: eyes at y~52, mouth at y~92, chin near y~120 (scaled).
        s = size / 128.0
        cv2.ellipse(
            shape, (round(64 * s), round(70 * s)), (round(44 * s) - edge, round(54 * s) - edge), 0, 0, 360, 1, -1
        )
    else:
        raise BadInputError(f"unknown mask kind '{kind}' (box or ellipse)")
    # A smoothstep over the distance to the shape's edge: exactly 0 outside, 1 deeper than `fade`
    # (a Gaussian blur would leave a small step where its tails are cut at the aligned square's border).
    depth = cv2.distanceTransform(shape, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    t = np.clip(depth / fade, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine `outer` after `inner`."""
    a = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    b = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (a @ b)[:2]


@dataclass
class InswapperSwapper:
    """Swapper protocol on inswapper_128. Identities must carry an "arcface-512" embedding.

    - `pixel_boost`: 1..4, or 0 = automatic (enough 128 px tiles to cover the crop's face resolution).
    - `upscaler`: used according to `swap_order`; the pipeline should then not upscale the crop itself.
    - `embedder`: computes the target's ArcFace embedding for strength < 1 when the face has none.
    """

    model: InswapperModel
    pixel_boost: int = 0
    swap_order: SwapOrder = DEFAULT_SWAP_ORDER
    upscaler: Upscaler | None = None
    embedder: Any | None = None  # FaceAnalyzer in the arcface-512 space (e.g. InsightFaceAnalyzer)
    mask_kind: MaskKind = "box"
    mask_blur: float = 0.3
    mask_padding: float = 0.0
    name: str = "inswapper"

    def params(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            **fields_dict(self, "pixel_boost", "swap_order"),
            "upscaler": None if self.upscaler is None else self.upscaler.name,
            "mask": self.mask_kind,
            "mask_blur": self.mask_blur,
        }

    # ---- latents ---------------------------------------------------------------------------------

    def identity_latent(self, identity: Identity) -> np.ndarray:
        if ARCFACE_SPACE not in identity.embeddings:
            have = ", ".join(identity.embeddings) or "none"
            raise BadInputError(
                f"identity '{identity.name}' has no '{ARCFACE_SPACE}' embedding (it has: {have}); "
                "the inswapper engine needs an identity built with the insightface analyzer"
            )
        return self.model.latent(identity.embeddings[ARCFACE_SPACE])

    def target_latent(self, crop: AlignedCrop, target_face: Face) -> np.ndarray:
        if target_face.embedding is not None and target_face.embedding_space == ARCFACE_SPACE:
            return self.model.latent(target_face.embedding)
        if self.embedder is None or getattr(self.embedder, "embedding_space", None) != ARCFACE_SPACE:
            raise BadInputError("inswapper strength < 1 needs the target's ArcFace embedding (no arcface embedder)")
        return self.model.latent(self.embedder.embed(crop.image, target_face))

    def mixed_latent(self, crop: AlignedCrop, target_face: Face, identity: Identity, strength: float) -> np.ndarray:
        """Strength interpolates from the target's own latent (0) to the identity's (1), then renormalises."""
        source = self.identity_latent(identity)
        if strength >= 1.0:
            return source
        mixed = (1.0 - strength) * self.target_latent(crop, target_face) + strength * source
        return _normalise(mixed).astype(np.float32)

    # ---- resolution plan -------------------------------------------------------------------------

    def boost_for(self, crop_to_128: np.ndarray) -> int:
        """Pixel-boost factor: explicit, or the smallest k with 128k aligned px >= the crop's face px."""
        if self.pixel_boost:
            return int(np.clip(self.pixel_boost, 1, MAX_PIXEL_BOOST))
        crop_px_per_aligned_px = 1.0 / max(matrix_scale(crop_to_128), 1e-6)
        return int(np.clip(math.ceil(crop_px_per_aligned_px - 0.05), 1, MAX_PIXEL_BOOST))

    def swap_aligned(self, aligned: ImageRGB, latent: np.ndarray, boost: int) -> np.ndarray:
        """Swap an aligned (128*boost)^2 RGB uint8 face; RGB float32 [0, 1] of the same size."""
        if boost == 1:
            return self.model.run(aligned, latent)
        tiles = implode_pixel_boost(aligned, boost)
        swapped = np.stack([self.model.run(np.ascontiguousarray(t), latent) for t in tiles])
        return explode_pixel_boost(swapped, boost)

    # ---- the Swapper call ------------------------------------------------------------------------

    def __call__(self, crop: AlignedCrop, target_face: Face, identity: Identity, strength: float) -> SwapOutput:
        size = crop.size
        if strength <= 0.0:
            # 0 gives the target back unchanged (the model itself would still re-render the face).
            return SwapOutput(crop.image.copy(), np.zeros((size, size), np.float32), target_face.landmarks68)
        latent = self.mixed_latent(crop, target_face, identity, float(min(strength, 1.0)))

        source, kps = crop.image, target_face.kps5.astype(np.float32)
        crop_to_source = np.eye(2, 3, dtype=np.float64)
        use_upscaler = self.upscaler is not None and self.upscaler.scale > 1
        if use_upscaler and self.swap_order == "upscale-swap":
            assert self.upscaler is not None
            source = self.upscaler(crop.image)
            crop_to_source = upscale_matrix(source.shape[0] / crop.image.shape[0])
            kps = (kps.astype(np.float64) @ crop_to_source[:, :2].T + crop_to_source[:, 2]).astype(np.float32)
        # Auto boost covers the face resolution of what is sampled: the crop, or its enlargement.
        boost = self.boost_for(norm_matrix(kps, MODEL_SIZE, base=MODEL_SIZE))
        aligned_size = MODEL_SIZE * boost
        matrix = norm_matrix(kps, aligned_size, base=MODEL_SIZE)  # source image -> aligned
        aligned = cv2.warpAffine(source, matrix, (aligned_size, aligned_size), borderValue=0.0)
        swapped = self.swap_aligned(aligned, latent, boost)
        swapped_u8 = np.clip(np.rint(swapped * 255.0), 0, 255).astype(np.uint8)

        crop_to_aligned = compose(matrix, crop_to_source)
        if use_upscaler and self.swap_order == "swap-upscale" and matrix_scale(crop_to_aligned) < 1.0:
            # Only when the crop holds more face pixels than the (boosted) model output.
            assert self.upscaler is not None
            upscaled = self.upscaler(swapped_u8)
            crop_to_aligned = compose(upscale_matrix(upscaled.shape[0] / swapped_u8.shape[0]), crop_to_aligned)
            swapped_u8 = upscaled
        inverse = cv2.invertAffineTransform(crop_to_aligned)  # aligned (possibly enlarged) -> crop

        out_size = swapped_u8.shape[0]
        mask_aligned = aligned_mask(out_size, self.mask_kind, self.mask_blur, self.mask_padding)
        warped = cv2.warpAffine(swapped_u8, inverse, (size, size), flags=cv2.INTER_CUBIC, borderValue=0.0)
        mask = cv2.warpAffine(mask_aligned, inverse, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
        mask = np.clip(mask, 0.0, 1.0).astype(np.float32)
        # Inside the mask support the swapped pixels; outside, the crop untouched. The feathering stays
        # in `mask` for the blender (applying it here too would square the fade).
        image = np.where((mask > 0)[..., None], warped, crop.image)
        source_scale = 1.0 / matrix_scale(crop_to_aligned)  # model output px -> crop px
        return SwapOutput(image=image, mask=mask, landmarks68=target_face.landmarks68, source_scale=source_scale)
