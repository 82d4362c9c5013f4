"""Output encoding cost: PNG zlib levels (PIL and OpenCV), JPEG and WebP, for a 1024x1024 photo.

Prints the median ms and size of each, and the ratio of the chosen PNG level against PIL's default (6).
Run: .venv/bin/python benchmarks/bench_save.py
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from portraitforge.imageio import PNG_COMPRESS_LEVEL, encode_image
from portraitforge.samples import astronaut


def median_ms(fn: Callable[[], bytes], repeats: int = 7) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        size = len(fn())
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), size


def pil_png(image: np.ndarray, level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def main() -> None:
    image = cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(image[..., ::-1])
    rows: dict[str, tuple[float, int]] = {}
    for level in (0, 1, 3, 6, 9):
        rows[f"PIL png level {level}"] = median_ms(lambda level=level: pil_png(image, level))
    for level in (1, 3):
        rows[f"cv2 png level {level}"] = median_ms(
            lambda level=level: cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()
        )
    metadata = {"parameters": {"strength": 1.0}, "software": "portraitforge"}
    for fmt in ("PNG", "JPEG", "WEBP"):
        rows[f"portraitforge {fmt}"] = median_ms(lambda fmt=fmt: encode_image(image, fmt, metadata))
    for name, (ms, size) in rows.items():
        print(f"{name:24s} {ms:7.1f} ms  {size / 1e6:6.2f} MB")
    chosen, default = rows[f"PIL png level {PNG_COMPRESS_LEVEL}"], rows["PIL png level 6"]
    print(
        f"chosen level {PNG_COMPRESS_LEVEL}: {default[0] / chosen[0]:.1f}x faster than level 6, "
        f"size x{chosen[1] / default[1]:.2f}"
    )


if __name__ == "__main__":
    main()
