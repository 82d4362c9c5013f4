"""`portraitforge batch plan|run|status|export|review SPEC`: resumable, kill-safe asset batches.

Every failure prints one line to stderr and exits with the documented code (README "Exit codes").
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from portraitforge.errors import PortraitForgeError
from portraitforge.types import EXIT_CODES, Status

T = TypeVar("T")


class Backend(StrEnum):
    local = "local"
    ray = "ray"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(" ".join(message.split()), err=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body: known errors -> one line + exit code; nothing ever prints a traceback."""
    try:
        return fn()
    except typer.Exit:
        raise
    except PortraitForgeError as exc:
        _fail(f"error: {exc.message}", EXIT_CODES.get(exc.status, 1))
    except BrokenPipeError:  # `| head` closed the pipe: click exits quietly (1)
        raise
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_CODES[Status.INTERRUPTED])
    except Exception as exc:
        _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_CODES[Status.INTERNAL])


def _emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


def register(app: typer.Typer) -> None:
    batch = typer.Typer(
        help="Batches of prompts x identities x seeds (or a drafts folder): plan, run, resume, review.",
        no_args_is_help=True,
    )
    app.add_typer(batch, name="batch")

    @batch.command("plan")
    def plan(
        spec: Annotated[Path, typer.Argument(help="batch spec (YAML)")],
        examples: Annotated[int, typer.Option("--examples", min=0, help="how many expanded items to show")] = 3,
        as_json: Annotated[bool, typer.Option("--json", help="print the plan as JSON on stdout")] = False,
    ) -> None:
        """Validate SPEC and show how many items it expands to, without running anything."""

        def body() -> None:
            from portraitforge.batch.spec import expand, load_spec, plan_summary

            loaded = load_spec(spec)
            summary = plan_summary(loaded, expand(loaded), examples)
            if as_json:
                _emit_json(summary)
                return
            axes = " x ".join(f"{v} {k}" for k, v in summary["axes"].items())
            typer.echo(f"{summary['items']} items ({axes}), mode {summary['mode']}")
            typer.echo(f"outputs and manifest: {summary['output_dir']}")
            for ex in summary["examples"]:
                what = f"'{ex['prompt']}' seed {ex['seed']}" if "prompt" in ex else f"draft {ex['draft']}"
                typer.echo(f"  {ex['id'][:12]}  {ex['identity']}: {what} -> {ex['output']}")

        _guard(body)

    @batch.command("run")
    def run(
        spec: Annotated[Path, typer.Argument(help="batch spec (YAML)")],
        workers: Annotated[
            int, typer.Option("--workers", "-w", min=0, help="worker processes / Ray actors (0: Ray decides)")
        ] = 1,
        backend: Annotated[Backend, typer.Option("--backend", help="local processes or a Ray cluster")] = Backend.local,
        address: Annotated[
            str | None, typer.Option("--address", help="Ray cluster address (default: start locally)")
        ] = None,
        retry_failed: Annotated[
            bool, typer.Option("--retry-failed", help="also re-run items that failed before")
        ] = False,
        verify: Annotated[bool, typer.Option("--verify", help="re-hash finished outputs before resuming")] = False,
        review: Annotated[
            bool, typer.Option("--review/--no-review", help="write contact sheets and index.html")
        ] = True,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="progress bar with ETA on stderr")
        ] = True,
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads per worker")] = None,
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="process at most N pending items")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the run summary as JSON on stdout")] = False,
    ) -> None:
        """Run SPEC, resuming where a previous (possibly killed) run stopped."""

        def body() -> None:
            from portraitforge.batch.runner import RunOptions, run_batch
            from portraitforge.batch.spec import load_spec

            if backend is Backend.local and workers == 0:
                _fail("error: --workers 0 only applies to --backend ray", 2)
            if address and backend is not Backend.ray:
                _fail("error: --address needs --backend ray", 2)
            loaded = load_spec(spec)
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
                _emit_json(result.to_dict())
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
                _fail(
                    f"interrupted: {s.counts['done']} of {s.total} done, {left} pending; "
                    "run the same command to resume",
                    EXIT_CODES[Status.INTERRUPTED],
                )

        _guard(body)

    @batch.command("status")
    def status(
        spec: Annotated[Path, typer.Argument(help="batch spec (YAML)")],
        as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout")] = False,
    ) -> None:
        """Summarise the manifest of SPEC: counts per status, failure reasons, quality flags."""

        def body() -> None:
            from portraitforge.batch.manifest import Manifest
            from portraitforge.batch.spec import expand, load_spec

            loaded = load_spec(spec)
            items = expand(loaded)
            manifest = Manifest.open_readonly(loaded.manifest_path)
            if manifest is None:
                payload: dict[str, Any] = {"total": len(items), "pending": len(items), "started": False}
                if as_json:
                    _emit_json(payload)
                else:
                    typer.echo(f"{len(items)} items, not started (no manifest at {loaded.manifest_path})")
                return
            with manifest:
                s = manifest.summary(it.id for it in items)
            payload = {"manifest": str(loaded.manifest_path), "started": True, **s.to_dict()}
            if as_json:
                _emit_json(payload)
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

        _guard(body)

    @batch.command("export")
    def export(
        spec: Annotated[Path, typer.Argument(help="batch spec (YAML)")],
        fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="csv or jsonl")] = ExportFormat.csv,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
    ) -> None:
        """Export the manifest rows of SPEC (one per item, in plan order)."""

        def body() -> None:
            from portraitforge.batch.manifest import Manifest
            from portraitforge.batch.spec import expand, load_spec
            from portraitforge.errors import BadInputError
            from portraitforge.imageio import write_bytes_atomic

            loaded = load_spec(spec)
            items = expand(loaded)
            manifest = Manifest.open_readonly(loaded.manifest_path)
            if manifest is None:
                raise BadInputError(f"{loaded.manifest_path}: no manifest yet; run 'portraitforge batch run' first")
            with manifest:
                rows = manifest.rows(it.id for it in items)
            text = export_rows(rows, fmt.value)
            if output is None:
                sys.stdout.write(text)
            else:
                write_bytes_atomic(output, text.encode("utf-8"))

        _guard(body)

    @batch.command("review")
    def review(spec: Annotated[Path, typer.Argument(help="batch spec (YAML)")]) -> None:
        """(Re)write the contact sheets and the HTML index of SPEC's outputs."""

        def body() -> None:
            from portraitforge.batch.manifest import Manifest
            from portraitforge.batch.review import write_review
            from portraitforge.batch.spec import expand, load_spec
            from portraitforge.errors import BadInputError

            loaded = load_spec(spec)
            manifest = Manifest.open_readonly(loaded.manifest_path)
            if manifest is None:
                raise BadInputError(f"{loaded.manifest_path}: no manifest yet; run 'portraitforge batch run' first")
            with manifest:
                typer.echo(str(write_review(loaded, manifest, expand(loaded))))

        _guard(body)


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
