"""Embedded Real-ESRGAN: ncnn -> PyTorch conversion, the tiled upscaler stage and its model cache.

The reference for the conversion is the `ncnn` pip package running the wheel's own .param/.bin files in fp32 on
the CPU. Tolerance: max abs difference <= 2e-5 on the [0, 1] output scale (0.005 of one 8-bit level); measured
here 1.2e-6 .. 7.4e-6, the rest being float summation order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from portraitforge.atomic import file_sha256
from portraitforge.errors import BadInputError, ModelUnavailableError, OutOfMemoryError
from portraitforge.models.realesrgan_ncnn import (
    EMBEDDED_REALESRGAN,
    ensure_converted,
    load_converted_state_dict,
    ncnn_models_dir,
    parse_param,
    trailing_downscale,
)
from portraitforge.models.upscalers import load_upscale_model
from portraitforge.pipelines.stage_registry import build_upscaler
from portraitforge.refiners.upscale import (
    LanczosUpscaler,
    NoUpscaler,
    RealESRGANUpscaler,
    image_to_tensor,
    run_tiled,
    run_tiled_with_backoff,
    upscale_frame,
)
from portraitforge.samples import astronaut

NCNN_TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PORTRAITFORGE_HOME for the module, so each network is converted once."""
    return tmp_path_factory.mktemp("pfhome")


@pytest.fixture
def home(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PORTRAITFORGE_HOME", str(cache_home))
    return cache_home


@pytest.fixture(scope="module")
def face_patch() -> np.ndarray:
    """A 64x64 RGB uint8 crop of the astronaut's face (real photo texture: skin, hair, eye)."""
    return np.ascontiguousarray(astronaut()[40:104, 180:244])


def _ncnn_reference(param: Path, weights: Path, x_chw: np.ndarray) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    # fp32 CPU runtime: no Vulkan, no fp16/bf16 storage or arithmetic.
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = 2
    assert net.load_param(str(param)) == 0
    assert net.load_model(str(weights)) == 0
    extractor = net.create_extractor()
    data = np.ascontiguousarray(x_chw)  # ncnn.Mat wraps this memory without copying: keep it alive
    extractor.input("data", ncnn.Mat(data))
    ret, out = extractor.extract("output")
    assert ret == 0
    return np.array(out)


def test_param_files_show_x2_x3_are_the_x4_net_plus_bicubic() -> None:
    folder = ncnn_models_dir()
    x4 = folder / "realesr-animevideov3-x4.bin"
    for suffix, factor in (("x2", 0.5), ("x3", 0.75)):
        assert file_sha256(folder / f"realesr-animevideov3-{suffix}.bin") == file_sha256(x4)
        layers = parse_param((folder / f"realesr-animevideov3-{suffix}.param").read_text())
        assert trailing_downscale(layers) == factor
    assert trailing_downscale(parse_param((folder / "realesr-animevideov3-x4.param").read_text())) is None


@pytest.mark.parametrize("name", list(EMBEDDED_REALESRGAN))
def test_converted_network_matches_ncnn_fp32(name: str, home: Path, face_patch: np.ndarray) -> None:
    entry = EMBEDDED_REALESRGAN[name]
    model = load_upscale_model(name, device="cpu")
    patch = face_patch[16:48, 16:48] if name == "realesrgan-x4plus" else face_patch  # 23 RRDBs: keep it small
    x = patch.astype(np.float32).transpose(2, 0, 1) / 255.0
    size = patch.shape[0]
    with torch.inference_mode():
        y = model.descriptor.model(torch.from_numpy(x)[None].contiguous(memory_format=torch.channels_last))
        if model.downscale is not None:
            y = torch.nn.functional.interpolate(y, scale_factor=model.downscale, mode="bicubic", align_corners=False)
    ours = y[0].numpy()
    folder = ncnn_models_dir()
    reference = _ncnn_reference(folder / f"{entry.param}.param", folder / f"{entry.param}.bin", x)
    assert ours.shape == reference.shape == (3, size * entry.scale, size * entry.scale)
    assert float(np.abs(ours - reference).max()) <= NCNN_TOLERANCE
    # The network really upscales (not a trivially small output): it follows the image.
    assert float(np.corrcoef(ours.ravel(), reference.ravel())[0, 1]) > 0.999


def test_stage_output_is_uint8_rgb_at_scale(home: Path, face_patch: np.ndarray) -> None:
    upscaler = build_upscaler("realesr-animevideov3-x2")
    assert isinstance(upscaler, RealESRGANUpscaler)
    image = face_patch[:40, :56]
    out = upscaler(image)
    assert out.dtype == np.uint8 and out.shape == (80, 112, 3)
    params = upscaler.params()
    assert params["sha256"] == EMBEDDED_REALESRGAN["realesr-animevideov3-x2"].converted_sha256
    assert params["scale"] == 2 and params["architecture"] == "Compact"
    # Close to a plain resize of the input on average (same picture, sharper detail).
    import cv2

    cubic = cv2.resize(image, (112, 80), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    assert float(np.abs(out.astype(np.float32) - cubic).mean()) < 12.0


def test_whole_frame_matches_bare_spandrel_call(home: Path) -> None:
    """With the image inside one tile, the stage adds nothing to spandrel's own call."""
    upscaler = RealESRGANUpscaler.from_pretrained("realesr-animevideov3", device="cpu", tile=0)
    image = np.ascontiguousarray(astronaut()[::4, ::4])  # 128x128 whole frame
    out = upscale_frame(upscaler, image)
    with torch.inference_mode():
        bare = upscaler.model.descriptor(image_to_tensor(image, torch.device("cpu"), torch.float32))
    expected = (bare[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(BadInputError, match="pixel limit"):
        upscale_frame(upscaler, image, max_output_pixels=512 * 511)


def test_tiled_matches_single_pass_compact(home: Path) -> None:
    """SRVGGNetCompact sees 17 px around a pixel: with 16 px of context plus a 4 px cross-fade the tiles agree
    with one pass to a fraction of an 8-bit level."""
    model = load_upscale_model("realesr-animevideov3", device="cpu")
    x = image_to_tensor(astronaut()[40:168, 160:288], torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        single = model.descriptor.model(x)
        tiled = run_tiled(model.descriptor.model, x, 4, tile=64, overlap=16, feather=4)
    diff = (tiled - single).abs() * 255
    assert tiled.shape == single.shape == (1, 3, 512, 512)
    assert float(diff.max()) < 0.5
    assert float(diff.mean()) < 0.01


def test_tiled_matches_single_pass_rrdbnet(home: Path) -> None:
    """RRDBNet sees far beyond any practical overlap, so tiles differ slightly from one pass; the difference is
    small on average and the cross-fade leaves no step at the seam."""
    model = load_upscale_model("realesrgan-x4plus-anime", device="cpu")
    x = image_to_tensor(astronaut()[60:156, 180:276], torch.device("cpu"), torch.float32)  # 96x96
    with torch.inference_mode():
        single = model.descriptor.model(x)
        tiled = run_tiled(model.descriptor.model, x, 4, tile=48, overlap=16, feather=4)
    err = ((tiled - single) * 255)[0]
    assert float(err.abs().mean()) < 1.0
    assert float(err.abs().flatten().quantile(0.99)) < 6.0
    # Seam: the error's jump across the vertical seam (output column 192) is no larger than its jumps elsewhere.
    jumps = (err[:, :, 1:] - err[:, :, :-1]).abs().amax(dim=(0, 1))
    assert float(jumps[188:196].max()) <= float(jumps.max())
    assert float(jumps[188:196].mean()) < 4 * float(jumps.mean()) + 1.0


def test_out_of_memory_halves_the_tile(home: Path) -> None:
    model = load_upscale_model("realesr-animevideov3", device="cpu")
    seen: list[int] = []

    def small_memory(t: torch.Tensor) -> torch.Tensor:
        seen.append(max(t.shape[-2:]))
        if max(t.shape[-2:]) > 60:  # pretend anything larger than 60 px does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return model.descriptor.model(t)

    x = image_to_tensor(astronaut()[100:180, 150:230], torch.device("cpu"), torch.float32)  # 80x80
    with torch.inference_mode():
        out, used = run_tiled_with_backoff(small_memory, x, 4, tile=0, overlap=8, feather=2)
        expected = run_tiled(model.descriptor.model, x, 4, tile=used, overlap=8, feather=2)
    assert used == 40 and seen[0] == 80
    torch.testing.assert_close(out, expected, rtol=0, atol=0)

    def no_memory(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")

    with torch.inference_mode(), pytest.raises(OutOfMemoryError, match="out of memory"):
        run_tiled_with_backoff(no_memory, x, 4, tile=64, overlap=8)

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        run_tiled_with_backoff(broken, x, 4, tile=64, overlap=8)


def test_cache_is_reused_and_corruption_is_rebuilt(tmp_path: Path) -> None:
    entry = EMBEDDED_REALESRGAN["realesr-animevideov3"]
    first = ensure_converted(entry, cache_dir=tmp_path)
    assert first.converted and first.path.parent == tmp_path
    assert file_sha256(first.path) == entry.converted_sha256
    stamp = first.path.stat().st_mtime_ns

    again = ensure_converted(entry, cache_dir=tmp_path)
    assert not again.converted and again.path.stat().st_mtime_ns == stamp

    data = bytearray(first.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the weights
    first.path.write_bytes(bytes(data))
    rebuilt = ensure_converted(entry, cache_dir=tmp_path)
    assert rebuilt.converted and file_sha256(rebuilt.path) == entry.converted_sha256

    first.path.write_bytes(b"")  # truncated
    state = load_converted_state_dict(entry, cache_dir=tmp_path)
    assert file_sha256(first.path) == entry.converted_sha256
    assert state["body.0.weight"].shape == (64, 3, 3, 3) and state["body.0.weight"].dtype == torch.float32
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files behind


def test_embedded_cache_lives_under_home(home: Path) -> None:
    load_upscale_model("realesr-animevideov3", device="cpu")
    assert (home / "models" / "realesrgan" / "realesr-animevideov3-x4.safetensors").is_file()


def test_unknown_and_missing_upscalers() -> None:
    with pytest.raises(BadInputError) as info:
        build_upscaler("esrgan-ultra")
    message = str(info.value)
    for name in ("none", "lanczos", "realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3"):
        assert name in message
    with pytest.raises(ModelUnavailableError, match="not found"):
        build_upscaler("/nonexistent/RealESRGAN_x4plus.pth")


def test_unreadable_or_foreign_model_files_are_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pth"):
        build_upscaler(str(junk))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(foreign))
    with pytest.raises(BadInputError, match="not a model architecture"):
        build_upscaler(str(foreign))


def test_spandrel_model_files_load_by_path(home: Path, tmp_path: Path, face_patch: np.ndarray) -> None:
    """Users' own files: a .safetensors state dict, and an upstream-style .pth with `params_ema`."""
    entry = EMBEDDED_REALESRGAN["realesr-animevideov3"]
    state = load_converted_state_dict(entry)
    as_safetensors = tmp_path / "realesr-animevideov3.safetensors"
    save_file(state, str(as_safetensors))
    as_pth = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params_ema": state}, as_pth)  # the layout of the official Real-ESRGAN release files

    embedded = build_upscaler("realesr-animevideov3")(face_patch)
    for path in (as_safetensors, as_pth):
        upscaler = build_upscaler(str(path))
        assert upscaler.scale == 4 and upscaler.params()["sha256"] == file_sha256(path)
        np.testing.assert_array_equal(upscaler(face_patch), embedded)


def test_plain_upscalers_still_work(face_patch: np.ndarray) -> None:
    assert build_upscaler("none")(face_patch) is face_patch
    assert isinstance(build_upscaler("none"), NoUpscaler)
    lanczos = build_upscaler("lanczos")
    assert isinstance(lanczos, LanczosUpscaler) and lanczos(face_patch).shape == (128, 128, 3)


def test_bad_image_input(home: Path) -> None:
    upscaler = build_upscaler("realesr-animevideov3")
    with pytest.raises(BadInputError, match="RGB uint8"):
        upscaler(np.zeros((8, 8), dtype=np.uint8))
