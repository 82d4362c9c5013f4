"""IP-Adapter FaceID in PortraitPipeline: parity with a bare diffusers call on tiny random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusion_fixtures import save_tiny, save_tiny_lora
from ip_adapter_fixtures import faceid_state_dict, save_faceid

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models.diffusion import LoadOptions, LoraSpec, load_text2image
from portraitforge.models.diffusion.ip_adapter import faceid_embeds, read_faceid_state_dict
from portraitforge.pipelines.portrait import PortraitPipeline, identity_arcface
from portraitforge.refiners.detect_insightface import ARCFACE_SPACE
from portraitforge.types import Identity

STEPS = 2
SEED = 11
CPU_FP32 = LoadOptions(device="cpu", dtype="fp32")


# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAITFORGE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("faceid")
    folder = save_tiny(root, "sd")
    unet = StableDiffusionPipeline.from_pretrained(str(folder)).unet
    with_lora = faceid_state_dict(unet, seed=3, lora_rank=4)
    plain = faceid_state_dict(unet, seed=3)
    lora_pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    return {
        "model": folder,
        "faceid": save_faceid(with_lora, root / "faceid_sd15.safetensors"),
        "faceid_bin": save_faceid(with_lora, root / "faceid_sd15.bin"),
        "plain": save_faceid(plain, root / "faceid_plain.safetensors"),
        "lora": save_tiny_lora(lora_pipe, root / "style_lora.safetensors"),
    }


def _embedding(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(512).astype(np.float32)


def _identity(embeddings: dict[str, np.ndarray]) -> Identity:
    return Identity(
        name="tester",
        embeddings=embeddings,
        reference_crop=np.zeros((8, 8, 3), np.uint8),
        reference_landmarks68=np.zeros((68, 2), np.float32),
    )


def _draw(pipe: PortraitPipeline, guidance: float, embedding: np.ndarray | None) -> np.ndarray:
    params = pipe.parameters("a portrait", seed=SEED, steps=STEPS, guidance=guidance, width=64, height=64)
    return pipe.draw_array(params, SEED, id_embedding=embedding)[0]


def _bare(folder: Path, adapter: Path, scale: float, guidance: float, embedding: np.ndarray) -> np.ndarray:
    """The reference: diffusers alone, as its FaceID guide does it (normed embedding, zeros for the negative)."""
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(str(adapter.parent), subfolder="", weight_name=adapter.name, image_encoder_folder=None)
    pipe.set_ip_adapter_scale(scale)
    ref = torch.from_numpy(embedding / np.linalg.norm(embedding)).reshape(1, 1, 1, 512)
    embeds = torch.cat([torch.zeros_like(ref), ref]) if guidance > 1 else ref
    with torch.inference_mode():
        out = pipe(
            prompt="a portrait",
            num_inference_steps=STEPS,
            guidance_scale=guidance,
            width=64,
            height=64,
            generator=torch.Generator("cpu").manual_seed(SEED),
            ip_adapter_image_embeds=[embeds],
            output_type="np",
        )
    return np.asarray(out.images[0], dtype=np.float32)


@pytest.mark.parametrize("guidance", [7.5, 0.0])
def test_faceid_draft_equals_bare_diffusers_call(files: dict[str, Path], guidance: float) -> None:
    pipe = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
    loaded = pipe.load_id_adapter(files["faceid"], scale=0.7)
    assert loaded.lora_adapters == ("faceid_0",)  # the checkpoint's FaceID LoRA was applied by diffusers
    ours = _draw(pipe, guidance, _embedding())
    reference = _bare(files["model"], files["faceid"], 0.7, guidance, _embedding())
    assert np.abs(ours - reference).max() <= 1e-5
    # The adapter really conditions the draft: another identity gives another image.
    other = _draw(pipe, guidance, _embedding(seed=6))
    assert np.abs(other - ours).max() > 1e-3


def test_scale_zero_equals_no_adapter(files: dict[str, Path]) -> None:
    bare = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
    without = _draw(bare, 7.5, None)
    pipe = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
    pipe.load_id_adapter(files["plain"], scale=0.0)  # no LoRA keys: the UNet's own weights are untouched
    assert np.abs(_draw(pipe, 7.5, _embedding()) - without).max() <= 1e-5
    pipe.model.pipe.set_ip_adapter_scale(0.7)  # same pipeline, scale up: now it differs
    assert np.abs(_draw(pipe, 7.5, _embedding()) - without).max() > 1e-3


def test_save_load_round_trip(files: dict[str, Path]) -> None:
    """The .safetensors and the pickle .bin (read with weights_only=True) hold the same tensors, load into the
    same UNet weights, and draw the same image."""
    a = read_faceid_state_dict(files["faceid"])
    b = read_faceid_state_dict(files["faceid_bin"])
    assert a.keys() == b.keys()
    for part in a:
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key])
    draws = []
    for name in ("faceid", "faceid_bin"):
        pipe = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
        pipe.load_id_adapter(files[name], scale=0.7)
        proj = pipe.model.pipe.unet.encoder_hid_proj.image_projection_layers[0]
        assert torch.equal(proj.norm.weight, a["image_proj"]["norm.weight"])
        assert torch.equal(proj.ff.net[0].proj.weight, a["image_proj"]["proj.0.weight"])
        draws.append(_draw(pipe, 7.5, _embedding()))
    assert np.array_equal(draws[0], draws[1])


def test_model_loras_stay_active_next_to_the_faceid_lora(files: dict[str, Path]) -> None:
    """diffusers' loader activates only `faceid_0`; the model's own LoRA must stay on with its weight."""
    options = LoadOptions(device="cpu", dtype="fp32", loras=(LoraSpec(str(files["lora"]), 0.8),))
    pipe = PortraitPipeline(model=load_text2image(files["model"], options))
    pipe.load_id_adapter(files["faceid"], scale=0.7)
    active = set(pipe.model.pipe.get_active_adapters())
    assert active == {pipe.model.loras[0].adapter, "faceid_0"}


def test_identity_without_arcface_is_one_line_model_unavailable(files: dict[str, Path]) -> None:
    pipe = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
    pipe.refiner = None
    pipe.load_id_adapter(files["plain"], scale=0.7)
    params = pipe.parameters("a portrait", seed=SEED, steps=STEPS, width=64, height=64, require_face=False)
    with pytest.raises(ModelUnavailableError, match="no ArcFace embedding") as info:
        identity_arcface(_identity({"dlib-128": _embedding()[:128]}))
    assert "\n" not in str(info.value)
    assert identity_arcface(_identity({ARCFACE_SPACE: _embedding()})).shape == (512,)
    with pytest.raises(BadInputError, match="need an identity"):
        list(pipe.iter_images(params, None))


def test_embeds_shape_and_checks() -> None:
    assert faceid_embeds(_embedding(), guidance=True).shape == (2, 1, 1, 512)
    assert faceid_embeds(_embedding(), guidance=False).shape == (1, 1, 1, 512)
    assert torch.count_nonzero(faceid_embeds(_embedding(), guidance=True)[0]) == 0
    with pytest.raises(BadInputError, match="512-d"):
        faceid_embeds(_embedding()[:128], guidance=True)


def test_not_a_faceid_checkpoint_is_bad_input(tmp_path: Path, files: dict[str, Path]) -> None:
    from safetensors.torch import save_file

    bogus = tmp_path / "x.safetensors"
    save_file({"image_proj.proj.weight": torch.zeros(4, 4)}, str(bogus))
    pipe = PortraitPipeline(model=load_text2image(files["model"], CPU_FP32))
    with pytest.raises(BadInputError, match="not an IP-Adapter FaceID"):
        pipe.load_id_adapter(bogus)
    with pytest.raises(ModelUnavailableError, match="not found"):
        pipe.load_id_adapter(tmp_path / "missing.safetensors")


def test_cli_dlib_identity_exits_5_in_one_line(tmp_path: Path, files: dict[str, Path], hanks_path: Path) -> None:
    """The embedded default stores dlib/MobileFaceNet vectors, not ArcFace: `--id-adapter faceid` says so and
    exits 5 before anything is drawn."""
    from typer.testing import CliRunner

    from portraitforge.cli import app
    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.refiners.detect import DlibFaceAnalyzer

    store_dir = tmp_path / "store"
    IdentityStore(store_dir).add("hanks", [hanks_path], analyzers=[DlibFaceAnalyzer.load()])
    common = ["generate", "p", "-m", str(files["model"]), "--steps", "1", "--log", str(tmp_path / "log")]
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, [*common, "-i", "hanks", "--store", str(store_dir), "--id-adapter", "faceid", "-o", str(out)]
    )
    assert result.exit_code == 5, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "ArcFace" in result.stderr
    assert not out.exists() or not any(out.rglob("*.png"))
    no_identity = CliRunner().invoke(app, [*common, "--id-adapter", str(files["plain"]), "-o", str(out)])
    assert no_identity.exit_code == 2 and "--id-adapter needs --identity" in no_identity.stderr
