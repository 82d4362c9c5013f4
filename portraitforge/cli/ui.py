"""`portraitforge ui`: serve the web UI (gradio, the optional `ui` extra) on a local port."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from portraitforge.cli.common import single, writable_dir
from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError

INSTALL_HINT = "pip install 'portraitforge[ui]'"

app = single()


def gradio_available() -> bool:
    return importlib.util.find_spec("gradio") is not None


@app.command("ui")
def ui(
    host: str = typer.Option(
        "127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network).", metavar="ADDRESS"
    ),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on.", metavar="1..65535"),
    share: bool = typer.Option(False, "--share/--no-share", help="Also open a public gradio.live link."),
    store: Path | None = typer.Option(
        None, help="Identity store folder.", metavar="DIR", show_default="$PORTRAITFORGE_HOME/embeddings_cache"
    ),
    require_consent: bool = typer.Option(
        False, "--require-consent", help="Only use identities with a consent record; adding one needs consent text."
    ),
    nsfw_policy: str | None = typer.Option(
        None,
        "--nsfw-policy",
        help="Put every run through the NSFW gate with this policy: refuse | blur | flag (extra: nsfw).",
        metavar="POLICY",
        show_default="off",
    ),
) -> None:
    """Open the web UI: swap a face toward an identity, or generate a portrait. Ctrl-C stops it."""
    if not gradio_available():
        raise ModelUnavailableError(f"the web UI needs gradio, which is not installed: {INSTALL_HINT}")
    if nsfw_policy is not None and nsfw_policy not in ("refuse", "blur", "flag"):
        raise ParameterError(f"--nsfw-policy must be refuse, blur or flag, not '{nsfw_policy}'")
    if store is not None:  # the UI writes there (audit log, identities): fail now, not on the first click
        writable_dir(store, "identity store folder")
    from portraitforge.ui import build_app

    web_app = build_app(store_dir=store, require_consent=require_consent, nsfw_policy=nsfw_policy)
    try:
        web_app.launch(server_name=host, server_port=port, share=share)
    except OSError as exc:  # port taken, bad interface: one line, not uvicorn's traceback
        raise BadInputError(f"cannot serve the web UI on {host}:{port}: {exc}") from None
