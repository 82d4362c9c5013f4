"""Building the refine stages from a `RefineConfig`: the one place where their model files are found and loaded.

Each builder takes the config and the model store and returns a ready stage (or None for an optional one
that is absent). Optional models follow one rule: `auto` uses a file already in the store and never
downloads it; an explicit choice fetches it (or fails with MODEL_UNAVAILABLE, exit 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from portraitforge.config import RefineConfig
from portraitforge.errors import ModelUnavailableError
from portraitforge.models.onnx_runtime import OnnxSessionPool
from portraitforge.models.registry import (
    BISENETV2_FACE_PARSING,
    MEDIAPIPE_FACE_DETECTION_FULL_SPARSE,
    MEDIAPIPE_FACE_DETECTION_SHORT,
    MEDIAPIPE_FACE_LANDMARK,
    MEDIAPIPE_FACE_MESH_CONNECTIONS,
    MOBILEFACENET,
    YUNET,
)
from portraitforge.models.store import ModelStore
from portraitforge.refiners.base import FaceAnalyzer

if TYPE_CHECKING:
    from portraitforge.models.face_parsing import FaceParser
    from portraitforge.refiners.detect_mesh import MeshFaceAnalyzer
    from portraitforge.refiners.grade import IdentityGrader
    from portraitforge.refiners.swap_mesh import MeshSwapper


def _present(store: ModelStore, name: str) -> bool:
    return store.check(name, hash_if_needed=False).state in ("ok", "unverified", "present")


def load_analyzer(cfg: RefineConfig, store: ModelStore, pool: OnnxSessionPool) -> FaceAnalyzer:
    backend = cfg.resolved_analyzer
    if backend == "insightface":
        from portraitforge.refiners.detect_insightface import InsightFaceAnalyzer

        gender = None if cfg.gender == "any" else cfg.gender
        return InsightFaceAnalyzer.load(store=store, pool=pool, gender=gender)
    from portraitforge.refiners.detect import DlibFaceAnalyzer

    dlib = DlibFaceAnalyzer.load(descriptor_backend=cfg.descriptor_backend, detect_max_side=cfg.detect_max_side)
    if backend == "dlib":
        return dlib
    return load_mesh_analyzer(cfg, store, dlib)


def load_mesh_analyzer(cfg: RefineConfig, store: ModelStore, descriptor: FaceAnalyzer) -> MeshFaceAnalyzer:
    from portraitforge.models.mediapipe_face import BlazeFaceDetector, FaceMesh, YuNetDetector
    from portraitforge.refiners.detect import DlibFaceAnalyzer
    from portraitforge.refiners.detect_mesh import CombinedDetector, Detector, MeshFaceAnalyzer

    assert isinstance(descriptor, DlibFaceAnalyzer)
    choice = cfg.face_detector
    if choice == "auto":
        choice = "yunet" if _present(store, YUNET.name) else "blazeface"
    detector: Detector
    if choice == "yunet":
        detector = YuNetDetector.load(store.ensure(YUNET.name), detect_max_side=cfg.detect_max_side)
    else:
        detector = CombinedDetector(
            [
                BlazeFaceDetector.load(store.ensure(MEDIAPIPE_FACE_DETECTION_FULL_SPARSE.name)),
                BlazeFaceDetector.load(store.ensure(MEDIAPIPE_FACE_DETECTION_SHORT.name)),
            ]
        )
    mesh = FaceMesh.load(store.ensure(MEDIAPIPE_FACE_LANDMARK.name))
    return MeshFaceAnalyzer(detector=detector, mesh=mesh, descriptor=descriptor, detector_name=choice)


def load_parser(cfg: RefineConfig, store: ModelStore) -> FaceParser | None:
    """The face parser for the mesh engine's masks. Its weights were trained on CelebAMask-HQ (non-commercial
    research data), so `auto` only uses a copy the user put in the store; it is never fetched implicitly."""
    if cfg.parsing == "off" or (cfg.parsing == "auto" and not _present(store, BISENETV2_FACE_PARSING.name)):
        return None
    from portraitforge.models.face_parsing import FaceParser

    return FaceParser.load(store.ensure(BISENETV2_FACE_PARSING.name))


def load_mesh_swapper(cfg: RefineConfig, store: ModelStore) -> MeshSwapper:
    from portraitforge.models.mesh_topology import MeshTopology
    from portraitforge.refiners.swap_mesh import MeshSwapper

    topology = MeshTopology.from_connections_file(store.ensure(MEDIAPIPE_FACE_MESH_CONNECTIONS.name))
    parser = load_parser(cfg, store)
    return MeshSwapper(
        topology=topology,
        parser=None if parser is None else parser.labels,
        color_transfer=cfg.color_transfer,
        keep_detail=cfg.keep_detail,
    )


def load_grader(cfg: RefineConfig, store: ModelStore, analyzer: FaceAnalyzer) -> IdentityGrader | None:
    """The second recogniser. `auto` is best effort: without its file the report simply has no grader."""
    from portraitforge.refiners.grade import dlib_grader, mobilefacenet_grader

    choice = cfg.resolved_grader
    if choice == "none":
        return None
    if choice == "dlib":  # only for inswapper (RefineConfig refuses it with the embedded engines)
        from portraitforge.refiners.detect import DlibFaceAnalyzer

        return dlib_grader(DlibFaceAnalyzer.load(descriptor_backend=cfg.descriptor_backend))
    try:
        path = store.ensure(MOBILEFACENET.name, download=cfg.grader != "auto")
    except ModelUnavailableError:
        if cfg.grader == "auto":
            return None
        raise
    return mobilefacenet_grader(path, analyzer)
