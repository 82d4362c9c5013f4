"""`portraitforge generate` end to end on a tiny local model: bytes, metadata, exit codes, offline, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from diffusion_fixtures import build_tiny_sd, save_tiny, save_tiny_lora
from PIL import Image
from typer.testing import CliRunner

from portraitforge.cli import app
from portraitforge.imageio import read_metadata

REPO = Path(__file__).resolve().parents[1]


# Tiny models on a busy 2-core box: one torch thread (conftest `one_torch_thread`).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny"), "sd")


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        PORTRAITFORGE_HOME=str(tmp_path / "home"),
        HF_HOME=str(tmp_path / "empty-hf-home"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",  # same reason as the in-process fixture: no OpenMP spin contention
    )
    return out


def _cli(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "portraitforge.cli", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_twice_same_bytes(tmp_path: Path, tiny_dir: Path, env: dict[str, str]) -> None:
    args = ["generate", "a studio portrait", "--model", str(tiny_dir), "--seed", "7", "-n", "2", "--steps", "2"]
    # Two separate processes (run side by side to save wall time): nothing may depend on process state.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "portraitforge.cli", *args, "-o", str(tmp_path / name)]
            + ["--negative-prompt", "blurry, low quality"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == ["000-7.png", "001-8.png"]
    assert a == b
    assert a["000-7.png"] != a["001-8.png"]

    meta = read_metadata(tmp_path / "a" / "001-8.png")
    assert meta is not None
    assert (meta["prompt"], meta["negative_prompt"], meta["seed"]) == ("a studio portrait", "blurry, low quality", 8)
    assert (meta["steps"], meta["guidance"], meta["scheduler"]) == (2, 7.5, "euler")
    assert meta["model"]["hash_kind"] == "folder-fingerprint" and len(meta["model"]["hash"]) == 64
    assert meta["loras"] == [] and meta["refiner"] is None
    with Image.open(tmp_path / "a" / "001-8.png") as img:
        text = img.text["parameters"]  # type: ignore[attr-defined]
    lines = text.splitlines()
    assert lines[0] == "a studio portrait"
    assert lines[1] == "Negative prompt: blurry, low quality"
    assert lines[2].startswith("Steps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 8, Size: 64x64, Model hash: ")


def test_offline_uncached_hub_id_one_line_exit_5(tmp_path: Path, env: dict[str, str]) -> None:
    proc = _cli(["generate", "x", "--model", "nobody-here/fake-model", "-o", str(tmp_path / "o")], env)
    assert proc.returncode == 5
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "not in the local Hugging Face cache" in lines[0] and "hf download nobody-here/fake-model" in lines[0]
    assert not (tmp_path / "o").exists()


def test_ctrl_c_exits_130_without_partial_files(tmp_path: Path, tiny_dir: Path, env: dict[str, str]) -> None:
    out = tmp_path / "o"
    args = ["generate", "p", "--model", str(tiny_dir), "--seed", "1", "-n", "200", "--steps", "4", "-o", str(out)]
    cmd = [sys.executable, "-m", "portraitforge.cli", *args]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*.png")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list(out.glob("*.png")), "no image was written before the deadline"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: interrupted"), stderr
    assert sum(line.startswith("error:") for line in lines) == 1
    written = sorted(out.rglob("*"))
    assert not [p for p in written if p.name.endswith(".part") or p.name.startswith(".")]
    assert 1 <= len(written) < 200
    for path in written:
        with Image.open(path) as img:
            img.load()  # every file left behind is complete


def test_identity_on_noise_model_is_no_face_exit_4(tmp_path: Path, tiny_dir: Path, hanks_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["generate", "p", "-m", str(tiny_dir), "-i", str(hanks_path), "--seed", "3", "--steps", "1"]
        + ["--retries", "1", "-o", str(tmp_path / "o"), "--json", "--log", str(tmp_path / "runs.jsonl")],
    )
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "NO_FACE" and report["identity"] == hanks_path.stem
    attempts = report["images"][0]["attempts"]
    assert [a["seed"] for a in attempts] == [3, 4]
    assert all(Path(a["draft"]).is_file() for a in attempts)  # rejected drafts are kept for inspection
    assert report["images"][0]["output"] is None
    assert json.loads((tmp_path / "runs.jsonl").read_text().splitlines()[-1])["command"] == "generate"


def test_lora_recorded_in_metadata(tmp_path: Path, tiny_dir: Path) -> None:
    pytest.importorskip("peft", reason="LoRA loading needs the 'peft' package (pip install peft)")
    lora = save_tiny_lora(build_tiny_sd(tmp_path / "tok"), tmp_path / "idol.safetensors")
    result = CliRunner().invoke(
        app,
        ["generate", "p", "-m", str(tiny_dir), "--lora", f"{lora}:0.8", "--scheduler", "euler_a"]
        + ["--seed", "2", "--steps", "2", "-o", str(tmp_path / "o"), "--log", str(tmp_path / "log")],
    )
    assert result.exit_code == 0, result.output
    meta = read_metadata(tmp_path / "o" / "000-2.png")
    assert meta is not None
    assert meta["loras"][0]["weight"] == 0.8 and meta["loras"][0]["path"] == str(lora)
    assert meta["sampler"] == "Euler a"
    with Image.open(tmp_path / "o" / "000-2.png") as img:
        assert 'Lora weights: "idol: 0.8"' in img.text["parameters"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--size", "0x5"], 2),
        (["--size", "63x64"], 2),
        (["--steps", "0"], 2),
        (["--scheduler", "nope"], 2),
        (["--device", "tpu"], 2),
        (["--lora", "missing.safetensors"], 3),
        (["--identity", "no-such-photo.png"], 3),
    ],
)
def test_bad_options_one_line(tmp_path: Path, tiny_dir: Path, extra: list[str], code: int) -> None:
    result = CliRunner().invoke(
        app, ["generate", "p", "-m", str(tiny_dir), "-o", str(tmp_path / "o"), "--log", str(tmp_path / "l"), *extra]
    )
    assert result.exit_code == code, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_pickle_checkpoint_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04")
    result = CliRunner().invoke(app, ["generate", "p", "-m", str(ckpt), "-o", str(tmp_path / "o")])
    assert result.exit_code == 3
    assert "pickle" in result.stderr


def test_stored_identity_by_name_and_consent_gate(
    tmp_path: Path, tiny_dir: Path, hanks_path: Path, analyzer: object
) -> None:
    """`--identity NAME` resolves from the store (a cache hit, no re-embedding); `--require-consent` refuses an
    identity without a consent record before anything is drawn."""
    from portraitforge.embeddings_cache.store import IdentityStore

    store_dir = tmp_path / "store"
    IdentityStore(store_dir).add("hanks", [hanks_path], analyzers=[analyzer])  # type: ignore[list-item]
    common = ["generate", "p", "-m", str(tiny_dir), "-i", "hanks", "--store", str(store_dir), "--steps", "1"]
    refused = CliRunner().invoke(app, [*common, "--require-consent", "-o", str(tmp_path / "refused")])
    assert refused.exit_code == 3 and "consent" in refused.output
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").rglob("*.png"))

    used = CliRunner().invoke(
        app, [*common, "--retries", "0", "-o", str(tmp_path / "o"), "--json", "--log", str(tmp_path / "r.jsonl")]
    )
    assert used.exit_code == 4, used.output  # the tiny model draws noise: no face, but the name resolved
    assert json.loads(used.stdout)["identity"] == "hanks"
