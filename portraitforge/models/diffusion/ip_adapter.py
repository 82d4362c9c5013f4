"""IP-Adapter FaceID through diffusers' own loader: identity conditioning at draft time.

diffusers' `load_ip_adapter(..., image_encoder_folder=None)` recognises a FaceID checkpoint by its
`image_proj.norm.weight` key, builds `IPAdapterFaceIDImageProjection` and the IP-Adapter attention processors,
and applies the LoRA the checkpoint carries (`ip_adapter.N.to_q_lora...`) as PEFT adapter `faceid_0`. No image
encoder is loaded: the pipeline is called with `ip_adapter_image_embeds`, the identity's normed ArcFace (512-d)
embedding shaped `(1, 1, 1, 512)`, with zeros stacked in front when classifier-free guidance runs (diffusers'
FaceID guide; `prepare_ip_adapter_image_embeds` splits the two halves with `chunk(2)`).

Weights: h94/IP-Adapter-FaceID publishes the adapter only as pickle `.bin` files. A `.safetensors` file (keys
`image_proj.*` / `ip_adapter.*`, the layout diffusers reads) is loaded as is; a `.bin` is read here with
`torch.load(weights_only=True)`, which unpickles tensors and containers only and refuses any other object, and
the dict is handed to diffusers (its own `.bin` path calls `torch.load` with `weights_only` depending on the
installed torch, so we do not rely on it). Nothing is written back to disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError
from portraitforge.models.diffusion.hashes import cached_file_sha256
from portraitforge.models.diffusion.lora import LoadedLora
from portraitforge.models.diffusion.sources import Family, ModelFamily, first_line
from portraitforge.types import fields_dict

if TYPE_CHECKING:
    from portraitforge.models.store import ModelStore

ARCFACE_DIM = 512
FACEID_KIND = "faceid"
ID_ADAPTERS = (FACEID_KIND,)  # `--id-adapter` choices


@dataclass(frozen=True)
class LoadedIPAdapter:
    """An IP-Adapter FaceID loaded into a pipeline's UNet, and what it was."""

    kind: str
    path: str
    sha256: str
    scale: float
    lora_adapters: tuple[str, ...]  # PEFT adapters diffusers created from the checkpoint's LoRA keys

    def to_dict(self) -> dict[str, Any]:
        return {**fields_dict(self, "kind", "path", "sha256", "scale"), "lora_adapters": list(self.lora_adapters)}


def read_faceid_state_dict(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """`{"image_proj": {...}, "ip_adapter": {...}}` from a .safetensors (prefixed keys) or a pickle .bin
    (nested dicts, read with `weights_only=True`)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(path))
            nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
            for key, value in flat.items():
                head, _, rest = key.partition(".")
                if head in nested and rest:
                    nested[head][rest] = value
        elif suffix == ".bin":
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise BadInputError(f"{path}: not an IP-Adapter checkpoint (expected a dict of state dicts)")
            parts = ("image_proj", "ip_adapter")
            nested = {k: dict(v) for k, v in loaded.items() if k in parts and isinstance(v, dict)}
        else:
            raise BadInputError(f"{path}: unsupported IP-Adapter file '{suffix}' (expected .safetensors or .bin)")
    except (OSError, RuntimeError, ValueError) as exc:  # safetensors/torch raise these for truncated or foreign files
        raise BadInputError(f"{path}: unreadable IP-Adapter checkpoint ({first_line(exc)})") from None
    if "norm.weight" not in nested.get("image_proj", {}) or not nested.get("ip_adapter"):
        raise BadInputError(
            f"{path}: not an IP-Adapter FaceID checkpoint (needs image_proj.norm.weight and ip_adapter.* keys)"
        )
    return nested


def load_faceid_adapter(
    pipe: Any, path: str | Path, scale: float = 0.7, loras: Sequence[LoadedLora] = ()
) -> LoadedIPAdapter:
    """Load the adapter with `pipe.load_ip_adapter` (no image encoder) and set its scale.

    diffusers' loader ends with `set_adapters(["faceid_0"])`, which switches off LoRAs loaded before it, so
    `loras` (the model's own, already loaded) are re-enabled alongside it with their weights."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelUnavailableError(f"IP-Adapter FaceID weights not found: {file}")
    check_scale(scale)
    if not hasattr(pipe, "load_ip_adapter"):
        raise BadInputError(f"{type(pipe).__name__} does not support IP-Adapters")
    state = read_faceid_state_dict(file)
    try:
        pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise BadInputError(f"{file}: cannot load as an IP-Adapter FaceID for this model ({first_line(exc)})") from None
    peft_config = getattr(getattr(pipe, "unet", None), "peft_config", None) or {}
    created = tuple(name for name in peft_config if name.startswith("faceid_"))
    if loras and created:
        names = [x.adapter for x in loras] + list(created)
        pipe.set_adapters(names, adapter_weights=[x.weight for x in loras] + [1.0] * len(created))
    pipe.set_ip_adapter_scale(scale)
    return LoadedIPAdapter(FACEID_KIND, str(file.resolve()), cached_file_sha256(file), scale, created)


def faceid_weights(choice: str, family: ModelFamily, store: ModelStore) -> Path:
    """`faceid`: the registry's FaceID file for the model's family (fetched when missing, else exit 5);
    anything else: a FaceID weights file path."""
    from portraitforge.models.registry import IP_ADAPTER_FACEID_SD15, IP_ADAPTER_FACEID_SDXL

    if choice != FACEID_KIND:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise BadInputError(f"--id-adapter {choice}: neither 'faceid' nor an existing weights file")
        return path
    if family.base is Family.SDXL:
        return store.ensure(IP_ADAPTER_FACEID_SDXL.name)
    if family.base is Family.SD1:
        return store.ensure(IP_ADAPTER_FACEID_SD15.name)
    raise BadInputError(f"IP-Adapter FaceID exists for SD 1.5 and SDXL models, not {family.name}")


def check_scale(scale: float) -> float:
    if not 0.0 <= scale <= 2.0:
        raise ParameterError(f"--id-scale {scale} outside 0..2")
    return scale


def faceid_embeds(
    embedding: np.ndarray, guidance: bool, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The `ip_adapter_image_embeds` entry for one identity: (1, 1, 1, 512), or (2, 1, 1, 512) with the zero
    (unconditional) embedding first when classifier-free guidance runs. FaceID was trained on normed ArcFace
    embeddings (insightface `normed_embedding`), so the vector is L2-normalised here."""
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape[0] != ARCFACE_DIM:
        raise BadInputError(f"IP-Adapter FaceID needs a {ARCFACE_DIM}-d ArcFace embedding, got {vector.shape[0]}-d")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise BadInputError("the identity's ArcFace embedding is zero or not finite")
    ref = torch.from_numpy(vector / norm).reshape(1, 1, 1, ARCFACE_DIM)
    embeds = torch.cat([torch.zeros_like(ref), ref]) if guidance else ref
    return embeds.to(device=device, dtype=dtype)


def uses_guidance(pipe: Any, guidance_scale: float) -> bool:
    """The SD pipelines' `do_classifier_free_guidance` rule (a property set only during a call): guidance > 1
    and a UNet without guidance-embedding (`time_cond_proj_dim`, LCM-distilled models)."""
    unet = getattr(pipe, "unet", None)
    cond_dim = getattr(getattr(unet, "config", None), "time_cond_proj_dim", None)
    return guidance_scale > 1.0 and cond_dim is None
