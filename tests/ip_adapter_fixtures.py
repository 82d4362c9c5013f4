"""A tiny random IP-Adapter FaceID checkpoint in the real key layout, for a given (tiny) UNet.

Layout, as tencent-ailab/IP-Adapter saves FaceID (`ip_adapter_faceid.py`) and diffusers reads it
(`loaders/unet.py`, FaceID branch keyed on `norm.weight`):
- `image_proj.*`: `MLPProjModel`: `proj.0` Linear(512, 1024), GELU, `proj.2` Linear(1024, cross_dim * 4 tokens),
  `norm` LayerNorm(cross_dim);
- `ip_adapter.N.*`: one entry per UNet attention processor, numbered over ALL processors in
  `unet.attn_processors` order (self- and cross-attention alternate): cross-attention ones (odd N) carry
  `to_k_ip.weight` / `to_v_ip.weight` (hidden x cross_dim); with `lora_rank`, every processor also carries the
  FaceID LoRA `to_{q,k,v,out}_lora.{down,up}.weight`, which diffusers applies as PEFT adapter `faceid_0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

ID_DIM = 512
NUM_TOKENS = 4  # FaceID (non-Plus) projects the embedding to 4 tokens


def faceid_state_dict(unet: Any, seed: int = 3, lora_rank: int | None = None) -> dict[str, dict[str, torch.Tensor]]:
    cross = int(unet.config.cross_attention_dim)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    image_proj = {
        "proj.0.weight": rand(ID_DIM * 2, ID_DIM),
        "proj.0.bias": rand(ID_DIM * 2),
        "proj.2.weight": rand(cross * NUM_TOKENS, ID_DIM * 2),
        "proj.2.bias": rand(cross * NUM_TOKENS),
        "norm.weight": 1.0 + rand(cross),
        "norm.bias": rand(cross),
    }
    ip_adapter: dict[str, torch.Tensor] = {}
    for index, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.removesuffix(".processor"))
        hidden = int(attn.to_q.in_features)
        context = int(attn.to_k.in_features)
        if name.endswith("attn2.processor"):
            ip_adapter[f"{index}.to_k_ip.weight"] = rand(hidden, cross, std=0.2)
            ip_adapter[f"{index}.to_v_ip.weight"] = rand(hidden, cross, std=0.2)
        if lora_rank is not None:
            for proj, width in (("to_q", hidden), ("to_k", context), ("to_v", context), ("to_out", hidden)):
                ip_adapter[f"{index}.{proj}_lora.down.weight"] = rand(lora_rank, width)
                ip_adapter[f"{index}.{proj}_lora.up.weight"] = rand(hidden, lora_rank)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def save_faceid(state: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    """`.safetensors`: flat `image_proj.*` / `ip_adapter.*` keys; `.bin`: the nested dict, pickled with
    torch.save exactly as the published checkpoints are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".bin":
        torch.save(state, str(path))
    else:
        flat = {
            f"{part}.{key}": value.contiguous() for part, tensors in state.items() for key, value in tensors.items()
        }
        save_file(flat, str(path))
    return path
