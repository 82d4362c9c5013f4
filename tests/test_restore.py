"""Face restoration stage: spandrel/ONNX loading of each architecture and parity with a bare reference call.

Each network is built with random weights from its architecture class (the layout spandrel detects), saved as
safetensors (GPEN: a small ONNX graph with the published export's 1x3x512x512 [-1, 1] contract), loaded by our
stage and compared with a bare spandrel / onnxruntime call on the same tensor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from restore_fixtures import MAKERS, SIZE

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.restorers import RESTORER_KINDS, face_arch_registry, load_restore_model
from portraitforge.models.store import ModelStore
from portraitforge.refiners.restore import FaceRestorer, build_restorer


@pytest.fixture(autouse=True, scope="module")
def _threads() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("restore")
    with torch.random.fork_rng():
        return {
            name: make(root / f"{name}{'.onnx' if name == 'gpen' else '.safetensors'}") for name, make in MAKERS.items()
        }


def _bare(name: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    """The reference: spandrel (or onnxruntime) alone, with each model's published pre/post-processing."""
    if name == "gpen":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        y = session.run(None, {"input": (x.numpy() * 2 - 1).astype(np.float32)})[0]
        return torch.from_numpy((np.clip(y, -1, 1) + 1) / 2)
    import spandrel

    descriptor = spandrel.ModelLoader(registry=face_arch_registry()).load_from_file(path)
    descriptor.model.eval()
    with torch.inference_mode(), torch.random.fork_rng():
        torch.manual_seed(0)
        if name == "restoreformer":
            return descriptor(x)
        # GFPGANer.enhance / inference_codeformer.py: normalise to [-1, 1], map back with min_max=(-1, 1).
        return ((descriptor.model(x * 2 - 1)[0] + 1) / 2).clamp(0, 1)


@pytest.mark.parametrize("name", list(MAKERS))
def test_stage_matches_bare_reference(weights: dict[str, Path], name: str) -> None:
    model = load_restore_model(RESTORER_KINDS[name], weights[name])
    assert model.kind.architecture == ("onnx" if name == "gpen" else model.descriptor.architecture.id)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    ours = FaceRestorer(model).restore_tensor(x)
    reference = _bare(name, weights[name], x)
    assert ours.shape == reference.shape == x.shape
    assert float((ours - reference).abs().max()) <= 1e-5
    # The network really transforms the face (random weights, not an identity map).
    assert float((ours - x).abs().mean()) > 1e-2


def test_batched_equals_one_at_a_time(weights: dict[str, Path]) -> None:
    restorer = FaceRestorer(load_restore_model(RESTORER_KINDS["restoreformer"], weights["restoreformer"]), batch=2)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    together = restorer.restore_tensor(x)
    single = torch.cat([restorer.restore_tensor(x[i : i + 1]) for i in range(2)])
    # Batched convolutions accumulate in another order than single ones: fp32 rounding only (measured 1.7e-5).
    assert float((together - single).abs().max()) <= 1e-4


def test_weight_blends_crop_and_restoration(weights: dict[str, Path]) -> None:
    model = load_restore_model(RESTORER_KINDS["gpen"], weights["gpen"])
    crop = np.random.default_rng(4).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert np.array_equal(FaceRestorer(model, weight=0.0)(crop), crop)
    full = FaceRestorer(model, weight=1.0)(crop).astype(np.float32)
    half = FaceRestorer(model, weight=0.5)(crop).astype(np.float32)
    assert full.shape == crop.shape
    assert np.abs(full - crop).mean() > 5
    assert np.abs(half - (full + crop) / 2).max() <= 1.0  # rounding of each side


def test_gfpgan_noise_is_seeded(weights: dict[str, Path]) -> None:
    restorer = FaceRestorer(load_restore_model(RESTORER_KINDS["gfpgan"], weights["gfpgan"]))
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    assert torch.equal(restorer.restore_tensor(x), restorer.restore_tensor(x))


def test_wrong_architecture_is_bad_input(weights: dict[str, Path]) -> None:
    with pytest.raises(BadInputError, match="RestoreFormer model, not GFPGAN"):
        load_restore_model(RESTORER_KINDS["gfpgan"], weights["restoreformer"])


def test_missing_model_is_model_unavailable(tmp_path: Path) -> None:
    store = ModelStore(root=tmp_path / "models", offline=True)
    with pytest.raises(ModelUnavailableError) as info:
        build_restorer("codeformer", 1.0, store)
    assert "\n" not in str(info.value) and "codeformer.pth" in str(info.value)
    assert build_restorer("none", 1.0, store) is None


def test_missing_model_cli_one_line_exit_5(tmp_path: Path) -> None:
    """`swap` with `restore: gfpgan` and no model file: one line on stderr, exit 5, no output file."""
    from portraitforge.imageio import save_image

    photo = tmp_path / "in.png"
    save_image(photo, np.full((64, 64, 3), 128, np.uint8))
    config = tmp_path / "restore.yaml"
    # The embedded dlib engine needs no model store, so the restorer is the only missing file.
    settings = {"analyzer": "dlib", "swap_engine": "landmark", "grader": "none", "parsing": "off"}
    config.write_text(json.dumps({**settings, "restore": "gfpgan", "models_dir": str(tmp_path / "models")}))
    out = tmp_path / "out.png"
    env = {"PORTRAITFORGE_HOME": str(tmp_path / "home"), "PORTRAITFORGE_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "portraitforge.cli",
            "swap",
            str(photo),
            "-i",
            str(photo),
            "-o",
            str(out),
            "-c",
            str(config),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert proc.returncode == 5, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "GFPGANv1.4.pth" in proc.stderr
    assert not out.exists()
