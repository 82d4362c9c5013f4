"""Shared fixtures: real photos from the wheels and ../shared/faces, and the embedded dlib models.

../shared (labelled photos, model files) is found through tests/shared_data.py: PORTRAITFORGE_FACES and
PORTRAITFORGE_SHARED_MODELS when set (a missing folder then stops the session), else beside the checkout
(tests that need a missing folder skip).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from shared_data import faces_folder, models_folder

from portraitforge.config import RefineConfig
from portraitforge.imageio import load_image
from portraitforge.models.store import ModelStore, default_models_dir
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.samples import astronaut, insightface_image
from portraitforge.types import Identity

REPO = Path(__file__).resolve().parents[1]
# Small real model files the embedded engines use; never insightface's hundreds of MB.
SEEDED_PACKS = ("mesh", "parsing", "yunet")


def pytest_configure(config: pytest.Config) -> None:
    """A variable that names a missing shared folder is a broken setup, not a reason to skip: stop here."""
    for folder in (faces_folder(), models_folder()):
        message = folder.error()
        if message is not None:
            raise pytest.UsageError(message)


def seed_models(store: ModelStore, sources: list[Path]) -> None:
    """Give the temporary home the real model files already on this machine (`portraitforge models setup` fills
    the user's store; ../shared/models has the parser and YuNet), so tests never download them."""
    names = [s.name for s in store.registry if s.pack in SEEDED_PACKS]
    for source in sources:
        if source.is_dir():
            store.import_dir(source, names)


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Models caches, identity store and run logs go to a temporary home, never the user's."""
    home = tmp_path_factory.mktemp("portraitforge-home")
    user_models = default_models_dir()  # read before the override below
    previous = os.environ.get("PORTRAITFORGE_HOME")
    os.environ["PORTRAITFORGE_HOME"] = str(home)
    shared_models = models_folder().get()
    seed_models(ModelStore.from_dir(home / "models"), [user_models, *([shared_models] if shared_models else [])])
    yield home
    if previous is None:
        os.environ.pop("PORTRAITFORGE_HOME", None)
    else:
        os.environ["PORTRAITFORGE_HOME"] = previous


@pytest.fixture(scope="session")
def shared_faces_dir() -> Path:
    return faces_folder().require()


@pytest.fixture(scope="session")
def shared_labels(shared_faces_dir: Path) -> dict[str, str]:
    with open(shared_faces_dir / "identities.csv") as handle:
        return {row["file"]: row["identity"] for row in csv.DictReader(handle)}


@pytest.fixture(scope="session")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer.load()


@pytest.fixture(scope="session")
def pipeline(analyzer: DlibFaceAnalyzer) -> RefinePipeline:
    # The landmark engine on the session's dlib analyzer, graded by dlib alone (as these tests were written).
    config = RefineConfig(swap_engine="landmark", analyzer="dlib", grader="none")
    return RefinePipeline.from_config(config, analyzer=analyzer)


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="session")
def hanks_path() -> Path:
    return insightface_image("Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def t1_path() -> Path:
    return insightface_image("t1.jpg")


@pytest.fixture(scope="session")
def t1_rgb(t1_path: Path) -> np.ndarray:
    return load_image(t1_path).rgb


@pytest.fixture(scope="session")
def t1_identity(pipeline: RefinePipeline, t1_rgb: np.ndarray, analyzer: DlibFaceAnalyzer) -> Identity:
    """A colour identity: the frontal face (reading-order index 1) of insightface's t1.jpg."""
    from portraitforge.demo import identity_photo

    return pipeline.identity_from_image(identity_photo(analyzer), "t1-face-1")


@pytest.fixture()
def astronaut_path(tmp_path: Path, astronaut_rgb: np.ndarray) -> Path:
    from portraitforge.imageio import save_image

    return save_image(tmp_path / "astronaut.png", astronaut_rgb)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a busy 2-core box: one intra-op thread avoids OpenMP spin contention (10x here). Modules
    that run torch use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
