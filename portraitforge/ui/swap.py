"""Swap-tab handlers: plain typed functions of a `UIState` and control values, testable without a browser.

Every run goes through the CLI's file path (`refine_file`: load with the CLI's checks, refine, save atomically with
the same metadata), is appended to the CLI's runs log and, for stored identities, to the store's audit log. Every
failure becomes a `SwapResult` with a status code and one line in the UI's words; nothing raises to gradio.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.types import Identity, ImageRGB, Status
from portraitforge.ui.state import ImageInput, UIState
from portraitforge.ui.store_access import stored_identity
from portraitforge.ui.words import one_line, status_html, ui_words

if TYPE_CHECKING:
    from portraitforge.pipelines.refine import IdentityArg, RefinePipeline

Progress = Callable[[float, str], Any]
OUTPUT_FORMATS = ("png", "jpg", "webp")
SWEEP_STRENGTHS = (0.3, 0.5, 0.7, 0.9)
DETECT_SIZES = (640, 1024, 2048)

# RefineConfig fields of the Swap-tab controls, in the order the tab passes them.
SWAP_CONTROLS: tuple[str, ...] = (
    "strength",
    "swap_engine",
    "gender",
    "detect_max_side",
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
# "Faces to change": largest | all | numbers (the face numbers field) | reference (most like the reference photo) |
# mapping (per-face identities, "0=alice, 2=bob").
FACE_CHOICES = ("largest", "all", "numbers", "reference", "mapping")


@dataclass
class SwapResult:
    status: str
    message: str  # already in UI words
    report: dict[str, Any] = field(default_factory=dict)
    image: ImageRGB | None = None
    sheet: ImageRGB | None = None
    output: Path | None = None
    report_file: Path | None = None
    quality: int | None = None  # 0-100 from the independent grader (lowest over the refined faces)

    @property
    def line(self) -> str:
        return f"{self.status}: {self.message}"

    @property
    def html(self) -> str:
        return status_html(self.status, self.message)


@dataclass
class FacesView:
    """The target with numbered boxes of the detected faces (numbers as the CLI and the report count them)."""

    status: str
    message: str
    overlay: ImageRGB | None = None
    boxes: list[list[float]] = field(default_factory=list)
    image: ImageRGB | None = None  # the target without the boxes (to redraw them when the choice changes)

    @property
    def html(self) -> str:
        return status_html(self.status, self.message)


@contextmanager
def captured(out: dict[str, Any]) -> Iterator[None]:
    """Any failure -> `out["status"]`, `out["message"]` (one line). Never lets an exception reach gradio."""
    try:
        yield
    except PortraitForgeError as exc:
        out.update(status=exc.status.value, message=exc.message)
    except MemoryError:
        out.update(status=Status.OUT_OF_MEMORY.value, message="out of memory")
    except OSError as exc:  # unreadable upload, full disk: the environment, reported like the CLI does
        out.update(status=Status.BAD_INPUT.value, message=one_line(exc))
    except Exception as exc:  # noqa: BLE001 - last resort: the UI shows one line, like the CLI
        first = str(exc).splitlines()[0] if str(exc) else ""
        out.update(status=Status.INTERNAL.value, message=f"internal error: {type(exc).__name__}: {first}")


# ----------------------------------------------------------------------------------------------------- inputs


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise BadInputError(f"{what} is empty")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{what} '{value}' is not a number") from None
    if not math.isfinite(number):
        raise BadInputError(f"{what} '{value}' is not a finite number")
    return number


def parse_face_numbers(text: str | None) -> list[int]:
    """ "0, 2" -> [0, 2]. Whole numbers >= 0 only: 1.5 or -1 are refused, never rounded."""
    numbers: list[int] = []
    for part in (text or "").replace(";", ",").replace(" ", ",").split(","):
        if not part.strip():
            continue
        value = _number(part.strip(), "face number")
        if not value.is_integer() or value < 0:
            raise BadInputError(f"face number '{part.strip()}' must be a whole number 0 or more")
        if int(value) not in numbers:
            numbers.append(int(value))
    return numbers


def swap_config(params: dict[str, Any]) -> RefineConfig:
    """Control values -> a validated RefineConfig. Out-of-range numbers are refused, not clamped."""
    values = {k: v for k, v in params.items() if v is not None}
    if "strength" in values:
        strength = _number(values["strength"], "strength")
        if not 0.0 < strength <= 1.0:
            raise BadInputError(
                f"strength {strength:g} is out of range: use more than 0 (0 leaves the photo unchanged) and at most 1"
            )
        values["strength"] = strength
    if "detect_max_side" in values:
        side = _number(values["detect_max_side"], "detection size")
        if not side.is_integer():
            raise BadInputError(f"detection size {side:g} must be a whole number of pixels")
        values["detect_max_side"] = int(side)
    values.setdefault("analyzer", "auto")  # the engine decides which analyzer fits it (as the CLI default)
    return RefineConfig.validated(values)


def _load_rgb(path: Path, max_pixels: int) -> ImageRGB:
    from portraitforge.imageio import load_image

    return load_image(path, max_pixels=max_pixels).rgb


# ----------------------------------------------------------------------------------------------------- faces


def draw_faces(rgb: ImageRGB, boxes: list[list[float]], chosen: list[int] = ()) -> ImageRGB:  # type: ignore[assignment]
    """Numbered boxes: chosen faces in green, the others in yellow; labels scale with the image."""
    import cv2

    out = rgb.copy()
    thick = max(2, round(max(rgb.shape[:2]) / 400))
    for index, (x0, y0, x1, y1) in enumerate(boxes):
        colour = (40, 200, 80) if index in chosen else (255, 200, 0)
        p0, p1 = (round(x0), round(y0)), (round(x1), round(y1))
        cv2.rectangle(out, p0, p1, colour, thick, cv2.LINE_AA)
        scale = max(0.6, (y1 - y0) / 90)
        label = str(index)
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(0, p0[1] - h - base - 6)
        cv2.rectangle(out, (p0[0], top), (p0[0] + w + 8, top + h + base + 6), colour, -1)
        cv2.putText(
            out, label, (p0[0] + 4, top + h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA
        )
    return out


def face_at(boxes: list[list[float]], x: float, y: float) -> int | None:
    """The face under a click: the smallest box containing the point, else None."""
    inside = [
        (i, (b[2] - b[0]) * (b[3] - b[1])) for i, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]
    ]
    return min(inside, key=lambda t: t[1])[0] if inside else None


def toggle_face(text: str | None, index: int) -> str:
    """Add `index` to the face numbers field, or remove it when it is there."""
    try:
        numbers = parse_face_numbers(text)
    except BadInputError:
        numbers = []
    numbers = [n for n in numbers if n != index] if index in numbers else sorted([*numbers, index])
    return ", ".join(str(n) for n in numbers)


def detect_faces(state: UIState, target: ImageInput, chosen: str | None = "", **params: Any) -> FacesView:
    """Detect the target's faces with the analyzer the swap will use (the CLI default for the same settings)."""
    out: dict[str, Any] = {}
    with captured(out):
        if target is None:
            return FacesView("", "upload a target photo to see its faces")
        cfg = swap_config(params)
        path = state.as_file(target, "target image")
        rgb = _load_rgb(path, cfg.max_pixels)
        with state.lock:
            faces = state.pipeline(cfg).analyzer.detect(rgb)
        boxes = [[float(v) for v in f.box] for f in faces]
        try:
            picked = parse_face_numbers(chosen)
        except BadInputError:
            picked = []
        if not faces:
            message = (
                f"no face found in {path.name}: try a larger detection size, or a photo where the face is "
                "visible and at least about 40 pixels high"
            )
            return FacesView(Status.NO_FACE.value, message, rgb, [], rgb)
        message = f"{len(faces)} face(s) found, numbered 0 to {len(faces) - 1}: click a face to choose it"
        return FacesView(Status.OK.value, message, draw_faces(rgb, boxes, picked), boxes, rgb)
    return FacesView(out["status"], ui_words(out["message"]))


# ----------------------------------------------------------------------------------------------------- swap


def _identity(state: UIState, pipe: RefinePipeline, photo: ImageInput, name: str | None) -> Identity:
    """A stored identity when `name` is given (it wins over the photo), else one built from the uploaded photo."""
    if name:
        return stored_identity(state.store(), name, pipe.analyzer, [] if pipe.grader is None else [pipe.grader])
    if photo is None:
        raise BadInputError("no identity: upload an identity photo or choose a stored identity")
    if state.require_consent:
        raise BadInputError(
            "this server requires consent: an uploaded photo has none, so add the person with their consent in "
            "the Identities tab and choose them as the stored identity"
        )
    return state.identity_from_photo(pipe, state.as_file(photo, "identity photo"), pipe.config.max_pixels)


def _identity_arg(
    state: UIState, pipe: RefinePipeline, faces: str, numbers: str | None, mapping: str | None, photo: Any, name: Any
) -> IdentityArg:
    if faces == "mapping":
        from portraitforge.embeddings_cache.resolve import parse_face_mapping

        entries = parse_face_mapping(mapping or "")
        loaded: dict[str, Identity] = {}
        for value in entries.values():
            if value not in loaded:
                loaded[value] = _identity(state, pipe, None, value)
        return {index: loaded[value] for index, value in entries.items()}
    identity = _identity(state, pipe, photo, name or None)
    if faces == "numbers":
        chosen = parse_face_numbers(numbers)
        if not chosen:
            raise BadInputError("no face numbers: click faces in the target preview or type their numbers")
        return dict.fromkeys(chosen, identity)
    return identity


def _reference_embedding(state: UIState, pipe: RefinePipeline, reference: Any) -> Any:
    if reference is None:
        raise BadInputError("'the face most like the reference photo' needs a reference photo")
    ref = state.identity_from_photo(pipe, state.as_file(reference, "reference photo"), pipe.config.max_pixels)
    return ref.embedding(pipe.analyzer.embedding_space)


def quality_problems(message: str, faces: list[dict[str, Any]] = ()) -> list[str]:  # type: ignore[assignment]
    """The LOW_QUALITY reasons of a refine message, in words a user can act on (`faces`: the report's faces, for
    the grader's unrounded numbers)."""
    _, sep, rest = message.partition("with low quality: ")
    if not sep:
        return []
    graders = {f"face {f['index']}": (f.get("quality") or {}).get("grader") for f in faces}
    words = []
    for item in rest.split("; "):
        face, _, problem = item.partition(": ")
        if "identity similarity" in problem:
            value, _, needed = problem.split(" identity similarity ")[-1].partition(" < ")
            grader = graders.get(face)
            if grader:  # 0.449 < 0.45 prints as "0.45 < 0.45" at two digits
                value, needed = f"{grader['identity_similarity']:.3f}", f"{grader['threshold']:g}"
            said = f"does not look enough like the identity (similarity {value}, needs {needed})"
        elif "still sees the original" in problem:
            said = "still looks more like the original person than the identity"
        elif "identity distance" in problem:
            said = f"is too far from the identity ({problem})"
        elif "seam score" in problem:
            said = "shows a visible seam at the edge of the swapped area (try another blend or more feather)"
        elif "sharpness ratio" in problem:
            said = (
                "is blurrier than the photo: the identity's face was enlarged; use a larger identity photo "
                "or the Real-ESRGAN face upscaler"
            )
        elif "landmark confidence" in problem:
            said = "has uncertain landmarks (a turned, hidden or blurred face)"
        else:
            said = problem
        words.append(f"{face} {said}")
    return words


def grader_score(report: dict[str, Any]) -> int | None:
    scores = [
        f["quality"]["grader"]["score"]
        for f in report.get("faces", [])
        if f.get("quality") and f["quality"].get("grader") is not None
    ]
    return min(scores) if scores else None


def _summary(report: dict[str, Any], output: Path | None) -> str:
    score = grader_score(report)
    quality = f"quality {score}/100" if score is not None else "no quality grader loaded"
    saved = f"; saved as {output.name}" if output is not None else ""
    if report["status"] == Status.LOW_QUALITY.value:
        problems = quality_problems(report["message"], report.get("faces", [])) or [report["message"]]
        head = report["message"].partition(" with low quality")[0]
        return f"{head}, {quality}, but: {'; '.join(problems)}{saved}"
    if report["status"] == Status.OK.value:
        return f"{report['message']}, {quality}{saved}"
    if report["status"] == Status.NO_FACE.value and "target" in report["message"]:
        return ui_words(report["message"]) + " (small faces: try a larger detection size under 'More face options')"
    return ui_words(report["message"])


def comparison(target: ImageRGB, identity: Identity | None, result: ImageRGB, height: int = 384) -> ImageRGB:
    """target | identity reference | result, labelled, at one height."""
    from portraitforge.demo import labelled

    tiles = [labelled(target, "target", height)]
    if identity is not None:
        tiles.append(labelled(identity.reference_crop, f"identity: {identity.name}"[:40], height))
    tiles.append(labelled(result, "result", height))
    return np.concatenate(tiles, axis=1)


def run_swap(
    state: UIState,
    target: ImageInput,
    identity_image: ImageInput = None,
    identity_name: str | None = None,
    *,
    faces: str = "largest",
    face_numbers: str | None = "",
    mapping: str | None = "",
    reference: ImageInput = None,
    output_format: str = "png",
    progress: Progress | None = None,
    **params: Any,
) -> SwapResult:
    """Refine `target` toward an identity (a stored name wins over an uploaded photo) and save it as the CLI does.

    `faces` picks which faces change (see FACE_CHOICES); `params` are RefineConfig fields (strength=0.8, ...).
    """
    step = progress or (lambda _fraction, _text: None)
    out: dict[str, Any] = {}
    log: dict[str, Any] | None = None
    with captured(out):
        if faces not in FACE_CHOICES:
            raise BadInputError(f"unknown choice of faces '{faces}' (use one of: {', '.join(FACE_CHOICES)})")
        if output_format not in OUTPUT_FORMATS:
            raise BadInputError(f"unknown format '{output_format}' (use png, jpg or webp)")
        select = "reference" if faces == "reference" else "all" if faces == "all" else "largest"
        cfg = swap_config({**params, "select": select, **state.server_policy()})
        if target is None:
            raise BadInputError("no target photo: upload the photo whose face should change")
        target_path = state.as_file(target, "target image")
        log = {"status": Status.BAD_INPUT.value, "input": str(target_path), "parameters": cfg.model_dump()}
        step(0.05, "preparing" if state.loaded else "loading the face models (first run only)")
        from portraitforge.pipelines.refine import all_identities
        from portraitforge.pipelines.refine_files import refine_file

        with state.lock:
            pipe = state.pipeline(cfg)
            step(0.3, "reading the identity")
            identity = _identity_arg(state, pipe, faces, face_numbers, mapping, identity_image, identity_name)
            ref = _reference_embedding(state, pipe, reference) if faces == "reference" else None
            step(
                0.5, "swapping" + (" (Real-ESRGAN upscaling is slow on a CPU)" if "realesrgan" in cfg.upscaler else "")
            )
            output = state.new_output(target_path.stem, output_format)
            report = refine_file(
                pipe,
                target_path,
                identity,
                output,
                extra_metadata={"interface": "web UI"},
                reference_embedding=ref,
                operation="ui",
            )
        log = None
        record = {**report.to_dict(), "interface": "ui"}
        from portraitforge.pipelines.refine_files import append_log

        append_log(state.log_path, record)
        shown = {**record, "input": target_path.name, "output": output.name if report.output_path else None}
        if report.output_path is None:
            return SwapResult(report.status.value, _summary(shown, None), shown)
        step(0.9, "saving")
        report_file = output.with_suffix(".json")
        report_file.write_text(json.dumps(shown, indent=2, default=str) + "\n", encoding="utf-8")
        result_rgb = _load_rgb(output, cfg.max_pixels * 16)
        first = all_identities(identity)[0]
        sheet = comparison(_load_rgb(target_path, cfg.max_pixels), first, result_rgb)
        return SwapResult(
            report.status.value,
            _summary(shown, output),
            shown,
            image=result_rgb,
            sheet=sheet,
            output=output,
            report_file=report_file,
            quality=grader_score(shown),
        )
    status, message = out.get("status", Status.INTERNAL.value), ui_words(out.get("message", "unknown failure"))
    if log is not None:  # the run got past its parameters: it is logged like a failed CLI run
        from portraitforge.pipelines.refine_files import append_log

        with captured({}):
            append_log(state.log_path, {**log, "status": status, "message": message, "interface": "ui"})
    return SwapResult(status, message, {"status": status, "message": message})


def run_sweep(state: UIState, *args: Any, progress: Progress | None = None, **kwargs: Any) -> list[SwapResult]:
    """The same swap at strengths 0.3/0.5/0.7/0.9 (each a logged run with its own output), to compare side by side."""
    results = []
    for k, strength in enumerate(SWEEP_STRENGTHS):
        if progress is not None:
            progress(k / len(SWEEP_STRENGTHS), f"strength {strength}")
        results.append(run_swap(state, *args, **{**kwargs, "strength": strength}))
        if results[-1].image is None:
            break  # the same failure would repeat at every strength
    return results
