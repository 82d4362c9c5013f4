"""The Identities tab: the identity library (add with consent, inspect, rename, delete, export)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from portraitforge.ui.identity import (
    LIST_COLUMNS,
    PHOTO_COLUMNS,
    add_identity,
    delete_identity,
    export_identity,
    identity_rows,
    rename_identity,
    show_identity,
)
from portraitforge.ui.state import UIState
from portraitforge.ui.words import status_html


def build_identity_tab(state: UIState) -> dict[str, Any]:
    consent_label = "Consent: who agreed, to what, when" + (
        " (required on this server)" if state.require_consent else ""
    )
    status = gr.HTML(
        status_html(None, "add a person from several photos, or choose one to manage"), elem_id="pf-id-status"
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Add an identity")
            photos = gr.File(
                label="Photos of one person (several: 3-10 is best)",
                file_count="multiple",
                type="filepath",
                elem_id="pf-id-photos",
            )
            new_name = gr.Textbox(label="Name", elem_id="pf-id-name")
            consent = gr.Textbox(label=consent_label, elem_id="pf-id-consent")
            note = gr.Textbox(label="Note (optional)")
            append = gr.Checkbox(value=False, label="Add these photos to an existing identity of that name")
            add = gr.Button("Add identity", variant="primary", elem_id="pf-id-add")
        with gr.Column():
            gr.Markdown("### Library")
            table = gr.Dataframe(
                headers=LIST_COLUMNS, value=identity_rows(state), interactive=False, elem_id="pf-id-table", wrap=True
            )
            chosen = gr.Dropdown(choices=state.identity_names(), label="Identity", elem_id="pf-id-chosen")
            with gr.Row():
                rename_to = gr.Textbox(label="New name", elem_id="pf-id-rename-to", scale=3)
                rename = gr.Button("Rename", elem_id="pf-id-rename", scale=1)
            with gr.Row():
                confirm = gr.Checkbox(value=False, label="Yes, delete", elem_id="pf-id-confirm")
                delete = gr.Button("Delete", variant="stop", elem_id="pf-id-delete")
                export = gr.Button("Export", elem_id="pf-id-export")
            exported = gr.File(label="Exported identity (.safetensors)", interactive=False, height=80)
    details = gr.Markdown()
    photo_table = gr.Dataframe(headers=PHOTO_COLUMNS, interactive=False, wrap=True, elem_id="pf-id-photos-table")

    def library(selected: str | None = None) -> tuple[Any, Any]:
        names = state.identity_names()
        value = selected if selected in names else None
        return gr.update(value=identity_rows(state)), gr.update(choices=names, value=value)

    def on_add(
        photos_v: Any,
        name_v: str,
        consent_v: str,
        note_v: str,
        append_v: bool,
        progress: Any = gr.Progress(),  # noqa: B008 - gradio injects progress through this default
    ) -> tuple[Any, ...]:
        progress(0.1, desc="embedding the photos" if state.loaded else "loading the face models (first time only)")
        res = add_identity(state, name_v, photos_v, consent_v, note_v, append_v)
        return res.html, res.details, res.photos, *library(name_v.strip() if res.status == "OK" else None)

    add.click(on_add, [photos, new_name, consent, note, append], [status, details, photo_table, table, chosen])

    def on_show(name_v: str | None) -> tuple[Any, ...]:
        res = show_identity(state, name_v)
        # Choosing (or a rename/delete re-choosing) only fills the details; the status keeps the last action's
        # outcome unless reading the identity failed.
        status_v = res.html if res.status not in ("", "OK") else gr.update()
        return status_v, res.details, res.photos

    chosen.change(on_show, [chosen], [status, details, photo_table])

    def on_rename(old_v: str | None, new_v: str) -> tuple[Any, ...]:
        res = rename_identity(state, old_v, new_v)
        return res.html, *library(new_v.strip() if res.status == "OK" else old_v)

    rename.click(on_rename, [chosen, rename_to], [status, table, chosen])

    def on_delete(name_v: str | None, confirm_v: bool) -> tuple[Any, ...]:
        res = delete_identity(state, name_v, confirm_v)
        return res.html, gr.update(value=False), "", [], *library(None if res.status == "OK" else name_v)

    delete.click(on_delete, [chosen, confirm], [status, confirm, details, photo_table, table, chosen])

    def on_export(name_v: str | None) -> tuple[Any, ...]:
        res = export_identity(state, name_v)
        return res.html, str(res.file) if res.file else None

    export.click(on_export, [chosen], [status, exported])
    return {"table": table, "chosen": chosen}
