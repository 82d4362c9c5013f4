"""Turn an `--identity` argument into an `Identity`: an image path, or the name of a stored identity.

Also parses per-face mappings (`"0=alice,1=bob"`) and assigns identities to faces by nearest embedding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from portraitforge.embeddings_cache.identity import identity_from_image
from portraitforge.embeddings_cache.records import Purpose, validate_name
from portraitforge.embeddings_cache.store import IdentityStore, OnStale
from portraitforge.errors import BadInputError
from portraitforge.imageio import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.types import FloatArray, Identity


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or Path(spec).suffix.lower() in IMAGE_SUFFIXES


def resolve_identity(
    spec: str,
    analyzer: FaceAnalyzer,
    store_dir: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    store: IdentityStore | None = None,
    require_consent: bool = False,
    on_stale: OnStale = "error",
    graders: Sequence[FaceAnalyzer] = (),
    purpose: Purpose | None = None,
) -> Identity:
    """`spec` is an image file path (built now, `cache_hit=False`), or the name of an identity in the store
    (loaded with no embedding, `cache_hit=True`). An existing file wins over a stored name.

    `require_consent=True` (or a store created with it) refuses image-path identities (they carry no consent
    record) and stored identities whose consent is missing, expired or does not cover `purpose`. A stored
    identity is loaded through `IdentityStore.get`, which writes the audit line of this use (`purpose`
    defaults to the store's). `store` overrides `store_dir` (pass one to reuse its model hash memo).
    """
    spec = str(spec)
    if not spec:
        raise BadInputError("identity is empty: give an image path or a stored identity name")
    path = Path(spec)
    if path.exists():
        if require_consent or (store is not None and store.require_consent):
            raise BadInputError(
                f"identity image {path} has no consent record and consent is required "
                f"(register it with: portraitforge identity add NAME {path} --consent TEXT)"
            )
        loaded = load_image(path, max_pixels=max_pixels)
        return identity_from_image(analyzer, loaded.rgb, name=path.stem, source=str(path))
    store = store if store is not None else IdentityStore(store_dir)
    try:
        validate_name(spec)
        is_name = True
    except BadInputError:
        is_name = False
    if is_name and store.exists(spec):
        return store.get(
            spec,
            analyzer,
            purpose=purpose,
            require_consent=require_consent or store.require_consent,
            on_stale=on_stale,
            graders=graders,
        )
    known = store.names()
    shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
    if _looks_like_path(spec):
        raise BadInputError(f"{spec}: file not found, and no stored identity has that name (known: {shown})")
    raise BadInputError(f"unknown identity '{spec}' (known: {shown}; store: {store.root})")


def is_face_mapping(spec: str) -> bool:
    """`0=alice,1=bob` rather than a single name or path (identity names cannot contain '=')."""
    return "=" in spec and not Path(spec).exists()


def parse_face_mapping(spec: str) -> dict[int, str]:
    """`"0=alice,1=bob"` -> {0: "alice", 1: "bob"}. Face numbers follow the detector's reading order.

    Values are identity names or image paths (resolved later by `resolve_identity`).
    """
    mapping: dict[int, str] = {}
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in parts):
        raise BadInputError(f"face mapping '{spec}' has an empty entry (expected e.g. 0=alice,1=bob)")
    for part in parts:
        index_text, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise BadInputError(f"face mapping entry '{part}' must look like INDEX=IDENTITY (e.g. 0=alice)")
        if not index_text.isdigit() or not index_text.isascii():
            raise BadInputError(f"face mapping entry '{part}': face index '{index_text}' is not a number >= 0")
        index = int(index_text)
        if index in mapping:
            raise BadInputError(f"face mapping '{spec}' names face {index} twice")
        if "=" in value:
            raise BadInputError(f"face mapping entry '{part}' has more than one '='")
        mapping[index] = value
    return mapping


def resolve_face_mapping(
    spec: str | dict[int, str],
    analyzer: FaceAnalyzer,
    store_dir: str | Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    store: IdentityStore | None = None,
    require_consent: bool = False,
    on_stale: OnStale = "error",
    graders: Sequence[FaceAnalyzer] = (),
    purpose: Purpose | None = None,
) -> dict[int, Identity]:
    """Parse (if needed) and resolve every identity of a per-face mapping; a repeated name is loaded once."""
    mapping = parse_face_mapping(spec) if isinstance(spec, str) else dict(spec)
    store = store if store is not None else IdentityStore(store_dir)
    loaded: dict[str, Identity] = {}
    out: dict[int, Identity] = {}
    for index, value in sorted(mapping.items()):
        if value not in loaded:
            loaded[value] = resolve_identity(
                value,
                analyzer,
                max_pixels=max_pixels,
                store=store,
                require_consent=require_consent,
                on_stale=on_stale,
                graders=graders,
                purpose=purpose,
            )
        out[index] = loaded[value]
    return out


def assign_by_nearest(
    face_embeddings: Sequence[FloatArray],
    identities: Sequence[Identity],
    space: str,
    distance: Callable[[FloatArray, FloatArray], float],
    max_distance: float | None = None,
) -> dict[int, Identity]:
    """Give each face the identity whose embedding is nearest, one identity per face (Hungarian assignment on
    the distance matrix, so two faces never both take the same identity). Faces farther than `max_distance`
    from their match are left out; with more faces than identities the extra faces stay unmapped."""
    if not face_embeddings or not identities:
        return {}
    from scipy.optimize import linear_sum_assignment  # ~0.6 s to import; only multi-identity runs need it

    cost = np.array([[distance(f, ident.embedding(space)) for ident in identities] for f in face_embeddings])
    rows, cols = linear_sum_assignment(cost)
    return {
        int(r): identities[int(c)]
        for r, c in zip(rows, cols, strict=True)
        if max_distance is None or cost[r, c] <= max_distance
    }
