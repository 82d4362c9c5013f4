"""The codebase stays lint- and type-clean: ruff and mypy run as part of the test command CI uses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_is_clean() -> None:
    if shutil.which("ruff") is None and _run("ruff", "--version").returncode != 0:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = _run("ruff", "check", "portraitforge", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    if _run("mypy", "--version").returncode != 0:
        pytest.skip("mypy is not installed (pip install -e '.[dev]')")
    result = _run("mypy", "portraitforge")
    assert result.returncode == 0, result.stdout[-3000:]
