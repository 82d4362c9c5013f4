"""`portraitforge swap`: refine target photos toward an identity."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from portraitforge.cli.common import preset_help, single, stderr_is_tty, writable_dir
from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, ParameterError
from portraitforge.pipelines.stage_registry import describe_choices
from portraitforge.types import EXIT_CODES, EXIT_LOW_QUALITY_STRICT, STATUS_SEVERITY, Status

if TYPE_CHECKING:  # the pipeline's imports are paid when `swap` runs, not by every command's start
    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.pipelines.refine import IdentityArg, RefinePipeline

app = single()


def _overrides(**options: Any) -> dict[str, Any]:
    """CLI options that were given (None means 'use the preset/default')."""
    return {k: v for k, v in options.items() if v is not None}


@app.command("swap")
def swap(
    targets: list[Path] = typer.Argument(
        ..., help="Target image files or folders.", metavar="TARGET", show_default=False
    ),
    identity: str = typer.Option(
        ...,
        "--identity",
        "-i",
        help="Identity image, stored identity name, per-face mapping '0=alice,1=bob', or 'nearest:alice,bob' "
        "(each identity goes to the face most like it).",
        metavar="IDENTITY",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (one target) or folder.", metavar="PATH"),
    config: str | None = typer.Option(
        None, "--config", "-c", help="YAML preset file or name in configs/.", metavar="PRESET"
    ),
    select: str | None = typer.Option(
        None,
        help=preset_help("Faces to refine: largest | all | index | reference.", "select"),
        metavar="MODE",
    ),
    face_index: int | None = typer.Option(
        None,
        help=preset_help("Face number for --select index (reading order).", "face_index"),
        metavar="N",
    ),
    reference: Path | None = typer.Option(
        None, help="Image of the face to pick with --select reference.", metavar="IMAGE"
    ),
    strength: float | None = typer.Option(
        None,
        help=preset_help("0 keeps the target, 1 is the full identity.", "strength"),
        metavar="0..1",
    ),
    mask: str | None = typer.Option(
        None,
        help=preset_help("Mask shape: hull (whole face) | features (eyes, nose, mouth).", "mask"),
        metavar="SHAPE",
    ),
    feather: float | None = typer.Option(
        None,
        help=preset_help("Mask feather as a fraction of face height.", "feather"),
        metavar="0..0.5",
    ),
    color_transfer: bool | None = typer.Option(
        None,
        "--color-transfer/--no-color-transfer",
        help=preset_help("Match the face's colours to the target's.", "color_transfer"),
    ),
    blend: str | None = typer.Option(
        None,
        help=preset_help(f"Blending: {describe_choices('blender')}.", "blend"),
        metavar="METHOD",
    ),
    smoothing: float | None = typer.Option(None, help=preset_help("Skin smoothing.", "smoothing"), metavar="0..1"),
    brightness: float | None = typer.Option(None, help=preset_help("Face brightness.", "brightness"), metavar="-1..1"),
    contrast: float | None = typer.Option(None, help=preset_help("Face contrast.", "contrast"), metavar="-1..1"),
    saturation: float | None = typer.Option(None, help=preset_help("Face saturation.", "saturation"), metavar="-1..1"),
    resolution: str | None = typer.Option(
        None,
        help=preset_help("Output size: original | 512 | 1024 | 2048 | WxH.", "resolution"),
        metavar="SIZE",
    ),
    fit: str | None = typer.Option(
        None, help=preset_help("For WxH: pad (reflect) | crop | stretch.", "fit"), metavar="MODE"
    ),
    upscaler: str | None = typer.Option(
        None,
        help=preset_help(f"Face crop upscaler: {describe_choices('upscaler')}.", "upscaler"),
        metavar="NAME",
    ),
    max_pixels: int | None = typer.Option(
        None,
        help=preset_help("Reject images with more pixels (decompression bombs).", "max_pixels"),
        metavar="N",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="png | jpg | webp.", metavar="FORMAT", show_default="from -o, else png"
    ),
    jpeg_quality: int = typer.Option(95, min=1, max=100, help="JPEG/WebP quality.", metavar="1..100"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON report per target on stdout."),
    log: Path | None = typer.Option(
        None, help="JSON-lines run log.", metavar="FILE", show_default="$PORTRAITFORGE_HOME/logs/runs.jsonl"
    ),
    strict: bool = typer.Option(False, help="Exit 7 when any result is LOW_QUALITY."),
    store_dir: Path | None = typer.Option(
        None,
        "--store",
        help="Identity store folder.",
        metavar="DIR",
        show_default="$PORTRAITFORGE_HOME/embeddings_cache",
    ),
    require_consent: bool = typer.Option(False, help="Refuse stored identities without a consent record."),
    analyzer: str | None = typer.Option(
        None,
        help=preset_help(f"Face analysis: {describe_choices('analyzer')}.", "analyzer"),
        metavar="NAME",
    ),
    swap_engine: str | None = typer.Option(
        None,
        help=preset_help(f"Swap engine: {describe_choices('swapper')}.", "swap_engine"),
        metavar="NAME",
    ),
    swap_order: str | None = typer.Option(
        None, help=preset_help("inswapper: upscale-swap | swap-upscale.", "swap_order"), metavar="ORDER"
    ),
    pixel_boost: int | None = typer.Option(
        None,
        help=preset_help("inswapper: 128 px tiles per side, 0 = automatic.", "pixel_boost"),
        metavar="0..4",
    ),
    gender: str | None = typer.Option(
        None,
        help=preset_help("insightface: refine only faces of this gender: any | female | male.", "gender"),
        metavar="GENDER",
    ),
    models_dir: str | None = typer.Option(
        None, help="Model store folder.", metavar="DIR", show_default="$PORTRAITFORGE_HOME/models"
    ),
    watermark: bool | None = typer.Option(
        None, "--watermark/--no-watermark", help=preset_help("Invisible watermark on the output.", "watermark")
    ),
    nsfw_check: bool | None = typer.Option(
        None,
        "--nsfw-check/--no-nsfw-check",
        help=preset_help("NSFW gate on target, identity and output (extra: nsfw).", "nsfw_check"),
    ),
    nsfw_policy: str | None = typer.Option(
        None, help=preset_help("NSFW gate policy: refuse | blur | flag.", "nsfw_policy"), metavar="POLICY"
    ),
) -> None:
    """Swap the face(s) in TARGET images to IDENTITY and blend them seamlessly.

    Options left unset take the --config preset's value, else the default shown."""
    from tqdm import tqdm

    from portraitforge.embeddings_cache.resolve import resolve_identity
    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.imageio import list_images
    from portraitforge.paths import default_log_path
    from portraitforge.pipelines.refine import RefinePipeline
    from portraitforge.pipelines.refine_files import append_log, output_path_for, refine_file
    from portraitforge.progress import progress_bar

    overrides = _overrides(
        select=select,
        face_index=face_index,
        strength=strength,
        mask=mask,
        feather=feather,
        color_transfer=color_transfer,
        blend=blend,
        smoothing=smoothing,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        resolution=resolution,
        fit=fit,
        upscaler=upscaler,
        max_pixels=max_pixels,
        analyzer=analyzer,
        swap_engine=swap_engine,
        swap_order=swap_order,
        pixel_boost=pixel_boost,
        gender=gender,
        models_dir=models_dir,
        watermark=watermark,
        nsfw_check=nsfw_check,
        nsfw_policy=nsfw_policy,
    )
    cfg = RefineConfig.from_yaml(config, **overrides) if config else RefineConfig.validated(overrides)
    if cfg.select == "reference" and reference is None:
        raise ParameterError("--select reference needs --reference IMAGE")
    # Each target gets its own status line below, a missing one too; but when none exists there is nothing to
    # do, so say so before the models load.
    if not any(t.exists() for t in targets):
        raise BadInputError(f"{', '.join(map(str, targets))}: file not found")
    files = list_images(targets)
    if not files:
        raise BadInputError("no target images found")
    many = len(files) > 1 or any(t.is_dir() for t in targets)
    outputs = [output_path_for(f, output, many, fmt) for f in files]
    if len(set(outputs)) != len(outputs):
        raise BadInputError("two targets would write the same output file (same file name in several folders)")
    for folder in sorted({p.parent for p in outputs}):
        writable_dir(folder, "output folder")
    log_path = log or default_log_path()
    writable_dir(log_path.parent, "run log folder")

    pipe = RefinePipeline.from_config(cfg)
    # The store audits each stored identity's use (purpose "swap") and enforces --require-consent itself.
    store = IdentityStore(store_dir, require_consent=require_consent, purpose="swap")
    t0 = time.perf_counter()
    ident = _resolve(identity, pipe, store, require_consent)
    identity_ms = (time.perf_counter() - t0) * 1e3
    reference_vec = None
    if reference is not None:
        reference_vec = next(iter(resolve_identity(str(reference), pipe.analyzer).embeddings.values()))

    worst = Status.OK
    # The bar only goes to a terminal; logs and pipes get the per-file lines alone.
    progress = progress_bar(files, desc="swap", unit="img", enabled=len(files) > 1 and stderr_is_tty())
    for target, out_path in zip(progress, outputs, strict=True):
        report = refine_file(pipe, target, ident, out_path, jpeg_quality, reference_embedding=reference_vec)
        report.timings_ms = {"identity": identity_ms if target == files[0] else 0.0, **report.timings_ms}
        append_log(log_path, report.to_dict())
        if as_json:
            typer.echo(json.dumps(report.to_dict()))
        elif report.status in (Status.OK, Status.LOW_QUALITY):
            tqdm.write(f"{report.status.value}: {target} -> {out_path}: {report.message}", file=sys.stderr)
        else:
            message = report.message if report.message.startswith(str(target)) else f"{target}: {report.message}"
            tqdm.write(f"error: {message}", file=sys.stderr)
        if STATUS_SEVERITY[report.status] > STATUS_SEVERITY[worst]:
            worst = report.status
    code = EXIT_CODES[worst]
    if worst == Status.LOW_QUALITY and strict:
        code = EXIT_LOW_QUALITY_STRICT
    if code:
        raise typer.Exit(code)


def _resolve(spec: str, pipe: RefinePipeline, store: IdentityStore, require_consent: bool) -> IdentityArg:
    """One identity, a per-face mapping (`0=alice,1=bob`), or `nearest:alice,bob`."""
    from portraitforge.embeddings_cache.resolve import is_face_mapping, resolve_face_mapping, resolve_identity

    common: dict[str, Any] = {
        "max_pixels": pipe.config.max_pixels,
        "store": store,
        "require_consent": require_consent,
        "graders": [] if pipe.grader is None else [pipe.grader],
    }
    if spec.startswith("nearest:"):
        names = [n.strip() for n in spec.removeprefix("nearest:").split(",") if n.strip()]
        if not names:
            raise ParameterError("--identity nearest: needs at least one identity, e.g. nearest:alice,bob")
        loaded = {n: resolve_identity(n, pipe.analyzer, **common) for n in dict.fromkeys(names)}  # one use each
        return [loaded[n] for n in names]
    if is_face_mapping(spec):
        return resolve_face_mapping(spec, pipe.analyzer, **common)
    return resolve_identity(spec, pipe.analyzer, **common)
