"""The one place an output image gets its provenance: watermark the pixels, embed our metadata, encode, sign.

Every writer (swap's refine_file, generate's save, the batch worker, the UI) calls `stamp_image` (bytes) or
`write_output` (atomic file) with the operation name; the returned `record` goes to the run log and report.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portraitforge.atomic import atomic_write_bytes, file_sha256
from portraitforge.imageio import encode_image, output_format_for
from portraitforge.provenance.credentials import ManifestFacts, Signer, SignerConfig
from portraitforge.provenance.watermark import ID_HEX, Operation, WatermarkPayload, embed
from portraitforge.types import ImageRGB

NO_SIGNER = "none: no C2PA signer configured (set c2pa_cert/c2pa_key or PORTRAITFORGE_C2PA_CERT/_KEY)"


@dataclass
class ProvenanceOptions:
    """Per-run choices. `signer` is loaded once and reused for every image of the run."""

    watermark: bool = True
    signer: Signer | None = None

    @classmethod
    def from_config(cls, config: Any) -> ProvenanceOptions:
        """From a RefineConfig (or anything with the same optional fields); env vars fill in the signer."""
        signer_cfg = SignerConfig.resolve(
            getattr(config, "c2pa_cert", None), getattr(config, "c2pa_key", None), getattr(config, "c2pa_alg", None)
        )
        return cls(watermark=bool(getattr(config, "watermark", True)), signer=_signer(signer_cfg))


_SIGNERS: dict[SignerConfig, Signer] = {}


def _signer(config: SignerConfig | None) -> Signer | None:
    # One native signer per certificate/key within a process: the UI and batch workers stamp many images.
    if config is None:
        return None
    if config not in _SIGNERS:
        _SIGNERS[config] = Signer(config)
    return _SIGNERS[config]


@dataclass(frozen=True)
class Stamped:
    data: bytes
    record: dict[str, Any] = field(default_factory=dict)


def pixels_sha256(rgb: ImageRGB) -> str:
    """Digest of decoded pixels (an ingredient that exists only in memory, e.g. a draft)."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def deterministic_id(*parts: Any) -> str:
    """An output id derived from the item (batch outputs must be byte-identical on reruns)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:ID_HEX]


def stamp_image(
    rgb: ImageRGB,
    fmt: str,
    operation: str,
    options: ProvenanceOptions,
    metadata: dict[str, Any] | None = None,
    *,
    composite: bool = True,
    title: str = "portraitforge output",
    alpha: np.ndarray | None = None,
    jpeg_quality: int = 95,
    text_chunks: dict[str, str] | None = None,
    ingredients: list[dict[str, str]] | None = None,
    models: dict[str, str] | None = None,
    output_id: str | None = None,
) -> Stamped:
    """Watermark (unless disabled), embed metadata with the provenance record, encode, sign (when configured)."""
    from portraitforge import __version__

    # Content-derived by default: the same command twice writes the same bytes (a project guarantee), and
    # different outputs get different ids.
    if output_id is None:
        output_id = deterministic_id(operation, pixels_sha256(rgb), json.dumps(metadata, sort_keys=True, default=str))
    payload = WatermarkPayload(Operation[operation], output_id)
    pixels = embed(rgb, payload) if options.watermark else rgb
    record: dict[str, Any] = {
        **payload.to_dict(),
        "watermark": "embedded" if options.watermark else "off (--no-watermark)",
        "c2pa": NO_SIGNER if options.signer is None else f"signed ({options.signer.config.alg})",
        "digital_source_type": "compositeWithTrainedAlgorithmicMedia" if composite else "trainedAlgorithmicMedia",
    }
    data = encode_image(pixels, fmt, {**(metadata or {}), "provenance": record}, alpha, jpeg_quality, text_chunks)
    if options.signer is not None:
        facts = ManifestFacts(
            title=title,
            operation=operation,
            composite=composite,
            output_id=payload.output_id,
            software_version=__version__,
            watermark=options.watermark,
            ingredients=ingredients or [],
            models=models or {},
        )
        data = options.signer.sign(data, fmt, facts)
    return Stamped(data, record)


def mark_pixels(rgb: ImageRGB, operation: str, options: ProvenanceOptions) -> tuple[ImageRGB, dict[str, Any]]:
    """Watermark only, for outputs handed over as pixels (the UI: gradio encodes the file itself, so no C2PA
    manifest can be attached there; use the CLI or batch with a signer for signed files)."""
    payload = WatermarkPayload(Operation[operation], deterministic_id(operation, pixels_sha256(rgb)))
    record = {
        **payload.to_dict(),
        "watermark": "embedded" if options.watermark else "off (--no-watermark)",
        "c2pa": "none: the UI hands pixels to gradio, which writes the file",
    }
    return (embed(rgb, payload) if options.watermark else rgb), record


def write_output(
    path: str | os.PathLike[str], rgb: ImageRGB, operation: str, options: ProvenanceOptions, **kwargs: Any
) -> Stamped:
    """`stamp_image` then an atomic write (temp file + fsync + rename), like `imageio.save_image`."""
    target = Path(path)
    stamped = stamp_image(rgb, output_format_for(target), operation, options, title=target.name, **kwargs)
    atomic_write_bytes(target, stamped.data)
    return stamped


def file_ingredient(role: str, path: str | os.PathLike[str]) -> dict[str, str]:
    return {"role": role, "title": Path(path).name, "sha256": file_sha256(path)}


def store_model_hashes(models_dir: str | None = None) -> dict[str, str]:
    """sha256 of the model files present in the model store, from the registry (hash-checked at setup)."""
    from portraitforge.models.registry import DEFAULT_REGISTRY
    from portraitforge.models.store import default_models_dir

    folder = default_models_dir(models_dir)
    found: dict[str, str] = {}
    for spec in DEFAULT_REGISTRY:
        if spec.sha256 and (folder / spec.filename).is_file():
            found[spec.filename] = spec.sha256
    return found
