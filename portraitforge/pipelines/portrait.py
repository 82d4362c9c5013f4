"""Prompt -> Stable Diffusion draft -> refine toward an identity. Composes a diffusers pipeline with the refiner.

    pipe = PortraitPipeline.from_pretrained("stabilityai/sd-turbo", refiner=RefinePipeline.from_config())
    out = pipe("studio portrait of a woman", identity="me.jpg", seed=7, num_images=2)
    out.images[0], out.drafts[0], out.reports[0], out.seeds[0]

Seeds: image i's first draft uses `seed + i` (as AUTOMATIC1111 numbers a batch); when a draft has no face, the
retry k of image i uses `seed + i + k * num_images`, so no two attempts of a run share a seed. Each draft is drawn
alone with its own CPU `torch.Generator`: any image can be redrawn from its recorded seed, byte-identical on CPU,
whatever batch it came from (batched UNet calls may round differently from single ones).
"""

from __future__ import annotations

import inspect
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.resolve import resolve_identity
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.errors import (
    BadInputError,
    ModelUnavailableError,
    OutOfMemoryError,
    ParameterError,
    PortraitForgeError,
)
from portraitforge.models.diffusion import DiffusionModel, LoadOptions, LoraSpec, load_text2image
from portraitforge.models.diffusion.ip_adapter import LoadedIPAdapter, faceid_embeds, load_faceid_adapter, uses_guidance
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.types import STATUS_SEVERITY, Identity, ImageRGB, RefineReport, Status

MAX_SEED = 2**63 - 1


class GenerationCancelled(PortraitForgeError):
    """A progress callback returned False: stop now, nothing more is produced."""

    status = Status.INTERRUPTED


@dataclass(frozen=True)
class ProgressEvent:
    image_index: int
    attempt: int
    seed: int
    step: int  # denoising steps done, 1..total_steps
    total_steps: int


# Return False to cancel (raises GenerationCancelled); None or True goes on.
ProgressCallback = Callable[[ProgressEvent], bool | None]


@dataclass(frozen=True)
class GenerationParameters:
    prompt: str
    negative_prompt: str
    seed: int
    num_images: int
    steps: int
    guidance: float
    width: int
    height: int
    retries: int
    require_face: bool

    def attempt_seed(self, image_index: int, attempt: int) -> int:
        return (self.seed + image_index + attempt * self.num_images) % (MAX_SEED + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Attempt:
    """One drawn (or injected) draft and what became of it."""

    image_index: int
    attempt: int
    seed: int | None  # None for an injected draft
    source: str  # "model" or "injected"
    status: Status
    message: str
    draft: ImageRGB
    metadata: dict[str, Any]
    parameters_text: str  # A1111-style `parameters` chunk
    timings_ms: dict[str, float] = field(default_factory=dict)
    nsfw: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_index": self.image_index,
            "attempt": self.attempt,
            "seed": self.seed,
            "source": self.source,
            "status": self.status.value,
            "message": self.message,
            "nsfw": self.nsfw,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


@dataclass
class PortraitImage:
    """The outcome for one requested image: the final picture, its accepted draft and every attempt."""

    index: int
    status: Status
    message: str
    image: ImageRGB | None  # refined portrait; the draft itself when no identity was given; None on failure
    draft: ImageRGB | None  # the last draft drawn for this image
    seed: int | None  # seed of that draft
    report: RefineReport | None  # the refiner's report for it (None without identity)
    attempts: list[Attempt]
    metadata: dict[str, Any]
    parameters_text: str

    @property
    def ok(self) -> bool:
        return self.status in (Status.OK, Status.LOW_QUALITY)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status.value,
            "message": self.message,
            "seed": self.seed,
            "attempts": [a.to_dict() for a in self.attempts],
            "refine": self.report.to_dict() if self.report is not None else None,
        }


@dataclass
class PortraitOutput:
    """What `PortraitPipeline.__call__` returns, one entry per requested image in every list."""

    images: list[ImageRGB | None]
    drafts: list[ImageRGB | None]
    reports: list[RefineReport | None]
    seeds: list[int | None]
    results: list[PortraitImage]
    parameters: GenerationParameters
    model: dict[str, Any]

    @property
    def status(self) -> Status:
        """The worst status across images (as the CLI's exit code)."""
        return max((r.status for r in self.results), key=STATUS_SEVERITY.__getitem__, default=Status.OK)

    @property
    def attempts(self) -> list[Attempt]:
        return [a for r in self.results for a in r.attempts]


@dataclass
class PortraitPipeline:
    """A loaded diffusers text-to-image model plus an optional refiner. Both are explicit handles."""

    model: DiffusionModel
    refiner: RefinePipeline | None = None
    retries: int = 3  # extra seeds tried per image when the draft shows no face
    id_adapter: LoadedIPAdapter | None = None  # draft-time identity (IP-Adapter FaceID), see `load_id_adapter`

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        refiner: RefinePipeline | RefineConfig | None = None,
        device: str = "auto",
        dtype: str = "auto",
        retries: int = 3,
        scheduler: str | None = None,
        loras: Sequence[LoraSpec | str] = (),
        **load_options: Any,
    ) -> PortraitPipeline:
        """`source`: Hub id, diffusers folder or .safetensors file. Other options: see `LoadOptions`."""
        if isinstance(refiner, RefineConfig):
            refiner = RefinePipeline.from_config(refiner)
        specs = tuple(x if isinstance(x, LoraSpec) else LoraSpec.parse(x) for x in loras)
        options = LoadOptions(device=device, dtype=dtype, scheduler=scheduler, loras=specs, **load_options)
        return cls(model=load_text2image(source, options), refiner=refiner, retries=retries)

    def load_id_adapter(self, path: str | Path, scale: float = 0.7) -> LoadedIPAdapter:
        """Load IP-Adapter FaceID weights into the model: every draft drawn for an identity is then conditioned
        on its ArcFace embedding (`ARCFACE_SPACE`). Once loaded, drafts need an identity."""
        self.id_adapter = load_faceid_adapter(self.model.pipe, path, scale, self.model.loras)
        return self.id_adapter

    # --- public calls ---------------------------------------------------------------------------------------

    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        identity: Identity | str | Path | None = None,
        seed: int | None = 0,
        num_images: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        width: int | None = None,
        height: int | None = None,
        callback: ProgressCallback | None = None,
        retries: int | None = None,
        require_face: bool | None = None,
        drafts: Sequence[ImageRGB] | None = None,
    ) -> PortraitOutput:
        """Generate `num_images` portraits. `drafts` (optional) are used, in attempt order, instead of drawing
        with the model until they run out: tests inject real photos this way, since tiny models draw noise."""
        params = self.parameters(
            prompt, negative_prompt, seed, num_images, steps, guidance, width, height, retries, identity, require_face
        )
        results = list(self.iter_images(params, identity, callback, drafts))
        return PortraitOutput(
            images=[r.image for r in results],
            drafts=[r.draft for r in results],
            reports=[r.report for r in results],
            seeds=[r.seed for r in results],
            results=results,
            parameters=params,
            model=self.model.describe(),
        )

    def refine_draft(self, draft: ImageRGB, identity: Identity | str | Path, prompt: str = "") -> PortraitImage:
        """Refine one given draft (no generation, no retry): the real-photo path of the pipeline."""
        params = self.parameters(prompt, None, 0, 1, None, None, None, None, 0, identity, None)
        return next(self.iter_images(params, identity, None, [draft]))

    def parameters(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        seed: int | None = 0,
        num_images: int = 1,
        steps: int | None = None,
        guidance: float | None = None,
        width: int | None = None,
        height: int | None = None,
        retries: int | None = None,
        identity: object = None,
        require_face: bool | None = None,
    ) -> GenerationParameters:
        """Fill model defaults and validate; every problem is a one-line BadInputError."""
        defaults = self.model.defaults
        if not isinstance(prompt, str):
            raise ParameterError("prompt must be a string")
        if seed is None:
            seed = secrets.randbelow(2**32)  # recorded like any other seed
        if not 0 <= seed <= MAX_SEED:
            raise ParameterError(f"seed {seed} outside 0..{MAX_SEED}")
        if not 1 <= num_images <= 1000:
            raise ParameterError(f"num_images {num_images} outside 1..1000")
        steps = defaults.steps if steps is None else steps
        if not 1 <= steps <= 1000:
            raise ParameterError(f"steps {steps} outside 1..1000")
        guidance = defaults.guidance if guidance is None else float(guidance)
        if not 0.0 <= guidance <= 50.0:
            raise ParameterError(f"guidance {guidance} outside 0..50")
        width = defaults.width if width is None else width
        height = defaults.height if height is None else height
        multiple = 8  # the SD pipelines' check_inputs rule
        for name, value in (("width", width), ("height", height)):
            if value < multiple or value > 4096 or value % multiple:
                raise ParameterError(f"{name} {value} must be a multiple of {multiple} in {multiple}..4096")
        retries = self.retries if retries is None else retries
        if not 0 <= retries <= 100:
            raise ParameterError(f"retries {retries} outside 0..100")
        return GenerationParameters(
            prompt=prompt,
            negative_prompt=negative_prompt or "",
            seed=seed,
            num_images=num_images,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            retries=retries,
            require_face=identity is not None if require_face is None else require_face,
        )

    def iter_images(
        self,
        params: GenerationParameters,
        identity: Identity | str | Path | None = None,
        callback: ProgressCallback | None = None,
        drafts: Sequence[ImageRGB] | None = None,
    ) -> Iterator[PortraitImage]:
        """Yield each image as soon as it is done, so that front ends can save as they go."""
        resolved = self.load_identity(identity)
        if self.id_adapter is not None:
            if resolved is None:
                raise BadInputError("an IP-Adapter FaceID is loaded: drafts need an identity (--identity)")
            identity_arcface(resolved)  # fail before drawing anything
        if params.require_face and self.refiner is None:
            raise BadInputError("checking drafts for a face needs a refiner (it holds the face analyzer)")
        injected = list(drafts or [])
        for index in range(params.num_images):
            attempts: list[Attempt] = []
            for attempt_no in range(params.retries + 1):
                draft_image = injected.pop(0) if injected else None
                attempt, result = self._attempt(params, resolved, index, attempt_no, draft_image, callback)
                attempts.append(attempt)
                if attempt.status is not Status.NO_FACE:
                    break  # done, or failed for a reason another seed would not fix
            yield self._finish(params, resolved, index, attempts, result)

    # --- internals ------------------------------------------------------------------------------------------

    def load_identity(
        self,
        identity: Identity | str | Path | None,
        store: IdentityStore | None = None,
        require_consent: bool = False,
    ) -> Identity | None:
        """An `Identity` as is, or an image path / stored name resolved with the refiner's analyzer.

        `require_consent` refuses identities without a consent record (image paths never have one)."""
        if identity is None or isinstance(identity, Identity):
            if identity is not None and self.refiner is None:
                raise BadInputError("an identity was given but the pipeline has no refiner")
            return identity
        if self.refiner is None:
            raise BadInputError("an identity was given but the pipeline has no refiner")
        return resolve_identity(str(identity), self.refiner.analyzer, store=store, require_consent=require_consent)

    def _attempt(
        self,
        params: GenerationParameters,
        identity: Identity | None,
        index: int,
        attempt_no: int,
        injected: ImageRGB | None,
        callback: ProgressCallback | None,
    ) -> tuple[Attempt, Any]:
        timings: dict[str, float] = {}
        nsfw: bool | None = None
        if injected is None:
            seed: int | None = params.attempt_seed(index, attempt_no)
            start = time.perf_counter()
            embedding = identity_arcface(identity) if self.id_adapter is not None and identity is not None else None
            draft, nsfw = self.draw(params, int(seed or 0), index, attempt_no, callback, embedding)
            timings["generate"] = (time.perf_counter() - start) * 1e3
        else:
            seed, draft = None, _check_rgb(injected)
        status, message, result = Status.OK, "draft drawn", None
        if identity is not None and self.refiner is not None:
            result = self.refiner(draft, identity)
            timings["refine"] = sum(result.report.timings_ms.values())
            status, message = result.report.status, result.report.message
        elif params.require_face and self.refiner is not None:
            start = time.perf_counter()
            faces = self.refiner.analyzer.detect(draft)
            timings["detect"] = (time.perf_counter() - start) * 1e3
            if not faces:
                status, message = Status.NO_FACE, "no face detected in the draft"
            else:
                message = f"draft has {len(faces)} face(s)"
        if status is Status.NO_FACE:
            message = f"no face in the draft (seed {seed})" if seed is not None else "no face in the injected draft"
        source = "model" if injected is None else "injected"
        meta = self._metadata(params, seed, index, attempt_no, "draft", identity=None)
        meta["source"] = source
        attempt = Attempt(
            image_index=index,
            attempt=attempt_no,
            seed=seed,
            source=source,
            status=status,
            message=message,
            draft=draft,
            metadata=meta,
            parameters_text=self._a1111(params, seed, identity=None),
            timings_ms=timings,
            nsfw=nsfw,
        )
        return attempt, result

    def draw(
        self,
        params: GenerationParameters,
        seed: int,
        image_index: int = 0,
        attempt: int = 0,
        callback: ProgressCallback | None = None,
        id_embedding: np.ndarray | None = None,
    ) -> tuple[ImageRGB, bool | None]:
        """One draft from the model with its own CPU generator: RGB uint8 plus the safety checker's flag."""
        array, nsfw = self.draw_array(params, seed, image_index, attempt, callback, id_embedding)
        # Same rounding as diffusers' numpy_to_pil, without the PIL round trip.
        image = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(image), nsfw

    def draw_array(
        self,
        params: GenerationParameters,
        seed: int,
        image_index: int = 0,
        attempt: int = 0,
        callback: ProgressCallback | None = None,
        id_embedding: np.ndarray | None = None,
    ) -> tuple[np.ndarray, bool | None]:
        """`draw` before quantisation: diffusers' float32 HxWx3 output in 0..1. `id_embedding` (the identity's
        ArcFace vector) goes to the loaded IP-Adapter FaceID as `ip_adapter_image_embeds`."""
        pipe = self.model.pipe
        # A CPU generator gives the same initial noise on every device (diffusers' reproducibility advice).
        generator = torch.Generator("cpu").manual_seed(seed)
        kwargs: dict[str, Any] = {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt or None,
            "num_inference_steps": params.steps,
            "guidance_scale": params.guidance,
            "width": params.width,
            "height": params.height,
            "generator": generator,
            "num_images_per_prompt": 1,
            "output_type": "np",
        }
        if self.id_adapter is not None:
            if id_embedding is None:
                raise BadInputError("an IP-Adapter FaceID is loaded: drafts need the identity's ArcFace embedding")
            guided = uses_guidance(pipe, params.guidance)
            embeds = faceid_embeds(id_embedding, guided, self.model.device, self.model.dtype)
            kwargs["ip_adapter_image_embeds"] = [embeds]
        if callback is not None and _accepts(pipe, "callback_on_step_end"):
            kwargs["callback_on_step_end"] = _StepCallback(callback, image_index, attempt, seed, params.steps)
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except torch.OutOfMemoryError:
            raise OutOfMemoryError(
                f"out of memory drawing {params.width}x{params.height} on {self.model.device}: "
                "try a smaller --size, --cpu-offload or --vae-tiling"
            ) from None
        flags = getattr(output, "nsfw_content_detected", None)
        nsfw = bool(flags[0]) if isinstance(flags, list | tuple) and flags and flags[0] is not None else None
        return np.asarray(output.images[0], dtype=np.float32), nsfw

    def _finish(
        self,
        params: GenerationParameters,
        identity: Identity | None,
        index: int,
        attempts: list[Attempt],
        result: Any,
    ) -> PortraitImage:
        last = attempts[-1]
        report: RefineReport | None = result.report if result is not None else None
        if last.status is Status.NO_FACE:
            tried = ", ".join(str(a.seed) if a.seed is not None else "injected" for a in attempts)
            message = f"image {index}: no face in {len(attempts)} draft(s) (seeds tried: {tried})"
        else:
            message = f"image {index}: {last.message}"
        image: ImageRGB | None
        if identity is None:
            image = last.draft if last.status in (Status.OK, Status.LOW_QUALITY) else None
        else:
            image = result.image if result is not None else None
        meta = self._metadata(params, last.seed, index, last.attempt, "portrait", identity)
        meta["seeds_tried"] = [a.seed for a in attempts]
        if report is not None:
            meta["refine_status"] = report.status.value
        return PortraitImage(
            index=index,
            status=last.status,
            message=message,
            image=image,
            draft=last.draft,
            seed=last.seed,
            report=report,
            attempts=attempts,
            metadata=meta,
            parameters_text=self._a1111(params, last.seed, identity),
        )

    def _metadata(
        self,
        params: GenerationParameters,
        seed: int | None,
        index: int,
        attempt: int,
        kind: str,
        identity: Identity | None,
    ) -> dict[str, Any]:
        import diffusers

        from portraitforge import __version__

        model = self.model
        return {
            "kind": kind,
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "seed": seed,
            "steps": params.steps,
            "guidance": params.guidance,
            "width": params.width,
            "height": params.height,
            "scheduler": model.scheduler,
            "sampler": model.sampler_a1111,
            "model": model.describe(),
            "loras": [x.to_dict() for x in model.loras],
            "id_adapter": self.id_adapter.to_dict() if self.id_adapter is not None else None,
            "refiner": self.refiner.params() if identity is not None and self.refiner is not None else None,
            "identity": {"name": identity.name, "sources": identity.sources} if identity is not None else None,
            "image_index": index,
            "attempt": attempt,
            "versions": {"portraitforge": __version__, "diffusers": diffusers.__version__, "torch": torch.__version__},
        }

    def _a1111(self, params: GenerationParameters, seed: int | None, identity: Identity | None) -> str:
        """AUTOMATIC1111's `parameters` text: prompt line, `Negative prompt:` line, then `Key: value` pairs."""
        from portraitforge import __version__

        model = self.model
        fields: list[tuple[str, Any]] = [
            ("Steps", params.steps),
            ("Sampler", model.sampler_a1111),
            ("CFG scale", _num(params.guidance)),
            ("Seed", seed if seed is not None else -1),
            ("Size", f"{params.width}x{params.height}"),
            ("Model hash", model.model_hash[:10]),
            ("Model", model.name),
        ]
        if model.loras:
            fields.append(("Lora hashes", ", ".join(f"{Path(x.path).stem}: {x.sha256[:12]}" for x in model.loras)))
            fields.append(("Lora weights", ", ".join(f"{Path(x.path).stem}: {_num(x.weight)}" for x in model.loras)))
        if self.id_adapter is not None:
            fields.append(("IP-Adapter", f"{self.id_adapter.kind}: {self.id_adapter.sha256[:12]}"))
            fields.append(("IP-Adapter scale", _num(self.id_adapter.scale)))
        if identity is not None and self.refiner is not None:
            cfg = self.refiner.config
            fields.append(("Identity", identity.name))
            fields.append(("Face swap", f"{cfg.swap_engine}, strength {_num(cfg.strength)}, blend {cfg.blend}"))
        fields.append(("Version", f"portraitforge {__version__}"))
        lines = [params.prompt]
        if params.negative_prompt:
            lines.append(f"Negative prompt: {params.negative_prompt}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields))
        return "\n".join(lines)


def identity_arcface(identity: Identity) -> np.ndarray:
    """The identity's ArcFace (buffalo_l w600k_r50) embedding, which IP-Adapter FaceID was trained on. The
    embedded default engine stores dlib/MobileFaceNet vectors instead: another space, unusable here."""
    from portraitforge.refiners.detect_insightface import ARCFACE_SPACE

    vector = identity.embeddings.get(ARCFACE_SPACE)
    if vector is None:
        raise ModelUnavailableError(
            f"identity '{identity.name}' has no ArcFace embedding ({ARCFACE_SPACE}), which IP-Adapter FaceID needs: "
            "run `portraitforge models download --pack buffalo_l` and add the identity again"
        )
    return np.asarray(vector, dtype=np.float32)


class _StepCallback:
    """Adapter for diffusers' `callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict`."""

    def __init__(self, callback: ProgressCallback, image_index: int, attempt: int, seed: int, total: int) -> None:
        self.callback = callback
        self.image_index, self.attempt, self.seed, self.total = image_index, attempt, seed, total

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        event = ProgressEvent(self.image_index, self.attempt, self.seed, step + 1, self.total)
        if self.callback(event) is False:
            raise GenerationCancelled(f"cancelled at step {step + 1} of image {self.image_index}")
        return callback_kwargs


def _accepts(pipe: Any, name: str) -> bool:
    try:
        return name in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False


def _check_rgb(image: ImageRGB) -> ImageRGB:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadInputError("an injected draft must be an RGB uint8 array of shape HxWx3")
    return image


def _num(value: float) -> str:
    return f"{value:g}"


def _quote(value: Any) -> str:
    """A1111 quotes a value only when it holds a comma, colon or newline (modules/generation_parameters_copypaste)."""
    text = str(value)
    if not any(c in text for c in ",:\n"):
        return text
    import json

    return json.dumps(text, ensure_ascii=False)
