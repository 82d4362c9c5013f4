"""inswapper_128 engine on synthetic models with the real signature: parity with insightface's own `INSwapper`
(alignment, blob, latent, model output), identity-space rules, strength, pixel boost, upscaler orders and
paste-back quality against `INSwapper.get(paste_back=True)` on real photos."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import skimage.data
from onnx import numpy_helper
from onnx_fixtures import ASTRONAUT_BOX, ASTRONAUT_KPS5, make_arcface, make_inswapper, make_passthrough_inswapper
from shared_data import faces_folder

from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError
from portraitforge.models.onnx_runtime import OnnxSessionPool, OnnxSettings
from portraitforge.models.store import ModelStore
from portraitforge.pipelines.stage_registry import SWAPPERS
from portraitforge.refiners.align import align_face, native_crop_size, transform_points
from portraitforge.refiners.blend import FaceBlender
from portraitforge.refiners.detect import DLIB_SPACE, DlibFaceAnalyzer
from portraitforge.refiners.detect_insightface import ARCFACE_SPACE, InsightFaceAnalyzer, InsightFaceModels, norm_crop
from portraitforge.refiners.swap import LandmarkSwapper
from portraitforge.refiners.swap_inswapper import (
    InswapperModel,
    InswapperSwapper,
    aligned_mask,
    explode_pixel_boost,
    implode_pixel_boost,
)
from portraitforge.refiners.upscale import LanczosUpscaler
from portraitforge.types import AlignedCrop, Face, Identity

pytest.importorskip("insightface")

SHARED_FACES = faces_folder().path  # photos are optional here: the astronaut alone is enough


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("swap_onnx")
    return {
        "swap": make_inswapper(d / "inswapper_128.onnx"),
        "pass": make_passthrough_inswapper(d / "passthrough.onnx"),
        "arcface": make_arcface(d / "w600k_r50.onnx"),
    }


@pytest.fixture(scope="module")
def pool() -> OnnxSessionPool:
    return OnnxSessionPool(OnnxSettings(intra_op_threads=2))


@pytest.fixture(scope="module")
def model(paths: dict[str, Path], pool: OnnxSessionPool) -> InswapperModel:
    return InswapperModel.from_file(paths["swap"], pool)


@pytest.fixture(scope="module")
def passthrough(paths: dict[str, Path], pool: OnnxSessionPool) -> InswapperModel:
    return InswapperModel.from_file(paths["pass"], pool)


@pytest.fixture(scope="module")
def dlib() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer.load()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def face() -> Face:
    return Face(box=ASTRONAUT_BOX, score=1.0, kps5=ASTRONAUT_KPS5)  # dlib's keypoints on the astronaut


def _embedding(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return v / np.linalg.norm(v)


def _identity(embeddings: dict[str, np.ndarray]) -> Identity:
    return Identity("who", embeddings, np.zeros((8, 8, 3), np.uint8), np.zeros((68, 2), np.float32))


def _iface(**kw: object):  # type: ignore[no-untyped-def]
    from insightface.app.common import Face as IFace

    return IFace(**kw)


def _insightface_swapper(path: Path):  # type: ignore[no-untyped-def]
    from insightface.model_zoo.inswapper import INSwapper

    return INSwapper(model_file=str(path))


def _crop(photo: np.ndarray, face: Face, margin: float = 0.45) -> tuple[AlignedCrop, Face]:
    size = native_crop_size(face.kps5, margin)
    crop = align_face(photo, face.kps5, size, margin)
    in_crop = replace(face, kps5=transform_points(face.kps5, crop.matrix), landmarks68=None)
    return crop, in_crop


# ---- parity with insightface's INSwapper ------------------------------------------------------------


def test_preprocessing_latent_and_output_match_insightface(
    paths: dict[str, Path], model: InswapperModel, photo: np.ndarray, face: Face
) -> None:
    theirs = _insightface_swapper(paths["swap"])
    bgr = np.ascontiguousarray(photo[..., ::-1])
    emb = _embedding(1) * 3.7  # an un-normalised ArcFace vector: both sides normalise it
    source = _iface(embedding=emb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skimage's deprecated estimate inside insightface
        from insightface.utils import face_align

        their_aligned, their_m = face_align.norm_crop2(bgr, face.kps5, 128)
        their_fake, _ = theirs.get(bgr, _iface(kps=face.kps5), source, paste_back=False)
    # emap is the graph's last initializer, read by both.
    emap = numpy_helper.to_array(onnx.load(str(paths["swap"])).graph.initializer[-1])
    np.testing.assert_array_equal(model.emap, emap)

    our_aligned, our_m = norm_crop(photo, face.kps5, 128)
    np.testing.assert_allclose(our_m, their_m, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(our_aligned, their_aligned[..., ::-1])
    their_blob = cv2.dnn.blobFromImage(their_aligned, 1.0 / 255.0, (128, 128), (0.0, 0.0, 0.0), swapRB=True)
    our_blob = model.blob(our_aligned)
    assert our_blob.shape == (1, 3, 128, 128)
    assert float(np.abs(our_blob - their_blob).max()) <= 1e-6

    their_latent = np.dot(source.normed_embedding.reshape((1, -1)), theirs.emap)
    their_latent /= np.linalg.norm(their_latent)
    our_latent = model.latent(emb)
    assert our_latent.shape == (1, 512)
    assert float(np.abs(our_latent - their_latent).max()) <= 1e-6

    # Model output: insightface truncates 255 * RGB to uint8 and flips to BGR.
    ours = model.run(our_aligned, our_latent)
    assert ours.shape == (128, 128, 3) and ours.dtype == np.float32
    our_fake_bgr = np.clip(255 * ours, 0, 255).astype(np.uint8)[..., ::-1]
    assert int(np.abs(our_fake_bgr.astype(int) - their_fake.astype(int)).max()) <= 1


def test_identity_spaces_never_mix(model: InswapperModel, photo: np.ndarray, face: Face) -> None:
    crop, in_crop = _crop(photo, face)
    swapper = InswapperSwapper(model=model)
    with pytest.raises(BadInputError, match="arcface-512"):
        swapper(crop, in_crop, _identity({DLIB_SPACE: np.zeros(128, np.float32)}), 1.0)
    # A dlib-space target embedding is never used as an ArcFace latent either.
    dlib_target = replace(in_crop, embedding=np.ones(128, np.float32), embedding_space=DLIB_SPACE)
    with pytest.raises(BadInputError, match="ArcFace embedding"):
        swapper(crop, dlib_target, _identity({ARCFACE_SPACE: _embedding(2)}), 0.5)
    with pytest.raises(BadInputError, match="ArcFace embedding"):
        InswapperSwapper(model=model, embedder=DlibFaceAnalyzer.__new__(DlibFaceAnalyzer))(
            crop, in_crop, _identity({ARCFACE_SPACE: _embedding(2)}), 0.5
        )


# ---- strength -------------------------------------------------------------------------------------


def test_strength_interpolates_latents(
    model: InswapperModel, paths: dict[str, Path], pool: OnnxSessionPool, photo: np.ndarray, face: Face
) -> None:
    crop, in_crop = _crop(photo, face)
    embedder = InsightFaceAnalyzer(
        models=InsightFaceModels(detector=None, recognizer=_arcface(paths, pool), genderage=None)
    )
    identity = _identity({ARCFACE_SPACE: _embedding(3)})
    swapper = InswapperSwapper(model=model, embedder=embedder)

    zero = swapper(crop, in_crop, identity, 0.0)
    np.testing.assert_array_equal(zero.image, crop.image)
    assert float(zero.mask.max()) == 0.0

    source = swapper.identity_latent(identity)
    target = model.latent(embedder.embed(crop.image, in_crop))
    cos = [(swapper.mixed_latent(crop, in_crop, identity, s) @ source.T).item() for s in (0.25, 0.5, 0.75, 1.0)]
    assert cos == sorted(cos) and cos[-1] == pytest.approx(1.0, abs=1e-6)
    assert cos[0] > (target @ source.T).item()
    half = swapper.mixed_latent(crop, in_crop, identity, 0.5)
    assert float(np.linalg.norm(half)) == pytest.approx(1.0, abs=1e-5)
    # A target embedding already on the face (e.g. from selection) is used without the embedder.
    tagged = replace(in_crop, embedding=embedder.embed(crop.image, in_crop), embedding_space=ARCFACE_SPACE)
    bare = InswapperSwapper(model=model)
    np.testing.assert_allclose(bare.mixed_latent(crop, tagged, identity, 0.5), half, atol=1e-6)
    # The mixed latent reaches the model: a partial strength renders differently from the full one.
    partial, full = (swapper(crop, in_crop, identity, s).image.astype(int) for s in (0.3, 1.0))
    assert float(np.abs(partial - full).mean()) > 0.5


def _arcface(paths: dict[str, Path], pool: OnnxSessionPool):  # type: ignore[no-untyped-def]
    from portraitforge.refiners.detect_insightface import build_arcface

    return build_arcface(paths["arcface"], pool)


# ---- pixel boost, masks, orders ---------------------------------------------------------------------


def test_pixel_boost_layout_roundtrip() -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (384, 384, 3), dtype=np.uint8)
    tiles = implode_pixel_boost(big, 3)
    assert tiles.shape == (9, 128, 128, 3)
    np.testing.assert_array_equal(tiles[1 * 3 + 2], big[1::3, 2::3])  # tile (i, j) = big[i::k, j::k]
    np.testing.assert_array_equal(explode_pixel_boost(tiles, 3), big)


def test_pixel_boost_keeps_full_resolution(passthrough: InswapperModel) -> None:
    """With a pass-through model, a boosted swap returns the aligned face at full resolution."""
    rng = np.random.default_rng(1)
    aligned = cv2.resize(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (512, 512), interpolation=cv2.INTER_CUBIC)
    swapper = InswapperSwapper(model=passthrough)
    out = swapper.swap_aligned(aligned, np.full((1, 512), 1 / np.sqrt(512), np.float32), boost=4)
    assert out.shape == (512, 512, 3)
    assert float(np.abs(out * 255 - aligned).max()) <= 0.5 + 1e-3


def test_crop_local_output_contract(model: InswapperModel, photo: np.ndarray, face: Face) -> None:
    crop, in_crop = _crop(photo, face)
    out = InswapperSwapper(model=model)(crop, in_crop, _identity({ARCFACE_SPACE: _embedding(4)}), 1.0)
    assert out.image.shape == crop.image.shape and out.image.dtype == np.uint8
    assert out.mask.shape == crop.image.shape[:2] and out.mask.dtype == np.float32
    assert float(out.mask.min()) >= 0.0 and float(out.mask.max()) <= 1.0
    assert float(out.mask.max()) > 0.99
    outside = out.mask == 0
    assert outside[0].all() and outside[-1].all()  # the aligned square sits inside the margin crop
    np.testing.assert_array_equal(out.image[outside], crop.image[outside])
    assert float(np.abs(out.image.astype(int) - crop.image)[out.mask > 0.9].mean()) > 3  # the swap did something
    assert out.landmarks68 is None
    for kind in ("box", "ellipse"):
        m = aligned_mask(256, kind)  # type: ignore[arg-type]
        assert m[128, 128] == pytest.approx(1.0, abs=1e-3) and m[0, 0] == 0.0
    assert aligned_mask(256, "ellipse").sum() < aligned_mask(256, "box").sum()


def test_upscaler_orders(passthrough: InswapperModel, photo: np.ndarray, face: Face) -> None:
    identity = _identity({ARCFACE_SPACE: _embedding(5)})
    big = cv2.resize(photo, (1024, 1024), interpolation=cv2.INTER_CUBIC)  # face larger than 4 x 128
    big_face = replace(face, kps5=face.kps5 * 2, box=face.box * 2)
    crop, in_crop = _crop(big, big_face)

    calls: list[tuple[int, int]] = []

    class Counting(LanczosUpscaler):
        def __call__(self, image: np.ndarray) -> np.ndarray:
            calls.append(image.shape[:2])
            return super().__call__(image)

    plain = InswapperSwapper(model=passthrough, pixel_boost=1)(crop, in_crop, identity, 1.0)
    after = InswapperSwapper(model=passthrough, pixel_boost=1, upscaler=Counting(scale=2), swap_order="swap-upscale")
    out_after = after(crop, in_crop, identity, 1.0)
    assert calls == [(128, 128)]  # the swapped 128 px face was enlarged, not the crop
    before = InswapperSwapper(model=passthrough, pixel_boost=1, upscaler=Counting(scale=2), swap_order="upscale-swap")
    out_before = before(crop, in_crop, identity, 1.0)
    assert calls[-1] == crop.image.shape[:2]  # the crop was enlarged before alignment
    for out in (plain, out_after, out_before):
        assert out.image.shape == crop.image.shape
    # A pass-through swap should return the crop: measure what each order loses inside the face.
    region = plain.mask > 0.9

    def err(o: np.ndarray) -> float:
        return float(np.abs(o.astype(np.float32) - crop.image)[region].mean())

    boosted = InswapperSwapper(model=passthrough)(crop, in_crop, identity, 1.0)
    assert err(boosted.image) < err(out_after.image) <= err(plain.image) + 0.05


# ---- paste-back quality against insightface ----------------------------------------------------------


def _photos() -> list[np.ndarray]:
    photos = [np.ascontiguousarray(skimage.data.astronaut())]
    for name in ("person_a_1.jpg", "person_b_1.jpg"):
        path = SHARED_FACES / name
        if path.is_file():
            photos.append(np.ascontiguousarray(cv2.imread(str(path))[..., ::-1]))
    return photos


@pytest.mark.parametrize("which", ["pass", "swap"])
def test_pasteback_quality_at_least_insightface(
    which: str, paths: dict[str, Path], pool: OnnxSessionPool, dlib: DlibFaceAnalyzer
) -> None:
    """Same model, same face, same identity: our crop-local swap + FaceBlender against INSwapper.get(paste_back=True).

    With the pass-through model the ideal result is the input photo, so the error inside the face is what
    the resampling chain loses and the error outside is paste-back damage. With the synthetic swap model
    only the outside error is meaningful (the inside is meant to change), and both must apply the same edit.
    """
    theirs_model = _insightface_swapper(paths[which])
    ours_model = InswapperModel.from_file(paths[which], pool)
    emb = _embedding(6)
    for photo in _photos():
        face = dlib.detect(photo)[0]
        assert face.landmarks68 is not None
        hull = np.zeros(photo.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(face.landmarks68.astype(np.int32)), 1)
        inside, outside = hull > 0, hull == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            theirs_bgr = theirs_model.get(photo[..., ::-1].copy(), _iface(kps=face.kps5), _iface(embedding=emb), True)
        theirs = theirs_bgr[..., ::-1].astype(np.float32)
        crop, in_crop = _crop(photo, face)
        out = InswapperSwapper(model=ours_model)(crop, in_crop, _identity({ARCFACE_SPACE: emb}), 1.0)
        ours = FaceBlender("feather")(photo, out.image, out.mask, crop.inverse).astype(np.float32)

        def err(result: np.ndarray, region: np.ndarray, reference: np.ndarray = photo) -> float:
            return float(np.abs(result - reference)[region].mean())

        assert err(ours, outside) <= err(theirs, outside)
        if which == "pass":
            assert err(ours, inside) <= err(theirs, inside)
        else:
            edit = err(theirs, inside)
            assert edit > 3.0  # the synthetic model visibly edits the face
            assert float(np.abs(ours - theirs)[inside].mean()) < 0.5 * edit  # and both paste the same edit


# ---- factory --------------------------------------------------------------------------------------


def test_swapper_registry_builds(
    tmp_path: Path, paths: dict[str, Path], pool: OnnxSessionPool, dlib: DlibFaceAnalyzer
) -> None:
    config = RefineConfig(swap_engine="landmark", analyzer="dlib", mask="features", feather=0.1)
    empty = ModelStore(root=tmp_path / "empty", offline=True)
    landmark = SWAPPERS.get("landmark").from_config(config, empty, dlib, LanczosUpscaler(scale=2), pool)
    assert isinstance(landmark, LandmarkSwapper) and landmark.mask_shape == "features" and landmark.feather == 0.1
    inswapper = SWAPPERS.get("inswapper")
    config = RefineConfig(swap_engine="inswapper", swap_order="upscale-swap", pixel_boost=2)
    assert inswapper.missing_models(config, empty) == ["inswapper_128"]
    arcface = InsightFaceAnalyzer(
        models=InsightFaceModels(detector=None, recognizer=_arcface(paths, pool), genderage=None)
    )
    with pytest.raises(ModelUnavailableError, match="inswapper_128.onnx"):
        inswapper.from_config(config, empty, arcface, LanczosUpscaler(scale=2), pool)
    with pytest.raises(ParameterError, match="ArcFace"):  # a dlib analyzer cannot feed inswapper
        inswapper.from_config(config, empty, dlib, LanczosUpscaler(scale=2), pool)
    with pytest.raises(ParameterError):
        SWAPPERS.get("nope")
    # The real loading path: the file in a store whose registry pins the synthetic file's hash.
    import hashlib

    from portraitforge.models.registry import INSWAPPER_128, ModelRegistry, ModelSpec

    data = paths["swap"].read_bytes()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / INSWAPPER_128.filename).write_bytes(data)
    spec = ModelSpec(
        INSWAPPER_128.name, INSWAPPER_128.filename, (), hashlib.sha256(data).hexdigest(), len(data), "swap", ""
    )
    store = ModelStore(root=tmp_path / "store", registry=ModelRegistry((spec,)), offline=True)
    assert inswapper.missing_models(config, store) == []
    swapper = inswapper.from_config(config, store, arcface, LanczosUpscaler(scale=2), pool)
    assert isinstance(swapper, InswapperSwapper) and swapper.embedder is arcface
    assert swapper.params() == {
        "engine": "inswapper",
        "pixel_boost": 2,
        "swap_order": "upscale-swap",
        "upscaler": "lanczos",
        "mask": "box",
        "mask_blur": 0.3,
    }


# ---- inside the refine pipeline -----------------------------------------------------------------------


def test_refine_pipeline_runs_with_insightface_and_inswapper(paths: dict[str, Path], pool: OnnxSessionPool) -> None:
    """RefinePipeline built from its stages with the insightface analyzer and inswapper engine: ArcFace identity
    in, ArcFace identity distance graded, only a face-sized region of the frame touched."""
    from onnx_fixtures import make_genderage, make_scrfd

    from portraitforge.config import RefineConfig
    from portraitforge.pipelines.refine import RefinePipeline
    from portraitforge.refiners.adjust import FaceAdjuster
    from portraitforge.refiners.blend import FaceBlender
    from portraitforge.refiners.detect import DlibFaceAnalyzer
    from portraitforge.refiners.grade import dlib_grader
    from portraitforge.refiners.upscale import NoUpscaler

    d = paths["swap"].parent
    analyzer = InsightFaceAnalyzer(
        models=InsightFaceModels.from_files(
            make_scrfd(d / "det.onnx"), paths["arcface"], make_genderage(d / "ga.onnx"), pool
        )
    )
    swapper = InswapperSwapper(model=InswapperModel.from_file(paths["swap"], pool), embedder=analyzer)
    pipe = RefinePipeline(
        analyzer=analyzer,
        swapper=swapper,
        upscaler=NoUpscaler(),
        adjuster=FaceAdjuster(),
        blender=FaceBlender(),
        config=RefineConfig(analyzer="insightface", swap_engine="inswapper", strength=0.8),
        grader=dlib_grader(DlibFaceAnalyzer.load()),  # independent of ArcFace, which drives inswapper
    )
    target = np.ascontiguousarray(skimage.data.astronaut())
    identity = pipe.identity_from_image(np.ascontiguousarray(target[:, ::-1]), "mirror")
    assert list(identity.embeddings) == [ARCFACE_SPACE]
    result = pipe(target, identity)
    assert result.ok, result.report.message
    assert result.image is not None and result.image.shape == target.shape
    changed = np.abs(result.image.astype(int) - target).max(axis=2) > 0
    assert 0 < changed.sum() < 0.25 * changed.size
    quality = result.report.faces[0].quality
    assert quality is not None and quality.identity_distance is not None and 0.0 <= quality.identity_distance <= 2.0
    assert quality.grader is not None and quality.grader.model == "dlib"
    assert -1.0 <= quality.grader.identity_similarity <= 1.0 and -1.0 <= quality.grader.original_similarity <= 1.0
