"""One batch worker: loads models once, then turns `BatchItem`s into encoded output images.

The same class runs in the driver process (`--workers 1`), in a spawned worker process, and inside a
Ray actor. It never touches the manifest or the output folder: it returns the encoded bytes and the
figures, and the driver writes both. That keeps a single writer and makes Ray results land in the
driver's output folder even when the actor runs on another machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from portraitforge.batch.spec import BatchItem, IdentityRef, LoadedSpec
from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.resolve import resolve_identity
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.imageio import OUTPUT_FORMATS, load_image
from portraitforge.pipelines.refine import RefinePipeline, all_identities
from portraitforge.provenance.nsfw import NsfwGate
from portraitforge.provenance.stamp import ProvenanceOptions, deterministic_id, stamp_image
from portraitforge.types import Identity, ImageRGB, RefineReport, RefineResult, Status


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to load its models. Plain data: it is pickled to processes and actors."""

    mode: Literal["generate", "refine"]
    refine: dict[str, Any]  # RefineConfig fields of the spec (items may sweep some of them)
    output_format: str  # png | jpg | webp
    jpeg_quality: int = 95
    save_drafts: bool = False
    no_face_retries: int = 2
    keep_draft_without_face: bool = False
    store_dir: str | None = None
    require_consent: bool = False
    model_source: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str | None = None
    torch_threads: int | None = None  # fixed per worker so that CPU results do not depend on the backend

    @classmethod
    def from_spec(cls, loaded: LoadedSpec, torch_threads: int | None = None) -> WorkerConfig:
        spec = loaded.spec
        store = loaded.store_dir()
        source = None
        if spec.model is not None:
            # A relative local model path is relative to the spec; anything else is a Hub id.
            candidate = loaded.resolve(spec.model.source)
            source = str(candidate) if candidate.exists() else spec.model.source
        return cls(
            mode=spec.mode,
            refine=spec.refine.model_dump(),
            output_format=spec.output.format,
            jpeg_quality=spec.output.jpeg_quality,
            save_drafts=spec.output.save_drafts,
            no_face_retries=spec.no_face.retries,
            keep_draft_without_face=spec.no_face.on_exhausted == "keep_draft",
            store_dir=str(store) if store else None,
            require_consent=spec.require_consent,
            model_source=source,
            device=spec.model.device if spec.model else "auto",
            dtype=spec.model.dtype if spec.model else "auto",
            scheduler=spec.model.scheduler if spec.model else None,
            torch_threads=torch_threads,
        )


@dataclass
class ItemResult:
    """What a worker hands back for one item. `data` is the encoded output file (None when failed)."""

    item_id: str
    status: Literal["done", "failed"]
    reason: str | None = None
    data: bytes | None = None
    draft_data: bytes | None = None
    quality_status: str | None = None
    quality: dict[str, Any] | None = None
    identity_distance: float | None = None
    seam_score: float | None = None
    sharpness: float | None = None
    seed_used: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    duration_ms: float = 0.0
    worker: str = ""
    retryable: bool = False  # the worker or actor died: not the item's fault, it goes back to pending

    @property
    def sha256(self) -> str | None:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None


class WorkerStartupError(PortraitForgeError):
    """A worker could not load its models: the whole run stops with the underlying status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BatchWorker:
    """Loaded models plus small per-worker caches (identities, refiners per swept config)."""

    config: WorkerConfig
    refiner: RefinePipeline
    generator: Any | None = None  # PortraitPipeline in generate mode
    name: str = ""
    identities: dict[str, Identity] = field(default_factory=dict)
    refused: dict[str, PortraitForgeError] = field(default_factory=dict)  # label -> why its identity is refused
    refiners: dict[str, RefinePipeline] = field(default_factory=dict)

    @classmethod
    def load(cls, config: WorkerConfig, name: str = "") -> BatchWorker:
        if config.torch_threads:
            # This process is a worker we own, so fixing its thread count is ours to do.
            import torch

            torch.set_num_threads(config.torch_threads)
        refine_config = RefineConfig.validated(config.refine, source="refine")
        refiner = RefinePipeline.from_config(refine_config)
        generator = None
        if config.mode == "generate":
            generator = _load_generator(config, refiner)
        return cls(config=config, refiner=refiner, generator=generator, name=name or _default_name())

    # ------------------------------------------------------------------------------ helpers

    def _identity(self, ref: IdentityRef) -> Identity:
        """Loaded once per worker: the store writes one audit line (purpose "batch") and enforces consent; a
        refusal is kept too, so each later item fails with the same line instead of asking again."""
        if ref.label in self.refused:
            raise self.refused[ref.label]
        if ref.label not in self.identities:
            spec = ref.image_path if ref.image_path is not None else str(ref.store_name)
            grader = getattr(self.refiner, "grader", None)
            try:
                self.identities[ref.label] = resolve_identity(
                    spec,
                    self.refiner.analyzer,
                    store_dir=self.config.store_dir,
                    graders=[] if grader is None else [grader],
                    require_consent=self.config.require_consent,
                    purpose="batch",
                )
            except BadInputError as exc:
                self.refused[ref.label] = exc
                raise
        return self.identities[ref.label]

    def _refiner_for(self, refine: dict[str, Any]) -> RefinePipeline:
        key = json.dumps(refine, sort_keys=True)
        if key not in self.refiners:
            cfg = RefineConfig.validated(refine, source="refine")
            self.refiners[key] = self.refiner if cfg == self.refiner.config else self.refiner.with_config(cfg)
        return self.refiners[key]

    def _encode(self, image: ImageRGB, metadata: dict[str, Any], text_chunks: dict[str, str] | None = None) -> bytes:
        fmt = OUTPUT_FORMATS["." + self.config.output_format.replace("jpeg", "jpg")]
        # Watermark + optional C2PA (portraitforge/provenance). The output id is derived from the item so
        # that reruns give the same bytes (a C2PA signature, when configured, carries a time and differs).
        stamped = stamp_image(
            image,
            fmt,
            "batch",
            ProvenanceOptions.from_config(self.refiner.config),
            metadata,
            composite=not metadata.get("draft", False),
            jpeg_quality=self.config.jpeg_quality,
            text_chunks=text_chunks,
            output_id=deterministic_id(
                metadata.get("batch_item"), metadata.get("draft", False), metadata.get("params")
            ),
        )
        return stamped.data

    # ---------------------------------------------------------------------------------- run

    def process(self, item: BatchItem) -> ItemResult:
        """Never raises for a problem with one item: it comes back as a failed result with a reason."""
        start = time.perf_counter()
        try:
            result = self._process(item)
        except PortraitForgeError as exc:
            result = ItemResult(item.id, "failed", reason=f"{exc.status.value}: {exc.message}")
        except MemoryError:
            result = ItemResult(item.id, "failed", reason="OUT_OF_MEMORY: out of memory")
        except Exception as exc:  # one broken item must not stop a 2,000-item batch
            result = ItemResult(item.id, "failed", reason=f"INTERNAL: {type(exc).__name__}: {exc}".splitlines()[0])
        result.duration_ms = (time.perf_counter() - start) * 1e3
        result.worker = self.name
        return result

    def _process(self, item: BatchItem) -> ItemResult:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        identity = self._identity(item.identity)
        timings["identity"] = (time.perf_counter() - t0) * 1e3
        # The refine config's NSFW gate (None unless `nsfw_check: true`, which a sweep may vary): refuse raises
        # NsfwRefusedError, a bad input, so the item fails with a BAD_INPUT reason; blur and flag go on.
        gate = NsfwGate.from_config(self._refiner_for(item.params["refine"]).config)
        if gate is not None:
            t0 = time.perf_counter()
            for used in all_identities(identity):
                gate.check_input(used.reference_crop, f"identity '{used.name}'")
            timings["nsfw"] = (time.perf_counter() - t0) * 1e3
        if self.config.mode == "refine":
            return self._refine_item(item, identity, timings, gate)
        return self._generate_item(item, identity, timings, gate)

    def _refine_item(
        self, item: BatchItem, identity: Identity, timings: dict[str, float], gate: NsfwGate | None = None
    ) -> ItemResult:
        assert item.draft_path is not None
        refiner = self._refiner_for(item.params["refine"])
        t0 = time.perf_counter()
        draft = load_image(item.draft_path, max_pixels=refiner.config.max_pixels).rgb
        timings["load"] = (time.perf_counter() - t0) * 1e3
        if gate is not None:
            t0 = time.perf_counter()
            gate.check_input(draft, "draft")
            timings["nsfw"] = timings.get("nsfw", 0.0) + (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        refined = refiner(draft, identity)
        timings["refine"] = (time.perf_counter() - t0) * 1e3
        return self._finish(item, refined, draft, timings, seed_used=None, attempts=[], gate=gate)

    def _generate_item(
        self, item: BatchItem, identity: Identity, timings: dict[str, float], gate: NsfwGate | None = None
    ) -> ItemResult:
        assert self.generator is not None and item.prompt is not None and item.seed is not None
        model = item.params["model"]
        # The worker owns this pipeline; pointing it at the item's (swept) refiner reloads nothing.
        self.generator.refiner = self._refiner_for(item.params["refine"])
        t0 = time.perf_counter()
        out = self.generator(
            item.prompt,
            negative_prompt=item.negative_prompt or None,
            identity=identity,
            seed=item.seed,
            num_images=1,
            steps=model["steps"],
            guidance=model["guidance"],
            width=model["width"],
            height=model["height"],
            retries=self.config.no_face_retries,
        )
        timings["generate+refine"] = (time.perf_counter() - t0) * 1e3
        res = out.results[0]
        attempts = [a.to_dict() for a in res.attempts]
        for a in attempts:
            a.pop("timings_ms", None)  # keep the manifest's attempt list deterministic
        for a in res.attempts:
            for k, v in a.timings_ms.items():
                timings[f"attempt{a.attempt}.{k}"] = v
        report = res.report
        if report is None:  # no refine happened (no face in any draft): build the status report ourselves
            report = RefineReport(status=res.status, message=res.message)
        else:
            report = replace(report, status=res.status, message=res.message)
        draft = res.draft if res.draft is not None else np.zeros((8, 8, 3), np.uint8)
        if gate is not None and res.draft is not None:  # the draft is only known once the pipeline drew it
            t0 = time.perf_counter()
            gate.check_input(res.draft, "draft")
            timings["nsfw"] = timings.get("nsfw", 0.0) + (time.perf_counter() - t0) * 1e3
        refined = RefineResult(image=res.image if res.ok else None, report=report)
        extra = {"generation": {k: v for k, v in res.metadata.items() if k != "versions"}}
        return self._finish(
            item,
            refined,
            draft,
            timings,
            seed_used=res.seed,
            attempts=attempts,
            extra=extra,
            a1111=res.parameters_text,
            gate=gate,
        )

    def _finish(
        self,
        item: BatchItem,
        refined: RefineResult,
        draft: ImageRGB,
        timings: dict[str, float],
        seed_used: int | None,
        attempts: list[dict[str, Any]],
        extra: dict[str, Any] | None = None,
        a1111: str | None = None,
        gate: NsfwGate | None = None,
    ) -> ItemResult:
        report: RefineReport = refined.report
        timings.update({f"refine.{k}": v for k, v in report.timings_ms.items()})
        quality = _quality(report)
        if gate is not None:
            quality["nsfw"] = gate.report()  # what the input checks found; the output check adds its own below
        status = report.status
        if refined.ok and refined.image is not None:
            image = refined.image
        elif status == Status.NO_FACE and self.config.keep_draft_without_face:
            image = draft  # policy: keep the unrefined draft, flagged NO_FACE
        else:
            return ItemResult(
                item.id,
                "failed",
                reason=f"{status.value}: {report.message}",
                quality_status=status.value,
                quality=quality,
                seed_used=seed_used,
                attempts=attempts,
                timings_ms=timings,
            )
        if gate is not None:
            t0 = time.perf_counter()
            image = gate.check_output(image)  # refuse raises: the item fails, nothing is written
            quality["nsfw"] = gate.report()
            timings["nsfw"] = timings.get("nsfw", 0.0) + (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        # Only deterministic fields go into the file, so that reruns and backends give the same bytes.
        metadata = {
            "batch_item": item.id,
            "params": item.params,
            "seed_used": seed_used,
            "status": status.value,
            "message": report.message,
            "faces": quality.get("faces", []),
            **(extra or {}),
        }
        chunks = {"parameters": a1111} if a1111 else _a1111_parameters(item, seed_used)
        data = self._encode(image, metadata, chunks)
        draft_data = self._encode(draft, {"batch_item": item.id, "draft": True}) if self.config.save_drafts else None
        timings["encode"] = (time.perf_counter() - t0) * 1e3
        primary = _primary_quality(quality)
        return ItemResult(
            item.id,
            "done",
            data=data,
            draft_data=draft_data,
            quality_status=status.value,
            quality=quality,
            identity_distance=primary.get("identity_distance"),
            seam_score=primary.get("seam_score"),
            sharpness=primary.get("sharpness"),
            seed_used=seed_used,
            attempts=attempts,
            timings_ms=timings,
        )


def _quality(report: RefineReport) -> dict[str, Any]:
    d = report.to_dict()
    return {"status": d["status"], "message": d["message"], "faces": d["faces"], "warnings": d["warnings"]}


def _primary_quality(quality: dict[str, Any]) -> dict[str, Any]:
    for face in quality.get("faces", []):
        if face.get("quality"):
            q: dict[str, Any] = face["quality"]
            return q
    return {}


def _a1111_parameters(item: BatchItem, seed_used: int | None) -> dict[str, str] | None:
    """The `parameters` text chunk A1111-aware tools read (prompt, negative, then key: value pairs)."""
    if item.prompt is None:
        return None
    model = item.params.get("model", {})
    fields = [
        f"Steps: {model.get('steps')}",
        f"CFG scale: {model.get('guidance')}",
        f"Seed: {seed_used if seed_used is not None else item.seed}",
        f"Size: {model.get('width')}x{model.get('height')}",
        f"Model: {model.get('source')}",
    ]
    if model.get("scheduler"):
        fields.insert(1, f"Sampler: {model['scheduler']}")
    text = item.prompt + (f"\nNegative prompt: {item.negative_prompt}" if item.negative_prompt else "")
    return {"parameters": text + "\n" + ", ".join(fields)}


def _load_generator(config: WorkerConfig, refiner: RefinePipeline) -> Any:
    try:
        from portraitforge.pipelines.portrait import PortraitPipeline
    except ImportError as exc:
        raise WorkerStartupError(Status.MODEL_UNAVAILABLE, f"generation is not available ({exc})") from None
    assert config.model_source is not None
    pipeline = PortraitPipeline.from_pretrained(
        config.model_source,
        refiner=refiner,
        device=config.device,
        dtype=config.dtype,
        retries=config.no_face_retries,
        scheduler=config.scheduler,
    )
    # One bar per denoising loop would drown the batch progress bar; this pipeline object is ours.
    with contextlib.suppress(AttributeError):
        pipeline.model.pipe.set_progress_bar_config(disable=True)
    return pipeline


def _default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
