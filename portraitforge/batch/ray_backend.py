"""`--backend ray`: the same driver loop, with one `BatchWorker` per Ray actor.

- Each actor loads its pipeline once (`BatchActor.__init__`) and then serves items one at a time.
- With GPUs in the cluster, each actor asks for one (`num_gpus=1`), so Ray places one pipeline per
  GPU and sets CUDA_VISIBLE_DEVICES for it; without GPUs an actor takes one CPU.
- Actors return encoded bytes; the driver writes files and the manifest, so the results land in the
  driver's output folder and the manifest semantics (and kill-safety) are exactly the local ones.
- At most one task is in flight per actor, so a stop request never has queued work to cancel
  (Ray cannot interrupt a running actor task anyway; it finishes or its item is rolled back).
"""

from __future__ import annotations

import logging
from typing import Any

from portraitforge.batch.spec import BatchItem
from portraitforge.batch.worker import BatchWorker, ItemResult, WorkerConfig, WorkerStartupError
from portraitforge.errors import PortraitForgeError
from portraitforge.types import Status


class BackendUnavailableError(PortraitForgeError):
    status = Status.MODEL_UNAVAILABLE


class BatchActor:
    """Wrapped with `ray.remote` at run time (ray stays an optional dependency)."""

    def __init__(self, config: WorkerConfig, name: str) -> None:
        self.error: tuple[str, str] | None = None
        self.worker: BatchWorker | None = None
        try:
            self.worker = BatchWorker.load(config, name=name)
        except PortraitForgeError as exc:
            self.error = (exc.status.value, exc.message)
        except Exception as exc:
            self.error = (Status.INTERNAL.value, f"{name} failed to start: {type(exc).__name__}: {exc}")

    def ready(self) -> tuple[str, str] | None:
        return self.error

    def process(self, item: BatchItem) -> ItemResult:
        assert self.worker is not None
        return self.worker.process(item)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError("the ray backend needs Ray: pip install 'ray[default]'") from None
    return ray


class RayExecutor:
    def __init__(self, config: WorkerConfig, workers: int = 0, address: str | None = None) -> None:
        ray = self.ray = _import_ray()
        self.started_ray = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
                else:
                    ray.init(
                        num_cpus=max(1, workers) if workers else None,
                        include_dashboard=False,
                        logging_level=logging.ERROR,
                        log_to_driver=False,
                    )
            except Exception as exc:
                where = address or "a local instance"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BackendUnavailableError(f"cannot start or reach Ray ({where}): {first}") from None
            self.started_ray = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if workers <= 0:
            workers = gpus or max(1, int(resources.get("CPU", 1)))
        options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
        if gpus:
            options["num_gpus"] = 1
        remote_cls = ray.remote(BatchActor)
        self.actors = [remote_cls.options(**options).remote(config, f"ray-{i}") for i in range(workers)]
        # Surface a model that fails to load as one error, before any item is handed out.
        errors = [e for e in ray.get([a.ready.remote() for a in self.actors]) if e is not None]
        if errors:
            self.close(force=True)
            status, message = errors[0]
            raise WorkerStartupError(Status(status), message)
        self.pending: dict[Any, tuple[int, BatchItem]] = {}
        self.dead: set[int] = set()

    def free_slots(self) -> int:
        return len(self.actors) - len(self.pending) - len(self.dead)

    def submit(self, item: BatchItem) -> str:
        busy = {index for index, _ in self.pending.values()} | self.dead
        index = next(i for i in range(len(self.actors)) if i not in busy)
        ref = self.actors[index].process.remote(item)
        self.pending[ref] = (index, item)
        return f"ray-{index}"

    def collect(self, timeout: float) -> list[ItemResult]:
        ray = self.ray
        if not self.pending:
            return []
        refs = list(self.pending)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out: list[ItemResult] = []
        for ref in ready:
            index, item = self.pending.pop(ref)
            try:
                out.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                reason = f"INTERNAL: ray actor {index} died ({_first(exc)})"
                out.append(ItemResult(item.id, "failed", reason=reason, retryable=True))
                self.dead.add(index)
                if len(self.dead) == len(self.actors):
                    raise WorkerStartupError(Status.INTERNAL, f"all Ray actors died (last: {_first(exc)})") from None
            except ray.exceptions.RayError as exc:
                out.append(ItemResult(item.id, "failed", reason=f"INTERNAL: ray task failed ({_first(exc)})"))
        return out

    def close(self, force: bool = False) -> None:
        for actor in getattr(self, "actors", []):
            try:
                self.ray.kill(actor)
            except Exception:  # already dead
                continue
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
