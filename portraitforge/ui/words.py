"""Status lines for the web UI: one coloured, wrapping line with its status code, in the UI's words.

Library and CLI messages name command-line flags and server paths (`raise --max-pixels`, `/tmp/gradio/<sha>/x.jpg`);
a browser user can act on neither, so `ui_words` rewrites them: paths become file names, flags become the UI's
labels, and server-side fixes (installing models) are said to be for whoever runs the server.
"""

from __future__ import annotations

import html
import re

from portraitforge.types import Status

# Background/text colours per status: green done, amber done-with-doubts, red failed.
_COLOURS: dict[str, tuple[str, str]] = {
    Status.OK.value: ("#e6f4ea", "#14532d"),
    Status.LOW_QUALITY.value: ("#fff4d6", "#713f12"),
}
_FAILED = ("#fde8e8", "#7f1d1d")
_IDLE = ("#f3f4f6", "#374151")

# Flags whose value the UI exposes under another name.
_FLAG_LABELS: dict[str, str] = {
    "--max-pixels": "the server's pixel limit",
    "--select": "'Faces to change'",
    "--face-index": "'Face numbers'",
    "--reference": "'Reference photo'",
    "--identity": "'Identity'",
    "--consent": "'Consent'",
    "--size": "'Size'",
    "--format": "'Format'",
    "--strength": "'Strength'",
    "--gender": "'Gender'",
}

# Absolute POSIX paths (upload temp files, the store, the model folder): shown by their last component.
_PATH = re.compile(r"(?<![\w.~/:])(?:~?/)(?:[^\s:;,'\"()<>]+/)+([^\s:;,'\"()<>/]+)/?")
# "(or run: portraitforge models setup, or ...)" -> a hint for whoever runs the server.
_MODELS_HINT = re.compile(r"\(?\bor run: portraitforge (models [\w.\-]+(?: [\w.\-]+)?)[^)]*\)?")
_PAREN_WITH_COMMAND = re.compile(r"\s*\([^()]*(?:--[a-z]|portraitforge )[^()]*\)")
_CLAUSE_WITH_COMMAND = re.compile(r";[^;]*(?:--[a-z]|portraitforge )[^;]*")
_FLAG = re.compile(r"--(?:no-)?[a-z][a-z-]*")
_SHARE = re.compile(r"[^.;]*share=True[^.;]*[.;]?", re.IGNORECASE)


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def ui_words(message: str) -> str:
    """`message` without server paths or command-line flags (see the module doc)."""
    text = one_line(message)
    text = re.sub(r"^parameters: [\w.]+: Value error, ", "", text)  # pydantic's prefix on model-level checks
    text = text.replace("parameters: ", "", 1) if text.startswith("parameters: ") else text
    text = _PATH.sub(lambda m: m.group(1), text)
    text = _MODELS_HINT.sub(lambda m: f"(whoever runs this server can fetch it with: portraitforge {m.group(1)})", text)
    text = text.replace("(raise the server's pixel limit if this is intended)", "")
    text = text.replace("(raise --max-pixels if this is intended)", "(the server's pixel limit)")
    text = _SHARE.sub("", text)
    # Keep the server-side models hint; drop other command suggestions, which name CLI flags.
    kept = [m.group(0) for m in re.finditer(r"\(whoever runs this server[^)]*\)", text)]
    for k, hint in enumerate(kept):
        text = text.replace(hint, f"\x00{k}\x00")
    text = _PAREN_WITH_COMMAND.sub("", text)
    text = _CLAUSE_WITH_COMMAND.sub("", text)
    text = _FLAG.sub(lambda m: _FLAG_LABELS.get(m.group(0), f"'{m.group(0).lstrip('-').replace('-', ' ')}'"), text)
    for k, hint in enumerate(kept):
        text = text.replace(f"\x00{k}\x00", hint)
    return one_line(text)


def status_line(status: Status | str, message: str) -> str:
    """`CODE: message` on one line (the plain-text form of a status, also used in tests and logs)."""
    return one_line(f"{Status(status).value}: {ui_words(message)}")


def status_html(status: Status | str | None, message: str) -> str:
    """The visible status line: coloured by outcome, wrapping (never cut off), code first."""
    if status is None:
        background, colour = _IDLE
        code = ""
    else:
        code = Status(status).value
        background, colour = _COLOURS.get(code, _FAILED)
    body = html.escape(ui_words(message))
    label = f'<b style="font-family:ui-monospace,monospace">{code}</b>: ' if code else ""
    style = (
        f"background:{background};color:{colour};border:1px solid {colour}33;border-radius:6px;"
        "padding:8px 12px;white-space:normal;overflow-wrap:anywhere;font-size:15px;line-height:1.4"
    )
    return f'<div class="pf-status" data-status="{code}" role="status" style="{style}">{label}{body}</div>'
