"""A PyTorch port of dlib's 128-d face descriptor network, loaded from dlib's own `.dat` file.

dlib-bin ships without BLAS, so one descriptor costs ~175 ms on two cores; the same network on
torch's CPU kernels costs a few ms. The weights are read straight from
`dlib_face_recognition_resnet_model_v1.dat` (no other copy of the model exists here), and the
architecture is the `anet_type` of dlib's `examples/dnn_face_recognition_ex.cpp`:

    input_rgb_image_sized<150>            (rgb - mean) / 256
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>
    3 x ares<32>, ares_down<64>  + 3 x ares<64>, ares_down<128> + 2 x ares<128>,
    ares_down<256> + 2 x ares<256>, ares_down<256>
    avg_pool_everything, fc_no_bias<128>

    ares<N>(x)      = relu(block(x) + x)
    ares_down<N>(x) = relu(block_stride2(x) + avg_pool<2,2,2,2>(x))
    block           = affine(con3x3(relu(affine(con3x3_stride(x)))))

dlib's `add_prev` adds tensors of different shapes by zero-padding both to the larger size in every
dimension (channels and the bottom/right of the spatial grid); the downsampling blocks rely on it
(32 -> 64 channels, and 3x3 + 4x4 spatial at the 256-channel stage). Strided convolutions and
pools use no padding (dlib's default `_stride != 1 ? 0 : size/2`), stride-1 3x3 convolutions pad 1.

File format (dlib/dnn/core.h, layers.h, tensor.h, serialize.h): `add_loss_layer` writes its version,
the loss details, then the network top-down; each `add_layer` writes its version, then its whole
subnetwork, then its own details and bookkeeping, so the layers come out bottom-up after a run of
nested version numbers. Integers use dlib's packed encoding (a size/sign byte, then little-endian
bytes), floats/doubles a packed (mantissa, exponent) pair, bools a '0'/'1' char, and tensors a
version, four dims and raw little-endian float32 data. The parser below checks every layer name,
shape and hyper-parameter against the expected architecture and that the file ends where it should.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from portraitforge.atomic import atomic_write_bytes, bytes_sha256
from portraitforge.errors import ModelUnavailableError
from portraitforge.refiners.upscale import torch_threads

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # what dlib's compute_face_descriptor uses for get_face_chip_details
DESCRIPTOR_DIM = 128
CONVERTER_VERSION = "1"  # bump when the cached tensor layout changes
# Verification against dlib on a synthetic chip: the port differs by float32 summation order only.
PARITY_TOLERANCE = 1e-3

# (channels, number of blocks, whether the first block downsamples), bottom-up: alevel4 .. alevel0.
_STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


def block_specs() -> list[tuple[int, int, bool]]:
    """(in_channels, out_channels, downsample) for each residual block, bottom-up."""
    specs: list[tuple[int, int, bool]] = []
    cin = 32
    for cout, count, first_down in _STAGES:
        for i in range(count):
            specs.append((cin, cout, first_down and i == 0))
            cin = cout
    return specs


# --------------------------------------------------------------------------------------------------
# Parsing dlib's serialization


class DlibFormatError(ValueError):
    """The file is not the dlib face recognition ResNet this port implements."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def integer(self) -> int:
        # dlib serialize.h pack_int: low nibble = byte count, 0x80 = negative, then little-endian magnitude.
        head = self.data[self.pos]
        size = head & 0x0F
        if head & 0x70 or size > 8:
            raise DlibFormatError(f"bad integer header 0x{head:02x} at byte {self.pos}")
        start = self.pos + 1
        value = int.from_bytes(self.data[start : start + size], "little")
        self.pos = start + size
        return -value if head & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        text = self.data[self.pos : self.pos + size]
        self.pos += size
        return text.decode("latin-1")

    def real(self) -> float:
        # dlib serializes float/double as a portable (int64 mantissa, int16 exponent) pair.
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0**exponent

    def flag(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.reshape(shape).astype(np.float32)

    def alias_tensor(self) -> tuple[int, ...]:
        if self.integer() != 1:
            raise DlibFormatError("unsupported alias_tensor version")
        return tuple(self.integer() for _ in range(4))

    def expect(self, name: str) -> None:
        found = self.string()
        if found != name:
            raise DlibFormatError(f"expected layer '{name}', found '{found}' at byte {self.pos}")


@dataclass
class _Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag (tag or skip: no payload)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    config: tuple[int, ...] = ()


def _read_details(r: _Reader) -> _Layer:
    name = r.string()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        filters, biases = r.alias_tensor(), r.alias_tensor()
        for _ in range(4):  # learning-rate / weight-decay multipliers
            r.real()
        n_w = int(np.prod(filters))
        if filters[0] != num_filters or n_w + int(np.prod(biases)) != params.size:
            raise DlibFormatError("con_ parameter sizes do not add up")
        # params = filters (num_filters, k, nr, nc) then biases: the same layout as torch's Conv2d.
        return _Layer(
            "con",
            {"weight": params[:n_w].reshape(filters), "bias": params[n_w:].copy()},
            (num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x),
        )
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gamma, beta = r.alias_tensor(), r.alias_tensor()
        mode = r.integer()
        n = int(np.prod(gamma))
        if mode != 0 or n + int(np.prod(beta)) != params.size:  # 0 = CONV_MODE: one scale/shift per channel
            raise DlibFormatError("unexpected affine_ layer")
        return _Layer("affine", {"gamma": params[:n].copy(), "beta": params[n:].copy()})
    if name in ("max_pool_2", "avg_pool_2"):
        return _Layer(name[:-2], config=tuple(r.integer() for _ in range(6)))
    if name in ("relu_", "add_prev_"):
        return _Layer(name[:-1])
    if name == "fc_2":
        num_outputs, num_inputs = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        weights, biases = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.integer()
        for _ in range(4):
            r.real()
        if bias_mode != 1 or int(np.prod(biases)) != 0 or weights != (num_inputs, num_outputs, 1, 1):
            raise DlibFormatError("expected fc_no_bias")
        # dlib computes output = input @ W with W stored (num_inputs, num_outputs) row-major.
        return _Layer("fc", {"weight": params.reshape(num_inputs, num_outputs).T.copy()}, (num_outputs, num_inputs))
    raise DlibFormatError(f"unsupported dlib layer '{name}'")


def _expected_kinds() -> list[str]:
    """Layer kinds of dlib's anet_type, bottom-up, with tag/skip layers as 'tag'."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _cin, _cout, down in block_specs():
        kinds += ["tag", "con", "affine", "relu", "con", "affine"]
        kinds += ["tag", "tag", "avg_pool", "add_prev", "relu"] if down else ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


def parse_dlib_resnet(data: bytes) -> dict[str, np.ndarray]:
    """Read dlib's serialized face recognition ResNet into a flat dict of float32 arrays.

    Keys: `input_mean` (3,), `conv1.weight/bias`, `affine1.gamma/beta`, `blocks.{i}.conv{1,2}.weight/bias`,
    `blocks.{i}.affine{1,2}.gamma/beta` and `fc.weight` (128, 256). The raw (unfolded) dlib values.
    """
    try:
        return _parse(_Reader(data))
    except DlibFormatError:
        raise
    except (IndexError, ValueError) as exc:  # read past the end: a truncated file
        raise DlibFormatError(f"truncated or corrupt dlib network file ({exc})") from None


def _parse(r: _Reader) -> dict[str, np.ndarray]:
    if r.integer() != 1:
        raise DlibFormatError("unexpected add_loss_layer version")
    r.expect("loss_metric_2")
    r.real(), r.real()  # margin, distance threshold: training-only
    versions: list[int] = []
    while True:  # nested add_layer (2) / tag / skip (1) versions, outermost first, until the input layer's (3)
        versions.append(r.integer())
        if versions[-1] == 3 or len(versions) > 1000:
            break
    if versions[-1] != 3 or any(v not in (1, 2) for v in versions[:-1]):
        raise DlibFormatError("unexpected network nesting")
    r.expect("input_rgb_image_sized")
    mean = np.array([r.real(), r.real(), r.real()], np.float32)
    if (r.integer(), r.integer()) != (CHIP_SIZE, CHIP_SIZE):
        raise DlibFormatError("expected a 150x150 input layer")

    layers: list[_Layer] = []
    for version in reversed(versions):  # bottom-up; the innermost add_layer (version 3) holds the input layer
        if version == 1:
            layers.append(_Layer("tag"))
            continue
        layers.append(_read_details(r))
        r.flag(), r.flag(), r.flag()  # setup called, gradient stale, output disabled
        for _ in range(3):  # x_grad, cached_output and params_grad (grad_final for the input-side layer)
            if r.tensor().size:
                raise DlibFormatError("unexpected non-empty training tensor")
        if version == 3:
            r.integer()  # sample_expansion_factor
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} trailing bytes")
    kinds = [layer.kind for layer in layers]
    if kinds != _expected_kinds():
        raise DlibFormatError("layer sequence differs from dlib's face recognition ResNet")
    return _collect_weights(layers, mean)


def _collect_weights(layers: list[_Layer], mean: np.ndarray) -> dict[str, np.ndarray]:
    convs = [layer for layer in layers if layer.kind == "con"]
    affines = [layer for layer in layers if layer.kind == "affine"]
    pools = [layer for layer in layers if layer.kind in ("max_pool", "avg_pool")]
    if convs[0].config != (32, 7, 7, 2, 2, 0, 0) or pools[0].config != (3, 3, 2, 2, 0, 0):
        raise DlibFormatError("unexpected stem")
    if any(p.config != (2, 2, 2, 2, 0, 0) for p in pools[1:-1]) or pools[-1].config != (0, 0, 1, 1, 0, 0):
        raise DlibFormatError("unexpected pooling layers")
    out: dict[str, np.ndarray] = {"input_mean": mean}
    out["conv1.weight"], out["conv1.bias"] = convs[0].tensors["weight"], convs[0].tensors["bias"]
    out["affine1.gamma"], out["affine1.beta"] = affines[0].tensors["gamma"], affines[0].tensors["beta"]
    for i, (cin, cout, down) in enumerate(block_specs()):
        stride = 2 if down else 1
        pad = 0 if down else 1  # dlib's default padding: none for strided layers
        expected = [(cout, 3, 3, stride, stride, pad, pad), (cout, 3, 3, 1, 1, 1, 1)]
        for j in (1, 2):
            conv, affine = convs[2 * i + j], affines[2 * i + j]
            if conv.config != expected[j - 1] or conv.tensors["weight"].shape[1] != (cin if j == 1 else cout):
                raise DlibFormatError(f"unexpected convolution in block {i}")
            out[f"blocks.{i}.conv{j}.weight"] = conv.tensors["weight"]
            out[f"blocks.{i}.conv{j}.bias"] = conv.tensors["bias"]
            out[f"blocks.{i}.affine{j}.gamma"] = affine.tensors["gamma"]
            out[f"blocks.{i}.affine{j}.beta"] = affine.tensors["beta"]
    fc = layers[-1]
    if fc.config != (DESCRIPTOR_DIM, 256):
        raise DlibFormatError("unexpected fc layer")
    out["fc.weight"] = fc.tensors["weight"]
    return out


# --------------------------------------------------------------------------------------------------
# The network


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum has the larger size in every dimension; missing entries count as 0."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


def _folded_conv(weight: np.ndarray, bias: np.ndarray, gamma: np.ndarray, beta: np.ndarray, stride: int) -> nn.Conv2d:
    """con followed by affine (dlib's inference-time bn) as one convolution: w*g, b*g + beta."""
    out_ch, in_ch, k, _ = weight.shape
    # skip_init + wrapping numpy arrays: no random initialisation, no (multi-threaded) copy into torch.
    conv = skip_init(nn.Conv2d, in_ch, out_ch, k, stride=stride, padding=0 if stride != 1 else k // 2, bias=True)
    conv.weight = nn.Parameter(torch.from_numpy(weight * gamma[:, None, None, None]), requires_grad=False)
    conv.bias = nn.Parameter(torch.from_numpy(bias * gamma + beta), requires_grad=False)
    return conv


class _ResBlock(nn.Module):
    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, downsample: bool) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(_add_zero_padded(y, shortcut))


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 in torch: (N, 150, 150, 3) uint8 RGB chips -> (N, 128)."""

    input_mean: torch.Tensor

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.from_numpy(weights["input_mean"].reshape(1, 3, 1, 1).copy()))
        self.stem = _folded_conv(
            weights["conv1.weight"], weights["conv1.bias"], weights["affine1.gamma"], weights["affine1.beta"], 2
        )
        blocks = []
        for i, (_cin, _cout, down) in enumerate(block_specs()):
            convs = [
                _folded_conv(
                    weights[f"blocks.{i}.conv{j}.weight"],
                    weights[f"blocks.{i}.conv{j}.bias"],
                    weights[f"blocks.{i}.affine{j}.gamma"],
                    weights[f"blocks.{i}.affine{j}.beta"],
                    2 if (down and j == 1) else 1,
                )
                for j in (1, 2)
            ]
            blocks.append(_ResBlock(convs[0], convs[1], down))
        self.blocks = nn.Sequential(*blocks)
        self.fc = skip_init(nn.Linear, 256, DESCRIPTOR_DIM, bias=False)
        self.fc.weight = nn.Parameter(torch.from_numpy(weights["fc.weight"].copy()), requires_grad=False)
        self.channels_last = False
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_dat(
        cls, path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, channels_last: bool = True
    ) -> DlibResNet:
        """Build from dlib's .dat file, in eval mode without gradients.

        Converted weights are cached as safetensors in `cache_dir` (default `home_dir()/models`, `""` for no
        cache). channels_last is ~20% faster here: torch's NHWC max-pool and small convolutions vectorise
        over channels.
        """
        weights = load_weights(Path(path), cache_dir=cache_dir)
        net = cls(weights)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            net.channels_last = True
        return net

    def preprocess(self, chips: np.ndarray) -> torch.Tensor:
        """(N, 150, 150, 3) uint8 RGB -> (N, 3, 150, 150) float32 as dlib's input_rgb_image_sized: (x - mean) / 256."""
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 chips, got {chips.shape} {chips.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2).float()
        x = (x - self.input_mean) / 256.0
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 chips -> (N, 128) float32 descriptors."""
        with torch.inference_mode():
            return self(self.preprocess(chips)).numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------
# Conversion cache


def default_cache_dir() -> Path:
    from portraitforge.paths import home_dir

    return home_dir() / "models"


def load_weights(path: Path, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """Parsed weights of `path`, read from a safetensors cache pinned to the file's sha256 when present.

    `cache_dir=""` disables the cache. A corrupt or foreign cache file is ignored and rewritten.
    """
    from safetensors.numpy import load_file
    from safetensors.numpy import save as save_safetensors

    data = path.read_bytes()
    sha = bytes_sha256(data)
    folder = default_cache_dir() if cache_dir is None else (Path(cache_dir) if str(cache_dir) else None)
    cache = folder / f"{path.stem}.torch-v{CONVERTER_VERSION}.{sha[:16]}.safetensors" if folder else None
    if cache is not None and cache.is_file():
        with contextlib.suppress(Exception):
            from safetensors import safe_open

            with safe_open(str(cache), framework="numpy") as fh:
                meta = fh.metadata() or {}
            if meta.get("source_sha256") == sha and meta.get("converter") == CONVERTER_VERSION:
                return load_file(str(cache))
    weights = parse_dlib_resnet(data)
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only home must not stop the model from loading
            metadata = {"source": path.name, "source_sha256": sha, "converter": CONVERTER_VERSION}
            atomic_write_bytes(cache, save_safetensors(weights, metadata=metadata))
    return weights


# --------------------------------------------------------------------------------------------------
# Descriptor backend: dlib's chip alignment + the torch network


def dlib_shape(landmarks68: np.ndarray, box: np.ndarray) -> Any:
    import dlib

    # The same integer rounding as DlibFaceAnalyzer.embed, so both backends see the same chip.
    rect = dlib.rectangle(*(int(round(float(v))) for v in np.asarray(box)[:4]))
    parts = [dlib.point(int(round(float(x))), int(round(float(y)))) for x, y in np.asarray(landmarks68)]
    return dlib.full_object_detection(rect, parts)


def face_chips(image_rgb: np.ndarray, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """dlib's own 150x150 alignment (what compute_face_descriptor uses) for (landmarks68, box) pairs."""
    import dlib

    dets = dlib.full_object_detections()
    for landmarks, box in faces:
        dets.append(dlib_shape(landmarks, box))
    chips = dlib.get_face_chips(np.ascontiguousarray(image_rgb), dets, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.stack([np.asarray(c, np.uint8) for c in chips]) if chips else np.zeros((0, 150, 150, 3), np.uint8)


def synthetic_chip(seed: int = 0) -> np.ndarray:
    """A deterministic 150x150 test chip: smooth gradients plus noise, exercising every weight."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE].astype(np.float32) / CHIP_SIZE
    base = np.stack([200 * xx + 30, 180 * yy + 40, 120 * (xx + yy) / 2 + 60], axis=-1)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


@dataclass
class ParityReport:
    max_abs_diff: float
    euclidean: float


@dataclass
class TorchDescriptorBackend:
    """128-d dlib face descriptors: dlib aligns the chip, torch runs the network.

    `num_threads` is set around each call and restored after (None: leave torch's setting). The default 1
    is deliberate: at batch 1 a second thread gains little, and on a busy 2-core machine OpenMP's
    barriers made a 2-thread descriptor 10-40x slower than a 1-thread one (benchmarks/bench_descriptor.py).
    """

    net: DlibResNet
    num_threads: int | None = 1
    verified: ParityReport | None = None
    name: str = "torch"

    @classmethod
    def from_dat(
        cls,
        path: str | os.PathLike[str],
        num_threads: int | None = 1,
        cache_dir: str | os.PathLike[str] | None = None,
        channels_last: bool = True,
    ) -> TorchDescriptorBackend:
        with torch_threads(num_threads):  # the channels_last conversion copies every weight
            net = DlibResNet.from_dat(path, cache_dir=cache_dir, channels_last=channels_last)
        return cls(net=net, num_threads=num_threads)

    def compute_chips(self, chips: np.ndarray) -> np.ndarray:
        with torch_threads(self.num_threads):
            return self.net.embed_chips(chips)

    def compute(self, image_rgb: np.ndarray, landmarks68: np.ndarray, box: np.ndarray) -> np.ndarray:
        """One face -> (128,) float32, matching dlib's compute_face_descriptor(image, shape, 0)."""
        return self.compute_chips(face_chips(image_rgb, [(landmarks68, box)]))[0]

    def compute_batch(self, image_rgb: np.ndarray, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Several faces of one image, as (landmarks68, box) pairs -> (N, 128) float32."""
        if not faces:
            return np.zeros((0, DESCRIPTOR_DIM), np.float32)
        return self.compute_chips(face_chips(image_rgb, faces))

    def verify_against(self, dlib_descriptor: Any, tolerance: float = PARITY_TOLERANCE) -> ParityReport:
        """Compare with dlib's own network on a synthetic chip; raises ModelUnavailableError on mismatch."""
        chip = synthetic_chip()
        ref = np.asarray(dlib_descriptor.compute_face_descriptor(chip, 0), np.float32)
        ours = self.compute_chips(chip[None])[0]
        report = ParityReport(float(np.abs(ours - ref).max()), float(np.linalg.norm(ours - ref)))
        if not report.euclidean < tolerance:
            raise ModelUnavailableError(
                f"torch port of the dlib descriptor disagrees with dlib (distance {report.euclidean:.2e})"
            )
        self.verified = report
        return report


def load_descriptor_backend(
    dat_path: str | os.PathLike[str], dlib_descriptor: Any, mode: str = "auto", num_threads: int | None = 1
) -> TorchDescriptorBackend | None:
    """The torch descriptor for `DlibModels`, checked against dlib's own network, or None to use dlib's.

    mode "dlib": None. "torch": the verified torch backend, or ModelUnavailableError. "auto": the torch
    backend when it loads and matches dlib, else None (dlib's own descriptor), with a logged warning.
    """
    if mode == "dlib":
        return None
    if mode not in ("auto", "torch"):
        raise ValueError(f"unknown descriptor backend '{mode}': expected auto, dlib or torch")
    try:
        backend = TorchDescriptorBackend.from_dat(dat_path, num_threads=num_threads)
        backend.verify_against(dlib_descriptor)
        return backend
    except Exception as exc:
        if mode == "torch":
            if isinstance(exc, ModelUnavailableError):
                raise
            raise ModelUnavailableError(f"torch port of the dlib descriptor failed to load: {exc}") from exc
        logging.getLogger(__name__).warning("torch dlib descriptor unavailable, using dlib's own: %s", exc)
        return None
