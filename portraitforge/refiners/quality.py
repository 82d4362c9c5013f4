"""Grading a refined face: identity distances, sharpness and a seam score along the mask edge."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from portraitforge.types import FaceQuality, FloatArray, ImageRGB


@dataclass(frozen=True)
class QualityThresholds:
    """A result is LOW_QUALITY when any of these is crossed (README documents them)."""

    max_identity_distance: float = 0.6  # dlib's same-person threshold
    max_seam_score: float = 2.5  # gradient across the mask edge vs. around it
    min_sharpness_ratio: float = 0.2  # result face sharpness / target face sharpness
    min_landmarks_confidence: float = 0.3
    # A face less sharp than the target is only a defect when the swap *enlarged* its source pixels: a
    # clean-shaven identity on a bearded, bespectacled target is legitimately smoother, not blurred.
    min_blurring_source_scale: float = 1.25

    def problems(self, q: FaceQuality, landmarks_confidence: float) -> list[str]:
        found = []
        if q.grader is not None:
            # The independent recogniser decides when it is present: the engine's own space can be fooled.
            g = q.grader
            if g.identity_similarity < g.threshold:
                found.append(f"{g.model} identity similarity {g.identity_similarity:.2f} < {g.threshold}")
            elif g.identity_similarity <= g.original_similarity:
                found.append(
                    f"{g.model} still sees the original face ({g.original_similarity:.2f} >= "
                    f"{g.identity_similarity:.2f} for the identity)"
                )
        elif q.identity_distance is not None and q.identity_distance > self.max_identity_distance:
            found.append(f"identity distance {q.identity_distance:.3f} > {self.max_identity_distance}")
        if q.seam_score > self.max_seam_score:
            found.append(f"seam score {q.seam_score:.2f} > {self.max_seam_score}")
        ratio = q.sharpness / q.target_sharpness if q.target_sharpness > 0 else 1.0
        if ratio < self.min_sharpness_ratio and q.source_scale > self.min_blurring_source_scale:
            found.append(
                f"sharpness ratio {ratio:.2f} < {self.min_sharpness_ratio}: source pixels enlarged "
                f"{q.source_scale:.1f}x (use a larger identity photo or an upscaler)"
            )
        if landmarks_confidence < self.min_landmarks_confidence:
            found.append(f"landmark confidence {landmarks_confidence:.2f} < {self.min_landmarks_confidence}")
        return found


def _gray(image: ImageRGB) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def laplacian_variance(image: ImageRGB, region: np.ndarray) -> float:
    sel = region > 0
    if not sel.any():
        return 0.0
    lap = cv2.Laplacian(_gray(image), cv2.CV_32F, ksize=3)
    return float(lap[sel].var())


def seam_score(image: ImageRGB, mask: np.ndarray) -> float:
    """Mean gradient magnitude on the mask's edge divided by that in bands just inside and outside.

    About 1 means the edge is as smooth as its neighbourhood; a visible seam pushes it well above.
    """
    binary = (mask > 0.5).astype(np.uint8)
    if binary.sum() < 64:
        return 1.0
    gray = cv2.GaussianBlur(_gray(image), (3, 3), 0)
    grad = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.morphologyEx(binary, cv2.MORPH_GRADIENT, kernel) > 0
    # The comparison band reaches well past the 2 px excluded around the edge, even for small faces
    # (a 5 px band used to be swallowed whole by the exclusion, scoring every small face 1.0).
    k = max(13, int(np.sqrt(binary.sum()) * 0.08) | 1)
    big = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    band = (cv2.dilate(binary, big) - cv2.erode(binary, big)) > 0
    around = band & ~cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    if not edge.any() or not around.any():
        return 1.0
    return float(grad[edge].mean() / (grad[around].mean() + 1e-3))


def grade_face(
    result: ImageRGB,
    target: ImageRGB,
    frame_mask: np.ndarray,
    identity_distance: float | None,
    original_distance: float | None,
    source_scale: float = 1.0,
) -> FaceQuality:
    """`frame_mask` is the blended region (float 0..1) in frame coordinates."""
    face_region = frame_mask > 0.5
    return FaceQuality(
        identity_distance=identity_distance,
        original_distance=original_distance,
        sharpness=laplacian_variance(result, face_region),
        target_sharpness=laplacian_variance(target, face_region),
        seam_score=seam_score(result, frame_mask),
        source_scale=source_scale,
    )


def warp_mask_to_frame(crop_mask: FloatArray, inverse: FloatArray, frame_shape: tuple[int, ...]) -> np.ndarray:
    h, w = frame_shape[:2]
    return cv2.warpAffine(
        crop_mask.astype(np.float32),
        inverse.astype(np.float64),
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
