"""Provenance figures on real photos: watermark robustness and false detections, PSNR, C2PA valid / invalid /
missing, `inspect` exit codes and log lookup, NSFW gate false positives (issue 13)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from provenance_fixtures import SignerFiles, edit_one_pixel_png, make_test_signer
from shared_data import faces_folder

from portraitforge.imageio import load_image, read_metadata
from portraitforge.provenance.credentials import SignerConfig, verify
from portraitforge.provenance.inspect import EXIT_TAMPERED
from portraitforge.provenance.stamp import NO_SIGNER, ProvenanceOptions, Signer, write_output
from portraitforge.provenance.watermark import WatermarkPayload, decode, embed, psnr
from portraitforge.samples import insightface_image

MIN_SIDE = 256  # README: the watermark's robustness is promised from 256 px on the short side (like imwatermark)


def _wheel_photos() -> list[Path]:
    from skimage import data

    folder = insightface_image("t1.jpg").parent
    return sorted(folder.glob("*.jpg")) + [folder / "Tom_Hanks_54745.png", Path(data.__file__).parent / "astronaut.png"]


def _shared_photos() -> list[Path]:
    """The labelled photos ($PORTRAITFORGE_FACES, tests/shared_data.py), or none when the folder is absent."""
    folder = faces_folder().get()
    return sorted(folder.glob("*.jpg")) if folder is not None else []


def _corpus() -> list[Path]:
    return _shared_photos() + _wheel_photos()


def _rgb(path: Path) -> np.ndarray:
    return load_image(path).rgb


def _reencode(rgb: np.ndarray, fmt: str, **kwargs: object) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **kwargs)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _attacks(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]
    # 10% of each side removed, unevenly (7% left/top, 3% right/bottom): the grid lands off its phase
    top, left, bottom, right = int(0.07 * h), int(0.07 * w), h - int(0.03 * h), w - int(0.03 * w)
    return {
        "jpeg_q75": _reencode(rgb, "JPEG", quality=75),
        "resize_0.5x": np.asarray(Image.fromarray(rgb).resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
        "crop_10pct": rgb[top:bottom, left:right],
        "png_to_webp": _reencode(rgb, "WEBP"),  # Pillow's default WebP quality (80)
    }


@pytest.fixture(scope="module")
def marked_outputs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, WatermarkPayload, np.ndarray]]:
    """Every corpus photo large enough, written as a PNG output through the same path swap uses."""
    folder = tmp_path_factory.mktemp("marked")
    outputs = []
    for path in _corpus():
        rgb = _rgb(path)
        if min(rgb.shape[:2]) < MIN_SIDE:
            continue
        out = folder / f"{path.stem}.png"
        stamped = write_output(out, rgb, "swap", ProvenanceOptions())
        payload = WatermarkPayload.new("swap")
        payload = WatermarkPayload(payload.operation, stamped.record["output_id"])
        outputs.append((out, payload, rgb))
    return outputs


def test_watermark_decodes_from_every_output_as_written(marked_outputs: list) -> None:
    assert len(marked_outputs) >= 3
    for out, payload, _ in marked_outputs:
        reading = decode(_rgb(out))
        assert reading is not None and reading.payload == payload, out.name


def test_watermark_survives_jpeg_resize_crop_webp(marked_outputs: list) -> None:
    decoded: dict[str, int] = {}
    for out, payload, _ in marked_outputs:
        for name, attacked in _attacks(_rgb(out)).items():
            reading = decode(attacked)
            decoded[name] = decoded.get(name, 0) + int(reading is not None and reading.payload == payload)
    rates = {name: count / len(marked_outputs) for name, count in decoded.items()}
    assert all(rate >= 0.95 for rate in rates.values()), rates


def test_watermark_psnr_at_least_40_db(marked_outputs: list) -> None:
    values = [psnr(original, _rgb(out)) for out, _, original in marked_outputs]
    assert min(values) >= 40.0, min(values)


def test_no_false_detections_on_unwatermarked_photos() -> None:
    faces_folder().require()  # the figure is over the labelled photos and the wheels' photos together
    photos = _corpus()
    assert len(photos) >= 8
    found = [p.name for p in photos if decode(_rgb(p)) is not None]
    assert found == []


def test_payload_round_trip_and_operation() -> None:
    rgb = np.asarray(Image.open(_wheel_photos()[-1]).convert("RGB"))  # astronaut
    for operation in ("generate", "swap", "batch", "ui"):
        payload = WatermarkPayload.new(operation)
        reading = decode(embed(rgb, payload))
        assert reading is not None and reading.payload == payload
        assert reading.payload.to_dict() == {
            "tool": "portraitforge",
            "operation": operation,
            "output_id": payload.output_id,
        }


# ------------------------------------------------------------------------------------------------ C2PA


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> SignerFiles:
    return make_test_signer(tmp_path_factory.mktemp("ca"))


@pytest.mark.parametrize("alg", ["es256", "ps256"])
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_signed_outputs_verify_valid(tmp_path: Path, suffix: str, alg: str) -> None:
    test_signer = make_test_signer(tmp_path / "ca", alg)
    options = ProvenanceOptions(signer=Signer(SignerConfig(test_signer.chain, test_signer.key, alg)))
    rgb = _rgb(_wheel_photos()[-1])
    out = tmp_path / f"out{suffix}"
    identity_hash = "ab" * 32
    write_output(
        out,
        rgb,
        "swap",
        options,
        metadata={"identity": "x"},
        ingredients=[{"role": "identity", "sha256": identity_hash}],
    )
    report = verify(out)
    assert report.state == "valid", report
    facts = report.to_dict()
    assert facts["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    assert facts["portraitforge"]["ingredients"] == [{"role": "identity", "sha256": identity_hash}]
    # our metadata and the watermark survive the manifest's insertion
    assert read_metadata(out)["provenance"]["output_id"] == facts["portraitforge"]["output_id"]
    reading = decode(_rgb(out))
    assert reading is not None and reading.payload.output_id == facts["portraitforge"]["output_id"]


def test_generated_draft_is_trained_algorithmic_media(tmp_path: Path, signer: SignerFiles) -> None:
    options = ProvenanceOptions(signer=Signer(SignerConfig(signer.chain, signer.key)))
    out = tmp_path / "draft.png"
    write_output(out, _rgb(_wheel_photos()[-1]), "generate", options, composite=False)
    assert verify(out).to_dict()["digital_source_type"] == "trainedAlgorithmicMedia"


def test_one_pixel_edit_is_invalid_and_plain_photos_are_missing(tmp_path: Path, signer: SignerFiles) -> None:
    options = ProvenanceOptions(signer=Signer(SignerConfig(signer.chain, signer.key)))
    out = tmp_path / "signed.png"
    write_output(out, _rgb(_wheel_photos()[-1]), "swap", options)
    assert verify(out).state == "valid"
    edit_one_pixel_png(out)
    report = verify(out)
    assert report.state == "invalid" and "dataHash.mismatch" in report.detail
    for photo in _corpus():
        assert verify(photo).state == "missing", photo.name


def test_without_signer_no_manifest_and_report_says_so(tmp_path: Path) -> None:
    out = tmp_path / "plain.jpg"
    stamped = write_output(out, _rgb(_wheel_photos()[-1]), "swap", ProvenanceOptions())
    assert stamped.record["c2pa"] == NO_SIGNER
    assert verify(out).state == "missing"
    assert read_metadata(out)["provenance"]["c2pa"] == NO_SIGNER


def test_bad_signer_is_one_line_bad_input(tmp_path: Path) -> None:
    from portraitforge.errors import BadInputError

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    options = ProvenanceOptions(signer=Signer(SignerConfig(bad, bad)))
    with pytest.raises(BadInputError, match="C2PA"):
        write_output(tmp_path / "x.png", _rgb(_wheel_photos()[-1]), "swap", options)
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------ CLI: swap + inspect


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portraitforge.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
def test_swap_then_inspect_end_to_end(tmp_path: Path, signer: SignerFiles, astronaut_path: Path) -> None:
    """A real signed swap: inspect says valid, decodes the watermark, finds the run-log line by output id;
    after a one-pixel edit it says invalid (exit 8); a plain photo is missing (exit 0); --no-watermark is logged."""
    identity = insightface_image("t1.jpg")
    log = tmp_path / "runs.jsonl"
    env = {**os.environ, "PORTRAITFORGE_C2PA_CERT": str(signer.chain), "PORTRAITFORGE_C2PA_KEY": str(signer.key)}
    out = tmp_path / "swap.png"
    done = _cli(["swap", str(astronaut_path), "-i", str(identity), "-o", str(out), "--log", str(log)], env)
    assert done.returncode == 0, done.stderr
    logged = json.loads(log.read_text().splitlines()[-1])["provenance"]
    assert logged["watermark"] == "embedded" and logged["c2pa"] == "signed (es256)"

    inspected = _cli(["inspect", str(out), "--json", "--log", str(log)], env)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["c2pa"]["state"] == "valid"
    assert report["watermark"]["output_id"] == logged["output_id"] == report["output_id"]
    assert report["watermark"]["operation"] == "swap"
    assert report["log_entries"] and report["log_entries"][0]["log"] == str(log)

    edit_one_pixel_png(out)
    tampered = _cli(["inspect", str(out), "--log", str(log)], env)
    assert tampered.returncode == EXIT_TAMPERED and "c2pa invalid" in tampered.stdout
    plain = _cli(["inspect", str(astronaut_path), "--log", str(log)], env)
    assert plain.returncode == 0 and "c2pa missing" in plain.stdout and "no watermark" in plain.stdout
    missing = _cli(["inspect", str(tmp_path / "nope.png")], env)
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1

    bare = tmp_path / "bare.png"
    no_env = {k: v for k, v in env.items() if not k.startswith("PORTRAITFORGE_C2PA")}
    done = _cli(
        ["swap", str(astronaut_path), "-i", str(identity), "-o", str(bare), "--log", str(log), "--no-watermark"], no_env
    )
    assert done.returncode == 0, done.stderr
    logged = json.loads(log.read_text().splitlines()[-1])["provenance"]
    assert logged["watermark"] == "off (--no-watermark)" and logged["c2pa"] == NO_SIGNER
    assert decode(_rgb(bare)) is None and verify(bare).state == "missing"


# ------------------------------------------------------------------------------------------------ NSFW


def test_nsfw_gate_flags_no_ordinary_portrait() -> None:
    pytest.importorskip("nudenet")
    from portraitforge.provenance.nsfw import NsfwGate

    gate = NsfwGate(policy="flag")
    faces_folder().require()  # the figure is over the labelled photos and the wheels' photos together
    photos = _corpus()
    flagged = [p.name for p in photos if gate.detect(_rgb(p))]
    assert len(photos) >= 8 and flagged == []


def test_nsfw_pixelate_changes_only_the_box() -> None:
    from portraitforge.provenance.nsfw import pixelate

    rgb = _rgb(_wheel_photos()[-1])
    out = pixelate(rgb, [(100, 120, 64, 48)])
    changed = np.argwhere(np.any(out != rgb, axis=2))
    assert changed.size and changed[:, 0].min() >= 120 and changed[:, 0].max() < 168
    assert changed[:, 1].min() >= 100 and changed[:, 1].max() < 164


def test_nudenet_is_not_imported_unless_enabled(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from portraitforge import cli\n"
        "from portraitforge.provenance.stamp import ProvenanceOptions, write_output\n"
        f"write_output({str(tmp_path / 'x.png')!r}, np.zeros((64, 64, 3), np.uint8), 'swap', ProvenanceOptions())\n"
        "assert 'nudenet' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_generate_output_is_watermarked_and_signed_as_trained_media(tmp_path: Path, signer: SignerFiles) -> None:
    """A real (tiny, random-weight) Stable Diffusion run: the portrait is generated, not swapped."""
    from diffusion_fixtures import save_tiny

    tiny = save_tiny(tmp_path / "tiny", "sd")
    env = {
        **os.environ,
        "PORTRAITFORGE_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "PORTRAITFORGE_C2PA_CERT": str(signer.chain),
        "PORTRAITFORGE_C2PA_KEY": str(signer.key),
    }
    args = ["generate", "a portrait", "--model", str(tiny), "--seed", "3", "--steps", "2", "--size", "256x256"]
    done = _cli([*args, "-o", str(tmp_path / "out")], env)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "000-3.png"
    inspected = _cli(["inspect", str(out), "--json"], env)
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["c2pa"]["state"] == "valid"
    assert report["c2pa"]["digital_source_type"] == "trainedAlgorithmicMedia"
    assert report["watermark"]["operation"] == "generate"
    assert report["watermark"]["output_id"] == report["metadata"]["provenance"]["output_id"]
    assert report["log_entries"] and report["log_entries"][0]["command"] == "generate"
