"""Quality measures on real photos: a hard paste scores a seam at any face size, a seamless one does not;
a face is only called soft when the swap enlarged its source pixels."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from portraitforge.demo import identity_photo
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.refiners.quality import QualityThresholds, laplacian_variance, seam_score
from portraitforge.types import FaceQuality, Status


@pytest.mark.parametrize("radius", [25, 45, 80, 160])
def test_seam_score_flags_a_hard_paste_at_every_size(astronaut_rgb: np.ndarray, radius: int) -> None:
    image = cv2.resize(astronaut_rgb, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.circle(mask, (440, 260), radius, 1.0, -1)
    shifted = np.clip(image.astype(int) + 45, 0, 255).astype(np.uint8)
    hard = np.where(mask[..., None] > 0.5, shifted, image)
    assert seam_score(hard, mask) > 2.5
    # The same brightening faded in smoothly (no edge at the mask boundary) is not a seam.
    soft_alpha = cv2.GaussianBlur(mask, (0, 0), radius / 2.5)[..., None]
    soft = np.clip(image * (1 - soft_alpha) + shifted * soft_alpha, 0, 255).astype(np.uint8)
    assert seam_score(soft, mask) < 1.6
    assert seam_score(image, mask) < 1.6


def test_laplacian_variance_drops_with_blur(astronaut_rgb: np.ndarray) -> None:
    region = np.ones(astronaut_rgb.shape[:2], np.uint8)
    blurred = cv2.GaussianBlur(astronaut_rgb, (0, 0), 2)
    assert laplacian_variance(blurred, region) < 0.2 * laplacian_variance(astronaut_rgb, region)


def test_smoothness_alone_is_not_low_quality_but_enlarged_source_pixels_are() -> None:
    """A clean-shaven identity on a bearded target is smoother than the target without being blurred."""
    thresholds = QualityThresholds()
    smooth = FaceQuality(0.4, 0.8, sharpness=100.0, target_sharpness=2000.0, seam_score=1.0, source_scale=1.0)
    assert thresholds.problems(smooth, landmarks_confidence=1.0) == []
    enlarged = replace(smooth, source_scale=2.0)
    (problem,) = thresholds.problems(enlarged, landmarks_confidence=1.0)
    assert "sharpness ratio 0.05" in problem and "enlarged 2.0x" in problem


def test_small_identity_photo_is_flagged_as_soft(
    pipeline: RefinePipeline, astronaut_rgb: np.ndarray, analyzer: DlibFaceAnalyzer
) -> None:
    """The demo's identity at full size is painted in at its own scale (OK); at half size its pixels are
    enlarged ~1.7x and the face comes out soft: LOW_QUALITY, with the reason and the fix in the message."""
    photo = identity_photo(analyzer)
    full = pipeline(astronaut_rgb, pipeline.identity_from_image(photo, "full"))
    assert full.report.status is Status.OK, full.report.message
    assert full.report.faces[0].quality is not None and full.report.faces[0].quality.source_scale < 1.25

    half_photo = cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    half = pipeline(astronaut_rgb, pipeline.identity_from_image(half_photo, "half"))
    quality = half.report.faces[0].quality
    assert quality is not None and quality.source_scale > 1.5
    assert half.report.status is Status.LOW_QUALITY and "enlarged" in half.report.message
    assert half.image is not None and half.image.shape == astronaut_rgb.shape  # flagged, still delivered
