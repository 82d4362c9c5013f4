"""Generate-tab handler: text to portrait with a Stable Diffusion model, refined toward an identity when given."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portraitforge.errors import BadInputError
from portraitforge.types import ImageRGB, Status
from portraitforge.ui.state import ImageInput, UIState
from portraitforge.ui.swap import _identity, captured, swap_config
from portraitforge.ui.words import status_line, ui_words

if TYPE_CHECKING:
    from portraitforge.pipelines.portrait import ProgressEvent

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

    Returns (portrait | None, draft | None, report dict, one-line status).
    """
    from portraitforge.pipelines.refine_files import append_log  # the CLI's runs-log writer

    out: dict[str, Any] = {}
    with captured(out):
        source = (model_source or "").strip()
        if not source:
            raise BadInputError("no model: give a Hub id, a diffusers folder or a .safetensors checkpoint")
        if not (prompt or "").strip():
            raise BadInputError("the prompt is empty")
        width = height = None
        if size and size.strip():
            from portraitforge.cli.generate import parse_size

            width, height = parse_size(size)
        cfg = swap_config({"strength": strength, **state.server_policy()})
        with state.lock:
            refiner = state.pipeline(cfg)
            identity = None
            if identity_name or identity_image is not None:
                identity = _identity(state, refiner, identity_image, identity_name or None)
            portrait = state.portrait(source, refiner)
            result = portrait(
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
        first = result.results[0]
        report = {
            "status": first.status.value,
            "message": first.message,
            "seed": first.seed,
            "parameters": result.parameters.to_dict(),
            "model": result.model,
            "image": first.to_dict(),
        }
        append_log(state.log_path, {**report, "interface": "ui", "operation": "generate"})
        return first.image, first.draft, report, status_line(first.status, f"seed {first.seed}: {first.message}")
    status = out.get("status", Status.INTERNAL.value)
    message = ui_words(out.get("message", "unknown failure"))
    if (model_source or "").strip() and (prompt or "").strip():  # a run that started: logged like the others
        with captured({}):
            append_log(
                state.log_path, {"status": status, "message": message, "interface": "ui", "operation": "generate"}
            )
    return None, None, {"status": status, "message": message}, status_line(status, message)
