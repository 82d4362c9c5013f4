"""The web UI (gradio, the optional `ui` extra).

The handlers (`run_swap`, `detect_faces`, `add_identity`, ...) are plain typed functions of a `UIState` and control
values, tested without a browser; the `*_tab` modules only lay out components and wire them. Gradio is imported by
`build_app`, not by importing this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portraitforge.ui.generate import run_generate
from portraitforge.ui.state import UIState
from portraitforge.ui.swap import SWAP_CONTROLS, SwapResult, detect_faces, run_swap, run_sweep
from portraitforge.ui.words import status_html, status_line, ui_words

if TYPE_CHECKING:
    from portraitforge.ui.app import PortraitForgeApp


def build_app(*args: Any, **kwargs: Any) -> PortraitForgeApp:
    """See `portraitforge.ui.app.build_app` (imported here lazily: it imports gradio)."""
    from portraitforge.ui.app import build_app as build

    return build(*args, **kwargs)


__all__ = [
    "SWAP_CONTROLS",
    "SwapResult",
    "UIState",
    "build_app",
    "detect_faces",
    "run_generate",
    "run_swap",
    "run_sweep",
    "status_html",
    "status_line",
    "ui_words",
]
