"""Embedded swap engine: a landmark-driven piecewise-affine warp of the identity's face onto the
target's geometry, LAB colour transfer from the skin region, mouth handling and a feathered mask.

Works on aligned crops (see `align.py`), so its cost depends on the face, not the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from portraitforge.refiners.align import matrix_scale, transform_points, umeyama_similarity
from portraitforge.types import AlignedCrop, Face, FloatArray, Identity, ImageRGB, SwapOutput, fields_dict

JAW = list(range(0, 17))
BROWS = list(range(17, 27))
NOSE = list(range(27, 36))
LEFT_EYE = list(range(36, 42))
RIGHT_EYE = list(range(42, 48))
OUTER_LIPS = list(range(48, 60))
INNER_LIPS = list(range(60, 68))
MOUTH = OUTER_LIPS + INNER_LIPS
MaskShape = Literal["hull", "features"]

# Mouth openness (inner-lip gap / mouth width) above which a mouth counts as open.
MOUTH_OPEN_RATIO = 0.12
# Skin chroma spread (LAB a/b std) below which an identity photo counts as grayscale.
GRAY_CHROMA_STD = 2.0


def mouth_openness(landmarks: FloatArray) -> float:
    gap = np.mean([np.linalg.norm(landmarks[a] - landmarks[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    width = np.linalg.norm(landmarks[54] - landmarks[48]) + 1e-6
    return float(gap / width)


def face_scale(landmarks: FloatArray) -> float:
    """Brow-to-chin height: the unit for every size-relative parameter (feather, erosion, blur)."""
    return float(np.linalg.norm(landmarks[BROWS].mean(0) - landmarks[8])) + 1e-6


def forehead_points(landmarks: FloatArray, lift: float) -> FloatArray:
    """Brow points pushed `lift` x face height up along the chin->brow axis."""
    brows = landmarks[BROWS]
    axis = brows.mean(0) - landmarks[8]
    axis = axis / (np.linalg.norm(axis) + 1e-6)
    return (brows + axis * lift * face_scale(landmarks)).astype(np.float32)


def _anchor_points(size: int) -> FloatArray:
    s = float(size - 1)
    return np.array([[0, 0], [s / 2, 0], [s, 0], [s, s / 2], [s, s], [s / 2, s], [0, s], [0, s / 2]], np.float32)


def piecewise_affine_maps(src_pts: FloatArray, dst_pts: FloatArray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (map_x, map_y) for cv2.remap: each dst pixel -> src position, affine per triangle.

    Rasterising triangle ids once and evaluating the affines vectorised is ~10x faster than
    warping each triangle separately (the approach in most tutorials and FaceFusion-era code).
    """
    from scipy.spatial import Delaunay  # ~0.3 s to import: paid only by commands that swap

    tri = Delaunay(dst_pts.astype(np.float64))
    simplices = tri.simplices
    labels = np.full((size, size), -1, np.int32)
    affines = np.zeros((len(simplices), 2, 3), np.float32)
    for t, simplex in enumerate(simplices):
        d = dst_pts[simplex].astype(np.float32)
        s = src_pts[simplex].astype(np.float32)
        affines[t] = cv2.getAffineTransform(d, s)
        cv2.fillConvexPoly(labels, np.round(d).astype(np.int32), int(t))
    # Pixels left unlabelled (sub-pixel slivers) take their nearest triangle via find_simplex.
    missing = labels < 0
    if missing.any():
        ys, xs = np.nonzero(missing)
        found = tri.find_simplex(np.stack([xs, ys], 1).astype(np.float64))
        labels[ys, xs] = np.where(found >= 0, found, 0)
    return affine_maps(affines, labels)


def affine_maps(affines: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) for cv2.remap from a per-pixel triangle id map and one 2x3 affine per id."""
    h, w = labels.shape
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = affines[labels]
    map_x = a[..., 0, 0] * grid_x + a[..., 0, 1] * grid_y + a[..., 0, 2]
    map_y = a[..., 1, 0] * grid_x + a[..., 1, 1] * grid_y + a[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _poly_mask(size: int, points: FloatArray, hull: bool = True) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    pts: np.ndarray = np.round(points).astype(np.int32)
    if hull:
        pts = cv2.convexHull(pts)
    cv2.fillConvexPoly(mask, pts, 255) if hull else cv2.fillPoly(mask, [pts], 255)
    return mask


def skin_mask(size: int, landmarks: FloatArray) -> np.ndarray:
    """Cheeks, forehead and chin: the face hull minus eyes, brows and mouth (dilated)."""
    scale = face_scale(landmarks)
    face = _poly_mask(size, np.concatenate([landmarks[JAW], forehead_points(landmarks, 0.1)]))
    k = max(3, int(scale * 0.08) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    features = np.zeros_like(face)
    for idx in (LEFT_EYE + LEFT_EYE[:1], RIGHT_EYE, BROWS[:5], BROWS[5:], OUTER_LIPS):
        features |= _poly_mask(size, landmarks[idx])
    features = cv2.dilate(features, kernel)
    face = cv2.erode(face, kernel)
    return cv2.bitwise_and(face, cv2.bitwise_not(features))


def lab_color_transfer(
    source: ImageRGB, reference: ImageRGB, src_region: np.ndarray, ref_region: np.ndarray
) -> ImageRGB:
    """Match `source` LAB mean/std to `reference`, statistics taken from the given skin regions."""
    src_lab = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref_lab = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_sel, r_sel = src_region > 0, ref_region > 0
    if s_sel.sum() < 32 or r_sel.sum() < 32:
        return source
    s_mean, s_std = src_lab[s_sel].mean(0), src_lab[s_sel].std(0) + 1e-3
    r_mean, r_std = ref_lab[r_sel].mean(0), ref_lab[r_sel].std(0) + 1e-3
    # Bound the contrast change. Lightness only gets a mild one: its spread in the skin region is mostly
    # shading, which `lighting_transfer` matches locally; a strong global squash would wash out eyes and brows.
    ratio = np.clip(r_std / s_std, [0.8, 0.5, 0.5], [1.25, 2.0, 2.0])
    out = (src_lab - s_mean) * ratio + r_mean
    if max(s_std[1], s_std[2]) < GRAY_CHROMA_STD:
        # A grayscale identity photo has no chroma to match: give it the target's mean skin colour
        # (per-pixel target chroma would print the target's own eyes and lips through it).
        out[..., 1:] = r_mean[1:]
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def lighting_transfer(
    source: ImageRGB, reference: ImageRGB, region: np.ndarray, sigma: float, max_gain: float = 1.6
) -> ImageRGB:
    """Give `source` the low-frequency lighting of `reference`: source * blur(reference) / blur(source).

    Blurs are normalised convolutions over `region`, so background or hair next to the face never
    leaks into the ratio. Removes local colour casts and lighting gradients that a global LAB match
    leaves behind; `sigma` (a fraction of eye distance) keeps facial structure out of the ratio.
    """
    weight = (region > 0).astype(np.float32)
    if weight.sum() < 32:
        return source
    src_f, ref_f = source.astype(np.float32), reference.astype(np.float32)
    # The gain is smooth at the scale of `sigma`, so it is computed on a copy shrunk by up to sigma / 4
    # (the full-size blurs were most of the swap's time) and enlarged again.
    h, w = weight.shape
    factor = max(1.0, sigma / 4.0)
    small = (max(8, round(w / factor)), max(8, round(h / factor)))
    s_sigma = sigma * small[0] / w

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(cv2.resize(image, small, interpolation=cv2.INTER_AREA), (0, 0), s_sigma)

    w_blur = blur(weight)[..., None] + 1e-4
    src_blur = blur(src_f * weight[..., None]) / w_blur
    ref_blur = blur(ref_f * weight[..., None]) / w_blur
    gain_small = np.clip((ref_blur + 4.0) / (src_blur + 4.0), 1.0 / max_gain, max_gain)
    gain = cv2.resize(gain_small, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(src_f * gain, 0, 255).astype(np.uint8)


@dataclass
class LandmarkSwapper:
    """Classical swap. `strength` moves both geometry (inner features) and pixels toward the identity."""

    mask_shape: MaskShape = "hull"
    feather: float = 0.05  # Gaussian sigma as a fraction of face height
    erode: float = 0.10  # mask erosion as a fraction of face height
    forehead_lift: float = 0.22  # how far above the brows the swapped region reaches
    color_transfer: bool = True
    occlusion_aware: bool = True  # drop hair/occluders from the mask's outer ring
    name: str = "landmark"

    def params(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "mask": self.mask_shape,
            **fields_dict(self, "feather", "erode", "forehead_lift", "color_transfer", "occlusion_aware"),
        }

    def __call__(self, crop: AlignedCrop, target_face: Face, identity: Identity, strength: float) -> SwapOutput:
        if target_face.landmarks68 is None:
            raise ValueError("the landmark swap engine needs 68 target landmarks")
        size = crop.size
        target_lm = target_face.landmarks68.astype(np.float32)
        id_lm = identity.reference_landmarks68.astype(np.float32)
        source = identity.reference_crop

        # Identity landmarks placed on the target face by a least-squares similarity.
        fit = umeyama_similarity(id_lm, target_lm)
        id_on_target = transform_points(id_lm, fit)

        mismatch_mouth = (mouth_openness(target_lm) > MOUTH_OPEN_RATIO) != (mouth_openness(id_lm) > MOUTH_OPEN_RATIO)
        weights = np.full(68, strength, np.float32)
        weights[JAW] = 0.0  # keep the target's outline: the mask edge sits there
        if mismatch_mouth:
            weights[MOUTH] = 0.0  # keep the target's mouth shape so its interior stays consistent
        dst_lm = target_lm + weights[:, None] * (id_on_target - target_lm)

        lift = self.forehead_lift * 1.6  # triangulate beyond the mask so its edge warps smoothly
        dst_pts = np.concatenate([dst_lm, forehead_points(dst_lm, lift), _anchor_points(size)])
        inv_fit = cv2.invertAffineTransform(fit.astype(np.float64)).astype(np.float32)
        src_anchor = transform_points(_anchor_points(size), inv_fit)
        src_pts = np.concatenate([id_lm, forehead_points(id_lm, lift), src_anchor])
        map_x, map_y = piecewise_affine_maps(src_pts, dst_pts, size)
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

        warped_skin, target_skin = skin_mask(size, dst_lm), skin_mask(size, target_lm)
        # Only the target's occluders matter for the boundary: the mask edge must sit on target skin.
        skin_like = skin_likeness(crop.image, target_skin) if self.occlusion_aware else None
        mask_u8 = self._mask(size, dst_lm, target_lm if mismatch_mouth else None, skin_like)
        if self.color_transfer:
            warped = lab_color_transfer(warped, crop.image, warped_skin, target_skin)
            eye_distance = float(np.linalg.norm(target_lm[LEFT_EYE].mean(0) - target_lm[RIGHT_EYE].mean(0)))
            # Skin only: eye sockets, brows and lips differ between people and must not set the gain.
            skin_both = cv2.bitwise_and(warped_skin, target_skin)
            warped = lighting_transfer(warped, crop.image, skin_both, sigma=max(2.0, 0.35 * eye_distance))

        mask = mask_u8.astype(np.float32) / 255.0
        if strength < 1.0:
            # Pixels move toward the identity by `strength`; geometry already did above.
            warped = cv2.addWeighted(warped, float(strength), crop.image, 1.0 - float(strength), 0.0)
        return SwapOutput(image=warped, mask=mask, landmarks68=dst_lm, source_scale=matrix_scale(fit))

    def _mask(
        self, size: int, landmarks: FloatArray, keep_mouth_of: FloatArray | None, skin_like: np.ndarray | None
    ) -> np.ndarray:
        scale = face_scale(landmarks)
        features: np.ndarray = np.zeros((size, size), np.uint8)
        for idx in (LEFT_EYE + BROWS[:5], RIGHT_EYE + BROWS[5:], NOSE + [31, 35], OUTER_LIPS):
            features |= _poly_mask(size, landmarks[idx])
        k = max(3, int(scale * 0.12) | 1)
        features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        if self.mask_shape == "hull":
            hull = _poly_mask(size, np.concatenate([landmarks[JAW], forehead_points(landmarks, self.forehead_lift)]))
            if skin_like is not None:
                # Outside the inner features, take only target pixels that look like its skin, so hair,
                # hands or glasses frames never end up on the Poisson boundary (they would bleed inwards).
                ring = cv2.bitwise_and(hull, skin_like)
                hull = cv2.bitwise_or(cv2.bitwise_and(hull, features), ring)
                hull = _largest_component(cv2.morphologyEx(hull, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8)))
            mask = hull
        else:
            mask = features
        k = max(3, int(scale * self.erode * 2) | 1)
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        sigma = max(1.0, scale * self.feather)
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
        if keep_mouth_of is not None:
            # The target's open mouth (teeth, tongue) stays; a tight feather keeps the lips crisp.
            inner = _poly_mask(size, keep_mouth_of[INNER_LIPS], hull=False)
            small_sigma = max(1.0, scale * 0.012)
            inner = cv2.GaussianBlur(inner, (0, 0), sigmaX=small_sigma, sigmaY=small_sigma)
            mask = (mask.astype(np.float32) * (1.0 - inner.astype(np.float32) / 255.0)).astype(np.uint8)
        return mask


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.where(labels == largest, 255, 0).astype(np.uint8)


def skin_likeness(image: ImageRGB, region: np.ndarray, max_distance: float = 3.0, work_side: int = 160) -> np.ndarray:
    """255 where a pixel's LAB colour is within `max_distance` (Mahalanobis) of the region's skin colour.

    Lightness gets extra tolerance because shading varies across a face far more than skin hue does.
    Evaluated on a small copy: the decision is smooth at face scale and this keeps it ~1 ms.
    """
    h, w = image.shape[:2]
    step = max(1, max(h, w) // work_side)
    small, small_region = image[::step, ::step], region[::step, ::step]
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB).astype(np.float32)
    samples = lab[small_region > 0]
    if len(samples) < 32:
        return np.full((h, w), 255, np.uint8)
    mean = samples.mean(0)
    cov = np.cov(samples, rowvar=False) + np.diag([60.0, 4.0, 4.0])
    cov[0, 0] *= 4.0
    diff = (lab - mean).reshape(-1, 3)
    d2 = ((diff @ np.linalg.inv(cov).astype(np.float32)) * diff).sum(1).reshape(lab.shape[:2])
    likeness = (d2 < max_distance**2).astype(np.uint8) * 255
    return cv2.resize(likeness, (w, h), interpolation=cv2.INTER_NEAREST)
