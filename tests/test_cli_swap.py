"""`portraitforge swap` end to end, as a real subprocess: exit codes, stdout/stderr, output files.

Every run loads the models (~5-10 s), so runs are shared: one happy-path run feeds several tests, and the
bad-input matrix and the unusual-pixel-format photos each go through one multi-target run whose per-file
statuses are read back from the run log and stderr.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from portraitforge import __version__
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

REPO = Path(__file__).resolve().parents[1]
OK_STATUSES = {"OK", "LOW_QUALITY"}
# The astronaut's face sits at x 179..266, y 83..170 (measured); the swap changes nothing outside rows 30..230.
FACE_BOX = (179, 83, 266, 170)
UNTOUCHED_ROWS = (slice(0, 30), slice(230, None))


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    cwd: Path

    def json_reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def env(isolated_home: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["PORTRAITFORGE_HOME"] = str(isolated_home)
    out.pop("PYTHONWARNINGS", None)
    return out


def cli(env: dict[str, str], cwd: Path, *args: str | Path) -> Run:
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "portraitforge.cli", *(str(a) for a in args)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return Run(proc.returncode, proc.stdout, proc.stderr, cwd)


def one_error_line(run: Run) -> str:
    """A failure is exactly one non-empty stderr line starting with 'error: ', never a traceback."""
    assert "Traceback" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), run.stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of an interrupted or failed atomic write."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def assert_untouched_outside_face(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.shape == expected.shape
    for rows in UNTOUCHED_ROWS:
        np.testing.assert_array_equal(result[rows], expected[rows])
    x0, y0, x1, y1 = FACE_BOX
    changed = np.abs(result[y0:y1, x0:x1].astype(int) - expected[y0:y1, x0:x1].astype(int)).mean()
    assert changed > 3.0, f"the face was not refined (mean change {changed:.2f})"


def png_with_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height grey pixels (a decompression bomb as shipped)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)  # a few rows; the loader must refuse before decoding
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray, analyzer: Any) -> Path:
    from portraitforge.demo import identity_photo

    root = tmp_path_factory.mktemp("swap_inputs")
    Image.fromarray(astronaut_rgb).save(root / "astronaut.png")
    Image.fromarray(identity_photo(analyzer)).save(root / "identity.png")
    Image.fromarray(skimage.data.coffee()).save(root / "coffee.png")
    return root


@pytest.fixture(scope="module")
def astronaut_png(inputs: Path) -> Path:
    return inputs / "astronaut.png"


@pytest.fixture(scope="module")
def identity_png(inputs: Path) -> Path:
    return inputs / "identity.png"


# ---------------------------------------------------------------- version and happy path


def test_version_prints_version_and_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    run = cli(env, tmp_path, "--version")
    assert run.code == 0, run.stderr
    assert run.stdout.strip() == f"portraitforge {__version__}"


@pytest.fixture(scope="module")
def happy(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, astronaut_png: Path, identity_png: Path
) -> Run:
    """astronaut -> identity, JSON report, explicit log; out.png already exists (junk) and must be replaced."""
    cwd = tmp_path_factory.mktemp("happy")
    (cwd / "out.png").write_bytes(b"old output that is not an image")
    # --no-watermark: these tests check pixels outside the face bit for bit (test_provenance.py checks the mark)
    return cli(env, cwd, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", "--json", "--log", "runs.jsonl",
               "--no-watermark")  # fmt: skip


def test_happy_path_writes_decodable_png_of_input_size(happy: Run, astronaut_rgb: np.ndarray) -> None:
    assert happy.code == 0, happy.stderr
    assert "Traceback" not in happy.stderr
    out = happy.cwd / "out.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (512, 512)
    assert_untouched_outside_face(rgb_of(out), astronaut_rgb)
    assert leftovers(happy.cwd) == []


def test_happy_path_png_metadata_has_parameters_and_versions(happy: Run, identity_png: Path) -> None:
    [report] = happy.json_reports()
    with Image.open(happy.cwd / "out.png") as img:
        meta = json.loads(img.text["portraitforge"])  # an iTXt chunk any PNG tool can read
    assert meta["parameters"] == report["parameters"]
    assert meta["parameters"]["strength"] == 1.0 and meta["parameters"]["resolution"] == "original"
    assert meta["input"] == "astronaut.png" and meta["identity"] == identity_png.stem
    assert len(meta["identity_sources"]) == 1 and re.fullmatch(r"[0-9a-f]{64}", meta["identity_sources"][0])
    assert meta["versions"]["portraitforge"] == __version__
    assert meta["versions"]["pillow"] == Image.__version__ and meta["versions"]["opencv"] == cv2.__version__
    assert {"numpy", "dlib"} <= set(meta["versions"])
    assert meta["stages"], "per-stage parameters are recorded"


def test_happy_path_json_report(happy: Run, astronaut_png: Path, identity_png: Path) -> None:
    reports = happy.json_reports()
    assert len(reports) == 1, happy.stdout  # exactly one JSON document per target, nothing else on stdout
    [report] = reports
    assert report["status"] in OK_STATUSES and report["message"]
    assert report["input"] == str(astronaut_png) and Path(report["output"]).name == "out.png"
    assert report["identity"] == identity_png.stem and report["identity_cache_hit"] is False

    timings = report["timings_ms"]
    assert {"identity", "load", "detect", "swap", "blend", "save", "total"} <= set(timings)
    assert all(isinstance(v, float | int) and v >= 0 for v in timings.values())
    assert timings["total"] >= timings["detect"] + timings["swap"] + timings["blend"]

    [face] = report["faces"]
    x0, y0, x1, y1 = face["box"]
    fx0, fy0, fx1, fy1 = FACE_BOX
    assert x0 < (fx0 + fx1) / 2 < x1 and y0 < (fy0 + fy1) / 2 < y1, face["box"]
    assert face["detection_score"] > 0
    assert 0.0 < face["landmarks_confidence"] <= 1.0
    q = face["quality"]
    assert 0.0 < q["identity_distance"] < 1.5 and 0.0 < q["original_distance"] < 1.5
    assert q["sharpness"] > 0 and q["target_sharpness"] > 0 and q["seam_score"] > 0
    # The status follows the documented thresholds.
    params = report["parameters"]
    too_far = q["identity_distance"] > params["max_identity_distance"]
    seamy = q["seam_score"] > params["max_seam_score"]
    if too_far or seamy:
        assert report["status"] == "LOW_QUALITY"
    if report["status"] == "LOW_QUALITY":
        assert "low quality" in report["message"]


def test_happy_path_appends_one_run_log_line(happy: Run) -> None:
    lines = (happy.cwd / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record.pop("time"))
    assert record == happy.json_reports()[0]


def test_output_file_mode_follows_umask(happy: Run) -> None:
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    if expected == 0o600:
        pytest.skip("this umask gives 0600 anyway")
    assert (happy.cwd / "out.png").stat().st_mode & 0o777 == expected


def test_same_command_twice_gives_identical_bytes(
    happy: Run, env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path
) -> None:
    again = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", "--json", "--log",
                "runs.jsonl", "--no-watermark")  # fmt: skip
    assert again.code == happy.code == 0, again.stderr
    assert (tmp_path / "out.png").read_bytes() == (happy.cwd / "out.png").read_bytes()


# ---------------------------------------------------------------- formats, sizes, strength


@pytest.mark.parametrize(("name", "fmt"), [("out.jpg", "JPEG"), ("out.webp", "WEBP")])
def test_output_format_follows_extension(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path, name: str, fmt: str
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", name)
    assert run.code == 0, run.stderr
    with Image.open(tmp_path / name) as img:
        assert img.format == fmt and img.size == (512, 512)
        pixels = np.asarray(img.convert("RGB"))
        description = img.getexif().get(0x010E)  # EXIF ImageDescription carries the metadata JSON
    assert pixels.std() > 10  # decoded to a real picture
    meta = json.loads(description)
    assert meta["versions"]["portraitforge"] == __version__ and meta["parameters"]["strength"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize(
    ("args", "size"),
    [
        (["--resolution", "1024"], (1024, 1024)),
        (["--resolution", "512x300", "--fit", "crop"], (512, 300)),
        (["--resolution", "512x300", "--fit", "pad"], (512, 300)),
        (["--resolution", "512x300", "--fit", "stretch"], (512, 300)),
    ],
    ids=["1024", "512x300-crop", "512x300-pad", "512x300-stretch"],
)
def test_resolution_gives_exact_size(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path, args: list[str], size: tuple
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", *args)
    assert run.code == 0, run.stderr
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == size
        assert np.asarray(img.convert("RGB")).std() > 10


def test_strength_zero_keeps_every_pixel(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path, astronaut_rgb: np.ndarray
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", "--strength", "0", "--json",
              "--no-watermark")  # fmt: skip
    assert run.code == 0, run.stderr
    [report] = run.json_reports()
    assert report["status"] == "OK" and len(report["faces"]) == 1
    np.testing.assert_array_equal(rgb_of(tmp_path / "out.png"), astronaut_rgb)


# ---------------------------------------------------------------- unusual pixel formats (one folder run)


def _expected_upright_rgb(path: Path) -> np.ndarray:
    """What a careful viewer shows: EXIF orientation applied, 16-bit scaled to 8 bits, grey/palette/CMYK as RGB."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            grey = np.rint(np.asarray(img).astype(np.float64) / 257).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.fixture(scope="module")
def pixel_formats(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, astronaut_rgb: np.ndarray, identity_png: Path
) -> tuple[Run, Path, Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("pixel_formats")
    pil = Image.fromarray(astronaut_rgb)
    pil.convert("L").save(folder / "gray.png")
    rgba = pil.convert("RGBA")
    alpha = np.full(astronaut_rgb.shape[:2], 255, np.uint8)
    alpha[:64, :64] = 0
    alpha[448:, :] = 128
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "rgba.png")
    pil.convert("P").save(folder / "palette.png")
    pil.convert("P").save(folder / "palette_gif.gif")
    pil.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    bgr = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(folder / "rgb16.png"), bgr.astype(np.uint16) * 257)
    assert cv2.imwrite(str(folder / "gray16.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    # A camera photo stored sideways: pixels rotated 90 degrees CCW, EXIF Orientation 6 says "rotate 90 CW".
    upright = astronaut_rgb[:400]  # 512 wide x 400 tall, so a missed rotation shows in the size
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(
        folder / "exif_rotated.jpg", quality=95, exif=exif.tobytes()
    )
    with Image.open(folder / "gray16.png") as img:
        assert img.mode.startswith("I"), img.mode  # really 16-bit as Pillow sees it
    with Image.open(folder / "cmyk.jpg") as img:
        assert img.mode == "CMYK"
    with Image.open(folder / "exif_rotated.jpg") as img:
        assert img.size == (400, 512)
    expected = {p.name: _expected_upright_rgb(p) for p in folder.iterdir()}
    expected["rgba.png"] = astronaut_rgb
    expected["alpha"] = alpha
    out = folder.parent / f"{folder.name}_out"
    run = cli(env, folder.parent, "swap", folder, "-i", identity_png, "-o", out, "--json", "--no-watermark")
    return run, folder, out, expected


PIXEL_FORMAT_FILES = [
    "gray.png", "rgba.png", "palette.png", "palette_gif.gif", "cmyk.jpg", "rgb16.png", "gray16.png",
    "exif_rotated.jpg",
]  # fmt: skip


def test_unusual_pixel_formats_run_exits_0(pixel_formats: tuple) -> None:
    run, folder, out, _ = pixel_formats
    assert run.code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(Path(r["input"]).name for r in run.json_reports()) == sorted(PIXEL_FORMAT_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(n).stem}.png" for n in PIXEL_FORMAT_FILES)


@pytest.mark.parametrize("name", PIXEL_FORMAT_FILES)
def test_unusual_pixel_format_is_refined(pixel_formats: tuple, name: str) -> None:
    run, folder, out, expected = pixel_formats
    [report] = [r for r in run.json_reports() if Path(r["input"]).name == name]
    assert report["status"] in OK_STATUSES, report["message"]
    assert len(report["faces"]) == 1 and report["faces"][0]["quality"] is not None
    result_path = out / f"{Path(name).stem}.png"
    assert report["output"] == str(result_path)
    result = rgb_of(result_path)
    assert_untouched_outside_face(result, expected[name])
    if name == "exif_rotated.jpg":
        assert result.shape[:2] == (400, 512)  # upright: as wide as the original photo
    if name == "rgba.png":
        with Image.open(result_path) as img:
            assert img.mode == "RGBA"
            np.testing.assert_array_equal(np.asarray(img)[..., 3], expected["alpha"])


# ---------------------------------------------------------------- bad inputs (one multi-target run)

# file name -> (expected statuses, message fragment); "missing.png" does not exist, the rest are built below.
BAD_INPUTS: dict[str, tuple[set[str], str]] = {
    "empty.png": ({"BAD_INPUT"}, "file is empty"),
    "trunc_png.png": ({"BAD_INPUT"}, "truncated"),
    "trunc_jpg.jpg": ({"BAD_INPUT"}, "truncated"),
    "text_renamed.png": ({"BAD_INPUT"}, "not a recognised image file"),
    "notes.txt": ({"BAD_INPUT"}, "not a recognised image file"),
    "astronaut.ppm": ({"BAD_INPUT"}, "unsupported image format PPM"),
    "bomb_20000x20000.png": ({"BAD_INPUT"}, "decompression bomb"),
    "huge_9000x9000.png": ({"BAD_INPUT"}, "exceeds the limit of 64000000"),
    "one_pixel.png": ({"NO_FACE"}, "no face detected"),
    "coffee.png": ({"NO_FACE"}, "no face detected"),
    "half_face.png": ({"NO_FACE", "OK", "LOW_QUALITY"}, ""),
    "missing.png": ({"BAD_INPUT"}, "file not found"),
}
EXPLICIT = ("notes.txt", "astronaut.ppm", "missing.png")  # given on the command line, not found in the folder


@pytest.fixture(scope="module")
def bad_run(
    env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    astronaut_rgb: np.ndarray,
    identity_png: Path,
    inputs: Path,
) -> tuple[Run, dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("bad")
    folder, extra, out = root / "targets", root / "extra", root / "out"
    for d in (folder, extra, out):
        d.mkdir()
    pil = Image.fromarray(astronaut_rgb)
    (folder / "empty.png").write_bytes(b"")
    for name, fmt in (("trunc_png.png", "PNG"), ("trunc_jpg.jpg", "JPEG")):
        buffer = io.BytesIO()
        pil.save(buffer, fmt)
        (folder / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "text_renamed.png").write_text("this is a text file, not a picture\n")
    (extra / "notes.txt").write_text("notes\n")
    pil.save(extra / "astronaut.ppm")
    png_with_header(folder / "bomb_20000x20000.png", 20000, 20000)  # over Pillow's own hard limit
    png_with_header(folder / "huge_9000x9000.png", 9000, 9000)  # over portraitforge's 64 MP default only
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(folder / "one_pixel.png")
    (folder / "coffee.png").write_bytes((inputs / "coffee.png").read_bytes())
    cut = (FACE_BOX[0] + FACE_BOX[2]) // 2  # the left half of the face is outside the picture
    Image.fromarray(np.ascontiguousarray(astronaut_rgb[:, cut:])).save(folder / "half_face.png")
    paths = {name: (extra if name in EXPLICIT else folder) / name for name in BAD_INPUTS}
    run = cli(env, root, "swap", folder, *(paths[n] for n in EXPLICIT), "-i", identity_png, "-o", out,
              "--log", root / "runs.jsonl")  # fmt: skip
    return run, paths, out


def _log_records(run: Run) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in (run.cwd / "runs.jsonl").read_text().splitlines()]
    return {Path(r["input"]).name: r for r in records}


def _message_for(stderr: str, target: Path) -> str:
    """The per-file message about `target`: the text after 'error: <target>: ' up to the end of its line."""
    match = re.search(re.escape(f"error: {target}: ") + r"([^\n]*)", stderr)
    return match.group(1) if match else ""


def test_bad_inputs_exit_with_worst_status_and_no_traceback(bad_run: tuple) -> None:
    run, paths, out = bad_run
    assert run.code == EXIT_CODES[Status.BAD_INPUT], run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(_log_records(run)) == sorted(paths)  # every target was reported, none crashed the run
    assert leftovers(out) == []
    written = sorted(p.name for p in out.iterdir())
    assert written in ([], ["half_face.png"]), written


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_reported_per_file(bad_run: tuple, name: str) -> None:
    run, paths, out = bad_run
    statuses, fragment = BAD_INPUTS[name]
    record = _log_records(run)[name]
    assert record["status"] in statuses, record["message"]
    assert fragment in record["message"]
    result = out / f"{Path(name).stem}.png"
    if record["status"] in OK_STATUSES:
        assert record["output"] == str(result)
        with Image.open(result) as img:
            assert img.size == (512 - (FACE_BOX[0] + FACE_BOX[2]) // 2, 512)
        assert f"{record['status']}: {paths[name]} -> {result}" in run.stderr
    else:
        assert record["output"] is None and not result.exists()
        message = _message_for(run.stderr, paths[name])
        assert message and fragment in message, run.stderr


def test_bad_input_messages_each_start_a_line(bad_run: tuple) -> None:
    run, paths, _ = bad_run
    lines = run.stderr.splitlines()
    for name, path in paths.items():
        if _log_records(run)[name]["status"] not in OK_STATUSES:
            assert any(line.startswith(f"error: {path}: ") for line in lines), (name, run.stderr)


def test_bad_input_message_names_the_file_once(bad_run: tuple) -> None:
    run, paths, _ = bad_run
    assert _message_for(run.stderr, paths["empty.png"]) == "file is empty"


# ---------------------------------------------------------------- single-target failures


def test_too_many_pixels_is_bad_input_and_keeps_existing_output(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path
) -> None:
    with Image.open(identity_png) as img:
        limit = img.size[0] * img.size[1]  # the identity photo passes, the 512x512 target does not
    assert limit < 512 * 512
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "out.png")
    before = (tmp_path / "out.png").read_bytes()
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", "--max-pixels", str(limit))
    assert run.code == EXIT_CODES[Status.BAD_INPUT]
    line = one_error_line(run)
    assert str(astronaut_png) in line and f"exceeds the limit of {limit}" in line
    assert (tmp_path / "out.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_target_without_face_exits_no_face_and_keeps_existing_output(
    env: dict[str, str], tmp_path: Path, inputs: Path, identity_png: Path
) -> None:
    (tmp_path / "out.jpg").write_bytes(b"previous result")
    run = cli(env, tmp_path, "swap", inputs / "coffee.png", "-i", identity_png, "-o", "out.jpg")
    assert run.code == EXIT_CODES[Status.NO_FACE] == 4
    assert "no face detected" in one_error_line(run)
    assert (tmp_path / "out.jpg").read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jpg"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--strength", "2"], "strength"),
        (["--resolution", "0x5"], "resolution"),
        (["--blend", "nonsense"], "blend"),
        (["--resolution", "512x300", "--fit", "nope"], "fit"),
    ],
)
def test_invalid_parameter_is_usage_error(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path, args: list[str], field: str
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", *args)
    assert run.code == EXIT_USAGE == 2
    assert field in one_error_line(run)
    assert list(tmp_path.iterdir()) == []


def test_unparsable_option_is_one_line_usage_error(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.png", "--strength", "abc")
    assert run.code == EXIT_USAGE
    assert "strength" in one_error_line(run)


def test_unsupported_output_extension_is_rejected(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, identity_png: Path
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", identity_png, "-o", "out.gif")
    assert run.code == EXIT_CODES[Status.BAD_INPUT]
    assert ".gif" in one_error_line(run)
    assert list(tmp_path.iterdir()) == []


def test_missing_identity_file_is_bad_input(env: dict[str, str], tmp_path: Path, astronaut_png: Path) -> None:
    missing = tmp_path / "nobody.png"
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", missing, "-o", "out.png")
    assert run.code == EXIT_CODES[Status.BAD_INPUT] == 3
    line = one_error_line(run)
    assert str(missing) in line and "not found" in line
    assert list(tmp_path.iterdir()) == []


def test_identity_without_face_exits_no_face(
    env: dict[str, str], tmp_path: Path, astronaut_png: Path, inputs: Path
) -> None:
    run = cli(env, tmp_path, "swap", astronaut_png, "-i", inputs / "coffee.png", "-o", "out.png")
    assert run.code == EXIT_CODES[Status.NO_FACE] == 4
    line = one_error_line(run)
    assert "identity 'coffee'" in line and "no face" in line
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- many faces, folders


def test_group_photo_select_all_refines_six_faces(
    env: dict[str, str], tmp_path: Path, t1_path: Path, identity_png: Path
) -> None:
    # HOG at the default detect_max_side (640) finds 4 of t1.jpg's 6 faces; at 1280 px it finds all six.
    (tmp_path / "group.yaml").write_text("detect_max_side: 1280\n")
    run = cli(env, tmp_path, "swap", t1_path, "-i", identity_png, "-o", "group.png", "--select", "all",
              "--config", "group.yaml", "--json")  # fmt: skip
    assert run.code == 0, run.stderr
    [report] = run.json_reports()
    assert report["status"] in OK_STATUSES
    assert [f["index"] for f in report["faces"]] == [0, 1, 2, 3, 4, 5]
    assert all(f["quality"] is not None for f in report["faces"])
    centers = {
        (round((f["box"][0] + f["box"][2]) / 2), round((f["box"][1] + f["box"][3]) / 2)) for f in report["faces"]
    }
    assert len(centers) == 6  # six different faces, not one face six times
    assert report["message"].startswith("refined 6 of 6 face(s)")
    with Image.open(tmp_path / "group.png") as img, Image.open(t1_path) as src:
        assert img.size == src.size


def test_folder_with_one_bad_image(
    env: dict[str, str], tmp_path: Path, astronaut_rgb: np.ndarray, identity_png: Path
) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    Image.fromarray(astronaut_rgb).save(folder / "a_astronaut.png")
    Image.fromarray(astronaut_rgb).resize((384, 384), Image.LANCZOS).save(folder / "b_small.jpg", quality=92)
    (folder / "c_broken.png").write_bytes((folder / "a_astronaut.png").read_bytes()[:5000])
    run = cli(env, tmp_path, "swap", folder, "-i", identity_png, "-o", out)
    assert run.code == EXIT_CODES[Status.BAD_INPUT], run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_astronaut.png", "b_small.png"]
    for name, size in (("a_astronaut", 512), ("b_small", 384)):
        source, result = re.escape(str(folder / name)), re.escape(str(out / name))
        assert re.search(rf"(OK|LOW_QUALITY): {source}\.\w+ -> {result}\.png: refined 1 of \d+ face", run.stderr), (
            run.stderr
        )
        with Image.open(out / f"{name}.png") as img:
            assert img.size == (size, size)
    assert "truncated" in _message_for(run.stderr, folder / "c_broken.png"), run.stderr
