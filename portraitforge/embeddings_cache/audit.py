"""Append-only audit log of identity use: one JSON line per use (time, identity, operation, output + sha256).

A use of a stored identity (`IdentityStore.get`) is one line whose `operation` and `purpose` are the purpose
(swap, generate, batch, ui, api), with the consent status at that moment; a refused use is a line too, with
`refused` saying why. Store changes (add, import, consent, ...) are lines without a purpose.
"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from portraitforge.atomic import file_sha256, fsync_dir
from portraitforge.errors import BadInputError

AUDIT_FILE = "audit.jsonl"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return None


@dataclass(frozen=True)
class AuditEntry:
    time: str
    identity: str
    operation: str  # e.g. "swap", "generate", "add", "export"
    output: str | None
    output_sha256: str | None
    identity_digest: str | None  # which stored version of the identity was used
    user: str | None
    pid: int
    purpose: str | None = None  # set on uses of a stored identity (IdentityStore.get)
    consent: str | None = None  # "ok", or why the consent does not cover this use ("no consent record", ...)
    refused: str | None = None  # why the use was refused (consent required but not given)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditLog:
    """`path` is the JSONL file; `lock_path` serialises appends from concurrent processes."""

    path: Path
    lock_timeout: float = 60.0

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def append(
        self,
        identity: str,
        operation: str,
        output_path: str | os.PathLike[str] | None = None,
        identity_digest: str | None = None,
        *,
        purpose: str | None = None,
        consent: str | None = None,
        refused: str | None = None,
    ) -> AuditEntry:
        output_sha: str | None = None
        if output_path is not None:
            out = Path(output_path)
            if not out.is_file():
                raise BadInputError(f"audit: output file {out} does not exist")
            output_sha = file_sha256(out)
        entry = AuditEntry(
            time=utc_now(),
            identity=identity,
            operation=operation,
            output=None if output_path is None else str(Path(output_path).resolve()),
            output_sha256=output_sha,
            identity_digest=identity_digest,
            user=current_user(),
            pid=os.getpid(),
            purpose=purpose,
            consent=consent,
            refused=refused,
        )
        line = json.dumps(entry.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=self.lock_timeout):
            # One write() of the whole line with O_APPEND, then fsync: a crash never leaves half a line
            # in the middle of the file, and the lock keeps concurrent writers in order.
            # Mode 0o666 minus the umask: the package's one file mode policy (see portraitforge.atomic).
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # a new log's directory entry is durable only once its folder is synced
                fsync_dir(self.path.parent)
        return entry

    def read(self) -> list[dict[str, Any]]:
        """All entries; a torn last line (power loss) is skipped rather than failing the whole log."""
        if not self.path.is_file():
            return []
        entries: list[dict[str, Any]] = []
        for raw in self.path.read_text("utf-8").splitlines():
            if not raw.strip():
                continue
            try:
                entries.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return entries
