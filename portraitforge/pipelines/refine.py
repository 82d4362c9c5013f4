"""The refine pipeline: detect -> align -> upscale -> swap -> adjust -> blend -> grade.

It is a readable list of stage calls. Models are loaded once in `from_config` and held by the
stages; calling the pipeline has no side effects beyond its return value.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.identity import identity_from_image
from portraitforge.embeddings_cache.resolve import assign_by_nearest
from portraitforge.errors import BadInputError, NoFaceError, ParameterError, PortraitForgeError
from portraitforge.models.onnx_runtime import OnnxSessionPool
from portraitforge.models.store import ModelStore
from portraitforge.pipelines.stage_registry import build_stages
from portraitforge.refiners.adjust import FaceAdjuster
from portraitforge.refiners.align import (
    align_face,
    native_crop_size,
    points_to_crop,
    transform_points,
    upscale_matrix,
)
from portraitforge.refiners.base import Blender, FaceAnalyzer, Swapper, Upscaler
from portraitforge.refiners.detail import DetailKeeper
from portraitforge.refiners.detect import DlibFaceAnalyzer, select_faces
from portraitforge.refiners.grade import IdentityGrader, reference_face
from portraitforge.refiners.quality import QualityThresholds, grade_face, warp_mask_to_frame
from portraitforge.refiners.resize import fit_to_box, scale_for_output
from portraitforge.refiners.restore import FaceRestorer
from portraitforge.refiners.upscale import NoUpscaler, upscale_frame
from portraitforge.types import (
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

if TYPE_CHECKING:  # restore_choice imports this module
    from portraitforge.pipelines.restore_choice import RestorerChoice


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


IdentityArg = Identity | Mapping[int, Identity] | Sequence[Identity]
"""One identity for every selected face; `{face_index: identity}`; or a list assigned to faces by nearest embedding."""


@dataclass
class RefinePipeline:
    analyzer: FaceAnalyzer
    swapper: Swapper
    upscaler: Upscaler
    adjuster: FaceAdjuster
    blender: Blender
    config: RefineConfig = field(default_factory=RefineConfig)
    frame_upscaler: Upscaler = field(default_factory=NoUpscaler)  # whole-frame enlargement (output > input)
    onnx_pool: OnnxSessionPool | None = None  # shared ONNX sessions (insightface/inswapper), reused by with_config
    grader: IdentityGrader | None = None  # a second recogniser the engine never steers with
    detail: DetailKeeper | None = None  # the photo's own fine skin detail on the swapped face
    restorer: FaceRestorer | None = None  # face restoration on the swapped crop, before blending
    restorer_choice: RestorerChoice | None = None  # restore: auto, the restorer chosen per identity by the grader
    # Embedded engines: the identity's reference crop (enlarged once by `upscaler`) and its mesh, per identity.
    _reference_cache: dict[tuple[str, str, int], Identity] = field(default_factory=dict, init=False, repr=False)
    _grader_cache: dict[tuple[str, str], FloatArray] = field(default_factory=dict, init=False, repr=False)
    _with_restorer: dict[str, RefinePipeline] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_config(
        cls,
        config: RefineConfig | None = None,
        analyzer: FaceAnalyzer | None = None,
        model_store: ModelStore | None = None,
        onnx_pool: OnnxSessionPool | None = None,
    ) -> RefinePipeline:
        """Build every stage from a config through the stage registries (`pipelines/stage_registry.py`): the one
        place models are loaded. A missing model file fails here, in one line, before any model is loaded.

        Pass `analyzer` (and `onnx_pool`) to share loaded models between pipelines.
        """
        cfg = config or RefineConfig()
        store = model_store if model_store is not None else ModelStore.from_dir(cfg.models_dir)
        pool = onnx_pool if onnx_pool is not None else OnnxSessionPool()
        stages = build_stages(cfg, store, pool, analyzer=analyzer)
        return cls(
            analyzer=stages.analyzer,
            swapper=stages.swapper,
            upscaler=stages.upscaler,
            adjuster=FaceAdjuster(
                smoothing=cfg.smoothing, brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation
            ),
            blender=stages.blender,
            config=cfg,
            frame_upscaler=stages.frame_upscaler,
            onnx_pool=pool,
            grader=stages.grader,
            detail=DetailKeeper() if cfg.keep_detail else None,
            restorer=stages.restorer,
            restorer_choice=stages.restorer_choice,
        )

    def with_config(self, config: RefineConfig) -> RefinePipeline:
        """New parameters, same loaded analyzer when it still fits (cheap: no model is reloaded)."""
        analyzer: FaceAnalyzer | None = None
        if config.resolved_analyzer == self.analyzer.name:
            analyzer = self.analyzer
            if isinstance(analyzer, DlibFaceAnalyzer) and analyzer.detect_max_side != config.detect_max_side:
                analyzer = replace(analyzer, detect_max_side=config.detect_max_side)
        return RefinePipeline.from_config(config, analyzer=analyzer, onnx_pool=self.onnx_pool)

    def identity_from_image(self, image: ImageRGB, name: str = "identity", source: str | None = None) -> Identity:
        return identity_from_image(self.analyzer, image, name, source)

    def params(self) -> dict[str, Any]:
        return self.config.model_dump()

    def stages(self) -> list[Any]:
        optional = [stage for stage in (self.detail, self.grader, self.restorer) if stage is not None]
        return [self.analyzer, self.swapper, self.upscaler, self.adjuster, self.blender, *optional]

    def __call__(
        self,
        target: ImageRGB,
        identity: IdentityArg,
        reference_embedding: FloatArray | None = None,
    ) -> RefineResult:
        """Refine `target` (RGB uint8). Never raises for bad input: the report carries status and message."""
        if self.restorer_choice is not None and all_identities(identity):
            return self._with_chosen_restorer(target, identity, reference_embedding)
        timer = StageTimer()
        report = RefineReport(
            status=Status.OK,
            message="",
            identity=identity_label(identity),
            identity_cache_hit=all_identities(identity) != [] and all(i.cache_hit for i in all_identities(identity)),
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

    def _with_chosen_restorer(
        self, target: ImageRGB, identity: IdentityArg, reference_embedding: FloatArray | None
    ) -> RefineResult:
        """`restore: auto`: the first identity's restorer, measured once on this target (cached per identity)."""
        assert self.restorer_choice is not None
        base = self._restorer_pipeline(None)
        first = all_identities(identity)[0]
        try:
            name = self.restorer_choice.choose(base, first, [target])
        except PortraitForgeError:  # no face to measure on: the plain refine reports why
            name = "none"
        result = self._restorer_pipeline(name)(target, identity, reference_embedding)
        result.report.parameters = {**result.report.parameters, "restore_chosen": name}
        return result

    def _restorer_pipeline(self, name: str | None) -> RefinePipeline:
        """This pipeline with one fixed restorer (None/"none": no restoration), built once and kept with its caches."""
        key = name or "none"
        if key not in self._with_restorer:
            assert self.restorer_choice is not None
            restorer = self.restorer_choice.candidates.get(key)
            self._with_restorer[key] = replace(self, restorer=restorer, restorer_choice=None)
        return self._with_restorer[key]

    def _refine(
        self,
        target: ImageRGB,
        identity: IdentityArg,
        reference_embedding: FloatArray | None,
        timer: StageTimer,
        report: RefineReport,
    ) -> ImageRGB:
        cfg = self.config
        if not isinstance(target, np.ndarray) or target.ndim != 3 or target.shape[2] != 3 or target.dtype != np.uint8:
            raise BadInputError("target must be an RGB uint8 array of shape HxWx3")
        space = self.analyzer.embedding_space
        identities = all_identities(identity)
        if not identities:
            raise BadInputError("no identity given")
        for ident in identities:
            if space not in ident.embeddings:
                raise BadInputError(
                    f"identity '{ident.name}' has no '{space}' embedding (it has: {', '.join(ident.embeddings)}); "
                    f"rebuild it with the {self.analyzer.name} analyzer"
                )
        resolution = cfg.parsed_resolution

        with timer("resize"):
            frame = scale_for_output(target, resolution, cfg.fit)
        if self.frame_upscaler.scale > 1 and frame.shape[0] > target.shape[0]:
            with timer("upscale_frame"):
                # Enlarge with the model, then resample to the exact output scale (the model's factor is fixed).
                enlarged = upscale_frame(self.frame_upscaler, target, max_output_pixels=cfg.max_pixels)
                frame = cv2.resize(enlarged, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_AREA)
        with timer("detect"):
            faces = self.analyzer.detect(frame)
        if not faces:
            raise _no_face()
        with timer("select"):
            assignment = self._assign(frame, faces, identity, reference_embedding)
        if not assignment:
            raise NoFaceError(f"none of the {len(faces)} detected face(s) matches the face mapping")
        if isinstance(identity, Mapping):
            missing = sorted(set(identity) - set(assignment))
            if missing:
                report.warnings.append(f"face(s) {missing} of the mapping not found ({len(faces)} face(s) detected)")
        original = frame
        result = frame.copy()
        problems: list[str] = []
        for index, ident in sorted(assignment.items()):
            face = faces[index]
            face_report = FaceReport(
                index=index,
                box=[float(v) for v in face.box],
                detection_score=face.score,
                landmarks_confidence=face.landmarks_confidence,
                identity=ident.name,
            )
            report.faces.append(face_report)
            if cfg.strength == 0.0:
                continue  # strength 0 gives the target back untouched
            result, frame_mask, source_scale = self._refine_face(result, face, ident, timer)
            with timer("grade"):
                quality = self._grade(result, original, face, frame_mask, ident, source_scale)
            face_report.quality = quality
            thresholds = QualityThresholds(cfg.max_identity_distance, cfg.max_seam_score, cfg.min_sharpness_ratio)
            problems += [f"face {index}: {p}" for p in thresholds.problems(quality, face.landmarks_confidence)]
        with timer("resize"):
            result = fit_to_box(result, resolution, cfg.fit)
        n = len(assignment)
        if problems:
            report.status = Status.LOW_QUALITY
            report.message = f"refined {n} of {len(faces)} face(s) with low quality: {'; '.join(problems)}"
        else:
            report.message = f"refined {n} of {len(faces)} face(s) toward '{report.identity}'"
        return result

    def _assign(
        self,
        frame: ImageRGB,
        faces: list[Face],
        identity: IdentityArg,
        reference_embedding: FloatArray | None,
    ) -> dict[int, Identity]:
        """Which face becomes which identity, by face index (reading order)."""
        cfg = self.config
        if isinstance(identity, Identity):
            if cfg.select == "reference":
                faces[:] = [replace(f, embedding=self.analyzer.embed(frame, f)) for f in faces]
            chosen = select_faces(faces, cfg.select, cfg.face_index, reference_embedding, self.analyzer.distance)
            return {next(i for i, f in enumerate(faces) if f is face): identity for face in chosen}
        if isinstance(identity, Mapping):
            return {i: ident for i, ident in identity.items() if 0 <= i < len(faces)}
        # A list: each identity goes to the face most like it (one face per identity).
        space = self.analyzer.embedding_space
        faces[:] = [
            f if f.embedding is not None else replace(f, embedding=self.analyzer.embed(frame, f)) for f in faces
        ]
        embeddings = [f.embedding for f in faces if f.embedding is not None]
        return assign_by_nearest(embeddings, list(identity), space, self.analyzer.distance)

    def _refine_face(
        self, frame: ImageRGB, face: Face, identity: Identity, timer: StageTimer
    ) -> tuple[ImageRGB, np.ndarray, float]:
        """The frame with this face refined, the blended region in frame coordinates, and the swap's source
        scale (how much the painted-in pixels were enlarged)."""
        cfg = self.config
        with timer("align"):
            size = native_crop_size(face.kps5, cfg.crop_margin, maximum=cfg.max_crop)
            crop = align_face(frame, face.kps5, size, cfg.crop_margin)
        with timer("upscale"):
            identity = self._identity_for_crop(identity, crop.size)
        face_in_crop = face_to_crop(face, crop.matrix)
        with timer("swap"):
            swapped = self.swapper(crop, face_in_crop, identity, cfg.strength)
        if self.restorer is not None:
            with timer("restore"):
                swapped = replace(swapped, image=self.restorer(swapped.image))
        with timer("adjust"):
            adjusted = self.adjuster(swapped.image, swapped.mask)
        with timer("blend"):
            blended = self.blender(frame, adjusted, swapped.mask, crop.inverse)
        if self.detail is not None and swapped.detail_mask is not None and swapped.face_height:
            with timer("detail"):
                blended = self.detail(blended, frame, swapped.detail_mask, crop.inverse, swapped.face_height)
        frame_mask = warp_mask_to_frame(swapped.mask, crop.inverse, frame.shape)
        return blended, frame_mask, swapped.source_scale

    def _identity_for_crop(self, identity: Identity, crop_size: int) -> Identity:
        """The embedded engines paint the identity's reference pixels into the target, so the reference crop is
        what the upscaler enlarges (once per identity), when it is smaller than the target face crop. Enlarging
        the target crop instead would only sharpen pixels the swap replaces. The mesh engine also needs the
        reference's mesh (fitted once when the identity came from the store). The inswapper engine upscales the
        target crop itself (see `swap_order`)."""
        engine = self.config.swap_engine
        if engine == "inswapper":
            return identity
        enlarge = self.upscaler.scale > 1 and identity.reference_crop.shape[0] < crop_size
        needs_mesh = engine == "mesh" and identity.reference_mesh is None
        if not enlarge and not needs_mesh:
            return identity
        digest = hashlib.sha256(np.ascontiguousarray(identity.reference_crop).tobytes()).hexdigest()
        key = (identity.name, digest, int(enlarge))
        if key not in self._reference_cache:
            prepared = identity
            if needs_mesh:
                fit_mesh = getattr(self.analyzer, "fit_mesh", None)
                if fit_mesh is None:
                    raise ParameterError("the mesh swap engine needs the mesh analyzer (analyzer: mesh)")
                kps5 = reference_face(identity).kps5
                prepared = replace(prepared, reference_mesh=fit_mesh(identity.reference_crop, kps5))
            if enlarge:
                image = self.upscaler(prepared.reference_crop)
                factor = image.shape[0] / prepared.reference_crop.shape[0]
                matrix = upscale_matrix(factor)
                mesh = prepared.reference_mesh
                prepared = replace(
                    prepared,
                    reference_crop=image,
                    reference_landmarks68=transform_points(prepared.reference_landmarks68, matrix),
                    reference_mesh=None if mesh is None else points_to_crop(mesh, matrix),
                )
            self._reference_cache[key] = prepared
        cached = self._reference_cache[key]
        return replace(
            identity,
            reference_crop=cached.reference_crop,
            reference_landmarks68=cached.reference_landmarks68,
            reference_mesh=cached.reference_mesh,
        )

    def _grade(
        self,
        result: ImageRGB,
        original: ImageRGB,
        face: Face,
        frame_mask: np.ndarray,
        identity: Identity,
        source_scale: float,
    ) -> FaceQuality:
        identity_vec = identity.embeddings[self.analyzer.embedding_space]
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
        quality = grade_face(
            result[y0:y1, x0:x1],
            original[y0:y1, x0:x1],
            frame_mask[y0:y1, x0:x1],
            identity_distance=self.analyzer.distance(result_vec, identity_vec),
            original_distance=self.analyzer.distance(result_vec, original_vec),
            source_scale=source_scale,
        )
        if self.grader is not None:
            grader = self.grader
            quality.grader = grader.score(result, refit, original, face, self._grader_identity(identity))
        return quality

    def _grader_identity(self, identity: Identity) -> FloatArray:
        """The identity in the grader's space: stored (the store keeps it), else from its reference crop, once."""
        assert self.grader is not None
        stored = identity.embeddings.get(self.grader.embedding_space)
        if stored is not None:
            return stored
        key = (identity.name, hashlib.sha256(np.ascontiguousarray(identity.reference_crop).tobytes()).hexdigest())
        if key not in self._grader_cache:
            self._grader_cache[key] = self.grader.reference_embedding(identity)
        return self._grader_cache[key]


def all_identities(identity: IdentityArg) -> list[Identity]:
    if isinstance(identity, Identity):
        return [identity]
    if isinstance(identity, Mapping):
        return list(identity.values())
    return list(identity)


def identity_label(identity: IdentityArg) -> str:
    if isinstance(identity, Identity):
        return identity.name
    if isinstance(identity, Mapping):
        return ",".join(f"{i}={ident.name}" for i, ident in sorted(identity.items()))
    return ",".join(ident.name for ident in identity)


def face_to_crop(face: Face, matrix: FloatArray) -> Face:
    """`face` in the coordinates of the crop that `matrix` (image -> crop) produces."""
    corners = transform_points(
        np.array(
            [
                [face.box[0], face.box[1]],
                [face.box[2], face.box[1]],
                [face.box[0], face.box[3]],
                [face.box[2], face.box[3]],
            ],
            np.float32,
        ),
        matrix,
    )
    return replace(
        face,
        box=np.array([*corners.min(0), *corners.max(0)], np.float32),
        kps5=transform_points(face.kps5, matrix),
        landmarks68=None if face.landmarks68 is None else transform_points(face.landmarks68, matrix),
        mesh=None if face.mesh is None else points_to_crop(face.mesh, matrix),
    )


def _no_face() -> PortraitForgeError:
    return NoFaceError("no face detected in the target image")
