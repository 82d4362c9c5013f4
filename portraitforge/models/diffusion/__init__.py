"""Loading Stable Diffusion text-to-image pipelines with diffusers: sources, family, device, scheduler, LoRAs.

Three sources are accepted:
- a Hub id (`owner/name`): resolved into the normal Hugging Face cache. `HF_HUB_OFFLINE=1` or
  `local_files_only=True` forbid downloads; an uncached id then fails with a one-line ModelUnavailableError;
- a local diffusers folder (has `model_index.json`), loaded with `AutoPipelineForText2Image`;
- a single `.safetensors` checkpoint in the original (CompVis/SGM) layout, loaded with `from_single_file` and a
  LOCAL diffusers config, so that loading never reaches the Hub (see `resolve_single_file_config`).

Everything returned is explicit: `load_text2image` gives a `DiffusionModel` record holding the pipeline and what
was loaded (family, hash, scheduler, LoRAs, device, dtype). No module-level caches.

Modules: `sources` (source kinds, family detection, single-file configs), `device` (device/dtype), `schedulers`,
`lora`, `hashes`, `loading` (`load_text2image`, `DiffusionModel`) and `ip_adapter` (IP-Adapter FaceID).
This package re-exports the public names so `from portraitforge.models.diffusion import X` keeps working.
"""

from portraitforge.models.diffusion.device import DTYPES, dtype_kwargs, resolve_device, resolve_dtype
from portraitforge.models.diffusion.hashes import WEIGHT_SUFFIXES, cached_file_sha256, folder_fingerprint
from portraitforge.models.diffusion.ip_adapter import (
    ID_ADAPTERS,
    LoadedIPAdapter,
    faceid_embeds,
    load_faceid_adapter,
)
from portraitforge.models.diffusion.loading import DiffusionModel, LoadOptions, load_text2image
from portraitforge.models.diffusion.lora import LoadedLora, LoraSpec, load_loras
from portraitforge.models.diffusion.schedulers import SCHEDULERS, SchedulerSpec, scheduler_label, set_scheduler
from portraitforge.models.diffusion.sources import (
    DEFAULT_CONFIG_REPOS,
    PICKLE_SUFFIXES,
    SINGLE_FILE_SUFFIXES,
    Family,
    GenerationDefaults,
    ModelFamily,
    ModelSource,
    SourceKind,
    detect_folder_family,
    detect_single_file_family,
    family_defaults,
    hub_offline,
    resolve_single_file_config,
)

__all__ = [
    "DEFAULT_CONFIG_REPOS",
    "DTYPES",
    "PICKLE_SUFFIXES",
    "SCHEDULERS",
    "SINGLE_FILE_SUFFIXES",
    "WEIGHT_SUFFIXES",
    "ID_ADAPTERS",
    "DiffusionModel",
    "Family",
    "GenerationDefaults",
    "LoadOptions",
    "LoadedIPAdapter",
    "LoadedLora",
    "LoraSpec",
    "ModelFamily",
    "ModelSource",
    "SchedulerSpec",
    "SourceKind",
    "detect_folder_family",
    "detect_single_file_family",
    "dtype_kwargs",
    "faceid_embeds",
    "family_defaults",
    "cached_file_sha256",
    "folder_fingerprint",
    "hub_offline",
    "load_faceid_adapter",
    "load_loras",
    "load_text2image",
    "resolve_device",
    "resolve_dtype",
    "resolve_single_file_config",
    "scheduler_label",
    "set_scheduler",
]
