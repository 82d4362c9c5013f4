"""Identities-tab handlers: add from several photos (with consent), inspect, rename, delete, export.

All store access goes through the `IdentityStore` of the app's state, so the store's lock, validation, atomic writes
and audit lines are the CLI's (`portraitforge identity ...`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec

from portraitforge.errors import BadInputError
from portraitforge.types import Status
from portraitforge.ui.state import UIState
from portraitforge.ui.swap import captured
from portraitforge.ui.words import status_html, ui_words

PHOTO_COLUMNS = ["photo", "kept", "quality", "why rejected"]
LIST_COLUMNS = ["name", "photos kept", "consent", "note", "updated"]
P = ParamSpec("P")


@dataclass
class IdentityResult:
    status: str
    message: str
    photos: list[list[Any]] = field(default_factory=list)  # rows of PHOTO_COLUMNS
    details: str = ""  # markdown: consent, reference photo, embedding spaces
    file: Path | None = None  # the export

    @property
    def html(self) -> str:
        return status_html(self.status, self.message)


def _one_line(handler: Callable[P, IdentityResult]) -> Callable[P, IdentityResult]:
    """Run a handler under `captured`: any failure becomes a one-line IdentityResult, never an exception."""

    @functools.wraps(handler)
    def run(*args: P.args, **kwargs: P.kwargs) -> IdentityResult:
        out: dict[str, Any] = {}
        with captured(out):
            return handler(*args, **kwargs)
        return IdentityResult(out.get("status", Status.INTERNAL.value), ui_words(out.get("message", "unknown failure")))

    return run


def identity_rows(state: UIState) -> list[list[Any]]:
    """One row per stored identity (LIST_COLUMNS); a corrupted one says so instead of its counts."""
    try:
        items = state.store().list()
    except (OSError, BadInputError):
        return []
    rows: list[list[Any]] = []
    for item in items:
        if item.error:
            rows.append([item.name, "CORRUPTED", "", ui_words(item.error), ""])
        else:
            rows.append(
                [
                    item.name,
                    f"{item.kept} of {item.photos}",
                    "yes" if item.consent else "no",
                    item.note or "",
                    item.updated,
                ]
            )
    return rows


def _photo_rows(meta: dict[str, Any]) -> list[list[Any]]:
    return [
        [p["file"], "yes" if p["kept"] else "no", round(float(p["quality"]) * 100), "; ".join(p["reasons"])]
        for p in meta["photos"]
    ]


def _details(meta: dict[str, Any]) -> str:
    consent = meta.get("consent")
    said = f"**consent:** {consent['text']} (recorded {consent['recorded_at']})" if consent else "**consent:** none"
    reference = meta["photos"][meta["reference"]["photo"]]["file"]
    return f"**{meta['name']}**: reference photo {reference}; embeddings: {', '.join(meta['spaces'])}  \n{said}"


@_one_line
def add_identity(
    state: UIState, name: str, photos: list[Any] | None, consent: str = "", note: str = "", append: bool = False
) -> IdentityResult:
    """Embed `photos` (files) as identity `name`. Consent text is required when the server requires consent.
    Nothing is stored when a photo fails (the store's all-or-nothing `add`)."""
    name = (name or "").strip()
    if not name:
        raise BadInputError("give the identity a name")
    files = [state.as_file(p, "identity photo") for p in photos or []]
    if not files:
        raise BadInputError("no photos: upload one or more photos of the person (several give a better identity)")
    consent_text = (consent or "").strip()
    if state.require_consent and not consent_text:
        raise BadInputError(
            "this server requires consent: describe who agreed, to what and when in the 'Consent' field"
        )
    with state.lock:
        analyzers = state.identity_analyzers()
        record = state.store().add(
            name,
            files,
            note=(note or "").strip() or None,
            consent=consent_text or None,
            analyzers=analyzers,
            exist="append" if append else "error",
        )
    meta = record.model_dump(mode="json")
    kept, total = len(record.kept), len(record.photos)
    message = f"added '{record.name}': {kept} of {total} photo(s) kept"
    if record.rejected:
        message += "; rejected: " + "; ".join(f"{p.file} ({', '.join(p.reasons)})" for p in record.rejected)
    return IdentityResult(Status.OK.value, message, _photo_rows(meta), _details(meta))


@_one_line
def show_identity(state: UIState, name: str | None) -> IdentityResult:
    if not name:
        return IdentityResult("", "choose an identity to see its photos")
    meta = state.store().show(name)
    kept = sum(1 for p in meta["photos"] if p["kept"])
    message = f"'{name}': {kept} of {len(meta['photos'])} photo(s) kept"
    return IdentityResult(Status.OK.value, message, _photo_rows(meta), _details(meta))


@_one_line
def rename_identity(state: UIState, old: str | None, new: str) -> IdentityResult:
    if not old:
        raise BadInputError("choose the identity to rename")
    new = (new or "").strip()
    if not new:
        raise BadInputError("give the new name")
    record = state.store().rename(old, new)
    return IdentityResult(Status.OK.value, f"renamed '{old}' to '{record.name}'")


@_one_line
def delete_identity(state: UIState, name: str | None, confirmed: bool) -> IdentityResult:
    if not name:
        raise BadInputError("choose the identity to delete")
    if not confirmed:
        raise BadInputError(f"tick 'Yes, delete' to confirm deleting '{name}'")
    state.store().remove(name)
    return IdentityResult(Status.OK.value, f"deleted '{name}'")


@_one_line
def export_identity(state: UIState, name: str | None) -> IdentityResult:
    """One self-contained .safetensors file (embeddings, crops, metadata), to import on another machine."""
    if not name:
        raise BadInputError("choose the identity to export")
    target = state.new_output(f"identity-{name}", "safetensors")
    state.store().export(name, target)
    return IdentityResult(Status.OK.value, f"exported '{name}' as {target.name}", file=target)
