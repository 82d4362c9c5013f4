"""Batch throughput (items/minute) for 1 worker, 2 workers and Ray, and per-item orchestration overhead.

    .venv/bin/python benchmarks/bench_batch.py [--mode generate|refine|both] [--items 12] [--size 128] [--steps 8]
                                                [--no-ray] [--threads 1]

Workloads (nothing is downloaded):
- generate: prompts x identities x seeds on a tiny random SD model (tests/diffusion_fixtures.py), `--size`
  pixels and `--steps` steps. Its drafts are noise, so each item is one draw + a face check, and the draft is
  kept by policy (`no_face.retries: 0`, `on_exhausted: keep_draft`).
- refine: real photos from the wheels refined toward an identity (the face swap really runs).

Overhead: the per-item wall time inside `batch run --workers 1` (the interval between consecutive finished
items: worker call + PNG encode + atomic write + fsyncs + two manifest transactions) against the bare
pipeline call on the same items (`PortraitPipeline(...)` / `load_image + RefinePipeline(...)`), and against
bare call + `save_image`. Bare loops run before and after the batch so that machine load hits both alike.
Throughput: end-to-end items/minute (including worker start-up: spawning, imports, model loading) and
steady-state items/minute (first to last finished item). The load average is printed: on a shared
machine, compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from batch_fixtures import build_tiny_model, identity_photos, write_wheel_drafts  # noqa: E402

from portraitforge.batch.runner import RunOptions, run_batch  # noqa: E402
from portraitforge.batch.spec import BatchItem, LoadedSpec, expand, load_spec  # noqa: E402
from portraitforge.batch.worker import BatchWorker, ItemResult, WorkerConfig  # noqa: E402
from portraitforge.imageio import load_image, save_image  # noqa: E402


def _spec(root: Path, mode: str, items: int, size: int, steps: int) -> Path:
    ids = identity_photos(root / "ids")
    if mode == "generate":
        model = build_tiny_model(root)
        assert model is not None, "tests/diffusion_fixtures.py is needed for the generate workload"
        seeds = max(1, items // 6)
        data: dict[str, Any] = {
            "name": "bench-generate",
            "output": {"dir": "out"},
            "prompts": {
                "templates": ["{who}, {outfit}, portrait photo"],
                "variables": {"who": ["aiko"], "outfit": ["uniform", "dress", "hoodie"]},
            },
            "identities": [{"image": str(ids[0]), "name": "first"}, {"image": str(ids[1]), "name": "second"}],
            "seeds": {"start": 0, "count": seeds},
            "model": {"source": str(model), "steps": steps, "width": size, "height": size},
            "no_face": {"retries": 0, "on_exhausted": "keep_draft"},
        }
    else:
        write_wheel_drafts(root / "drafts")
        strengths = [round(0.5 + 0.5 * i / max(1, items // 6 - 1), 3) for i in range(max(1, items // 6))]
        data = {
            "name": "bench-refine",
            "output": {"dir": "out"},
            "drafts": {"folder": str(root / "drafts")},
            "identities": [{"image": str(ids[0]), "name": "first"}, {"image": str(ids[1]), "name": "second"}],
            "sweep": {"strength": strengths} if len(strengths) > 1 else {},
            "refine": {"detect_max_side": 400},
        }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _bare_times(worker: BatchWorker, items: list[BatchItem], out: Path) -> tuple[list[float], list[float]]:
    """Per item: (bare pipeline call, bare call + save_image) in seconds."""
    calls, with_save = [], []
    for n, item in enumerate(items):
        identity = worker._identity(item.identity)  # cached: identities are built once, as in the batch
        t0 = time.perf_counter()
        if item.prompt is not None:
            assert worker.generator is not None
            model = item.params["model"]
            res = worker.generator(
                item.prompt,
                negative_prompt=item.negative_prompt or None,
                identity=identity,
                seed=item.seed,
                num_images=1,
                steps=model["steps"],
                guidance=model["guidance"],
                width=model["width"],
                height=model["height"],
                retries=0,
            ).results[0]
            image = res.image if res.image is not None else res.draft
        else:
            assert item.draft_path is not None
            refiner = worker._refiner_for(item.params["refine"])
            draft = load_image(item.draft_path).rgb
            image = refiner(draft, identity).image
        t1 = time.perf_counter()
        assert image is not None
        save_image(out / f"bare_{n}.png", image)
        t2 = time.perf_counter()
        calls.append(t1 - t0)
        with_save.append(t2 - t0)
    return calls, with_save


def _pipeline_ms(result: ItemResult) -> float:
    """The worker's own time inside the bare pipeline call for this item (what a user's loop would call)."""
    t = result.timings_ms
    if "generate+refine" in t:
        return t["generate+refine"]
    return t.get("load", 0.0) + t.get("refine", 0.0)


def _timed_run(
    loaded: LoadedSpec, options: RunOptions, per_item: list[tuple[float, float]] | None = None
) -> tuple[float, list[float]]:
    stamps: list[float] = []

    def on_result(item: BatchItem, result: ItemResult) -> None:
        stamps.append(time.perf_counter())
        if per_item is not None:
            per_item.append((result.duration_ms / 1e3, _pipeline_ms(result) / 1e3))

    start = time.perf_counter()
    result = run_batch(loaded, options, on_result=on_result)
    wall = time.perf_counter() - start
    assert result.summary.counts["done"] == len(stamps), result.summary
    return wall, [start, *stamps]


def _fresh(loaded: LoadedSpec) -> None:
    shutil.rmtree(loaded.output_dir, ignore_errors=True)


def _rate(n: int, seconds: float) -> float:
    return 60.0 * n / seconds if seconds > 0 else float("nan")


def bench(mode: str, items: int, size: int, steps: int, threads: int, use_ray: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        loaded = load_spec(_spec(root, mode, items, size, steps))
        plan = expand(loaded)
        n = len(plan)
        print(f"\n== {mode}: {n} items, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores ==")

        # Bare loop on a worker loaded exactly as the batch loads it (same pipeline objects).
        import torch

        torch.set_num_threads(threads)
        worker = BatchWorker.load(WorkerConfig.from_spec(loaded, torch_threads=threads), name="bare")
        for it in plan[:2]:
            worker._identity(it.identity)  # warm identities and caches, like the batch's first item
        _bare_times(worker, plan[:1], root)  # warm-up call
        bare_a, save_a = _bare_times(worker, plan, root)

        runs: dict[str, tuple[float, list[float]]] = {}
        per_item: list[tuple[float, float]] = []  # (worker time, pipeline-call time) per finished item
        configs: list[tuple[str, RunOptions]] = [
            ("1 worker", RunOptions(workers=1, progress=False, review=False, torch_threads=threads)),
            ("2 workers", RunOptions(workers=2, progress=False, review=False, torch_threads=threads)),
        ]
        if use_ray:
            configs.append(
                ("ray x2", RunOptions(backend="ray", workers=2, progress=False, review=False, torch_threads=1))
            )
        for label, options in configs:
            _fresh(loaded)
            try:
                runs[label] = _timed_run(loaded, options, per_item if label == "1 worker" else None)
            except Exception as exc:  # report, keep the other figures
                print(f"{label}: failed ({type(exc).__name__}: {exc})")
        bare_b, save_b = _bare_times(worker, plan, root)

        bare = statistics.median(bare_a + bare_b)
        bare_save = statistics.median(save_a + save_b)
        print(f"bare pipeline call          median {bare * 1e3:8.1f} ms")
        print(f"bare call + save_image      median {bare_save * 1e3:8.1f} ms")
        for label, (wall, stamps) in runs.items():
            steady = stamps[-1] - stamps[1] if len(stamps) > 2 else float("nan")
            print(
                f"{label:10s} end-to-end {_rate(n, wall):7.1f} items/min ({wall:6.1f} s incl. start-up), "
                f"steady {_rate(n - 1, steady):7.1f} items/min"
            )
        if "1 worker" in runs:
            _, stamps = runs["1 worker"]
            # Same item, same run, same load: interval between finished items vs the pipeline call inside it.
            intervals = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
            calls = [c for _, c in per_item[1:]]
            workers = [w for w, _ in per_item[1:]]
            save = statistics.median([s - b for s, b in zip(save_a + save_b, bare_a + bare_b, strict=True)])
            ratio_call = statistics.median([iv / c for iv, c in zip(intervals, calls, strict=False)])
            ratio_save = statistics.median([iv / (c + save) for iv, c in zip(intervals, calls, strict=False)])
            driver = statistics.median([iv - w for iv, w in zip(intervals, workers, strict=False)])
            print(f"batch per item (1 worker)   median {statistics.median(intervals) * 1e3:8.1f} ms")
            print(f"  of which the pipeline call median {statistics.median(calls) * 1e3:8.1f} ms")
            print(f"per-item ratio batch / bare call (same run)           {ratio_call:6.3f}")
            print(
                f"per-item ratio batch / (bare call + save_image {save * 1e3:.0f} ms) {ratio_save:6.3f}  (goal <= 1.05)"
            )
            print(f"driver work per item (submit, manifest, atomic write) median {driver * 1e3:.1f} ms")
            print(
                f"separate loops: bare call {bare * 1e3:.1f} ms, bare call + save {bare_save * 1e3:.1f} ms, "
                f"batch/bare {statistics.median(intervals) / bare:.3f}, batch/(bare+save) "
                f"{statistics.median(intervals) / bare_save:.3f} (sensitive to load changes between loops)"
            )
        if "1 worker" in runs and "2 workers" in runs:
            print(f"speed-up 2 workers / 1 worker (end-to-end) {runs['1 worker'][0] / runs['2 workers'][0]:.2f}")
        if "1 worker" in runs and "ray x2" in runs:
            print(f"speed-up ray x2 / 1 worker (end-to-end)    {runs['1 worker'][0] / runs['ray x2'][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=["generate", "refine", "both"], default="both")
    parser.add_argument("--items", type=int, default=12, help="rounded to a multiple of 6")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    use_ray = not args.no_ray
    if use_ray:
        try:
            import ray
        except ImportError:
            print("ray is not installed: skipping the Ray figures (pip install 'ray[default]')")
            use_ray = False
        else:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    modes: list[str] = ["generate", "refine"] if args.mode == "both" else [args.mode]
    run: Callable[[str], None] = lambda m: bench(m, args.items, args.size, args.steps, args.threads, use_ray)  # noqa: E731
    for mode in modes:
        run(mode)


if __name__ == "__main__":
    main()
