"""`portraitforge demo`: the offline showcase written by the README's first command."""

from __future__ import annotations

from pathlib import Path

import typer

from portraitforge.cli.common import single, writable_dir

app = single()


@app.command("demo")
def demo(
    output: Path = typer.Option(
        Path("outputs/demo"), "--output", "-o", help="Folder for the demo images.", metavar="DIR"
    ),
) -> None:
    """Swap a face between photos shipped in the installed wheels and write comparison sheets."""
    from portraitforge.demo import run_demo

    out = run_demo(writable_dir(output, "output folder"))
    for path in out.files:
        typer.echo(str(path))
    typer.echo(f"{out.report.status.value}: {out.report.message}", err=True)
