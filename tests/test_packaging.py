"""The wheel is a complete package: built from the source, installed with its declared dependencies into a clean
venv (no extras, no PYTHONPATH, run outside the repo), it swaps a real photo with a preset found as package data.

This is what a swap-only user gets from `pip install portraitforge`: no diffusers, no insightface, no gradio.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from portraitforge.config import RefineConfig
from portraitforge.imageio import load_image

REPO = Path(__file__).resolve().parents[1]
# What the build reads: a missing entry here (or in the package data) fails the build or the swap below.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "portraitforge", "configs")
SOURCE_JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _find_links() -> list[Path]:
    """pip's local wheel folders (PIP_FIND_LINKS and pip's own config)."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    found = os.environ.get("PIP_FIND_LINKS", "").split()
    found += [v for k, v in re.findall(r"^(\S*find-links)='([^']*)'", config, re.M) for v in v.split()]
    return [Path(f.removeprefix("file://")) for f in found if f and not f.startswith("http")]


def _torch_constraint(tmp: Path) -> Path:
    """The project's constraints.txt, or a CPU-only torch wheel from local disk when the machine has one.

    The pinned torch on this project's machines is the CUDA build (~4 GB of nvidia libraries to unpack); a
    CPU wheel installs in a fraction of the time and also checks that `torch>=2.2` is an honest range."""
    for folder in _find_links():
        wheels = sorted(folder.glob("torch-*+cpu-*.whl")) if folder.is_dir() else []
        if wheels:
            version = wheels[-1].name.split("-")[1]
            path = tmp / "constraints-cpu.txt"
            path.write_text(f"torch=={version}\n")
            return path
    return REPO / "constraints.txt"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd[:4])}... exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_in_a_clean_venv_swaps_a_photo_with_a_preset(
    tmp_path: Path, hanks_path: Path, astronaut_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # 1. Build the wheel from a copy of the build inputs (the checkout stays clean).
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=SOURCE_JUNK)
        else:
            shutil.copy2(src, source / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], tmp_path, env, 300)
    (wheel,) = dist.glob("portraitforge-*.whl")

    # 2. A clean venv (no system site-packages) with the wheel and its declared runtime dependencies only.
    venv.EnvBuilder(with_pip=True, clear=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-compile", "-c", str(_torch_constraint(tmp_path))]
    _run([*install, str(wheel)], tmp_path, env, 900)

    # 3. Outside the repo: the package, its presets and the CLI come from the venv.
    workdir = tmp_path / "work"
    workdir.mkdir()
    probe = (
        "import importlib.util, json, portraitforge, portraitforge.cli;"
        "from portraitforge.config import CONFIGS_DIR, RefineConfig;"
        "print(json.dumps({'package': portraitforge.__file__, 'presets': str(CONFIGS_DIR),"
        "'natural': RefineConfig.from_yaml('natural').model_dump(mode='json'),"
        "'absent': [m for m in ('diffusers', 'transformers', 'insightface', 'gradio', 'ray')"
        " if importlib.util.find_spec(m) is not None]}))"
    )
    info = json.loads(_run([str(python), "-c", probe], workdir, env, 120).stdout)
    site = tmp_path / "venv" / "lib"
    assert Path(info["package"]).is_relative_to(site), info["package"]
    assert Path(info["presets"]).is_relative_to(site) and Path(info["presets"]).name == "presets", info["presets"]
    natural = RefineConfig.from_yaml(REPO / "configs" / "natural.yaml").model_dump(mode="json")
    assert info["natural"] == natural != RefineConfig().model_dump(mode="json")
    assert info["absent"] == [], f"extras installed by a plain install: {info['absent']}"

    out = workdir / "out.png"
    cli = tmp_path / "venv" / "bin" / "portraitforge"
    swap = [str(cli), "swap", str(astronaut_path), "--identity", str(hanks_path), "-o", str(out), "--config", "natural"]
    done = subprocess.run(swap, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout}\n{done.stderr}"
    result = load_image(out).rgb
    target = load_image(astronaut_path).rgb
    assert result.shape == target.shape
    assert (result != target).any(axis=2).mean() > 0.005, "the face was not changed"


def test_swap_never_imports_the_generate_extra(tmp_path: Path, hanks_path: Path, astronaut_path: Path) -> None:
    """Even where diffusers is installed, a swap does not import it (nor transformers, peft, accelerate)."""
    out = tmp_path / "out.png"
    code = (
        "import atexit, json, sys;"
        "atexit.register(lambda: print('MODULES', json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'diffusers', 'transformers', 'peft', 'accelerate'})), file=sys.stderr));"
        f"sys.argv = ['portraitforge', 'swap', {str(astronaut_path)!r}, '--identity', {str(hanks_path)!r},"
        f" '-o', {str(out)!r}];"
        "from portraitforge.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.is_file()
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("MODULES ")]
    assert json.loads(line.removeprefix("MODULES ")) == []
