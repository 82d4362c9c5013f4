"""PortraitPipeline: seeds and determinism, progress callbacks, no-face retries, and the refine path on real photos.

Tiny random models draw noise, so the face part injects real photos as drafts (`drafts=` / `refine_draft`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusion_fixtures import save_tiny

from portraitforge.errors import ParameterError
from portraitforge.imageio import load_image
from portraitforge.pipelines.portrait import GenerationCancelled, PortraitPipeline, ProgressEvent
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import Identity, Status

STEPS = 2


# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, pipeline: RefinePipeline) -> PortraitPipeline:
    folder = save_tiny(tmp_path_factory.mktemp("tiny"), "sd")
    return PortraitPipeline.from_pretrained(folder, refiner=pipeline, device="cpu", retries=2)


@pytest.fixture(scope="module")
def hanks(pipeline: RefinePipeline, hanks_path: Path) -> Identity:
    return _identity(pipeline, hanks_path)


def _identity(pipeline: RefinePipeline, path: Path) -> Identity:
    return pipeline.identity_from_image(load_image(path).rgb, path.stem, str(path))


def test_same_seed_same_pixels_distinct_seeds_differ(tiny: PortraitPipeline) -> None:
    a = tiny("portrait of a woman", seed=11, num_images=2, steps=STEPS)
    b = tiny("portrait of a woman", seed=11, num_images=2, steps=STEPS)
    assert a.seeds == [11, 12]
    for x, y in zip(a.images, b.images, strict=True):
        assert x is not None and y is not None
        np.testing.assert_array_equal(x, y)
    assert a.images[0] is not None and a.images[1] is not None
    assert np.abs(a.images[0].astype(int) - a.images[1].astype(int)).mean() > 1.0
    # Image 1 of a batch is the image its seed draws alone: seeds are enough to reproduce any image.
    alone = tiny("portrait of a woman", seed=12, num_images=1, steps=STEPS)
    assert alone.images[0] is not None
    np.testing.assert_array_equal(alone.images[0], a.images[1])
    assert a.status is Status.OK and a.reports == [None, None]


def test_callback_once_per_step_and_cancel(tiny: PortraitPipeline) -> None:
    events: list[ProgressEvent] = []
    tiny("p", seed=1, num_images=2, steps=3, callback=events.append)
    assert len(events) == 2 * 3
    assert [e.step for e in events] == [1, 2, 3, 1, 2, 3]
    assert [e.seed for e in events] == [1, 1, 1, 2, 2, 2]

    def stop_at_two(event: ProgressEvent) -> bool:
        return event.step < 2

    with pytest.raises(GenerationCancelled):
        tiny("p", seed=1, steps=3, callback=stop_at_two)


def test_no_face_retries_then_reports_every_attempt(tiny: PortraitPipeline, hanks: Identity) -> None:
    """Noise has no face: each image tries seed+i, then seed+i+n, seed+i+2n, and ends NO_FACE."""
    out = tiny("portrait", identity=hanks, seed=100, num_images=2, steps=STEPS, retries=2)
    assert out.status is Status.NO_FACE
    assert [[a.seed for a in r.attempts] for r in out.results] == [[100, 102, 104], [101, 103, 105]]
    assert all(a.status is Status.NO_FACE for a in out.attempts)
    assert out.images == [None, None]
    assert "seeds tried: 100, 102, 104" in out.results[0].message


def test_injected_photo_draft_is_refined_toward_identity(
    tiny: PortraitPipeline, hanks: Identity, astronaut_rgb: np.ndarray, analyzer: DlibFaceAnalyzer
) -> None:
    """First draft: noise (no face, rejected). Second: a real photo, refined; its face moves to the identity."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = tiny("portrait", identity=hanks, seed=5, steps=STEPS, retries=3, drafts=[noise, astronaut_rgb])
    result = out.results[0]
    assert result.attempts[0].status is Status.NO_FACE
    assert result.attempts[1].status in (Status.OK, Status.LOW_QUALITY)
    assert [a.source for a in result.attempts] == ["injected", "injected"]
    assert result.ok and result.image is not None and result.report is not None
    np.testing.assert_array_equal(result.draft, astronaut_rgb)

    space = analyzer.embedding_space
    target = hanks.embeddings[space]
    face = analyzer.detect(astronaut_rgb)[0]
    before = analyzer.distance(analyzer.embed(astronaut_rgb, face), target)
    quality = result.report.faces[0].quality
    assert quality is not None and quality.identity_distance is not None
    assert quality.identity_distance < before
    assert result.metadata["refiner"]["strength"] == 1.0
    assert result.metadata["identity"]["name"] == hanks.name
    assert "Face swap: " in result.parameters_text


def test_refine_draft_on_shared_faces(
    tiny: PortraitPipeline, shared_faces_dir: Path, shared_labels: dict[str, str]
) -> None:
    """A different-person pair from ../shared/faces through `refine_draft` (skips when the folder is absent)."""
    by_person: dict[str, str] = {}
    for name, person in sorted(shared_labels.items()):
        by_person.setdefault(person, name)
    people = sorted(by_person)
    refiner = tiny.refiner
    assert refiner is not None
    identity = _identity(refiner, shared_faces_dir / by_person[people[0]])
    target = load_image(shared_faces_dir / by_person[people[1]]).rgb
    result = tiny.refine_draft(target, identity)
    assert result.ok and result.report is not None
    analyzer = refiner.analyzer
    vec = identity.embeddings[analyzer.embedding_space]
    faces = analyzer.detect(target)
    before = analyzer.distance(analyzer.embed(target, max(faces, key=lambda f: f.area)), vec)
    quality = result.report.faces[0].quality
    assert quality is not None and quality.identity_distance is not None
    assert quality.identity_distance < before


def test_parameter_validation(tiny: PortraitPipeline) -> None:
    with pytest.raises(ParameterError, match="multiple of 8"):
        tiny.parameters("p", width=60)
    with pytest.raises(ParameterError, match="steps"):
        tiny.parameters("p", steps=0)
    with pytest.raises(ParameterError, match="seed"):
        tiny.parameters("p", seed=-1)
    params = tiny.parameters("p", seed=None)
    assert 0 <= params.seed < 2**32  # a random seed is drawn and recorded
    assert tiny.parameters("p").require_face is False
    assert tiny.parameters("p", identity=object()).require_face is True
