"""Face restoration networks with random weights, built from their architecture classes (the layouts spandrel
detects) and saved as safetensors; GPEN as a small ONNX graph with the published export's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

SIZE = 512


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def make_gfpgan(path: Path) -> Path:
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    # spandrel's loader builds GFPGANv1Clean with these fixed hyper-parameters (GFPGANv1.3/1.4 release).
    model = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    return _save(model, path)


def make_codeformer(path: Path) -> Path:
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(1)
    # Small transformer (spandrel reads dim/latent/codebook/layers/connections from the tensors); the VQGAN
    # encoder/decoder widths are fixed by the architecture.
    model = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256, connect_list=["32"])
    return _save(model, path)


def make_restoreformer(path: Path) -> Path:
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(2)
    model = RestoreFormer(n_embed=32, embed_dim=32, ch=32, num_res_blocks=1, z_channels=32, head_size=8)
    return _save(model, path)


def make_gpen(path: Path) -> Path:
    """The export's contract: input 1x3x512x512 RGB in [-1, 1], output the same. A 3x3 conv and tanh."""
    rng = np.random.default_rng(3)
    weight = rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(0, 0.1, 3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Tanh", ["conv"], ["output"]),
        ],
        "gpen_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


MAKERS = {
    "gfpgan": make_gfpgan,
    "codeformer": make_codeformer,
    "restoreformer": make_restoreformer,
    "gpen": make_gpen,
}
