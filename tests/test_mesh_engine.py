"""The embedded default: mesh analysis, the mesh swap engine, the detail stage and the second-recogniser grader.

Real photos from the wheels (astronaut, Tom Hanks, t1.jpg) and real models (MediaPipe, MobileFaceNet) from the
test home's model store, which conftest seeds from `portraitforge models setup` and ../shared/models.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.imageio import load_image
from portraitforge.models.mesh_topology import MeshTopology
from portraitforge.models.registry import MEDIAPIPE_FACE_MESH_CONNECTIONS
from portraitforge.models.store import ModelStore
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detail import DetailKeeper
from portraitforge.refiners.detect import DLIB_SPACE, DlibFaceAnalyzer
from portraitforge.refiners.quality import laplacian_variance
from portraitforge.refiners.swap_mesh import mouth_openness, polygon_mask, triangle_warp_maps
from portraitforge.types import Identity, ImageRGB, Status


@pytest.fixture(scope="session")
def mesh_pipeline() -> RefinePipeline:
    return RefinePipeline.from_config(RefineConfig())


@pytest.fixture(scope="session")
def hanks_rgb(hanks_path: Path) -> ImageRGB:
    return load_image(hanks_path).rgb


@pytest.fixture(scope="session")
def hanks_identity(mesh_pipeline: RefinePipeline, hanks_rgb: ImageRGB) -> Identity:
    return mesh_pipeline.identity_from_image(hanks_rgb, "hanks")


def test_default_config_is_the_mesh_engine_with_a_grader(mesh_pipeline: RefinePipeline) -> None:
    assert mesh_pipeline.analyzer.name == "mesh" and mesh_pipeline.swapper.name == "mesh"
    assert mesh_pipeline.grader is not None and mesh_pipeline.grader.name == "mobilefacenet"
    assert mesh_pipeline.detail is not None


@pytest.mark.parametrize("detector", ["blazeface", "auto"])
def test_group_photo_all_six_faces_at_default_settings(t1_rgb: ImageRGB, detector: str) -> None:
    pipe = RefinePipeline.from_config(RefineConfig(face_detector=detector))
    faces = pipe.analyzer.detect(t1_rgb)
    assert len(faces) == 6
    for face in faces:
        assert face.mesh is not None and face.mesh.shape == (468, 3)
        assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
        # The mesh sits on the face the detector found: its eyes are inside the box.
        x0, y0, x1, y1 = face.box
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.kps5[:2])


def test_close_up_and_aligned_crop_are_found(mesh_pipeline: RefinePipeline, hanks_rgb: ImageRGB) -> None:
    """A face filling a 112 px frame: the full-range model misses it, the short-range pass finds it."""
    faces = mesh_pipeline.analyzer.detect(hanks_rgb)
    assert len(faces) == 1 and faces[0].landmarks_confidence > 0.5


def test_mesh_keypoints_agree_with_dlib(mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB) -> None:
    dlib = DlibFaceAnalyzer.load()
    mesh_face = mesh_pipeline.analyzer.detect(astronaut_rgb)[0]
    dlib_face = dlib.detect(astronaut_rgb)[0]
    eye_distance = float(np.linalg.norm(dlib_face.kps5[1] - dlib_face.kps5[0]))
    error = np.linalg.norm(mesh_face.kps5 - dlib_face.kps5, axis=1).mean() / eye_distance
    assert error < 0.1
    # Same person, same photo: the descriptor on mesh-derived 68 points stays well within dlib's threshold.
    assert (
        dlib.distance(mesh_pipeline.analyzer.embed(astronaut_rgb, mesh_face), dlib.embed(astronaut_rgb, dlib_face))
        < 0.2
    )


def test_triangle_warp_is_exact_for_an_unchanged_mesh(mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB) -> None:
    store = ModelStore.from_dir()
    topology = MeshTopology.from_connections_file(store.ensure(MEDIAPIPE_FACE_MESH_CONNECTIONS.name))
    points = mesh_pipeline.analyzer.detect(astronaut_rgb)[0].mesh
    assert points is not None
    size = max(astronaut_rgb.shape[:2])
    outside = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    map_x, map_y = triangle_warp_maps(points, points, topology.triangles, size, outside)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    assert np.abs(map_x - grid_x).max() < 1e-2 and np.abs(map_y - grid_y).max() < 1e-2


def test_strength_zero_gives_the_target_back(
    mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    result = mesh_pipeline.with_config(RefineConfig(strength=0.0))(astronaut_rgb, hanks_identity)
    assert result.image is not None and np.array_equal(result.image, astronaut_rgb)


def test_strength_moves_identity_gradually(
    mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    similarities = []
    for strength in (0.3, 0.6, 1.0):
        result = mesh_pipeline.with_config(RefineConfig(strength=strength))(astronaut_rgb, hanks_identity)
        quality = result.report.faces[0].quality
        assert quality is not None and quality.grader is not None
        similarities.append(quality.grader.identity_similarity)
    assert similarities[0] < similarities[1] < similarities[2]


def test_open_mouth_keeps_its_teeth_when_the_identity_mouth_is_closed(
    mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB, hanks_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    target_face = mesh_pipeline.analyzer.detect(astronaut_rgb)[0]
    identity_face = mesh_pipeline.analyzer.detect(hanks_rgb)[0]
    assert target_face.mesh is not None and identity_face.mesh is not None
    assert mouth_openness(target_face.mesh) > 0.12 > mouth_openness(identity_face.mesh)  # the premise
    result = mesh_pipeline(astronaut_rgb, hanks_identity)
    assert result.image is not None
    topology = mesh_pipeline.swapper.topology  # type: ignore[attr-defined]
    assert astronaut_rgb.shape[0] == astronaut_rgb.shape[1]
    inner = polygon_mask(astronaut_rgb.shape[0], target_face.mesh[list(topology.lips_inner)])
    inner = cv2.erode(inner, np.ones((3, 3), np.uint8)) > 0
    assert inner.sum() > 50
    difference = np.abs(result.image.astype(np.float32) - astronaut_rgb.astype(np.float32))[inner].mean()
    assert difference < 12.0  # the target's own teeth, not a stretched lip


def test_detail_stage_restores_the_photos_fine_detail(astronaut_rgb: ImageRGB) -> None:
    original = astronaut_rgb[40:296, 120:376].copy()
    soft = cv2.GaussianBlur(original, (0, 0), 1.2)
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    weight = np.ones(original.shape[:2], np.float32)
    region = np.ones(original.shape[:2], np.uint8)
    restored = DetailKeeper(sigma=0.006)(soft, original, weight, identity, face_height_crop=256.0)
    before = laplacian_variance(soft, region) / laplacian_variance(original, region)
    after = laplacian_variance(restored, region) / laplacian_variance(original, region)
    assert before < 0.3 and after > 0.8
    untouched = DetailKeeper()(soft, original, np.zeros_like(weight), identity, face_height_crop=256.0)
    assert np.array_equal(untouched, soft)


def test_report_carries_the_graders_verdict_and_low_quality_uses_it(
    mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    full = mesh_pipeline(astronaut_rgb, hanks_identity)
    grader = full.report.faces[0].to_dict()["quality"]["grader"]
    assert grader["model"] == "mobilefacenet" and grader["threshold"] == 0.45
    assert -1.0 <= grader["original_similarity"] <= 1.0 and 0 <= grader["score"] <= 100
    weak = mesh_pipeline.with_config(RefineConfig(strength=0.15))(astronaut_rgb, hanks_identity)
    quality = weak.report.faces[0].quality
    assert quality is not None and quality.grader is not None and not quality.grader.passed
    assert weak.report.status is Status.LOW_QUALITY and "mobilefacenet" in weak.report.message


def test_identity_store_keeps_and_recomputes_the_graders_embedding(
    mesh_pipeline: RefinePipeline, tmp_path: Path, hanks_rgb: ImageRGB, astronaut_rgb: ImageRGB
) -> None:
    grader = mesh_pipeline.grader
    assert grader is not None
    store = IdentityStore(tmp_path / "store")
    dlib = DlibFaceAnalyzer.load()
    store.add("with", [hanks_rgb], analyzers=[dlib, grader])
    record, _ = store.load("with")
    assert set(record.spaces) == {DLIB_SPACE, grader.embedding_space}
    # An identity stored before the grader existed gets its embedding on first use, once, persisted.
    store.add("without", [astronaut_rgb], analyzers=[dlib])
    assert grader.embedding_space not in store.load("without")[0].spaces
    identity = store.get("without", dlib, graders=[grader])
    assert grader.embedding_space in identity.embeddings
    assert grader.embedding_space in store.load("without")[0].spaces
    face = mesh_pipeline.analyzer.detect(astronaut_rgb)[0]
    assert grader.similarity(identity.embeddings[grader.embedding_space], grader.embed(astronaut_rgb, face)) > 0.8


def test_output_is_deterministic(
    mesh_pipeline: RefinePipeline, astronaut_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    first = mesh_pipeline(astronaut_rgb, hanks_identity)
    second = mesh_pipeline(astronaut_rgb, hanks_identity)
    assert first.image is not None and second.image is not None
    assert np.array_equal(first.image, second.image)


def test_group_photo_refines_every_face(
    mesh_pipeline: RefinePipeline, t1_rgb: ImageRGB, hanks_identity: Identity
) -> None:
    result = mesh_pipeline.with_config(RefineConfig(select="all"))(t1_rgb, hanks_identity)
    assert result.ok and [f.index for f in result.report.faces] == list(range(6))
    assert result.image is not None and not np.array_equal(result.image, t1_rgb)


def test_glasses_frames_are_found_and_the_eyes_behind_them_are_not(
    mesh_pipeline: RefinePipeline, shared_faces_dir: Path
) -> None:
    """person_i wears glasses: the parser labels frames and lenses as one region; only the frame is an occluder."""
    from portraitforge.models.face_parsing import FaceClass, FaceParser
    from portraitforge.refiners.swap_mesh import face_height, glasses_frames

    store = ModelStore.from_dir()
    if not store.has("bisenetv2_face_parsing"):
        pytest.skip("the face parser (../shared/models) is not in the model store")
    parser = FaceParser.load(store.ensure("bisenetv2_face_parsing", download=False))
    photo = load_image(shared_faces_dir / "person_i_1.jpg").rgb
    face = mesh_pipeline.analyzer.detect(photo)[0]
    assert face.mesh is not None
    labels = parser.labels(photo, face.box)
    glasses = labels == FaceClass.EYE_G
    topology = mesh_pipeline.swapper.topology  # type: ignore[attr-defined]
    eyes = np.zeros(glasses.shape, np.uint8)
    for loop in (topology.left_eye, topology.right_eye):
        cv2.fillPoly(eyes, [np.round(face.mesh[list(loop), :2]).astype(np.int32)], 255)
    frames = glasses_frames(photo, glasses, eyes, face_height(face.mesh))
    assert glasses.sum() > 500
    assert 0.15 < frames.sum() / glasses.sum() < 0.8  # the rims, not the lenses
    assert not (frames & (eyes > 0)).any()


def test_stored_identity_keeps_its_mesh_and_refines_like_the_fresh_one(
    mesh_pipeline: RefinePipeline, tmp_path: Path, hanks_rgb: ImageRGB, astronaut_rgb: ImageRGB
) -> None:
    fresh = mesh_pipeline.identity_from_image(hanks_rgb, "hanks")
    store = IdentityStore(tmp_path / "store")
    store.add("hanks", [hanks_rgb], analyzers=[mesh_pipeline.analyzer])
    stored = store.get("hanks", mesh_pipeline.analyzer)
    assert stored.reference_mesh is not None and fresh.reference_mesh is not None
    assert np.allclose(stored.reference_mesh, fresh.reference_mesh, atol=1e-4)
    a, b = mesh_pipeline(astronaut_rgb, fresh), mesh_pipeline(astronaut_rgb, stored)
    assert a.image is not None and b.image is not None and np.array_equal(a.image, b.image)
