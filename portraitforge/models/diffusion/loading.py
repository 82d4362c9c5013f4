"""`load_text2image`: any supported source into a ready pipeline on the chosen device, as a `DiffusionModel`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from portraitforge.errors import BadInputError, ModelUnavailableError, OutOfMemoryError
from portraitforge.models.diffusion.device import dtype_kwargs, resolve_device, resolve_dtype
from portraitforge.models.diffusion.hashes import cached_file_sha256, folder_fingerprint
from portraitforge.models.diffusion.lora import LoadedLora, LoraSpec, load_loras
from portraitforge.models.diffusion.schedulers import scheduler_label, set_scheduler
from portraitforge.models.diffusion.sources import (
    Family,
    GenerationDefaults,
    ModelFamily,
    ModelSource,
    SourceKind,
    detect_folder_family,
    detect_single_file_family,
    family_defaults,
    first_line,
    hub_offline,
    resolve_single_file_config,
)


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    local_files_only: bool = False
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" weights in a Hub repo
    cache_dir: str | None = None
    config: str | None = None  # single file: local diffusers config folder
    original_config: str | None = None  # single file: original LDM yaml (local path)
    family: str | None = None  # override detection, e.g. "sd2-turbo"
    scheduler: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    cpu_offload: bool = False  # enable_model_cpu_offload (CUDA/MPS; needs accelerate)
    vae_tiling: bool = False
    vae_slicing: bool = False


@dataclass
class DiffusionModel:
    """A loaded text-to-image pipeline and what it is. Pass it explicitly; nothing is cached globally."""

    pipe: Any  # a diffusers DiffusionPipeline
    source: ModelSource
    family: ModelFamily
    model_hash: str
    hash_kind: str  # "sha256" (single file) or "folder-fingerprint"
    device: torch.device
    dtype: torch.dtype
    scheduler: str
    sampler_a1111: str
    loras: list[LoadedLora] = field(default_factory=list)
    revision: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def vae_scale_factor(self) -> int:
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    @property
    def native_size(self) -> int:
        unet = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        sample = getattr(getattr(unet, "config", None), "sample_size", None)
        if isinstance(sample, int):
            return sample * self.vae_scale_factor
        return 1024 if self.family.base is Family.SDXL else 512

    @property
    def defaults(self) -> GenerationDefaults:
        return family_defaults(self.family, self.native_size)

    @property
    def name(self) -> str:
        if self.source.kind is SourceKind.HUB:
            return self.source.location
        path = Path(self.source.location)
        return path.stem if self.source.kind is SourceKind.SINGLE_FILE else path.name

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source.location,
            "kind": self.source.kind.value,
            "name": self.name,
            "family": self.family.name,
            "hash": self.model_hash,
            "hash_kind": self.hash_kind,
            "revision": self.revision,
            "pipeline": type(self.pipe).__name__,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def load_text2image(source: str | os.PathLike[str] | ModelSource, options: LoadOptions | None = None) -> DiffusionModel:
    """Load any supported source into a ready text-to-image pipeline on the chosen device."""
    opts = options or LoadOptions()
    src = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    revision: str | None = None
    try:
        if src.kind is SourceKind.SINGLE_FILE:
            path = Path(src.location)
            family = ModelFamily.parse(opts.family) if opts.family else detect_single_file_family(path)
            pipe = _load_single_file(path, family, dtype, opts)
            model_hash, hash_kind = cached_file_sha256(path), "sha256"
        else:
            if src.kind is SourceKind.HUB:
                folder = _hub_snapshot(src.location, opts)
                revision = folder.name if folder.parent.name == "snapshots" else None
            else:
                folder = Path(src.location)
            family = ModelFamily.parse(opts.family) if opts.family else detect_folder_family(folder, src.location)
            pipe = _load_folder(folder, dtype, opts)
            model_hash, hash_kind = folder_fingerprint(folder), "folder-fingerprint"
    except torch.OutOfMemoryError:
        raise OutOfMemoryError(f"out of memory loading {src.location} on {device}: try --cpu-offload or fp16") from None
    model = DiffusionModel(
        pipe=pipe,
        source=src,
        family=family,
        model_hash=model_hash,
        hash_kind=hash_kind,
        device=device,
        dtype=dtype,
        scheduler="",
        sampler_a1111="",
        revision=revision,
    )
    if opts.scheduler:
        set_scheduler(pipe, opts.scheduler)
    if family.turbo and pipe.scheduler.config.get("timestep_spacing", "trailing") != "trailing":
        # SD-Turbo/SDXL-Turbo sample 1-4 steps from the end of the schedule; a single file loaded with a
        # non-turbo config gets "leading" spacing (diffusers' SDXL Turbo guide says to set "trailing").
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, timestep_spacing="trailing")
    model.scheduler, model.sampler_a1111 = scheduler_label(pipe.scheduler)
    model.loras = load_loras(pipe, opts.loras)
    _place(model, opts)
    return model


def _hub_snapshot(repo_id: str, opts: LoadOptions) -> Path:
    """The repo's files in the HF cache, downloaded first unless offline. Same file selection as from_pretrained."""
    from diffusers import DiffusionPipeline

    offline = hub_offline(opts.local_files_only)
    try:
        folder = DiffusionPipeline.download(
            repo_id,
            local_files_only=offline,
            revision=opts.revision,
            cache_dir=opts.cache_dir,
            variant=opts.variant,
        )
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, gated, network)
        if offline:
            raise ModelUnavailableError(
                f"model '{repo_id}' is not in the local Hugging Face cache and downloads are off "
                f"(HF_HUB_OFFLINE=1 or --offline): run once online, or `hf download {repo_id}`, "
                "or pass a local diffusers folder or .safetensors file to --model"
            ) from None
        raise ModelUnavailableError(
            f"cannot fetch '{repo_id}' from the Hugging Face Hub ({first_line(exc)}): check the id, the network, "
            "HF_TOKEN for gated models, or pass a local folder or .safetensors file to --model"
        ) from None
    return Path(folder)


def _load_folder(folder: Path, dtype: torch.dtype, opts: LoadOptions) -> Any:
    from diffusers import AutoPipelineForText2Image

    try:
        return AutoPipelineForText2Image.from_pretrained(
            str(folder), local_files_only=True, variant=opts.variant, **dtype_kwargs(dtype)
        )
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise ModelUnavailableError(f"{folder}: cannot load the diffusers pipeline ({first_line(exc)})") from None


def _load_single_file(path: Path, family: ModelFamily, dtype: torch.dtype, opts: LoadOptions) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family.base is Family.OTHER:
        raise BadInputError(f"{path}: single-file loading supports sd1, sd2 and sdxl checkpoints")
    cls = StableDiffusionXLPipeline if family.base is Family.SDXL else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"local_files_only": True, **dtype_kwargs(dtype)}
    if opts.original_config and not opts.config:
        # diffusers' legacy path: the text encoder/tokenizer configs must already be cached (it looks them up
        # in the HF cache by their original repo ids); `--model-config DIR` is the reliable offline route.
        original = Path(opts.original_config).expanduser()
        if not original.is_file():
            raise BadInputError(f"{original}: --original-config file not found")
        kwargs["original_config"] = str(original)
    else:
        kwargs["config"] = str(resolve_single_file_config(path, family, opts.config, opts.cache_dir))
    try:
        return cls.from_single_file(str(path), **kwargs)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # diffusers raises ValueError/OSError/SingleFileComponentError/hub errors
        raise ModelUnavailableError(
            f"{path.name}: cannot load as a {family.name} checkpoint ({first_line(exc)})"
        ) from None


def _place(model: DiffusionModel, opts: LoadOptions) -> None:
    """Device placement and memory options. Attention stays on PyTorch SDPA (diffusers' default with torch 2):
    diffusers advises against attention slicing there, it only slows SDPA down."""
    pipe = model.pipe
    if opts.cpu_offload and model.device.type != "cpu":
        # Offload moves each sub-model to the device only while it runs; do not call .to(device) as well.
        pipe.enable_model_cpu_offload(device=model.device)
    else:
        if opts.cpu_offload:
            model.warnings.append("--cpu-offload ignored: the model already runs on the CPU")
        pipe.to(model.device)
    vae = getattr(pipe, "vae", None)
    if opts.vae_tiling and vae is not None:
        vae.enable_tiling()
    if opts.vae_slicing and vae is not None:
        vae.enable_slicing()
    loaded_dtype = getattr(pipe, "dtype", model.dtype)
    if loaded_dtype != model.dtype:  # an older diffusers that ignored the dtype keyword
        pipe.to(dtype=model.dtype)
    pipe.set_progress_bar_config(disable=True)
