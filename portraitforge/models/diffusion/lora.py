"""LoRA files: parsing `PATH[:WEIGHT]` and loading them through diffusers' PEFT backend."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError
from portraitforge.models.diffusion.hashes import cached_file_sha256
from portraitforge.models.diffusion.sources import first_line


@dataclass(frozen=True)
class LoraSpec:
    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """`PATH[:WEIGHT]`; the weight is split off the right so that paths may contain ':'."""
        path, weight = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
                path = head
            except ValueError:
                path = text
        if not Path(path).expanduser().is_file():
            raise BadInputError(f"--lora {text}: file not found (expected PATH.safetensors[:WEIGHT])")
        if Path(path).suffix.lower() != ".safetensors":
            raise BadInputError(f"--lora {text}: only .safetensors LoRA files are loaded")
        if not -4.0 <= weight <= 4.0:
            raise ParameterError(f"--lora {text}: weight {weight} outside [-4, 4]")
        return cls(str(Path(path).expanduser().resolve()), weight)


@dataclass(frozen=True)
class LoadedLora:
    adapter: str
    path: str
    weight: float
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "path": self.path, "weight": self.weight, "sha256": self.sha256}


def load_loras(pipe: Any, loras: Sequence[LoraSpec]) -> list[LoadedLora]:
    """`load_lora_weights` per file (one named adapter each), then `set_adapters` with the weights."""
    if not loras:
        return []
    try:
        import peft  # noqa: F401  (diffusers' LoRA path runs on the PEFT backend)
    except ImportError:
        raise ModelUnavailableError("LoRA loading needs the 'peft' package: pip install peft") from None
    loaded: list[LoadedLora] = []
    for i, spec in enumerate(loras):
        path = Path(spec.path)
        adapter = f"lora{i}_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter, local_files_only=True)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise BadInputError(f"{path}: cannot load as a LoRA for this model ({first_line(exc)})") from None
        loaded.append(LoadedLora(adapter, str(path), spec.weight, cached_file_sha256(path)))
    pipe.set_adapters([x.adapter for x in loaded], adapter_weights=[x.weight for x in loaded])
    return loaded
