"""The batch manifest: one SQLite row per item, beside the outputs.

Only the driver process writes it (workers and Ray actors return results to the driver), so there
is a single writer; WAL mode lets `batch status` read while a run is going. Every state change is
one short transaction. The kill-safety argument:

- an output file is written atomically (temp + fsync + rename + folder fsync) *before* its row is
  marked done in a committed transaction, so a done row always has a complete, durable file;
- a process killed at any point leaves rows 'pending', 'running' or 'done'. The next run turns
  'running' back into 'pending' and redoes those items; a file that exists for a not-done item is
  simply overwritten atomically (paths are a pure function of the item, so nothing is duplicated);
- `*.part` temp files left by a kill are removed at the start of a run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portraitforge.batch.spec import BatchItem
from portraitforge.pipelines.best_of import USABLE, rank_scores, score_from_faces
from portraitforge.types import Status, fields_dict

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    reason TEXT,
    identity TEXT NOT NULL,
    seed INTEGER,
    prompt TEXT,
    labels TEXT NOT NULL,
    params TEXT NOT NULL,
    output_path TEXT NOT NULL,
    output_sha256 TEXT,
    quality_status TEXT,
    identity_distance REAL,
    seam_score REAL,
    sharpness REAL,
    quality TEXT,
    seed_used INTEGER,
    attempts TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    started_at REAL,
    finished_at REAL,
    duration_ms REAL,
    timings TEXT,
    updated_at REAL NOT NULL,
    candidate_group TEXT,
    grader_similarity REAL,
    candidate_rank INTEGER,
    kept INTEGER
);
CREATE INDEX IF NOT EXISTS items_status ON items (status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

EXPORT_COLUMNS = (
    "id",
    "seq",
    "status",
    "reason",
    "identity",
    "seed",
    "prompt",
    "labels",
    "output_path",
    "output_sha256",
    "quality_status",
    "identity_distance",
    "seam_score",
    "sharpness",
    "seed_used",
    "attempts",
    "runs",
    "worker",
    "started_at",
    "finished_at",
    "duration_ms",
    "timings",
    "candidate_group",
    "grader_similarity",
    "candidate_rank",
    "kept",
    "quality",
    "params",
)
# Best-of-N columns, added to manifests written before they existed (NULL: no best-of-N, or not ranked yet).
_ADDED_COLUMNS = {
    "candidate_group": "TEXT",
    "grader_similarity": "REAL",
    "candidate_rank": "INTEGER",
    "kept": "INTEGER",
}
_JSON_COLUMNS = {"labels", "params", "quality", "attempts", "timings"}


@dataclass
class ItemOutcome:
    """What the driver records when an item finishes (the image bytes are written before this)."""

    status: str  # "done" or "failed"
    reason: str | None = None
    output_sha256: str | None = None
    quality_status: str | None = None
    identity_distance: float | None = None
    seam_score: float | None = None
    sharpness: float | None = None
    quality: dict[str, Any] | None = None
    seed_used: int | None = None
    attempts: list[dict[str, Any]] | None = None
    worker: str | None = None
    duration_ms: float | None = None
    timings: dict[str, float] | None = None


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    total: int
    stale: int  # rows of items no longer in the spec
    failures: dict[str, int]  # reason -> count
    quality: dict[str, int]  # OK / LOW_QUALITY / NO_FACE ... among done items
    mean_duration_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            **self.counts,
            **fields_dict(self, "stale", "failures", "quality", "mean_duration_ms"),
        }


class Manifest:
    """Thin, explicit wrapper over one SQLite connection (one per process, never shared)."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves with BEGIN IMMEDIATE.
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        if readonly:  # `batch status` / `export` next to a running batch: never take the write lock
            return
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is enough: a killed process never loses a commit in WAL mode, and a row lost to a
        # power cut only means that item is redone (its file was made durable before the row).
        self.conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                self.conn.execute(statement)
        have = {r["name"] for r in self.conn.execute("PRAGMA table_info(items)").fetchall()}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                self.conn.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    @classmethod
    def open_readonly(cls, path: str | Path) -> Manifest | None:
        return cls(path, readonly=True) if Path(path).is_file() else None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ planning / recovery

    def sync(self, items: Iterable[BatchItem]) -> int:
        """Insert new items as pending; refresh order and output paths of items not done yet.

        A done item whose output path changed (new naming template) is redone at the new path.
        Returns the number of new rows.
        """
        now = time.time()
        added = 0
        with self.transaction() as c:
            # Groups follow the current spec: rows of items no longer in it leave their group.
            c.execute("UPDATE items SET candidate_group = NULL WHERE candidate_group IS NOT NULL")
            for it in items:
                row = c.execute("SELECT status, output_path FROM items WHERE id = ?", (it.id,)).fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO items (id, seq, status, identity, seed, prompt, labels, params, output_path,"
                        " updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                        (
                            it.id,
                            it.seq,
                            it.identity.label,
                            it.seed,
                            it.prompt,
                            _dumps(it.labels),
                            _dumps(it.params),
                            it.output_relpath,
                            now,
                        ),
                    )
                    added += 1
                elif row["output_path"] != it.output_relpath:
                    status = "pending" if row["status"] == "done" else row["status"]
                    c.execute(
                        "UPDATE items SET seq = ?, output_path = ?, status = ?, updated_at = ? WHERE id = ?",
                        (it.seq, it.output_relpath, status, now, it.id),
                    )
                else:
                    c.execute("UPDATE items SET seq = ?, identity = ? WHERE id = ?", (it.seq, it.identity.label, it.id))
                c.execute("UPDATE items SET candidate_group = ? WHERE id = ?", (it.group, it.id))
        return added

    # ------------------------------------------------------------------------------ best-of-N

    def rank_groups(self, keep: int | None) -> None:
        """Rank every candidate group from its recorded scores (after sync/recover: idempotent, so a run killed
        between an item's row and its group's ranking is simply ranked again)."""
        with self.transaction() as c:
            c.execute("UPDATE items SET candidate_rank = NULL, kept = NULL WHERE candidate_group IS NULL")
            groups = [
                r[0] for r in c.execute("SELECT DISTINCT candidate_group FROM items WHERE candidate_group IS NOT NULL")
            ]
            for group in groups:
                _rank_group(c, group, keep)

    def recover(self, output_dir: Path, verify_hashes: bool = False) -> dict[str, int]:
        """Undo what a killed run left behind. Call with the run lock held."""
        from portraitforge.atomic import file_sha256

        stats = {"rolled_back": 0, "missing_outputs": 0, "corrupt_outputs": 0, "temp_files": 0}
        now = time.time()
        with self.transaction() as c:
            stats["rolled_back"] = c.execute(
                "UPDATE items SET status = 'pending', updated_at = ? WHERE status = 'running'", (now,)
            ).rowcount
            for row in c.execute("SELECT id, output_path, output_sha256 FROM items WHERE status = 'done'").fetchall():
                path = output_dir / row["output_path"]
                if not path.is_file():
                    stats["missing_outputs"] += 1
                elif verify_hashes and file_sha256(path) != row["output_sha256"]:
                    stats["corrupt_outputs"] += 1
                else:
                    continue
                c.execute("UPDATE items SET status = 'pending', updated_at = ? WHERE id = ?", (now, row["id"]))
        if output_dir.is_dir():
            for tmp in output_dir.rglob(".*.part"):
                tmp.unlink(missing_ok=True)
                stats["temp_files"] += 1
        return stats

    def reset_failed(self, ids: Iterable[str] | None = None) -> int:
        with self.transaction() as c:
            if ids is None:
                return c.execute(
                    "UPDATE items SET status = 'pending', reason = NULL, updated_at = ? WHERE status = 'failed'",
                    (time.time(),),
                ).rowcount
            n = 0
            for iid in ids:
                n += c.execute(
                    "UPDATE items SET status = 'pending', reason = NULL, updated_at = ? "
                    "WHERE status = 'failed' AND id = ?",
                    (time.time(), iid),
                ).rowcount
            return n

    # ------------------------------------------------------------------------ state changes

    def pending_ids(self, ids: Iterable[str]) -> list[str]:
        wanted = set(ids)
        rows = self.conn.execute("SELECT id FROM items WHERE status = 'pending' ORDER BY seq").fetchall()
        return [r["id"] for r in rows if r["id"] in wanted]

    def mark_running(self, item_id: str, worker: str) -> None:
        with self.transaction() as c:
            now = time.time()
            c.execute(
                "UPDATE items SET status = 'running', worker = ?, started_at = ?, runs = runs + 1, updated_at = ? "
                "WHERE id = ?",
                (worker, now, now, item_id),
            )

    def mark_pending(self, item_ids: Iterable[str]) -> None:
        with self.transaction() as c:
            for iid in item_ids:
                c.execute(
                    "UPDATE items SET status = 'pending', updated_at = ? WHERE id = ? AND status = 'running'",
                    (time.time(), iid),
                )

    def finish(self, item_id: str, outcome: ItemOutcome, keep: int | None = None) -> None:
        """Record a finished item. For 'done' the caller has already made the output file durable.
        With best-of-N (`keep`), the item's group is ranked in the same transaction once all of it is finished."""
        now = time.time()
        faces = (outcome.quality or {}).get("faces", [])
        grader = score_from_faces(0, None, Status.OK, faces).grader_similarity
        with self.transaction() as c:
            c.execute(
                "UPDATE items SET status = ?, reason = ?, output_sha256 = ?, quality_status = ?, identity_distance = ?,"
                " seam_score = ?, sharpness = ?, quality = ?, seed_used = ?, attempts = ?, worker = ?,"
                " finished_at = ?, duration_ms = ?, timings = ?, updated_at = ? WHERE id = ?",
                (
                    outcome.status,
                    outcome.reason,
                    outcome.output_sha256,
                    outcome.quality_status,
                    outcome.identity_distance,
                    outcome.seam_score,
                    outcome.sharpness,
                    _dumps(outcome.quality),
                    outcome.seed_used,
                    _dumps(outcome.attempts),
                    outcome.worker,
                    now,
                    outcome.duration_ms,
                    _dumps(outcome.timings),
                    now,
                    item_id,
                ),
            )
            c.execute("UPDATE items SET grader_similarity = ? WHERE id = ?", (grader, item_id))
            group = c.execute("SELECT candidate_group FROM items WHERE id = ?", (item_id,)).fetchone()
            if group is not None and group[0] is not None:
                _rank_group(c, group[0], keep)

    # ------------------------------------------------------------------------------ reading

    def rows(self, ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        rows = [self._row(r) for r in self.conn.execute("SELECT * FROM items ORDER BY seq, id").fetchall()]
        if ids is None:
            return rows
        wanted = set(ids)
        return [r for r in rows if r["id"] in wanted]

    def row(self, item_id: str) -> dict[str, Any] | None:
        r = self.conn.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if r is None else self._row(r)

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        out = dict(r)
        for key in _JSON_COLUMNS:
            if out.get(key) is not None:
                out[key] = json.loads(out[key])
        return out

    def summary(self, ids: Iterable[str]) -> Summary:
        wanted = set(ids)
        counts = dict.fromkeys(STATUSES, 0)
        failures: dict[str, int] = {}
        quality: dict[str, int] = {}
        durations: list[float] = []
        stale = 0
        for r in self.conn.execute("SELECT id, status, reason, quality_status, duration_ms FROM items").fetchall():
            if r["id"] not in wanted:
                stale += 1
                continue
            counts[r["status"]] += 1
            if r["status"] == "failed":
                key = (r["reason"] or "unknown").split(":")[0]
                failures[key] = failures.get(key, 0) + 1
            if r["status"] == "done":
                q = r["quality_status"] or "OK"
                quality[q] = quality.get(q, 0) + 1
                if r["duration_ms"] is not None:
                    durations.append(float(r["duration_ms"]))
        counts_total = sum(counts.values())
        mean = round(sum(durations) / len(durations), 1) if durations else None
        return Summary(counts, counts_total, stale, failures, quality, mean)


def _candidate_status(status: str, quality_status: str | None, reason: str | None) -> Status:
    """What the ranking sees: a failed item is never usable, whatever its quality said."""
    known = {s.value for s in Status}
    value = quality_status or (reason or "").split(":")[0]
    if status == "done":
        return Status(quality_status) if quality_status in known else Status.OK
    found = Status(value) if value in known else Status.INTERNAL
    return Status.INTERNAL if found in USABLE else found


def _rank_group(c: sqlite3.Connection, group: str, keep: int | None) -> None:
    """Rank one group by `pipelines/best_of.py`'s order (usable first, grader similarity, distance, seam) once all
    of its candidates are finished; an unfinished group (or no `keep`) has no rank yet."""
    rows = c.execute(
        "SELECT id, seed, status, reason, quality_status, quality FROM items WHERE candidate_group = ?"
        " ORDER BY seq, id",
        (group,),
    ).fetchall()
    if keep is None or any(r["status"] not in ("done", "failed") for r in rows):
        c.execute("UPDATE items SET candidate_rank = NULL, kept = NULL WHERE candidate_group = ?", (group,))
        return
    scores = [
        score_from_faces(
            i,
            r["seed"],
            _candidate_status(r["status"], r["quality_status"], r["reason"]),
            json.loads(r["quality"]).get("faces", []) if r["quality"] else [],
        )
        for i, r in enumerate(rows)
    ]
    for r, score in zip(rows, rank_scores(scores, keep), strict=True):
        c.execute("UPDATE items SET candidate_rank = ?, kept = ? WHERE id = ?", (score.rank, int(score.kept), r["id"]))


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)
