"""Batch-tab handlers over `portraitforge.batch`: the same spec files, runner and manifest as `portraitforge batch`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from portraitforge.config import CONFIGS_DIR
from portraitforge.errors import BadInputError
from portraitforge.types import Status
from portraitforge.ui.swap import captured
from portraitforge.ui.words import status_html, ui_words

# A batch spec has these top-level keys; refine presets (default.yaml, ...) do not.
_SPEC_KEYS = frozenset({"identities", "output"})


@dataclass
class BatchResult:
    status: str
    message: str
    details: str = ""  # markdown: axes, examples, counts
    sheets: list[tuple[str, str]] = field(default_factory=list)  # (contact sheet file, identity) for a gallery
    index: Path | None = None  # review/index.html

    @property
    def html(self) -> str:
        return status_html(self.status, self.message)


def spec_choices(folder: Path | Traversable = CONFIGS_DIR) -> list[tuple[str, str]]:
    """Batch specs in the configs folder (the installed presets) as (file name, path) choices, refine presets
    left out."""
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith((".yaml", ".yml")):
            continue
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and set(data) >= _SPEC_KEYS:
            found.append((path.name, str(path)))
    return found


def _spec_path(chosen: str | None, uploaded: Any) -> Path:
    """An uploaded spec wins over the chosen one (its relative paths resolve against the upload's folder)."""
    if uploaded:
        return Path(uploaded)
    if chosen:
        return Path(chosen)
    raise BadInputError("choose a batch spec from the configs folder or upload one")


def _sheets(index: Path | None) -> list[tuple[str, str]]:
    if index is None or not index.parent.is_dir():
        return []
    return [(str(p), p.stem) for p in sorted(index.parent.glob("*.jpg"))]


def plan(chosen: str | None, uploaded: Any = None) -> BatchResult:
    """Validate the spec and say how many items it expands to, without running anything."""
    out: dict[str, Any] = {}
    with captured(out):
        from portraitforge.batch.manifest import Manifest
        from portraitforge.batch.spec import expand, load_spec, plan_summary

        loaded = load_spec(_spec_path(chosen, uploaded))
        items = expand(loaded)
        summary = plan_summary(loaded, items, examples=5)
        axes = " x ".join(f"{v} {k}" for k, v in summary["axes"].items())
        lines = [f"**{summary['items']} items** ({axes}), mode {summary['mode']}", ""]
        for ex in summary["examples"]:
            what = f"'{ex['prompt']}' seed {ex['seed']}" if "prompt" in ex else f"draft {ex['draft']}"
            lines.append(f"- {ex['identity']}: {what} -> `{ex['output']}`")
        manifest = Manifest.open_readonly(loaded.manifest_path)
        done = ""
        if manifest is not None:
            with manifest:
                counts = manifest.summary(it.id for it in items).counts
            done = f"; {counts['done']} already done"
        index = loaded.output_dir / "review" / "index.html"
        return BatchResult(
            Status.OK.value,
            f"{loaded.spec.name}: {summary['items']} items{done}",
            "\n".join(lines),
            _sheets(index if index.is_file() else None),
            index if index.is_file() else None,
        )
    return BatchResult(out.get("status", Status.INTERNAL.value), ui_words(out.get("message", "unknown failure")))


def run(
    chosen: str | None,
    uploaded: Any = None,
    limit: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> BatchResult:
    """Run (or resume) the batch in this process, one item at a time, then write the contact sheets and index."""
    out: dict[str, Any] = {}
    with captured(out):
        from portraitforge.batch.runner import RunOptions, run_batch
        from portraitforge.batch.spec import expand, load_spec

        loaded = load_spec(_spec_path(chosen, uploaded))
        total = len(expand(loaded))
        finished = [0]

        def on_result(_item: Any, _result: Any) -> None:
            finished[0] += 1
            if progress is not None:
                progress(finished[0], total)

        # progress=False: the CLI's tqdm bar would go to the server's terminal; the UI shows its own.
        result = run_batch(loaded, RunOptions(workers=1, progress=False, limit=limit), on_result=on_result)
        s = result.summary
        pending = s.counts["pending"] + s.counts["running"]
        message = f"{s.total} items: {s.counts['done']} done, {s.counts['failed']} failed, {pending} pending"
        details = [f"{result.processed} processed in {result.elapsed_s:.1f} s"]
        if s.failures:
            details.append("failures: " + ", ".join(f"{k} ({v})" for k, v in sorted(s.failures.items())))
        if s.quality:
            details.append("quality of done items: " + ", ".join(f"{k} {v}" for k, v in sorted(s.quality.items())))
        status = Status.OK.value if not s.counts["failed"] else Status.LOW_QUALITY.value
        return BatchResult(status, message, "  \n".join(details), _sheets(result.review_index), result.review_index)
    return BatchResult(out.get("status", Status.INTERNAL.value), ui_words(out.get("message", "unknown failure")))
