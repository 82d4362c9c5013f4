"""Where portraitforge keeps models, identities and logs. Resolved per call, never cached globally."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """`override` > $PORTRAITFORGE_HOME > $XDG_DATA_HOME/portraitforge > ~/.local/share/portraitforge."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("PORTRAITFORGE_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "portraitforge"


def default_log_path() -> Path:
    return home_dir() / "logs" / "runs.jsonl"
