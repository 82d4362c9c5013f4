"""Refiner configuration (pydantic): validated once at the edge, then passed explicitly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portraitforge.errors import BadInputError, ParameterError
from portraitforge.imageio import DEFAULT_MAX_PIXELS
from portraitforge.refiners.resize import Resolution

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class RefineConfig(BaseModel):
    """Every knob of the refine path. Field docs double as CLI help."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    select: Literal["largest", "all", "index", "reference"] = Field("largest", description="which faces to refine")
    face_index: int = Field(0, ge=0, description="face number for select=index (reading order)")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="0 keeps the target, 1 is the full identity")
    analyzer: Literal["auto", "mesh", "dlib", "insightface"] = Field(
        "auto",
        description="face analysis: mesh (MediaPipe detector + 468-point mesh), dlib (HOG + 68 points), "
        "insightface (SCRFD + ArcFace files); auto follows the swap engine",
    )
    face_detector: Literal["auto", "blazeface", "yunet"] = Field(
        "auto", description="mesh analyzer's detector: blazeface (MediaPipe full range), yunet, auto (yunet if present)"
    )
    descriptor_backend: Literal["auto", "dlib", "torch"] = Field(
        "auto", description="dlib 128-d descriptor: torch port (8x faster, checked against dlib) or dlib itself"
    )
    swap_engine: Literal["mesh", "landmark", "inswapper"] = Field(
        "mesh",
        description="mesh (embedded, 468-point mesh warp), landmark (embedded, 68-point warp) or inswapper "
        "(inswapper_128 files, ArcFace identities)",
    )
    parsing: Literal["auto", "on", "off"] = Field(
        "auto", description="mesh engine: face-parsing masks (BiSeNetV2 file); auto uses it when it is in the store"
    )
    grader: Literal["auto", "mobilefacenet", "dlib", "none"] = Field(
        "auto",
        description="second recogniser for quality.grader, one the engine does not steer with; auto: "
        "mobilefacenet for the embedded engines, dlib for inswapper",
    )
    keep_detail: bool = Field(True, description="keep the photo's fine skin detail on the swapped face")
    swap_order: Literal["upscale-swap", "swap-upscale"] = Field(
        "upscale-swap", description="inswapper: upscale the target crop before the swap, or the swapped face after"
    )
    pixel_boost: int = Field(0, ge=0, le=4, description="inswapper: 128 px tiles per side (0 = automatic)")
    gender: Literal["any", "female", "male"] = Field("any", description="insightface: only refine faces of this gender")
    models_dir: str | None = Field(None, description="model store (default $PORTRAITFORGE_HOME/models)")
    mask: Literal["hull", "features"] = Field("hull", description="hull: whole face; features: eyes/nose/mouth")
    feather: float = Field(0.05, ge=0.0, le=0.5, description="mask feather, fraction of face height")
    color_transfer: bool = True
    blend: Literal["poisson", "poisson-mixed", "multiband", "feather"] = Field(
        "multiband", description="multiband (Laplacian pyramid, default), poisson, poisson-mixed or feather"
    )
    smoothing: float = Field(0.0, ge=0.0, le=1.0)
    brightness: float = Field(0.0, ge=-1.0, le=1.0)
    contrast: float = Field(0.0, ge=-1.0, le=1.0)
    saturation: float = Field(0.0, ge=-1.0, le=1.0)
    resolution: str = Field("original", description="original, 512, 1024, 2048 or WxH")
    fit: Literal["pad", "crop", "stretch"] = "pad"
    upscaler: str = Field(
        "none",
        description="none, lanczos, realesrgan-x4plus (embedded), realesrgan-x4plus-anime, realesr-animevideov3, "
        "or a path to a spandrel-loadable .pth/.safetensors",
    )
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

    @model_validator(mode="after")
    def _check_engine_pairing(self) -> RefineConfig:
        # Identities never cross embedding spaces, and each engine needs what its analyzer gives.
        if self.swap_engine == "landmark" and self.analyzer == "insightface":
            raise ValueError("the landmark swap engine needs 68 landmarks: use analyzer dlib, mesh (or auto)")
        if self.swap_engine == "mesh" and self.analyzer not in ("auto", "mesh"):
            raise ValueError("the mesh swap engine needs the 468-point mesh: use analyzer mesh (or auto)")
        if self.swap_engine == "inswapper" and self.analyzer in ("dlib", "mesh"):
            raise ValueError("the inswapper engine needs ArcFace embeddings: use analyzer insightface (or auto)")
        if self.gender != "any" and self.resolved_analyzer != "insightface":
            raise ValueError("gender selection needs the insightface analyzer (genderage model)")
        if self.grader == "dlib" and self.swap_engine != "inswapper":
            # The embedded engines are steered by dlib's landmarks and descriptor: dlib cannot judge them.
            raise ValueError("the dlib grader is not independent of the embedded engines: use mobilefacenet (or auto)")
        return self

    @property
    def resolved_analyzer(self) -> Literal["mesh", "dlib", "insightface"]:
        """`auto` follows the swap engine: the engine decides which embedding space is usable."""
        if self.analyzer != "auto":
            return self.analyzer
        if self.swap_engine == "inswapper":
            return "insightface"
        return "mesh" if self.swap_engine == "mesh" else "dlib"

    @property
    def resolved_grader(self) -> Literal["mobilefacenet", "dlib", "none"]:
        """A grader independent of the engine: MobileFaceNet unless the engine is ArcFace-driven."""
        if self.grader != "auto":
            return self.grader
        return "dlib" if self.swap_engine == "inswapper" else "mobilefacenet"

    @property
    def parsed_resolution(self) -> Resolution:
        return Resolution.parse(self.resolution)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> RefineConfig:
        """Load a preset file (or a name from `configs/`), then apply `overrides`."""
        p = Path(path)
        if not p.exists() and (CONFIGS_DIR / f"{path}.yaml").exists():
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
