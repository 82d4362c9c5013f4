"""Compatibility names for callers written before the stage registries (`pipelines/stage_registry.py`).

`cli_identity` still imports these two; new code uses `stage_registry.identity_analyzers` (or the registries)
and this module goes once no caller is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portraitforge.pipelines.stage_registry import GRADERS, mesh_analyzer

if TYPE_CHECKING:
    from portraitforge.config import RefineConfig
    from portraitforge.models.store import ModelStore
    from portraitforge.refiners.base import FaceAnalyzer
    from portraitforge.refiners.grade import IdentityGrader


def load_mesh_analyzer(cfg: RefineConfig, store: ModelStore, descriptor: FaceAnalyzer) -> FaceAnalyzer:
    from portraitforge.refiners.detect import DlibFaceAnalyzer

    assert isinstance(descriptor, DlibFaceAnalyzer)
    return mesh_analyzer(cfg, store, descriptor)


def load_grader(cfg: RefineConfig, store: ModelStore, analyzer: FaceAnalyzer) -> IdentityGrader | None:
    return GRADERS.resolve(cfg, store).from_config(cfg, store, analyzer)
