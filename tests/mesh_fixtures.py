"""The real MediaPipe / MobileFaceNet / parser / YuNet files, in a model store, for tests (no network).

Use like the other *_fixtures modules: `from mesh_fixtures import mesh_model_store` in a test module, then
take `mesh_model_store` as an argument. `store.ensure("mediapipe/face_landmark")` etc. give verified paths;
the store is offline, so a file it lacks raises ModelUnavailableError instead of downloading.

Seeds, both read-only and hash-checked by `ModelStore.import_dir`:
- ../shared/models or $PORTRAITFORGE_SHARED_MODELS (tests/shared_data.py): every mesh-pack file except
  `mediapipe/face_mesh_connections`, plus parsing and YuNet;
- the user's own model store as `portraitforge models setup` (run by scripts/bootstrap.sh) fills it, for
  the files shared/models lacks. Its location is read when this module is imported, i.e. before conftest's
  `isolated_home` points $PORTRAITFORGE_HOME at a temporary folder.
"""

from __future__ import annotations

import pytest
from shared_data import models_folder

from portraitforge.models.registry import DEFAULT_REGISTRY
from portraitforge.models.store import ModelStore, default_models_dir

SHARED_MODELS = models_folder().path
USER_MODELS = default_models_dir()
PACKS = ("mesh", "parsing", "yunet")  # the small files; never copy insightface's hundreds of MB


@pytest.fixture(scope="session")
def mesh_model_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """An offline `ModelStore` over a temporary folder holding every real model file that can be had here."""
    models_folder().require()
    store = ModelStore(root=tmp_path_factory.mktemp("mesh-models"), registry=DEFAULT_REGISTRY, offline=True)
    store.import_dir(SHARED_MODELS, [s.name for s in DEFAULT_REGISTRY if s.pack in PACKS])
    missing = [s.name for s in DEFAULT_REGISTRY if s.pack in PACKS and store.check(s.name).state == "missing"]
    if missing and USER_MODELS.is_dir() and USER_MODELS.resolve() != store.root.resolve():
        store.import_dir(USER_MODELS, missing)
    return store
