"""Batch asset runs: a YAML spec of prompts x identities x seeds (or a drafts folder), a SQLite manifest
beside the outputs, kill-safe resume, local worker processes or Ray actors, and review sheets."""

from portraitforge.batch.manifest import Manifest
from portraitforge.batch.runner import RunOptions, RunResult, run_batch
from portraitforge.batch.spec import BatchItem, BatchSpec, LoadedSpec, SpecError, expand, load_spec

__all__ = [
    "BatchItem",
    "BatchSpec",
    "LoadedSpec",
    "Manifest",
    "RunOptions",
    "RunResult",
    "SpecError",
    "expand",
    "load_spec",
    "run_batch",
]
