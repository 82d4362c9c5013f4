"""Upscaler stage: face crops (or whole frames) are enlarged before the swap works on them.

`none` and `lanczos` are plain resizes. `RealESRGANUpscaler` runs a spandrel model (the embedded Real-ESRGAN
networks or any spandrel-loadable file) in tiles: each tile is run with `overlap` pixels of real context on
every inner side and only its core is kept, so the cores tile the output exactly and no seam is ever blended.
On out-of-memory the tile size is halved and the image is run again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from portraitforge.errors import BadInputError, OutOfMemoryError
from portraitforge.refiners.base import Upscaler
from portraitforge.types import ImageRGB, fields_dict

if TYPE_CHECKING:
    # torch (and spandrel) are imported on first use: `none`/`lanczos` and CLI start-up should not pay ~3 s.
    import torch

    from portraitforge.models.upscalers import UpscaleModel

TensorFn = Callable[["torch.Tensor"], "torch.Tensor"]
MIN_TILE = 32
MODEL_FILE_SUFFIXES = (".pth", ".safetensors", ".pt", ".ckpt")


def looks_like_model_path(name: str) -> bool:
    """An upscaler name that is a path to a user's model file rather than a registered name."""
    return name.lower().endswith(MODEL_FILE_SUFFIXES) or os.sep in name or "/" in name


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


# ---------------------------------------------------------------------------------------------------------------
# tiled inference


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into near-equal cores no longer than `tile` (no sliver at the end)."""
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _edge_weights(length: int, pad_lo: int, pad_hi: int, feather: int) -> np.ndarray:
    """1-D merge weights of one padded tile of `length` pixels whose core starts `pad_lo` pixels in and ends
    `pad_hi` pixels before the end (0: no neighbour on that side).

    Inside the core the weight is 1 and beyond `feather` pixels into the padding it is 0 (that context was only
    there to feed the network). Across the 2*feather band around each core edge it ramps linearly, and the ramps
    of two neighbours mirror each other, so all weights sum to exactly 1 (a partition of unity).
    """
    w = np.ones(length, dtype=np.float32)
    if pad_lo:
        i = np.arange(length, dtype=np.float32) + 0.5
        w = np.minimum(w, np.clip((i - (pad_lo - feather)) / (2 * feather), 0, 1) if feather else (i > pad_lo))
    if pad_hi:
        i = (length - np.arange(length, dtype=np.float32)) - 0.5
        w = np.minimum(w, np.clip((i - (pad_hi - feather)) / (2 * feather), 0, 1) if feather else (i > pad_hi))
    return w.astype(np.float32)


def run_tiled(fn: TensorFn, x: torch.Tensor, scale: int, tile: int, overlap: int, feather: int = 0) -> torch.Tensor:
    """Apply `fn` (1xCxhxw -> 1xCx(h*scale)x(w*scale)) over `x` in tiles; `tile <= 0` means one pass.

    Tile cores partition the image into near-equal parts no larger than `tile`. Each core is run with `overlap`
    pixels of real image context on every side that has a neighbour; that context is cut away again, except for
    a band of `feather` pixels (<= overlap) on both sides of each core edge, where neighbours are cross-faded.
    With `feather=0` the merge is a plain crop, which is exact when `overlap` covers the network's receptive
    field (SRVGGNetCompact: 17 px). RRDBNet sees much further, so it never is; the cross-fade then keeps the
    small remaining differences from forming a visible seam.
    """
    import torch

    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return fn(x)
    ys, xs = _spans(h, tile), _spans(w, tile)
    # Feather bands of neighbouring edges must not meet inside a core, or the weights would stop summing to 1.
    shortest = min(b - a for a, b in ys + xs)
    feather = max(0, min(feather, overlap, shortest // 2))
    out: torch.Tensor | None = None
    for row, (y0, y1) in enumerate(ys):
        for col, (x0, x1) in enumerate(xs):
            top = overlap if row > 0 else 0
            bottom = overlap if row < len(ys) - 1 else 0
            left = overlap if col > 0 else 0
            right = overlap if col < len(xs) - 1 else 0
            py0, py1, px0, px1 = y0 - top, min(h, y1 + bottom), x0 - left, min(w, x1 + right)
            py0, px0 = max(0, py0), max(0, px0)
            top, left, bottom, right = y0 - py0, x0 - px0, py1 - y1, px1 - x1
            result = fn(x[:, :, py0:py1, px0:px1])
            if out is None:
                out = result.new_zeros((1, result.shape[1], h * scale, w * scale))
            wy = _edge_weights((py1 - py0) * scale, top * scale, bottom * scale, feather * scale)
            wx = _edge_weights((px1 - px0) * scale, left * scale, right * scale, feather * scale)
            weight = torch.from_numpy(np.outer(wy, wx)).to(device=result.device, dtype=result.dtype)
            out[:, :, py0 * scale : py1 * scale, px0 * scale : px1 * scale] += result * weight
    assert out is not None
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    # CPU allocation failures surface as a RuntimeError from the allocator.
    return isinstance(exc, RuntimeError) and (
        "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower()
    )


def run_tiled_with_backoff(
    fn: TensorFn, x: torch.Tensor, scale: int, tile: int, overlap: int, feather: int = 0, min_tile: int = MIN_TILE
) -> tuple[torch.Tensor, int]:
    """`run_tiled`, halving the tile size after each out-of-memory error. Returns (output, tile size used)."""
    import torch

    size = tile if tile > 0 else 0
    while True:
        try:
            return run_tiled(fn, x, scale, size, overlap, feather), size
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            current = size if size > 0 else max(x.shape[-2:])
            if current // 2 < min_tile:
                raise OutOfMemoryError(f"out of memory while upscaling, even with {current}px tiles") from None
            size = current // 2
            if x.device.type == "cuda":
                torch.cuda.empty_cache()


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads for the block, then restore the previous value (no lasting global change).
    None or 0 leaves torch's setting alone. The one such switch: the upscaler and the dlib descriptor use it."""
    import torch

    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def image_to_tensor(image: ImageRGB, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None]
    return x.to(dtype).div_(255.0)


def tensor_to_image(y: torch.Tensor) -> ImageRGB:
    import torch

    out = y[0].float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8)
    return np.ascontiguousarray(out.permute(1, 2, 0).cpu().numpy())


@dataclass
class RealESRGANUpscaler:
    """Real-ESRGAN (or any spandrel SR model) as an `Upscaler` stage.

    `tile` is the core size in input pixels (0: whole image in one pass); `overlap` is the context added around
    each core and `feather` the cross-fade half-width at core edges (see `run_tiled`). The defaults keep the
    tiling tax under 1.2x for 512 px inputs while the embedded SRVGG net stays within 0.2/255 of a single
    pass. `threads` sets torch's intra-op threads during the call (None: leave torch's setting).
    """

    model: UpscaleModel
    name: str
    scale: int
    tile: int = 256
    overlap: int = 16
    feather: int = 4
    threads: int | None = None

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        device: str | torch.device = "auto",
        half: bool | None = None,
        tile: int = 256,
        overlap: int = 16,
        feather: int = 4,
        threads: int | None = None,
    ) -> RealESRGANUpscaler:
        """Embedded name (`realesrgan-x4plus`, ...) or a path to a spandrel-loadable `.pth`/`.safetensors`."""
        from portraitforge.models.upscalers import load_upscale_model

        model = load_upscale_model(name, device=device, half=half)
        return cls(model, name, model.scale, tile=tile, overlap=overlap, feather=feather, threads=threads)

    def params(self) -> dict[str, Any]:
        return {
            "upscaler": self.name,
            **self.model.params(),
            **fields_dict(self, "tile", "overlap", "feather"),
        }

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.descriptor(x)

    def upscale_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """1x3xHxW in [0,1] (model dtype/device) -> 1x3x(H*scale)x(W*scale) in [0,1]."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode(), torch_threads(self.threads):
            y, used = run_tiled_with_backoff(
                self._network, x, self.model.net_scale, self.tile, self.overlap, self.feather
            )
            if used != self.tile:
                self.tile = used  # remember the size that fits, so later calls do not hit the same error
            if self.model.downscale is not None:
                h, w = x.shape[-2:]
                y = F.interpolate(y.float(), size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
            return y

    def __call__(self, image: ImageRGB) -> ImageRGB:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BadInputError("upscaler input must be an RGB uint8 array of shape HxWx3")
        import torch

        with torch.inference_mode():
            x = image_to_tensor(image, self.model.device, self.model.dtype)
            return tensor_to_image(self.upscale_tensor(x))


def upscale_frame(upscaler: Upscaler, image: ImageRGB, max_output_pixels: int | None = None) -> ImageRGB:
    """Upscale a whole frame (not only face crops), refusing outputs above `max_output_pixels`."""
    h, w = image.shape[:2]
    if max_output_pixels is not None and h * w * upscaler.scale**2 > max_output_pixels:
        raise BadInputError(
            f"upscaling {w}x{h} by {upscaler.scale} gives {w * upscaler.scale}x{h * upscaler.scale}, "
            f"above the {max_output_pixels} pixel limit"
        )
    return upscaler(image)
