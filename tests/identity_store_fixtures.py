"""Helpers for the identity store tests: photo sets from the wheels, analyzer wrappers, directory hashing."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from portraitforge.imageio import load_image, save_image
from portraitforge.models.dlib_models import DESCRIPTOR_RESNET, face_recognition_models_dir
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.samples import astronaut, insightface_image
from portraitforge.types import Face, FloatArray, ImageRGB

REPO = Path(__file__).resolve().parents[1]


def tree_hash(root: Path) -> str:
    """sha256 over every path, file mode and file content under `root` ("absent" when it does not exist)."""
    if not root.exists():
        return "absent"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0" + oct(path.stat().st_mode).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def hanks_variants(folder: Path) -> list[Path]:
    """Five photos of one person made from the insightface wheel's Tom Hanks sample: the original and four
    photometric/geometric variants (dlib distances among them are 0.07-0.32, like real photos of one person)."""
    rgb = load_image(insightface_image("Tom_Hanks_54745.png")).rgb
    big = cv2.resize(rgb, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # 112 px is too small a photo
    h, w = big.shape[:2]
    rotation = cv2.getRotationMatrix2D((w / 2, h / 2), 8, 1.0)
    variants = {
        "hanks_1.png": big,
        "hanks_2_flip.png": big[:, ::-1].copy(),
        "hanks_3_bright.png": np.clip(big.astype(np.float32) * 1.15 + 12, 0, 255).astype(np.uint8),
        "hanks_4_rot.png": cv2.warpAffine(big, rotation, (w, h), borderMode=cv2.BORDER_REFLECT),
        "hanks_5_small.png": cv2.resize(big, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA),
    }
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(folder / name, img) for name, img in variants.items()]


def other_people(folder: Path, analyzer: DlibFaceAnalyzer) -> list[Path]:
    """Photos of other people from the wheels: the astronaut and each face of insightface's t1.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [save_image(folder / "astronaut.png", astronaut())]
    t1 = load_image(insightface_image("t1.jpg")).rgb
    for k, face in enumerate(analyzer.detect(t1)):
        x0, y0, x1, y1 = face.box
        pad = 0.8 * (x1 - x0)
        crop = t1[
            int(max(0, y0 - pad)) : int(min(t1.shape[0], y1 + pad)),
            int(max(0, x0 - pad)) : int(min(t1.shape[1], x1 + pad)),
        ]
        out.append(save_image(folder / f"t1_face_{k}.png", np.ascontiguousarray(crop)))
    return out


def no_face_photo(folder: Path) -> Path:
    """A real photograph without a detectable face (a mask on a mannequin from the insightface wheel)."""
    folder.mkdir(parents=True, exist_ok=True)
    return save_image(folder / "no_face.png", load_image(insightface_image("mask_white.jpg")).rgb)


@dataclass
class CountingAnalyzer:
    """The real dlib analyzer behind a thin wrapper that counts calls (to prove what did and did not run).

    `model_sha256` lets a test pose as a different model version of the same space.
    """

    inner: DlibFaceAnalyzer
    model_sha256: str | None = None
    calls: Counter[str] = field(default_factory=Counter)
    name: str = "dlib-counting"
    embedding_space: str = "dlib-128"

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    def model_info(self) -> dict[str, Any]:
        if self.model_sha256 is not None:
            return {"name": "dlib-resnet-v2-test", "sha256": self.model_sha256}
        return {"name": DESCRIPTOR_RESNET, "path": str(face_recognition_models_dir() / DESCRIPTOR_RESNET)}

    def detect(self, image: ImageRGB) -> list[Face]:
        self.calls["detect"] += 1
        return self.inner.detect(image)

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        self.calls["embed"] += 1
        return self.inner.embed(image, face)

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        self.calls["landmarks"] += 1
        return self.inner.landmarks(image, face)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        return self.inner.distance(a, b)


@dataclass
class ProjectedArcAnalyzer:
    """A stand-in second embedding space ("arcface-512", cosine, unit vectors) for plumbing tests when the
    ArcFace weights are not installed: a fixed random projection of the centred dlib descriptor."""

    inner: DlibFaceAnalyzer
    seed: int = 0
    name: str = "projected-arcface"
    embedding_space: str = "arcface-512"

    def params(self) -> dict[str, Any]:
        return {"backend": self.name, "seed": self.seed}

    def model_info(self) -> dict[str, Any]:
        return {"name": f"projection-{self.seed}", "sha256": hashlib.sha256(str(self.seed).encode()).hexdigest()}

    def detect(self, image: ImageRGB) -> list[Face]:
        return self.inner.detect(image)

    def embed(self, image: ImageRGB, face: Face) -> FloatArray:
        vec = self.inner.embed(image, face).astype(np.float64)
        proj = np.random.default_rng(self.seed).standard_normal((512, vec.size))
        out = proj @ (vec - vec.mean())
        return (out / np.linalg.norm(out)).astype(np.float32)

    def landmarks(self, image: ImageRGB, face: Face) -> Face:
        return self.inner.landmarks(image, face)

    def distance(self, a: FloatArray, b: FloatArray) -> float:
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(1.0 - a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
