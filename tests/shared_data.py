"""Where the real photos and model files shared between checkouts live, for tests and benchmarks.

Two folders, each from an environment variable with a default beside the checkout:

- `PORTRAITFORGE_FACES`: labelled photos (`identities.csv` and the photos); default `<repo>/../shared/faces`;
- `PORTRAITFORGE_SHARED_MODELS`: real model files (MobileFaceNet, the face parser, YuNet, the mesh);
  default `<repo>/../shared/models`.

The rule (tests/conftest.py applies it): a variable that is *set* promises the folder, so a missing folder
fails the whole session with one message (a CI machine that should have the data must not pass by skipping
every test that needs it); a variable that is *unset* falls back to the default, and when that is absent
the tests that need it skip with a reason naming the variable. Every test, and the benchmarks bench_pairs,
bench_identity and bench_swap_order, read the folders through `faces_folder()` / `models_folder()`, so a
checkout elsewhere (a git worktree, a CI runner) only has to set the variables. (The other benchmarks still
look at `../shared` directly.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES_VARIABLE = "PORTRAITFORGE_FACES"
MODELS_VARIABLE = "PORTRAITFORGE_SHARED_MODELS"


@dataclass(frozen=True)
class SharedFolder:
    """One shared folder: where it is, whether a variable named it, and the file that proves it is there."""

    variable: str
    path: Path
    explicit: bool  # the variable was set (a promise), not the default (a guess)
    marker: str  # a file inside that must exist ("" = the folder itself)

    @classmethod
    def from_env(cls, variable: str, default: Path, marker: str) -> SharedFolder:
        value = os.environ.get(variable, "")
        path = Path(value).expanduser() if value else default
        return cls(variable=variable, path=path.resolve(), explicit=bool(value), marker=marker)

    @property
    def available(self) -> bool:
        return (self.path / self.marker).is_file() if self.marker else self.path.is_dir()

    @property
    def missing_reason(self) -> str:
        what = f"{self.path / self.marker}" if self.marker else f"{self.path}"
        if self.explicit:
            return f"{self.variable}={self.path} is set but {what} does not exist"
        return f"{what} does not exist (set {self.variable} to the folder to run these tests)"

    def error(self) -> str | None:
        """The session-stopping message: only when the variable promised a folder that is not there."""
        return self.missing_reason if self.explicit and not self.available else None

    def get(self) -> Path | None:
        """The folder, or None when absent (for import-time decisions: skipif marks, fallbacks)."""
        return self.path if self.available else None

    def require(self) -> Path:
        """The folder, or skip the calling test (or fixture) with a reason that names the variable."""
        if not self.available:
            pytest.skip(self.missing_reason)
        return self.path


def faces_folder() -> SharedFolder:
    return SharedFolder.from_env(FACES_VARIABLE, REPO.parent / "shared" / "faces", "identities.csv")


def models_folder() -> SharedFolder:
    return SharedFolder.from_env(MODELS_VARIABLE, REPO.parent / "shared" / "models", "")


def shared_photos() -> dict[str, list[Path]] | None:
    """identity label -> photo paths from the labelled faces folder (None when it is absent)."""
    from portraitforge.evaluation import photos_per_person

    faces = faces_folder().get()
    return None if faces is None else photos_per_person(faces)
