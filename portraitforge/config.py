"""Refiner configuration (pydantic): validated once at the edge, then passed explicitly."""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portraitforge.errors import BadInputError, ParameterError
from portraitforge.imageio import DEFAULT_MAX_PIXELS
from portraitforge.pipelines.stage_registry import (
    ANALYZERS,
    GRADERS,
    SWAPPERS,
    check_config_choices,
    describe_choices,
    upscaler_spec,
)
from portraitforge.refiners.resize import Resolution

# The presets are configs/ at the repo root, shipped as the package data of `portraitforge.presets`
# (pyproject.toml maps that package to configs/), so a wheel finds them exactly as a checkout does.
PRESETS_PACKAGE = "portraitforge.presets"


def presets_dir() -> Traversable:
    """The folder of preset YAML files, wherever the package is installed from."""
    try:
        return importlib.resources.files(PRESETS_PACKAGE)
    except ModuleNotFoundError:  # a source tree on PYTHONPATH that was never installed
        return Path(__file__).resolve().parent.parent / "configs"


CONFIGS_DIR = presets_dir()


class RefineConfig(BaseModel):
    """Every knob of the refine path. Field docs double as CLI help; the stage fields' choices and help come from
    the stage registries (`pipelines/stage_registry.py`, which also says what each `auto` means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    select: Literal["largest", "all", "index", "reference"] = Field("largest", description="which faces to refine")
    face_index: int = Field(0, ge=0, description="face number for select=index (reading order)")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="0 keeps the target, 1 is the full identity")
    analyzer: Literal["auto", "mesh", "dlib", "insightface"] = Field(
        "auto", description="face analysis: " + describe_choices("analyzer")
    )
    face_detector: Literal["auto", "blazeface", "yunet"] = Field(
        "auto", description="mesh analyzer's detector: " + describe_choices("face_detector")
    )
    descriptor_backend: Literal["auto", "dlib", "torch"] = Field(
        "auto", description="dlib 128-d descriptor: torch port (8x faster, checked against dlib) or dlib itself"
    )
    swap_engine: Literal["mesh", "landmark", "inswapper"] = Field(
        "mesh", description="swap engine: " + describe_choices("swapper")
    )
    parsing: Literal["auto", "on", "off"] = Field(
        "auto", description="mesh engine: face-parsing masks (BiSeNetV2 file); auto uses it when it is in the store"
    )
    grader: Literal["auto", "mobilefacenet", "dlib", "none"] = Field(
        "auto", description="second recogniser for quality.grader: " + describe_choices("grader")
    )
    keep_detail: bool = Field(True, description="keep the photo's fine skin detail on the swapped face")
    restore: Literal["none", "auto", "gfpgan", "codeformer", "gpen", "restoreformer"] = Field(
        "none", description="face restoration on the aligned crop after the swap: " + describe_choices("restorer")
    )
    restore_weight: float = Field(1.0, ge=0.0, le=1.0, description="share of the restored face in the crop")
    swap_order: Literal["upscale-swap", "swap-upscale"] = Field(
        "upscale-swap", description="inswapper: upscale the target crop before the swap, or the swapped face after"
    )
    pixel_boost: int = Field(0, ge=0, le=4, description="inswapper: 128 px tiles per side (0 = automatic)")
    gender: Literal["any", "female", "male"] = Field("any", description="insightface: only refine faces of this gender")
    models_dir: str | None = Field(None, description="model store (default $PORTRAITFORGE_HOME/models)")
    mask: Literal["hull", "features"] = Field("hull", description="hull: whole face; features: eyes/nose/mouth")
    feather: float = Field(0.05, ge=0.0, le=0.5, description="mask feather, fraction of face height")
    color_transfer: bool = True
    blend: Literal["multiband", "poisson", "poisson-mixed", "feather"] = Field(
        "multiband", description="blending: " + describe_choices("blender")
    )
    smoothing: float = Field(0.0, ge=0.0, le=1.0)
    brightness: float = Field(0.0, ge=-1.0, le=1.0)
    contrast: float = Field(0.0, ge=-1.0, le=1.0)
    saturation: float = Field(0.0, ge=-1.0, le=1.0)
    resolution: str = Field("original", description="original, 512, 1024, 2048 or WxH")
    fit: Literal["pad", "crop", "stretch"] = "pad"
    upscaler: str = Field("none", description="face crop upscaler: " + describe_choices("upscaler"))
    frame_upscaler: str = Field(
        "none",
        description="enlarge the whole frame with this upscaler (same names as upscaler) when the output "
        "resolution is larger than the input, instead of plain Lanczos",
    )
    crop_margin: float = Field(0.45, ge=0.2, le=1.5, description="context around the aligned face crop")
    max_crop: int = Field(512, ge=128, le=4096, description="largest aligned face crop in pixels")
    detect_max_side: int = Field(640, ge=128, le=4096, description="detector works on a copy this large")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb guard")
    max_identity_distance: float = Field(0.6, gt=0.0, description="LOW_QUALITY above this")
    max_seam_score: float = Field(2.5, gt=0.0, description="LOW_QUALITY above this edge gradient jump (1 = none)")
    min_sharpness_ratio: float = Field(
        0.2,
        ge=0.0,
        description="LOW_QUALITY when the face has less than this share of the target's sharpness and the swap "
        "enlarged its source pixels more than 1.25x",
    )

    # Provenance (portraitforge/provenance): every output is watermarked and, with a signer, C2PA-signed.
    watermark: bool = Field(True, description="invisible watermark (tool, operation, output id) on every output")
    c2pa_cert: str | None = Field(
        None, description="C2PA signing certificate chain, PEM (default $PORTRAITFORGE_C2PA_CERT; none: no manifest)"
    )
    c2pa_key: str | None = Field(None, description="C2PA private key, PEM (default $PORTRAITFORGE_C2PA_KEY)")
    c2pa_alg: Literal["es256", "ps256"] | None = Field(None, description="C2PA signature algorithm (default es256)")
    nsfw_check: bool = Field(False, description="NSFW gate on target, identity and output (extra: nsfw)")
    nsfw_policy: Literal["refuse", "blur", "flag"] = Field(
        "refuse", description="NSFW gate: refuse (no output), blur the detected regions, or flag in the report"
    )

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: str) -> str:
        Resolution.parse(value)
        return value

    @field_validator("upscaler", "frame_upscaler")
    @classmethod
    def _check_upscaler(cls, value: str) -> str:
        try:
            upscaler_spec(value)  # a registered name or a path to a model file
        except ParameterError as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _check_engine_pairing(self) -> RefineConfig:
        # Identities never cross embedding spaces, and each engine needs what its analyzer gives (the swapper
        # registry lists which analyzers and graders fit each engine).
        engine = SWAPPERS.get(self.swap_engine)
        if self.analyzer != "auto" and (reason := engine.check_analyzer(self.analyzer)) is not None:
            raise ValueError(f"{reason} (or auto)")
        if self.gender != "any" and self.resolved_analyzer != "insightface":
            raise ValueError("gender selection needs the insightface analyzer (genderage model)")
        if self.grader != "auto" and self.grader not in engine.graders:
            # The embedded engines are steered by dlib's landmarks and descriptor: dlib cannot judge them.
            raise ValueError(
                f"the {self.grader} grader is not independent of the {self.swap_engine} engine: "
                f"use {', '.join(engine.graders)} (or auto)"
            )
        return self

    @property
    def resolved_analyzer(self) -> str:
        """`auto` follows the swap engine (see `pipelines/stage_registry.py`)."""
        return ANALYZERS.resolve_name(self)

    @property
    def resolved_grader(self) -> str:
        """`auto`: a grader independent of the engine (see `pipelines/stage_registry.py`)."""
        return GRADERS.resolve_name(self)

    @property
    def parsed_resolution(self) -> Resolution:
        return Resolution.parse(self.resolution)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RefineConfig:
        """Load a preset file (or a preset name: a file of `configs/`), then apply `overrides`."""
        p: Path | Traversable = Path(path)
        if not Path(path).exists() and (CONFIGS_DIR / f"{path}.yaml").is_file():
            p = CONFIGS_DIR / f"{path}.yaml"
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise BadInputError(f"{p}: config file not found") from None
        except yaml.YAMLError as exc:
            raise BadInputError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise BadInputError(f"{p}: a config must be a mapping of field: value")
        data.update(overrides)
        return cls.validated(data, source=str(p))

    @classmethod
    def validated(cls, data: dict[str, Any], source: str = "parameters") -> RefineConfig:
        try:
            return cls(**data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"]) or "value"
            raise ParameterError(f"{source}: {field}: {first['msg']}") from None


# The stage fields' Literal choices are the registries' names: checked once here, so neither can drift.
check_config_choices({name: info.annotation for name, info in RefineConfig.model_fields.items()})
