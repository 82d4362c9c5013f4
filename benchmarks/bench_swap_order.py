"""Beyond 128 px: which inswapper order keeps the most detail — plain 128, swap-then-upscale,
upscale-then-swap, pixel boost — measured on real face crops.

What can and cannot be measured here. The real inswapper_128 weights are not available, so identity
(ArcFace cosine to the identity) cannot be measured meaningfully. What is measurable:
- detail retention: with a *pass-through* model of the inswapper signature the ideal swap returns the
  crop unchanged, so PSNR against the crop and the sharpness ratio (Laplacian variance, result / crop,
  inside the swapped region) isolate what each order's resampling chain loses or invents;
- agreement: with the synthetic swap model (a latent-dependent edit), how far each order's low-frequency
  edit departs from the plain 128 px edit (mean abs difference of Gaussian-blurred edits, in 8-bit levels).
  Large values mean the order changes *what* the model does, not only how sharp it is.

    .venv/bin/python benchmarks/bench_swap_order.py [--upscaler lanczos] [--upscaler realesrgan-x4plus]

Faces: scikit-image's astronaut (small face, crop ~272 px), the same photo at 2x (crop 512) and, when
../shared/faces exists, person_a_1 (crop 512).

Measured here (2-core CPU, lanczos x4): plain 128 35.6-41.1 dB / sharpness 0.29-0.67; swap->upscale
35.7-42.2 / 0.31-0.68; boost auto 45.8-51.0 / 0.66-0.86; upscale->boost 56.9-57.5 / 0.98-1.02; edit diff
<= 0.22 levels for every order. With realesrgan-x4plus as the upscaler (astronaut, partial run: the RRDB
net on a 2-core CPU took ~110 s per 128->512 call under load), swap->upscale gave 31.0 dB, sharpness 3.41
and an edit diff of 1.91: Real-ESRGAN invents texture on the swapped face (sharper than the target, and
it changes the edit), which is why the default enlarges the *target crop* before the swap instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onnx_fixtures import make_inswapper, make_passthrough_inswapper  # noqa: E402
from shared_data import faces_folder  # noqa: E402

from portraitforge.models.onnx_runtime import OnnxSessionPool  # noqa: E402
from portraitforge.pipelines.stage_registry import build_upscaler  # noqa: E402
from portraitforge.refiners.align import align_face, native_crop_size, transform_points  # noqa: E402
from portraitforge.refiners.detect import DlibFaceAnalyzer  # noqa: E402
from portraitforge.refiners.detect_insightface import ARCFACE_SPACE  # noqa: E402
from portraitforge.refiners.swap_inswapper import InswapperModel, InswapperSwapper  # noqa: E402
from portraitforge.refiners.upscale import LanczosUpscaler  # noqa: E402
from portraitforge.types import Identity  # noqa: E402

SHARED = faces_folder().path  # $PORTRAITFORGE_FACES or ../shared/faces


def _sharpness(image: np.ndarray, region: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F)[region].var())


def _psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    mse = float(((a.astype(np.float32) - b.astype(np.float32))[region] ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upscaler", action="append", default=None, help="upscaler name(s); default lanczos")
    args = parser.parse_args()
    names = args.upscaler or ["lanczos"]

    tmp = Path(tempfile.mkdtemp())
    pool = OnnxSessionPool()
    passthrough = InswapperModel.from_file(make_passthrough_inswapper(tmp / "pass.onnx"), pool)
    synthetic = InswapperModel.from_file(make_inswapper(tmp / "swap.onnx"), pool)
    dlib = DlibFaceAnalyzer.load()
    emb = np.random.default_rng(0).normal(size=512).astype(np.float32)
    identity = Identity(
        "x", {ARCFACE_SPACE: emb / np.linalg.norm(emb)}, np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2))
    )

    astronaut = np.ascontiguousarray(skimage.data.astronaut())
    photos = {
        "astronaut": astronaut,
        "astronaut x2": cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC),
    }
    if (SHARED / "person_a_1.jpg").is_file():
        photos["person_a_1"] = np.ascontiguousarray(cv2.imread(str(SHARED / "person_a_1.jpg"))[..., ::-1])

    upscalers = {}
    for name in names:
        up = LanczosUpscaler(scale=4) if name == "lanczos" else build_upscaler(name)
        up(np.zeros((64, 64, 3), np.uint8))  # warm-up (conversion / first-call costs)
        upscalers[name] = up

    def configs() -> list[tuple[str, dict[str, object]]]:
        out: list[tuple[str, dict[str, object]]] = [("plain 128", {"pixel_boost": 1}), ("boost auto", {})]
        for name, up in upscalers.items():
            out += [
                (f"swap->up[{name}]", {"pixel_boost": 1, "upscaler": up, "swap_order": "swap-upscale"}),
                (f"boost+swap->up[{name}]", {"upscaler": up, "swap_order": "swap-upscale"}),
                (f"up[{name}]->swap", {"pixel_boost": 1, "upscaler": up, "swap_order": "upscale-swap"}),
                (f"up[{name}]->boost", {"upscaler": up, "swap_order": "upscale-swap"}),
            ]
        return out

    print(f"{'face':<13} {'crop':>4} {'order':<28} {'PSNR dB':>8} {'sharp':>6} {'edit diff':>9} {'ms':>7}")
    for label, photo in photos.items():
        face = dlib.detect(photo)[0]
        size = native_crop_size(face.kps5, 0.45, maximum=512)
        crop = align_face(photo, face.kps5, size, 0.45)
        in_crop = replace(face, kps5=transform_points(face.kps5, crop.matrix), landmarks68=None)
        base_edit = None
        for cname, kwargs in configs():
            ident_out = InswapperSwapper(model=passthrough, **kwargs)(crop, in_crop, identity, 1.0)  # type: ignore[arg-type]
            start = time.perf_counter()
            swap_out = InswapperSwapper(model=synthetic, **kwargs)(crop, in_crop, identity, 1.0)  # type: ignore[arg-type]
            ms = (time.perf_counter() - start) * 1e3
            region = ident_out.mask > 0.9
            psnr = _psnr(ident_out.image, crop.image, region)
            sharp = _sharpness(ident_out.image, region) / max(_sharpness(crop.image, region), 1e-6)
            edit = cv2.GaussianBlur(swap_out.image.astype(np.float32) - crop.image, (0, 0), 4)
            if base_edit is None:
                base_edit = edit
            diff = float(np.abs(edit - base_edit)[region].mean())
            print(f"{label:<13} {size:>4} {cname:<28} {psnr:>8.2f} {sharp:>6.2f} {diff:>9.2f} {ms:>7.1f}")
    print("PSNR/sharp: pass-through model vs the crop (ideal: 99 dB, 1.00). edit diff: vs plain 128, 8-bit levels.")


if __name__ == "__main__":
    main()
