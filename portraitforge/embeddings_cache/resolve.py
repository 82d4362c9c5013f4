"""Turn an `--identity` argument into an `Identity`: an image path today, a stored name via the store."""

from __future__ import annotations

from pathlib import Path

from portraitforge.embeddings_cache.identity import identity_from_image
from portraitforge.imageio import DEFAULT_MAX_PIXELS, load_image
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import Identity


def resolve_identity(
    spec: str, analyzer: FaceAnalyzer, store_dir: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Identity:
    """`spec` is an image file path, or the name of an identity in the store (see `IdentityStore`)."""
    path = Path(spec)
    loaded = load_image(path, max_pixels=max_pixels)
    return identity_from_image(analyzer, loaded.rgb, name=path.stem, source=str(path))
