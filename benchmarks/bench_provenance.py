"""Provenance figures: watermark robustness (ours vs the plain imwatermark methods), PSNR, false detections,
the cost of watermark + C2PA manifest against a 1024x1024 swap, and the NSFW gate's time per image.

Corpus: every photo of ../shared/faces (when present) and the wheels' photos (insightface data/images, skimage
astronaut); robustness rows use those at least 256 px on the short side (imwatermark's own minimum).
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_provenance.py [--quick]
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from timing import median_ms

from portraitforge.imageio import encode_image, load_image
from portraitforge.provenance.credentials import SignerConfig
from portraitforge.provenance.stamp import ProvenanceOptions, Signer, stamp_image
from portraitforge.provenance.watermark import WatermarkPayload, decode, embed, psnr
from portraitforge.samples import astronaut, insightface_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "faces"
MIN_SIDE = 256


def corpus() -> list[Path]:
    from skimage import data

    folder = insightface_image("t1.jpg").parent
    wheels = sorted(folder.glob("*.jpg")) + [
        folder / "Tom_Hanks_54745.png",
        Path(data.__file__).parent / "astronaut.png",
    ]
    return sorted(SHARED.glob("*.jpg")) + wheels


def reencode(rgb: np.ndarray, fmt: str, **kwargs: Any) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **kwargs)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def attacks(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]
    top, left, bottom, right = int(0.07 * h), int(0.07 * w), h - int(0.03 * h), w - int(0.03 * w)
    return {
        "as written": rgb,
        "JPEG q75": reencode(rgb, "JPEG", quality=75),
        "resize 0.5x": np.asarray(Image.fromarray(rgb).resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "crop 10%": rgb[top:bottom, left:right],
        "PNG->WebP": reencode(rgb, "WEBP"),
    }


def imwatermark_method(method: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], bool]]:
    """The plain library (SDXL's choice), 48 bits, BGR in and out as it expects."""
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    bits = [int(b) for b in np.random.default_rng(0).integers(0, 2, 48)]

    def mark(rgb: np.ndarray) -> np.ndarray:
        encoder = WatermarkEncoder()
        encoder.set_watermark("bits", bits)
        return np.ascontiguousarray(encoder.encode(np.ascontiguousarray(rgb[..., ::-1]), method)[..., ::-1])

    def found(rgb: np.ndarray) -> bool:
        if min(rgb.shape[:2]) < 256:  # the library refuses smaller images
            return False
        return [
            int(b) for b in WatermarkDecoder("bits", 48).decode(np.ascontiguousarray(rgb[..., ::-1]), method)
        ] == bits

    return mark, found


def ours() -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], bool]]:
    payload = WatermarkPayload.new("swap")

    def found(rgb: np.ndarray) -> bool:
        reading = decode(rgb)
        return reading is not None and reading.payload == payload

    return (lambda rgb: embed(rgb, payload)), found


def robustness(photos: list[np.ndarray]) -> None:
    methods = {"portraitforge": ours()}
    try:
        for name in ("dwtDct", "dwtDctSvd"):
            methods[f"imwatermark {name}"] = imwatermark_method(name)
    except ImportError:
        print("(imwatermark not installed: library rows skipped)")
    print(f"\nwatermark decoded, {len(photos)} photos >= {MIN_SIDE} px")
    header = list(attacks(photos[0]))
    print(f"{'method':24s}" + "".join(f"{h:>13s}" for h in header) + "   PSNR min/median")
    for name, (mark, found) in methods.items():
        counts = dict.fromkeys(header, 0)
        psnrs = []
        for rgb in photos:
            marked = mark(rgb)
            psnrs.append(psnr(rgb, marked))
            for attack, image in attacks(marked).items():
                counts[attack] += int(found(image))
        cells = "".join(f"{100 * counts[h] / len(photos):12.0f}%" for h in header)
        print(f"{name:24s}{cells}   {min(psnrs):.1f} / {statistics.median(psnrs):.1f} dB")


def overhead(quick: bool) -> None:
    """Watermark + C2PA manifest against a 1024x1024 swap (mesh engine, the default) plus its plain save."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from provenance_fixtures import make_test_signer

    from portraitforge.config import RefineConfig
    from portraitforge.pipelines.refine import RefinePipeline

    target = cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    pipe = RefinePipeline.from_config(RefineConfig())
    identity = pipe.identity_from_image(load_image(insightface_image("t1.jpg")).rgb, "t1", source="t1.jpg")
    repeats = 2 if quick else 3
    swap_ms = median_ms(lambda: pipe(target, identity), repeats, warmup=False)
    image = pipe(target, identity).image
    assert image is not None
    with tempfile.TemporaryDirectory() as folder:
        files = make_test_signer(Path(folder))
        signer = Signer(SignerConfig(files.chain, files.key))
        metadata = {"parameters": pipe.params()}
        plain = median_ms(lambda: encode_image(image, "PNG", metadata), warmup=False)
        marked = median_ms(lambda: stamp_image(image, "PNG", "swap", ProvenanceOptions(), metadata), warmup=False)
        signed = median_ms(
            lambda: stamp_image(image, "PNG", "swap", ProvenanceOptions(signer=signer), metadata), warmup=False
        )
    total = swap_ms + plain
    print("\n1024x1024 swap (mesh engine) and its PNG save, median ms")
    print(f"swap {swap_ms:.0f}  plain save {plain:.0f}  watermark+save {marked:.0f}  watermark+C2PA+save {signed:.0f}")
    print(f"added by the watermark: {100 * (marked - plain) / total:.1f}%  by watermark + manifest: "
          f"{100 * (signed - plain) / total:.1f}% of swap + save (limit 15%)")  # fmt: skip
    print(f"decode (inspect) of that output: {median_ms(lambda: decode(image), 3, warmup=False):.0f} ms")


def nsfw_time(paths: list[Path]) -> None:
    from portraitforge.provenance.nsfw import NsfwGate, load_detector

    start = time.perf_counter()
    load_detector()
    load_ms = (time.perf_counter() - start) * 1e3
    gate = NsfwGate(policy="flag")
    times, flagged = [], []
    for path in paths:
        rgb = load_image(path).rgb
        start = time.perf_counter()
        if gate.detect(rgb):
            flagged.append(path.name)
        times.append((time.perf_counter() - start) * 1e3)
    print(f"\nNSFW gate (nudenet 320n, onnxruntime CPU): model load {load_ms:.0f} ms once, "
          f"{statistics.median(times):.0f} ms median per image, {len(flagged)} of {len(paths)} photos flagged "
          f"{flagged if flagged else ''}")  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv
    paths = corpus()
    originals = [load_image(p).rgb for p in paths]
    false = [p.name for p, rgb in zip(paths, originals, strict=True) if decode(rgb) is not None]
    print(f"false detections on {len(paths)} unwatermarked originals: {len(false)} {false if false else ''}")
    robustness([rgb for rgb in originals if min(rgb.shape[:2]) >= MIN_SIDE])
    overhead(quick)
    nsfw_time(paths)


if __name__ == "__main__":
    main()
