"""The refine pipeline: detect -> align -> upscale -> swap -> adjust -> blend -> grade.

It is a readable list of stage calls. Models are loaded once in `from_config` and held by the
stages; calling the pipeline has no side effects beyond its return value.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.identity import identity_from_image
from portraitforge.errors import BadInputError, NoFaceError, PortraitForgeError
from portraitforge.refiners.adjust import FaceAdjuster
from portraitforge.refiners.align import align_face, invert_affine, native_crop_size, transform_points
from portraitforge.refiners.base import FaceAnalyzer, Swapper, Upscaler
from portraitforge.refiners.blend import FaceBlender
from portraitforge.refiners.detect import DlibFaceAnalyzer, select_faces
from portraitforge.refiners.quality import QualityThresholds, grade_face, warp_mask_to_frame
from portraitforge.refiners.resize import fit_to_box, scale_for_output
from portraitforge.refiners.swap import LandmarkSwapper
from portraitforge.refiners.upscale import build_upscaler
from portraitforge.types import (
    AlignedCrop,
    Face,
    FaceQuality,
    FaceReport,
    FloatArray,
    Identity,
    ImageRGB,
    RefineReport,
    RefineResult,
    Status,
)


@dataclass
class StageTimer:
    """Accumulates wall time per stage name, in milliseconds."""

    timings_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings_ms[stage] = self.timings_ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3


@dataclass
class RefinePipeline:
    analyzer: FaceAnalyzer
    swapper: Swapper
    upscaler: Upscaler
    adjuster: FaceAdjuster
    blender: FaceBlender
    config: RefineConfig = field(default_factory=RefineConfig)

    @classmethod
    def from_config(cls, config: RefineConfig | None = None, analyzer: FaceAnalyzer | None = None) -> RefinePipeline:
        """Build every stage from a config. Pass `analyzer` to share loaded models between pipelines."""
        cfg = config or RefineConfig()
        return cls(
            analyzer=analyzer or DlibFaceAnalyzer.load(detect_max_side=cfg.detect_max_side),
            swapper=LandmarkSwapper(mask_shape=cfg.mask, feather=cfg.feather, color_transfer=cfg.color_transfer),
            upscaler=build_upscaler(cfg.upscaler),
            adjuster=FaceAdjuster(
                smoothing=cfg.smoothing, brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation
            ),
            blender=FaceBlender(mode=cfg.blend),
            config=cfg,
        )

    def with_config(self, config: RefineConfig) -> RefinePipeline:
        """Same loaded models, new parameters (cheap: no model is reloaded)."""
        return RefinePipeline.from_config(config, analyzer=self.analyzer)

    def identity_from_image(self, image: ImageRGB, name: str = "identity", source: str | None = None) -> Identity:
        return identity_from_image(self.analyzer, image, name, source)

    def params(self) -> dict[str, Any]:
        return self.config.model_dump()

    def stages(self) -> list[Any]:
        return [self.analyzer, self.swapper, self.upscaler, self.adjuster, self.blender]

    def __call__(
        self,
        target: ImageRGB,
        identity: Identity,
        reference_embedding: FloatArray | None = None,
    ) -> RefineResult:
        timer = StageTimer()
        report = RefineReport(
            status=Status.OK,
            message="",
            identity=identity.name,
            identity_cache_hit=identity.cache_hit,
            parameters=self.params(),
        )
        report.timings_ms = timer.timings_ms
        try:
            image = self._refine(target, identity, reference_embedding, timer, report)
        except PortraitForgeError as exc:
            report.status, report.message = exc.status, exc.message
            return RefineResult(image=None, report=report)
        except MemoryError:
            report.status, report.message = Status.OUT_OF_MEMORY, "out of memory while refining"
            return RefineResult(image=None, report=report)
        return RefineResult(image=image, report=report)

    def _refine(
        self,
        target: ImageRGB,
        identity: Identity,
        reference_embedding: FloatArray | None,
        timer: StageTimer,
        report: RefineReport,
    ) -> ImageRGB:
        cfg = self.config
        if not isinstance(target, np.ndarray) or target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
            raise BadInputError("target must be an RGB uint8 array of shape HxWx3")
        space = self.analyzer.embedding_space
        if space not in identity.embeddings:
            raise BadInputError(
                f"identity '{identity.name}' has no '{space}' embedding (it has: {', '.join(identity.embeddings)})"
            )
        identity_vec = identity.embeddings[space]
        resolution = cfg.parsed_resolution

        with timer("resize"):
            frame = scale_for_output(target, resolution, cfg.fit)
        with timer("detect"):
            faces = self.analyzer.detect(frame)
        if not faces:
            raise _no_face()
        with timer("select"):
            if cfg.select == "reference":
                faces = [replace(f, embedding=self.analyzer.embed(frame, f)) for f in faces]
            chosen = select_faces(faces, cfg.select, cfg.face_index, reference_embedding, self.analyzer.distance)
        original = frame
        result = frame.copy()
        problems: list[str] = []
        for face in chosen:
            index = next(i for i, f in enumerate(faces) if f is face)
            face_report = FaceReport(
                index=index,
                box=[float(v) for v in face.box],
                detection_score=face.score,
                landmarks_confidence=face.landmarks_confidence,
            )
            report.faces.append(face_report)
            if cfg.strength == 0.0:
                continue  # strength 0 gives the target back untouched
            result, frame_mask = self._refine_face(result, face, identity, timer)
            with timer("grade"):
                quality = self._grade(result, original, face, frame_mask, identity_vec)
            face_report.quality = quality
            thresholds = QualityThresholds(cfg.max_identity_distance, cfg.max_seam_score, cfg.min_sharpness_ratio)
            problems += [f"face {index}: {p}" for p in thresholds.problems(quality, face.landmarks_confidence)]
        with timer("resize"):
            result = fit_to_box(result, resolution, cfg.fit)
        n = len(chosen)
        if problems:
            report.status = Status.LOW_QUALITY
            report.message = f"refined {n} of {len(faces)} face(s) with low quality: {'; '.join(problems)}"
        else:
            report.message = f"refined {n} of {len(faces)} face(s) toward '{identity.name}'"
        return result

    def _refine_face(
        self, frame: ImageRGB, face: Face, identity: Identity, timer: StageTimer
    ) -> tuple[ImageRGB, np.ndarray]:
        cfg = self.config
        with timer("align"):
            size = native_crop_size(face.kps5, cfg.crop_margin, maximum=cfg.max_crop)
            crop = align_face(frame, face.kps5, size, cfg.crop_margin)
        with timer("upscale"):
            crop = self._upscale(crop)
        landmarks = face.landmarks68 if face.landmarks68 is not None else face.kps5
        face_in_crop = replace(
            face,
            kps5=transform_points(face.kps5, crop.matrix),
            landmarks68=transform_points(landmarks, crop.matrix) if face.landmarks68 is not None else None,
        )
        with timer("swap"):
            swapped = self.swapper(crop, face_in_crop, identity, cfg.strength)
        with timer("adjust"):
            adjusted = self.adjuster(swapped.image, swapped.mask)
        with timer("blend"):
            blended = self.blender(frame, adjusted, swapped.mask, crop.inverse)
        frame_mask = warp_mask_to_frame(swapped.mask, crop.inverse, frame.shape)
        return blended, frame_mask

    def _upscale(self, crop: AlignedCrop) -> AlignedCrop:
        if self.upscaler.scale == 1:
            return crop
        image = self.upscaler(crop.image)
        s = image.shape[0] / crop.image.shape[0]
        matrix = (crop.matrix * s).astype(np.float32)
        return AlignedCrop(image=image, matrix=matrix, inverse=invert_affine(matrix))

    def _grade(
        self, result: ImageRGB, original: ImageRGB, face: Face, frame_mask: np.ndarray, identity_vec: FloatArray
    ) -> FaceQuality:
        refit = self.analyzer.landmarks(result, face)
        result_vec = self.analyzer.embed(result, refit)
        original_vec = face.embedding if face.embedding is not None else self.analyzer.embed(original, face)
        ys, xs = np.nonzero(frame_mask > 1e-3)
        if len(xs) == 0:
            y0 = x0 = 0
            y1, x1 = frame_mask.shape
        else:
            pad = 8
            y0, x0 = max(0, ys.min() - pad), max(0, xs.min() - pad)
            y1, x1 = ys.max() + pad + 1, xs.max() + pad + 1
        return grade_face(
            result[y0:y1, x0:x1],
            original[y0:y1, x0:x1],
            frame_mask[y0:y1, x0:x1],
            identity_distance=self.analyzer.distance(result_vec, identity_vec),
            original_distance=self.analyzer.distance(result_vec, original_vec),
        )


def _no_face() -> PortraitForgeError:
    return NoFaceError("no face detected in the target image")
