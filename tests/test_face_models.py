"""MobileFaceNet grader, BiSeNetV2 face parser and hair matte on the real models and photos in ../shared.

Model tests skip when ../shared/models is absent; the crop-geometry tests run anywhere.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from shared_data import models_folder

from portraitforge.imageio import load_image
from portraitforge.models.face_parsing import (
    FaceClass,
    FaceParser,
    FaceParsing,
    identity_matrix,
    square_crop_matrix,
    to_model_input,
)
from portraitforge.models.hair_matte import HairMatte, HairMatteResult
from portraitforge.models.mobilefacenet import MOBILEFACENET_THRESHOLD, MobileFaceNet
from portraitforge.refiners.align import alignment_matrix, transform_points
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import Face, FloatArray, ImageRGB

SHARED_MODELS = models_folder().path
MOBILEFACENET = SHARED_MODELS / "recognition" / "MobileFaceNet.tflite"
PARSER = SHARED_MODELS / "parsing" / "bisenetv2_celebamaskhq_448x448_integer_quant.tflite"
HAIR = SHARED_MODELS / "parsing" / "hair_segmentation.tflite"

# Checked by eye on the overlays: person_g is bald; everyone else has hair on top of the head.
BALD = {"person_g"}


def _model(path: Path) -> Path:
    models_folder().require()
    if not path.is_file():
        pytest.skip(f"test model not available at {path}")
    return path


@pytest.fixture(scope="module")
def mobilefacenet() -> MobileFaceNet:
    return MobileFaceNet.load(_model(MOBILEFACENET))


@pytest.fixture(scope="module")
def parser() -> FaceParser:
    return FaceParser.load(_model(PARSER))


@pytest.fixture(scope="module")
def hair() -> HairMatte:
    return HairMatte.load(_model(HAIR))


@pytest.fixture(scope="module")
def photos(
    shared_faces_dir: Path, shared_labels: dict[str, str], analyzer: DlibFaceAnalyzer
) -> dict[str, tuple[ImageRGB, Face]]:
    """Every labelled (single-person) photo with dlib's largest face: 68 landmarks and kps5."""
    out: dict[str, tuple[ImageRGB, Face]] = {}
    for name in sorted(shared_labels):
        rgb = load_image(shared_faces_dir / name).rgb
        faces = analyzer.detect(rgb)
        assert faces, f"dlib found no face in {name}"
        out[name] = (rgb, max(faces, key=lambda f: f.area))
    return out


def _landmarks(face: Face) -> FloatArray:
    assert face.landmarks68 is not None
    return face.landmarks68


def _disc(size: tuple[int, int], centre: FloatArray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: size[1], : size[0]]
    return np.asarray((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2)


def _cheek_patches(landmarks: FloatArray) -> list[tuple[FloatArray, float]]:
    """Discs on both cheeks, halfway from the nostril wing (31/35) to the jaw (3/13), about 0.6 of the way from
    the nose tip; radius 0.12 of the eye distance. Not further out: on person_c_1 hair falls over the face's
    left edge and dlib's jaw points sit on that hair, so a patch 0.6 from the wing is 29% hair (correctly)."""
    eye_distance = float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))
    return [(landmarks[n] + 0.5 * (landmarks[j] - landmarks[n]), 0.12 * eye_distance) for n, j in ((31, 3), (35, 13))]


def _above_brows(shape: tuple[int, ...], face: Face) -> np.ndarray:
    """Full-frame band from 0.35 to 0.9 face-box heights above the brows, between the brows' outer ends."""
    lm = _landmarks(face)
    top, height = float(lm[17:27, 1].min()), face.height
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.asarray((yy < top - 0.35 * height) & (yy > top - 0.9 * height) & (xx > lm[17, 0]) & (xx < lm[26, 0]))


# --- geometry and I/O (no models) ----------------------------------------------------------


def test_square_crop_matrix_centres_the_raised_box() -> None:
    box = np.array([100.0, 200.0, 180.0, 300.0], np.float32)  # 80 x 100
    m = square_crop_matrix(box, 448, 2.0, 0.1)
    assert m[0, 0] == pytest.approx(448 / 200)
    centre = transform_points(np.array([[140.0, 250.0 - 10.0]]), m)[0]
    # the raised box centre lands on the crop's centre (pixel-centre convention: (size - 1) / 2)
    assert centre == pytest.approx([223.5, 223.5], abs=1e-3)


def test_labels_in_any_crop_is_a_nearest_neighbour_warp() -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[16:48, 16:48] = FaceClass.SKIN
    labels[16:24, 16:48] = FaceClass.HAIR
    matrix = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]], np.float32)  # image -> crop at half scale
    parsing = FaceParsing(labels=labels, matrix=matrix)
    # the same crop gives the map back exactly
    assert np.array_equal(parsing.labels_in(matrix, 64), labels)
    # full frame at 2x: ids stay ids (no blending between classes)
    full = parsing.labels_full((200, 220, 3))
    assert full.shape == (200, 220) and full.dtype == np.uint8
    assert set(np.unique(full).tolist()) <= {0, int(FaceClass.SKIN), int(FaceClass.HAIR)}
    assert full[int((32 + 20) * 2), int((32 + 10) * 2)] == FaceClass.SKIN
    assert full[int((18 + 20) * 2), int((32 + 10) * 2)] == FaceClass.HAIR
    # pixels the parser never saw get `outside`
    assert full[0, 0] == FaceClass.BACKGROUND
    assert parsing.labels_in(identity_matrix(), (220, 200), outside=255)[0, 0] == 255
    soft = parsing.mask_in([FaceClass.SKIN, FaceClass.HAIR], identity_matrix(), (220, 200), soft=True)
    assert soft.dtype == np.float32 and 0.0 < soft[int(15.5 * 2 + 40), 84] < 1.0  # anti-aliased edge


def test_hair_matte_in_crop_round_trips() -> None:
    alpha = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    result = HairMatteResult(alpha=alpha, matrix=np.array([[1.0, 0, -5], [0, 1.0, -7]], np.float32))
    assert np.allclose(result.matte_in(result.matrix, 32), alpha, atol=1e-6)
    assert result.matte_full((50, 60, 3))[7 + 10, 5 + 10] == pytest.approx(alpha[10, 10])


def test_integer_inputs_are_quantised_with_their_scale() -> None:
    detail = {"dtype": np.int8, "quantization": (1 / 128, 0), "name": "x"}
    q = to_model_input(np.array([-1.0, 0.0, 0.5, 2.0], np.float32), detail)
    assert q.dtype == np.int8 and q.tolist() == [-128, 0, 64, 127]
    assert to_model_input(np.ones(2), {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32


# --- MobileFaceNet -------------------------------------------------------------------------


def test_mobilefacenet_embeddings(mobilefacenet: MobileFaceNet, photos: dict[str, tuple[ImageRGB, Face]]) -> None:
    rgb, face = photos["person_a_1.jpg"]
    vec = mobilefacenet.embed(rgb, face.kps5)
    assert vec.shape == (192,) and vec.dtype == np.float32
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    assert mobilefacenet.embedding_space == "mobilefacenet-192"
    # odd-sized batches are padded; padding must not change anyone's vector
    items = [(photos[n][0], photos[n][1].kps5) for n in ("person_a_1.jpg", "person_b_1.jpg", "person_c_1.jpg")]
    many = mobilefacenet.embed_many(items)
    assert many.shape == (3, 192)
    assert np.allclose(many[0], vec, atol=1e-5)
    assert np.allclose(many[2], mobilefacenet.embed(*items[2]), atol=1e-5)
    assert mobilefacenet.embed_many([]).shape == (0, 192)
    assert mobilefacenet.similarity(vec, 3.0 * vec) == pytest.approx(1.0, abs=1e-6)


def test_mobilefacenet_separates_the_labelled_photos(
    mobilefacenet: MobileFaceNet,
    photos: dict[str, tuple[ImageRGB, Face]],
    shared_labels: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README figures: on the 276 pairs, AUC 1.0 and every same-person pair above ~0.45 > every other pair."""
    names = sorted(photos)
    items = [(photos[n][0], photos[n][1].kps5) for n in names]
    mobilefacenet.embed_many(items[:2])  # warm-up
    start = time.perf_counter()
    vectors = mobilefacenet.embed_many(items)
    ms_per_face = (time.perf_counter() - start) * 1000 / len(items)
    same: list[float] = []
    different: list[float] = []
    for i, j in itertools.combinations(range(len(names)), 2):
        score = mobilefacenet.similarity(vectors[i], vectors[j])
        (same if shared_labels[names[i]] == shared_labels[names[j]] else different).append(score)
    s, d = np.array(same), np.array(different)
    auc = float((s[:, None] > d[None, :]).mean() + 0.5 * (s[:, None] == d[None, :]).mean())
    with capsys.disabled():
        print(
            f"\n[mobilefacenet] {len(s) + len(d)} pairs: AUC {auc:.3f}, same-person min {s.min():.3f}, "
            f"different-person max {d.max():.3f}, {ms_per_face:.1f} ms/face (batches of {mobilefacenet.batch})"
        )
    assert len(s) + len(d) == 276
    assert auc == 1.0
    assert s.min() >= MOBILEFACENET_THRESHOLD > d.max()


# --- parser and hair matte on real photos --------------------------------------------------


def test_parser_output_is_labels_in_the_parser_crop(
    parser: FaceParser, photos: dict[str, tuple[ImageRGB, Face]]
) -> None:
    rgb, face = photos["person_a_1.jpg"]
    parsing = parser.parse(rgb, face.box)
    assert parsing.labels.shape == (448, 448) and parsing.labels.dtype == np.uint8
    present = set(np.unique(parsing.labels).tolist())
    assert {FaceClass.BACKGROUND, FaceClass.SKIN, FaceClass.NOSE, FaceClass.HAIR, FaceClass.U_LIP} <= present
    # the nose tip (dlib point 30) is labelled nose in the full frame
    tip = _landmarks(face)[30]
    assert parsing.labels_full(rgb.shape)[int(tip[1]), int(tip[0])] == FaceClass.NOSE


def test_parser_skin_on_cheeks_and_hair_on_top(
    parser: FaceParser, photos: dict[str, tuple[ImageRGB, Face]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Cheek patches are measured in an ArcFace-aligned 256 crop (the `labels_in` path a blend stage uses),
    the hair band above the brows in the full frame."""
    lines, worst_skin, worst_hair = [], 1.0, 0.0
    for name, (rgb, face) in photos.items():
        parsing = parser.parse(rgb, face.box)
        crop_matrix = alignment_matrix(face.kps5, 256, margin=0.25)
        labels = parsing.labels_in(crop_matrix, 256)
        crop_landmarks = transform_points(_landmarks(face), crop_matrix)
        for centre, radius in _cheek_patches(crop_landmarks):
            patch = _disc((256, 256), centre, radius)
            assert patch.sum() > 20, name
            skin = float((labels[patch] == FaceClass.SKIN).mean())
            hair = float((labels[patch] == FaceClass.HAIR).mean())
            worst_skin, worst_hair = min(worst_skin, skin), max(worst_hair, hair)
            assert skin >= 0.9, f"{name}: cheek patch only {skin:.0%} skin"
            assert hair < 0.05, f"{name}: cheek patch {hair:.0%} hair"
        band = _above_brows(rgb.shape, face)
        top_hair = float((parsing.labels_full(rgb.shape)[band] == FaceClass.HAIR).mean())
        lines.append(f"{name} {top_hair:.2f}")
        if name.rsplit("_", 1)[0] in BALD:
            assert top_hair < 0.1, f"{name}: bald head labelled {top_hair:.0%} hair"
        else:
            assert top_hair > 0.3, f"{name}: only {top_hair:.0%} hair above the brows"
    with capsys.disabled():
        print(f"\n[face parser] cheeks: min skin {worst_skin:.2f}, max hair {worst_hair:.2f}; hair above brows: ")
        print("  " + ", ".join(lines))


def test_hair_matte_on_top_not_on_cheeks(
    hair: HairMatte, photos: dict[str, tuple[ImageRGB, Face]], capsys: pytest.CaptureFixture[str]
) -> None:
    worst, lines = 0.0, []
    for name, (rgb, face) in photos.items():
        result = hair.matte(rgb, face.box)
        assert result.alpha.shape == (512, 512) and result.alpha.dtype == np.float32
        assert float(result.alpha.min()) >= 0.0 and float(result.alpha.max()) <= 1.0
        crop_matrix = alignment_matrix(face.kps5, 256, margin=0.25)
        matte = result.matte_in(crop_matrix, 256)
        crop_landmarks = transform_points(_landmarks(face), crop_matrix)
        for centre, radius in _cheek_patches(crop_landmarks):
            cover = float((matte[_disc((256, 256), centre, radius)] > 0.5).mean())
            worst = max(worst, cover)
            assert cover < 0.05, f"{name}: hair matte covers {cover:.0%} of a cheek patch"
        top = float((result.matte_full(rgb.shape)[_above_brows(rgb.shape, face)] > 0.5).mean())
        lines.append(f"{name} {top:.2f}")
        if name.rsplit("_", 1)[0] in BALD:
            assert top < 0.25, f"{name}: bald head matted {top:.0%} hair"
        else:
            assert top > 0.3, f"{name}: only {top:.0%} hair matte above the brows"
    with capsys.disabled():
        print(f"\n[hair matte] cheeks: max cover {worst:.2f}; hair above brows: ")
        print("  " + ", ".join(lines))


def test_parser_and_matte_agree_on_hair(
    parser: FaceParser, hair: HairMatte, photos: dict[str, tuple[ImageRGB, Face]]
) -> None:
    """Two independent networks: inside the parser's crop their hair masks overlap well (IoU)."""
    ious = []
    for name in ("person_a_1.jpg", "person_c_2.jpg", "person_e_1.jpg", "person_h_1.jpg"):
        rgb, face = photos[name]
        parsing = parser.parse(rgb, face.box)
        matte = hair.matte(rgb, face.box).matte_in(parsing.matrix, parsing.size) > 0.5
        labelled = parsing.mask([FaceClass.HAIR])
        ious.append(float((matte & labelled).sum() / max(1, (matte | labelled).sum())))
    assert min(ious) > 0.8, ious  # measured 0.88-0.95


def test_occluding_hair_is_seen_in_a_group_selfie(
    parser: FaceParser, hair: HairMatte, shared_faces_dir: Path, analyzer: DlibFaceAnalyzer
) -> None:
    """Checked by eye: in the selfie, the left-most woman's image-right cheek is hidden behind her neighbour's
    hair. Both networks say hair there and skin on every other cheek of the group photos (faces 96-290 px)."""
    for name in ("group_couple.jpg", "group_selfie_many_people.jpg"):
        rgb = load_image(shared_faces_dir / name).rgb
        faces = analyzer.detect(rgb)
        assert len(faces) == (2 if name == "group_couple.jpg" else 4)
        for index, face in enumerate(faces):
            labels = parser.parse(rgb, face.box).labels_full(rgb.shape)
            matte = hair.matte(rgb, face.box).matte_full(rgb.shape)
            for side, (centre, radius) in enumerate(_cheek_patches(_landmarks(face))):
                patch = _disc((rgb.shape[1], rgb.shape[0]), centre, radius)
                occluded = name == "group_selfie_many_people.jpg" and index == 0 and side == 1
                expected = FaceClass.HAIR if occluded else FaceClass.SKIN
                assert (labels[patch] == expected).mean() >= 0.9, (name, index, side)
                assert ((matte[patch] > 0.5).mean() >= 0.9) == occluded, (name, index, side)


def test_missing_model_files_are_reported(tmp_path: Path) -> None:
    from portraitforge.errors import ModelUnavailableError

    for loader in (MobileFaceNet.load, FaceParser.load, HairMatte.load):
        with pytest.raises(ModelUnavailableError):
            loader(tmp_path / "absent.tflite")
