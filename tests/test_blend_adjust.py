"""Blend and adjust stages on real photos: ROI-only writes, border faces, no colour shift, neutral defaults."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from portraitforge.refiners.adjust import FaceAdjuster
from portraitforge.refiners.align import align_face
from portraitforge.refiners.blend import BLEND_MODES, FaceBlender
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import AlignedCrop, ImageRGB


def _face_crop(analyzer: DlibFaceAnalyzer, image: ImageRGB, size: int = 256) -> tuple[AlignedCrop, np.ndarray]:
    face = max(analyzer.detect(image), key=lambda f: f.area)
    crop = align_face(image, face.kps5, size, 0.45)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    r = np.hypot(xx - size / 2, yy - size / 2) / (size * 0.28)
    mask = np.clip(1.5 - r, 0.0, 1.0).astype(np.float32)  # soft disc over the face
    return crop, mask


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blending_the_unchanged_crop_gives_the_frame_back(
    mode: str, analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    """A crop that is the frame's own pixels must come back (up to warp interpolation): no colour shift."""
    crop, mask = _face_crop(analyzer, astronaut_rgb)
    out = FaceBlender(mode=mode)(astronaut_rgb, crop.image, mask, crop.inverse)  # type: ignore[arg-type]
    diff = np.abs(out.astype(int) - astronaut_rgb.astype(int))
    assert diff.mean(axis=(0, 1)).max() < 1.0, diff.mean(axis=(0, 1))
    assert np.percentile(diff, 99) <= 25


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_blend_writes_only_near_the_face(mode: str, analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray) -> None:
    crop, mask = _face_crop(analyzer, astronaut_rgb)
    painted = np.full_like(crop.image, (40, 160, 60))
    out = FaceBlender(mode=mode)(astronaut_rgb, painted, mask, crop.inverse)  # type: ignore[arg-type]
    changed = np.abs(out.astype(int) - astronaut_rgb.astype(int)).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    face_box = cv2.transform(np.array([[[0, 0], [256, 256]]], np.float32), crop.inverse)[0]
    assert changed.sum() > 1000
    assert xs.min() >= face_box[0, 0] - 20 and xs.max() <= face_box[1, 0] + 20
    assert ys.min() >= face_box[0, 1] - 20 and ys.max() <= face_box[1, 1] + 20
    centre = cv2.transform(np.array([[[128, 128]]], np.float32), crop.inverse)[0, 0].astype(int)
    if mode not in ("poisson", "poisson-mixed"):  # poisson keeps the frame's colour by design
        assert np.abs(out[centre[1], centre[0]].astype(int) - (40, 160, 60)).max() <= 3


@pytest.mark.parametrize("mode", BLEND_MODES)
@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_faces_touching_the_border_blend_without_error(
    mode: str, corner: str, analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray
) -> None:
    """The face is cut by the frame edge: cv2.seamlessClone would assert; the padded ROI handles it."""
    face = max(analyzer.detect(astronaut_rgb), key=lambda f: f.area)
    x0, y0, x1, y1 = (int(v) for v in face.box)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    frame = astronaut_rgb[cy:, cx:] if corner == "top-left" else astronaut_rgb[: cy + 1, : cx + 1]
    frame = np.ascontiguousarray(frame)
    # The crop is aligned on the uncut photo's keypoints, shifted into the cut frame.
    kps = face.kps5 - (np.array([cx, cy], np.float32) if corner == "top-left" else 0)
    crop = align_face(frame, kps, 256, 0.45)
    yy, xx = np.mgrid[:256, :256].astype(np.float32)
    mask = np.clip(1.5 - np.hypot(xx - 128, yy - 128) / 72, 0, 1).astype(np.float32)
    painted = cv2.GaussianBlur(crop.image, (0, 0), 3)
    out = FaceBlender(mode=mode)(frame, painted, mask, crop.inverse)  # type: ignore[arg-type]
    assert out.shape == frame.shape and out.dtype == np.uint8
    changed = np.abs(out.astype(int) - frame.astype(int)).max(axis=2) > 2
    assert changed.sum() > 200  # the in-frame part of the face was written
    edge = out[0] if corner == "top-left" else out[-1]
    assert np.isfinite(edge.astype(float)).all()


def test_adjust_defaults_are_neutral(astronaut_rgb: np.ndarray) -> None:
    mask = np.ones(astronaut_rgb.shape[:2], np.float32)
    assert FaceAdjuster()(astronaut_rgb, mask) is astronaut_rgb


def test_adjustments_act_only_inside_the_mask(analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray) -> None:
    crop, mask = _face_crop(analyzer, astronaut_rgb)
    image = crop.image
    inside, outside = mask > 0.99, mask == 0

    def lab(img: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)

    brighter = FaceAdjuster(brightness=0.3)(image, mask)
    assert lab(brighter)[..., 0][inside].mean() > lab(image)[..., 0][inside].mean() + 10
    np.testing.assert_array_equal(brighter[outside], image[outside])

    duller = FaceAdjuster(saturation=-0.8)(image, mask)
    chroma = np.abs(lab(duller)[..., 1:] - 128)[inside].mean()
    assert chroma < 0.5 * np.abs(lab(image)[..., 1:] - 128)[inside].mean()
    np.testing.assert_array_equal(duller[outside], image[outside])

    flatter = FaceAdjuster(contrast=-0.5)(image, mask)
    assert lab(flatter)[..., 0][inside].std() < 0.85 * lab(image)[..., 0][inside].std()

    smooth = FaceAdjuster(smoothing=1.0)(image, mask)
    lap = lambda img: cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_32F)  # noqa: E731
    assert np.abs(lap(smooth)[inside]).mean() < 0.9 * np.abs(lap(image)[inside]).mean()
    np.testing.assert_array_equal(smooth[outside], image[outside])
