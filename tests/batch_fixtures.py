"""Small real-photo fixtures for the batch tests: drafts from the wheels, identities from ../shared/faces.

Drafts are kept small (faces ~90 px) so that a 12-item batch refines in seconds on 2 cores.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from PIL import Image
from shared_data import faces_folder

from portraitforge.imageio import load_image, save_image
from portraitforge.samples import astronaut, insightface_image

REPO = Path(__file__).resolve().parents[1]
PORTRAITFORGE = Path(sys.executable).with_name("portraitforge")


def shared_faces() -> Path | None:
    return faces_folder().get()


def _resize_max(rgb: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def write_wheel_drafts(folder: Path) -> list[Path]:
    """Three real photos with a face: Tom Hanks (112 px), a crop of t1.jpg, the astronaut at 320 px."""
    folder.mkdir(parents=True, exist_ok=True)
    hanks = load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    group = load_image(insightface_image("t1.jpg")).rgb
    crop = np.ascontiguousarray(group[150:550, 0:400])  # the two people on the left, faces ~90 px
    paths = [
        save_image(folder / "hanks.png", hanks),
        save_image(folder / "group_left.png", crop),
        save_image(folder / "astronaut.png", _resize_max(astronaut(), 320)),
    ]
    return paths


def identity_photos(folder: Path) -> list[Path]:
    """Two identities: person_a and person_b from ../shared/faces, else two wheel photos."""
    shared = shared_faces()
    if shared is not None:
        return [shared / "person_a_1.jpg", shared / "person_b_1.jpg"]
    folder.mkdir(parents=True, exist_ok=True)
    hanks = load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    return [save_image(folder / "hanks_id.png", hanks), save_image(folder / "astronaut_id.png", astronaut())]


def write_spec(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def refine_spec_data(drafts: Path, identities: list[Path], output: str = "out") -> dict[str, Any]:
    """3 drafts x 2 identities x 2 strengths = 12 items (the refine-only twin of prompts x ids x seeds)."""
    return {
        "name": "refine-12",
        "output": {"dir": output},
        "drafts": {"folder": str(drafts)},
        "identities": [
            {"image": str(identities[0]), "name": "first"},
            {"image": str(identities[1]), "name": "second"},
        ],
        "sweep": {"strength": [0.7, 1.0]},
        "refine": {"detect_max_side": 400},
    }


def generate_spec_data(model_dir: Path, identities: list[Path], output: str = "gen_out") -> dict[str, Any]:
    """3 prompts x 2 identities x 2 seeds on a tiny random model. Its drafts are noise, so every item ends
    NO_FACE after one retry and, by policy, keeps its draft: 12 deterministic outputs."""
    return {
        "name": "generate-12",
        "output": {"dir": output, "naming": "{identity}/{outfit}_s{seed}_{id8}"},
        "prompts": {
            "templates": ["{character}, {outfit}, portrait photo"],
            "variables": {"character": ["aiko"], "outfit": ["uniform", "stage dress", "hoodie"]},
            "negative": "blurry",
        },
        "identities": [
            {"image": str(identities[0]), "name": "first"},
            {"image": str(identities[1]), "name": "second"},
        ],
        "seeds": [1, 2],
        "model": {"source": str(model_dir), "steps": 2, "width": 64, "height": 64},
        "no_face": {"retries": 1, "on_exhausted": "keep_draft"},
        "refine": {"detect_max_side": 400},
    }


def build_tiny_model(folder: Path) -> Path | None:
    """A tiny random SD 1.x pipeline saved as a diffusers folder (None when the fixtures are unavailable)."""
    try:
        from diffusion_fixtures import build_tiny_sd
    except ImportError:
        return None
    pipe = build_tiny_sd(folder / "tokenizer_src")
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder / "tiny_sd")
    return folder / "tiny_sd"


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PORTRAITFORGE), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env(env)
    )


def popen_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(PORTRAITFORGE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env.setdefault("PORTRAITFORGE_HOME", str(Path(env.get("TMPDIR", "/tmp")) / "portraitforge-test-home"))
    return env


def image_files(output_dir: Path) -> list[Path]:
    """Every output image (review sheets and drafts excluded), temp files included so they get caught."""
    return sorted(
        p
        for p in output_dir.rglob("*")
        if p.is_file()
        and p.relative_to(output_dir).parts[0] not in ("review", "drafts")
        and not p.name.startswith("manifest.sqlite")
        and p.name != ".manifest.lock"
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decodes(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:
        return False
