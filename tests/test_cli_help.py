"""`portraitforge COMMAND --help` is readable at 80 columns: whole option names, a help text for every option,
defaults shown, clean metavars. Every command of the app is rendered (enumerated from its click tree)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer._click import Context  # typer >= 0.29 vendors click
from typer.testing import CliRunner

from portraitforge.cli import app
from portraitforge.config import RefineConfig

REPO = Path(__file__).resolve().parents[1]


def commands() -> dict[tuple[str, ...], typer.core.TyperCommand]:
    """Every command and group, by its words after `portraitforge` (the root is `()`)."""
    found: dict[tuple[str, ...], typer.core.TyperCommand] = {}

    def walk(command: typer.core.TyperCommand, path: tuple[str, ...]) -> None:
        found[path] = command
        for name, child in (getattr(command, "commands", None) or {}).items():
            walk(child, (*path, name))

    walk(typer.main.get_command(app), ())  # type: ignore[arg-type]
    return found


COMMANDS = commands()
LEAVES = {path: c for path, c in COMMANDS.items() if not getattr(c, "commands", None)}

# typer's type tags (`<str>`, `<int range>`, `<list[Path]>`) and click's (TEXT, INTEGER RANGE): the metavars
# should say what a value is (PATH, N, 0..1, MODE), not which Python type parses it.
TYPE_TAG = re.compile(r"<[a-z][\w\[\], |]*>|\b(?:TEXT|INTEGER|FLOAT|BOOLEAN)(?: RANGE)?\b")


def render(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def options(command: typer.core.TyperCommand) -> list[typer.core.TyperOption]:
    return [p for p in command.params if p.param_type_name == "option"]  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "portraitforge")
def test_help_fits_80_columns_with_whole_option_names(path: tuple[str, ...]) -> None:
    text = render(path)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    assert not re.search(r"--[\w-]+\.\.\.", text), text  # an option name cut short
    for option in options(COMMANDS[path]):
        for name in [*option.opts, *option.secondary_opts]:
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (name, text)
    assert not TYPE_TAG.search(text), TYPE_TAG.search(text)


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_every_parameter_has_help_and_shown_default(path: tuple[str, ...]) -> None:
    command = LEAVES[path]
    assert command.help, path
    text = render(path)
    for param in command.params:
        if param.name == "help":
            continue
        assert (param.help or "").strip(), (path, param.name)  # type: ignore[attr-defined]
        default = param.default
        if default not in (None, False) and not (isinstance(default, list | tuple) and not default):
            record = param.get_help_record(Context(command))
            assert record is not None and "[default:" in record[1], (path, param.name, record)
    assert "Show this message and exit." in text


def test_preset_backed_swap_options_show_the_built_in_default() -> None:
    """Options left to the --config preset show the value used without one (from RefineConfig itself)."""
    swap = LEAVES[("swap",)]
    text = " ".join(render(("swap",)).split())
    checked = 0
    for option in options(swap):
        if option.name in RefineConfig.model_fields and option.name != "models_dir":
            default = RefineConfig.model_fields[option.name].default
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert f"[default: {shown}]" in " ".join((option.help or "").split()), option.name
            checked += 1
    assert checked >= 20 and "[default: 1.0]" in text  # --strength


def test_real_terminal_help_at_80_columns() -> None:
    """The console entry point itself (not the test runner) renders the same help."""
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "portraitforge.cli", "swap", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("Usage: portraitforge swap [OPTIONS] TARGET...")
    assert "--color-transfer / --no-color-transfer" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
