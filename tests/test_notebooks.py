"""Notebooks in notebooks/ are valid nbformat 4 without stored outputs, and every one runs top to bottom.

Code cells are executed in order in one namespace (what "Run All" does in a kernel), with matplotlib's Agg
backend, a temporary working directory and temporary `tempfile` folder; PORTRAITFORGE_HOME is already a
temporary folder (conftest). Notebooks with a checker below must also leave a real result behind.
"""

from __future__ import annotations

import json
import linecache
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from portraitforge.config import RefineConfig
from portraitforge.types import Status

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
Namespace = dict[str, Any]


def load_notebook(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def execute(path: Path, workdir: Path) -> Namespace:
    """Every code cell of `path`, in order, in one namespace; returns that namespace."""
    namespace: Namespace = {"__name__": "__main__"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("MPLBACKEND", "Agg")
        mp.setattr(tempfile, "tempdir", str(workdir))
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            pass
        for index, cell in enumerate(load_notebook(path)["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = cell_source(cell)
            filename = f"<{path.name} cell {index}>"
            # Tracebacks then show the failing notebook line.
            linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
            exec(compile(source, filename, "exec"), namespace)
    try:
        import matplotlib.pyplot as plt

        plt.close("all")
    except ImportError:
        pass
    return namespace


@pytest.fixture(scope="module")
def run_notebook(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Namespace]:
    """Executes each notebook at most once per module; tests share the resulting namespace."""
    cache: dict[Path, Namespace] = {}

    def run(path: Path) -> Namespace:
        if path not in cache:
            cache[path] = execute(path, tmp_path_factory.mktemp(f"nb-{path.stem}"))
        return cache[path]

    return run


def check_quickstart(ns: Namespace) -> None:
    target, result, before = ns["target"], ns["result"], ns["before"]
    assert ns["config"] == RefineConfig()  # the notebook loads the default preset
    assert result.report.status is Status.OK, result.report.message
    assert result.image is not None
    assert result.image.shape == target.shape and result.image.dtype == np.uint8
    assert len(result.report.faces) == 1
    quality = result.report.faces[0].quality
    assert quality is not None and quality.identity_distance is not None
    # A real swap: the face moved clearly toward the identity and nothing far from it changed.
    assert before > 0.6, "the astronaut is not the identity before refining"
    assert quality.identity_distance < 0.6, quality.identity_distance  # dlib's same-person threshold
    assert quality.identity_distance < before - 0.1, (before, quality.identity_distance)
    x0, y0, x1, y1 = (int(v) for v in result.report.faces[0].box)
    inside = np.abs(result.image[y0:y1, x0:x1].astype(int) - target[y0:y1, x0:x1]).mean()
    assert inside > 5.0, f"face region barely changed (mean abs difference {inside:.2f})"
    far = np.ones(target.shape[:2], bool)
    h, w = y1 - y0, x1 - x0
    far[max(0, y0 - h) : y1 + h, max(0, x0 - w) : x1 + w] = False
    assert np.array_equal(result.image[far], target[far])
    assert {"detect", "swap", "blend", "grade"} <= set(result.report.timings_ms)
    assert json.loads(json.dumps(ns["report"]))["status"] == result.report.status.value

    # Strength sweep: 0 gives the target back untouched, more strength never moves away from the identity.
    sweep = ns["sweep"]
    assert sorted(sweep) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert np.array_equal(sweep[0.0][0].image, target)
    distances = [sweep[s][1] for s in sorted(sweep)]
    assert all(b <= a + 0.01 for a, b in zip(distances, distances[1:], strict=False)), distances
    assert distances[-1] < distances[0] - 0.05, distances

    # The stored identity is reused without re-embedding and refines like the fresh one.
    assert not result.report.identity_cache_hit
    cached, cached_result = ns["cached"], ns["cached_result"]
    assert cached.cache_hit and cached_result.report.identity_cache_hit
    assert ns["cached_report"]["identity_cache_hit"] is True
    assert cached_result.ok and cached_result.report.faces[0].quality is not None
    assert cached_result.report.faces[0].quality.identity_distance == pytest.approx(quality.identity_distance, abs=0.01)
    assert ns["store"].names() == ["t1-face-1"]


CHECKS: dict[str, Callable[[Namespace], None]] = {"quickstart.ipynb": check_quickstart}


def test_notebooks_exist() -> None:
    assert (REPO / "notebooks" / "quickstart.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_nbformat4_without_outputs(path: Path) -> None:
    nb = load_notebook(path)
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 4
    assert set(nb) == {"cells", "metadata", "nbformat", "nbformat_minor"}
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell.get("id") for cell in nb["cells"]]
    if nb["nbformat_minor"] >= 5:
        assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    assert any(cell["cell_type"] == "code" for cell in nb["cells"])
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("code", "markdown", "raw")
        assert isinstance(cell["metadata"], dict) and isinstance(cell["source"], str | list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "clear the notebook's outputs"
            compile(cell_source(cell), path.name, "exec")  # no IPython magics: it must run as plain Python


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, run_notebook: Callable[[Path], Namespace]) -> None:
    assert os.environ.get("PORTRAITFORGE_HOME"), "conftest isolates PORTRAITFORGE_HOME"
    ns = run_notebook(path)
    check = CHECKS.get(path.name)
    if check is not None:
        check(ns)
