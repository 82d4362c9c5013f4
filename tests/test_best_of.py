"""Best-of-N on real photos: candidates (injected drafts) are refined toward an identity and ranked by the
second recogniser (MobileFaceNet grading the landmark engine, which dlib steers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusion_fixtures import save_tiny

from portraitforge.config import RefineConfig
from portraitforge.imageio import load_image
from portraitforge.pipelines.best_of import rank_candidates
from portraitforge.pipelines.portrait import PortraitPipeline
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.refiners.grade import cosine
from portraitforge.types import Identity, ImageRGB, Status

# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def graded(analyzer: DlibFaceAnalyzer) -> RefinePipeline:
    config = RefineConfig(swap_engine="landmark", analyzer="dlib", grader="mobilefacenet")
    refiner = RefinePipeline.from_config(config, analyzer=analyzer)
    if refiner.grader is None:
        pytest.skip("the MobileFaceNet grader file is not in the model store (portraitforge models setup)")
    return refiner


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, graded: RefinePipeline) -> PortraitPipeline:
    folder = save_tiny(tmp_path_factory.mktemp("tiny"), "sd")
    return PortraitPipeline.from_pretrained(folder, refiner=graded, device="cpu", retries=0)


def _by_person(labels: dict[str, str]) -> dict[str, list[str]]:
    people: dict[str, list[str]] = {}
    for name, person in sorted(labels.items()):
        people.setdefault(person, []).append(name)
    return people


def _regrade(refiner: RefinePipeline, image: ImageRGB, identity: Identity) -> float:
    """The grader's similarity measured afresh on the written portrait (largest face), not read from the report."""
    grader = refiner.grader
    assert grader is not None
    face = max(refiner.analyzer.detect(image), key=lambda f: f.area)
    vector = identity.embeddings.get(grader.embedding_space)
    if vector is None:
        vector = grader.reference_embedding(identity)
    return cosine(grader.embed(image, face), vector)


def test_keeps_the_candidate_the_grader_ranks_first(
    tiny: PortraitPipeline, shared_faces_dir: Path, shared_labels: dict[str, str]
) -> None:
    refiner = tiny.refiner
    assert refiner is not None
    people = _by_person(shared_labels)
    pairs = [p for p in sorted(people) if len(people[p]) >= 2][:3]
    others = [people[p][0] for p in sorted(people) if p not in pairs][:3]
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    runs = 0
    for person in pairs:
        identity = refiner.identity_from_image(load_image(shared_faces_dir / people[person][0]).rgb, person)
        # Candidates: three other people, a held-out photo of the same person, and a faceless draft.
        names = [*others, people[person][1]]
        drafts = [load_image(shared_faces_dir / n).rgb for n in names] + [noise]
        out = tiny("portrait", identity=identity, seed=1, num_images=len(drafts), retries=0, drafts=drafts)
        kept, scores = rank_candidates(out.results, keep=2)
        usable = [s for s in scores if s.status in (Status.OK, Status.LOW_QUALITY)]
        assert scores[-1].status is Status.NO_FACE and scores[-1].rank == len(scores) - 1 and not scores[-1].kept
        best = max(usable, key=lambda s: s.grader_similarity or -1.0)
        assert kept[0].index == best.index and scores[best.index].rank == 0
        assert [k.index for k in kept] == [s.index for s in sorted(usable, key=lambda s: s.rank)][:2]
        # Measured afresh on the portraits, the grader agrees with the ranking's first choice.
        fresh = {r.index: _regrade(refiner, r.image, identity) for r in out.results if r.image is not None}
        assert max(fresh, key=fresh.__getitem__) == kept[0].index
        runs += 1
    assert runs == len(pairs) >= 2


def test_keep_needs_identity_one_line(tmp_path: Path, tiny: PortraitPipeline) -> None:
    from typer.testing import CliRunner

    from portraitforge.cli import app

    folder = Path(tiny.model.source.location)
    args = ["generate", "p", "-m", str(folder), "-n", "3", "--keep", "2", "--steps", "1"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o"), "--log", str(tmp_path / "log")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--keep" in result.stderr and not (tmp_path / "o").exists()


def test_cli_records_every_candidate(tmp_path: Path, tiny: PortraitPipeline, hanks_path: Path) -> None:
    """On the tiny noise model no candidate has a face: nothing is kept, every candidate is in the report."""
    from typer.testing import CliRunner

    from portraitforge.cli import app

    folder = Path(tiny.model.source.location)
    args = ["generate", "p", "-m", str(folder), "-i", str(hanks_path), "-n", "2", "--keep", "1", "--steps", "1"]
    args += ["--retries", "0", "--seed", "4", "-c", "natural", "--json", "--log", str(tmp_path / "log")]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert [c["seed"] for c in report["candidates"]] == [4, 5]
    assert all(c["status"] == "NO_FACE" and not c["kept"] for c in report["candidates"])
    assert report["images"] == []


def test_restorer_chosen_per_identity_by_grader(
    tmp_path: Path, graded: RefinePipeline, shared_faces_dir: Path, shared_labels: dict[str, str]
) -> None:
    """A restorer that damages faces (random GPEN weights) loses to no restoration on measured similarity."""
    from restore_fixtures import make_gpen

    from portraitforge.models.restorers import RESTORER_KINDS, load_restore_model
    from portraitforge.pipelines.restore_choice import RestorerChoice
    from portraitforge.refiners.restore import FaceRestorer

    damaging = FaceRestorer(load_restore_model(RESTORER_KINDS["gpen"], make_gpen(tmp_path / "gpen.onnx")))
    people = _by_person(shared_labels)
    identity = graded.identity_from_image(load_image(shared_faces_dir / people["person_a"][0]).rgb, "person_a")
    targets = [load_image(shared_faces_dir / people[p][0]).rgb for p in ("person_b", "person_c")]
    choice = RestorerChoice({"gpen": damaging, "none": None})
    assert choice.choose(graded, identity, targets) == "none"
    scores = choice.scores["person_a"]
    assert scores["gpen"] is not None and scores["none"] is not None
    assert scores["gpen"] < scores["none"] - 0.05  # the restore hook really ran on the swapped crop
    assert choice.pipeline_for(graded, identity, targets).restorer is None
    assert choice.to_dict()["chosen"] == {"person_a": "none"}


def test_restore_auto_chooses_per_identity_inside_the_pipeline(
    tmp_path: Path, analyzer: DlibFaceAnalyzer, shared_faces_dir: Path, shared_labels: dict[str, str]
) -> None:
    """`restore: auto` with a restorer file in the store: the pipeline measures it against no restoration on the
    first target, keeps the grader's choice for the identity, and says which in the report."""
    from restore_fixtures import make_gpen

    from portraitforge.models.registry import MOBILEFACENET
    from portraitforge.models.restorers import RESTORER_KINDS
    from portraitforge.models.store import ModelStore

    store = ModelStore(root=tmp_path / "models", offline=True)
    store.import_dir(ModelStore.from_dir().root, [MOBILEFACENET.name])
    gpen_path = store.root / RESTORER_KINDS["gpen"].spec.filename
    gpen_path.parent.mkdir(parents=True, exist_ok=True)
    make_gpen(gpen_path)  # random weights: a restorer that damages faces
    config = RefineConfig(swap_engine="landmark", analyzer="dlib", grader="mobilefacenet", restore="auto")
    refiner = RefinePipeline.from_config(config, analyzer=analyzer, model_store=store)
    if refiner.grader is None:
        pytest.skip("the MobileFaceNet grader file is not in the model store (portraitforge models setup)")
    assert refiner.restorer_choice is not None and set(refiner.restorer_choice.candidates) == {"gpen", "none"}
    people = _by_person(shared_labels)
    identity = refiner.identity_from_image(load_image(shared_faces_dir / people["person_a"][0]).rgb, "person_a")
    first, second = (load_image(shared_faces_dir / people[p][0]).rgb for p in ("person_b", "person_d"))
    result = refiner(first, identity)
    assert result.report.status in (Status.OK, Status.LOW_QUALITY), result.report.message
    scores = refiner.restorer_choice.scores["person_a"]
    assert scores["gpen"] is not None and scores["none"] is not None and scores["gpen"] < scores["none"]
    assert result.report.parameters["restore"] == "auto"
    assert result.report.parameters["restore_chosen"] == "none"
    # Measured once per identity: the next target reuses the choice, no new measurement.
    again = refiner(second, identity)
    assert again.report.parameters["restore_chosen"] == "none" and refiner.restorer_choice.scores.keys() == {"person_a"}
    # Without any restorer file, auto builds no choice at all (restoration stays off).
    bare = ModelStore(root=tmp_path / "bare", offline=True)
    bare.import_dir(ModelStore.from_dir().root, [MOBILEFACENET.name])
    assert RefinePipeline.from_config(config, analyzer=analyzer, model_store=bare).restorer_choice is None
