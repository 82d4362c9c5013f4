"""The embedded default: dlib's HOG detector, 68-point predictor and 128-d ResNet descriptor.

The weights ship inside the `face-recognition-models` wheel. Its `__init__` imports `pkg_resources`
(gone from setuptools >= 81), so we find the folder with importlib without importing the package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portraitforge.atomic import atomic_write_bytes
from portraitforge.errors import ModelUnavailableError
from portraitforge.paths import home_dir

PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_RESNET = "dlib_face_recognition_resnet_model_v1.dat"


def face_recognition_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError("dlib model files not found: install the 'face-recognition-models' package")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@dataclass(frozen=True)
class DlibModels:
    """Loaded dlib objects. Build once per process/worker and pass around explicitly."""

    detector: Any  # dlib.fhog_object_detector
    predictor68: Any  # dlib.shape_predictor
    descriptor: Any  # dlib.face_recognition_model_v1
    # The same network on torch (models/dlib_resnet_torch.py), verified against `descriptor`; None -> dlib's own.
    descriptor_torch: Any = None

    @classmethod
    def load(cls, models_dir: Path | None = None, descriptor_backend: str = "auto") -> DlibModels:
        """descriptor_backend: "auto" (torch when it loads and matches dlib), "dlib" or "torch"."""
        try:
            import dlib
        except ImportError as exc:
            raise ModelUnavailableError(f"dlib is not importable ({exc}); install 'dlib-bin'") from None
        folder = models_dir or face_recognition_models_dir()
        paths = {name: folder / name for name in (PREDICTOR_68, DESCRIPTOR_RESNET)}
        for path in paths.values():
            if not path.is_file():
                raise ModelUnavailableError(f"dlib model file missing: {path}")
        descriptor = dlib.face_recognition_model_v1(str(paths[DESCRIPTOR_RESNET]))
        descriptor_torch = None
        if descriptor_backend != "dlib":  # torch is imported only when its port is wanted (~2-3 s)
            from portraitforge.models.dlib_resnet_torch import load_descriptor_backend

            descriptor_torch = load_descriptor_backend(paths[DESCRIPTOR_RESNET], descriptor, descriptor_backend)
        return cls(
            detector=load_frontal_face_detector(dlib),
            predictor68=dlib.shape_predictor(str(paths[PREDICTOR_68])),
            descriptor=descriptor,
            descriptor_torch=descriptor_torch,
        )


def load_frontal_face_detector(dlib: Any, cache_dir: Path | None = None) -> Any:
    """dlib's HOG face detector, from a binary copy cached under `home_dir()/cache/dlib`.

    `dlib.get_frontal_face_detector()` parses the model from text on every call (~0.6 s, about a fifth of
    a cold `identity add`); its binary serialisation loads in ~1 ms and detects identically. The cache file
    name carries the dlib version and the sha256 of its bytes, so a stale or damaged copy is rebuilt, and an
    unwritable cache only costs the slow path.
    """
    folder = cache_dir if cache_dir is not None else home_dir() / "cache" / "dlib"
    prefix = f"frontal_face_detector-{dlib.__version__}-"
    for candidate in sorted(folder.glob(f"{prefix}*.svm")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, RuntimeError):
            digest = hashlib.sha256(candidate.read_bytes()).hexdigest()
            if candidate.name == f"{prefix}{digest}.svm":
                return dlib.fhog_object_detector(str(candidate))
    detector = dlib.get_frontal_face_detector()
    with contextlib.suppress(OSError, RuntimeError), tempfile.TemporaryDirectory() as scratch:
        detector.save(str(Path(scratch) / "detector.svm"))  # dlib writes only to a path
        data = (Path(scratch) / "detector.svm").read_bytes()
        atomic_write_bytes(folder / f"{prefix}{hashlib.sha256(data).hexdigest()}.svm", data)
    return detector
