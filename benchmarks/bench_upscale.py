"""Real-ESRGAN upscaling: speed of the tiled stage against a bare spandrel call, CPU ms for 128->512 per model,
and sharpness against lanczos on real face crops.

    .venv/bin/python benchmarks/bench_upscale.py [--repeats 3] [--max-faces 6] [--out DIR] [--threads N]

Sections (medians; wall ms and process CPU ms, the latter being less sensitive to other load on the machine):

1. 128 -> 512 per embedded model: `RealESRGANUpscaler(uint8 image)` against `descriptor(tensor)` (spandrel's
   own call on the same, already converted tensor). Ratio goal <= 1.2.
2. Tiling tax: a 512 px tensor in 256 px tiles against one bare 512 px call (realesr-animevideov3), and a
   256 px tensor in 128 px tiles (realesrgan-x4plus-anime). The overlap makes the networks see more pixels;
   the expected area ratio is printed next to the measured one.
3. channels_last against contiguous on CPU (the stage uses channels_last there).
4. Sharpness on real faces: dlib detection + `align_face` at 128 px, upscaled x4 by lanczos and by each
   Real-ESRGAN; Laplacian variance ratio realesrgan / lanczos (median over faces). Also a referenced check:
   faces whose native crop is >= 256 px are aligned at 256 (ground truth), reduced to 64 and upscaled x4;
   we report PSNR to the ground truth and sharpness relative to it (1.0 = as sharp as the real photo).
   Faces: scikit-image's astronaut plus ../shared/faces when present.
5. Writes `<out>/upscale_side_by_side.png` (lanczos | realesrgan-x4plus) for one face crop.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from portraitforge.imageio import load_image, save_image
from portraitforge.models.realesrgan_ncnn import EMBEDDED_REALESRGAN
from portraitforge.refiners.align import align_face, native_crop_size
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.refiners.upscale import RealESRGANUpscaler, image_to_tensor
from portraitforge.samples import astronaut

MODELS = ["realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3"]
SHARED_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "faces"
MARGIN = 0.45


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall ms and median process-CPU ms of `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return float(np.median(walls)), float(np.median(cpus))


def timed_pair(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """`timed` for two functions, interleaved (a, b, a, b, ...) so that drifting machine load hits both alike."""
    a: list[tuple[float, float]] = []
    b: list[tuple[float, float]] = []
    for _ in range(repeats):
        a.append(timed(fn_a, 1))
        b.append(timed(fn_b, 1))
    return (
        (float(np.median([t[0] for t in a])), float(np.median([t[1] for t in a]))),
        (float(np.median([t[0] for t in b])), float(np.median([t[1] for t in b]))),
    )


def warm_up(upscaler: RealESRGANUpscaler) -> None:
    upscaler(np.zeros((16, 16, 3), dtype=np.uint8))  # initialise kernels without paying a full-size call


def gray_laplacian_variance(image: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F, ksize=3).var())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def lanczos_x4(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (4 * w, 4 * h), interpolation=cv2.INTER_LANCZOS4)


def section_speed(upscalers: dict[str, RealESRGANUpscaler], repeats: int) -> None:
    print("\n## 128 -> 512, stage vs bare spandrel call (median wall ms / CPU ms)")
    image = np.ascontiguousarray(astronaut()[20:148, 170:298])
    for name, up in upscalers.items():
        warm_up(up)
        x = image_to_tensor(image, up.model.device, up.model.dtype).contiguous(memory_format=torch.channels_last)

        def bare(up: RealESRGANUpscaler = up, x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                up.model.descriptor(x)

        (stage_w, stage_c), (bare_w, bare_c) = timed_pair(lambda up=up: up(image), bare, repeats)
        print(
            f"{name:26s} stage {stage_w:9.0f} ms ({stage_c:9.0f} cpu)  bare {bare_w:9.0f} ms ({bare_c:9.0f} cpu)"
            f"  ratio {stage_w / bare_w:.3f} wall, {stage_c / bare_c:.3f} cpu (goal <= 1.2)"
        )


def section_tiling(upscalers: dict[str, RealESRGANUpscaler], repeats: int) -> None:
    print("\n## tiling tax: tiled stage vs one bare call on the same tensor")
    cases = [("realesr-animevideov3", 512, 256), ("realesrgan-x4plus-anime", 256, 128)]
    for name, size, tile in cases:
        if name not in upscalers:
            continue
        up = upscalers[name]
        tiled = RealESRGANUpscaler(up.model, up.name, up.scale, tile=tile, overlap=up.overlap, feather=up.feather)
        image = cv2.resize(astronaut(), (size, size), interpolation=cv2.INTER_AREA)
        x = image_to_tensor(image, up.model.device, up.model.dtype).contiguous(memory_format=torch.channels_last)

        def bare(up: RealESRGANUpscaler = up, x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                up.model.descriptor(x)

        (tiled_w, tiled_c), (bare_w, bare_c) = timed_pair(lambda t=tiled, x=x: t.upscale_tensor(x), bare, repeats)
        n = size // tile
        covered = sum((tile + up.overlap * ((i > 0) + (i < n - 1))) for i in range(n)) ** 2 / size**2
        print(
            f"{name:26s} {size}px in {tile}px tiles, overlap {up.overlap}: tiled {tiled_w:8.0f} ms ({tiled_c:8.0f} cpu)"
            f"  bare {bare_w:8.0f} ms ({bare_c:8.0f} cpu)  ratio {tiled_w / bare_w:.3f} wall,"
            f" {tiled_c / bare_c:.3f} cpu; area ratio {covered:.3f}"
        )


def section_channels_last(upscalers: dict[str, RealESRGANUpscaler], repeats: int) -> None:
    print("\n## channels_last vs contiguous on CPU (bare model, interleaved runs)")
    for name, size in (("realesrgan-x4plus-anime", 128), ("realesr-animevideov3", 256)):
        if name not in upscalers:
            continue
        model = upscalers[name].model.descriptor.model
        x = torch.rand(1, 3, size, size)

        def run(fmt: torch.memory_format, model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            model.to(memory_format=fmt)
            with torch.inference_mode():
                model(x.contiguous(memory_format=fmt))

        run(torch.contiguous_format)
        run(torch.channels_last)
        (cw, cc), (lw, lc) = timed_pair(lambda: run(torch.contiguous_format), lambda: run(torch.channels_last), repeats)
        model.to(memory_format=torch.channels_last)
        print(
            f"{name:26s} {size}px contiguous {cw:7.0f} ms ({cc:7.0f} cpu)  channels_last {lw:7.0f} ms ({lc:7.0f} cpu)"
            f"  speed-up {cw / lw:.2f}x wall, {cc / lc:.2f}x cpu"
        )


def load_faces(analyzer: DlibFaceAnalyzer, max_faces: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, image, kps5) for the astronaut and up to `max_faces` shared photos (one per identity first)."""
    found: list[tuple[str, np.ndarray, np.ndarray]] = []
    sources: list[tuple[str, np.ndarray]] = [("astronaut", astronaut())]
    if SHARED_FACES.is_dir():
        files = sorted(SHARED_FACES.glob("person_*.jpg"), key=lambda p: (p.stem.split("_")[-1], p.stem))
        sources += [(p.stem, load_image(p).rgb) for p in files]
    else:
        print(f"(no {SHARED_FACES}: astronaut only)")
    for label, image in sources:
        if len(found) > max_faces:  # the astronaut plus `max_faces` photos
            break
        faces = analyzer.detect(image)
        if faces:
            face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            found.append((label, image, face.kps5))
    return found


def section_sharpness(upscalers: dict[str, RealESRGANUpscaler], max_faces: int, out_dir: Path) -> None:
    analyzer = DlibFaceAnalyzer.load()
    faces = load_faces(analyzer, max_faces)
    print(f"\n## sharpness on {len(faces)} real face crops, 128 -> 512 (Laplacian variance ratio vs lanczos)")
    ratios: dict[str, list[float]] = {name: [] for name in upscalers}
    side_by_side: np.ndarray | None = None
    for label, image, kps5 in faces:
        crop = align_face(image, kps5, 128, MARGIN).image
        lanczos = lanczos_x4(crop)
        base = gray_laplacian_variance(lanczos)
        row = []
        for name, up in upscalers.items():
            out = up(crop)
            ratio = gray_laplacian_variance(out) / base
            ratios[name].append(ratio)
            row.append(f"{name} {ratio:5.2f}")
            if side_by_side is None and name == "realesrgan-x4plus":
                side_by_side = np.concatenate([lanczos, np.full((512, 8, 3), 255, np.uint8), out], axis=1)
        print(f"{label:12s} " + "  ".join(row))
    for name, values in ratios.items():
        print(f"median sharpness ratio {name:26s} {np.median(values):.2f}  (min {min(values):.2f}, n={len(values)})")

    print("\n## referenced: native crop at 256 (ground truth) -> 64 -> x4; PSNR dB and sharpness / ground truth")
    ref_rows: dict[str, list[tuple[float, float]]] = {"lanczos": [], **{name: [] for name in upscalers}}
    for _label, image, kps5 in faces:
        if native_crop_size(kps5, MARGIN) < 256:
            continue
        truth = align_face(image, kps5, 256, MARGIN).image
        small = cv2.resize(truth, (64, 64), interpolation=cv2.INTER_AREA)
        truth_sharp = gray_laplacian_variance(truth)
        candidates = {"lanczos": lanczos_x4(small), **{name: up(small) for name, up in upscalers.items()}}
        for name, result in candidates.items():
            ref_rows[name].append((psnr(result, truth), gray_laplacian_variance(result) / truth_sharp))
    for name, rows in ref_rows.items():
        if rows:
            p, s = np.median([r[0] for r in rows]), np.median([r[1] for r in rows])
            print(f"{name:26s} PSNR {p:5.2f} dB  sharpness/truth {s:.2f}  (n={len(rows)})")

    if side_by_side is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "upscale_side_by_side.png"
        save_image(path, side_by_side)
        print(f"\nwrote {path} (left: lanczos x4, right: realesrgan-x4plus)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-faces", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=list(EMBEDDED_REALESRGAN))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/portraitforge_bench"))
    parser.add_argument("--skip", nargs="*", default=[], choices=["speed", "tiling", "layout", "sharpness"])
    args = parser.parse_args()

    print(f"torch {torch.__version__}, intra-op threads {args.threads or torch.get_num_threads()}")
    upscalers = {
        name: RealESRGANUpscaler.from_pretrained(name, device="cpu", threads=args.threads) for name in args.models
    }
    if "speed" not in args.skip:
        section_speed(upscalers, args.repeats)
    if "tiling" not in args.skip:
        section_tiling(upscalers, args.repeats)
    if "layout" not in args.skip:
        section_channels_last(upscalers, args.repeats)
    if "sharpness" not in args.skip:
        section_sharpness(upscalers, args.max_faces, args.out)


if __name__ == "__main__":
    main()
