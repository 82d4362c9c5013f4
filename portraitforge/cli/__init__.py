"""Command line: `portraitforge swap|demo|...`. Every failure is one line plus a documented exit code."""

from __future__ import annotations

import sys

import typer

from portraitforge import __version__
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

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


# typer >= 0.29 vendors its own click; its exceptions are reachable through the public ones' bases.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]  # UsageError
_CLICK_EXCEPTION: type[Exception] = typer.BadParameter.__mro__[2]  # ClickException


# --- sub-command registration: one line per module (each module exposes `register(app)`) ---
# (keep this block sorted; helpers add their own line)
from portraitforge.cli import batch  # noqa: E402

batch.register(app)
from portraitforge.cli import demo, swap  # noqa: E402

demo.register(app)
swap.register(app)
from portraitforge.cli import generate  # noqa: E402

generate.register(app)
from portraitforge.cli import models  # noqa: E402

models.register(app)
from portraitforge.cli import identity  # noqa: E402

identity.register(app)
from portraitforge.cli import ui  # noqa: E402

ui.register(app)
from portraitforge.provenance import cli as provenance_cli  # noqa: E402

provenance_cli.register(app)
# --- end of registration ---


def main() -> None:
    """Entry point. Click's usage errors (bad option types, missing arguments) become one line + exit 2,
    like every other failure, instead of click's multi-line box."""
    try:
        code = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        ctx = getattr(exc, "ctx", None)
        if not exc.format_message().strip():  # type: ignore[attr-defined]
            sys.exit(EXIT_USAGE)  # no arguments: the help text was printed
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)  # type: ignore[attr-defined]
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(EXIT_CODES[Status.INTERRUPTED])
    except _CLICK_EXCEPTION as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 1))
    sys.exit(code if isinstance(code, int) else 0)

