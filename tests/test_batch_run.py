"""12-item batches, SIGKILLed and resumed, then reproduced on Ray.

Two batches: generated drafts (3 prompts x 2 identities x 2 seeds on the tiny diffusers model, whose
noise drafts end NO_FACE and are kept by policy) and refine-only (3 real-photo drafts x 2 identities
x 2 strengths, where the face swap really happens). `portraitforge batch run` is SIGKILLed at random
points (startup, mid-item, sometimes between a file write and its manifest commit), once with 2 worker
processes; the final resume must end with exactly 12 valid outputs: none lost, none duplicated, none
corrupt, each matching its manifest sha256. A Ray run (local cluster, 2 CPUs) must then reproduce
both manifests item for item.

Random kills hit the write-then-commit window only by luck, so a fault hook (`PORTRAITFORGE_FAULT`,
portraitforge/batch/faults.py) also kills the driver exactly there. The random kills run with further seeds
under the `slow` marker (still part of the default `pytest -q`; `-m "not slow"` leaves them out).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from batch_fixtures import (
    build_tiny_model,
    decodes,
    generate_spec_data,
    identity_photos,
    image_files,
    popen_cli,
    refine_spec_data,
    run_cli,
    sha256,
    shared_faces,
    write_spec,
    write_wheel_drafts,
)

from portraitforge.batch.faults import FAULT_VARIABLE, FaultPlan
from portraitforge.batch.manifest import Manifest
from portraitforge.batch.spec import expand, load_spec
from portraitforge.errors import BadInputError
from portraitforge.imageio import read_metadata


@dataclass
class KilledRun:
    spec: Path
    output: Path
    rows: list[dict[str, Any]]
    kills: list[dict[str, Any]]


def _done_count(manifest: Path) -> int:
    if not manifest.is_file():
        return 0
    try:
        with sqlite3.connect(manifest, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM items WHERE status = 'done'").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


THREADS = "1"  # one torch thread per worker: fast on a busy 2-core box, and the same on every backend


def _kill_at_random_point(spec: Path, manifest: Path, rng: random.Random, workers: int) -> dict[str, Any]:
    """Start a run, wait until it has made progress (or a random startup moment), SIGKILL the driver."""
    before = _done_count(manifest)
    proc = popen_cli(
        "batch", "run", str(spec), "--no-progress", "--no-review", "--workers", str(workers), "--threads", THREADS
    )
    deadline = time.monotonic() + 120
    early = rng.random() < 0.25  # sometimes kill during startup, before any item finished
    target = time.monotonic() + rng.uniform(0.5, 3.0) if early else None
    children: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None:
        with_children = psutil.Process(proc.pid).children(recursive=True)
        children = with_children or children
        if target is not None and time.monotonic() >= target:
            break
        if target is None and _done_count(manifest) > before:
            time.sleep(rng.uniform(0.0, 0.5))  # land anywhere inside the next item
            break
        time.sleep(0.02)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    # Worker processes die with the driver (PR_SET_PDEATHSIG); none may linger and keep computing.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphaned workers: {alive}"
    return {"workers": workers, "early": early, "done_before": before, "finished": finished}


def _killed_and_resumed(spec: Path, kills: int, seed: int, workers: tuple[int, ...]) -> KilledRun:
    loaded = load_spec(spec)
    rng = random.Random(seed)
    record = [_kill_at_random_point(spec, loaded.manifest_path, rng, workers[n % len(workers)]) for n in range(kills)]
    final = run_cli("batch", "run", str(spec), "--no-progress", "--json", "--threads", THREADS)
    assert final.returncode == 0, final.stderr
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    return KilledRun(spec=spec, output=loaded.output_dir, rows=rows, kills=record)


@pytest.fixture(scope="module")
def refine_run(tmp_path_factory: pytest.TempPathFactory) -> KilledRun:
    root = tmp_path_factory.mktemp("batch_refine")
    write_wheel_drafts(root / "drafts")
    spec = write_spec(root / "spec.yaml", refine_spec_data(root / "drafts", identity_photos(root / "ids")))
    return _killed_and_resumed(spec, kills=3, seed=6, workers=(1, 2, 1))


@pytest.fixture(scope="module")
def generate_run(tmp_path_factory: pytest.TempPathFactory) -> KilledRun:
    pytest.importorskip("portraitforge.pipelines.portrait")
    root = tmp_path_factory.mktemp("batch_generate")
    model = build_tiny_model(root)
    if model is None:
        pytest.skip("tests/diffusion_fixtures.py (tiny diffusers pipelines) is not available")
    spec = write_spec(root / "spec.yaml", generate_spec_data(model, identity_photos(root / "ids")))
    return _killed_and_resumed(spec, kills=2, seed=3, workers=(1,))  # diffusers imports are slow: 1 process


@pytest.fixture(params=["refine", "generate"])
def killed_run(request: pytest.FixtureRequest) -> KilledRun:
    run: KilledRun = request.getfixturevalue(f"{request.param}_run")
    return run


def _assert_every_output_exactly_once(output: Path, rows: list[dict[str, Any]]) -> None:
    """12 done rows, and on disk exactly their 12 files: complete, matching their sha256, of the right item."""
    assert len(rows) == 12
    assert {r["status"] for r in rows} == {"done"}, [(r["status"], r["reason"]) for r in rows]
    files = image_files(output)
    expected = sorted(output / r["output_path"] for r in rows)
    assert files == expected  # none lost, none duplicated, no stray temp files
    for r in rows:
        path = output / r["output_path"]
        assert decodes(path), path
        assert sha256(path) == r["output_sha256"]
        meta = read_metadata(path)
        assert meta is not None and meta["batch_item"] == r["id"]
        assert r["runs"] >= 1 and r["duration_ms"] > 0


def _assert_killed_and_resumed(run: KilledRun) -> None:
    assert sum(not k["finished"] for k in run.kills) >= len(run.kills) - 1, run.kills
    _assert_every_output_exactly_once(run.output, run.rows)
    assert max(r["runs"] for r in run.rows) >= 2  # some items really were interrupted and redone


@pytest.mark.slow
def test_sigkill_then_resume_gives_exactly_12_valid_outputs(killed_run: KilledRun) -> None:
    _assert_killed_and_resumed(killed_run)


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "workers"), [(17, (2, 1, 1)), (40, (1, 1, 2))])
def test_random_sigkills_with_more_seeds(seed: int, workers: tuple[int, ...], tmp_path: Path) -> None:
    """The refine batch again, killed at the random points other seeds draw (and other worker counts)."""
    write_wheel_drafts(tmp_path / "drafts")
    spec = write_spec(tmp_path / "spec.yaml", refine_spec_data(tmp_path / "drafts", identity_photos(tmp_path / "ids")))
    _assert_killed_and_resumed(_killed_and_resumed(spec, kills=3, seed=seed, workers=workers))


def test_kill_between_write_and_commit_then_resume(tmp_path: Path) -> None:
    """The fault hook SIGKILLs the driver right after the N-th output file of a run is durable and before its
    manifest row commits, twice. Each time exactly N-1 new rows are done and the N-th item has a complete file
    but a row still 'running'; the resume redoes exactly the items not done, to the same bytes."""
    write_wheel_drafts(tmp_path / "drafts")
    spec = write_spec(tmp_path / "spec.yaml", refine_spec_data(tmp_path / "drafts", identity_photos(tmp_path / "ids")))
    loaded = load_spec(spec)
    caught: dict[str, str] = {}  # item id -> sha256 of the file written in the window
    done: set[str] = set()
    for fault in (2, 5):
        killed = run_cli(
            "batch", "run", str(spec), "--no-progress", "--no-review", "--threads", THREADS,
            env={FAULT_VARIABLE: f"kill-after-write:{fault}"},
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        with Manifest(loaded.manifest_path) as manifest:
            rows = manifest.rows()
        now_done = {r["id"] for r in rows if r["status"] == "done"}
        assert done <= now_done and len(now_done - done) == fault - 1  # the N-th row never committed
        window = [r for r in rows if r["status"] != "done" and (loaded.output_dir / r["output_path"]).is_file()]
        assert [r["status"] for r in window] == ["running"], window  # one worker: exactly one item in flight
        path = loaded.output_dir / window[0]["output_path"]
        meta = read_metadata(path)
        assert decodes(path) and meta is not None and meta["batch_item"] == window[0]["id"]
        assert not list(loaded.output_dir.rglob(".*.part"))  # the atomic write had finished
        caught[window[0]["id"]] = sha256(path)
        done = now_done
    assert len(caught) == 2

    resumed = run_cli("batch", "run", str(spec), "--no-progress", "--json", "--workers", "2", "--threads", THREADS)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["processed"] == 12 - len(done)  # nothing done is redone, nothing pending is lost
    assert report["recovered"]["rolled_back"] == 1  # the second kill's 'running' row
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    _assert_every_output_exactly_once(loaded.output_dir, rows)
    by_id = {r["id"]: r for r in rows}
    for item_id, digest in caught.items():
        assert by_id[item_id]["runs"] == 2  # killed once in the window, redone once
        assert by_id[item_id]["output_sha256"] == digest  # the window's file was already complete and right
    assert sum(r["runs"] for r in rows) == 12 + len(caught)  # no other item ran twice


def test_fault_hook_values() -> None:
    assert FaultPlan.from_env({}) == FaultPlan()
    assert FaultPlan.from_env({FAULT_VARIABLE: "kill-after-write:3"}).kill_after_write == 3
    for bad in ("kill-after-write:0", "kill-after-write", "kill-before-write:2", "kill-after-write:x"):
        with pytest.raises(BadInputError, match=FAULT_VARIABLE):
            FaultPlan.from_env({FAULT_VARIABLE: bad})


def test_generated_items_record_seeds_attempts_and_policy(generate_run: KilledRun) -> None:
    from PIL import Image

    rows = generate_run.rows
    # Tiny random models draw noise: every item tried its seed and the next one, then kept the draft.
    assert {r["quality_status"] for r in rows} == {"NO_FACE"}
    for r in rows:
        assert [a["seed"] for a in r["attempts"]] == [r["seed"], r["seed"] + 1]
        assert r["seed_used"] == r["seed"] + 1
        with Image.open(generate_run.output / r["output_path"]) as img:
            assert img.size == (64, 64)
            assert f"Seed: {r['seed_used']}" in img.info["parameters"]
            assert img.info["parameters"].startswith(r["prompt"])
    # Fixed seeds: same prompt and seed give the same draft bytes for both identities.
    by_key: dict[tuple[str, int], set[str]] = {}
    for r in rows:
        by_key.setdefault((r["prompt"], r["seed"]), set()).add(r["identity"])
    assert all(len(v) == 2 for v in by_key.values()) and len(by_key) == 6


def test_resume_is_idempotent_and_status_export_agree(refine_run: KilledRun) -> None:
    again = run_cli("batch", "run", str(refine_run.spec), "--no-progress", "--json", "--verify", "--no-review")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["processed"] == 0 and report["summary"]["done"] == 12

    status = run_cli("batch", "status", str(refine_run.spec), "--json")
    assert status.returncode == 0
    summary = json.loads(status.stdout)
    assert summary["done"] == 12 and summary["failed"] == 0 and summary["total"] == 12

    exported = run_cli("batch", "export", str(refine_run.spec), "--format", "csv")
    table = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [t["id"] for t in table] == [r["id"] for r in refine_run.rows]
    assert all(t["output_sha256"] == r["output_sha256"] for t, r in zip(table, refine_run.rows, strict=True))
    out = refine_run.output.parent / "manifest.jsonl"
    assert run_cli("batch", "export", str(refine_run.spec), "--format", "jsonl", "-o", str(out)).returncode == 0
    assert [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["done"] * 12


def test_review_sheets_and_index(refine_run: KilledRun) -> None:
    review = refine_run.output / "review"
    assert decodes(review / "first.jpg") and decodes(review / "second.jpg")
    page = (review / "index.html").read_text()
    for r in refine_run.rows:
        assert f"../{r['output_path']}" in page
    assert page.count("<tr class=") == 12


def test_identity_transfer_on_real_faces(refine_run: KilledRun) -> None:
    if shared_faces() is None:
        pytest.skip("../shared/faces is absent: identities fell back to wheel photos")
    full = [r for r in refine_run.rows if r["params"]["refine"]["strength"] == 1.0]
    distances = [r["identity_distance"] for r in full]
    assert all(d is not None and d < 0.6 for d in distances), distances


def _copy_spec(run: KilledRun, folder: Path) -> Path:
    data = yaml.safe_load(run.spec.read_text())
    data["output"]["dir"] = str(folder / "ray_out")
    return write_spec(folder / "spec.yaml", data)


def test_ray_run_reproduces_the_local_manifests(
    refine_run: KilledRun, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray")
    from portraitforge.batch.runner import RunOptions, run_batch

    runs = {"refine": refine_run}
    with contextlib.suppress(pytest.skip.Exception):
        runs["generate"] = request.getfixturevalue("generate_run")
    key = ("id", "status", "output_path", "output_sha256", "quality_status", "identity_distance", "seed_used")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, run in runs.items():
            spec = _copy_spec(run, tmp_path / name)
            options = RunOptions(backend="ray", workers=2, progress=False, review=False, torch_threads=1)
            result = run_batch(load_spec(spec), options)
            assert not result.interrupted and result.summary.counts["done"] == 12, name
            with Manifest(load_spec(spec).manifest_path) as manifest:
                ray_rows = manifest.rows()
            assert [tuple(r[k] for k in key) for r in ray_rows] == [tuple(r[k] for k in key) for r in run.rows], name
            assert {r["worker"] for r in ray_rows} == {"ray-0", "ray-1"}
            for r in ray_rows:
                assert sha256(tmp_path / name / "ray_out" / r["output_path"]) == r["output_sha256"]
    finally:
        ray.shutdown()


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    drafts = tmp_path / "drafts"
    write_wheel_drafts(drafts)
    (drafts / "group_left.png").unlink()
    data = refine_spec_data(drafts, identity_photos(tmp_path / "ids"))
    data["sweep"] = {}
    spec = write_spec(tmp_path / "spec.yaml", data)  # 2 drafts x 2 identities
    manifest_path = load_spec(spec).manifest_path
    proc = popen_cli("batch", "run", str(spec), "--no-progress", "--no-review", "--threads", THREADS)
    deadline = time.monotonic() + 120
    while _done_count(manifest_path) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().count("\n") == 0 and err.startswith("error: interrupted:"), err
    with Manifest(manifest_path) as manifest:
        statuses = [r["status"] for r in manifest.rows()]
    assert "running" not in statuses and 1 <= statuses.count("done") < 4
    done_before = statuses.count("done")
    resumed = run_cli("batch", "run", str(spec), "--no-progress", "--json", "--no-review", "--threads", THREADS)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["processed"] == 4 - done_before


def test_no_face_policy_retry_failed_and_keep_draft(tmp_path: Path) -> None:
    """A draft without a face fails with NO_FACE; --retry-failed re-runs only it; keep_draft keeps it."""
    from PIL import Image

    from portraitforge.batch.runner import RunOptions, run_batch

    drafts = tmp_path / "drafts"
    drafts.mkdir()
    Image.new("RGB", (96, 96), (120, 160, 200)).save(drafts / "sky.png")
    write_wheel_drafts(tmp_path / "all")
    (drafts / "hanks.png").write_bytes((tmp_path / "all" / "hanks.png").read_bytes())
    data = refine_spec_data(drafts, identity_photos(tmp_path / "ids"))
    data["identities"] = data["identities"][:1]
    data["sweep"] = {}
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", data))
    options = RunOptions(progress=False, review=False)

    first = run_batch(loaded, options)
    s = first.summary
    assert (s.counts["done"], s.counts["failed"], s.failures) == (1, 1, {"NO_FACE": 1})
    with Manifest(loaded.manifest_path) as manifest:
        failed = [r for r in manifest.rows() if r["status"] == "failed"]
    assert failed[0]["reason"].startswith("NO_FACE:") and failed[0]["output_sha256"] is None
    assert not (loaded.output_dir / failed[0]["output_path"]).exists()

    assert run_batch(loaded, options).processed == 0  # failed items are not retried by default
    retried = run_batch(loaded, RunOptions(progress=False, review=False, retry_failed=True))
    assert retried.processed == 1 and retried.recovered["retried_failed"] == 1

    data["no_face"] = {"on_exhausted": "keep_draft"}
    data["refine"] = {**data["refine"], "watermark": False}  # the kept draft is compared pixel for pixel
    kept_spec = load_spec(write_spec(tmp_path / "keep.yaml", {**data, "output": {"dir": "keep"}}))
    kept = run_batch(kept_spec, options)
    assert kept.summary.counts["done"] == 2 and kept.summary.quality.get("NO_FACE") == 1
    items = {it.labels["draft"]: it for it in expand(kept_spec)}
    with Image.open(kept_spec.output_dir / items["sky.png"].output_relpath) as img:
        assert img.getpixel((10, 10)) == (120, 160, 200)  # the unrefined draft, flagged NO_FACE


def test_second_concurrent_run_is_refused(tmp_path: Path) -> None:
    from portraitforge.batch.runner import BatchBusyError, acquire_lock

    lock = acquire_lock(tmp_path / "out")
    try:
        with pytest.raises(BatchBusyError, match="another 'batch run'"):
            acquire_lock(tmp_path / "out")
    finally:
        lock.release()


def _cmdline(process: psutil.Process) -> str:
    """'' for a child that is a zombie or already gone (a failed Ray start in this session leaves some)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_a_dead_worker_process_does_not_fail_or_lose_items(tmp_path: Path) -> None:
    """SIGKILL one of two worker processes mid-run: its item goes back to pending and the other worker
    finishes the batch (no item is marked failed because its worker died)."""
    from portraitforge.batch.runner import RunOptions, run_batch

    drafts = tmp_path / "drafts"
    write_wheel_drafts(drafts)
    (drafts / "group_left.png").unlink()
    data = refine_spec_data(drafts, identity_photos(tmp_path / "ids"))
    data["sweep"] = {}
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", data))
    killed: list[int] = []

    def kill_one_worker(item: Any, result: Any) -> None:
        if not killed:
            workers = [p for p in psutil.Process().children() if "multiprocessing" in _cmdline(p)]
            victim = next(p for p in workers if p.pid != 0)
            victim.kill()
            killed.append(victim.pid)

    result = run_batch(loaded, RunOptions(workers=2, progress=False, review=False, torch_threads=1), kill_one_worker)
    assert killed
    counts = result.summary.counts
    assert (counts["done"], counts["failed"]) == (4, 0), result.summary
    files = image_files(loaded.output_dir)
    assert len(files) == 4 and all(decodes(f) for f in files)
