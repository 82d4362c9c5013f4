"""Loading Stable Diffusion text-to-image pipelines with diffusers: sources, family, device, scheduler, LoRAs.

Three sources are accepted:
- a Hub id (`owner/name`): resolved into the normal Hugging Face cache. `HF_HUB_OFFLINE=1` or
  `local_files_only=True` forbid downloads; an uncached id then fails with a one-line ModelUnavailableError;
- a local diffusers folder (has `model_index.json`), loaded with `AutoPipelineForText2Image`;
- a single `.safetensors` checkpoint in the original (CompVis/SGM) layout, loaded with `from_single_file` and a
  LOCAL diffusers config, so that loading never reaches the Hub (see `resolve_single_file_config`).

Everything returned is explicit: `load_text2image` gives a `DiffusionModel` record holding the pipeline and what
was loaded (family, hash, scheduler, LoRAs, device, dtype). No module-level caches.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from portraitforge.atomic import atomic_write_bytes
from portraitforge.errors import BadInputError, ModelUnavailableError, OutOfMemoryError, ParameterError
from portraitforge.paths import home_dir

# --- sources -------------------------------------------------------------------------------------------------

SINGLE_FILE_SUFFIXES = frozenset({".safetensors"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceKind(enum.StrEnum):
    HUB = "hub"
    FOLDER = "folder"
    SINGLE_FILE = "single_file"


@dataclass(frozen=True)
class ModelSource:
    kind: SourceKind
    location: str  # repo id or absolute path

    @classmethod
    def parse(cls, spec: str | os.PathLike[str]) -> ModelSource:
        """A path that exists wins over a Hub id of the same spelling (as in diffusers)."""
        text = str(spec).strip()
        if not text:
            raise BadInputError("--model is empty: give a Hub id, a diffusers folder or a .safetensors file")
        path = Path(text).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise BadInputError(f"{path}: not a diffusers pipeline folder (no model_index.json)")
            return cls(SourceKind.FOLDER, str(path.resolve()))
        if path.is_file():
            suffix = path.suffix.lower()
            if suffix in PICKLE_SUFFIXES:
                raise BadInputError(
                    f"{path}: pickle checkpoints ({suffix}) are not loaded (they can run code); "
                    "convert it to .safetensors first"
                )
            if suffix not in SINGLE_FILE_SUFFIXES:
                raise BadInputError(f"{path}: unsupported model file '{suffix}' (expected a .safetensors checkpoint)")
            return cls(SourceKind.SINGLE_FILE, str(path.resolve()))
        looks_like_path = text.startswith((".", "/", "~")) or path.suffix.lower() in SINGLE_FILE_SUFFIXES
        if looks_like_path or not _REPO_ID.match(text):
            raise BadInputError(f"{text}: model not found (not a file, a folder or a Hub id like 'owner/name')")
        return cls(SourceKind.HUB, text)


def hub_offline(local_files_only: bool = False) -> bool:
    """True when downloads are forbidden. Read per call: huggingface_hub freezes the variable at import time."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return local_files_only or env or bool(constants.HF_HUB_OFFLINE)


# --- family --------------------------------------------------------------------------------------------------


class Family(enum.StrEnum):
    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    OTHER = "other"  # any other text-to-image pipeline AutoPipelineForText2Image knows


@dataclass(frozen=True)
class ModelFamily:
    base: Family
    turbo: bool = False  # adversarially distilled: 1-4 steps, no classifier-free guidance

    @property
    def name(self) -> str:
        return f"{self.base.value}-turbo" if self.turbo else self.base.value

    @classmethod
    def parse(cls, text: str) -> ModelFamily:
        value = text.strip().lower()
        turbo = value.endswith("-turbo")
        try:
            return cls(Family(value.removesuffix("-turbo")), turbo)
        except ValueError:
            raise ParameterError(f"unknown model family '{text}' (sd1, sd2, sdxl, with an optional -turbo)") from None


@dataclass(frozen=True)
class GenerationDefaults:
    steps: int
    guidance: float
    width: int
    height: int


def family_defaults(family: ModelFamily, native_size: int) -> GenerationDefaults:
    """Model-card defaults. SD-Turbo/SDXL-Turbo cards: 1 step, guidance 0.0, 512 px."""
    if family.turbo:
        return GenerationDefaults(steps=1, guidance=0.0, width=native_size, height=native_size)
    guidance = 5.0 if family.base is Family.SDXL else 7.5
    return GenerationDefaults(steps=30, guidance=guidance, width=native_size, height=native_size)


def _is_turbo_name(text: str) -> bool:
    return "turbo" in text.lower()


def detect_folder_family(folder: Path, name_hint: str = "") -> ModelFamily:
    """From model_index.json's pipeline class and the text encoder width (SD 2.x uses 1024-d OpenCLIP)."""
    index = _read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    turbo = _is_turbo_name(name_hint or str(folder))
    if class_name.startswith("StableDiffusionXL"):
        return ModelFamily(Family.SDXL, turbo)
    if class_name.startswith("StableDiffusion") and "3" not in class_name:
        unet = _read_json(folder / "unet" / "config.json") if (folder / "unet" / "config.json").is_file() else {}
        sd2 = unet.get("cross_attention_dim") == 1024
        return ModelFamily(Family.SD2 if sd2 else Family.SD1, turbo)
    return ModelFamily(Family.OTHER, turbo)


# Structural keys of original checkpoints. diffusers' own `infer_diffusers_model_type` keys on layer indices that
# only full-size models have (e.g. resblocks.9), so it misreads small or pruned models; these keys do not.
_KEY_SDXL = "conditioner.embedders.1.model.positional_embedding"
_KEY_SDXL_REFINER = "conditioner.embedders.0.model.text_projection"
_KEY_SD2 = "cond_stage_model.model.token_embedding.weight"
_KEY_SD1 = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
_KEY_UNET = "model.diffusion_model.input_blocks.0.0.weight"


def detect_single_file_family(path: Path) -> ModelFamily:
    """Reads only the safetensors header (key names), never the weights."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable .safetensors file ({exc})") from None
    turbo = _is_turbo_name(path.name)
    if _KEY_SDXL_REFINER in keys and _KEY_SDXL not in keys:
        raise BadInputError(f"{path}: an SDXL refiner checkpoint is image-to-image only, not a text-to-image model")
    if _KEY_SDXL in keys:
        return ModelFamily(Family.SDXL, turbo)
    if _KEY_SD2 in keys:
        return ModelFamily(Family.SD2, turbo)
    if _KEY_SD1 in keys or _KEY_UNET in keys:
        return ModelFamily(Family.SD1, turbo)
    raise BadInputError(f"{path}: not a Stable Diffusion 1.x/2.x/XL checkpoint (unknown tensor layout)")


# Where a family's diffusers config lives on the Hub. Used for single files only if already in the local cache.
DEFAULT_CONFIG_REPOS: dict[str, str] = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd2-turbo": "stabilityai/sd-turbo",
    "sdxl-turbo": "stabilityai/sdxl-turbo",
}


def resolve_single_file_config(
    checkpoint: Path, family: ModelFamily, config: str | os.PathLike[str] | None, cache_dir: str | None = None
) -> Path:
    """The local diffusers config folder for `from_single_file(config=...)`.

    diffusers would otherwise download the family's config from the Hub, and with `local_files_only=True` and no
    `original_config` it even switches downloads back on (loaders/single_file.py). So we always hand it a local
    folder: the one given, else the family's default repo if it is already in the HF cache.
    """
    if config is not None:
        folder = Path(config).expanduser()
        if not (folder / "model_index.json").is_file():
            raise BadInputError(f"{folder}: --model-config must be a diffusers folder with model_index.json")
        return folder.resolve()
    repo = DEFAULT_CONFIG_REPOS.get(family.name) or DEFAULT_CONFIG_REPOS.get(family.base.value)
    if repo is not None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            cached = Path(snapshot_download(repo, cache_dir=cache_dir, local_files_only=True))
        except (LocalEntryNotFoundError, OSError, ValueError):
            cached = None
        if cached is not None and (cached / "model_index.json").is_file():
            return cached
    hint = f"hf download {repo} --include '*.json' '*.txt'" if repo else "a diffusers folder of the same family"
    raise ModelUnavailableError(
        f"{checkpoint.name}: a single-file {family.name} checkpoint needs a local diffusers config: pass "
        f"--model-config DIR (a diffusers folder of the same family), or cache one once online with `{hint}`"
    )


# --- device and dtype ----------------------------------------------------------------------------------------

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


# --- schedulers ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str
    options: dict[str, Any]
    a1111: str  # the sampler name AUTOMATIC1111 writes in its `parameters` chunk


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler", {}, "DDIM"),
    "pndm": SchedulerSpec("PNDMScheduler", {}, "PLMS"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", {}, "LMS"),
    "euler": SchedulerSpec("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", {}, "Heun"),
    "dpm++_2m": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": False}, "DPM++ 2M"),
    "dpm++_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpm++_2m_sde": SchedulerSpec(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}, "DPM++ 2M SDE"
    ),
    "dpm++_2m_sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
        "DPM++ 2M SDE Karras",
    ),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", {}, "UniPC"),
    "lcm": SchedulerSpec("LCMScheduler", {}, "LCM"),
}


def scheduler_label(scheduler: Any) -> tuple[str, str]:
    """(our name, A1111 sampler name) of a loaded scheduler instance."""
    class_name = type(scheduler).__name__
    config = getattr(scheduler, "config", {})
    karras = bool(config.get("use_karras_sigmas", False))
    sde = "sde" in str(config.get("algorithm_type", ""))
    for name, spec in SCHEDULERS.items():
        if spec.class_name != class_name:
            continue
        if spec.class_name == "DPMSolverMultistepScheduler" and (
            spec.options.get("use_karras_sigmas") != karras or ("algorithm_type" in spec.options) != sde
        ):
            continue
        return name, spec.a1111
    return class_name, class_name


def set_scheduler(pipe: Any, name: str) -> None:
    """Swap the scheduler by name, keeping the model's own config (betas, prediction type, spacing)."""
    import diffusers

    key = name.strip().lower().replace(" ", "_")
    spec = SCHEDULERS.get(key)
    if spec is None:
        if hasattr(diffusers, name) and name.endswith("Scheduler"):
            spec = SchedulerSpec(name, {}, name)
        else:
            raise ParameterError(f"unknown scheduler '{name}' (one of: {', '.join(SCHEDULERS)})")
    cls = getattr(diffusers, spec.class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **spec.options)


# --- LoRAs ---------------------------------------------------------------------------------------------------


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
            raise BadInputError(f"{path}: cannot load as a LoRA for this model ({_first_line(exc)})") from None
        loaded.append(LoadedLora(adapter, str(path), spec.weight, file_sha256(path)))
    pipe.set_adapters([x.adapter for x in loaded], adapter_weights=[x.weight for x in loaded])
    return loaded


# --- hashes --------------------------------------------------------------------------------------------------

WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf"})
_SAMPLE_BYTES = 1 << 20


def file_sha256(path: Path, use_cache: bool = True) -> str:
    """Full sha256 (what A1111 calls AutoV2 and Civitai lists). Cached per path/size/mtime under the home dir,
    since a 7 GB SDXL file takes seconds to hash."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = home_dir() / "cache" / "sha256.json"
    cache: dict[str, str] = {}
    if use_cache:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache, dict) and isinstance(cache.get(key), str):
            return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_SAMPLE_BYTES), b""):
            digest.update(block)
    value = digest.hexdigest()
    if use_cache:
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = value
        with contextlib.suppress(OSError):  # the hash cache is an optimisation; a read-only home must not break loading
            atomic_write_bytes(cache_path, json.dumps(cache, sort_keys=True).encode())
    return value


def folder_fingerprint(folder: Path) -> str:
    """sha256 over model_index.json, every config file's bytes and, per weight file, its name, size and a content
    digest. The content digest is the exact sha256 when the file is a Hugging Face cache blob (blobs are named by
    their sha256), else the sha256 of its first and last MiB. Hashing every byte of a multi-GB folder at each load
    would cost seconds to minutes; names and sizes alone cannot tell two fine-tunes of one architecture apart,
    and the sampled bytes (tensor data right after the safetensors header) do."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() in WEIGHT_SUFFIXES:
            digest.update(f"{rel}|{path.stat().st_size}|{_content_digest(path)}\n".encode())
        elif path.suffix.lower() in (".json", ".txt", ".yaml"):
            digest.update(f"{rel}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    size = path.stat().st_size
    sample = hashlib.sha256()
    with path.open("rb") as handle:
        sample.update(handle.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            handle.seek(size - _SAMPLE_BYTES)
            sample.update(handle.read(_SAMPLE_BYTES))
    return "sample:" + sample.hexdigest()


# --- loading -------------------------------------------------------------------------------------------------


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
            model_hash, hash_kind = file_sha256(path), "sha256"
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
            f"cannot fetch '{repo_id}' from the Hugging Face Hub ({_first_line(exc)}): check the id, the network, "
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
        raise ModelUnavailableError(f"{folder}: cannot load the diffusers pipeline ({_first_line(exc)})") from None


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
            f"{path.name}: cannot load as a {family.name} checkpoint ({_first_line(exc)})"
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


# --- helpers -------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
