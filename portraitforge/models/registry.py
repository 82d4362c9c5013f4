"""Every downloadable model file, described once: where to get it, how to check it, what it is for.

The registry is plain data (frozen dataclasses in a tuple); `ModelStore` (store.py) does the I/O.
Hashes were cross-checked against several independent public manifests (see each entry's note);
an entry whose hash could not be confirmed says so in `hash_note` and has `sha256=None`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

INSIGHTFACE_LICENSE = (
    "InsightFace pretrained weights: non-commercial research use only "
    "(https://github.com/deepinsight/insightface#license); commercial use needs a licence from InsightFace"
)


@dataclass(frozen=True)
class ArchiveSource:
    """A model file that is also shipped inside a zip archive (e.g. insightface's buffalo_l.zip)."""

    url: str
    filename: str  # archive file name in the store's download folder
    sha256: str | None
    size: int | None
    member: str  # base name of the file inside the archive (its folder inside the zip may vary)


@dataclass(frozen=True)
class ModelSpec:
    """One model file. `urls` are tried in order, then `archive` if present."""

    name: str  # registry key, used on the command line
    filename: str  # file name inside the store directory
    urls: tuple[str, ...]
    sha256: str | None  # None only when no trustworthy hash is known (see hash_note)
    size: int | None  # bytes
    task: str  # "swap", "detect", "embed", "genderage", ...
    license: str
    pack: str | None = None  # models that ship together (e.g. "buffalo_l")
    archive: ArchiveSource | None = None
    hash_note: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)  # where the pinned hash was confirmed

    @property
    def primary_url(self) -> str:
        if self.urls:
            return self.urls[0]
        return self.archive.url if self.archive else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "filename": self.filename,
            "urls": list(self.urls),
            "archive": None
            if self.archive is None
            else {"url": self.archive.url, "sha256": self.archive.sha256, "member": self.archive.member},
            "sha256": self.sha256,
            "size": self.size,
            "task": self.task,
            "license": self.license,
            "pack": self.pack,
            "hash_note": self.hash_note,
        }


class UnknownModelError(KeyError):
    pass


@dataclass(frozen=True)
class ModelRegistry:
    """An immutable, ordered set of model specs. Tests build their own with local URLs."""

    specs: tuple[ModelSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate model names in registry")

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def get(self, name: str) -> ModelSpec:
        for spec in self.specs:
            if spec.name == name or spec.filename == name:
                return spec
        raise UnknownModelError(f"unknown model '{name}' (known: {', '.join(self.names())})")

    def pack(self, pack: str) -> list[ModelSpec]:
        return [s for s in self.specs if s.pack == pack]

    def extended(self, *specs: ModelSpec) -> ModelRegistry:
        """A new registry with more entries (e.g. upscaler weights registered by another module)."""
        return ModelRegistry(specs=self.specs + tuple(specs))


# insightface's v0.7 release archive of the buffalo_l analysis pack. The zip keeps its files at the top
# level; some mirrors nest them in a "buffalo_l/" folder, so members are matched by base name.
BUFFALO_L_ZIP = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
BUFFALO_L_ZIP_SHA256 = "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f"
BUFFALO_L_ZIP_SIZE = 288_621_354
BUFFALO_L_MIRROR = "https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/"

_HASH_SOURCES = (
    "sha256 identical in several independent public manifests (e.g. ReActor/visionatrix model lists, "
    "crappy-face-swap README, facefusion-based installers)",
)


def _buffalo(member: str, sha256: str, size: int, task: str) -> ModelSpec:
    return ModelSpec(
        name=f"buffalo_l/{member.removesuffix('.onnx')}",
        filename=f"buffalo_l/{member}",
        urls=(BUFFALO_L_MIRROR + member,),
        sha256=sha256,
        size=size,
        task=task,
        license=INSIGHTFACE_LICENSE,
        pack="buffalo_l",
        archive=ArchiveSource(
            url=BUFFALO_L_ZIP,
            filename="buffalo_l.zip",
            sha256=BUFFALO_L_ZIP_SHA256,
            size=BUFFALO_L_ZIP_SIZE,
            member=member,
        ),
        sources=_HASH_SOURCES,
    )


INSWAPPER_128 = ModelSpec(
    name="inswapper_128",
    filename="inswapper_128.onnx",
    # insightface no longer hosts the file itself; these mirrors serve the original release (the hash
    # below). FaceFusion's re-exported copy has a different hash (0fa95f16...) and is deliberately absent.
    urls=(
        "https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx",
        "https://huggingface.co/leonelhs/insightface/resolve/main/inswapper_128.onnx",
    ),
    sha256="e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
    size=554_253_681,
    task="swap",
    license=INSIGHTFACE_LICENSE,
    sources=_HASH_SOURCES,
)

SCRFD_10G = _buffalo(
    "det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16_923_827, "detect"
)
ARCFACE_W600K_R50 = _buffalo(
    "w600k_r50.onnx", "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43", 174_383_860, "embed"
)
GENDERAGE = _buffalo(
    "genderage.onnx", "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1_322_532, "genderage"
)

DEFAULT_REGISTRY = ModelRegistry(specs=(INSWAPPER_128, SCRFD_10G, ARCFACE_W600K_R50, GENDERAGE))
