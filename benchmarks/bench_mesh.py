"""Median cost of the face detectors (BlazeFace short/full range, YuNet) and of the 468-point face mesh.

    .venv/bin/python benchmarks/bench_mesh.py [--repeats 20] [--models ../shared/models]

Detectors run on insightface's t1.jpg (six faces) resized to 640 and 1024 px on its longer side, at their
default settings and, for BlazeFace, without tiles as well. The mesh runs on the first face of each of the
24 photos in ../shared/faces: one model call, and `fit` with 0, 1 and 2 refinements.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from timing import median_ms

from portraitforge.imageio import load_image
from portraitforge.models.mediapipe_face import BlazeFaceDetector, Detection, FaceMesh, YuNetDetector
from portraitforge.samples import insightface_image

SHARED = Path(__file__).resolve().parents[2] / "shared"


def resized(image: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", type=Path, default=SHARED / "models")
    args = parser.parse_args()
    models: Path = args.models

    short = models / "mediapipe" / "face_detection_short_range.tflite"
    full = models / "mediapipe" / "face_detection_full_range_sparse.tflite"
    detectors: dict[str, BlazeFaceDetector | YuNetDetector] = {
        "blazeface short (tiles 1, default)": BlazeFaceDetector.load(short),
        "blazeface short (tiles 2)": BlazeFaceDetector.load(short, tiles=2),
        "blazeface full (tiles 1)": BlazeFaceDetector.load(full, tiles=1),
        "blazeface full (tiles 2, default)": BlazeFaceDetector.load(full),
        "yunet (detect_max_side 1024, default)": YuNetDetector.load(
            models / "detection" / "face_detection_yunet_2026may.onnx"
        ),
        "yunet (detect_max_side 640)": YuNetDetector.load(
            models / "detection" / "face_detection_yunet_2026may.onnx", detect_max_side=640
        ),
    }
    group = load_image(insightface_image("t1.jpg")).rgb
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} CPUs: other processes inflate these times")
    print(f"detectors on t1.jpg (6 faces), median of {args.repeats}:")
    print(f"{'detector':40s} {'640 px':>16s} {'1024 px':>16s}")
    for name, detector in detectors.items():
        cells = []
        for side in (640, 1024):
            image = resized(group, side)
            found = len(detector.detect(image))
            cells.append(f"{median_ms(partial(detector.detect, image), args.repeats):7.2f} ms ({found})")
        print(f"{name:40s} {cells[0]:>16s} {cells[1]:>16s}")

    mesh = FaceMesh.load(models / "mediapipe" / "face_landmark.tflite")
    yunet = YuNetDetector.load(models / "detection" / "face_detection_yunet_2026may.onnx")
    photos = sorted((SHARED / "faces").glob("person_*.jpg"))
    cases = []
    for path in photos:
        image = load_image(path).rgb
        faces = yunet.detect(image)
        if faces:
            cases.append((image, faces[0]))
    if not cases:
        print("no photos in ../shared/faces: mesh timings skipped")
        return
    crop = np.zeros((1, 192, 192, 3), np.float32)
    print(f"\nface mesh on {len(cases)} photos (median over photos of the per-photo median):")
    rows: dict[str, Callable[[np.ndarray, Detection], object]] = {
        "model call only (192x192 tensor)": lambda image, face: mesh.model.run(crop),
        "one pass (crop + model + map back)": lambda image, face: mesh.run(image, mesh.initial_roi(face)),
        "fit, refine=0": lambda image, face: mesh.fit(image, face, refine=0),
        "fit, refine=1 (default)": lambda image, face: mesh.fit(image, face, refine=1),
        "fit, refine=2": lambda image, face: mesh.fit(image, face, refine=2),
    }
    for name, call in rows.items():
        per_photo = [median_ms(partial(call, image, face), max(3, args.repeats // 4)) for image, face in cases]
        print(f"{name:40s} {statistics.median(per_photo):7.2f} ms")


if __name__ == "__main__":
    main()
