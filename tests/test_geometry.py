"""Alignment, output resolution and fit modes."""

from __future__ import annotations

import numpy as np
import pytest

from portraitforge.config import RefineConfig
from portraitforge.errors import ParameterError
from portraitforge.refiners.align import (
    align_face,
    alignment_matrix,
    template_points,
    transform_points,
    umeyama_similarity,
)
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.refiners.resize import Resolution, apply_resolution, fit_to_box, scale_for_output


def test_umeyama_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2)).astype(np.float32)
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (src @ (scale * rot).T + shift).astype(np.float32)
    m = umeyama_similarity(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-4)
    assert np.allclose(transform_points(src, m), dst, atol=1e-3)


@pytest.mark.parametrize(("size", "margin"), [(112, 0.0), (256, 0.45), (512, 1.0)])
def test_alignment_hits_the_template_and_inverts_exactly(
    analyzer: DlibFaceAnalyzer, astronaut_rgb: np.ndarray, size: int, margin: float
) -> None:
    face = analyzer.detect(astronaut_rgb)[0]
    crop = align_face(astronaut_rgb, face.kps5, size, margin)
    assert crop.image.shape == (size, size, 3)
    in_crop = transform_points(face.kps5, crop.matrix)
    # A similarity cannot fit five points exactly; the residual must be small relative to the crop.
    assert np.abs(in_crop - template_points(size, margin)).max() < 0.06 * size
    round_trip = transform_points(in_crop, crop.inverse)
    assert np.abs(round_trip - face.kps5).max() < 1e-3


def test_template_at_112_without_margin_is_arcface() -> None:
    assert np.allclose(template_points(112, 0.0)[0], [38.2946, 51.6963], atol=1e-4)
    m = alignment_matrix(template_points(112, 0.0), 112, 0.0)
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-4)


def test_resolution_parsing_and_errors() -> None:
    assert Resolution.parse("original") == Resolution()
    assert Resolution.parse("1024") == Resolution(long_side=1024)
    assert Resolution.parse("640x480") == Resolution(box=(640, 480))
    for bad in ["0x5", "huge", "-3", "100000", "12x"]:
        with pytest.raises(ValueError):
            Resolution.parse(bad)
    with pytest.raises(ParameterError, match="resolution"):
        RefineConfig.validated({"resolution": "0x5"})
    with pytest.raises(ParameterError, match="strength"):
        RefineConfig.validated({"strength": 2})


def test_fit_modes_keep_aspect_unless_stretch(astronaut_rgb: np.ndarray) -> None:
    wide = astronaut_rgb[:256]  # 256 x 512
    for fit in ("pad", "crop", "stretch"):
        out = apply_resolution(wide, Resolution.parse("300x300"), fit)  # type: ignore[arg-type]
        assert out.shape == (300, 300, 3)
    padded = apply_resolution(wide, Resolution.parse("300x300"), "pad")
    # Pad keeps the whole picture in the middle band, scaled 300/512, and reflects above/below it.
    assert np.array_equal(padded[75], padded[74 + 2]) is False
    content = scale_for_output(wide, Resolution.parse("300x300"), "pad")
    assert content.shape == (150, 300, 3)
    assert np.array_equal(fit_to_box(content, Resolution.parse("300x300"), "pad")[75:225], content)
    assert apply_resolution(wide, Resolution.parse("1024"), "pad").shape == (512, 1024, 3)
    assert apply_resolution(wide, Resolution(), "pad") is wide
