"""Run a batch: sync the manifest, hand pending items to workers, write results as they come back.

The driver loop is the same for every backend (in-process, worker processes, Ray actors): an
`Executor` takes items while it has free slots and returns `ItemResult`s. The driver alone writes
output files (atomically, durably) and then the manifest row, in that order.

Ctrl-C: the first one stops handing out items and lets running items finish; a second one (or
SIGTERM) stops at once and rolls running items back to pending. Either way the run ends with
`interrupted=True` and the CLI exits 130; running the same command again resumes.

Tests crash the driver at an exact point through `batch/faults.py` (`PORTRAITFORGE_FAULT`, read once here at
run start and passed down).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

from filelock import FileLock, Timeout

from portraitforge.atomic import atomic_write_bytes
from portraitforge.batch.faults import FaultPlan
from portraitforge.batch.manifest import ItemOutcome, Manifest, Summary
from portraitforge.batch.spec import BatchItem, LoadedSpec, expand
from portraitforge.batch.worker import BatchWorker, ItemResult, WorkerConfig, WorkerStartupError
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.progress import progress_bar
from portraitforge.types import Status

LOCK_NAME = ".manifest.lock"
DRAFTS_DIR = "drafts"


class BatchBusyError(BadInputError):
    """Another `batch run` holds the lock on this output folder."""


@dataclass
class RunOptions:
    backend: Literal["local", "ray"] = "local"
    workers: int = 1
    retry_failed: bool = False
    address: str | None = None  # Ray cluster address; None starts a local Ray instance
    progress: bool = True
    verify: bool = False  # re-hash done outputs before resuming
    review: bool = True  # contact sheets + HTML index at the end
    torch_threads: int | None = None  # per worker; default: cores / workers
    limit: int | None = None  # process at most this many items (benchmarks, smoke runs)


@dataclass
class RunResult:
    summary: Summary
    processed: int
    interrupted: bool
    elapsed_s: float
    recovered: dict[str, int] = field(default_factory=dict)
    review_index: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary.to_dict(),
            "processed": self.processed,
            "interrupted": self.interrupted,
            "elapsed_s": round(self.elapsed_s, 3),
            "recovered": self.recovered,
            "review_index": str(self.review_index) if self.review_index else None,
        }


class Executor(Protocol):
    """A pool of loaded workers. `submit` only when `free_slots() > 0`."""

    def free_slots(self) -> int: ...

    def submit(self, item: BatchItem) -> str:
        """Start `item`; returns the name of the worker that got it."""
        ...

    def collect(self, timeout: float) -> list[ItemResult]: ...

    def close(self, force: bool = False) -> None: ...


# ------------------------------------------------------------------------------------- executors


class InlineExecutor:
    """`--workers 1`: the worker lives in the driver process (no IPC, no second copy of the models)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.worker = BatchWorker.load(config, name="local-0")
        self.queued: deque[BatchItem] = deque()

    def free_slots(self) -> int:
        return 0 if self.queued else 1

    def submit(self, item: BatchItem) -> str:
        self.queued.append(item)
        return self.worker.name

    def collect(self, timeout: float) -> list[ItemResult]:
        return [self.worker.process(self.queued.popleft())] if self.queued else []

    def close(self, force: bool = False) -> None:
        self.queued.clear()


def _worker_main(index: int, config: WorkerConfig, tasks: Connection, results: Connection, parent_pid: int) -> None:
    """Entry point of a worker process: load once, then one item at a time until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    _die_with_parent()
    try:
        worker = BatchWorker.load(config, name=f"local-{index}")
    except PortraitForgeError as exc:
        results.send(("fatal", exc.status.value, exc.message))
        return
    except Exception as exc:
        results.send(("fatal", Status.INTERNAL.value, f"worker {index} failed to start: {exc}"))
        return
    while True:
        if not tasks.poll(1.0):
            if os.getppid() != parent_pid:  # orphaned (driver killed): nothing will read our results
                return
            continue
        try:
            item = tasks.recv()
        except EOFError:  # the driver is gone
            return
        if item is None:
            return
        results.send(("result", worker.process(item)))


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the driver dies, so a killed run leaves no busy orphans behind."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


class ProcessExecutor:
    """`--workers N`: N spawned processes, each loading models once; one item in flight per worker.

    Each worker has its own pipes (no queue shared between processes), so a worker killed mid-write
    cannot leave a lock held that would block the others.
    """

    def __init__(self, config: WorkerConfig, workers: int) -> None:
        # spawn, not fork: torch and OpenMP thread pools do not survive fork safely.
        ctx = mp.get_context("spawn")
        self.busy: dict[int, BatchItem] = {}
        self.dead: set[int] = set()
        self.tasks: list[Connection] = []
        self.results: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(workers):
            task_r, task_w = ctx.Pipe(duplex=False)
            result_r, result_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker_main,
                args=(i, config, task_r, result_w, os.getpid()),
                name=f"portraitforge-batch-{i}",
                daemon=True,
            )
            proc.start()
            task_r.close()  # the child holds its own copies now
            result_w.close()
            self.tasks.append(task_w)
            self.results.append(result_r)
            self.procs.append(proc)

    def free_slots(self) -> int:
        return len(self.procs) - len(self.busy) - len(self.dead)

    def submit(self, item: BatchItem) -> str:
        index = next(i for i in range(len(self.procs)) if i not in self.busy and i not in self.dead)
        self.busy[index] = item
        with contextlib.suppress(OSError):  # died before we could hand it over: collect() reports it
            self.tasks[index].send(item)
        return f"local-{index}"

    def collect(self, timeout: float) -> list[ItemResult]:
        live = {self.results[i]: i for i in range(len(self.procs)) if i not in self.dead}
        out: list[ItemResult] = []
        for ready in mp_connection.wait(list(live), timeout=timeout):
            conn: Connection = ready  # type: ignore[assignment]  # wait() is typed loosely
            index = live[conn]
            try:
                message: tuple[Any, ...] = conn.recv()
            except (EOFError, OSError):
                out += self._lost(index)
                continue
            if message[0] == "fatal":
                raise WorkerStartupError(Status(message[1]), message[2])
            self.busy.pop(index, None)
            out.append(message[1])
        for index in [i for i in self.busy if not self.procs[i].is_alive()]:
            out += self._lost(index)
        return out

    def _lost(self, index: int) -> list[ItemResult]:
        """A worker that died (OOM killer, segfault, kill) hands its item back instead of hanging the run."""
        self.dead.add(index)
        item = self.busy.pop(index, None)
        if len(self.dead) == len(self.procs):
            raise WorkerStartupError(Status.INTERNAL, "all worker processes died")
        if item is None:
            return []
        proc = self.procs[index]
        proc.join(timeout=1)
        reason = f"INTERNAL: worker process died (exit code {proc.exitcode})"
        return [ItemResult(item.id, "failed", reason=reason, retryable=True)]

    def close(self, force: bool = False) -> None:
        for i, p in enumerate(self.procs):
            if p.is_alive() and not force:
                with contextlib.suppress(OSError):
                    self.tasks[i].send(None)
        for p in self.procs:
            if force:
                p.kill()
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        for conn in [*self.tasks, *self.results]:
            conn.close()


# ------------------------------------------------------------------------------------- the driver


class _StopFlag:
    """SIGINT once: finish running items. Twice (or SIGTERM): raise KeyboardInterrupt right away."""

    def __init__(self) -> None:
        self.requested = False

    def handle_int(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def handle_term(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        raise KeyboardInterrupt


def _install_handlers(flag: _StopFlag) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, flag.handle_int)
        signal.signal(signal.SIGTERM, flag.handle_term)


@contextlib.contextmanager
def _signals(flag: _StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_int = signal.getsignal(signal.SIGINT)
    old_term = signal.getsignal(signal.SIGTERM)
    _install_handlers(flag)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def acquire_lock(output_dir: Path) -> FileLock:
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(output_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BatchBusyError(f"{output_dir}: another 'batch run' is using this output folder") from None
    return lock


def make_executor(config: WorkerConfig, options: RunOptions) -> Executor:
    if options.backend == "ray":
        from portraitforge.batch.ray_backend import RayExecutor

        return RayExecutor(config, workers=options.workers, address=options.address)
    if options.workers <= 1:
        return InlineExecutor(config)
    return ProcessExecutor(config, options.workers)


def default_torch_threads(options: RunOptions) -> int | None:
    """Threads per worker so that workers do not oversubscribe the cores (2 threads x 2 workers on 2
    cores runs several times slower than 1 x 2). In-process runs leave the caller's setting alone."""
    if options.backend == "ray":
        return 1  # each actor reserves one CPU
    if options.workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // options.workers)


def run_batch(
    loaded: LoadedSpec,
    options: RunOptions | None = None,
    on_result: Callable[[BatchItem, ItemResult], None] | None = None,
) -> RunResult:
    """Resume (or start) the batch described by `loaded`. Safe to kill at any instant."""
    options = options or RunOptions()
    faults = FaultPlan.from_env()  # before the lock: a bad value changes nothing on disk
    started = time.perf_counter()
    items = expand(loaded)
    by_id = {it.id: it for it in items}
    output_dir = loaded.output_dir
    lock = acquire_lock(output_dir)
    manifest = Manifest(loaded.manifest_path)
    try:
        manifest.sync(items)
        recovered = manifest.recover(output_dir, verify_hashes=options.verify)
        if options.retry_failed:
            recovered["retried_failed"] = manifest.reset_failed(by_id)
        manifest.rank_groups(loaded.spec.keep)  # best-of-N ranks follow what recover/retry left finished
        todo = deque(manifest.pending_ids(by_id))
        if options.limit is not None:
            todo = deque(list(todo)[: options.limit])
        processed, interrupted = 0, False
        if todo:
            threads = options.torch_threads or default_torch_threads(options)
            config = WorkerConfig.from_spec(loaded, torch_threads=threads)
            processed, interrupted = _drive(
                manifest, output_dir, by_id, todo, config, options, on_result, faults, loaded.spec.keep
            )
        review_index = None
        if options.review and not interrupted:
            from portraitforge.batch.review import write_review

            review_index = write_review(loaded, manifest, items)
        return RunResult(
            summary=manifest.summary(by_id),
            processed=processed,
            interrupted=interrupted,
            elapsed_s=time.perf_counter() - started,
            recovered=recovered,
            review_index=review_index,
        )
    finally:
        manifest.close()
        lock.release()


def _drive(
    manifest: Manifest,
    output_dir: Path,
    by_id: dict[str, BatchItem],
    todo: deque[str],
    config: WorkerConfig,
    options: RunOptions,
    on_result: Callable[[BatchItem, ItemResult], None] | None,
    faults: FaultPlan,
    keep: int | None = None,
) -> tuple[int, bool]:
    flag = _StopFlag()
    in_flight: set[str] = set()
    processed = 0
    written = 0  # output files written by this run (the fault hook counts these)
    interrupted = False
    executor: Executor | None = None
    with _signals(flag), _progress(len(todo), options.progress) as advance:
        try:
            executor = make_executor(config, options)
            _install_handlers(flag)  # a local Ray head installs its own SIGTERM handler: ours come first
            requeued: set[str] = set()
            while (todo and not flag.requested) or in_flight:
                while todo and not flag.requested and executor.free_slots() > 0:
                    iid = todo.popleft()
                    worker_name = executor.submit(by_id[iid])
                    manifest.mark_running(iid, worker_name)
                    in_flight.add(iid)
                for result in executor.collect(timeout=0.2):
                    in_flight.discard(result.item_id)
                    if result.retryable:
                        # A dead worker or actor is not the item's fault: back to pending, and retried
                        # once in this run (a second crash leaves it pending for the next run).
                        manifest.mark_pending([result.item_id])
                        if result.item_id not in requeued and not flag.requested:
                            requeued.add(result.item_id)
                            todo.append(result.item_id)
                        continue
                    if result.status == "done" and result.data is not None:
                        written += 1
                    after_write = partial(faults.after_write, written)
                    _record(manifest, output_dir, by_id[result.item_id], result, after_write, keep)
                    processed += 1
                    advance(result)
                    if on_result is not None:
                        on_result(by_id[result.item_id], result)
            interrupted = flag.requested
            executor.close()
        except KeyboardInterrupt:
            interrupted = True
            if executor is not None:
                executor.close(force=True)
        except BaseException:
            if executor is not None:
                executor.close(force=True)
            manifest.mark_pending(in_flight)
            raise
        finally:
            if interrupted:
                manifest.mark_pending(in_flight)
    return processed, interrupted


def _record(
    manifest: Manifest,
    output_dir: Path,
    item: BatchItem,
    result: ItemResult,
    after_write: Callable[[], None],
    keep: int | None = None,
) -> None:
    """File first (atomic + fsync), then the row: a done row always points at a complete file."""
    if result.status == "done" and result.data is not None:
        atomic_write_bytes(output_dir / item.output_relpath, result.data)
        if result.draft_data is not None:
            atomic_write_bytes(output_dir / DRAFTS_DIR / item.output_relpath, result.draft_data)
        after_write()  # the fault hook's window: files durable, row not yet committed
    manifest.finish(
        item.id,
        ItemOutcome(
            status=result.status,
            reason=result.reason,
            output_sha256=result.sha256 if result.status == "done" else None,
            quality_status=result.quality_status,
            identity_distance=result.identity_distance,
            seam_score=result.seam_score,
            sharpness=result.sharpness,
            quality=result.quality,
            seed_used=result.seed_used,
            attempts=result.attempts,
            worker=result.worker,
            duration_ms=round(result.duration_ms, 2),
            timings={k: round(v, 2) for k, v in result.timings_ms.items()},
        ),
        keep=keep,
    )


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[ItemResult], None]]:
    """The package's tqdm bar on stderr (rate, ETA, failures so far); a no-op when disabled."""
    failed = 0
    with progress_bar(desc="batch", unit="item", total=total, enabled=enabled and total > 0) as bar:

        def advance(result: ItemResult) -> None:
            nonlocal failed
            failed += result.status == "failed"
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)

        yield advance
