"""The web UI app: tabs Swap, Identities, Batch and Generate over one `UIState`.

from portraitforge.ui import build_app
build_app().launch()            # or: portraitforge ui --port 7860
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from portraitforge.ui.batch_tab import build_batch_tab
from portraitforge.ui.generate_tab import build_generate_tab
from portraitforge.ui.identity_tab import build_identity_tab
from portraitforge.ui.state import PipelineFactory, PortraitFactory, UIState
from portraitforge.ui.swap_tab import build_swap_tab, identity_choices


class PortraitForgeApp(gr.Blocks):
    """gr.Blocks that always lets gradio serve its own output folder (downloads), however it is launched."""

    portraitforge_state: UIState

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        allowed = list(kwargs.pop("allowed_paths", None) or [])
        kwargs["allowed_paths"] = [*allowed, str(self.portraitforge_state.output_dir)]
        return super().launch(*args, **kwargs)


def build_app(
    pipeline_factory: PipelineFactory | None = None,
    store_dir: str | Path | None = None,
    portrait_factory: PortraitFactory | None = None,
    state: UIState | None = None,
    *,
    require_consent: bool = False,
    nsfw_policy: str | None = None,
) -> PortraitForgeApp:
    """The web UI. Nothing is loaded until the first request; `pipeline_factory(cfg)` builds the refine pipeline
    (default `RefinePipeline.from_config`), `store_dir` is the identity store (default under $PORTRAITFORGE_HOME),
    `require_consent` refuses identities without a consent record, `nsfw_policy` (refuse, blur, flag) puts every
    run through the NSFW gate. The state is `app.portraitforge_state`."""
    ui_state = state or UIState(
        pipeline_factory, store_dir, portrait_factory, require_consent=require_consent, nsfw_policy=nsfw_policy
    )
    with PortraitForgeApp(title="portraitforge", analytics_enabled=False) as app:
        gr.Markdown("## portraitforge\nSwap a face in a photo toward an identity, manage identities, run batches.")
        with gr.Tab("Swap", id="swap") as swap_page:
            swap = build_swap_tab(ui_state)
        with gr.Tab("Identities", id="identities"):
            library = build_identity_tab(ui_state)
        with gr.Tab("Batch", id="batch"):
            build_batch_tab()
        with gr.Tab("Generate", id="generate") as generate_page:
            generate = build_generate_tab(ui_state)

        def refreshed() -> tuple[Any, Any]:
            choices = identity_choices(ui_state.identity_names())
            return gr.update(choices=choices), gr.update(choices=choices)

        # The stored-identity lists follow the library: on Refresh, and when their tab is opened.
        lists = [swap["identity_name"], generate["identity_name"]]
        for trigger in (swap["refresh"].click, swap_page.select, generate_page.select):
            trigger(refreshed, None, lists)
        _ = library
    app.portraitforge_state = ui_state
    return app
