"""Similarity alignment to the ArcFace 5-point template, at any crop size and margin."""

from __future__ import annotations

import cv2
import numpy as np

from portraitforge.errors import BadInputError
from portraitforge.types import AlignedCrop, FloatArray, ImageRGB

# insightface's arcface_dst for a 112x112 crop.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def template_points(size: int, margin: float = 0.0) -> FloatArray:
    """The template scaled to a `size` crop; `margin` adds that fraction of the face on every side."""
    if size <= 0:
        raise ValueError("crop size must be positive")
    if margin < 0:
        raise ValueError("margin must be >= 0")
    unit = (ARCFACE_TEMPLATE_112 - 56.0) / 112.0  # centred, 1 = template width
    return (unit / (1.0 + 2.0 * margin) * size + size / 2.0).astype(np.float32)


def umeyama(src: FloatArray, dst: FloatArray, keep_precision: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, uniform scale, translation) in any dimension: dst ~ s * R @ src + t.

    The arithmetic follows skimage's `SimilarityTransform.estimate` step by step (insightface aligns with it, and
    the inswapper parity tests compare against insightface): with `keep_precision` the statistics are computed in
    the inputs' dtype (float32 keypoints stay float32), else in float64. Written out because that skimage API is
    deprecated (removed in 2.2) and warns on every call, and `cv2.estimateAffinePartial2D` is a robust
    (RANSAC/LMedS) estimator, not the exact LS fit.
    """
    src_a = np.asarray(src) if keep_precision else np.asarray(src, np.float64)
    dst_a = np.asarray(dst) if keep_precision else np.asarray(dst, np.float64)
    num, dim = src_a.shape
    src_mean, dst_mean = src_a.mean(axis=0), dst_a.mean(axis=0)
    src_demean, dst_demean = src_a - src_mean, dst_a - dst_mean
    a = dst_demean.T @ src_demean / num
    u, s, v = np.linalg.svd(a)
    rank = int(np.count_nonzero(s > s.max() * max(a.shape) * np.finfo(float).eps))
    if rank == 0:
        raise BadInputError("degenerate face keypoints (all points coincide)")
    d = np.ones((dim,), np.float64)
    if np.linalg.det(u) * np.linalg.det(v) < 0:  # a reflection: flip the smallest axis
        d[dim - 1] = -1
    rot = u @ np.diag(d) @ v
    var = src_demean.var(axis=0).sum()
    scale = float(1.0 / var * (s @ d)) if var > 0 else 1.0
    return scale, rot, dst_mean - scale * (rot @ src_mean.T)


def umeyama_similarity(src: FloatArray, dst: FloatArray) -> FloatArray:
    """The 2D least-squares similarity mapping src -> dst, as a 2x3 matrix."""
    scale, rot, t = umeyama(src, dst)
    m = np.zeros((2, 3), np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = t
    return m.astype(np.float32)


def invert_affine(matrix: FloatArray) -> FloatArray:
    return cv2.invertAffineTransform(matrix.astype(np.float64)).astype(np.float32)


def transform_points(points: FloatArray, matrix: FloatArray) -> FloatArray:
    pts = np.asarray(points, np.float64)
    return (pts @ matrix[:, :2].astype(np.float64).T + matrix[:, 2].astype(np.float64)).astype(np.float32)


def alignment_matrix(kps5: FloatArray, size: int, margin: float = 0.0) -> FloatArray:
    return umeyama_similarity(kps5, template_points(size, margin))


def align_face(image: ImageRGB, kps5: FloatArray, size: int, margin: float = 0.0) -> AlignedCrop:
    """Warp the face to a `size`x`size` crop. Pixels outside the frame are reflected, not black,
    so that colour statistics and blending near borders are not polluted."""
    matrix = alignment_matrix(kps5, size, margin)
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return AlignedCrop(image=crop, matrix=matrix, inverse=invert_affine(matrix))


def native_crop_size(kps5: FloatArray, margin: float, minimum: int = 128, maximum: int = 1024) -> int:
    """Crop size at which the face keeps its native pixel scale (no up- or downsampling)."""
    template = template_points(112, 0.0)
    eye_mouth_template = float(np.linalg.norm(template[:2].mean(0) - template[3:].mean(0)))
    eye_mouth = float(np.linalg.norm(kps5[:2].mean(0) - kps5[3:].mean(0)))
    eye_dist_t = float(np.linalg.norm(template[1] - template[0]))
    eye_dist = float(np.linalg.norm(kps5[1] - kps5[0]))
    scale = max(eye_mouth / eye_mouth_template, eye_dist / eye_dist_t)
    size = scale * 112.0 * (1.0 + 2.0 * margin)
    size = int(np.clip(size, minimum, maximum))
    return max(minimum, (size + 15) // 16 * 16)


def matrix_scale(matrix: np.ndarray) -> float:
    """Uniform scale of a 2x3 similarity (or the area scale of any affine): > 1 enlarges."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def upscale_matrix(factor: float) -> np.ndarray:
    """Pixel coordinates before -> after an `factor`x enlargement that keeps pixel *centres* aligned
    (cv2.resize, and the nearest/pixel-shuffle upsampling of ESRGAN-style nets): x' = f x + (f - 1) / 2."""
    shift = (factor - 1.0) / 2.0
    return np.array([[factor, 0.0, shift], [0.0, factor, shift]], np.float64)


def points_to_crop(points: FloatArray, matrix: FloatArray) -> FloatArray:
    """Mesh points (x, y, z) through a 2x3 similarity: x, y transformed, z scaled like them."""
    xy = transform_points(np.asarray(points)[:, :2], matrix)
    z = np.asarray(points)[:, 2:3] * matrix_scale(matrix)
    return np.concatenate([xy, z], axis=1).astype(np.float32)
