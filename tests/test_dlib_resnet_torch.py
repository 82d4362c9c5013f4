"""The torch port of dlib's face descriptor against dlib itself, on real faces.

Tolerance: the port runs the same float32 network with a different summation order, so the two
descriptors agree to ~1e-6. We assert max |diff| < 1e-4 per element and Euclidean distance < 1e-3,
three orders of magnitude below the 0.6 same-person threshold.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from shared_data import faces_folder

from portraitforge.errors import ModelUnavailableError
from portraitforge.imageio import load_image
from portraitforge.models.dlib_models import DESCRIPTOR_RESNET, DlibModels, face_recognition_models_dir
from portraitforge.models.dlib_resnet_torch import (
    DlibFormatError,
    DlibResNet,
    TorchDescriptorBackend,
    load_descriptor_backend,
    load_weights,
    parse_dlib_resnet,
    synthetic_chip,
)
from portraitforge.refiners.detect import DLIB_MATCH_THRESHOLD, DlibFaceAnalyzer
from portraitforge.samples import astronaut, insightface_image
from portraitforge.types import Face

MAX_ABS_TOL = 1e-4
EUCLID_TOL = 1e-3


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # The conversion cache goes under PORTRAITFORGE_HOME; keep it out of the real home.
    path = tmp_path_factory.mktemp("pf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PORTRAITFORGE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def dat_path() -> Path:
    return face_recognition_models_dir() / DESCRIPTOR_RESNET


@pytest.fixture(scope="module")
def analyzer(home: Path) -> DlibFaceAnalyzer:
    """dlib's own descriptor path (the reference) with the verified torch backend beside it."""
    models = DlibModels.load(descriptor_backend="torch")
    assert models.descriptor_torch is not None
    return DlibFaceAnalyzer(models=models)


@pytest.fixture(scope="module")
def torch_backend(analyzer: DlibFaceAnalyzer) -> TorchDescriptorBackend:
    backend = analyzer.models.descriptor_torch
    assert isinstance(backend, TorchDescriptorBackend)
    return backend


def dlib_descriptor(analyzer: DlibFaceAnalyzer, image: np.ndarray, face: Face) -> np.ndarray:
    """dlib's compute_face_descriptor(image, shape, 0): what DlibFaceAnalyzer.embed did before the port."""
    reference = DlibFaceAnalyzer(
        models=DlibModels(analyzer.models.detector, analyzer.models.predictor68, analyzer.models.descriptor)
    )
    return reference.embed(image, face)


def assert_close(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (128,)
    assert ours.dtype == np.float32
    max_abs = float(np.abs(ours - ref).max())
    euclid = float(np.linalg.norm(ours - ref))
    assert max_abs < MAX_ABS_TOL, f"max abs diff {max_abs:.2e}"
    assert euclid < EUCLID_TOL, f"euclidean {euclid:.2e}"


# ------------------------------------------------------------------------------------------------
# Format


def test_parse_reads_the_whole_network(dat_path: Path) -> None:
    weights = parse_dlib_resnet(dat_path.read_bytes())
    # dlib's input_rgb_image_sized mean, as serialized.
    np.testing.assert_allclose(weights["input_mean"], [122.782, 117.001, 104.298], atol=1e-3)
    assert weights["conv1.weight"].shape == (32, 3, 7, 7)
    assert weights["fc.weight"].shape == (128, 256)
    convs = [k for k in weights if k.endswith(".weight") and k.startswith("blocks.")]
    assert len(convs) == 2 * 14  # 14 residual blocks of two convolutions
    assert weights["blocks.13.conv1.weight"].shape == (256, 256, 3, 3)
    n_params = sum(v.size for k, v in weights.items() if k != "input_mean")
    assert n_params == 5_614_592  # every float in the file, bias and affine included


def test_truncated_or_foreign_files_are_rejected(dat_path: Path) -> None:
    data = dat_path.read_bytes()
    with pytest.raises(DlibFormatError):
        parse_dlib_resnet(data[: len(data) // 2])
    with pytest.raises(DlibFormatError):
        parse_dlib_resnet(data + b"\x00")
    other = face_recognition_models_dir() / "shape_predictor_5_face_landmarks.dat"
    with pytest.raises(DlibFormatError):
        parse_dlib_resnet(other.read_bytes())


def test_cache_is_pinned_to_the_source_hash(dat_path: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "models"
    first = load_weights(dat_path, cache_dir=cache_dir)
    files = list(cache_dir.glob("*.safetensors"))
    assert len(files) == 1 and not list(cache_dir.glob("*.tmp"))
    mtime = files[0].stat().st_mtime_ns
    second = load_weights(dat_path, cache_dir=cache_dir)
    assert files[0].stat().st_mtime_ns == mtime  # read back, not rewritten
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)

    files[0].write_bytes(b"corrupt")  # a broken cache is ignored and replaced
    third = load_weights(dat_path, cache_dir=cache_dir)
    assert np.array_equal(third["fc.weight"], first["fc.weight"])
    assert files[0].stat().st_size > 20_000_000

    copy = tmp_path / DESCRIPTOR_RESNET
    shutil.copyfile(dat_path, copy)
    with copy.open("ab") as fh:  # a different source file gets its own cache entry (and fails to parse)
        fh.write(b"\x00")
    with pytest.raises(DlibFormatError):
        load_weights(copy, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*.safetensors"))) == 1


# ------------------------------------------------------------------------------------------------
# Parity with dlib


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_on_chips(analyzer: DlibFaceAnalyzer, torch_backend: TorchDescriptorBackend, seed: int) -> None:
    chip = synthetic_chip(seed)
    ref = np.asarray(analyzer.models.descriptor.compute_face_descriptor(chip, 0), np.float32)
    assert_close(torch_backend.compute_chips(chip[None])[0], ref)


def test_channels_first_and_last_agree(dat_path: Path, home: Path) -> None:
    chips = np.stack([synthetic_chip(3), synthetic_chip(4)])
    nchw = DlibResNet.from_dat(dat_path, channels_last=False).embed_chips(chips)
    nhwc = DlibResNet.from_dat(dat_path, channels_last=True).embed_chips(chips)
    assert np.abs(nchw - nhwc).max() < MAX_ABS_TOL


def _wheel_photos() -> list[tuple[str, np.ndarray]]:
    return [
        ("astronaut", astronaut()),
        ("Tom_Hanks_54745.png", load_image(insightface_image("Tom_Hanks_54745.png")).rgb),
        ("t1.jpg", load_image(insightface_image("t1.jpg")).rgb),
    ]


def test_parity_on_wheel_photos(analyzer: DlibFaceAnalyzer, torch_backend: TorchDescriptorBackend) -> None:
    n_faces = 0
    for name, image in _wheel_photos():
        faces = analyzer.detect(image)
        assert faces, name
        batch = torch_backend.compute_batch(image, [(f.landmarks68, f.box) for f in faces])
        assert batch.shape == (len(faces), 128)
        for face, from_batch in zip(faces, batch, strict=True):
            ref = dlib_descriptor(analyzer, image, face)
            single = torch_backend.compute(image, face.landmarks68, face.box)
            assert_close(single, ref)
            assert_close(from_batch, ref)
            assert_close(analyzer.embed(image, face), ref)  # the analyzer now goes through torch
            n_faces += 1
    assert n_faces >= 5  # astronaut, Tom Hanks and several of t1.jpg's six (HOG misses some)


def _shared_photos() -> list[tuple[Path, str]]:
    photos = faces_folder().require()
    with (photos / "identities.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [(photos / r["file"], r["identity"]) for r in rows if r["file"].startswith("person_")]


def test_identity_decisions_unchanged_on_shared_faces(
    analyzer: DlibFaceAnalyzer, torch_backend: TorchDescriptorBackend
) -> None:
    photos = _shared_photos()
    ours, refs, labels = [], [], []
    for file, label in photos:
        image = load_image(file).rgb
        faces = analyzer.detect(image)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        ref = dlib_descriptor(analyzer, image, face)
        mine = torch_backend.compute(image, face.landmarks68, face.box)
        assert_close(mine, ref)
        ours.append(mine)
        refs.append(ref)
        labels.append(label)
    assert len(labels) >= 20
    a, b = np.stack(ours), np.stack(refs)
    d_ours = np.linalg.norm(a[:, None] - a[None], axis=-1)
    d_ref = np.linalg.norm(b[:, None] - b[None], axis=-1)
    assert np.abs(d_ours - d_ref).max() < EUCLID_TOL
    for i, j in combinations(range(len(labels)), 2):
        assert (d_ours[i, j] < DLIB_MATCH_THRESHOLD) == (d_ref[i, j] < DLIB_MATCH_THRESHOLD)
    for i in range(len(labels)):  # the nearest-neighbour ranking of every photo is the same
        assert list(np.argsort(d_ours[i], kind="stable")) == list(np.argsort(d_ref[i], kind="stable"))


# ------------------------------------------------------------------------------------------------
# Backend selection and fallback


def test_backend_selection_and_fallback(dat_path: Path, analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    descriptor = analyzer.models.descriptor
    assert load_descriptor_backend(dat_path, descriptor, "dlib") is None
    backend = load_descriptor_backend(dat_path, descriptor, "torch", num_threads=1)
    assert backend is not None and backend.verified is not None
    assert backend.verified.euclidean < EUCLID_TOL

    broken = tmp_path / DESCRIPTOR_RESNET
    broken.write_bytes(dat_path.read_bytes()[:1000])
    assert load_descriptor_backend(broken, descriptor, "auto") is None  # falls back to dlib's own
    with pytest.raises(ModelUnavailableError):
        load_descriptor_backend(broken, descriptor, "torch")
    with pytest.raises(ValueError):
        load_descriptor_backend(dat_path, descriptor, "fast")


def test_analyzer_falls_back_to_dlib_when_torch_is_off(analyzer: DlibFaceAnalyzer) -> None:
    image = astronaut()
    face = analyzer.detect(image)[0]
    plain = DlibFaceAnalyzer(
        models=DlibModels(analyzer.models.detector, analyzer.models.predictor68, analyzer.models.descriptor)
    )
    assert plain.params()["descriptor"] == "dlib"
    assert analyzer.params()["descriptor"] == "torch"
    assert_close(analyzer.embed(image, face), plain.embed(image, face))
