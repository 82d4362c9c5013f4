"""Headline figures of the default engine on the 72 ordered different-person pairs of ../shared/faces, judged
by models the engine does not use for the judgement (portraitforge/evaluation.py): MobileFaceNet and dlib on
dlib-found faces, Laplacian sharpness inside dlib's inner-face hull, foreign hair by the face parser.

Issue 11's goals, asserted as stated: >= 95% by each recogniser, median sharpness ratio result/target >= 0.6
(inside the target's inner face), and 0 pairs with the identity's hair on the target's face.

Those recogniser figures compare the result with the very photo the identity was built from, whose pixels were
warped into it. The held-out figures (issue 15) compare it with the identity's *other* photos instead, with the
same pass rule; they are lower, and their floors are the measured values, not goals.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from portraitforge.config import RefineConfig
from portraitforge.evaluation import Judge, PairFigures, contact_sheet, evaluate_pairs
from portraitforge.imageio import save_image
from portraitforge.models.face_parsing import FaceParser
from portraitforge.models.mobilefacenet import MobileFaceNet
from portraitforge.models.store import ModelStore
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = REPO / "outputs" / "test-artefacts"


@pytest.fixture(scope="module")
def figures(shared_faces_dir: Path) -> PairFigures:
    store = ModelStore.from_dir()
    if not store.has("bisenetv2_face_parsing"):
        pytest.skip("the face parser (../shared/models) is needed to judge foreign hair")
    judge = Judge(
        dlib=DlibFaceAnalyzer.load(),
        grader=MobileFaceNet.load(store.ensure("mobilefacenet", download=False)),
        parser=FaceParser.load(store.ensure("bisenetv2_face_parsing", download=False)),
    )
    pipe = RefinePipeline.from_config(RefineConfig())
    assert pipe.swapper.params()["parsing"] is True  # the parser is in the store, so the engine uses it
    result = PairFigures(list(evaluate_pairs(pipe, shared_faces_dir, judge)))
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    save_image(ARTEFACTS / "worst_pairs.png", contact_sheet(result.worst(10), shared_faces_dir))
    save_image(ARTEFACTS / "worst_pairs_heldout.png", contact_sheet(result.worst_heldout(12), shared_faces_dir))
    print(result.summary())
    return result


def test_every_pair_is_refined(figures: PairFigures) -> None:
    assert len(figures.pairs) == 72
    assert all(p.status in ("OK", "LOW_QUALITY") for p in figures.pairs)


def test_faces_are_about_as_sharp_as_the_photo(figures: PairFigures) -> None:
    assert figures.median_sharpness_ratio >= 0.6


def test_no_identity_hair_on_the_target_face(figures: PairFigures) -> None:
    assert figures.hair_failures == []


def test_identity_transfer_floors(figures: PairFigures) -> None:
    assert figures.grader_rate >= 0.95
    assert figures.dlib_rate >= 0.95


def test_identity_transfer_against_held_out_photos(figures: PairFigures) -> None:
    """Same pass rule, judged against the identity's other photos. Measured (2026-12-03, default mesh engine with
    the parser): 60/72 by MobileFaceNet and 60/72 by dlib. The floors sit two pairs below, to catch a regression
    without failing on the last digit of a float. Eight of the 72 pairs have person_c as the identity, whose two
    photos are 0.61 apart by dlib (above its 0.6 rule) and 0.53 by MobileFaceNet: that reference is hard even
    for her own photo, so these figures cannot reach 72/72."""
    assert sum(p.grader_heldout_pass for p in figures.pairs) >= 58
    assert sum(p.dlib_heldout_pass for p in figures.pairs) >= 58
    # A held-out photo is a harder reference than the photo whose pixels were warped in, never an easier one.
    assert figures.grader_heldout_rate <= figures.grader_rate and figures.dlib_heldout_rate <= figures.dlib_rate
