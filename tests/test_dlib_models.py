"""The embedded dlib models: the cached binary HOG detector must detect exactly like dlib's built-in one."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np

from portraitforge.models.dlib_models import load_frontal_face_detector


def detections(detector: object, image: np.ndarray) -> list[tuple[int, int, int, int, float, int]]:
    rects, scores, kinds = detector.run(image, 1, -0.5)  # type: ignore[attr-defined]
    return [
        (r.left(), r.top(), r.right(), r.bottom(), round(s, 9), k) for r, s, k in zip(rects, scores, kinds, strict=True)
    ]


def test_cached_detector_matches_builtin_and_rebuilds_a_damaged_cache(tmp_path: Path, t1_rgb: np.ndarray) -> None:
    builtin = detections(dlib.get_frontal_face_detector(), t1_rgb)
    assert len(builtin) >= 6

    first = load_frontal_face_detector(dlib, cache_dir=tmp_path)  # builds the cache
    (cached_file,) = tmp_path.glob("frontal_face_detector-*.svm")
    second = load_frontal_face_detector(dlib, cache_dir=tmp_path)  # loads it
    assert detections(first, t1_rgb) == builtin
    assert detections(second, t1_rgb) == builtin

    cached_file.write_bytes(cached_file.read_bytes()[:1000])  # truncated: its name no longer matches its hash
    rebuilt = load_frontal_face_detector(dlib, cache_dir=tmp_path)
    assert detections(rebuilt, t1_rgb) == builtin
    assert sorted(p.name for p in tmp_path.iterdir()) == [cached_file.name]
    assert len(cached_file.read_bytes()) > 1000


def test_unwritable_cache_falls_back_to_builtin(tmp_path: Path, t1_rgb: np.ndarray) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    detector = load_frontal_face_detector(dlib, cache_dir=blocker)
    assert detections(detector, t1_rgb) == detections(dlib.get_frontal_face_detector(), t1_rgb)
