"""Command line: `portraitforge swap|demo|...`. Every failure is one line plus a documented exit code."""

from __future__ import annotations

import typer

from portraitforge import __version__

app = typer.Typer(
    name="portraitforge",
    help="Prompt-to-portrait with a consistent identity: detect, upscale, swap, blend.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"portraitforge {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print version."),
) -> None:
    """portraitforge command line."""


# --- sub-command registration: one line per module (each module exposes `register(app)`) ---
# (keep this block sorted; helpers add their own line)
from portraitforge import cli_batch  # noqa: E402

cli_batch.register(app)
from portraitforge import cli_demo, cli_swap  # noqa: E402

cli_demo.register(app)
cli_swap.register(app)
from portraitforge import cli_generate  # noqa: E402

cli_generate.register(app)
from portraitforge import cli_models  # noqa: E402

cli_models.register(app)
from portraitforge import cli_identity  # noqa: E402

cli_identity.register(app)
from portraitforge import cli_ui  # noqa: E402

cli_ui.register(app)
# --- end of registration ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
