"""portraitforge: prompt -> draft -> detect -> upscale -> swap to a cached identity -> blend."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names resolve on first use (PEP 562), so a CLI command that never refines (`identity add`,
# `models list`, `--version`) does not pay for the refine stack's imports (scipy alone is ~0.3 s).
_LAZY_EXPORTS = {
    "RefineConfig": "portraitforge.config",
    "IdentityStore": "portraitforge.embeddings_cache.store",
    "RefinePipeline": "portraitforge.pipelines.refine",
    "Face": "portraitforge.types",
    "Identity": "portraitforge.types",
    "RefineReport": "portraitforge.types",
    "RefineResult": "portraitforge.types",
    "Status": "portraitforge.types",
}

if TYPE_CHECKING:
    from portraitforge.config import RefineConfig
    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.pipelines.refine import RefinePipeline
    from portraitforge.types import Face, Identity, RefineReport, RefineResult, Status


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'portraitforge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_EXPORTS])


__all__ = [
    "Face",
    "Identity",
    "IdentityStore",
    "RefineConfig",
    "RefinePipeline",
    "RefineReport",
    "RefineResult",
    "Status",
    "__version__",
]
