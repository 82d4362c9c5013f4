"""Best-of-N in batches (spec `keep: K`) and the NSFW gate in the batch worker, on real photos.

Refine mode is where faces are real here (the tiny diffusers model draws noise), so the ranking is checked on
real drafts from ../shared/faces swapped toward person_a: the kept items must be exactly the top-K of each group
by the grader similarity the manifest recorded, after a partial run and a resume too. The generate-mode test
runs the tiny model: its NO_FACE candidates are all recorded and ranked, and none is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import pytest
import yaml
from batch_fixtures import build_tiny_model, generate_spec_data, image_files, write_spec

from portraitforge.batch.manifest import EXPORT_COLUMNS, Manifest
from portraitforge.batch.runner import RunOptions, run_batch
from portraitforge.batch.spec import SpecValueError, expand, load_spec
from portraitforge.config import RefineConfig
from portraitforge.imageio import load_image, save_image
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer

REFINE = {"swap_engine": "landmark", "analyzer": "dlib", "grader": "mobilefacenet", "detect_max_side": 400}
# Candidates for person_a: a held-out photo of person_a and three other people.
DRAFTS = ["person_a_2.jpg", "person_b_1.jpg", "person_c_1.jpg", "person_d_1.jpg"]
OPTIONS = RunOptions(progress=False, review=True)


# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def _grader_present(analyzer: DlibFaceAnalyzer) -> None:
    refiner = RefinePipeline.from_config(RefineConfig(**REFINE), analyzer=analyzer)  # type: ignore[arg-type]
    if refiner.grader is None:
        pytest.skip("the MobileFaceNet grader file is not in the model store (portraitforge models setup)")


def _drafts(folder: Path, shared: Path) -> Path:
    """The candidates at 320 px (faces ~100 px) so that a refine takes about a second on one thread."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in DRAFTS:
        rgb = load_image(shared / name).rgb
        scale = 320 / max(rgb.shape[:2])
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        save_image(folder / f"{Path(name).stem}.png", small)
    return folder


def _spec_data(drafts: Path, identity: Path, keep: int | None, output: str = "out", **refine: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "best-of",
        "output": {"dir": output},
        "drafts": {"folder": str(drafts)},
        "identities": [{"image": str(identity), "name": "aiko"}],
        "sweep": {"strength": [0.8, 1.0]},  # two groups of four candidates
        "refine": {**REFINE, **refine},
    }
    if keep is not None:
        data["keep"] = keep
    return data


def _groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["candidate_group"], []).append(r)
    return out


def _recorded_grader(row: dict[str, Any]) -> float:
    """The grader similarity as the manifest's quality JSON holds it (worst face of the item)."""
    values = [f["quality"]["grader"]["identity_similarity"] for f in row["quality"]["faces"] if f.get("quality")]
    return min(values)


@pytest.fixture(scope="module")
def best_of_run(
    tmp_path_factory: pytest.TempPathFactory, shared_faces_dir: Path, _grader_present: None
) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("best_of")
    drafts = _drafts(root / "drafts", shared_faces_dir)
    spec = write_spec(root / "spec.yaml", _spec_data(drafts, shared_faces_dir / "person_a_1.jpg", keep=2))
    loaded = load_spec(spec)
    # A partial run first (3 of 8 items): the first group is incomplete, so nothing of it is ranked yet.
    partial = run_batch(loaded, RunOptions(progress=False, review=False, limit=3))
    assert partial.processed == 3
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    assert all(r["candidate_rank"] is None and r["kept"] is None for r in rows)
    assert sum(r["grader_similarity"] is not None for r in rows) == 3
    result = run_batch(loaded, OPTIONS)  # the resume finishes the other 5 and ranks both groups
    assert result.processed == 5 and not result.interrupted
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    return spec, rows


def test_kept_items_are_exactly_the_top_k_by_recorded_grader_score(
    best_of_run: tuple[Path, list[dict[str, Any]]],
) -> None:
    spec, rows = best_of_run
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}, [(r["status"], r["reason"]) for r in rows]
    groups = _groups(rows)
    assert len(groups) == 2 and all(len(g) == 4 for g in groups.values())
    for group in groups.values():
        recorded = {r["id"]: _recorded_grader(r) for r in group}
        for r in group:
            assert r["grader_similarity"] == pytest.approx(recorded[r["id"]], abs=1e-9)
        by_score = sorted(group, key=lambda r: -recorded[r["id"]])
        assert [r["candidate_rank"] for r in by_score] == [0, 1, 2, 3]
        assert {r["id"] for r in group if r["kept"]} == {r["id"] for r in by_score[:2]}
        # The grader really separates people: the held-out photo of person_a is kept, and ranked first.
        own = next(r for r in group if r["labels"]["draft"] == "person_a_2.png")
        assert own["kept"] == 1 and own["candidate_rank"] == 0
    # Losers stay on disk (flagged, never lost): all 8 outputs exist.
    assert len(image_files(load_spec(spec).output_dir)) == 8


def test_review_lists_kept_first_and_flags_the_rest(best_of_run: tuple[Path, list[dict[str, Any]]]) -> None:
    spec, rows = best_of_run
    index = (load_spec(spec).output_dir / "review" / "index.html").read_text(encoding="utf-8")
    assert index.count("KEPT #1") == 2 and index.count("KEPT #2") == 2 and index.count("not kept (#") == 4
    # Within each group the table lists candidates by rank: ids appear in rank order.
    for group in _groups(rows).values():
        ordered = sorted(group, key=lambda r: r["candidate_rank"])
        positions = [index.index(f"<code>{r['id'][:8]}</code>") for r in ordered]
        assert positions == sorted(positions)
    assert "candidate_rank" in EXPORT_COLUMNS and "kept" in EXPORT_COLUMNS


def test_rerun_and_changed_keep_redo_nothing_and_rerank(
    best_of_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    spec, rows = best_of_run
    loaded = load_spec(spec)
    again = run_batch(loaded, RunOptions(progress=False, review=False))
    assert again.processed == 0
    with Manifest(loaded.manifest_path) as manifest:
        assert [(r["id"], r["candidate_rank"], r["kept"]) for r in manifest.rows()] == [
            (r["id"], r["candidate_rank"], r["kept"]) for r in rows
        ]
    # keep does not enter the item ids: a spec with keep 1 over the same folder reuses every output.
    data = yaml.safe_load(spec.read_text(encoding="utf-8")) | {"keep": 1}
    data["output"]["dir"] = str(loaded.output_dir)
    one = load_spec(write_spec(spec.parent / "spec_keep1.yaml", data))
    assert [it.id for it in expand(one)] == [it.id for it in expand(loaded)]
    assert run_batch(one, RunOptions(progress=False, review=False)).processed == 0
    with Manifest(one.manifest_path) as manifest:
        ranked = manifest.rows()
    for group in _groups(ranked).values():
        assert [r["candidate_rank"] for r in group if r["kept"]] == [0]
    run_batch(loaded, RunOptions(progress=False, review=False))  # back to keep 2 for the other tests


def test_keep_larger_than_the_candidates_is_a_usage_error(tmp_path: Path, shared_faces_dir: Path) -> None:
    drafts = _drafts(tmp_path / "drafts", shared_faces_dir)
    spec = write_spec(tmp_path / "spec.yaml", _spec_data(drafts, shared_faces_dir / "person_a_1.jpg", keep=5))
    with pytest.raises(SpecValueError, match="keep 5 is more than the 4 drafts"):
        load_spec(spec)


def test_generated_noise_candidates_are_all_recorded_and_none_kept(tmp_path: Path, hanks_path: Path) -> None:
    pytest.importorskip("portraitforge.pipelines.portrait")
    model = build_tiny_model(tmp_path)
    if model is None:
        pytest.skip("tests/diffusion_fixtures.py (tiny diffusers pipelines) is not available")
    data = generate_spec_data(model, [hanks_path, hanks_path])
    data["identities"] = data["identities"][:1]
    data["prompts"]["variables"]["outfit"] = ["uniform"]
    data["seeds"] = [1, 2, 3]
    data["keep"] = 2
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", data))
    assert len({it.group for it in expand(loaded)}) == 1
    run_batch(loaded, RunOptions(progress=False, review=False))
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    assert [r["seed"] for r in rows] == [1, 2, 3]
    # Noise drafts have no face: kept as drafts by policy (NO_FACE), ranked, but never a kept candidate.
    assert [r["quality_status"] for r in rows] == ["NO_FACE"] * 3
    assert sorted(r["candidate_rank"] for r in rows) == [0, 1, 2] and [r["kept"] for r in rows] == [0, 0, 0]


def test_nsfw_gate_in_the_batch_records_its_checks(tmp_path: Path, shared_faces_dir: Path) -> None:
    """`flag` on real portraits: every item is written and its report holds the gate's (empty) findings."""
    pytest.importorskip("nudenet")
    drafts = _drafts(tmp_path / "drafts", shared_faces_dir)
    data = _spec_data(drafts, shared_faces_dir / "person_a_1.jpg", keep=None, nsfw_check=True, nsfw_policy="flag")
    data["sweep"] = {}
    data["refine"]["grader"] = "auto"
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", data))
    run_batch(loaded, RunOptions(progress=False, review=False))
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    for r in rows:
        assert r["quality"]["nsfw"] == {"policy": "flag", "threshold": 0.5, "flags": []}
        assert r["timings"]["nsfw"] > 0


def test_kill_before_the_last_candidates_row_then_resume_ranks_the_same(
    best_of_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path, shared_faces_dir: Path
) -> None:
    """The fault hook SIGKILLs the driver after the 8th output (the second group's last candidate; items alternate
    between the two groups) is durable and before its row commits: the first group is ranked, the second is not;
    the resume ranks it exactly as the uninterrupted run did, with the same bytes."""
    import signal

    from batch_fixtures import run_cli

    from portraitforge.batch.faults import FAULT_VARIABLE

    _, reference = best_of_run
    drafts = _drafts(tmp_path / "drafts", shared_faces_dir)
    spec = write_spec(tmp_path / "spec.yaml", _spec_data(drafts, shared_faces_dir / "person_a_1.jpg", keep=2))
    loaded = load_spec(spec)
    killed = run_cli(
        "batch", "run", str(spec), "--no-progress", "--no-review", "--threads", "1",
        env={FAULT_VARIABLE: "kill-after-write:8"},
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    assert [r["status"] for r in rows] == ["done"] * 7 + ["running"]
    last = rows[-1]["candidate_group"]
    assert all((r["candidate_rank"] is None) == (r["candidate_group"] == last) for r in rows)
    assert sum(r["kept"] == 1 for r in rows) == 2
    assert run_batch(loaded, RunOptions(progress=False, review=False)).processed == 1
    with Manifest(loaded.manifest_path) as manifest:
        rows = manifest.rows()
    fields = ("id", "output_sha256", "grader_similarity", "candidate_rank", "kept")
    assert [tuple(r[k] for k in fields) for r in rows] == [tuple(r[k] for k in fields) for r in reference]
