"""Loading face-restoration networks: GFPGAN, CodeFormer and RestoreFormer through spandrel, GPEN through ONNX.

Where each architecture lives (checked against the installed packages):
- GFPGAN (v1 "clean") and RestoreFormer: spandrel itself;
- CodeFormer: spandrel_extra_arches (kept out of spandrel for its NTU S-Lab non-commercial licence);
- GPEN: in neither; the ONNX export FaceFusion and ReActor run (GPEN-BFR-512.onnx) is loaded with onnxruntime.

spandrel's loader is given its own `ArchRegistry` holding only these architectures (spandrel's main registry is
process-wide state; `spandrel_extra_arches.install()` would modify it). `.pth` files are read by spandrel with
its restricted unpickler (tensors and containers only); `.safetensors` files are read as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portraitforge.atomic import file_sha256
from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.registry import (
    CODEFORMER_RESTORE,
    GFPGAN_RESTORE,
    GPEN_RESTORE,
    RESTOREFORMER_RESTORE,
    ModelSpec,
)

if TYPE_CHECKING:
    import torch

    from portraitforge.models.onnx_runtime import OnnxSessionPool


@dataclass(frozen=True)
class RestorerKind:
    """One `restore:` choice: its registry file, how it is run and the face size it was trained on."""

    name: str
    spec: ModelSpec
    architecture: str  # spandrel architecture id, or "onnx"
    size: int  # square input side in pixels
    signed_range: bool  # the network works in [-1, 1] (GFPGAN, CodeFormer, GPEN) rather than [0, 1]


RESTORER_KINDS: dict[str, RestorerKind] = {
    "gfpgan": RestorerKind("gfpgan", GFPGAN_RESTORE, "GFPGAN", 512, signed_range=True),
    "codeformer": RestorerKind("codeformer", CODEFORMER_RESTORE, "CodeFormer", 512, signed_range=True),
    "restoreformer": RestorerKind("restoreformer", RESTOREFORMER_RESTORE, "RestoreFormer", 512, signed_range=False),
    "gpen": RestorerKind("gpen", GPEN_RESTORE, "onnx", 512, signed_range=True),
}
RESTORE_CHOICES = ("none", *RESTORER_KINDS)


@dataclass(frozen=True)
class RestoreModel:
    """A loaded restoration network. `descriptor` is a spandrel ImageModelDescriptor, or None for ONNX."""

    kind: RestorerKind
    descriptor: Any
    session: Any  # onnxruntime.InferenceSession for GPEN
    path: str
    sha256: str
    device: torch.device

    def params(self) -> dict[str, Any]:
        return {"restore": self.kind.name, "architecture": self.kind.architecture, "sha256": self.sha256}


def face_arch_registry() -> Any:
    """A private spandrel registry with the three face-restoration architectures it can load."""
    from spandrel import MAIN_REGISTRY, ArchRegistry
    from spandrel_extra_arches import EXTRA_REGISTRY

    wanted = {"GFPGAN", "RestoreFormer", "CodeFormer"}
    registry = ArchRegistry()
    registry.add(*[s for s in (*MAIN_REGISTRY, *EXTRA_REGISTRY) if s.architecture.id in wanted])
    return registry


def load_restore_model(
    kind: RestorerKind, path: Path, device: str = "cpu", pool: OnnxSessionPool | None = None
) -> RestoreModel:
    """Load `path` as the restorer `kind`; a file of another architecture is a one-line BadInputError."""
    import torch

    if not path.is_file():
        raise ModelUnavailableError(f"{kind.name} restoration model not found: {path}")
    dev = torch.device(device)
    if kind.architecture == "onnx":
        from portraitforge.models.onnx_runtime import OnnxSessionPool

        session = (pool or OnnxSessionPool()).get(path)
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise BadInputError(f"{path}: not a face restoration ONNX model (input shape {shape})")
        return RestoreModel(kind, None, session, str(path), file_sha256(path), dev)
    import spandrel

    loader = spandrel.ModelLoader(device=dev, registry=face_arch_registry())
    try:
        descriptor = loader.load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise BadInputError(f"{path}: not a GFPGAN, CodeFormer or RestoreFormer model") from None
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise BadInputError(f"{path}: cannot load the restoration model ({str(exc).splitlines()[0]})") from None
    if descriptor.architecture.id != kind.architecture:
        raise BadInputError(f"{path}: is a {descriptor.architecture.id} model, not {kind.architecture}")
    descriptor.model.eval()
    return RestoreModel(kind, descriptor, None, str(path), file_sha256(path), dev)
