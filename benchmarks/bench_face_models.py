"""Median cost of the TFLite face models on the real photos in ../shared/faces.

    .venv/bin/python benchmarks/bench_face_models.py [--repeats 3] [--threads N] [--overlays DIR]

MobileFaceNet is reported per face (alignment included) for single calls and for `embed_many` (the file's
batch is fixed at 2, so a single face pays for a padded second one). The parser and the hair matte are
per call (crop warp and decoding included), with the bare model call beside it. `--overlays DIR` writes
parsing_<photo>.png (class colours, left) and hair matte (red, right) for three photos.
Exits 0 with a message when ../shared/models or ../shared/faces is missing.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from portraitforge.imageio import load_image
from portraitforge.models.face_parsing import FaceClass, FaceParser
from portraitforge.models.hair_matte import HairMatte
from portraitforge.models.mobilefacenet import MobileFaceNet
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import Face, ImageRGB

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODELS = SHARED / "models"
FACES = SHARED / "faces"
OVERLAY_PHOTOS = ("person_a_1.jpg", "person_e_1.jpg", "person_g_2.jpg")


def median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall ms, median process CPU ms) per call after a warm-up: XNNPACK packs weights on the first
    call, and on a shared machine wall time is inflated by other processes while CPU time is not."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append((time.perf_counter() - w0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def palette() -> np.ndarray:
    """Distinct colours for the classes one looks for: skin, hair, neck, cloth and the features."""
    colours = {
        FaceClass.SKIN: (255, 205, 160),
        FaceClass.L_BROW: (140, 80, 20),
        FaceClass.R_BROW: (140, 80, 20),
        FaceClass.L_EYE: (0, 120, 255),
        FaceClass.R_EYE: (0, 120, 255),
        FaceClass.EYE_G: (0, 255, 0),
        FaceClass.L_EAR: (255, 140, 0),
        FaceClass.R_EAR: (255, 140, 0),
        FaceClass.EAR_R: (255, 255, 0),
        FaceClass.NOSE: (255, 40, 40),
        FaceClass.MOUTH: (120, 0, 0),
        FaceClass.U_LIP: (255, 0, 150),
        FaceClass.L_LIP: (255, 0, 150),
        FaceClass.NECK: (0, 200, 200),
        FaceClass.NECK_L: (255, 215, 0),
        FaceClass.CLOTH: (90, 90, 200),
        FaceClass.HAIR: (170, 0, 255),
        FaceClass.HAT: (120, 140, 0),
    }
    table = np.zeros((len(FaceClass), 3), np.uint8)
    for cls, colour in colours.items():
        table[cls] = colour
    return table


def write_overlay(path: Path, rgb: ImageRGB, face: Face, parser: FaceParser, hair: HairMatte) -> None:
    labels = parser.parse(rgb, face.box).labels_full(rgb.shape)
    parsed = (0.45 * rgb + 0.55 * palette()[labels]).astype(np.uint8)
    alpha = hair.matte(rgb, face.box).matte_full(rgb.shape)[..., None]
    matted = (rgb * (1 - alpha) + np.array([255.0, 0.0, 0.0]) * alpha).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([parsed, matted], axis=1), cv2.COLOR_RGB2BGR))


def main() -> int:
    parser_args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_args.add_argument("--repeats", type=int, default=3, help="timed calls per photo")
    parser_args.add_argument("--threads", type=int, default=None, help="TFLite threads (default: up to 4)")
    parser_args.add_argument("--overlays", type=Path, default=None, help="write parsing_*.png overlays here")
    args = parser_args.parse_args()

    paths = {
        "mobilefacenet": MODELS / "recognition" / "MobileFaceNet.tflite",
        "parser": MODELS / "parsing" / "bisenetv2_celebamaskhq_448x448_integer_quant.tflite",
        "hair": MODELS / "parsing" / "hair_segmentation.tflite",
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing or not (FACES / "identities.csv").is_file():
        print(f"skipped: test models or photos not available ({', '.join(missing) or FACES})")
        return 0

    mfn = MobileFaceNet.load(paths["mobilefacenet"], num_threads=args.threads)
    parser = FaceParser.load(paths["parser"], num_threads=args.threads)
    hair = HairMatte.load(paths["hair"], num_threads=args.threads)
    analyzer = DlibFaceAnalyzer.load()
    with open(FACES / "identities.csv") as handle:
        names = [row["file"] for row in csv.DictReader(handle)]
    photos: list[tuple[str, ImageRGB, Face]] = []
    for name in names:
        rgb = load_image(FACES / name).rgb
        faces = analyzer.detect(rgb)
        if faces:
            photos.append((name, rgb, max(faces, key=lambda f: f.area)))

    items = [(rgb, face.kps5) for _, rgb, face in photos]
    rows: dict[str, list[tuple[float, float]]] = {
        "mobilefacenet, 1 face/call": [median_ms(partial(mfn.embed, r, f.kps5), args.repeats) for _, r, f in photos],
        "face parser, per call": [median_ms(partial(parser.parse, r, f.box), args.repeats) for _, r, f in photos],
        "hair matte, per call": [median_ms(partial(hair.matte, r, f.box), args.repeats) for _, r, f in photos],
    }
    wall, cpu = median_ms(partial(mfn.embed_many, items), args.repeats)
    rows["mobilefacenet, embed_many per face"] = [(wall / len(items), cpu / len(items))]
    parse_input = np.zeros((1, parser.size, parser.size, 3), np.float32)
    hair_input = np.zeros((1, hair.size, hair.size, 4), np.float32)
    rows["face parser, bare model call"] = [median_ms(partial(parser.model.run, parse_input), 3 * args.repeats)]
    rows["hair matte, bare model call"] = [median_ms(partial(hair.model.run, hair_input), 3 * args.repeats)]

    print(
        f"{len(photos)} photos, cpus={os.cpu_count()}, threads={args.threads or 'default'}, "
        f"load_avg={os.getloadavg()[0]:.2f}"
    )
    for label, values in rows.items():
        walls = statistics.median(v[0] for v in values)
        cpus = statistics.median(v[1] for v in values)
        print(f"{label:38s} {walls:7.1f} ms wall  {cpus:7.1f} ms cpu")

    if args.overlays is not None:
        args.overlays.mkdir(parents=True, exist_ok=True)
        for name, rgb, face in photos:
            if name in OVERLAY_PHOTOS:
                out = args.overlays / f"parsing_{Path(name).stem}.png"
                write_overlay(out, rgb, face, parser, hair)
                print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
