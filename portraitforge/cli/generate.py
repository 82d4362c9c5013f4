"""`portraitforge generate PROMPT --model SRC -o DIR`: draw Stable Diffusion drafts and refine them to an identity.

Files written to DIR (all atomically, each with JSON metadata and an A1111 `parameters` chunk):
- with --identity: `DIR/NNN-SEED.png` is the refined portrait of image NNN, and every draft drawn (accepted or
  rejected for having no face) is kept in `DIR/drafts/NNN-SEED-draft.png`;
- without: the accepted draft is the result, `DIR/NNN-SEED.png`; drafts rejected by --require-face go to drafts/.
Exit codes as for `swap` (README table); Ctrl-C (130) keeps the files already complete and no partial file.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from portraitforge.cli.common import preset_help, single, stderr_is_tty, writable_dir
from portraitforge.config import RefineConfig
from portraitforge.errors import ParameterError, RunInterruptedError
from portraitforge.paths import default_log_path
from portraitforge.progress import progress_bar
from portraitforge.types import EXIT_CODES, EXIT_LOW_QUALITY_STRICT, STATUS_SEVERITY, Status

if TYPE_CHECKING:  # torch/diffusers are imported when `generate` runs, so other commands start fast
    from portraitforge.pipelines.portrait import PortraitImage, ProgressEvent
    from portraitforge.provenance.nsfw import NsfwGate
    from portraitforge.provenance.stamp import ProvenanceOptions

app = single()


def parse_size(text: str) -> tuple[int, int]:
    """`WxH` or a single number for a square."""
    value = text.strip().lower()
    try:
        if "x" in value:
            w, h = value.split("x", 1)
            width, height = int(w), int(h)
        else:
            width = height = int(value)
    except ValueError:
        raise ParameterError(f"--size {text}: expected WxH, e.g. 512x768") from None
    if width <= 0 or height <= 0:
        raise ParameterError(f"--size {text}: width and height must be positive")
    return width, height


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers/transformers log warnings and loading bars on stderr; the CLI promises one line per failure.
    Their verbosity is process state, so it is restored on exit (the library code never touches it)."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    saved = (dlog.get_verbosity(), tlog.get_verbosity(), dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled())
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        dlog.set_verbosity(saved[0])
        tlog.set_verbosity(saved[1])
        if saved[2]:
            dlog.enable_progress_bar()
        if saved[3]:
            tlog.enable_progress_bar()


class _Bar:
    """Step progress across all images (retries extend the total)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = progress_bar(desc="generate", unit="step", total=total, enabled=enabled, leave=False)
        self.seen: set[tuple[int, int]] = set()

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.image_index, event.attempt)
        if event.attempt > 0 and key not in self.seen:
            self.bar.total = (self.bar.total or 0) + event.total_steps
        self.seen.add(key)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _save(
    path: Path, image: Any, metadata: dict[str, Any], parameters: str, provenance: ProvenanceOptions, composite: bool
) -> tuple[str, dict[str, Any]]:
    """Watermarked, C2PA-signed when a signer is configured (portraitforge/provenance), written atomically."""
    from portraitforge.provenance.stamp import write_output

    stamped = write_output(
        path,
        image,
        "generate",
        provenance,
        metadata=metadata,
        text_chunks={"parameters": parameters},
        composite=composite,
    )
    return str(path), stamped.record


def _write_result(
    result: PortraitImage,
    out_dir: Path,
    refined: bool,
    provenance: ProvenanceOptions | None = None,
    gate: NsfwGate | None = None,
) -> dict[str, Any]:
    """Save one image's files; returns its report entry. The NSFW gate (when on) checks the portrait first."""
    provenance = provenance or ProvenanceOptions()
    image = result.image if gate is None or result.image is None else gate.check_output(result.image)
    record = result.to_dict()
    drafts: list[str | None] = []
    for attempt in result.attempts:
        accepted = attempt is result.attempts[-1] and result.ok
        if not refined and accepted:
            drafts.append(None)  # the accepted draft is the result itself, written below
            continue
        name = f"{result.index:03d}-{attempt.seed}-draft.png"
        draft_path, _ = _save(
            out_dir / "drafts" / name, attempt.draft, attempt.metadata, attempt.parameters_text, provenance, False
        )
        drafts.append(draft_path)
    output: str | None = None
    if image is not None:
        output, record["provenance"] = _save(
            out_dir / f"{result.index:03d}-{result.seed}.png",
            image,
            result.metadata,
            result.parameters_text,
            provenance,
            composite=refined,  # a refined portrait has a swapped-in face; an unrefined one is all model-made
        )
    for entry, path in zip(record["attempts"], drafts, strict=True):
        entry["draft"] = path if path is not None else output
    record["output"] = output
    if gate is not None and output is not None:
        record["provenance"]["nsfw"] = gate.report()
    return record


@app.command("generate")
def generate(
    prompt: Annotated[str, typer.Argument(help="Text prompt.", metavar="PROMPT", show_default=False)],
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Hub id, diffusers folder or .safetensors checkpoint.", metavar="SOURCE"),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.", metavar="DIR")],
    identity: Annotated[
        str | None,
        typer.Option("--identity", "-i", help="Identity image or stored identity name.", metavar="IDENTITY"),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of image 0 (image i uses seed+i).", metavar="N", show_default="random, recorded"),
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", min=1, help="Number of portraits.", metavar="N")] = 1,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Denoising steps.", metavar="N", show_default="per model family")
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance scale.", metavar="SCALE", show_default="per model family"),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(help="WxH, multiples of 8.", metavar="WxH", show_default="the model's native size"),
    ] = None,
    negative_prompt: Annotated[
        str | None, typer.Option("--negative-prompt", help="Negative prompt.", metavar="PROMPT")
    ] = None,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="LoRA as PATH.safetensors[:WEIGHT]; repeatable.", metavar="FILE[:WEIGHT]"),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="euler, euler_a, ddim, dpm++_2m_karras, unipc, lcm, ...", metavar="NAME", show_default="the model's"
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps.", metavar="DEVICE")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16.", metavar="DTYPE")
    ] = "auto",
    retries: Annotated[
        int, typer.Option(min=0, help="Extra seeds tried per image when the draft has no face.", metavar="N")
    ] = 3,
    require_face: Annotated[
        bool | None,
        typer.Option(
            "--require-face/--no-require-face", help="Retry faceless drafts.", show_default="on with --identity"
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Refine YAML preset (file or name in configs/).", metavar="PRESET"),
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option(
            help=preset_help("Refine strength: 0 keeps the draft, 1 is the full identity.", "strength"),
            metavar="0..1",
        ),
    ] = None,
    blend: Annotated[
        str | None,
        typer.Option(
            help=preset_help("multiband | poisson | poisson-mixed | feather.", "blend"),
            metavar="METHOD",
        ),
    ] = None,
    model_config: Annotated[
        str | None, typer.Option(help="Single file: local diffusers config folder.", metavar="DIR")
    ] = None,
    original_config: Annotated[
        str | None, typer.Option(help="Single file: original LDM yaml (see docs/gpu.md).", metavar="FILE")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="sd1 | sd2 | sdxl | sd2-turbo | sdxl-turbo.", metavar="FAMILY", show_default="detected"),
    ] = None,
    variant: Annotated[str | None, typer.Option(help="Hub weight variant, e.g. fp16.", metavar="NAME")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).", metavar="REV")] = None,
    offline: Annotated[bool, typer.Option(help="Never download (same as HF_HUB_OFFLINE=1).")] = False,
    cpu_offload: Annotated[bool, typer.Option(help="Model CPU offload (GPU memory saver; needs accelerate).")] = False,
    vae_tiling: Annotated[bool, typer.Option(help="Decode in tiles (large sizes on small GPUs).")] = False,
    vae_slicing: Annotated[bool, typer.Option(help="Decode one image at a time.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run report as JSON on stdout.")] = False,
    log: Annotated[
        Path | None,
        typer.Option(help="JSON-lines run log.", metavar="FILE", show_default="$PORTRAITFORGE_HOME/logs/runs.jsonl"),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit 7 when any result is LOW_QUALITY.")] = False,
    store_dir: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Identity store folder.", metavar="DIR", show_default="$PORTRAITFORGE_HOME/embeddings_cache"
        ),
    ] = None,
    require_consent: Annotated[bool, typer.Option(help="Refuse stored identities without a consent record.")] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Step progress bar (on a terminal).")
    ] = True,
    id_adapter: Annotated[
        str | None,
        typer.Option(
            "--id-adapter",
            help="Draft-time identity: 'faceid' (IP-Adapter FaceID from the model store) or a FaceID "
            ".safetensors/.bin file. Needs --identity with an ArcFace (buffalo_l) embedding.",
            metavar="faceid|FILE",
        ),
    ] = None,
    id_scale: Annotated[float, typer.Option(min=0.0, max=2.0, help="IP-Adapter FaceID scale.", metavar="0..2")] = 0.7,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep",
            help="Best-of-N: draw -n candidates, refine them, keep the K the grader ranks highest (needs "
            "--identity; default: keep all).",
            metavar="K",
            show_default=False,
        ),
    ] = None,
    watermark: Annotated[
        bool | None, typer.Option("--watermark/--no-watermark", help="Invisible watermark (default on).")
    ] = None,
    nsfw_check: Annotated[
        bool | None, typer.Option("--nsfw-check/--no-nsfw-check", help="NSFW gate on the portrait (extra: nsfw).")
    ] = None,
    nsfw_policy: Annotated[
        str | None,
        typer.Option(help=preset_help("NSFW gate policy: refuse | blur | flag.", "nsfw_policy"), metavar="POLICY"),
    ] = None,
) -> None:
    """Draw portraits from PROMPT with a Stable Diffusion model and refine them toward IDENTITY."""
    # Checks that need no model come first: a bad value or an unwritable folder fails in a second.
    width, height = parse_size(size) if size else (None, None)
    chosen = {
        "strength": strength,
        "blend": blend,
        "watermark": watermark,
        "nsfw_check": nsfw_check,
        "nsfw_policy": nsfw_policy,
    }
    overrides = {k: v for k, v in chosen.items() if v is not None}
    refine_cfg = RefineConfig.from_yaml(config, **overrides) if config else RefineConfig.validated(overrides)
    writable_dir(output, "output folder")
    log_path = log or default_log_path()
    writable_dir(log_path.parent, "run log folder")

    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.models.diffusion import LoadOptions, LoraSpec, load_text2image
    from portraitforge.pipelines.portrait import PortraitPipeline
    from portraitforge.pipelines.refine import RefinePipeline
    from portraitforge.pipelines.refine_files import append_log
    from portraitforge.provenance.nsfw import NsfwGate
    from portraitforge.provenance.stamp import ProvenanceOptions

    written: list[str] = []
    worst = Status.OK
    with quiet_libraries():
        try:
            loras = tuple(LoraSpec.parse(x) for x in lora or [])
            options = LoadOptions(
                device=device,
                dtype=dtype,
                local_files_only=offline,
                revision=revision,
                variant=variant,
                config=model_config,
                original_config=original_config,
                family=family,
                scheduler=scheduler,
                loras=loras,
                cpu_offload=cpu_offload,
                vae_tiling=vae_tiling,
                vae_slicing=vae_slicing,
            )
            t0 = time.perf_counter()
            loaded = load_text2image(model, options)
            load_ms = (time.perf_counter() - t0) * 1e3
            needs_refiner = identity is not None or bool(require_face)
            refiner = RefinePipeline.from_config(refine_cfg) if needs_refiner else None
            pipe = PortraitPipeline(model=loaded, refiner=refiner, retries=retries)
            params = pipe.parameters(
                prompt,
                negative_prompt,
                seed,
                num_images,
                steps,
                guidance,
                width,
                height,
                retries,
                identity,
                require_face,
            )
            if keep is not None and (identity is None or not 1 <= keep <= params.num_images):
                raise ParameterError(f"--keep {keep} needs --identity and must be within 1..--num-images")
            # The store audits the stored identity's use (purpose "generate") and enforces --require-consent.
            store = IdentityStore(store_dir, require_consent=require_consent, purpose="generate")
            resolved = (
                pipe.load_identity(identity, store=store, require_consent=require_consent)
                if identity is not None
                else None
            )
            if id_adapter is not None:
                from portraitforge.models.diffusion.ip_adapter import faceid_weights
                from portraitforge.models.store import ModelStore
                from portraitforge.pipelines.portrait import identity_arcface

                if resolved is None:
                    raise ParameterError("--id-adapter needs --identity")
                identity_arcface(resolved)  # no ArcFace embedding: exit 5 before any weights are read
                weights = faceid_weights(id_adapter, loaded.family, ModelStore.from_dir(refine_cfg.models_dir))
                pipe.load_id_adapter(weights, id_scale)
            bar = _Bar(params.num_images * params.steps, enabled=progress and stderr_is_tty())
            records: list[dict[str, Any]] = []
            candidates: list[dict[str, Any]] | None = None
            t1 = time.perf_counter()
            try:
                results: Iterator[PortraitImage] = pipe.iter_images(params, resolved, bar)
                if keep is not None:  # best-of-N: all candidates first, then only the kept ones are written
                    from portraitforge.pipelines.best_of import rank_candidates

                    kept, scores = rank_candidates(list(results), keep)
                    candidates = [x.to_dict() for x in scores]
                    results = iter(kept)
                    if len(kept) < keep:  # too few usable candidates: their failure sets the exit code
                        failed = [x.status for x in scores if not x.kept]
                        worst = max([worst, *failed], key=STATUS_SEVERITY.__getitem__)
                provenance = ProvenanceOptions.from_config(refine_cfg)
                gate = NsfwGate.from_config(refine_cfg)
                for result in results:
                    record = _write_result(result, output, resolved is not None, provenance, gate)
                    records.append(record)
                    written += sorted(
                        {a["draft"] for a in record["attempts"] if a["draft"]} | {record["output"]} - {None}
                    )
                    if STATUS_SEVERITY[result.status] > STATUS_SEVERITY[worst]:
                        worst = result.status
                    if not as_json:
                        line = f"{result.status.value}: {result.message}"
                        typer.echo(line + (f" -> {record['output']}" if record["output"] else ""), err=True)
            finally:
                bar.close()
            report = {
                "status": worst.value,
                "message": f"{sum(r['status'] in ('OK', 'LOW_QUALITY') for r in records)} of {num_images} image(s)",
                "model": loaded.describe() | {"loras": [x.to_dict() for x in loaded.loras]},
                "scheduler": loaded.scheduler,
                "parameters": params.to_dict(),
                "identity": resolved.name if resolved is not None else None,
                "id_adapter": pipe.id_adapter.to_dict() if pipe.id_adapter is not None else None,
                "refiner": refiner.params() if refiner is not None and resolved is not None else None,
                "output_dir": str(output),
                "images": records,
                "candidates": candidates,
                "warnings": loaded.warnings,
                "timings_ms": {"load": round(load_ms, 1), "generate": round((time.perf_counter() - t1) * 1e3, 1)},
            }
            append_log(log_path, {"command": "generate", **report})
            if as_json:
                typer.echo(json.dumps(report))
        except KeyboardInterrupt:
            # Files are written atomically, so the ones listed are whole and nothing else exists.
            raise RunInterruptedError(
                f"interrupted after writing {len(written)} complete file(s); no partial file was left"
            ) from None
    code = EXIT_CODES[worst]
    if worst is Status.LOW_QUALITY and strict:
        code = EXIT_LOW_QUALITY_STRICT
    if code:
        raise typer.Exit(code)
