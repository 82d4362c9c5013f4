"""File-level refine: load, refine, save atomically with metadata, log one JSON line per run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.imageio import OUTPUT_FORMATS, load_image
from portraitforge.pipelines.refine import IdentityArg, RefinePipeline, all_identities, identity_label
from portraitforge.provenance.nsfw import NsfwGate
from portraitforge.provenance.stamp import ProvenanceOptions, file_ingredient, store_model_hashes, write_output
from portraitforge.types import FloatArray, RefineReport, Status


def software_versions() -> dict[str, str]:
    """Versions that change results; embedded in every output so it can be reproduced."""
    import cv2
    import dlib
    import numpy as np
    import PIL

    from portraitforge import __version__

    return {
        "portraitforge": __version__,
        "dlib": str(dlib.__version__),
        "opencv": str(cv2.__version__),
        "numpy": str(np.__version__),
        "pillow": str(PIL.__version__),
    }


def output_path_for(target: Path, out: Path, many: bool, fmt: str | None) -> Path:
    """A file path if `out` names an image file and there is one target, else `out/<stem>.<fmt>`."""
    if not many and out.suffix.lower() in OUTPUT_FORMATS:
        if fmt and OUTPUT_FORMATS[out.suffix.lower()] != OUTPUT_FORMATS.get(f".{fmt}", ""):
            raise BadInputError(f"--format {fmt} contradicts the output file extension '{out.suffix}'")
        return out
    if not many and out.suffix and not out.is_dir():
        raise BadInputError(f"{out}: unsupported output extension '{out.suffix}' (use .png, .jpg or .webp)")
    suffix = f".{fmt or 'png'}"
    if suffix not in OUTPUT_FORMATS:
        raise BadInputError(f"unsupported output format '{fmt}' (use png, jpg or webp)")
    return out / f"{target.stem}{suffix}"


def refine_file(
    pipe: RefinePipeline,
    target: Path,
    identity: IdentityArg,
    output: Path,
    jpeg_quality: int = 95,
    extra_metadata: dict[str, Any] | None = None,
    reference_embedding: FloatArray | None = None,
    operation: str = "swap",
) -> RefineReport:
    """Refine one image file. Writes `output` only on success (OK or LOW_QUALITY); never partially.
    `operation` (swap, batch, ui) goes into the watermark payload and the C2PA manifest."""
    start = time.perf_counter()
    report: RefineReport
    label = identity_label(identity)
    try:
        if output.resolve() == target.resolve():
            raise BadInputError(f"{output}: refusing to overwrite the input image")
        loaded = load_image(target, max_pixels=pipe.config.max_pixels)
        load_ms = (time.perf_counter() - start) * 1e3
        gate = NsfwGate.from_config(pipe.config)  # None unless --nsfw-check: nudenet is never imported then
        if gate is not None:
            gate.check_input(loaded.rgb, "target")
            for used in all_identities(identity):
                gate.check_input(used.reference_crop, f"identity '{used.name}'")
        result = pipe(loaded.rgb, identity, reference_embedding)
        report = result.report
        report.timings_ms = {"load": load_ms, **report.timings_ms}
        if result.image is not None:
            alpha = None
            if loaded.alpha is not None and result.image.shape[:2] == loaded.alpha.shape:
                alpha = loaded.alpha  # only kept when the geometry is unchanged
            metadata = {
                "identity": label,
                "identity_sources": sorted({src for i in all_identities(identity) for src in i.sources}),
                "input": target.name,
                "parameters": pipe.params(),
                "stages": {s.name: s.params() for s in pipe.stages()},
                "versions": software_versions(),
                **(extra_metadata or {}),
            }
            image = result.image if gate is None else gate.check_output(result.image)
            save_start = time.perf_counter()
            stamped = write_output(
                output,
                image,
                operation,
                ProvenanceOptions.from_config(pipe.config),
                metadata=metadata,
                alpha=alpha,
                jpeg_quality=jpeg_quality,
                ingredients=[file_ingredient("target", target)]
                + [{"role": "identity", "sha256": s} for s in metadata["identity_sources"]],
                models=store_model_hashes(pipe.config.models_dir),
            )
            report.timings_ms["save"] = (time.perf_counter() - save_start) * 1e3
            report.output_path = str(output)
            report.provenance = {**stamped.record, **({"nsfw": gate.report()} if gate is not None else {})}
    except PortraitForgeError as exc:
        report = RefineReport(status=exc.status, message=exc.message, identity=label)
    except MemoryError:
        report = RefineReport(status=Status.OUT_OF_MEMORY, message="out of memory", identity=label)
    report.input_path = str(target)
    report.timings_ms["total"] = (time.perf_counter() - start) * 1e3
    return report


def append_log(log_path: Path, record: dict[str, Any]) -> None:
    """One JSON line per run. O_APPEND writes of one line are atomic enough for concurrent runs."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}, default=str) + "\n"
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
