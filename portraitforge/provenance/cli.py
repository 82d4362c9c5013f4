"""`portraitforge inspect IMAGE... [--json]`: verify Content Credentials, decode the watermark, find the log entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from portraitforge.cli_common import exit_code_for
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.imageio import list_images
from portraitforge.paths import default_log_path, home_dir
from portraitforge.provenance.inspect import EXIT_TAMPERED, inspect_image


def inspect(
    images: list[Path] = typer.Argument(..., help="Image files or folders.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON report per image on stdout."),
    log: Path | None = typer.Option(None, help="Run log to search (default: $PORTRAITFORGE_HOME/logs/runs.jsonl)."),
    store_dir: Path | None = typer.Option(None, "--store", help="Identity store whose audit log is searched."),
) -> None:
    """Report each image's C2PA manifest (valid / invalid / missing), watermark, metadata and log entry.

    Exit 0 when every image was read and no manifest failed; 8 when a manifest is invalid (tampered);
    3 when an image cannot be read (the worst code wins)."""
    from portraitforge.embeddings_cache.audit import AUDIT_FILE
    from portraitforge.embeddings_cache.store import STORE_DIRNAME

    logs = [log or default_log_path(), (store_dir or home_dir() / STORE_DIRNAME) / AUDIT_FILE]
    files = list_images(images)
    code = 0
    if not files:
        typer.echo("error: no images found", err=True)
        raise typer.Exit(exit_code_for(BadInputError("")))
    for path in files:
        try:
            report = inspect_image(path, logs)
        except PortraitForgeError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            code = max(code, exit_code_for(exc))
            continue
        if report.credentials.state == "invalid":
            code = max(code, EXIT_TAMPERED)
        if as_json:
            typer.echo(json.dumps(report.to_dict(), default=str))
        else:
            typer.echo(report.summary(), file=sys.stdout)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
