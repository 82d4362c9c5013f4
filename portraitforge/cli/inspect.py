"""`portraitforge inspect IMAGE... [--json]`: verify Content Credentials, decode the watermark, find the log entry."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from portraitforge.cli.common import single
from portraitforge.errors import BadInputError, ParameterError, PortraitForgeError
from portraitforge.imageio import list_images
from portraitforge.paths import default_log_path, home_dir
from portraitforge.types import EXIT_CODES, EXIT_USAGE

app = single()


@app.command("inspect")
def inspect(
    images: list[Path] = typer.Argument(..., help="Image files or folders.", show_default=False, metavar="IMAGE..."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON report per image on stdout."),
    log: Path | None = typer.Option(
        None, help="Run log to search.", metavar="FILE", show_default="$PORTRAITFORGE_HOME/logs/runs.jsonl"
    ),
    store_dir: Path | None = typer.Option(
        None,
        "--store",
        help="Identity store whose audit log is searched.",
        metavar="DIR",
        show_default="$PORTRAITFORGE_HOME/embeddings_cache",
    ),
) -> None:
    """Report each image's C2PA manifest (valid / invalid / missing), watermark, metadata and log entry.

    Exit 0 when every image was read and no manifest failed; 8 when a manifest is invalid (tampered); 3 when an
    image cannot be read (the worst code wins; each unreadable image gets its own line)."""
    from portraitforge.embeddings_cache.audit import AUDIT_FILE
    from portraitforge.embeddings_cache.store import STORE_DIRNAME
    from portraitforge.provenance.inspect import EXIT_TAMPERED, inspect_image

    logs = [log or default_log_path(), (store_dir or home_dir() / STORE_DIRNAME) / AUDIT_FILE]
    files = list_images(images)
    if not files:
        raise BadInputError("no images found")
    code = 0
    for path in files:
        try:
            report = inspect_image(path, logs)
        except PortraitForgeError as exc:  # per file, like swap: the others are still inspected
            message = exc.message if exc.message.startswith(str(path)) else f"{path}: {exc.message}"
            typer.echo(f"error: {message}", err=True)
            code = max(code, EXIT_USAGE if isinstance(exc, ParameterError) else EXIT_CODES[exc.status])
            continue
        if report.credentials.state == "invalid":
            code = max(code, EXIT_TAMPERED)
        typer.echo(json.dumps(report.to_dict(), default=str) if as_json else report.summary())
    if code:
        raise typer.Exit(code)
