"""What an identity is on disk: its name rules and the pydantic schema of `identity.json`.

`IdentityRecord` (with `PhotoRecord`, `SpaceRecord`, `ConsentRecord`, ...) is validated strictly (unknown keys
are refused) and sealed by a sha256 over its canonical JSON (`seal`, `metadata_digest`).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, field_validator

from portraitforge.errors import BadInputError, ParameterError

FORMAT = "portraitforge-identity"
FORMAT_VERSION = 1
STORE_DIRNAME = "embeddings_cache"
METADATA_FILE = "identity.json"
STORED_CROP_SIZE = 320  # per-photo aligned crops kept so embeddings can be recomputed for a new model
MAX_NAME_CHARS = 64
MAX_NAME_BYTES = 200
MAX_IMPORT_BYTES = 512 * 1024 * 1024

_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
    | {"COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
)
_NAME_PUNCTUATION = frozenset(" _-.'()+")

# What a stored identity is used for: each use is audited with one of these, and a consent scope lists them.
Purpose = Literal["swap", "generate", "batch", "ui", "api"]
PURPOSES: tuple[Purpose, ...] = ("swap", "generate", "batch", "ui", "api")
_LATER_CONSENT_FIELDS = ("consented_by", "scope", "until")

Metric = Literal["euclidean", "cosine"]


class IdentityCorruptedError(BadInputError):
    """A stored or imported identity failed its integrity checks."""


# --------------------------------------------------------------------------------------------- names


def validate_name(name: str) -> str:
    """Identity names become directory names, so anything that could escape or confuse a filesystem
    (separators, `..`, control characters, reserved device names, trailing dots) is refused."""
    if not isinstance(name, str) or not name:
        raise BadInputError("identity name is empty")
    shown = name.encode("unicode_escape").decode("ascii")[:80]
    if name != name.strip():
        raise BadInputError(f"identity name '{shown}' has leading or trailing whitespace")
    if unicodedata.normalize("NFC", name) != name:
        raise BadInputError(f"identity name '{shown}' is not in Unicode NFC form")
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise BadInputError(f"identity name '{shown[:20]}...' is too long (at most {MAX_NAME_CHARS} characters)")
    if name in (".", "..") or ".." in name:
        raise BadInputError(f"identity name '{shown}' must not contain '..'")
    for ch in name:
        if unicodedata.category(ch).startswith("C"):
            raise BadInputError(f"identity name '{shown}' contains a control or invisible character")
        if not (ch.isalnum() or ch in _NAME_PUNCTUATION):
            raise BadInputError(
                f"identity name '{shown}' contains '{ch}': use letters, digits, spaces and "
                f"{''.join(sorted(_NAME_PUNCTUATION))}"
            )
    if name[0] in ".-" or name[-1] == ".":
        raise BadInputError(f"identity name '{shown}' must not start with '.' or '-' or end with '.'")
    stem = name.split(".")[0].rstrip(" ").upper()
    if stem in _WINDOWS_RESERVED:
        raise BadInputError(f"identity name '{shown}' is a reserved device name on Windows")
    return name


# --------------------------------------------------------------------------------------------- metadata


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRef(_Strict):
    name: str
    sha256: str | None  # None when the analyzer cannot point at its model file


class ConsentRecord(_Strict):
    """Who consented, to what and until when. `recorded_by` is the account that recorded it."""

    text: str
    recorded_at: str
    recorded_by: str | None = None
    # The three fields below are newer than format 1's first records: absent ones load as None, and an unset
    # one is left out of the metadata digest (see `metadata_digest`), so older sealed records still verify.
    consented_by: str | None = None  # the person who gave consent (`--consent-by`)
    scope: list[Purpose] | None = None  # the uses consented to; None = every use
    until: str | None = None  # last day (YYYY-MM-DD, UTC) on which the consent holds; None = no expiry

    @field_validator("until")
    @classmethod
    def _iso_day(cls, value: str | None) -> str | None:
        if value is not None:
            parse_day(value)
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: list[Purpose] | None) -> list[Purpose] | None:
        if value is not None and not value:
            raise ValueError("consent scope is empty (omit it to allow every use)")
        return None if value is None else sorted(set(value), key=PURPOSES.index)

    def expired(self, today: date | None = None) -> bool:
        return self.until is not None and parse_day(self.until) < (today or datetime.now(UTC).date())

    def problem(self, purpose: Purpose, today: date | None = None) -> str | None:
        """Why this consent does not cover `purpose` today (None when it does)."""
        if self.expired(today):
            return f"consent expired on {self.until}"
        if self.scope is not None and purpose not in self.scope:
            return f"consent does not cover '{purpose}' (scope: {', '.join(self.scope)})"
        return None


def parse_day(text: str) -> date:
    """A YYYY-MM-DD day (consent expiry); ValueError with a one-line message otherwise."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text}' is not a date of the form YYYY-MM-DD") from None


def parse_scope(text: str) -> list[Purpose]:
    """`"swap,generate"` -> ["swap", "generate"]; ParameterError (a usage error) names an unknown purpose."""
    items = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in items if p not in PURPOSES]
    if unknown or not items:
        raise ParameterError(f"consent scope '{text}': use a comma-separated list of {', '.join(PURPOSES)}")
    return [cast(Purpose, p) for p in items]


def make_consent(
    text: str | None,
    by: str | None = None,
    scope: str | Sequence[str] | None = None,
    until: str | None = None,
    recorded_by: str | None = None,
    recorded_at: str = "",
) -> ConsentRecord | None:
    """A consent record from CLI/API values (None without `text`); bad values are one-line ParameterErrors."""
    if not text:
        if by is not None or scope is not None or until is not None:
            raise ParameterError("--consent-by, --consent-scope and --consent-until need --consent TEXT")
        return None
    purposes = parse_scope(scope) if isinstance(scope, str) else None if scope is None else parse_scope(",".join(scope))
    if until is not None:
        try:
            parse_day(until)
        except ValueError as exc:
            raise ParameterError(f"consent expiry: {exc}") from None
    return ConsentRecord(
        text=text,
        recorded_at=recorded_at,
        recorded_by=recorded_by,
        consented_by=by or None,
        scope=purposes,
        until=until,
    )


def consent_status(consent: ConsentRecord | None, purpose: Purpose, today: date | None = None) -> str | None:
    """None when `consent` covers `purpose` today, else the reason (also noted in the audit line)."""
    if consent is None:
        return "no consent record"
    return consent.problem(purpose, today)


class PhotoRecord(_Strict):
    index: int
    file: str  # base name only: paths would leak the machine layout into exports
    sha256: str  # of the source file's bytes (of the pixels for in-memory arrays)
    width: int
    height: int
    faces_found: int
    box: list[float]
    quality: float  # 0..1, see `photo_quality`
    quality_detail: dict[str, float]
    kept: bool
    reasons: list[str]  # why it was rejected (empty when kept)
    notes: list[str] = []
    distances: dict[str, float | None]  # distance to the final centroid, per space
    spaces: list[str]  # spaces in which this photo has an embedding


class SpaceRecord(_Strict):
    dim: int
    metric: Metric
    threshold: float
    model: ModelRef
    analyzer: dict[str, Any]
    kept: list[int]
    rejected: list[int]
    method: str


class ReferenceRecord(_Strict):
    photo: int
    size: int
    margin: float


class IdentityRecord(_Strict):
    format: Literal["portraitforge-identity"] = "portraitforge-identity"
    format_version: Literal[1] = 1
    name: str
    created: str
    updated: str
    note: str | None = None
    consent: ConsentRecord | None = None
    photos: list[PhotoRecord]
    spaces: dict[str, SpaceRecord]
    reference: ReferenceRecord
    tensors_file: str | None = None  # only inside a store; exports carry the tensors themselves
    tensors_digest: str
    metadata_sha256: str = ""

    @property
    def kept(self) -> list[int]:
        return [p.index for p in self.photos if p.kept]

    @property
    def rejected(self) -> list[PhotoRecord]:
        return [p for p in self.photos if not p.kept]


def metadata_digest(record: IdentityRecord) -> str:
    payload = record.model_dump(mode="json", exclude={"metadata_sha256"})
    consent = payload.get("consent")
    if isinstance(consent, dict):  # unset newer consent fields stay out, so older records keep their digest
        for key in _LATER_CONSENT_FIELDS:
            if consent.get(key) is None:
                consent.pop(key, None)
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(record: IdentityRecord) -> IdentityRecord:
    return record.model_copy(update={"metadata_sha256": metadata_digest(record)})
