"""Model sources (Hub id, diffusers folder, single .safetensors file), family detection and the local config
a single file is loaded with. Never reaches the Hub unless downloads are allowed."""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError

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
    index = read_json(folder / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    turbo = _is_turbo_name(name_hint or str(folder))
    if class_name.startswith("StableDiffusionXL"):
        return ModelFamily(Family.SDXL, turbo)
    if class_name.startswith("StableDiffusion") and "3" not in class_name:
        unet = read_json(folder / "unet" / "config.json") if (folder / "unet" / "config.json").is_file() else {}
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


# --- helpers -------------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
