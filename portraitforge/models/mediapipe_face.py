"""MediaPipe BlazeFace detectors, OpenCV's YuNet detector and the 468-point MediaPipe face mesh.

Model level only: each class takes an RGB uint8 image and returns image-pixel geometry. Instances hold
a TFLite interpreter or an OpenCV net, which are not thread-safe: use one per thread.

Keypoint orders (checked on frontal photos in ../shared/faces):
- BlazeFace, MediaPipe's 6 keypoints: right eye, left eye, nose tip, mouth centre, right ear tragion,
  left ear tragion. "Right" is the subject's right, which is the *image-left* side of an unmirrored photo.
- YuNet's raw order is (right eye, left eye, nose, right mouth corner, left mouth corner), again the
  subject's right first; `YuNetDetector` returns it unchanged, which is already ArcFace's order
  (image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner).
So for both detectors `keypoints[0]` is the image-left eye and `keypoints[1]` the image-right eye.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import cv2
import numpy as np

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.litert import LiteModel, quiet_native_stderr
from portraitforge.types import Face, FloatArray, ImageRGB

Detector = Literal["blazeface", "yunet"]


def _check_rgb(image: ImageRGB) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("face models expect an RGB uint8 image")


@dataclass(frozen=True)
class Detection:
    """One detected face: box (x1, y1, x2, y2), score in 0..1 and keypoints, all in image pixels."""

    box: FloatArray
    score: float
    keypoints: FloatArray  # (6, 2) MediaPipe order for "blazeface", (5, 2) ArcFace order for "yunet"
    detector: Detector

    @property
    def eyes(self) -> FloatArray:
        """(2, 2): image-left eye then image-right eye (the first two keypoints of both detectors)."""
        return self.keypoints[:2]

    @property
    def size(self) -> float:
        """Longer side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


# --------------------------------------------------------------------------------------------------
# SSD anchors and BlazeFace decoding, as MediaPipe's calculators define them
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlazeFaceConfig:
    """The options of MediaPipe's face_detection_{short,full}_range.pbtxt (FaceDetectionOptions)."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_boxes: int
    min_score_thresh: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    min_suppression_threshold: float = 0.3  # NonMaxSuppressionCalculator, IoU, WEIGHTED
    score_clipping_thresh: float = 100.0


SHORT_RANGE = BlazeFaceConfig(
    input_size=128, strides=(8, 16, 16, 16), interpolated_scale_aspect_ratio=1.0, num_boxes=896, min_score_thresh=0.5
)
FULL_RANGE = BlazeFaceConfig(
    input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0, num_boxes=2304, min_score_thresh=0.6
)


def ssd_anchors(config: BlazeFaceConfig) -> FloatArray:
    """(N, 2) anchor centres in [0, 1], SsdAnchorsCalculator's order (fixed_anchor_size: w = h = 1).

    Consecutive layers with the same stride share one feature map; each layer contributes one anchor
    per aspect ratio (1.0) plus one interpolated anchor when interpolated_scale_aspect_ratio > 0.
    """
    centres: list[FloatArray] = []
    strides = config.strides
    layer = 0
    while layer < len(strides):
        last = layer
        per_cell = 0
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1 + (1 if config.interpolated_scale_aspect_ratio > 0 else 0)
            last += 1
        size = math.ceil(config.input_size / strides[layer])
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    if len(anchors) != config.num_boxes:
        raise ValueError(f"anchor layout gives {len(anchors)} boxes, the model has {config.num_boxes}")
    return anchors


def _iou(box: FloatArray, boxes: FloatArray) -> FloatArray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def weighted_nms(
    boxes: FloatArray, scores: FloatArray, keypoints: FloatArray, threshold: float
) -> list[tuple[FloatArray, float, FloatArray]]:
    """MediaPipe's WEIGHTED non-max suppression.

    Take the best remaining box, gather every remaining box with IoU above `threshold` (itself
    included), and replace box and keypoints by the score-weighted mean of that cluster; the score
    stays the best one's.
    """
    order = np.argsort(-scores, kind="stable")
    out: list[tuple[FloatArray, float, FloatArray]] = []
    while len(order):
        best = order[0]
        members = _iou(boxes[best], boxes[order]) > threshold
        cluster = order[members]
        weights = scores[cluster][:, None]
        total = float(weights.sum())
        box = (boxes[cluster] * weights).sum(0) / total
        kps = (keypoints[cluster] * weights[:, :, None]).sum(0) / total
        out.append((box.astype(np.float32), float(scores[best]), kps.astype(np.float32)))
        order = order[~members]
    return out


def _resize(image: ImageRGB, scale: float) -> ImageRGB:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _on_canvas(patch: ImageRGB, size: int, x: int, y: int) -> FloatArray:
    """`patch` placed at (x, y) on a black size x size square, as a [-1, 1] tensor (MediaPipe's float range)."""
    canvas = np.zeros((size, size, 3), np.uint8)
    ph, pw = min(patch.shape[0], size - y), min(patch.shape[1], size - x)
    canvas[y : y + ph, x : x + pw] = patch[:ph, :pw]
    return (canvas.astype(np.float32) / 127.5 - 1.0)[None]


@dataclass
class BlazeFaceDetector:
    """MediaPipe BlazeFace (short range 128 px or full range 192 px) with MediaPipe's decoding and NMS.

    `tiles` > 1 also runs the model on a `tiles` x `tiles` grid of overlapping squares and merges
    everything with the same weighted NMS. One pass over the whole image finds faces down to ~10% of
    the image side (short range) or ~5% (full range); full range with 2x2 tiles goes down to ~2.5%
    (synthetic faces in a 1600 px frame; t1.jpg's counts are in tests/test_mediapipe_face.py).
    """

    model: LiteModel = field(repr=False)
    config: BlazeFaceConfig
    anchors: FloatArray = field(repr=False)
    min_score: float
    tiles: int = 1
    tile_overlap: float = 0.25

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], min_score: float | None = None, tiles: int | None = None
    ) -> BlazeFaceDetector:
        model = LiteModel.load(Path(path))
        side = model.input_shape()[1]
        configs = {SHORT_RANGE.input_size: SHORT_RANGE, FULL_RANGE.input_size: FULL_RANGE}
        if side not in configs:
            raise ModelUnavailableError(f"{Path(path).name}: input {side} px is neither BlazeFace short nor full range")
        config = configs[side]
        # Full range: tiles find the group-photo faces one pass misses, for 5 model calls instead of 1.
        # Short range is a selfie model; tiling it raised a false positive on a portrait, so it stays off.
        default_tiles = 2 if config is FULL_RANGE else 1
        return cls(
            model=model,
            config=config,
            anchors=ssd_anchors(config),
            min_score=config.min_score_thresh if min_score is None else min_score,
            tiles=default_tiles if tiles is None else tiles,
        )

    def _decode(self, tensor: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Candidates above min_score: boxes (N, 4), scores (N,), keypoints (N, 6, 2) in input-square pixels."""
        size = self.config.input_size
        regressors, logits = sorted(self.model.run(tensor), key=lambda a: a.shape[-1], reverse=True)
        clip = self.config.score_clipping_thresh
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -clip, clip)))
        keep = scores >= self.min_score
        raw, anchors = regressors.reshape(-1, 16)[keep].astype(np.float64), self.anchors[keep] * size
        # reverse_output_order: x, y, w, h; x_scale = y_scale = w_scale = h_scale = input size, so raw
        # values are already input pixels relative to the anchor centre (fixed anchor size 1).
        centre = raw[:, :2] + anchors
        boxes = np.concatenate([centre - raw[:, 2:4] / 2, centre + raw[:, 2:4] / 2], axis=1)
        kps = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None, :]
        return boxes, scores[keep], kps

    def _tile_origins(self, h: int, w: int, side: int) -> list[tuple[int, int]]:
        """Top-left corners of a tiles x tiles grid of `side` squares spanning the image with overlap."""
        n = self.tiles
        xs = [round(i * (w - side) / (n - 1)) for i in range(n)] if w > side else [0]
        ys = [round(i * (h - side) / (n - 1)) for i in range(n)] if h > side else [0]
        return [(x, y) for y in ys for x in xs]

    def detect(self, image: ImageRGB) -> list[Detection]:
        _check_rgb(image)
        h, w = image.shape[:2]
        if min(h, w) < 8:
            return []
        size = self.config.input_size
        # Whole image, letterboxed (centred) into the input square as MediaPipe's ImageToTensor does.
        scale = size / max(h, w)
        small = _resize(image, scale)
        pad = np.array([(size - small.shape[1]) // 2, (size - small.shape[0]) // 2], np.float64)
        boxes, scores, kps = self._decode(_on_canvas(small, size, int(pad[0]), int(pad[1])))
        parts = [(boxes - np.tile(pad, 2)) / scale], [scores], [(kps - pad) / scale]
        if self.tiles > 1 and max(h, w) > 2 * size:  # smaller images already fill the input square
            side = min(max(h, w), math.ceil(max(h, w) / (self.tiles - (self.tiles - 1) * self.tile_overlap)))
            tile_scale = size / side
            grid = _resize(image, tile_scale)  # one resize for every tile
            for x0, y0 in self._tile_origins(h, w, side):
                xs, ys = round(x0 * tile_scale), round(y0 * tile_scale)
                boxes, scores, kps = self._decode(_on_canvas(grid[ys : ys + size, xs : xs + size], size, 0, 0))
                # Drop detections cut by an inner tile edge: the whole-image pass or a neighbour sees them whole.
                cut = (
                    ((boxes[:, 0] < 1) & (x0 > 0))
                    | ((boxes[:, 1] < 1) & (y0 > 0))
                    | ((boxes[:, 2] > size - 1) & (x0 + side < w))
                    | ((boxes[:, 3] > size - 1) & (y0 + side < h))
                )
                origin = np.array([xs, ys], np.float64)
                parts[0].append((boxes[~cut] + np.tile(origin, 2)) / tile_scale)
                parts[1].append(scores[~cut])
                parts[2].append((kps[~cut] + origin) / tile_scale)
        merged = weighted_nms(
            np.concatenate(parts[0]),
            np.concatenate(parts[1]),
            np.concatenate(parts[2]),
            self.config.min_suppression_threshold,
        )
        return [Detection(box=b, score=sc, keypoints=k, detector="blazeface") for b, sc, k in merged]


# --------------------------------------------------------------------------------------------------
# YuNet (OpenCV Zoo) through cv2.FaceDetectorYN
# --------------------------------------------------------------------------------------------------


@dataclass
class YuNetDetector:
    """OpenCV's YuNet: box, score and 5 keypoints in ArcFace order, on a copy at most `detect_max_side`.

    score_threshold 0.7 rather than OpenCV's 0.9: t1.jpg's faces score 0.88-0.93 and the selfie's cut
    faces 0.80, while no portrait in ../shared/faces gave a second detection above 0.7.
    """

    detector: cv2.FaceDetectorYN = field(repr=False)
    detect_max_side: int | None = 1024
    score_threshold: float = 0.7
    nms_threshold: float = 0.3

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        detect_max_side: int | None = 1024,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
    ) -> YuNetDetector:
        p = Path(path)
        if not p.is_file():
            raise ModelUnavailableError(f"model file not found: {p}")
        try:
            with quiet_native_stderr():  # OpenCV's DNN engine warns about targets on stderr
                detector = cv2.FaceDetectorYN.create(str(p), "", (320, 320), score_threshold, nms_threshold, 5000)
        except cv2.error as exc:
            raise ModelUnavailableError(f"{p.name}: OpenCV cannot load it as YuNet ({exc})") from None
        return cls(detector, detect_max_side, score_threshold, nms_threshold)

    def detect(self, image: ImageRGB) -> list[Detection]:
        _check_rgb(image)
        h, w = image.shape[:2]
        if min(h, w) < 8:
            return []
        scale = 1.0 if self.detect_max_side is None else min(1.0, self.detect_max_side / max(h, w))
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.detector.detect(bgr)
        out: list[Detection] = []
        for row in [] if faces is None else faces:
            x, y, bw, bh = (float(v) / scale for v in row[:4])
            kps = np.asarray(row[4:14], np.float32).reshape(5, 2) / scale
            box = np.array([x, y, x + bw, y + bh], np.float32)
            out.append(Detection(box=box, score=float(row[14]), keypoints=kps, detector="yunet"))
        return sorted(out, key=lambda d: -d.score)


# --------------------------------------------------------------------------------------------------
# Face mesh
# --------------------------------------------------------------------------------------------------

# Eye contours of the 468-point mesh (FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE in face_mesh_connections.py);
# the subject's right eye is the image-left one.
MESH_IMAGE_LEFT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MESH_IMAGE_RIGHT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
MESH_NOSE_TIP = 4
MESH_MOUTH_IMAGE_LEFT = 61
MESH_MOUTH_IMAGE_RIGHT = 291


@dataclass(frozen=True)
class MeshFit:
    """468 mesh points (x, y in image pixels; z in the same pixel units, smaller is nearer the camera)."""

    points: FloatArray  # (468, 3) float32
    presence: float  # sigmoid of the face-presence logit
    matrix: FloatArray  # (2, 3) image -> 192 px crop of the last pass


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre, side and angle (radians, of the eye line)."""

    cx: float
    cy: float
    size: float
    angle: float

    def matrix(self, out: int) -> FloatArray:
        """2x3 similarity mapping the image into an `out` x `out` crop of this square."""
        s = out / self.size
        c, si = math.cos(self.angle) * s, math.sin(self.angle) * s
        # Rotate by -angle about the centre, scale, then move the centre to the crop centre.
        return np.array(
            [[c, si, out / 2 - c * self.cx - si * self.cy], [-si, c, out / 2 + si * self.cx - c * self.cy]],
            np.float64,
        )


def _eye_angle(eyes: FloatArray) -> float:
    d = np.asarray(eyes[1], np.float64) - np.asarray(eyes[0], np.float64)
    return math.atan2(float(d[1]), float(d[0]))


@dataclass(frozen=True)
class BoxRoi:
    """How a detector's box becomes the mesh ROI: side = scale x the longer box side; centre moved
    along the face's vertical by shift_y box heights (positive: towards the chin)."""

    scale: float
    shift_y: float


# Measured on ../shared/faces against the square the mesh settles on (MediaPipe's landmarks -> ROI step,
# 1.5x the mesh's extent, after 3 refinements): BlazeFace boxes need 1.54x (MediaPipe uses 1.5), YuNet's
# taller boxes 1.33x and a centre 0.06 box heights lower, dlib's HOG boxes 1.73x. Other boxes get 1.6x.
BOX_ROIS: Mapping[str, BoxRoi] = MappingProxyType(
    {"blazeface": BoxRoi(1.5, 0.0), "yunet": BoxRoi(1.33, 0.06), "box": BoxRoi(1.6, 0.0)}
)
# ArcFace 5 points alone: the settled side is ~3.85x max(eye distance, eye-mid to mouth-mid), centre 0.036 of
# that above the mid-point between eye-mid and mouth-mid.
KPS5_ROI = BoxRoi(3.85, -0.036)


def roi_from_box(box: FloatArray, eyes: FloatArray | None, spec: BoxRoi) -> Roi:
    """MediaPipe's detection -> ROI: box centre, longer side x scale, rotated so the eyes are level."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    angle = 0.0 if eyes is None else _eye_angle(eyes)
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 - math.sin(angle) * spec.shift_y * h
    cy = (y1 + y2) / 2 + math.cos(angle) * spec.shift_y * h
    return Roi(cx, cy, max(w, h) * spec.scale, angle)


def roi_from_points(points: FloatArray, angle: float, scale: float) -> Roi:
    """Bounding square of `points` in the frame rotated by `angle`, times `scale` (MediaPipe: 1.5)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    local = points[:, :2].astype(np.float64) @ rot.T
    lo, hi = local.min(0), local.max(0)
    centre = ((lo + hi) / 2) @ rot
    return Roi(float(centre[0]), float(centre[1]), float((hi - lo).max()) * scale, angle)


def roi_from_kps5(kps5: FloatArray, spec: BoxRoi = KPS5_ROI) -> Roi:
    """ROI from ArcFace 5 points alone, sized by the larger of eye distance and eye-to-mouth distance."""
    pts = np.asarray(kps5, np.float64)
    angle = _eye_angle(pts[:2])
    eye_mid, mouth_mid = pts[:2].mean(0), pts[3:5].mean(0)
    span = max(float(np.linalg.norm(mouth_mid - eye_mid)), float(np.linalg.norm(pts[1] - pts[0])))
    cx, cy = (eye_mid + mouth_mid) / 2
    cx -= math.sin(angle) * spec.shift_y * span
    cy += math.cos(angle) * spec.shift_y * span
    return Roi(float(cx), float(cy), span * spec.scale, angle)


def _crop(image: ImageRGB, roi: Roi, out: int) -> tuple[FloatArray, FloatArray]:
    """(out x out RGB float32 in [0, 1], image -> crop 2x3). Large downscales go through a pyramid first."""
    matrix = roi.matrix(out)
    src = image
    factor = 1.0
    shrink = roi.size / out
    if shrink > 2.0:
        # warpAffine samples 4 pixels per output pixel: alias-free only when first halved near scale.
        levels = int(math.log2(shrink))
        half = roi.size * 0.75  # covers the rotated square (side * sqrt(2) / 2 ~ 0.71 side)
        x0, y0 = max(0, int(roi.cx - half)), max(0, int(roi.cy - half))
        x1, y1 = min(image.shape[1], int(roi.cx + half) + 1), min(image.shape[0], int(roi.cy + half) + 1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            src = image[y0:y1, x0:x1]
            for _ in range(levels):
                if min(src.shape[:2]) < 4:
                    break
                src = cv2.pyrDown(src)
                factor *= 2.0
            # Crop-local matrix: image = factor * src + (x0, y0).
            shift = np.array([[factor, 0, x0], [0, factor, y0], [0, 0, 1]], np.float64)
            local = matrix @ shift
            warped = cv2.warpAffine(src, local, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            return warped.astype(np.float32) / 255.0, matrix
    warped = cv2.warpAffine(src, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped.astype(np.float32) / 255.0, matrix


MeshTarget = FloatArray | Detection | Face


@dataclass
class FaceMesh:
    """MediaPipe's face_landmark.tflite: 468 points from a rotated 192 px face crop.

    `fit` crops a square ROI from the target (box centre, ~1.5x the box, eye line level as MediaPipe
    does), runs the model and maps the points back; then, `refine` times, re-crops from the mesh's own
    bounding square (MediaPipe's landmarks -> ROI step, 1.5x) and runs again. One refinement makes the
    result nearly independent of which detector gave the box (see tests/test_mediapipe_face.py).
    """

    model: LiteModel = field(repr=False)
    refine: int = 1
    mesh_scale: float = 1.5
    box_rois: Mapping[str, BoxRoi] = field(default_factory=lambda: BOX_ROIS)
    input_size: int = 192

    @classmethod
    def load(cls, path: str | os.PathLike[str], refine: int = 1) -> FaceMesh:
        model = LiteModel.load(Path(path))
        shape = model.input_shape()
        if shape[1:] != (192, 192, 3):
            raise ModelUnavailableError(f"{Path(path).name}: expected a 192x192 RGB input, got {shape}")
        return cls(model=model, refine=refine)

    def initial_roi(self, target: MeshTarget) -> Roi:
        """First-pass ROI from a Detection, a Face (its mesh if it has one, else box + kps5 eyes), a box (4,),
        ArcFace kps5 (5, 2) or BlazeFace keypoints (6, 2)."""
        if isinstance(target, Detection):
            return roi_from_box(target.box, target.eyes, self.box_rois[target.detector])
        if isinstance(target, Face):
            mesh = getattr(target, "mesh", None)  # a Face that already has a mesh: start from its settled ROI
            if mesh is not None:
                return self.roi_from_mesh(np.asarray(mesh))
            return roi_from_box(target.box, target.kps5[:2], self.box_rois["box"])
        arr = np.asarray(target, np.float64)
        if arr.shape == (4,):
            return roi_from_box(arr, None, self.box_rois["box"])
        if arr.shape == (5, 2):
            return roi_from_kps5(arr)
        if arr.shape == (6, 2):  # BlazeFace keypoints without their box: the ears span about the box width
            half = float(np.linalg.norm(arr[5] - arr[4])) / 2
            box = np.r_[arr.mean(0) - half, arr.mean(0) + half]
            return roi_from_box(box, arr[:2], self.box_rois["blazeface"])
        raise BadInputError(f"mesh target must be a box (4,), keypoints (5, 2)/(6, 2) or a detection, got {arr.shape}")

    def run(self, image: ImageRGB, roi: Roi) -> MeshFit:
        """One model pass on `roi`."""
        crop, matrix = _crop(image, roi, self.input_size)
        landmarks, logit = sorted(self.model.run(crop[None]), key=lambda a: a.size, reverse=True)
        pts = landmarks.reshape(468, 3).astype(np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        xy = pts[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = pts[:, 2:3] * (roi.size / self.input_size)
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(logit.reshape(-1)[0], -50, 50))))
        points = np.concatenate([xy, z], axis=1).astype(np.float32)
        return MeshFit(points=points, presence=presence, matrix=matrix.astype(np.float32))

    def roi_from_mesh(self, points: FloatArray) -> Roi:
        eyes = np.stack([points[list(MESH_IMAGE_LEFT_EYE), :2].mean(0), points[list(MESH_IMAGE_RIGHT_EYE), :2].mean(0)])
        return roi_from_points(points, _eye_angle(eyes), self.mesh_scale)

    def fit(self, image: ImageRGB, target: MeshTarget, refine: int | None = None) -> MeshFit:
        _check_rgb(image)
        result = self.run(image, self.initial_roi(target))
        for _ in range(self.refine if refine is None else refine):
            result = self.run(image, self.roi_from_mesh(result.points))
        return result


# --------------------------------------------------------------------------------------------------
# Sparse landmark layouts derived from the mesh
# --------------------------------------------------------------------------------------------------


def kps5_from_mesh(points: FloatArray) -> FloatArray:
    """(5, 2) ArcFace order: image-left eye centre, image-right eye centre, nose tip, mouth corners."""
    pts = np.asarray(points)[:, :2].astype(np.float32)
    return np.stack(
        [
            pts[list(MESH_IMAGE_LEFT_EYE)].mean(0),
            pts[list(MESH_IMAGE_RIGHT_EYE)].mean(0),
            pts[MESH_NOSE_TIP],
            pts[MESH_MOUTH_IMAGE_LEFT],
            pts[MESH_MOUTH_IMAGE_RIGHT],
        ]
    ).astype(np.float32)


# iBUG-68 from mesh vertices: each point is one vertex or the mean of two. Chosen per point on the 24 photos
# of ../shared/faces to minimise the mean distance to dlib's 68-point fit (in inter-ocular distances,
# leave-one-photo-out): jaw 0.054, brows 0.043, nose 0.025, eyes 0.025, mouth 0.026; a commonly used
# public table scores 0.078 / 0.071 / 0.036 / 0.034 / 0.031 there. The jaw stays the loosest: dlib follows
# the visible silhouette, a mesh vertex is fixed on the skin.
# fmt: off
MESH_TO_68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16
    (127,), (93, 34), (93, 177), (215, 213), (138, 172), (136,), (149, 150), (176, 148), (152,),
    (400, 377), (378, 379), (365,), (367,), (435, 433), (435, 454), (356, 376), (356,),
    # brows 17-26
    (70, 156), (105, 70), (104, 222), (69, 190), (55, 107), (285, 336), (299, 414), (333, 442), (334, 300), (300, 383),
    # nose 27-35
    (193, 417), (6, 195), (51, 248), (4,), (75,), (97, 99), (2,), (326, 250), (460, 290),
    # eyes 36-47
    (7, 246), (160, 159), (27, 173), (155,), (155, 144), (144,), (382,), (398, 257), (386, 387), (249,), (373,),
    (373, 341),
    # outer lip 48-59
    (185, 57), (39, 74), (37,), (72, 267), (267,), (409, 267), (291,), (321, 405), (314,), (315, 83), (182, 16),
    (95, 182),
    # inner lip 60-67
    (62,), (38,), (13,), (312,), (308,), (317,), (14,), (14, 88),
)
# fmt: on


def landmarks68_from_mesh(points: FloatArray) -> FloatArray:
    """(68, 2) iBUG layout (dlib's order) approximated from the 468 mesh points."""
    pts = np.asarray(points)[:, :2].astype(np.float32)
    return np.stack([pts[list(ids)].mean(0) for ids in MESH_TO_68]).astype(np.float32)
