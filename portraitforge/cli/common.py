"""What every command module shares: help settings, writable-folder checks, JSON output.

Failures are not handled here: commands raise, and `portraitforge.cli.exit_code_for` reports them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from typer._click import Context, HelpFormatter  # typer >= 0.29 vendors click
from typer.core import TyperCommand

from portraitforge.errors import BadInputError

# Plain click help (no rich boxes): at 80 columns rich cut long option names ("--color-transf…").
HELP_SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "add_completion": False, "pretty_exceptions_enable": False}

JSON_HELP = "Print a machine-readable report on stdout."


class Command(TyperCommand):
    """Help as the README writes commands: `swap [OPTIONS] TARGET...`, arguments by name and help alone.
    (typer 0.29 writes `{TARGET}...` and tags arguments with Python types such as `<list[Path]>`.)"""

    def collect_usage_pieces(self, ctx: Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = _argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((_argument_name(param), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_name(param: Any) -> str:
    name = str(param.metavar or param.name.upper())
    return name if param.nargs == 1 else f"{name}..."


class CommandTyper(typer.Typer):
    """A `typer.Typer` whose commands use `Command` for their help."""

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or Command, **kwargs)


def group(name: str, help: str) -> typer.Typer:
    """A command group (`portraitforge NAME ...`)."""
    return CommandTyper(name=name, help=help, no_args_is_help=True, **HELP_SETTINGS)


def single() -> typer.Typer:
    """A module holding one top-level command (`portraitforge swap ...`)."""
    return CommandTyper(**HELP_SETTINGS)


def preset_help(text: str, field: str) -> str:
    """Help for a refine setting the CLI leaves to the --config preset unless given: `text` plus the built-in
    default, written as click writes defaults (typer would put a string default in parentheses)."""
    from portraitforge.config import RefineConfig

    value = RefineConfig.model_fields[field].default
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{text}  [default: {shown}]"


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def writable_dir(path: Path, what: str) -> Path:
    """Check that `path` is, or can be made, a writable folder, before any slow work: an unwritable output or
    store folder then fails in a second with one line, not after the models loaded. Leaves nothing behind: the
    folders made to prove it are removed again (the writer makes them when it writes)."""
    made: list[Path] = []  # deepest first
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        made.append(probe)
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        usable = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
        reason = "not a writable folder"
    except OSError as exc:
        usable, reason = False, str(exc.strerror or exc)
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
    if not usable:
        raise BadInputError(f"cannot write the {what} {path}: {reason}")
    return path


def emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
