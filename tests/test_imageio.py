"""Loading every awkward kind of image file, and writing outputs atomically with metadata."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitforge.errors import BadInputError
from portraitforge.imageio import load_image, read_metadata, save_image


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_empty_truncated_text_and_unsupported_files_are_bad_input(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    jpeg = io.BytesIO()
    Image.fromarray(astronaut_rgb).save(jpeg, format="JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 3])
    ico = tmp_path / "icon.ico"
    Image.fromarray(astronaut_rgb[:64, :64]).save(ico, format="ICO")
    for path, fragment in [
        (empty, "empty"),
        (text, "not a recognised image"),
        (truncated, "cannot decode"),
        (ico, "unsupported image format"),
        (tmp_path / "missing.png", "not found"),
        (tmp_path, "directory"),
    ]:
        with pytest.raises(BadInputError) as info:
            load_image(path)
        assert fragment in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_every_pixel_mode_becomes_rgb_uint8(tmp_path: Path, astronaut_rgb: np.ndarray, mode: str) -> None:
    base = Image.fromarray(astronaut_rgb)
    if mode == "I;16":
        gray16 = (np.asarray(base.convert("L")).astype(np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(gray16)
        assert img.mode.startswith("I;16")
    else:
        img = base.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"img_{mode.replace(';', '')}{suffix}"
    img.save(path)
    loaded = load_image(path)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (512, 512, 3)
    if mode == "I;16":
        # 16-bit data is scaled, not clipped: it must match the 8-bit grayscale it came from.
        expected = np.asarray(base.convert("L"))
        assert np.abs(loaded.rgb[..., 0].astype(int) - expected.astype(int)).max() <= 1
    if mode in ("RGBA", "LA"):
        assert loaded.alpha is not None and loaded.alpha.shape == (512, 512)


def test_exif_orientation_is_honoured(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    img = Image.fromarray(astronaut_rgb[:, :300])  # 512 tall, 300 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    loaded = load_image(path)
    assert loaded.rgb.shape[:2] == (300, 512)


def test_decompression_bomb_limit_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 3000)).save(path)
    with pytest.raises(BadInputError, match="exceeds the limit"):
        load_image(path, max_pixels=4_000_000)
    assert load_image(path, max_pixels=10_000_000).rgb.shape == (3000, 3000, 3)


def test_one_pixel_image_loads(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    assert load_image(path).rgb.tolist() == [[[10, 20, 30]]]


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_save_is_atomic_and_embeds_metadata(tmp_path: Path, astronaut_rgb: np.ndarray, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    save_image(out, astronaut_rgb, metadata={"strength": 0.7, "identity": "x"})
    assert read_metadata(out) == {"strength": 0.7, "identity": "x"}
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp files left behind
    decoded = np.asarray(Image.open(out).convert("RGB"))
    assert decoded.shape == astronaut_rgb.shape


def test_failed_save_leaves_nothing(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        save_image(tmp_path / "out.gif", astronaut_rgb)
    bad = np.zeros((4, 4, 5), np.uint8)  # not an RGB image: Pillow refuses it mid-save
    with pytest.raises((TypeError, ValueError)):
        save_image(tmp_path / "out.png", bad)
    assert list(tmp_path.iterdir()) == []
