"""Loading diffusers text-to-image models: sources, family, single-file, schedulers, LoRAs, hashes, offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusion_fixtures import (
    build_tiny_sd,
    diffusers_config_folder,
    save_single_file,
    save_tiny,
    save_tiny_lora,
)

from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError
from portraitforge.models.diffusion import (
    Family,
    LoadOptions,
    LoraSpec,
    ModelFamily,
    ModelSource,
    SourceKind,
    cached_file_sha256,
    detect_folder_family,
    detect_single_file_family,
    dtype_kwargs,
    folder_fingerprint,
    load_text2image,
    resolve_device,
    resolve_dtype,
)
from portraitforge.pipelines.portrait import PortraitPipeline

STEPS = 2


# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAITFORGE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {"sd": save_tiny(root, "sd"), "sdxl": save_tiny(root, "sdxl")}


def _draft(pipe: PortraitPipeline, seed: int = 3, **kwargs: object) -> np.ndarray:
    params = pipe.parameters("a studio portrait", seed=seed, steps=STEPS, **kwargs)  # type: ignore[arg-type]
    image, _ = pipe.draw(params, seed)
    return image


def test_source_parsing(tmp_path: Path, models: dict[str, Path]) -> None:
    assert ModelSource.parse(models["sd"]).kind is SourceKind.FOLDER
    assert ModelSource.parse("stabilityai/sd-turbo") == ModelSource(SourceKind.HUB, "stabilityai/sd-turbo")
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not loaded")
    with pytest.raises(BadInputError, match="pickle"):
        ModelSource.parse(ckpt)
    with pytest.raises(BadInputError, match="not found"):
        ModelSource.parse(tmp_path / "missing.safetensors")
    with pytest.raises(BadInputError, match="model_index.json"):
        ModelSource.parse(tmp_path)


def test_folder_round_trip_matches_bare_diffusers(models: dict[str, Path]) -> None:
    """save_pretrained -> from_pretrained gives the same pixels as the in-memory pipeline it was saved from."""
    pipe = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    assert pipe.model.family == ModelFamily(Family.SD1)
    assert type(pipe.model.pipe).__name__ == "StableDiffusionPipeline"
    ours = _draft(pipe)
    bare = build_tiny_sd(models["sd"].parent / "tok-again")
    bare.set_progress_bar_config(disable=True)
    pil = bare(
        "a studio portrait",
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    np.testing.assert_array_equal(ours, np.asarray(pil))


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_single_file_round_trip(tmp_path: Path, models: dict[str, Path], kind: str) -> None:
    """Original-layout .safetensors + a weight-free local config folder loads to identical pixels, offline."""
    folder_pipe = PortraitPipeline.from_pretrained(models[kind], device="cpu")
    checkpoint = save_single_file(folder_pipe.model.pipe, tmp_path / f"tiny-{kind}.safetensors")
    config = diffusers_config_folder(models[kind], tmp_path / "config")
    assert not list(config.rglob("*.safetensors"))
    expected = Family.SDXL if kind == "sdxl" else Family.SD1
    assert detect_single_file_family(checkpoint).base is expected
    single = PortraitPipeline.from_pretrained(checkpoint, device="cpu", config=str(config), local_files_only=True)
    assert single.model.source.kind is SourceKind.SINGLE_FILE
    assert single.model.model_hash == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    np.testing.assert_array_equal(_draft(single), _draft(folder_pipe))


def test_single_file_without_local_config_is_unavailable(tmp_path: Path, models: dict[str, Path]) -> None:
    pipe = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    checkpoint = save_single_file(pipe.model.pipe, tmp_path / "lonely.safetensors")
    with pytest.raises(ModelUnavailableError, match="--model-config"):
        load_text2image(checkpoint, LoadOptions(device="cpu", cache_dir=str(tmp_path / "empty-cache")))


def test_offline_uncached_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = LoadOptions(device="cpu", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ModelUnavailableError) as info:
        load_text2image("nobody-here/no-such-model", options)
    message = str(info.value)
    assert "\n" not in message
    assert "hf download nobody-here/no-such-model" in message and "--model" in message


def test_family_detection(models: dict[str, Path], tmp_path: Path) -> None:
    assert detect_folder_family(models["sdxl"]) == ModelFamily(Family.SDXL)
    assert detect_folder_family(models["sd"], "stabilityai/sd-turbo").turbo
    assert ModelFamily.parse("sdxl-turbo") == ModelFamily(Family.SDXL, turbo=True)
    with pytest.raises(ParameterError):
        ModelFamily.parse("sd9")
    bogus = tmp_path / "bogus.safetensors"
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, str(bogus))
    with pytest.raises(BadInputError, match="not a Stable Diffusion"):
        detect_single_file_family(bogus)


def test_turbo_defaults(models: dict[str, Path]) -> None:
    pipe = PortraitPipeline.from_pretrained(models["sd"], device="cpu", family="sd2-turbo")
    defaults = pipe.model.defaults
    assert (defaults.steps, defaults.guidance) == (1, 0.0)
    assert pipe.parameters("x").steps == 1
    assert pipe.model.pipe.scheduler.config.timestep_spacing == "trailing"  # the fixture's own is "leading"


def test_scheduler_by_name(models: dict[str, Path]) -> None:
    euler = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    karras = PortraitPipeline.from_pretrained(models["sd"], device="cpu", scheduler="dpm++_2m_karras")
    assert type(karras.model.pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert karras.model.pipe.scheduler.config.use_karras_sigmas
    assert (karras.model.scheduler, karras.model.sampler_a1111) == ("dpm++_2m_karras", "DPM++ 2M Karras")
    assert euler.model.scheduler == "euler"
    assert not np.array_equal(_draft(euler), _draft(karras))
    with pytest.raises(ParameterError, match="unknown scheduler"):
        PortraitPipeline.from_pretrained(models["sd"], device="cpu", scheduler="warp-drive")


def test_lora_weight(tmp_path: Path, models: dict[str, Path]) -> None:
    pytest.importorskip("peft", reason="LoRA loading needs the 'peft' package (pip install peft)")
    lora = save_tiny_lora(build_tiny_sd(tmp_path / "tok"), tmp_path / "character.safetensors")
    base = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    zero = PortraitPipeline.from_pretrained(models["sd"], device="cpu", loras=[f"{lora}:0.0"])
    full = PortraitPipeline.from_pretrained(models["sd"], device="cpu", loras=[LoraSpec(str(lora), 1.0)])
    assert full.model.loras[0].sha256 == hashlib.sha256(lora.read_bytes()).hexdigest()
    assert full.model.loras[0].weight == 1.0
    np.testing.assert_array_equal(_draft(zero), _draft(base))
    assert not np.array_equal(_draft(full), _draft(base))
    assert "Lora hashes: " in full._a1111(full.parameters("p", steps=STEPS), 1, None)


def test_lora_spec_parsing(tmp_path: Path) -> None:
    path = tmp_path / "a:b.safetensors"  # a colon inside the path must survive
    path.write_bytes(b"x")
    assert LoraSpec.parse(f"{path}:0.7") == LoraSpec(str(path.resolve()), 0.7)
    assert LoraSpec.parse(str(path)).weight == 1.0
    with pytest.raises(ParameterError):
        LoraSpec.parse(f"{path}:9")
    with pytest.raises(BadInputError, match="not found"):
        LoraSpec.parse(str(tmp_path / "none.safetensors"))


def test_device_and_dtype() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu") or torch.backends.mps.is_available()
        with pytest.raises(BadInputError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ParameterError):
        resolve_device("tpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    assert dtype_kwargs(torch.float16, "0.42.1") == {"dtype": torch.float16}
    assert dtype_kwargs(torch.float16, "0.30.3") == {"torch_dtype": torch.float16}


def test_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]) -> None:
    blob = tmp_path / "w.safetensors"
    blob.write_bytes(b"abc" * 1000)
    assert cached_file_sha256(blob) == hashlib.sha256(blob.read_bytes()).hexdigest()
    cache = json.loads((tmp_path / "home" / "cache" / "sha256.json").read_text())
    assert list(cache.values()) == [hashlib.sha256(blob.read_bytes()).hexdigest()]
    # Folder fingerprint: a same-size change inside a weight file (a fine-tune) changes it.
    copy = tmp_path / "copy"
    for src in models["sd"].rglob("*"):
        if src.is_file():
            (copy / src.relative_to(models["sd"])).parent.mkdir(parents=True, exist_ok=True)
            (copy / src.relative_to(models["sd"])).write_bytes(src.read_bytes())
    before = folder_fingerprint(copy)
    assert before == folder_fingerprint(models["sd"])
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert folder_fingerprint(copy) != before


def _fake_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """The Hugging Face cache layout (models--owner--name/snapshots/<commit>, refs/main) holding `folder`."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_cached_hub_id_loads_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, "tiny/portrait-sd", models["sd"])
    hub = PortraitPipeline.from_pretrained("tiny/portrait-sd", device="cpu", cache_dir=str(cache))
    assert hub.model.source.kind is SourceKind.HUB
    assert hub.model.revision == "0123456789abcdef0123456789abcdef01234567"
    assert hub.model.name == "tiny/portrait-sd"
    folder = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    np.testing.assert_array_equal(_draft(hub), _draft(folder))


def test_single_file_uses_cached_family_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models: dict[str, Path]
) -> None:
    """Without --model-config, a single file finds its family's reference config in the HF cache (no download)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _fake_hub_cache(
        cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", diffusers_config_folder(models["sd"], tmp_path / "c")
    )
    pipe = PortraitPipeline.from_pretrained(models["sd"], device="cpu")
    checkpoint = save_single_file(pipe.model.pipe, tmp_path / "mix.safetensors")
    single = load_text2image(checkpoint, LoadOptions(device="cpu", cache_dir=str(cache)))
    assert single.family == ModelFamily(Family.SD1)
    assert single.name == "mix"
