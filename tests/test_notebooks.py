"""Every notebook in notebooks/ is valid nbformat 4 without stored outputs and runs top to bottom in a real
Jupyter kernel (nbclient, as "Run All" does), in a temporary working folder and the temporary PORTRAITFORGE_HOME
of conftest. Each notebook's checker then judges what it left on disk: images, reports, the identity store and
its audit log, measured here with models the notebook did not use for its decision where it matters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.imageio import load_image, read_metadata
from portraitforge.paths import home_dir
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.samples import insightface_image, skimage_image
from portraitforge.types import Status

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Run every cell of `path` in a fresh kernel with `workdir` as its working folder; a failing cell raises
    nbclient's CellExecutionError naming the cell and its traceback."""
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this process's environment (PORTRAITFORGE_HOME from conftest, PYTHONPATH); ipykernel
    # draws matplotlib figures with its inline backend, as display_data outputs.
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    nbformat.write(nb, workdir / path.name)  # the executed notebook, figures included, to look at
    return nb


@pytest.fixture(scope="module")
def run_notebook(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], tuple[nbformat.NotebookNode, Path]]:
    """Executes each notebook at most once per module; returns it (with outputs) and its working folder."""
    cache: dict[Path, tuple[nbformat.NotebookNode, Path]] = {}

    def run(path: Path) -> tuple[nbformat.NotebookNode, Path]:
        if path not in cache:
            workdir = tmp_path_factory.mktemp(f"nb-{path.stem}")
            cache[path] = (execute(path, workdir), workdir)
        return cache[path]

    return run


def _outputs(nb: nbformat.NotebookNode, output_type: str) -> list[nbformat.NotebookNode]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == output_type]


def _face_changed_toward(result: np.ndarray, target: np.ndarray, identity_photo: np.ndarray) -> tuple[float, float]:
    """dlib distances to the identity photo's face: (target, result). dlib is not the mesh engine's grader."""
    analyzer = DlibFaceAnalyzer.load()
    reference = analyzer.embed(identity_photo, analyzer.detect(identity_photo)[0])
    before = analyzer.distance(analyzer.embed(target, analyzer.detect(target)[0]), reference)
    after = analyzer.distance(analyzer.embed(result, analyzer.detect(result)[0]), reference)
    return before, after


def check_quickstart(nb: nbformat.NotebookNode, workdir: Path) -> None:
    output, report_file = workdir / "quickstart_result.png", workdir / "quickstart_result.json"
    report = json.loads(report_file.read_text())
    assert report["status"] in (Status.OK.value, Status.LOW_QUALITY.value), report["message"]
    assert (workdir / report["output"]).resolve() == output.resolve() and output.is_file()
    assert {"load", "detect", "swap", "blend", "save", "total"} <= set(report["timings_ms"])
    assert len(report["faces"]) == 1 and report["faces"][0]["quality"]["identity_distance"] is not None
    metadata = read_metadata(output)
    assert metadata is not None and metadata["identity"] == "Tom_Hanks_54745"
    assert metadata["parameters"]["strength"] == 0.8  # configs/natural.yaml, the first cell's preset

    target = load_image(skimage_image("astronaut.png")).rgb
    result = load_image(output).rgb
    assert result.shape == target.shape
    before, after = _face_changed_toward(result, target, load_image(insightface_image("Tom_Hanks_54745.png")).rgb)
    assert after < before - 0.05, (before, after)
    assert len(_outputs(nb, "display_data")) >= 3, "the figures were not drawn"
    printed = "".join(o.text for o in _outputs(nb, "stream"))
    assert "strength 0.4" in printed and "strength 1.0" in printed


def check_identity_library(nb: nbformat.NotebookNode, workdir: Path) -> None:
    name = "notebook-hanks"
    store = IdentityStore()
    assert store.root.is_relative_to(home_dir())  # the temporary home, not the user's
    assert name not in store.names()  # removed at the end
    entries = [e for e in store.audit_log.read() if e["identity"] == name]
    operations = [e["operation"] for e in entries]
    assert operations[0] == "add" and operations[-1] == "remove", operations
    output = workdir / "identity_library_result.png"
    swaps = [(workdir / e["output"]).resolve() for e in entries if e["operation"] == "swap"]
    assert swaps == [output.resolve()] and output.is_file()
    target = load_image(skimage_image("astronaut.png")).rgb
    before, after = _face_changed_toward(
        load_image(output).rgb, target, load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    )
    assert after < before - 0.05, (before, after)
    printed = "".join(o.text for o in _outputs(nb, "stream"))
    assert "public sample photo shipped in the insightface wheel" in printed  # the consent record was shown
    assert "cache hit: True" in printed and "still stored: False" in printed


def check_generate_then_refine(nb: nbformat.NotebookNode, workdir: Path) -> None:
    printed = "".join(o.text for o in _outputs(nb, "stream"))
    # Random weights draw noise: both seeds were tried and reported.
    assert "seed 7: NO_FACE" in printed and "seed 8: NO_FACE" in printed, printed
    output = workdir / "generate_then_refine.png"
    metadata = read_metadata(output)
    assert metadata is not None and metadata["identity"]["name"] == "Tom_Hanks_54745", metadata
    target = load_image(skimage_image("astronaut.png")).rgb
    before, after = _face_changed_toward(
        load_image(output).rgb, target, load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    )
    assert after < before - 0.05, (before, after)


CHECKS: dict[str, Callable[[nbformat.NotebookNode, Path], None]] = {
    "quickstart.ipynb": check_quickstart,
    "identity_library.ipynb": check_identity_library,
    "generate_then_refine.ipynb": check_generate_then_refine,
}


def test_every_notebook_has_a_checker() -> None:
    assert sorted(CHECKS) == sorted(p.name for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_nbformat4_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)  # ids, required fields, types
    assert nb.metadata["kernelspec"]["language"] == "python"
    assert any(cell.cell_type == "code" for cell in nb.cells)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the notebook's outputs"
            compile(cell.source, path.name, "exec")  # no IPython magics: it also runs as plain Python


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, run_notebook: Callable[[Path], tuple[nbformat.NotebookNode, Path]]) -> None:
    assert os.environ.get("PORTRAITFORGE_HOME"), "conftest isolates PORTRAITFORGE_HOME"
    nb, workdir = run_notebook(path)
    assert not _outputs(nb, "error")
    CHECKS[path.name](nb, workdir)
