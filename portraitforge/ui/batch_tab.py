"""The Batch tab: plan and run a batch spec (from the configs folder or uploaded), then browse its contact sheets."""

from __future__ import annotations

from typing import Any

import gradio as gr

from portraitforge.ui.batch import BatchResult, plan, run, spec_choices
from portraitforge.ui.words import status_html


def _gallery(res: BatchResult) -> list[tuple[Any, str]]:
    # Arrays, not paths: gradio only serves files from its allowed folders, and batch outputs live anywhere.
    from portraitforge.imageio import load_image

    return [(load_image(path).rgb, label) for path, label in res.sheets]


def build_batch_tab() -> None:
    gr.Markdown(
        "Batches of prompts x identities x seeds, or a folder of drafts to refine: the same spec files, manifest and "
        "outputs as `portraitforge batch`. A run resumes where the last one stopped."
    )
    with gr.Row():
        chosen = gr.Dropdown(choices=spec_choices(), label="Spec from the configs folder", scale=3)
        uploaded = gr.File(
            label="...or upload a spec (YAML)",
            type="filepath",
            scale=2,
            elem_id="pf-batch-spec",
        )
    with gr.Row():
        plan_button = gr.Button("Plan", elem_id="pf-batch-plan")
        run_button = gr.Button("Run", variant="primary", elem_id="pf-batch-run")
    status = gr.HTML(
        status_html(None, "choose or upload a spec, then Plan to see what it would do"), elem_id="pf-batch-status"
    )
    details = gr.Markdown()
    index = gr.Textbox(
        label="HTML index with every item (in the batch's output folder on the server)", interactive=False
    )
    sheets = gr.Gallery(label="Contact sheets", columns=2, height=520, object_fit="contain", elem_id="pf-batch-sheets")

    def shown(res: BatchResult) -> tuple[Any, ...]:
        where = "" if res.index is None else f"{res.index.parent.parent.name}/{res.index.parent.name}/{res.index.name}"
        return res.html, res.details, where, _gallery(res)

    def on_plan(chosen_v: str | None, uploaded_v: Any) -> tuple[Any, ...]:
        return shown(plan(chosen_v, uploaded_v))

    def on_run(chosen_v: str | None, uploaded_v: Any, progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
        return shown(run(chosen_v, uploaded_v, progress=lambda k, n: progress((k, n), desc="items")))

    outputs = [status, details, index, sheets]  # status first: the page scrolls to it
    plan_button.click(on_plan, [chosen, uploaded], outputs)
    run_button.click(on_run, [chosen, uploaded], outputs, scroll_to_output=True)
