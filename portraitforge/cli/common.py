"""Helpers every CLI command shares: one-line errors and exit codes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from portraitforge.errors import ParameterError, PortraitForgeError
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def exit_code_for(error: PortraitForgeError) -> int:
    return EXIT_USAGE if isinstance(error, ParameterError) else EXIT_CODES[error.status]


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn any failure into one line on stderr plus its documented exit code; never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except PortraitForgeError as exc:
        fail(exc.message, exit_code_for(exc))
    except BrokenPipeError:  # `| head` closed the pipe: click exits quietly (1)
        raise
    except KeyboardInterrupt:
        fail("interrupted", EXIT_CODES[Status.INTERRUPTED])
    except MemoryError:
        fail("out of memory", EXIT_CODES[Status.OUT_OF_MEMORY])
    except Exception as exc:  # last resort: report, never dump a traceback on users
        fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_CODES[Status.INTERNAL])


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
