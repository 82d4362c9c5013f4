"""The one place the web UI reads a stored identity and records its use.

The identity store is moving consent and audit into the store layer (`IdentityStore.get(..., purpose=...)`);
when it lands, only these two functions change.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Identity

UI_PURPOSE = "swap (web UI)"


def stored_identity(
    store: IdentityStore, name: str, analyzer: FaceAnalyzer, graders: Sequence[FaceAnalyzer] = ()
) -> Identity:
    """A stored identity for `analyzer`; refused without a consent record when the store requires consent."""
    return store.get(name, analyzer, require_consent=store.require_consent, graders=graders)


def record_use(
    store: IdentityStore, identity: Identity, output: str | os.PathLike[str] | None, purpose: str = UI_PURPOSE
) -> None:
    """One audit line per stored identity used for an output (uploaded photos have no store record)."""
    if identity.cache_hit:
        store.audit(identity, purpose, output)
