"""`portraitforge ui`: serve the web UI (gradio, the optional `ui` extra) on a local port."""

from __future__ import annotations

import importlib.util

import typer

from portraitforge.cli.common import fail, one_line_errors
from portraitforge.types import EXIT_CODES, Status

INSTALL_HINT = "pip install 'portraitforge[ui]'"


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


def ui(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on."),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a public gradio.live link."),
    store: str | None = typer.Option(None, help="Identity store folder (default $PORTRAITFORGE_HOME)."),
    require_consent: bool = typer.Option(
        False, "--require-consent", help="Only use identities with a consent record; adding one needs consent text."
    ),
) -> None:
    """Open the web UI: swap a face toward an identity, or generate a portrait. Ctrl-C stops it."""
    with one_line_errors():
        if not gradio_available():
            fail(
                f"the web UI needs gradio, which is not installed: {INSTALL_HINT}", EXIT_CODES[Status.MODEL_UNAVAILABLE]
            )
        from portraitforge.ui import build_app

        app = build_app(store_dir=store, require_consent=require_consent)
        try:
            app.launch(server_name=host, server_port=port, share=share)
        except OSError as exc:  # port taken, bad interface: one line, not uvicorn's traceback
            fail(f"cannot serve the web UI on {host}:{port}: {exc}", EXIT_CODES[Status.BAD_INPUT])


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)
