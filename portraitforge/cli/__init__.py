"""Command line: `portraitforge swap|generate|identity|batch|models|demo|ui`.

The error contract lives here and only here. Commands raise (a typed `PortraitForgeError`, a usage error, an
`OSError`, anything) and `exit_code_for` turns it into one `error: ...` line on stderr and the exit code of the
README's table ("Reports, quality and exit codes"). Commands print no failures of their own, except the
per-file lines of multi-file runs, which then end with `typer.Exit(worst status's code)`.

Every command module registers the same way: it holds a `typer.Typer` named `app` (named after its group, or
nameless for a single command) and decorates its commands with `@app.command(...)`; `COMMAND_MODULES` below
adds each to the root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from typer._click.exceptions import ClickException, UsageError  # typer >= 0.29 vendors click, unexported
from typer.core import TyperGroup

from portraitforge import __version__
from portraitforge.cli import batch, demo, generate, identity, inspect, models, swap, ui
from portraitforge.cli.common import HELP_SETTINGS, one_line
from portraitforge.errors import ParameterError, PortraitForgeError
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

PROG_NAME = "portraitforge"


def exit_code_for(exc: BaseException) -> int:
    """The one mapping from whatever a command raised to the README's exit code; prints at most one line."""
    if isinstance(exc, typer.Exit):  # a command ended with a status it has already reported (or --help)
        return exc.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    if isinstance(exc, UsageError) and type(exc).__name__ == "NoArgsIsHelpError":
        # A bare `portraitforge models`: the help, and the usage code. (typer's own formatter also tells this
        # error by its name: the class is not exported.)
        typer.echo(exc.format_message())
        return EXIT_USAGE
    if isinstance(exc, UsageError):  # click's parsing: unknown option, bad value, missing argument
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        return _error(exc.format_message() + hint, EXIT_USAGE)
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        return _error("interrupted", EXIT_CODES[Status.INTERRUPTED])
    if isinstance(exc, ClickException):
        return _error(exc.format_message(), exc.exit_code)
    if isinstance(exc, ParameterError):  # an invalid value, from a flag, a preset or a batch spec alike
        return _error(exc.message, EXIT_USAGE)
    if isinstance(exc, PortraitForgeError):
        return _error(exc.message, EXIT_CODES[exc.status])
    if isinstance(exc, MemoryError):
        return _error("out of memory", EXIT_CODES[Status.OUT_OF_MEMORY])
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        # `portraitforge ... | head` closed the pipe: exit 1 silently, and keep Python's final flush of stdout
        # from printing a second error (the recipe of the Python docs' "Note on SIGPIPE").
        with contextlib.suppress(OSError, ValueError):  # stdout may have no file descriptor (tests)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CODES[Status.INTERNAL]
    if isinstance(exc, OSError):  # unwritable output/store/models folder, full disk, unreadable file
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}", EXIT_CODES[Status.BAD_INPUT])
    return _error(f"internal error (please report it): {type(exc).__name__}: {exc}", EXIT_CODES[Status.INTERNAL])


def _error(message: str, code: int) -> int:
    typer.echo(f"error: {one_line(message)}", err=True)
    return code


class ContractGroup(TyperGroup):
    """The root command. Its `main` is what the console script, `python -m portraitforge.cli` and
    `typer.testing.CliRunner` call, so every way in passes through `exit_code_for`.

    Not click's `main`: that turns Ctrl-C into a silent exit, prints usage errors as a box and lets every
    other exception escape as a traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        argv = sys.argv[1:] if args is None else list(args)
        try:
            with self.make_context(prog_name or PROG_NAME, argv, **extra) as ctx:
                self.invoke(ctx)
        except BaseException as exc:  # noqa: BLE001 - the contract: every failure is one line + its code
            sys.exit(exit_code_for(exc))
        sys.exit(0)


app = typer.Typer(
    name=PROG_NAME,
    cls=ContractGroup,
    help="Prompt-to-portrait with a consistent identity: detect, upscale, swap, blend.",
    no_args_is_help=True,
    **HELP_SETTINGS,
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


# Help lists the commands in this order.
COMMAND_MODULES = (swap, generate, identity, batch, models, inspect, demo, ui)
for _module in COMMAND_MODULES:
    app.add_typer(_module.app)


def main() -> NoReturn:
    """Console-script entry point (`portraitforge = "portraitforge.cli:main"`)."""
    app()
    raise AssertionError("unreachable: ContractGroup.main always exits")
