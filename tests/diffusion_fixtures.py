"""Tiny random Stable Diffusion pipelines for tests, built from small configs as diffusers' own tests do.

Nothing here touches the Hub: the CLIP tokenizer is written from a byte-level vocabulary into a temp folder.
Random weights draw noise, not faces; tests that need a face inject a real photo as the draft.

`ldm_state_dict` writes a pipeline in the original (CompVis/SGM) single-file checkpoint layout. diffusers only
ships the LDM -> diffusers direction (`loaders/single_file_utils.py`); its repository's
`scripts/convert_diffusers_to_original_*.py` are not installed, so the inverse of the installed converter is
written here, generalised to any `layers_per_block` and block count (the scripts hard-code SD's four blocks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable unicode table (same as openai/CLIP simple_tokenizer)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A character-level CLIP BPE (no merges): every byte and byte+</w> is a token. 514 entries."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = [BOS, EOS] + chars + [c + "</w>" for c in chars]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    # model_max_length is required: without it the tokenizer's limit is "infinite" and the text encoder overflows.
    return CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=77
    )


def _text_config(projection: bool = False, hidden_size: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden_size,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=520,
        hidden_act="gelu" if projection else "quick_gelu",
        projection_dim=32,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )


def build_tiny_sd(tokenizer_dir: Path, seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.x layout: CLIP-L style text encoder (tiny), conditional UNet, KL VAE with 2x downsampling."""
    with torch.random.fork_rng():  # fixture weights are seeded without leaking into the global RNG
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config())
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=write_tiny_tokenizer(tokenizer_dir),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(tokenizer_dir: Path, seed: int = 0) -> StableDiffusionXLPipeline:
    """SDXL layout: two text encoders (the second with projection), text_time added conditioning."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(16, 32),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=80,  # 6 * addition_time_embed_dim + pooled text dim (32)
            # Both encoders' hidden states are concatenated (32 + 48). The widths must differ, as in real SDXL
            # (768 vs 1280): diffusers' single-file loader tells the two CLIP towers apart by width.
            cross_attention_dim=80,
            norm_num_groups=4,
        )
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(projection=True))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(projection=True, hidden_size=48))
    tokenizer = write_tiny_tokenizer(tokenizer_dir)
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


# --- diffusers -> original (LDM / SGM) single-file layout -------------------------------------------------


_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_tail(tail: str) -> str:
    for new, old in _UNET_RESNET:
        if tail.startswith(new + "."):
            return old + tail[len(new) :]
    return tail


def _unet_key(key: str, config: Any) -> str:
    """Inverse of diffusers' `convert_ldm_unet_checkpoint` for one key."""
    per = config.layers_per_block + 1
    parts = key.split(".")
    head = ".".join(parts[:2]) if parts[0] in ("time_embedding", "add_embedding") else parts[0]
    if head in _UNET_TOP:
        return _UNET_TOP[head] + key[len(head) :]
    if parts[0] == "down_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":  # down_blocks.B.downsamplers.0.conv.X
            return f"input_blocks.{(block + 1) * per}.0.op.{parts[-1]}"
        index, tail = int(parts[3]), ".".join(parts[4:])
        layer = 1 + block * per + index
        if kind == "resnets":
            return f"input_blocks.{layer}.0.{_resnet_tail(tail)}"
        return f"input_blocks.{layer}.1.{tail}"
    if parts[0] == "mid_block":
        kind, index, tail = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * index}.{_resnet_tail(tail)}"
        return f"middle_block.1.{tail}"
    if parts[0] == "up_blocks":
        block, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            has_attention = "CrossAttn" in config.up_block_types[block]
            return f"output_blocks.{block * per + per - 1}.{2 if has_attention else 1}.conv.{parts[-1]}"
        index, tail = int(parts[3]), ".".join(parts[4:])
        layer = block * per + index
        if kind == "resnets":
            return f"output_blocks.{layer}.0.{_resnet_tail(tail)}"
        return f"output_blocks.{layer}.1.{tail}"
    raise KeyError(f"no LDM name for UNet key {key}")


_VAE_ATTN = [
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
]


def _vae_key(key: str, num_up: int) -> tuple[str, bool]:
    """Inverse of `convert_ldm_vae_checkpoint`; the bool says 'linear attention weight -> 1x1 conv'."""
    for name in ("conv_norm_out",):
        key = key.replace(name, "norm_out")
    parts = key.split(".")
    if len(parts) > 2 and parts[1] == "down_blocks":
        if parts[3] == "downsamplers":
            return f"encoder.down.{parts[2]}.downsample.conv.{parts[-1]}", False
        tail = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
        return f"encoder.down.{parts[2]}.block.{parts[4]}.{tail}", False
    if len(parts) > 2 and parts[1] == "up_blocks":
        ldm_block = num_up - 1 - int(parts[2])
        if parts[3] == "upsamplers":
            return f"decoder.up.{ldm_block}.upsample.conv.{parts[-1]}", False
        tail = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
        return f"decoder.up.{ldm_block}.block.{parts[4]}.{tail}", False
    if len(parts) > 2 and parts[1] == "mid_block":
        if parts[2] == "resnets":
            tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{tail}", False
        tail = ".".join(parts[4:])
        for new, old in _VAE_ATTN:
            if tail.startswith(new + "."):
                tail = old + tail[len(new) :]
        return f"{parts[0]}.mid.attn_1.{tail}", tail.endswith("weight") and not tail.startswith("norm")
    return key, False


def _hf_clip_state(text_encoder: CLIPTextModel | CLIPTextModelWithProjection) -> dict[str, torch.Tensor]:
    """State dict under the `text_model.` names original checkpoints use (transformers 5 drops the prefix
    for CLIPTextModel but keeps it for CLIPTextModelWithProjection)."""
    return {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in text_encoder.state_dict().items()
    }


def _open_clip_state(text_encoder: CLIPTextModelWithProjection, prefix: str) -> dict[str, torch.Tensor]:
    """Inverse of `convert_open_clip_checkpoint`: fused in_proj, resblocks naming, transposed projection."""
    sd = _hf_clip_state(text_encoder)
    out: dict[str, torch.Tensor] = {
        prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        prefix + "text_projection": sd["text_projection.weight"].T.contiguous(),
    }
    for i in range(text_encoder.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            out[f"{dst}attn.out_proj.{kind}"] = sd[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}ln_1.{kind}"] = sd[f"{src}layer_norm1.{kind}"]
            out[f"{dst}ln_2.{kind}"] = sd[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.c_fc.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.c_proj.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
    return out


def ldm_state_dict(pipe: StableDiffusionPipeline | StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights under original checkpoint names (SD 1.x: LDM; SDXL: SGM `conditioner`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        out["model.diffusion_model." + _unet_key(key, pipe.unet.config)] = value
    num_up = len(pipe.vae.config.up_block_types)
    for key, value in pipe.vae.state_dict().items():
        name, to_conv = _vae_key(key, num_up)
        out["first_stage_model." + name] = value[:, :, None, None] if to_conv else value
    if isinstance(pipe, StableDiffusionXLPipeline):
        for key, value in _hf_clip_state(pipe.text_encoder).items():
            out["conditioner.embedders.0.transformer." + key] = value
        out.update(_open_clip_state(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    else:
        for key, value in _hf_clip_state(pipe.text_encoder).items():
            out["cond_stage_model.transformer." + key] = value
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_single_file(pipe: StableDiffusionPipeline | StableDiffusionXLPipeline, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(pipe), str(path))
    return path


def diffusers_config_folder(pipe_dir: Path, out: Path) -> Path:
    """A weight-free copy of a saved pipeline (configs + tokenizer): what `from_single_file(config=...)` needs."""
    for src in pipe_dir.rglob("*"):
        if src.is_file() and src.suffix in (".json", ".txt"):
            dst = out / src.relative_to(pipe_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    return out


# --- saved models and LoRAs --------------------------------------------------------------------------------


def save_tiny(root: Path, kind: str = "sd") -> Path:
    """Build and `save_pretrained` a tiny pipeline into root/<kind> (safetensors); returns the folder."""
    build = build_tiny_sdxl if kind == "sdxl" else build_tiny_sd
    folder = root / kind
    pipe = build(root / f"{kind}-tokenizer")
    pipe.save_pretrained(str(folder))
    return folder


def save_tiny_lora(pipe: StableDiffusionPipeline, path: Path, rank: int = 4, seed: int = 1) -> Path:
    """A random (non-zero) UNet LoRA in diffusers' format, made with PEFT the way diffusers' LoRA tests do."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe.unet.add_adapter(config)
    layers = get_peft_model_state_dict(pipe.unet)
    StableDiffusionPipeline.save_lora_weights(str(path.parent), unet_lora_layers=layers, weight_name=path.name)
    return path
