"""insightface analysis backend on synthetic models with the real signatures: parity with insightface's own
SCRFD / ArcFaceONNX / Attribute on the same inputs, plus backend selection and the ONNX session pool."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from onnx_fixtures import ASTRONAUT_BOX, ASTRONAUT_KPS5, make_arcface, make_genderage, make_scrfd

from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError
from portraitforge.models.onnx_runtime import OnnxSessionPool, OnnxSettings, select_providers
from portraitforge.models.registry import ARCFACE_W600K_R50, GENDERAGE, SCRFD_10G, ModelRegistry, ModelSpec
from portraitforge.models.store import ModelStore
from portraitforge.pipelines.stage_registry import ANALYZERS
from portraitforge.refiners.detect_insightface import (
    ARCFACE_SPACE,
    InsightFaceAnalyzer,
    InsightFaceModels,
    norm_crop,
    norm_matrix,
    select_by_gender,
)
from portraitforge.types import Face

pytest.importorskip("insightface")


@dataclass(frozen=True)
class Synthetic:
    det: Path
    det_batched: Path
    rec: Path
    genderage: Path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    d = tmp_path_factory.mktemp("onnx")
    return Synthetic(
        det=make_scrfd(d / "det_10g.onnx"),
        det_batched=make_scrfd(d / "det_10g_batched.onnx", batched=True),
        rec=make_arcface(d / "w600k_r50.onnx"),
        genderage=make_genderage(d / "genderage.onnx"),
    )


@pytest.fixture(scope="module")
def pool() -> OnnxSessionPool:
    return OnnxSessionPool(OnnxSettings(intra_op_threads=2))


@pytest.fixture(scope="module")
def analyzer(synthetic: Synthetic, pool: OnnxSessionPool) -> InsightFaceAnalyzer:
    return InsightFaceAnalyzer(
        models=InsightFaceModels.from_files(synthetic.det, synthetic.rec, synthetic.genderage, pool)
    )


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())  # RGB uint8, ships with scikit-image


@pytest.fixture(scope="module")
def dlib_face(photo: np.ndarray) -> Face:
    return Face(box=ASTRONAUT_BOX, score=1.0, kps5=ASTRONAUT_KPS5)  # dlib's keypoints on this photo


def _iface(**kw: object):  # type: ignore[no-untyped-def]
    from insightface.app.common import Face as IFace

    return IFace(**kw)


def _quiet_insightface():  # type: ignore[no-untyped-def]
    # insightface's face_align calls skimage's deprecated SimilarityTransform.estimate.
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", FutureWarning)
    return ctx


# ---- alignment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [112, 128, 224, 256])
def test_norm_matrix_matches_insightface_estimate_norm(size: int) -> None:
    from insightface.utils import face_align

    rng = np.random.default_rng(size)
    base = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]], np.float32)
    for _ in range(5):
        angle = rng.uniform(-0.6, 0.6)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
        kps = (base @ rot.T * rng.uniform(0.5, 4.0) + rng.uniform(0, 300, 2)).astype(np.float32)
        kps += rng.normal(0, 1.5, kps.shape).astype(np.float32)
        ctx = _quiet_insightface()
        try:
            expected = face_align.estimate_norm(kps, size)
        finally:
            ctx.__exit__(None, None, None)
        np.testing.assert_allclose(norm_matrix(kps, size), expected, rtol=0, atol=1e-9)


# ---- SCRFD -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True])
def test_scrfd_detection_parity(synthetic: Synthetic, pool: OnnxSessionPool, photo: np.ndarray, batched: bool) -> None:
    from insightface.model_zoo.scrfd import SCRFD

    path = synthetic.det_batched if batched else synthetic.det
    ours = InsightFaceAnalyzer(models=InsightFaceModels.from_files(path, synthetic.rec, None, pool))
    reference = SCRFD(model_file=str(path))  # insightface's own session and defaults (thresh 0.5, nms 0.4)
    assert reference.batched is batched and reference.use_kps
    boxes, kpss = reference.detect(np.ascontiguousarray(photo[..., ::-1]), input_size=(640, 640))
    faces = ours.detect(photo)
    assert 1 <= len(faces) == len(boxes) < 200
    got = np.array([np.r_[f.box, f.score] for f in faces])
    order_got, order_ref = np.lexsort(got[:, :2].T[::-1]), np.lexsort(boxes[:, :2].T[::-1])
    np.testing.assert_allclose(got[order_got], boxes[order_ref], rtol=0, atol=1e-4)
    got_kps = np.stack([f.kps5 for f in faces])
    np.testing.assert_allclose(got_kps[order_got], kpss[order_ref], rtol=0, atol=1e-4)
    assert all(f.landmarks68 is None and 0.0 <= f.landmarks_confidence <= 1.0 for f in faces)


def test_scrfd_is_colour_order_sensitive(analyzer: InsightFaceAnalyzer, photo: np.ndarray) -> None:
    """Guards the parity test above: a BGR/RGB slip would change the synthetic detector's output."""
    a = analyzer.detect(photo)
    b = analyzer.detect(np.ascontiguousarray(photo[..., ::-1]))
    assert len(a) != len(b) or not np.allclose([f.box for f in a], [f.box for f in b])


def test_landmarks_refit_recovers_keypoints(analyzer: InsightFaceAnalyzer, photo: np.ndarray) -> None:
    face = max(analyzer.detect(photo), key=lambda f: f.score)
    refit = analyzer.landmarks(photo, face)
    assert refit.landmarks68 is None
    assert float(np.abs(refit.kps5 - face.kps5).max()) < 0.25 * face.width + 2.0


def test_detect_rejects_bad_input(analyzer: InsightFaceAnalyzer) -> None:
    with pytest.raises(BadInputError):
        analyzer.detect(np.zeros((64, 64), np.uint8))
    assert analyzer.detect(np.zeros((8, 8, 3), np.uint8)) == []


# ---- ArcFace ---------------------------------------------------------------------------------------


def test_arcface_embedding_parity(
    synthetic: Synthetic, analyzer: InsightFaceAnalyzer, photo: np.ndarray, dlib_face: Face
) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    reference = ArcFaceONNX(model_file=str(synthetic.rec))
    assert (reference.input_mean, reference.input_std) == (127.5, 127.5)  # the w600k branch, as for the real file
    for kps in (dlib_face.kps5, dlib_face.kps5 + np.float32(3.3)):
        face = type(dlib_face)(box=dlib_face.box, score=1.0, kps5=kps.astype(np.float32))
        ours = analyzer.embed(photo, face)
        ctx = _quiet_insightface()
        try:
            theirs = reference.get(np.ascontiguousarray(photo[..., ::-1]), _iface(kps=face.kps5))
        finally:
            ctx.__exit__(None, None, None)
        theirs = theirs / np.linalg.norm(theirs)  # insightface's normed_embedding
        assert ours.shape == (512,) and ours.dtype == np.float32
        assert float(np.abs(ours - theirs).max()) < 1e-6
    # The aligned crop is insightface's norm_crop at 112 (RGB here).
    aligned, _ = norm_crop(photo, dlib_face.kps5, 112)
    np.testing.assert_array_equal(analyzer.aligned_112(photo, dlib_face), aligned)


def test_arcface_distance_is_cosine(analyzer: InsightFaceAnalyzer, photo: np.ndarray, dlib_face: Face) -> None:
    face = dlib_face
    e = analyzer.embed(photo, face)
    assert analyzer.embedding_space == ARCFACE_SPACE
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
    assert analyzer.distance(e, e) == pytest.approx(0.0, abs=1e-6)
    assert analyzer.distance(e, -e) == pytest.approx(2.0, abs=1e-6)
    swapped = analyzer.embed(np.ascontiguousarray(photo[..., ::-1]), face)
    assert analyzer.distance(e, swapped) > 1e-3  # channel order matters to the model
    with_emb = analyzer.with_embedding(photo, face)
    assert with_emb.embedding_space == ARCFACE_SPACE and np.array_equal(with_emb.embedding, e)


# ---- genderage -------------------------------------------------------------------------------------


def test_genderage_parity_and_gender_selection(
    synthetic: Synthetic, analyzer: InsightFaceAnalyzer, photo: np.ndarray
) -> None:
    from insightface.model_zoo.attribute import Attribute

    reference = Attribute(model_file=str(synthetic.genderage))
    assert reference.taskname == "genderage"
    faces = analyzer.detect(photo)[:12]
    genders = []
    for face in faces:
        ours = analyzer.gender_age(photo, face)
        theirs_face = _iface(bbox=face.box.astype(np.float64))
        gender, age = reference.get(np.ascontiguousarray(photo[..., ::-1]), theirs_face)
        assert (ours.gender == "male") == (int(gender) == 1)
        assert ours.age == age
        genders.append(ours.gender)
    assert set(genders) == {"female", "male"}  # the fixture's faces cover both classes
    female = select_by_gender(analyzer, photo, faces, "female")
    assert len(female) == genders.count("female")
    assert select_by_gender(analyzer, photo, faces, None) == faces
    only_male = InsightFaceAnalyzer(models=analyzer.models, gender="male").detect(photo)
    assert only_male and all(analyzer.gender_age(photo, f).gender == "male" for f in only_male)


# ---- backend selection and loading from the store -------------------------------------------------


def _synthetic_store(root: Path, synthetic: Synthetic, offline: bool = True) -> ModelStore:
    def spec(real: ModelSpec, path: Path) -> ModelSpec:
        data = path.read_bytes()
        target = root / real.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return ModelSpec(real.name, real.filename, (), hashlib.sha256(data).hexdigest(), len(data), real.task, "")

    registry = ModelRegistry(
        (
            spec(SCRFD_10G, synthetic.det),
            spec(ARCFACE_W600K_R50, synthetic.rec),
            spec(GENDERAGE, synthetic.genderage),
        )
    )
    return ModelStore(root=root, registry=registry, offline=offline)


def test_analyzer_registry_builds_insightface(tmp_path: Path, synthetic: Synthetic, photo: np.ndarray) -> None:
    """The one way analyzers are built: the registry entry, its missing files named before any loading."""
    insightface = ANALYZERS.get("insightface")
    config = RefineConfig(swap_engine="inswapper")
    assert ANALYZERS.resolve(config) is insightface  # auto follows the engine, whatever files are stored
    empty = ModelStore(root=tmp_path / "empty", offline=True)
    assert insightface.missing_models(config, empty) == [SCRFD_10G.name, ARCFACE_W600K_R50.name, GENDERAGE.name]
    with pytest.raises(ModelUnavailableError, match="det_10g.onnx"):
        insightface.from_config(config, empty)
    with pytest.raises(ParameterError):
        ANALYZERS.get("retinaface")

    store = _synthetic_store(tmp_path / "store", synthetic)
    pool = OnnxSessionPool()
    assert insightface.missing_models(config, store) == []
    first = insightface.from_config(config, store, pool)
    assert isinstance(first, InsightFaceAnalyzer) and first.models.genderage is not None
    assert len(pool.loaded()) == 3  # one session per model file
    again = insightface.from_config(config, store, pool)
    assert isinstance(again, InsightFaceAnalyzer)
    assert again.models.detector.session is first.models.detector.session and len(pool.loaded()) == 3
    assert len(first.detect(photo)) == len(again.detect(photo)) > 0
    assert first.params()["backend"] == "insightface"


# ---- ONNX runtime ----------------------------------------------------------------------------------


def test_select_providers_prefers_accelerators_and_keeps_cpu() -> None:
    everything = ["CPUExecutionProvider", "CoreMLExecutionProvider", "CUDAExecutionProvider", "DmlExecutionProvider"]
    assert select_providers(None, everything) == [
        "CUDAExecutionProvider",
        "CoreMLExecutionProvider",
        "DmlExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert select_providers(["coreml"], everything) == ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(["cuda", "directml"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(None)[-1] == "CPUExecutionProvider"
    with pytest.raises(ModelUnavailableError):
        select_providers(["cuda"], ["SomethingExecutionProvider"])


def test_session_pool_one_session_per_path(synthetic: Synthetic, tmp_path: Path) -> None:
    pool = OnnxSessionPool(OnnxSettings(providers=("cpu",), intra_op_threads=1))
    a = pool.get(synthetic.rec)
    link = tmp_path / "alias.onnx"
    link.symlink_to(synthetic.rec)
    assert pool.get(str(synthetic.rec)) is a and pool.get(link) is a  # resolved path is the key
    assert a.get_providers() == ["CPUExecutionProvider"]
    assert a.get_session_options().intra_op_num_threads == 1
    assert OnnxSessionPool().get(synthetic.rec) is not a  # pools are independent: no hidden global cache
    with pytest.raises(ModelUnavailableError, match="not found"):
        pool.get(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelUnavailableError, match="cannot load"):
        pool.get(bad)
    pool.close()
    assert pool.loaded() == []
