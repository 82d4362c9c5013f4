"""The web UI (gradio): a "Swap" tab over `RefinePipeline` and an on-demand "Generate" tab over `PortraitPipeline`.

    from portraitforge.ui import build_app
    build_app().launch()            # or: portraitforge ui --port 7860

No module-level state: every loaded model lives in the `UIState` of one app instance, created lazily on the first
request. The handlers (`run_swap`, `run_generate`) are plain functions of that state and the control values, so
they are tested without a browser; the gradio layer only wires components to them. Every failure is shown as one
status line (`STATUS: message`), never a traceback.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.provenance.stamp import ProvenanceOptions, mark_pixels
from portraitforge.types import Identity, ImageRGB, Status

if TYPE_CHECKING:  # gradio, torch and diffusers are imported when the app is built or a model is loaded
    import gradio as gr

    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.pipelines.portrait import PortraitPipeline, ProgressEvent
    from portraitforge.pipelines.refine import RefinePipeline

PipelineFactory = Callable[[RefineConfig], "RefinePipeline"]
PortraitFactory = Callable[[str, "RefinePipeline"], "PortraitPipeline"]
ImageInput = ImageRGB | str | Path | None

UPSCALERS = ("none", "lanczos", "realesrgan-x4plus")
RESOLUTIONS = ("original", "512", "1024", "2048")
NO_STORED_IDENTITY = ""  # dropdown value meaning "use the uploaded photo" (never a valid identity name)
IDENTITY_CACHE_SIZE = 8

_DEFAULTS = RefineConfig()  # immutable: the controls' initial values
# The RefineConfig field of every Swap-tab control, in the order the UI passes them to `run_swap`.
SWAP_CONTROLS: tuple[str, ...] = (
    "strength",
    "swap_engine",
    "select",
    "face_index",
    "mask",
    "feather",
    "color_transfer",
    "blend",
    "smoothing",
    "brightness",
    "contrast",
    "saturation",
    "resolution",
    "fit",
    "upscaler",
)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def status_line(status: Status | str, message: str) -> str:
    return one_line(f"{Status(status).value}: {message}")


def _failure(status: Status, message: str) -> dict[str, Any]:
    return {"status": status.value, "message": one_line(message)}


# ----------------------------------------------------------------------------------------------------- state


def _default_pipeline_factory(config: RefineConfig) -> RefinePipeline:
    from portraitforge.pipelines.refine import RefinePipeline

    return RefinePipeline.from_config(config)


def _default_portrait_factory(source: str, refiner: RefinePipeline) -> PortraitPipeline:
    from portraitforge.pipelines.portrait import PortraitPipeline

    return PortraitPipeline.from_pretrained(source, refiner=refiner)


class UIState:
    """Models and caches of one app instance. Thread-safe: gradio runs handlers in worker threads, and one lock
    serialises model use (the CPU is the bottleneck anyway, and the loaded models are shared)."""

    def __init__(
        self,
        pipeline_factory: PipelineFactory | None = None,
        store_dir: str | Path | None = None,
        portrait_factory: PortraitFactory | None = None,
    ) -> None:
        self.pipeline_factory = pipeline_factory or _default_pipeline_factory
        self.portrait_factory = portrait_factory or _default_portrait_factory
        self.store_dir = store_dir
        self.lock = threading.RLock()
        self._bases: dict[str, RefinePipeline] = {}  # resolved analyzer name -> first pipeline built with it
        self._configured: tuple[RefineConfig, RefinePipeline] | None = None
        self._identities: OrderedDict[tuple[str, str, str], Identity] = OrderedDict()
        self._store: IdentityStore | None = None
        self._portrait: tuple[str, PortraitPipeline] | None = None

    # ---- refine pipeline

    def pipeline(self, config: RefineConfig) -> RefinePipeline:
        """Built once per analyzer kind (models load here); new parameters reuse it via `with_config`."""
        with self.lock:
            if self._configured is not None and self._configured[0] == config:
                return self._configured[1]
            kind = config.resolved_analyzer
            base = self._bases.get(kind)
            if base is None:
                pipe = self.pipeline_factory(config)
                self._bases[kind] = pipe
            else:
                pipe = base if base.config == config else base.with_config(config)
            self._configured = (config, pipe)
            return pipe

    # ---- identities

    def store(self) -> IdentityStore:
        with self.lock:
            if self._store is None:
                from portraitforge.embeddings_cache.store import IdentityStore

                self._store = IdentityStore(self.store_dir)
            return self._store

    def identity_names(self) -> list[str]:
        try:
            return self.store().names()
        except (OSError, PortraitForgeError):
            return []

    def identity(self, pipe: RefinePipeline, image: ImageInput, name: str | None, max_pixels: int) -> Identity:
        """A stored identity when `name` is given (it wins over the photo), else one built from the photo
        (cached by pixel digest, so moving a slider does not re-embed the same upload)."""
        if name:
            return self.store().get(name, pipe.analyzer)
        if image is None:
            raise BadInputError("no identity: upload an identity photo or choose a stored identity")
        rgb, label = _as_rgb(image, "identity photo", max_pixels)
        label = label or "uploaded"
        digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        key = (digest, pipe.analyzer.embedding_space, str(getattr(pipe.analyzer, "name", "")))
        with self.lock:
            cached = self._identities.get(key)
            if cached is not None:
                self._identities.move_to_end(key)
                return cached if cached.name == label else replace(cached, name=label)
        identity = pipe.identity_from_image(rgb, label, source=label)
        with self.lock:
            self._identities[key] = identity
            while len(self._identities) > IDENTITY_CACHE_SIZE:
                self._identities.popitem(last=False)
        return identity

    # ---- generation

    def portrait(self, source: str, refiner: RefinePipeline) -> PortraitPipeline:
        """One text-to-image model at a time (they are large); the refiner is swapped in per call."""
        with self.lock:
            if self._portrait is None or self._portrait[0] != source:
                self._portrait = None  # drop the old model before loading the new one
                self._portrait = (source, self.portrait_factory(source, refiner))
            return replace(self._portrait[1], refiner=refiner)


# ----------------------------------------------------------------------------------------------------- inputs


def _as_rgb(image: Any, what: str, max_pixels: int) -> tuple[ImageRGB, str | None]:
    """An upload (file path, numpy array or PIL image) as RGB uint8, plus a name for it when known."""
    if isinstance(image, (str, Path)):
        from portraitforge.imageio import load_image

        path = Path(image)
        return load_image(path, max_pixels=max_pixels).rgb, path.stem
    if not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise BadInputError(f"{what}: unsupported value of type {type(image).__name__}")
        from portraitforge.imageio import pil_to_rgb

        image = pil_to_rgb(image)[0]
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise BadInputError(f"{what}: expected 8-bit pixels, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise BadInputError(f"{what}: expected an HxWx3 image, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        array = array[..., :3]
    if array.shape[0] * array.shape[1] > max_pixels:
        raise BadInputError(f"{what}: {array.shape[1]}x{array.shape[0]} exceeds the limit of {max_pixels} pixels")
    return np.ascontiguousarray(array), None


def swap_config(params: dict[str, Any]) -> RefineConfig:
    """Control values -> a validated RefineConfig (ParameterError names the first bad field)."""
    values = {k: v for k, v in params.items() if v is not None}
    if "face_index" in values and isinstance(values["face_index"], float) and values["face_index"].is_integer():
        values["face_index"] = int(values["face_index"])  # number boxes send floats
    values.setdefault("analyzer", "auto")  # the engine decides which analyzer fits it
    return RefineConfig.validated(values)


def comparison(target: ImageRGB, identity: Identity | None, result: ImageRGB, height: int = 384) -> ImageRGB:
    """target | identity reference | result, labelled, at one height."""
    from portraitforge.demo import labelled

    tiles = [labelled(target, "target", height)]
    if identity is not None:
        tiles.append(labelled(identity.reference_crop, f"identity: {identity.name}"[:40], height))
    tiles.append(labelled(result, "result", height))
    return np.concatenate(tiles, axis=1)


@contextmanager
def _errors_to_line(out: dict[str, Any]) -> Iterator[None]:
    """Any failure -> `out["status"]`, `out["message"]` (one line). Never lets an exception reach gradio."""
    try:
        yield
    except PortraitForgeError as exc:
        out.update(status=exc.status, message=exc.message)
    except MemoryError:
        out.update(status=Status.OUT_OF_MEMORY, message="out of memory")
    except Exception as exc:  # last resort: the UI shows one line, like the CLI
        first = str(exc).splitlines()[0] if str(exc) else ""
        out.update(status=Status.INTERNAL, message=f"internal error: {type(exc).__name__}: {first}")


# ----------------------------------------------------------------------------------------------------- handlers

SwapOutputs = tuple[ImageRGB | None, ImageRGB | None, dict[str, Any], str]


def run_swap(
    state: UIState,
    target: ImageInput,
    identity_image: ImageInput = None,
    identity_name: str | None = None,
    **params: Any,
) -> SwapOutputs:
    """Refine `target` toward an identity (a stored name wins over an uploaded photo).

    `params` are RefineConfig fields (strength=0.8, blend="multiband", ...). Returns
    (result image | None, comparison sheet | None, report dict, one-line status message).
    """
    failure: dict[str, Any] = {}
    with _errors_to_line(failure):
        cfg = swap_config(params)
        if target is None:
            raise BadInputError("no target image: upload the photo whose face should change")
        target_rgb, _ = _as_rgb(target, "target image", cfg.max_pixels)
        with state.lock:
            pipe = state.pipeline(cfg)
            identity = state.identity(pipe, identity_image, identity_name or None, cfg.max_pixels)
            result = pipe(target_rgb, identity)
        report = result.report
        report_dict = report.to_dict()
        line = status_line(report.status, report.message)
        if result.image is None:
            return None, None, report_dict, line
        options = ProvenanceOptions.from_config(cfg)  # every image the UI hands out carries the watermark
        image, report_dict["provenance"] = mark_pixels(result.image, "ui", options)
        sheet = mark_pixels(comparison(target_rgb, identity, result.image), "ui", options)[0]
        return image, sheet, report_dict, line
    status = failure.get("status", Status.INTERNAL)
    message = failure.get("message", "unknown failure")
    return None, None, _failure(status, message), status_line(status, message)


GenerateOutputs = tuple[ImageRGB | None, ImageRGB | None, dict[str, Any], str]


def run_generate(
    state: UIState,
    model_source: str,
    prompt: str,
    negative_prompt: str = "",
    seed: float | None = -1,
    steps: float | None = 0,
    guidance: float | None = -1,
    size: str = "",
    identity_image: ImageInput = None,
    identity_name: str | None = None,
    strength: float = 1.0,
    callback: Callable[[ProgressEvent], Any] | None = None,
) -> GenerateOutputs:
    """Draw one portrait from `prompt` with the model at `model_source` (loaded on first use and kept), refined
    toward the identity when one is given. Negative seed/steps/guidance and an empty size mean "default".

    Returns (portrait | None, draft | None, report dict, one-line status message).
    """
    failure: dict[str, Any] = {}
    with _errors_to_line(failure):
        source = (model_source or "").strip()
        if not source:
            raise BadInputError("no model: give a Hub id, a diffusers folder or a .safetensors checkpoint")
        if not (prompt or "").strip():
            raise BadInputError("the prompt is empty")
        width = height = None
        if size and size.strip():
            from portraitforge.cli_generate import parse_size

            width, height = parse_size(size)
        cfg = swap_config({"strength": strength})
        with state.lock:
            refiner = state.pipeline(cfg)
            identity = None
            if identity_name or identity_image is not None:
                identity = state.identity(refiner, identity_image, identity_name or None, cfg.max_pixels)
            portrait = state.portrait(source, refiner)
            out = portrait(
                prompt,
                negative_prompt=negative_prompt or None,
                identity=identity,
                seed=None if seed is None or seed < 0 else int(seed),
                num_images=1,
                steps=None if not steps or steps <= 0 else int(steps),
                guidance=None if guidance is None or guidance < 0 else float(guidance),
                width=width,
                height=height,
                callback=callback,
            )
        first = out.results[0]
        report = {
            "status": first.status.value,
            "message": first.message,
            "seed": first.seed,
            "parameters": out.parameters.to_dict(),
            "model": out.model,
            "image": first.to_dict(),
        }
        image, draft, options = first.image, first.draft, ProvenanceOptions.from_config(cfg)
        if image is not None:
            image, report["provenance"] = mark_pixels(image, "ui", options)
        if draft is not None:
            draft = mark_pixels(draft, "ui", options)[0]
        return image, draft, report, status_line(first.status, f"seed {first.seed}: {first.message}")
    status = failure.get("status", Status.INTERNAL)
    message = failure.get("message", "unknown failure")
    return None, None, _failure(status, message), status_line(status, message)


# ----------------------------------------------------------------------------------------------------- gradio


def _supported(component: Any, **kwargs: Any) -> dict[str, Any]:
    """Keep only keyword arguments this gradio version's component accepts (gradio 4 to 6 differ)."""
    accepted = inspect.signature(component.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in accepted}


def _identity_choices(names: list[str]) -> list[tuple[str, str]]:
    return [("(use the uploaded photo)", NO_STORED_IDENTITY), *((n, n) for n in names)]


def build_app(
    pipeline_factory: PipelineFactory | None = None,
    store_dir: str | Path | None = None,
    portrait_factory: PortraitFactory | None = None,
    state: UIState | None = None,
) -> gr.Blocks:
    """The web UI. Nothing is loaded until the first request; `pipeline_factory(cfg)` builds the refine pipeline
    (default `RefinePipeline.from_config`), `store_dir` is the identity store (default under $PORTRAITFORGE_HOME).
    The app's `UIState` is available as `app.portraitforge_state`."""
    import gradio as gr

    ui_state = state or UIState(pipeline_factory, store_dir, portrait_factory)
    d = _DEFAULTS
    out_image = _supported(gr.Image, format="png")
    # Uploads reach the handlers as the original files (image_mode=None: gradio does not re-encode them), so
    # `load_image` applies EXIF orientation and the pixel limit as the CLI does; camera/clipboard images are PNG.
    in_image = _supported(gr.Image, format="png", image_mode=None, type="filepath")

    with gr.Blocks(title="portraitforge", analytics_enabled=False) as app:
        gr.Markdown("## portraitforge\nSwap a face in a photo toward an identity, or generate a portrait.")
        with gr.Tab("Swap"), gr.Row():
            with gr.Column():
                target = gr.Image(label="Target photo", sources=["upload", "clipboard"], **in_image)
                identity_image = gr.Image(label="Identity photo", sources=["upload", "clipboard", "webcam"], **in_image)
                with gr.Row():
                    identity_name = gr.Dropdown(
                        choices=_identity_choices(ui_state.identity_names()),
                        value=NO_STORED_IDENTITY,
                        label="Stored identity (overrides the photo)",
                        scale=4,
                    )
                    refresh = gr.Button("Refresh", scale=1)
                strength = gr.Slider(0.0, 1.0, value=d.strength, step=0.05, label="Strength")
                with gr.Accordion("Faces and mask", open=False):
                    swap_engine = gr.Radio(
                        ["mesh", "landmark", "inswapper"],
                        value=d.swap_engine,
                        label="Swap engine (inswapper needs models)",
                    )
                    select = gr.Radio(["largest", "all", "index"], value=d.select, label="Faces")
                    face_index = gr.Number(value=d.face_index, precision=0, label="Face number (for 'index')")
                    mask = gr.Radio(["hull", "features"], value=d.mask, label="Mask")
                    feather = gr.Slider(0.0, 0.5, value=d.feather, step=0.01, label="Feather")
                    color_transfer = gr.Checkbox(value=d.color_transfer, label="Colour transfer")
                    blend = gr.Radio(["poisson", "poisson-mixed", "multiband", "feather"], value=d.blend, label="Blend")
                with gr.Accordion("Look", open=False):
                    smoothing = gr.Slider(0.0, 1.0, value=d.smoothing, step=0.05, label="Skin smoothing")
                    brightness = gr.Slider(-1.0, 1.0, value=d.brightness, step=0.05, label="Brightness")
                    contrast = gr.Slider(-1.0, 1.0, value=d.contrast, step=0.05, label="Contrast")
                    saturation = gr.Slider(-1.0, 1.0, value=d.saturation, step=0.05, label="Saturation")
                with gr.Accordion("Output size", open=False):
                    resolution = gr.Dropdown(
                        list(RESOLUTIONS), value=d.resolution, allow_custom_value=True, label="Resolution (or WxH)"
                    )
                    fit = gr.Radio(["pad", "crop", "stretch"], value=d.fit, label="Fit (for WxH)")
                    upscaler = gr.Radio(list(UPSCALERS), value=d.upscaler, label="Face upscaler")
                run = gr.Button("Swap", variant="primary")
            with gr.Column():
                status = gr.Textbox(label="Status", interactive=False, max_lines=1)
                result = gr.Image(label="Result", type="numpy", interactive=False, **out_image)
                sheet = gr.Image(label="Comparison", type="numpy", interactive=False, **out_image)
                report = gr.JSON(label="Report")

        controls = [strength, swap_engine, select, face_index, mask, feather, color_transfer, blend]
        controls += [smoothing, brightness, contrast, saturation, resolution, fit, upscaler]
        assert len(controls) == len(SWAP_CONTROLS)

        def on_swap(target_v: Any, identity_v: Any, name_v: Any, *values: Any) -> SwapOutputs:
            return run_swap(ui_state, target_v, identity_v, name_v, **dict(zip(SWAP_CONTROLS, values, strict=True)))

        run.click(
            on_swap,
            inputs=[target, identity_image, identity_name, *controls],
            outputs=[result, sheet, report, status],
        )

        with gr.Tab("Generate"):
            gr.Markdown("Text to portrait with a Stable Diffusion model, loaded when you first press Generate.")
            with gr.Row():
                with gr.Column():
                    model_source = gr.Textbox(
                        label="Model",
                        placeholder="Hub id (e.g. stabilityai/sd-turbo), diffusers folder or .safetensors",
                    )
                    prompt = gr.Textbox(label="Prompt", lines=2)
                    negative = gr.Textbox(label="Negative prompt")
                    with gr.Row():
                        seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)")
                        steps = gr.Number(value=0, precision=0, label="Steps (0: model default)")
                        guidance = gr.Number(value=-1, label="Guidance (-1: model default)")
                        size = gr.Textbox(label="Size WxH (empty: default)")
                    gen_identity_image = gr.Image(label="Identity photo (optional)", **in_image)
                    with gr.Row():
                        gen_identity_name = gr.Dropdown(
                            choices=_identity_choices(ui_state.identity_names()),
                            value=NO_STORED_IDENTITY,
                            label="Stored identity (overrides the photo)",
                            scale=4,
                        )
                        gen_refresh = gr.Button("Refresh", scale=1)
                    gen_strength = gr.Slider(0.0, 1.0, value=d.strength, step=0.05, label="Identity strength")
                    generate = gr.Button("Generate", variant="primary")
                with gr.Column():
                    gen_status = gr.Textbox(label="Status", interactive=False, max_lines=1)
                    gen_image = gr.Image(label="Portrait", type="numpy", interactive=False, **out_image)
                    gen_draft = gr.Image(label="Draft", type="numpy", interactive=False, **out_image)
                    gen_report = gr.JSON(label="Report")

        def on_generate(
            model_v: str,
            prompt_v: str,
            negative_v: str,
            seed_v: float | None,
            steps_v: float | None,
            guidance_v: float | None,
            size_v: str,
            identity_v: Any,
            name_v: str | None,
            strength_v: float,
            progress: Any = gr.Progress(),  # noqa: B008 - gradio injects progress through this default
        ) -> GenerateOutputs:
            def callback(event: ProgressEvent) -> None:
                progress((event.step, event.total_steps), desc=f"seed {event.seed}")

            return run_generate(
                ui_state, model_v, prompt_v, negative_v, seed_v, steps_v, guidance_v, size_v, identity_v, name_v,
                strength_v, callback=callback,
            )  # fmt: skip

        generate.click(
            on_generate,
            inputs=[
                model_source,
                prompt,
                negative,
                seed,
                steps,
                guidance,
                size,
                gen_identity_image,
                gen_identity_name,
                gen_strength,
            ],
            outputs=[gen_image, gen_draft, gen_report, gen_status],
        )

        def on_refresh() -> tuple[Any, Any]:
            choices = _identity_choices(ui_state.identity_names())
            return gr.update(choices=choices), gr.update(choices=choices)

        for button in (refresh, gen_refresh):
            button.click(on_refresh, inputs=None, outputs=[identity_name, gen_identity_name])

    app.portraitforge_state = ui_state  # type: ignore[attr-defined]
    return app
