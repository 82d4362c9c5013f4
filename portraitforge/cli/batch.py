"""`portraitforge batch plan|run|status|export|review SPEC`: resumable, kill-safe asset batches."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from portraitforge.cli.common import emit_json, group, writable_dir
from portraitforge.errors import BadInputError, ParameterError, RunInterruptedError

app = group("batch", "Batches of prompts x identities x seeds (or a drafts folder): plan, run, resume, review.")
SPEC_ARGUMENT = typer.Argument(..., help="Batch spec (YAML).", metavar="SPEC", show_default=False)


class Backend(StrEnum):
    local = "local"
    ray = "ray"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


@app.command("plan")
def plan(
    spec: Path = SPEC_ARGUMENT,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="How many expanded items to show.", metavar="N")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON on stdout.")] = False,
) -> None:
    """Validate SPEC and show how many items it expands to, without running anything."""
    from portraitforge.batch.spec import expand, load_spec, plan_summary

    loaded = load_spec(spec)
    summary = plan_summary(loaded, expand(loaded), examples)
    if as_json:
        emit_json(summary)
        return
    axes = " x ".join(f"{v} {k}" for k, v in summary["axes"].items())
    typer.echo(f"{summary['items']} items ({axes}), mode {summary['mode']}")
    typer.echo(f"outputs and manifest: {summary['output_dir']}")
    for ex in summary["examples"]:
        what = f"'{ex['prompt']}' seed {ex['seed']}" if "prompt" in ex else f"draft {ex['draft']}"
        typer.echo(f"  {ex['id'][:12]}  {ex['identity']}: {what} -> {ex['output']}")


@app.command("run")
def run(
    spec: Path = SPEC_ARGUMENT,
    workers: Annotated[
        int,
        typer.Option("--workers", "-w", min=0, help="Worker processes / Ray actors (0: Ray decides).", metavar="N"),
    ] = 1,
    backend: Annotated[
        Backend, typer.Option("--backend", help="Local processes or a Ray cluster.", metavar="local|ray")
    ] = Backend.local,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster address.", metavar="ADDRESS", show_default="start one locally"),
    ] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also re-run items that failed before.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Re-hash finished outputs before resuming.")] = False,
    review: Annotated[bool, typer.Option("--review/--no-review", help="Write contact sheets and index.html.")] = True,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar with ETA on stderr (on a terminal).")
    ] = True,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Torch threads per worker.", metavar="N", show_default="torch's choice"),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Process at most N pending items.", metavar="N", show_default="all"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")] = False,
) -> None:
    """Run SPEC, resuming where a previous (possibly killed) run stopped."""
    from portraitforge.batch.runner import RunOptions, run_batch
    from portraitforge.batch.spec import load_spec

    if backend is Backend.local and workers == 0:
        raise ParameterError("--workers 0 only applies to --backend ray")
    if address and backend is not Backend.ray:
        raise ParameterError("--address needs --backend ray")
    loaded = load_spec(spec)
    writable_dir(loaded.output_dir, "batch output folder")
    options = RunOptions(
        backend=backend.value,
        workers=workers,
        retry_failed=retry_failed,
        address=address,
        progress=progress and sys.stderr.isatty(),
        verify=verify,
        review=review,
        torch_threads=threads,
        limit=limit,
    )
    result = run_batch(loaded, options)
    s = result.summary
    if as_json:
        emit_json(result.to_dict())
    else:
        typer.echo(
            f"{s.total} items: {s.counts['done']} done, {s.counts['failed']} failed, "
            f"{s.counts['pending'] + s.counts['running']} pending ({result.processed} processed in "
            f"{result.elapsed_s:.1f} s)"
        )
        if result.review_index:
            typer.echo(f"review: {result.review_index}")
    if result.interrupted:
        left = s.counts["pending"] + s.counts["running"]
        raise RunInterruptedError(
            f"interrupted: {s.counts['done']} of {s.total} done, {left} pending; run the same command to resume"
        )


@app.command("status")
def status(
    spec: Path = SPEC_ARGUMENT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Summarise the manifest of SPEC: counts per status, failure reasons, quality flags."""
    from portraitforge.batch.manifest import Manifest
    from portraitforge.batch.spec import expand, load_spec

    loaded = load_spec(spec)
    items = expand(loaded)
    manifest = Manifest.open_readonly(loaded.manifest_path)
    if manifest is None:
        payload: dict[str, Any] = {"total": len(items), "pending": len(items), "started": False}
        if as_json:
            emit_json(payload)
        else:
            typer.echo(f"{len(items)} items, not started (no manifest at {loaded.manifest_path})")
        return
    with manifest:
        s = manifest.summary(it.id for it in items)
    payload = {"manifest": str(loaded.manifest_path), "started": True, **s.to_dict()}
    if as_json:
        emit_json(payload)
        return
    counts = ", ".join(f"{k} {v}" for k, v in s.counts.items())
    typer.echo(f"{s.total} items: {counts}")
    if s.quality:
        typer.echo("quality of done items: " + ", ".join(f"{k} {v}" for k, v in sorted(s.quality.items())))
    if s.failures:
        typer.echo("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(s.failures.items())))
    if s.mean_duration_ms is not None:
        typer.echo(f"mean item time: {s.mean_duration_ms / 1000:.2f} s")
    if s.stale:
        typer.echo(f"{s.stale} rows belong to items no longer in the spec (kept, not counted)")
    typer.echo(f"manifest: {loaded.manifest_path}")


@app.command("export")
def export(
    spec: Path = SPEC_ARGUMENT,
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="Row format.", metavar="csv|jsonl")
    ] = ExportFormat.csv,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write.", metavar="FILE", show_default="stdout")
    ] = None,
) -> None:
    """Export the manifest rows of SPEC (one per item, in plan order)."""
    from portraitforge.atomic import atomic_write_bytes
    from portraitforge.batch.manifest import Manifest
    from portraitforge.batch.spec import expand, load_spec

    loaded = load_spec(spec)
    items = expand(loaded)
    if output is not None:
        writable_dir(output.parent, "export folder")
    manifest = Manifest.open_readonly(loaded.manifest_path)
    if manifest is None:
        raise BadInputError(f"{loaded.manifest_path}: no manifest yet; run 'portraitforge batch run' first")
    with manifest:
        rows = manifest.rows(it.id for it in items)
    text = export_rows(rows, fmt.value)
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(output, text.encode("utf-8"))


@app.command("review")
def review(spec: Path = SPEC_ARGUMENT) -> None:
    """(Re)write the contact sheets and the HTML index of SPEC's outputs."""
    from portraitforge.batch.manifest import Manifest
    from portraitforge.batch.review import write_review
    from portraitforge.batch.spec import expand, load_spec

    loaded = load_spec(spec)
    manifest = Manifest.open_readonly(loaded.manifest_path)
    if manifest is None:
        raise BadInputError(f"{loaded.manifest_path}: no manifest yet; run 'portraitforge batch run' first")
    with manifest:
        typer.echo(str(write_review(loaded, manifest, expand(loaded))))


def export_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    from portraitforge.batch.manifest import EXPORT_COLUMNS

    if fmt == "jsonl":
        return "".join(json.dumps({k: r.get(k) for k in EXPORT_COLUMNS}, sort_keys=False) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                "" if r.get(k) is None else json.dumps(r[k]) if isinstance(r.get(k), dict | list) else r[k]
                for k in EXPORT_COLUMNS
            ]
        )
    return buffer.getvalue()
