"""Loading and saving images: validation, EXIF orientation, pixel limits, atomic writes, metadata."""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from portraitforge.atomic import atomic_write_bytes
from portraitforge.errors import BadInputError
from portraitforge.types import ImageRGB

DEFAULT_MAX_PIXELS = 64_000_000
SUPPORTED_INPUT_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
# zlib level 1: a 1024x1024 photo encodes in ~70 ms at +10% size, against ~350 ms at PIL's default 6
# (benchmarks/bench_save.py). Photos barely compress further, so the higher levels buy little.
PNG_COMPRESS_LEVEL = 1
METADATA_KEY = "portraitforge"
EXIF_IMAGE_DESCRIPTION = 0x010E


@dataclass(frozen=True)
class LoadedImage:
    rgb: ImageRGB
    alpha: np.ndarray | None  # uint8 H x W, kept so that RGBA inputs round-trip
    path: str | None
    source_format: str | None


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Open, validate and normalise an image file to RGB uint8 (plus alpha if it had one)."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: file not found")
    if p.is_dir():
        raise BadInputError(f"{p}: is a directory, expected an image file")
    if p.stat().st_size == 0:
        raise BadInputError(f"{p}: file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns at its own (global) bomb limit; we enforce ours from the header instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                if img.format not in SUPPORTED_INPUT_FORMATS:
                    raise BadInputError(f"{p}: unsupported image format {img.format}")
                width, height = img.size
                if width * height > max_pixels:
                    raise BadInputError(
                        f"{p}: {width}x{height} = {width * height} pixels exceeds the limit of "
                        f"{max_pixels} (raise --max-pixels if this is intended)"
                    )
                img.load()
                fmt = img.format
                rgb, alpha = pil_to_rgb(ImageOps.exif_transpose(img))
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{p}: rejected as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{p}: not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInputError(f"{p}: cannot decode image ({exc})") from None
    return LoadedImage(rgb=rgb, alpha=alpha, path=str(p), source_format=fmt)


def pil_to_rgb(img: Image.Image) -> tuple[ImageRGB, np.ndarray | None]:
    """Any Pillow mode -> (RGB uint8, optional alpha). 16-bit and float data are scaled, not clipped."""
    alpha: np.ndarray | None = None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            scaled = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        else:
            # 16-bit data: 65535 -> 255. Wider "I" data is clipped to the 16-bit range first.
            scaled = np.clip(arr, 0, 65535) / 257.0
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2)), None
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        arr = np.asarray(rgba)
        alpha = np.ascontiguousarray(arr[..., 3])
        rgb = np.ascontiguousarray(arr[..., :3])
        return rgb, alpha
    if mode == "CMYK":
        # Pillow's conversion ignores ICC profiles; good enough for face work.
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))), None
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))), None


def output_format_for(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return OUTPUT_FORMATS[suffix]
    except KeyError:
        raise BadInputError(f"{path}: unsupported output extension '{suffix}' (use .png, .jpg or .webp)") from None


def save_image(
    path: str | os.PathLike[str],
    rgb: ImageRGB,
    metadata: dict[str, Any] | None = None,
    alpha: np.ndarray | None = None,
    jpeg_quality: int = 95,
    text_chunks: dict[str, str] | None = None,
) -> Path:
    """Write atomically (temp file + fsync + rename) so that no partial file is ever visible.

    `metadata` is embedded as JSON: a PNG text chunk, or EXIF ImageDescription for JPEG/WebP.
    """
    target = Path(path)
    data = encode_image(rgb, output_format_for(target), metadata, alpha, jpeg_quality, text_chunks)
    return atomic_write_bytes(target, data)


def encode_image(
    rgb: ImageRGB,
    fmt: str,
    metadata: dict[str, Any] | None = None,
    alpha: np.ndarray | None = None,
    jpeg_quality: int = 95,
    text_chunks: dict[str, str] | None = None,
) -> bytes:
    """Encode to PNG/JPEG/WEBP bytes exactly as `save_image` writes them (lets a worker encode, a driver write)."""
    img = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if alpha is not None and fmt in ("PNG", "WEBP") and alpha.shape == rgb.shape[:2]:
        img.putalpha(Image.fromarray(alpha, "L"))
    payload = json.dumps(metadata, sort_keys=True, default=str) if metadata is not None else None
    kwargs: dict[str, Any] = {}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        if payload is not None:
            info.add_itxt(METADATA_KEY, payload)
        for key, value in (text_chunks or {}).items():
            info.add_text(key, value)
        kwargs["pnginfo"] = info
        kwargs["compress_level"] = PNG_COMPRESS_LEVEL
    else:
        if payload is not None:
            exif = Image.Exif()
            exif[EXIF_IMAGE_DESCRIPTION] = payload
            kwargs["exif"] = exif.tobytes()
        kwargs["quality"] = jpeg_quality
        if fmt == "WEBP":
            kwargs["method"] = 4
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read back the JSON that `save_image` embedded, or None."""
    with Image.open(path) as img:
        raw: Any = None
        if img.format == "PNG":
            raw = img.info.get(METADATA_KEY)
            if raw is None and hasattr(img, "text"):
                raw = img.text.get(METADATA_KEY)
        else:
            raw = img.getexif().get(EXIF_IMAGE_DESCRIPTION)
    if raw is None:
        return None
    result: dict[str, Any] = json.loads(raw)
    return result


def list_images(paths: list[Path]) -> list[Path]:
    """Expand folders (sorted, non-recursive) and keep files as given."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
