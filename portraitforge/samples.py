"""Sample photos that ship inside installed wheels, found without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from portraitforge.errors import ModelUnavailableError


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"sample images need the '{package}' package installed")
    return Path(next(iter(spec.submodule_search_locations)))


def insightface_image(name: str) -> Path:
    """`t1.jpg` (six faces) or `Tom_Hanks_54745.png` from the insightface wheel."""
    path = _package_dir("insightface") / "data" / "images" / name
    if not path.is_file():
        raise ModelUnavailableError(f"sample image not found in the insightface wheel: {path}")
    return path


def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), RGB uint8 512x512."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def skimage_image(name: str = "astronaut.png") -> Path:
    """A photo file shipped in the scikit-image wheel (`astronaut.png`: Eileen Collins, one face)."""
    path = _package_dir("skimage") / "data" / name
    if not path.is_file():
        raise ModelUnavailableError(f"sample image not found in the scikit-image wheel: {path}")
    return path
