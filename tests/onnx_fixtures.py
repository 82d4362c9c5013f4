"""Tiny synthetic ONNX models with the exact input/output signatures of insightface's real models.

Real weights cannot be downloaded here, so every code path that loads them is exercised on these:
- ArcFace (w600k_r50): "input.1" Nx3x112x112 -> Nx512
- genderage: "data" Nx3x96x96 -> Nx3 (female, male, age/100)
- inswapper_128: "target" 1x3x128x128 and "source" 1x512 -> "output" 1x3x128x128, with a 512x512 `emap`
  as the graph's LAST initializer (insightface reads it from there)
- SCRFD det_10g: "input.1" 1x3xHxW (dynamic) -> 9 outputs: scores, boxes, keypoints for strides 8/16/32,
  two anchors per location, either unbatched (N x C) or batched (1 x N x C)

Weights are small and random (seeded), and the per-channel weights differ, so a BGR/RGB mix-up or a
wrong normalisation changes the outputs measurably.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8


def _model(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name=name)


def make_arcface(path: Path, seed: int = 0) -> Path:
    """Conv 8x8/8 -> ReLU -> Flatten -> Gemm to 512. Node names avoid 'Sub'/'Mul' prefixes so that
    insightface's ArcFaceONNX picks the w600k normalisation (mean 127.5, std 127.5)."""
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.05, (16, 3, 8, 8)).astype(np.float32)
    conv_w[:, 0] *= 2.0  # channel asymmetry: swapping R and B must change the embedding
    conv_b = rng.normal(0, 0.1, 16).astype(np.float32)
    fc_w = rng.normal(0, 0.02, (16 * 14 * 14, 512)).astype(np.float32)
    fc_b = rng.normal(0, 0.01, 512).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c1"], name="conv_0", strides=[8, 8]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu_0"),
        helper.make_node("Flatten", ["r1"], ["f1"], name="flatten_0", axis=1),
        helper.make_node("Gemm", ["f1", "fc_w", "fc_b"], ["683"], name="fc_0"),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_synthetic",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        [_init("conv_w", conv_w), _init("conv_b", conv_b), _init("fc_w", fc_w), _init("fc_b", fc_b)],
    )
    return _model(graph, path)


def make_genderage(path: Path, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.05, (8, 3, 8, 8)).astype(np.float32)
    conv_w[:, 2] *= -1.5
    fc_w = rng.normal(0, 0.05, (8 * 12 * 12, 3)).astype(np.float32)
    fc_b = np.array([0.0, 0.0, 0.3], np.float32)
    nodes = [
        helper.make_node("Conv", ["data", "conv_w"], ["c1"], name="conv_1", strides=[8, 8]),
        helper.make_node("Flatten", ["c1"], ["f1"], name="flatten_1", axis=1),
        helper.make_node("Gemm", ["f1", "fc_w", "fc_b"], ["fc1"], name="fc_1"),
    ]
    graph = helper.make_graph(
        nodes,
        "genderage_synthetic",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 3])],
        [_init("conv_w", conv_w), _init("fc_w", fc_w), _init("fc_b", fc_b)],
    )
    return _model(graph, path)


def make_inswapper(path: Path, seed: int = 2, strength: float = 1.0) -> Path:
    """output = clip(target + colour(source) + texture(source) + detail(target), 0, 1).

    The target passes through (like a real swap outside the inner face) and the latent moves colour
    and a low-frequency pattern, so preprocessing and latent errors both show in the output.
    """
    rng = np.random.default_rng(seed)
    w_colour = rng.normal(0, 1.0 / np.sqrt(512), (512, 3)).astype(np.float32) * 4.0
    w_tex = rng.normal(0, 1.0 / np.sqrt(512), (512, 3 * 8 * 8)).astype(np.float32) * 4.0
    detail = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        detail[c, c] = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32) * 0.05 * (c + 1)
    emap = rng.normal(0, 1.0 / np.sqrt(512), (512, 512)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["source", "w_colour"], ["col_raw"]),
        helper.make_node("Tanh", ["col_raw"], ["col_t"]),
        helper.make_node("Mul", ["col_t", "k_colour"], ["col_s"]),
        helper.make_node("Reshape", ["col_s", "shape_col"], ["col"]),
        helper.make_node("MatMul", ["source", "w_tex"], ["tex_raw"]),
        helper.make_node("Tanh", ["tex_raw"], ["tex_t"]),
        helper.make_node("Mul", ["tex_t", "k_tex"], ["tex_s"]),
        helper.make_node("Reshape", ["tex_s", "shape_tex"], ["tex8"]),
        helper.make_node("Resize", ["tex8", "", "", "size_out"], ["tex"], mode="linear"),
        helper.make_node("Conv", ["target", "w_detail"], ["det"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["target", "col"], ["a1"]),
        helper.make_node("Add", ["a1", "tex"], ["a2"]),
        helper.make_node("Add", ["a2", "det"], ["a3"]),
        helper.make_node("Clip", ["a3", "zero", "one"], ["output"]),
    ]
    inits = [
        _init("w_colour", w_colour),
        _init("k_colour", np.array(0.15 * strength, np.float32)),
        _init("shape_col", np.array([1, 3, 1, 1], np.int64)),
        _init("w_tex", w_tex),
        _init("k_tex", np.array(0.08 * strength, np.float32)),
        _init("shape_tex", np.array([1, 3, 8, 8], np.int64)),
        _init("size_out", np.array([1, 3, 128, 128], np.int64)),
        _init("w_detail", detail),
        _init("zero", np.array(0.0, np.float32)),
        _init("one", np.array(1.0, np.float32)),
        _init("emap", emap),  # must stay LAST: insightface reads graph.initializer[-1]
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_synthetic",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        inits,
    )
    return _model(graph, path)


def make_passthrough_inswapper(path: Path) -> Path:
    """An inswapper-signature model that returns its target unchanged (latent ignored, emap last).
    With it, any difference between a swap result and the input is caused by the resampling around it."""
    emap = np.eye(512, dtype=np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["source", "axes"], ["s"], keepdims=1),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Reshape", ["s0", "shape4"], ["s0_4d"]),
        helper.make_node("Add", ["target", "s0_4d"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "inswapper_passthrough",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        [
            _init("axes", np.array([1], np.int64)),
            _init("zero", np.array(0.0, np.float32)),
            _init("shape4", np.array([1, 1, 1, 1], np.int64)),
            _init("emap", emap),
        ],
    )
    return _model(graph, path)


SCRFD_STRIDES = (8, 16, 32)


def make_scrfd(path: Path, batched: bool = False, seed: int = 3) -> Path:
    """det_10g-shaped detector: per stride s, an s x s average pool of the normalised input feeds 1x1
    convolutions for 2 anchors of score (sigmoid), box distances (softplus, in stride units) and
    5 keypoint offsets. Bright regions score high, so a photo gives a manageable set of candidates."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: dict[str, tuple[str, int]] = {}
    for stride in SCRFD_STRIDES:
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node("AveragePool", ["input.1"], [pooled], kernel_shape=[stride, stride], strides=[stride] * 2)
        )
        for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
            w = rng.normal(0, 0.3, (2 * channels, 3, 1, 1)).astype(np.float32)
            b = rng.normal(0, 0.2, 2 * channels).astype(np.float32)
            if kind == "score":
                w[:, :, 0, 0] = np.array([[1.2, 1.6, 2.0], [1.0, 1.9, 1.4]], np.float32)
                b[:] = -3.2
            if kind == "bbox":
                b += 1.0
            wn, bn = f"w_{kind}{stride}", f"b_{kind}{stride}"
            inits += [_init(wn, w), _init(bn, b)]
            conv = f"conv_{kind}{stride}"
            nodes.append(helper.make_node("Conv", [pooled, wn, bn], [conv]))
            act = conv
            if kind == "score":
                act = f"sig{stride}"
                nodes.append(helper.make_node("Sigmoid", [conv], [act]))
            elif kind == "bbox":
                act = f"sp{stride}"
                nodes.append(helper.make_node("Softplus", [conv], [act]))
            nhwc = f"nhwc_{kind}{stride}"
            nodes.append(helper.make_node("Transpose", [act], [nhwc], perm=[0, 2, 3, 1]))
            shape_name = f"shape_{kind}{stride}"
            inits.append(_init(shape_name, np.array([1, -1, channels] if batched else [-1, channels], np.int64)))
            out = f"{kind}_{stride}"
            nodes.append(helper.make_node("Reshape", [nhwc, shape_name], [out]))
            outputs[out] = (out, channels)
    order = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in SCRFD_STRIDES]
    out_infos = [
        helper.make_tensor_value_info(
            name, TensorProto.FLOAT, [1, "N", outputs[name][1]] if batched else ["N", outputs[name][1]]
        )
        for name in order
    ]
    graph = helper.make_graph(
        nodes,
        "scrfd_synthetic",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        out_infos,
        inits,
    )
    return _model(graph, path)


# dlib's 5 keypoints and box for scikit-image's astronaut photo (skimage.data.astronaut()), computed once with
# DlibFaceAnalyzer: realistic face geometry without paying dlib's model load in every test module.
ASTRONAUT_KPS5 = np.array(
    [[203.1667, 101.5], [246.8333, 104.0], [225.0, 127.0], [201.0, 140.0], [245.0, 141.0]], dtype=np.float32
)
ASTRONAUT_BOX = np.array([179.0, 83.0, 266.0, 170.0], dtype=np.float32)
