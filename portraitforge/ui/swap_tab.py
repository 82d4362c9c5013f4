"""The Swap tab's layout and wiring (the work is in `portraitforge.ui.swap`).

Layout, top to bottom: the uploads; the main controls and the Swap button; the status line; the target's numbered
faces next to the result; the downloads; then the optional settings. Opening settings never pushes the
result away from the button, and the page scrolls to the result when a run ends.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from portraitforge.config import RefineConfig
from portraitforge.ui.state import UIState
from portraitforge.ui.swap import (
    DETECT_SIZES,
    OUTPUT_FORMATS,
    SWAP_CONTROLS,
    SWEEP_STRENGTHS,
    detect_faces,
    draw_faces,
    face_at,
    parse_face_numbers,
    run_swap,
    run_sweep,
    toggle_face,
)
from portraitforge.ui.words import status_html

NO_STORED_IDENTITY = ""  # dropdown value meaning "use the uploaded photo" (never a valid identity name)
UPSCALERS = ("none", "lanczos", "realesrgan-x4plus")
RESOLUTIONS = ("original", "512", "1024", "2048")
FACE_LABELS = [
    ("the largest face", "largest"),
    ("all faces", "all"),
    ("the face numbers below", "numbers"),
    ("the face most like a reference photo", "reference"),
    ("per-face stored identities", "mapping"),
]


def identity_choices(names: list[str]) -> list[tuple[str, str]]:
    return [("(use the uploaded photo)", NO_STORED_IDENTITY), *((n, n) for n in names)]


def image_upload(label: str, **kwargs: Any) -> gr.File:
    """Uploads are plain files: our own loader decodes them, so a broken file gets our one-line message instead of
    gradio's error badge (gr.Image decodes before the handler runs). No `file_types` either: gradio would refuse
    other extensions with its own badge, where our loader names the file and says what is wrong."""
    return gr.File(label=label, type="filepath", height=90, **kwargs)


def build_swap_tab(state: UIState) -> dict[str, Any]:
    """Create the tab's components inside the current gr.Blocks and wire them; returns the components by name."""
    d = RefineConfig()
    with gr.Row(equal_height=False):
        target = image_upload("Target photo (the face to change)", elem_id="pf-target")
        identity_photo = image_upload("Identity photo (who it should become)", elem_id="pf-identity-photo")
        with gr.Column():
            identity_name = gr.Dropdown(
                choices=identity_choices(state.identity_names()),
                value=NO_STORED_IDENTITY,
                label="Stored identity (overrides the photo)",
                elem_id="pf-identity-name",
            )
            refresh = gr.Button("Refresh the list", size="sm")
    with gr.Row(equal_height=True):
        strength = gr.Number(value=d.strength, label="Strength (more than 0, at most 1)", elem_id="pf-strength")
        faces = gr.Dropdown(FACE_LABELS, value="largest", label="Faces to change", elem_id="pf-faces-choice")
        face_numbers = gr.Textbox(label="Face numbers (e.g. 0, 2)", elem_id="pf-face-numbers")
        fmt = gr.Radio(list(OUTPUT_FORMATS), value="png", label="Format")
    with gr.Row():
        run = gr.Button("Swap", variant="primary", elem_id="pf-swap")
        sweep = gr.Button(f"Strength sweep ({', '.join(str(s) for s in SWEEP_STRENGTHS)})", elem_id="pf-sweep")
    status = gr.HTML(status_html(None, "upload a target photo and an identity, then press Swap"), elem_id="pf-status")
    with gr.Row(equal_height=False):
        faces_view = gr.Image(
            label="Faces in the target: click one to choose it", interactive=False, height=400, elem_id="pf-faces"
        )
        result = gr.Image(label="Result", interactive=False, height=400, format="png", elem_id="pf-result")
    with gr.Row():
        download = gr.File(label="Download the image (with its metadata)", interactive=False, elem_id="pf-download")
        report_file = gr.File(label="Download the report (JSON)", interactive=False, elem_id="pf-report-file")
    with gr.Accordion("More face options", open=False):
        with gr.Row():
            mapping = gr.Textbox(label="Per-face stored identities", placeholder="0=alice, 2=bob", elem_id="pf-mapping")
            reference = image_upload("Reference photo (for 'most like a reference photo')")
        with gr.Row():
            detect_size = gr.Dropdown(
                [(f"{s} px{' (default)' if s == d.detect_max_side else ''}", s) for s in DETECT_SIZES],
                value=d.detect_max_side,
                label="Detection size (larger finds smaller faces, slower)",
            )
            gender = gr.Radio(["any", "female", "male"], value=d.gender, label="Only faces of this gender (inswapper)")
            swap_engine = gr.Radio(
                ["mesh", "landmark", "inswapper"], value=d.swap_engine, label="Swap engine (inswapper needs models)"
            )
    with gr.Accordion("Mask and blend", open=False), gr.Row():
        mask = gr.Radio(["hull", "features"], value=d.mask, label="Mask")
        feather = gr.Slider(0.0, 0.5, value=d.feather, step=0.01, label="Feather")
        color_transfer = gr.Checkbox(value=d.color_transfer, label="Colour transfer")
        blend = gr.Radio(["poisson", "poisson-mixed", "multiband", "feather"], value=d.blend, label="Blend")
    with gr.Accordion("Look", open=False), gr.Row():
        smoothing = gr.Slider(0.0, 1.0, value=d.smoothing, step=0.05, label="Skin smoothing")
        brightness = gr.Slider(-1.0, 1.0, value=d.brightness, step=0.05, label="Brightness")
        contrast = gr.Slider(-1.0, 1.0, value=d.contrast, step=0.05, label="Contrast")
        saturation = gr.Slider(-1.0, 1.0, value=d.saturation, step=0.05, label="Saturation")
    with gr.Accordion("Output size", open=False), gr.Row():
        resolution = gr.Dropdown(
            list(RESOLUTIONS), value=d.resolution, allow_custom_value=True, label="Resolution (or WxH)"
        )
        fit = gr.Radio(["pad", "crop", "stretch"], value=d.fit, label="Fit (for WxH)")
        upscaler = gr.Radio(list(UPSCALERS), value=d.upscaler, label="Face upscaler (Real-ESRGAN is slow on a CPU)")
    sweep_gallery = gr.Gallery(
        label="Strength sweep", columns=4, height=300, object_fit="contain", elem_id="pf-sweep-gallery", visible=False
    )
    sheet = gr.Image(label="Comparison: target | identity | result", interactive=False, format="jpeg")
    report = gr.JSON(label="Report")
    faces_state = gr.State(None)  # (target pixels, face boxes) of the last detection, per browser session

    controls = [strength, swap_engine, gender, detect_size, mask, feather, color_transfer, blend]
    controls += [smoothing, brightness, contrast, saturation, resolution, fit, upscaler]
    assert len(controls) == len(SWAP_CONTROLS)

    def params(values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(SWAP_CONTROLS, values, strict=True))

    def on_target(target_v: Any, numbers_v: str, engine_v: str, size_v: Any) -> tuple[Any, Any, str]:
        view = detect_faces(state, target_v, numbers_v, swap_engine=engine_v, detect_max_side=size_v)
        kept = (view.image, view.boxes) if view.boxes else None
        return view.overlay, kept, view.html

    for trigger in (target.change, swap_engine.change, detect_size.change):
        trigger(on_target, [target, face_numbers, swap_engine, detect_size], [faces_view, faces_state, status])

    def on_click(kept: Any, numbers_v: str, evt: gr.SelectData) -> tuple[Any, ...]:
        if not kept or not kept[1]:
            return gr.update(), numbers_v, gr.update(), status_html(None, "no faces to choose: upload a target photo")
        rgb, boxes = kept
        x, y = evt.index[0], evt.index[1]
        index = face_at(boxes, float(x), float(y))
        if index is None:
            return gr.update(), numbers_v, gr.update(), status_html(None, "no face there: click inside a numbered box")
        numbers = toggle_face(numbers_v, index)
        chosen = parse_face_numbers(numbers)
        said = f"faces chosen: {numbers}" if chosen else "no face chosen"
        return draw_faces(rgb, boxes, chosen), numbers, "numbers", status_html(None, said)

    faces_view.select(on_click, [faces_state, face_numbers], [faces_view, face_numbers, faces, status])

    swap_inputs = [target, identity_photo, identity_name, faces, face_numbers, mapping, reference, fmt, *controls]
    # The status comes first: the page scrolls to the first output, and the result sits right under it.
    swap_outputs = [status, result, sheet, report, download, report_file, sweep_gallery]

    def on_swap(*values: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's injection
        target_v, photo_v, name_v, faces_v, numbers_v, mapping_v, reference_v, fmt_v, *rest = values
        res = run_swap(
            state, target_v, photo_v, name_v, faces=faces_v, face_numbers=numbers_v, mapping=mapping_v,
            reference=reference_v, output_format=fmt_v, progress=lambda f, t: progress(f, desc=t),
            **params(tuple(rest)),
        )  # fmt: skip
        files = (str(res.output) if res.output else None, str(res.report_file) if res.report_file else None)
        return res.html, res.image, res.sheet, res.report, *files, gr.update(value=[], visible=False)

    def on_sweep(*values: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        target_v, photo_v, name_v, faces_v, numbers_v, mapping_v, reference_v, fmt_v, *rest = values
        results = run_sweep(
            state, target_v, photo_v, name_v, faces=faces_v, face_numbers=numbers_v, mapping=mapping_v,
            reference=reference_v, output_format=fmt_v, progress=lambda f, t: progress(f, desc=t),
            **{k: v for k, v in params(tuple(rest)).items() if k != "strength"},
        )  # fmt: skip
        last = results[-1]
        gallery = [
            (r.image, f"strength {r.report['parameters']['strength']}: quality {r.quality}")
            for r in results
            if r.image is not None
        ]
        if last.image is not None:
            scores = ", ".join(f"{r.report['parameters']['strength']}: {r.quality}" for r in results)
            html = status_html(last.status, f"strength sweep done; quality per strength {scores}")
        else:
            html = last.html
        files = (str(last.output) if last.output else None, str(last.report_file) if last.report_file else None)
        return html, last.image, last.sheet, last.report, *files, gr.update(value=gallery, visible=bool(gallery))

    run.click(on_swap, swap_inputs, swap_outputs, scroll_to_output=True, api_name="swap")
    sweep.click(on_sweep, swap_inputs, swap_outputs, scroll_to_output=True, api_name="sweep")
    return {"identity_name": identity_name, "refresh": refresh, "status": status}
