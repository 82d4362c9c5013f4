"""Identities: built from photos, cached as embeddings plus a reference face crop."""

from portraitforge.embeddings_cache.identity import identity_from_image
from portraitforge.embeddings_cache.store import IdentityStore

__all__ = ["IdentityStore", "identity_from_image"]
