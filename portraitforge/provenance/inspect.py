"""What an image says about itself: C2PA manifest state, our watermark, our metadata, and the local log entries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portraitforge.errors import BadInputError
from portraitforge.imageio import load_image, read_metadata
from portraitforge.provenance.credentials import CredentialsReport, verify
from portraitforge.provenance.watermark import decode

EXIT_TAMPERED = 8  # README "Exit codes": a C2PA manifest failed validation


@dataclass
class InspectReport:
    path: str
    credentials: CredentialsReport
    watermark: dict[str, Any] | None
    metadata: dict[str, Any] | None
    log_entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output_id(self) -> str | None:
        for source in (
            (self.watermark or {}).get("output_id"),
            ((self.metadata or {}).get("provenance") or {}).get("output_id"),
            (self.credentials.own_assertion() or {}).get("output_id"),
        ):
            if source:
                return str(source)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "c2pa": self.credentials.to_dict(),
            "watermark": self.watermark,
            "output_id": self.output_id,
            "metadata": self.metadata,
            "log_entries": self.log_entries,
        }

    def summary(self) -> str:
        c2pa = self.credentials
        parts = [f"c2pa {c2pa.state}" + (f" ({c2pa.detail})" if c2pa.state != "missing" else "")]
        if self.watermark:
            wm = self.watermark
            parts.append(f"watermark {wm['tool']} {wm['operation']} id {wm['output_id']}")
        else:
            parts.append("no watermark")
        parts.append("metadata yes" if self.metadata else "no metadata")
        if self.log_entries:
            first = self.log_entries[0]
            parts.append(f"log: {first['log']} {first.get('time', '')}".rstrip())
        elif self.output_id:
            parts.append("no local log entry")
        return f"{self.path}: " + "; ".join(parts)


def _contains_id(value: Any, output_id: str) -> bool:
    if isinstance(value, dict):
        return value.get("output_id") == output_id or any(_contains_id(v, output_id) for v in value.values())
    if isinstance(value, list):
        return any(_contains_id(v, output_id) for v in value)
    return False


def find_log_entries(output_id: str | None, sha256: str, logs: list[Path]) -> list[dict[str, Any]]:
    """Run-log lines that name `output_id` and audit-log lines whose output has this file's sha256."""
    found: list[dict[str, Any]] = []
    for log in logs:
        if not log.is_file():
            continue
        with open(log, encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                if not ((output_id and output_id in raw) or sha256 in raw):
                    continue  # cheap text filter before parsing: run logs grow large
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if (output_id and _contains_id(record, output_id)) or record.get("output_sha256") == sha256:
                    summary = {k: record.get(k) for k in ("time", "command", "operation", "identity", "status")}
                    found.append({"log": str(log), **{k: v for k, v in summary.items() if v is not None}})
    return found


def inspect_image(path: Path, logs: list[Path]) -> InspectReport:
    from portraitforge.atomic import file_sha256

    loaded = load_image(path)  # validates the file: bad input is one line and exit 3
    credentials = verify(path)
    reading = decode(loaded.rgb)
    watermark = None
    if reading is not None:
        watermark = {**reading.payload.to_dict(), "confidence": reading.confidence, "scale": reading.scale}
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError):
        metadata = None
    if not isinstance(metadata, dict):
        metadata = None
    report = InspectReport(str(path), credentials, watermark, metadata)
    try:
        report.log_entries = find_log_entries(report.output_id, file_sha256(path), logs)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror})") from None
    return report
