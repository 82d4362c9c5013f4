"""Identities: built from photos, cached as embeddings plus a reference face crop."""

from portraitforge.embeddings_cache.identity import identity_from_image

__all__ = ["identity_from_image"]
