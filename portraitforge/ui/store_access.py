"""The one place the web UI reads a stored identity.

`IdentityStore.get` enforces consent and writes the audit line itself (purpose "ui"), so a UI use is audited
exactly like a CLI, batch or API use; the output it produced is recorded in the runs log.
"""

from __future__ import annotations

from collections.abc import Sequence

from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Identity


def stored_identity(
    store: IdentityStore, name: str, analyzer: FaceAnalyzer, graders: Sequence[FaceAnalyzer] = ()
) -> Identity:
    """A stored identity for `analyzer`: one audit line; refused when consent is required and missing."""
    return store.get(name, analyzer, purpose="ui", graders=graders)
