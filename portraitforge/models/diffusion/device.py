"""Device and dtype resolution, and the dtype keyword the installed diffusers understands."""

from __future__ import annotations

import re

import torch

from portraitforge.errors import BadInputError, ParameterError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU. An explicit device that is absent is a bad input."""
    text = str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ParameterError(f"unknown device '{device}' (auto, cpu, cuda, cuda:N or mps)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device '{device}' requested but CUDA is not available on this machine")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"device '{device}' requested but Apple MPS is not available on this machine")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ParameterError(f"unsupported device '{device}' (auto, cpu, cuda or mps)")
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto`: fp16 on CUDA and MPS (as the diffusers docs and model cards run them), fp32 on CPU.

    bf16 is available on request (`dtype="bf16"`); CPU half precision is slow and poorly supported, so fp32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    text = dtype.strip().lower()
    if text == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    try:
        return DTYPES[text]
    except KeyError:
        raise ParameterError(f"unknown dtype '{dtype}' (auto, fp32, fp16, bf16)") from None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def dtype_kwargs(dtype: torch.dtype, diffusers_version: str | None = None) -> dict[str, torch.dtype]:
    """diffusers renamed `torch_dtype` to `dtype` (huggingface/diffusers#14205, in 0.40); older releases only
    know `torch_dtype` and silently ignore `dtype`. `load_text2image` also checks the loaded dtype afterwards."""
    if diffusers_version is None:
        import diffusers

        diffusers_version = diffusers.__version__
    return {"dtype": dtype} if _version_tuple(diffusers_version) >= (0, 40) else {"torch_dtype": dtype}
