"""Dense-mesh swap engine: the identity's face warped over MediaPipe's 468-point mesh onto the target.

Why a mesh: a Delaunay over 68 points cuts across eyelids and lip contours, which ghosts eyes and
brows. The mesh's own tessellation follows them, so eyelids, brows, nostrils and lips land exactly on
the target's. The rest of the engine:
- geometry moves toward the identity in 3D (pose removed by a 3D similarity fit), the outline stays;
- the target's own texture is warped onto the same new geometry, so `strength` < 1 mixes two aligned
  layers (no double eyes) and an open mouth keeps the target's teeth with no ghost lip;
- colour: the target's LAB statistics on skin, only its colour cast on eyes, brows and lips, plus a
  low-frequency lighting ratio (shared with the landmark engine);
- detail: the engine says where the target's fine skin texture belongs (skin, not eyes, brows or lips);
  the detail stage (`detail.py`) puts it back after blending, so the face is as sharp and as grainy as
  the photo around it;
- mask: the target's skin, brows, eyes, nose and lips, never its hair, glasses or hands, and never the
  identity's hair or background: from the face parser when present, else from the mesh and skin colour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from portraitforge.models.face_parsing import FACE_INTERIOR, FaceClass
from portraitforge.models.mesh_topology import MeshTopology
from portraitforge.refiners.align import matrix_scale, umeyama
from portraitforge.refiners.swap import GRAY_CHROMA_STD, affine_maps, lighting_transfer
from portraitforge.types import AlignedCrop, Face, FloatArray, Identity, ImageRGB, SwapOutput, fields_dict

# Mouth openness (inner-lip gap / mouth width) above which a mouth counts as open.
MOUTH_OPEN_RATIO = 0.10
# Mesh vertices used for openness: inner lip mid-points and mouth corners.
UPPER_INNER_LIP, LOWER_INNER_LIP, MOUTH_LEFT, MOUTH_RIGHT = 13, 14, 61, 291
FOREHEAD_TOP, CHIN, NOSE_BRIDGE, NOSE_TIP = 10, 152, 6, 4


# Class ids for every pixel of an image, given the face's box in it (the face parser's `labels`).
ParsingLabels = Callable[[ImageRGB, FloatArray], np.ndarray]


# What counts as face inside the mesh's oval: the parser's face interior (glasses included: their frame is
# handled apart) and "neck", which there is the lower part of a beard or a chin the parser missed.
PARSED_FACE = np.array((*FACE_INTERIOR, FaceClass.NECK), np.uint8)
EYE_GLASSES = FaceClass.EYE_G


def mouth_openness(points: FloatArray) -> float:
    gap = float(np.linalg.norm(points[UPPER_INNER_LIP, :2] - points[LOWER_INNER_LIP, :2]))
    width = float(np.linalg.norm(points[MOUTH_LEFT, :2] - points[MOUTH_RIGHT, :2])) + 1e-6
    return gap / width


def face_height(points: FloatArray) -> float:
    """Forehead-top to chin along the mesh: the unit of every size-relative parameter."""
    return float(np.linalg.norm(points[FOREHEAD_TOP, :2] - points[CHIN, :2])) + 1e-6


def skin_colour_match(
    image: ImageRGB, region: np.ndarray, max_distance: float = 3.0, work_side: int = 192
) -> np.ndarray:
    """255 where a pixel's LAB colour is within `max_distance` (Mahalanobis) of the colour inside `region`.

    Stricter than the landmark engine's `skin_likeness` (a small regulariser, no extra lightness slack):
    it must separate dark and red hair and beards from skin, not only backgrounds. Blond hair close to
    skin colour still passes, which is why the mask is also pulled in at the hairline.
    """
    h, w = region.shape[:2]
    # The decision is smooth at face scale: a small copy keeps it ~2 ms instead of ~25 ms on a 512 px crop.
    step = max(1, max(h, w) // work_side)
    small, small_region = np.ascontiguousarray(image[::step, ::step]), region[::step, ::step]
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    samples = lab[small_region > 0]
    if len(samples) < 32:
        return np.full(region.shape, 255, np.uint8)
    mean = samples.mean(0)
    cov = np.cov(samples, rowvar=False) + np.diag([25.0, 1.0, 1.0])
    diff = (lab - mean).reshape(-1, 3)
    d2 = ((diff @ np.linalg.inv(cov).astype(np.float32)) * diff).sum(1).reshape(lab.shape[:2])
    match = (d2 < max_distance**2).astype(np.uint8) * 255
    return cv2.resize(match, (w, h), interpolation=cv2.INTER_NEAREST) if step > 1 else match


def is_grayscale(image: ImageRGB) -> bool:
    """True for a black-and-white photo (stored as RGB): no chroma spread anywhere worth matching."""
    small = np.ascontiguousarray(image[::4, ::4])
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    return bool(max(lab[..., 1].std(), lab[..., 2].std()) < GRAY_CHROMA_STD)


def _fan(loop: list[int], centre: int) -> list[tuple[int, int, int]]:
    return [(loop[i], loop[(i + 1) % len(loop)], centre) for i in range(len(loop))]


def polygon_mask(size: int, points: FloatArray) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points[:, :2]).astype(np.int32)], 255)
    return mask


def triangle_warp_maps(
    src_pts: FloatArray, dst_pts: FloatArray, triangles: np.ndarray, size: int, outside: FloatArray
) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) for cv2.remap: each dst pixel -> its src position, affine per mesh triangle;
    pixels no triangle covers use the 2x3 affine `outside` (dst -> src)."""
    n = len(triangles)
    labels = np.full((size, size), n, np.int32)  # index n = the outside affine
    affines = np.zeros((n + 1, 2, 3), np.float32)
    affines[n] = outside
    dst_tris = dst_pts[triangles][:, :, :2].astype(np.float32)
    src_tris = src_pts[triangles][:, :, :2].astype(np.float32)
    # A triangle folded flat by the geometry change has no affine; it keeps the outside one.
    u, v = dst_tris[:, 1] - dst_tris[:, 0], dst_tris[:, 2] - dst_tris[:, 0]
    area = np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])
    for t in np.nonzero(area > 1e-3)[0]:
        affines[t] = cv2.getAffineTransform(dst_tris[t], src_tris[t])
        cv2.fillConvexPoly(labels, np.round(dst_tris[t]).astype(np.int32), int(t))
    return affine_maps(affines, labels)


def _ellipse(diameter: float) -> np.ndarray:
    k = max(3, int(diameter) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


@dataclass
class MeshSwapper:
    """Swap over the dense mesh. `strength` moves geometry and texture together."""

    topology: MeshTopology = field(repr=False)
    parser: ParsingLabels | None = field(default=None, repr=False)
    feather: float = 0.025  # Gaussian sigma of the mask edge, fraction of face height
    erode: float = 0.015  # mask pulled in from the face oval, fraction of face height
    color_transfer: bool = True
    outline_strength: float = 0.5  # share of `strength` applied to the jaw/forehead outline
    hairline_pull: float = 0.35  # no parser: how far the mask's top edge is pulled in from the oval
    identity_colour_check: bool = True  # no parser: also leave out identity pixels unlike its skin (fringe)
    occlusion_aware: bool = True  # leave out hair, glasses frames and hands (parser or skin colour)
    lighting_sigma: float = 0.5  # low-frequency lighting match, Gaussian sigma in eye distances (0: off)
    exclude_beards: bool = False  # parser mode: keep the target's beard instead of swapping over it
    hair_margin: float = 0.025  # parser mode: kept distance from the identity's hair, fraction of face height
    keep_detail: bool = True  # report where the target's fine skin texture belongs (the detail stage uses it)
    name: str = "mesh"
    _triangles: np.ndarray = field(init=False, repr=False)
    _clean_references: dict[str, ImageRGB] = field(default_factory=dict, init=False, repr=False)
    _inner_features: list[list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        topo = self.topology
        # The tessellation leaves the eye and mouth openings empty; fan them from an added centre vertex
        # (468, 469, 470) so eyeballs and teeth follow the eyelids and lips instead of a global affine.
        extra = [
            *_fan(list(topo.left_eye), 468),
            *_fan(list(topo.right_eye), 469),
            *_fan(list(topo.lips_inner), 470),
        ]
        self._triangles = np.concatenate([np.asarray(topo.triangles, np.int32), np.asarray(extra, np.int32)])
        self._inner_features = [
            list(topo.left_eye),
            list(topo.right_eye),
            list(topo.left_brow),
            list(topo.right_brow),
            list(topo.lips_outer),
        ]

    def params(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            **fields_dict(
                self, "feather", "erode", "outline_strength", "color_transfer", "lighting_sigma", "occlusion_aware"
            ),
            "parsing": self.parser is not None,
            **fields_dict(
                self, "hair_margin", "exclude_beards", "hairline_pull", "identity_colour_check", "keep_detail"
            ),
        }

    def _with_centres(self, points: FloatArray) -> FloatArray:
        topo = self.topology
        centres = [points[list(loop)].mean(0) for loop in (topo.left_eye, topo.right_eye, topo.lips_inner)]
        return np.concatenate([points, np.stack(centres)]).astype(np.float32)

    def __call__(self, crop: AlignedCrop, target_face: Face, identity: Identity, strength: float) -> SwapOutput:
        if target_face.mesh is None:
            raise ValueError("the mesh swap engine needs the target's 468-point mesh (analyzer: mesh)")
        if identity.reference_mesh is None:
            raise ValueError(f"identity '{identity.name}' has no reference mesh (build it with the mesh analyzer)")
        size = crop.size
        target_pts = np.asarray(target_face.mesh, np.float32)
        id_pts = np.asarray(identity.reference_mesh, np.float32)
        source = identity.reference_crop
        topo = self.topology
        scale = face_height(target_pts)

        # Identity shape in the target's pose: a 3D similarity removes rotation, size and position.
        s, rot, t = umeyama(id_pts, target_pts)
        id_on_target = (s * id_pts.astype(np.float64) @ rot.T + t).astype(np.float32)
        mouth_mismatch = (mouth_openness(target_pts) > MOUTH_OPEN_RATIO) != (mouth_openness(id_pts) > MOUTH_OPEN_RATIO)
        weights = np.full(len(target_pts), float(strength), np.float32)
        # The outline moves less than the inner face: the mask's edge sits just inside it.
        weights[list(topo.face_oval)] = float(strength) * self.outline_strength
        if mouth_mismatch:
            # Keep the target's mouth shape so its own teeth or closed lips stay consistent.
            weights[list(topo.lips_outer) + list(topo.lips_inner)] = 0.0
        dst_pts = target_pts.copy()
        dst_pts[:, :2] += weights[:, None] * (id_on_target[:, :2] - target_pts[:, :2])

        # dst -> src for pixels outside the mesh: the 2D part of the similarity, inverted.
        fit_2d = np.zeros((2, 3), np.float64)
        fit_2d[:, :2] = s * rot[:2, :2]
        fit_2d[:, 2] = t[:2]
        outside_id = cv2.invertAffineTransform(fit_2d).astype(np.float32)
        dst_all, id_all, target_all = (self._with_centres(p) for p in (dst_pts, id_pts, target_pts))
        map_x, map_y = triangle_warp_maps(id_all, dst_all, self._triangles, size, outside_id)
        source = self._hair_free_reference(source, id_pts)
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        identical = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
        # The target's own texture on the new geometry: mixed in by strength and kept in a mouth whose openness
        # differs. At full strength with matching mouths only colour statistics read it, which the geometry
        # change barely moves, so the second warp is skipped.
        target_on_dst = crop.image
        grayscale = is_grayscale(source)
        if strength < 1.0 or mouth_mismatch or grayscale:
            tmap_x, tmap_y = triangle_warp_maps(target_all, dst_all, self._triangles, size, identical)
            target_on_dst = cv2.remap(crop.image, tmap_x, tmap_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

        features = self._feature_mask(size, dst_pts, scale)
        oval = polygon_mask(size, dst_pts[list(topo.face_oval)])
        skin = cv2.bitwise_and(oval, cv2.bitwise_not(features))
        mask_u8, occluded = self._mask(crop, target_face, warped, dst_pts, oval, skin)
        if self.color_transfer:
            # Colour statistics from skin both faces share, without beards or stubble: a beard the mask paints
            # over would otherwise darken and tint the whole face.
            skin_both = cv2.bitwise_and(skin, cv2.bitwise_not(occluded))
            band = self._cheek_band(size, dst_pts, skin_both)
            clean = cv2.bitwise_and(skin_colour_match(target_on_dst, band), skin_colour_match(warped, band))
            stats = cv2.bitwise_and(skin_both, clean)
            warped = self._match_colour(
                warped, target_on_dst, stats if stats.any() else skin_both, skin, dst_pts, scale
            )
        if mouth_mismatch:
            inner = polygon_mask(size, dst_pts[list(topo.lips_inner)])
            inner = cv2.GaussianBlur(inner, (0, 0), max(0.8, scale * 0.006)).astype(np.float32)[..., None] / 255.0
            warped = (warped * (1.0 - inner) + target_on_dst * inner).astype(np.uint8)
        if strength < 1.0:
            warped = cv2.addWeighted(warped, float(strength), target_on_dst, 1.0 - float(strength), 0.0)
        mask = mask_u8.astype(np.float32) / 255.0
        detail_mask = None
        if self.keep_detail:
            # Skin in both geometries: the target's detail must not print its own eyes, brows or lips.
            target_features = self._feature_mask(size, target_pts, scale)
            detail = cv2.bitwise_and(skin, cv2.bitwise_not(cv2.bitwise_or(target_features, occluded)))
            detail_mask = cv2.GaussianBlur(detail, (0, 0), max(1.0, scale * 0.01)).astype(np.float32) / 255.0 * mask
        return SwapOutput(
            image=warped,
            mask=mask,
            landmarks68=None,
            source_scale=matrix_scale(fit_2d),
            detail_mask=detail_mask,
            face_height=scale,
        )

    def _match_colour(
        self,
        warped: ImageRGB,
        target: ImageRGB,
        stats_region: np.ndarray,
        skin: np.ndarray,
        points: FloatArray,
        scale: float,
    ) -> ImageRGB:
        """The target's skin tone and lighting on the identity's face. Skin takes the target's LAB mean and
        spread; eyes, brows and lips take only the mean shift (the photo's colour cast), because scaling their
        chroma around the skin's mean would turn blue eyes brown or lips orange."""
        src = cv2.cvtColor(warped, cv2.COLOR_RGB2LAB).astype(np.float32)
        ref = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
        sel = stats_region > 0
        if sel.sum() < 32:
            return warped
        s_mean, s_std = src[sel].mean(0), src[sel].std(0) + 1e-3
        r_mean, r_std = ref[sel].mean(0), ref[sel].std(0) + 1e-3
        # Lightness gets a mild contrast change only: its spread in the skin is mostly shading.
        ratio = np.clip(r_std / s_std, [0.8, 0.5, 0.5], [1.25, 2.0, 2.0])
        skin_lab = (src - s_mean) * ratio + r_mean
        feature_lab = skin_lab.copy()
        feature_lab[..., 1:] = src[..., 1:] + (r_mean[1:] - s_mean[1:])
        if max(s_std[1], s_std[2]) < GRAY_CHROMA_STD:
            # A black-and-white identity photo has no colour of its own: the target's, warped onto the new
            # geometry (so its lips and cheeks land on the identity's), lightly smoothed.
            chroma = cv2.GaussianBlur(ref[..., 1:], (0, 0), max(1.0, scale * 0.01))
            skin_lab[..., 1:] = chroma
            feature_lab[..., 1:] = chroma
        weight = cv2.GaussianBlur(skin, (0, 0), max(1.0, scale * 0.01)).astype(np.float32)[..., None] / 255.0
        lab = skin_lab * weight + feature_lab * (1.0 - weight)
        matched = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
        if self.lighting_sigma > 0:
            # Side light and hair shadows on the identity photo; finer than this the ratio would print the
            # target's own cheekbones and nose shading (its identity) onto the face.
            topo = self.topology
            eyes = points[list(topo.left_eye), :2].mean(0) - points[list(topo.right_eye), :2].mean(0)
            sigma = max(2.0, self.lighting_sigma * float(np.linalg.norm(eyes)))
            matched = lighting_transfer(matched, target, stats_region, sigma=sigma, max_gain=2.0)
        return matched

    def _inner_oval(self, points: FloatArray) -> FloatArray:
        """Face-oval vertices pulled toward the nose: by `hairline_pull` at the top, none at the chin."""
        oval = points[list(self.topology.face_oval), :2].astype(np.float64)
        centre = points[NOSE_BRIDGE, :2].astype(np.float64)
        down = points[CHIN, :2] - points[FOREHEAD_TOP, :2]
        down = down / (np.linalg.norm(down) + 1e-6)
        # 1 at the forehead top, 0 at chin level: how high up the face each oval vertex sits.
        height = np.clip((np.dot(oval - points[CHIN, :2], -down)) / face_height(points), 0.0, 1.0)
        pull = self.hairline_pull * height**1.5
        return (oval + (centre - oval) * pull[:, None]).astype(np.float32)

    def _cheek_band(self, size: int, points: FloatArray, region: np.ndarray) -> np.ndarray:
        """`region` between the lower eyelids and the nose tip: skin on nearly every face, bearded ones too."""
        top = float(points[list(self.topology.left_eye) + list(self.topology.right_eye), 1].max())
        bottom = float(points[NOSE_TIP, 1])
        band = np.zeros_like(region)
        if bottom > top:
            band[int(top) : int(np.ceil(bottom)) + 1] = 255
        return cv2.bitwise_and(region, band)

    def _hair_free_reference(self, reference: ImageRGB, mesh: FloatArray) -> ImageRGB:
        """The identity's reference with its hair, headwear and glasses frames painted out inside its face, so
        that no foreign hair can come in and the face underneath is still the identity's. Once per identity."""
        if self.parser is None:
            return reference
        key = hashlib.sha1(np.ascontiguousarray(reference).tobytes()).hexdigest()
        cached = self._clean_references.get(key)
        if cached is not None:
            return cached
        size = reference.shape[0]
        scale = face_height(mesh)
        labels = self.parser(reference, _points_box(mesh))
        oval = polygon_mask(size, mesh[list(self.topology.face_oval)]) > 0
        eyes = self._eye_region(size, mesh, mesh, scale)
        foreign = ~np.isin(labels, PARSED_FACE) | glasses_frames(reference, labels == EYE_GLASSES, eyes, scale)
        # Hair shades the skin next to it: that band goes too.
        foreign_u8 = cv2.dilate((foreign & oval).astype(np.uint8) * 255, _ellipse(scale * self.hair_margin))
        region = cv2.bitwise_and(foreign_u8, cv2.dilate(oval.astype(np.uint8) * 255, _ellipse(scale * 0.05)))
        if not region.any():
            self._clean_references[key] = reference
            return reference
        # Inpainting is smooth at face scale: a half-size pass is 4x cheaper and looks the same after the
        # detail stage puts the photo's skin texture back.
        half = (max(8, size // 2), max(8, size // 2))
        small = cv2.inpaint(
            cv2.resize(reference, half, interpolation=cv2.INTER_AREA),
            cv2.resize(region, half, interpolation=cv2.INTER_NEAREST),
            max(3.0, scale * 0.02),
            cv2.INPAINT_TELEA,
        )
        filled = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        clean = np.where(region[..., None] > 0, filled, reference).astype(np.uint8)
        self._clean_references[key] = clean
        return clean

    def _eye_region(self, size: int, dst: FloatArray, target: FloatArray, scale: float) -> np.ndarray:
        """Both eye openings, in the new and the target's geometry."""
        region = np.zeros((size, size), np.uint8)
        for points in (dst, target):
            for loop in (self.topology.left_eye, self.topology.right_eye):
                region |= polygon_mask(size, points[list(loop)])
        return cv2.dilate(region, _ellipse(scale * 0.04))

    def _feature_mask(self, size: int, points: FloatArray, scale: float) -> np.ndarray:
        features = np.zeros((size, size), np.uint8)
        for loop in self._inner_features:
            features |= polygon_mask(size, points[loop])
        return cv2.dilate(features, _ellipse(scale * 0.04))

    def _mask(
        self,
        crop: AlignedCrop,
        target_face: Face,
        warped: ImageRGB,
        dst_pts: FloatArray,
        oval: np.ndarray,
        skin: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feathered swap mask, plus the occluded pixels (target or identity non-face) it leaves out.
        `skin` is the oval without the inner features: where colour decides what is skin."""
        scale = face_height(dst_pts)
        if self.parser is not None:
            target_labels = self.parser(crop.image, _points_box(target_face.mesh))
            # The parser labels glasses as one region, lenses included. Only the frame (the region's rim and
            # bridge) is an occluder: the target's stays in front and the eyes behind the lenses are swapped.
            # (The identity's hair and frames were already painted out of its reference.)
            target_pts = np.asarray(target_face.mesh, np.float32)
            eyes = self._eye_region(crop.size, target_pts, target_pts, scale)
            target_frames = glasses_frames(crop.image, target_labels == EYE_GLASSES, eyes, scale)
            off = ~np.isin(target_labels, PARSED_FACE) | target_frames
            if self.exclude_beards:
                # The parser calls most of a beard skin: colour far from the upper cheeks keeps the target's
                # beard in front, at the cost of identity on the lower face.
                band = self._cheek_band(crop.size, dst_pts, skin)
                off |= ~(skin_colour_match(crop.image, band) > 0) & (skin > 0)
            occluded = cv2.bitwise_and(oval, off.astype(np.uint8) * 255)
        else:
            # No parser: the mesh's oval pulled in at the forehead and temples, where hair most often
            # crosses a face, minus pixels that look like neither person's skin (the target's fringe,
            # glasses frames, hands or beard; the identity's fringe or beard).
            inner = polygon_mask(crop.size, self._inner_oval(dst_pts))
            # Colour statistics from the upper cheeks and nose only: a beard or fringe would join them.
            band = self._cheek_band(crop.size, dst_pts, skin)
            both_skin = skin_colour_match(crop.image, band)
            if self.identity_colour_check:
                both_skin = cv2.bitwise_and(both_skin, skin_colour_match(warped, band))
            not_skin = cv2.bitwise_and(skin, cv2.bitwise_not(both_skin))
            occluded = cv2.bitwise_or(cv2.bitwise_and(oval, cv2.bitwise_not(inner)), not_skin)
        if not self.occlusion_aware:
            occluded = np.zeros_like(oval)
        # Specks are colour noise, not occluders; what remains is grown slightly to cover its own edge.
        occluded = cv2.morphologyEx(occluded, cv2.MORPH_OPEN, _ellipse(scale * 0.025))
        occluded = cv2.dilate(occluded, _ellipse(scale * 0.015))
        # The outer edge is pulled in from the oval and feathered inwards only, so the target's outline,
        # ears and hair are never painted over; occluders get a narrower soft edge.
        sigma = max(1.0, scale * self.feather)
        outer = cv2.erode(oval, _ellipse(scale * self.erode * 2))
        outer_soft = np.minimum(cv2.GaussianBlur(cv2.erode(outer, _ellipse(sigma * 2)), (0, 0), sigma), outer)
        hole_sigma = max(1.0, sigma / 3)
        holes = np.maximum(cv2.GaussianBlur(occluded, (0, 0), hole_sigma), occluded)
        mask = (outer_soft.astype(np.float32) * (1.0 - holes.astype(np.float32) / 255.0)).astype(np.uint8)
        return mask, occluded


def glasses_frames(image: ImageRGB, glasses: np.ndarray, eyes: np.ndarray, scale: float) -> np.ndarray:
    """The frame inside a parser's glasses region (which covers the lenses too): the region's rim and bridge,
    plus thin structures darker or brighter than their surroundings (a black-hat / top-hat response), except
    inside the eye openings `eyes`, where lashes and irises are as dark and thin."""
    region = glasses.astype(np.uint8) * 255
    if not region.any():
        return glasses
    # A thin bridge vanishes entirely under the erosion, so it is part of the rim.
    rim = (region > 0) & ~(cv2.erode(region, _ellipse(scale * 0.04)) > 0)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    kernel = _ellipse(scale * 0.05)
    # Frames contrast far more than the skin folds and shadows behind the lenses.
    dark = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel) > 45
    light = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel) > 60
    lines = (dark | light) & (region > 0) & ~(eyes > 0)
    frames = (rim | lines).astype(np.uint8) * 255
    # Grown over anti-aliased edges, but never into the eye openings: the eyes behind the lenses are swapped.
    return (cv2.dilate(frames, _ellipse(scale * 0.012)) > 0) & ~(eyes > 0)


def _points_box(points: FloatArray | None) -> FloatArray:
    if points is None:
        return np.zeros(4, np.float32)
    p = np.asarray(points)[:, :2]
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()], np.float32)
