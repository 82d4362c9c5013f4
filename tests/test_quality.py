"""Quality measures on real photos: a hard paste scores a seam at any face size, a seamless one does not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from portraitforge.refiners.quality import laplacian_variance, seam_score


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
