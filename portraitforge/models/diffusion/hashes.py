"""Model hashes: a file's full sha256 (cached per path/size/mtime) and a diffusers folder's fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path

from portraitforge.atomic import atomic_write_bytes, file_sha256
from portraitforge.paths import home_dir

WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf"})
_SAMPLE_BYTES = 1 << 20


def cached_file_sha256(path: Path, use_cache: bool = True) -> str:
    """`atomic.file_sha256` (the full sha256, what A1111 calls AutoV2 and Civitai lists), cached per
    path/size/mtime under the home dir, since a 7 GB SDXL file takes seconds to hash."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = home_dir() / "cache" / "sha256.json"
    cache: dict[str, str] = {}
    if use_cache:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        if isinstance(cache, dict) and isinstance(cache.get(key), str):
            return cache[key]
    value = file_sha256(path)
    if use_cache:
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = value
        with contextlib.suppress(OSError):  # the hash cache is an optimisation; a read-only home must not break loading
            atomic_write_bytes(cache_path, json.dumps(cache, sort_keys=True).encode())
    return value


def folder_fingerprint(folder: Path) -> str:
    """sha256 over model_index.json, every config file's bytes and, per weight file, its name, size and a content
    digest. The content digest is the exact sha256 when the file is a Hugging Face cache blob (blobs are named by
    their sha256), else the sha256 of its first and last MiB. Hashing every byte of a multi-GB folder at each load
    would cost seconds to minutes; names and sizes alone cannot tell two fine-tunes of one architecture apart,
    and the sampled bytes (tensor data right after the safetensors header) do."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts))
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() in WEIGHT_SUFFIXES:
            digest.update(f"{rel}|{path.stat().st_size}|{_content_digest(path)}\n".encode())
        elif path.suffix.lower() in (".json", ".txt", ".yaml"):
            digest.update(f"{rel}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _content_digest(path: Path) -> str:
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    size = path.stat().st_size
    sample = hashlib.sha256()
    with path.open("rb") as handle:
        sample.update(handle.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            handle.seek(size - _SAMPLE_BYTES)
            sample.update(handle.read(_SAMPLE_BYTES))
    return "sample:" + sample.hexdigest()
