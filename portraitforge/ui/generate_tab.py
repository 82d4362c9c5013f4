"""The Generate tab: text to portrait with a Stable Diffusion model, loaded when Generate is first pressed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from portraitforge.config import RefineConfig
from portraitforge.types import Status
from portraitforge.ui.generate import run_generate
from portraitforge.ui.state import UIState
from portraitforge.ui.swap_tab import NO_STORED_IDENTITY, identity_choices, image_upload
from portraitforge.ui.words import status_html

if TYPE_CHECKING:
    from portraitforge.pipelines.portrait import ProgressEvent


def build_generate_tab(state: UIState) -> dict[str, Any]:
    gr.Markdown("Text to portrait with a Stable Diffusion model, loaded when you first press Generate.")
    with gr.Row(equal_height=False):
        with gr.Column():
            model_source = gr.Textbox(
                label="Model", placeholder="Hub id (e.g. stabilityai/sd-turbo), diffusers folder or .safetensors"
            )
            prompt = gr.Textbox(label="Prompt", lines=2)
            negative = gr.Textbox(label="Negative prompt")
            with gr.Row():
                seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)")
                steps = gr.Number(value=0, precision=0, label="Steps (0: model default)")
                guidance = gr.Number(value=-1, label="Guidance (-1: model default)")
                size = gr.Textbox(label="Size WxH (empty: default)")
            identity_photo = image_upload("Identity photo (optional)")
            identity_name = gr.Dropdown(
                choices=identity_choices(state.identity_names()),
                value=NO_STORED_IDENTITY,
                label="Stored identity (overrides the photo)",
            )
            strength = gr.Number(value=RefineConfig().strength, label="Identity strength (more than 0, at most 1)")
            generate = gr.Button("Generate", variant="primary")
            status = gr.HTML(status_html(None, "give a model and a prompt, then press Generate"))
        with gr.Column():
            image = gr.Image(label="Portrait", interactive=False, format="png")
            draft = gr.Image(label="Draft", interactive=False, format="png")
            report = gr.JSON(label="Report")

    def on_generate(*values: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's injection
        def callback(event: ProgressEvent) -> None:
            progress((event.step, event.total_steps), desc=f"seed {event.seed}")

        model_v, prompt_v, negative_v, seed_v, steps_v, guidance_v, size_v, photo_v, name_v, strength_v = values
        portrait, drafted, report_v, line = run_generate(
            state, model_v, prompt_v, negative_v, seed_v, steps_v, guidance_v, size_v, photo_v, name_v, strength_v,
            callback=callback,
        )  # fmt: skip
        code, _, message = line.partition(": ")
        return portrait, drafted, report_v, status_html(Status(code), message)

    inputs = [model_source, prompt, negative, seed, steps, guidance, size, identity_photo, identity_name, strength]
    generate.click(on_generate, inputs, [image, draft, report, status], scroll_to_output=True)
    return {"identity_name": identity_name}
