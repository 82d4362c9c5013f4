"""The web UI's handlers on real photos, without a browser: swap outcomes, face choice, files, logs, identities,
batches, messages in the UI's words, and the `portraitforge ui` command."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from typer.testing import CliRunner  # noqa: E402

from portraitforge.cli import app as cli_app  # noqa: E402
from portraitforge.cli import ui as cli_ui  # noqa: E402
from portraitforge.errors import BadInputError  # noqa: E402
from portraitforge.imageio import load_image, read_metadata, save_image  # noqa: E402
from portraitforge.samples import insightface_image  # noqa: E402
from portraitforge.types import ImageRGB  # noqa: E402
from portraitforge.ui import UIState, build_app, detect_faces, run_swap, run_sweep, status_html, ui_words  # noqa: E402
from portraitforge.ui import batch as batch_ui  # noqa: E402
from portraitforge.ui import identity as identity_ui  # noqa: E402
from portraitforge.ui.swap import face_at, toggle_face  # noqa: E402

DONE = ("OK", "LOW_QUALITY")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-home")


@pytest.fixture(scope="module")
def state(home: Path) -> UIState:
    """The CLI's default pipeline (mesh engine, its analyzer and grader), outputs and logs in a temporary folder."""
    return UIState(store_dir=home / "store", output_dir=home / "out", log_path=home / "runs.jsonl")


@pytest.fixture(scope="module")
def hanks() -> Path:
    return insightface_image("Tom_Hanks_54745.png")


@pytest.fixture(scope="module")
def t1() -> Path:
    return insightface_image("t1.jpg")


@pytest.fixture(scope="module")
def swapped(state: UIState, astronaut_rgb: ImageRGB, hanks: Path):
    return run_swap(state, astronaut_rgb, str(hanks))


def _log(state: UIState) -> list[dict]:
    if not state.log_path.is_file():
        return []
    return [json.loads(line) for line in state.log_path.read_text().splitlines()]


def _plain(message: str) -> bool:
    """One line, no traceback, no server path, no command-line flag."""
    one = bool(message) and "\n" not in message and "Traceback" not in message
    return one and "/" not in message and "--" not in message


def test_build_app_loads_nothing(tmp_path: Path) -> None:
    built: list[object] = []
    fresh = UIState(lambda cfg: built.append(cfg), store_dir=tmp_path)  # type: ignore[arg-type, func-returns-value]
    app = build_app(state=fresh)
    assert isinstance(app, gr.Blocks) and app.portraitforge_state is fresh
    assert built == []  # models load on the first request, not when the app is built
    assert build_app(store_dir=tmp_path, require_consent=True).portraitforge_state.require_consent is True


def test_swap_saves_like_the_cli_and_logs(swapped, state: UIState, astronaut_rgb: ImageRGB) -> None:
    res = swapped
    assert res.status in DONE, res.line
    assert res.image is not None and res.image.shape == astronaut_rgb.shape
    x0, y0, x1, y1 = (round(v) for v in res.report["faces"][0]["box"])
    diff = np.abs(res.image.astype(int) - astronaut_rgb.astype(int))
    assert diff[y0:y1, x0:x1].mean() > 5.0  # the face changed...
    # ...the rest of the photo did not, but for the invisible watermark every output carries (1-2 levels of chroma,
    # PSNR >= 40 dB: tests/test_provenance.py)
    assert diff[400:, :].mean() < 2.0
    # The download is the CLI's output: same metadata keys, written by refine_file; the report sits next to it.
    assert res.output is not None and res.output.parent == state.output_dir and res.output.suffix == ".png"
    meta = read_metadata(res.output)
    assert meta is not None and meta["interface"] == "web UI" and meta["identity"] == "Tom_Hanks_54745"
    assert {"parameters", "stages", "versions", "identity_sources"} <= set(meta)
    assert json.loads(res.report_file.read_text())["status"] == res.status
    # Quality at a glance: the grader's 0-100 score.
    grader = res.report["faces"][0]["quality"]["grader"]
    assert res.quality == grader["score"] and 0 <= res.quality <= 100 and f"quality {res.quality}/100" in res.message
    logged = _log(state)[-1]
    assert logged["interface"] == "ui" and logged["status"] == res.status
    assert Path(logged["output"]) == res.output
    assert 'data-status="' + res.status + '"' in res.html and "white-space:normal" in res.html
    from portraitforge.provenance.watermark import decode

    reading = decode(load_image(res.output).rgb)
    assert reading is not None and reading.payload.operation.name == "ui"
    assert res.report["provenance"]["output_id"] == reading.payload.output_id


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_output_formats_carry_metadata(state: UIState, astronaut_rgb: ImageRGB, hanks: Path, fmt: str) -> None:
    res = run_swap(state, astronaut_rgb, str(hanks), output_format=fmt)
    assert res.status in DONE and res.output is not None and res.output.suffix == f".{fmt}"
    meta = read_metadata(res.output)
    assert meta is not None and meta["parameters"]["strength"] == 1.0


def test_fake_jpg_is_one_line_and_logged(state: UIState, tmp_path: Path, hanks: Path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"this is not a picture\n" * 10)
    before = len(list(state.output_dir.iterdir()))
    res = run_swap(state, str(fake), str(hanks))
    assert res.status == "BAD_INPUT" and res.message == "holiday.jpg: not a recognised image file"
    assert res.image is None and res.output is None
    assert len(list(state.output_dir.iterdir())) == before  # nothing written
    assert _log(state)[-1]["status"] == "BAD_INPUT"  # a failed UI run is logged as a failed CLI run is
    view = detect_faces(state, str(fake))  # the upload's own preview says the same
    assert view.status == "BAD_INPUT" and "not a recognised image file" in view.message


def test_no_face_target(state: UIState, hanks: Path) -> None:
    ramp = np.linspace(0, 255, 320 * 240, dtype=np.float32).reshape(240, 320)
    landscape = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=2).astype(np.uint8)
    res = run_swap(state, landscape, str(hanks))
    assert res.status == "NO_FACE" and "no face" in res.message and _plain(res.message)
    assert detect_faces(state, landscape).status == "NO_FACE"


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"strength": 0}, "strength 0 is out of range"),
        ({"strength": 5}, "strength 5 is out of range"),
        ({"strength": -3}, "strength -3 is out of range"),
        ({"strength": "abc"}, "strength 'abc' is not a number"),
        ({"detect_max_side": 700.5}, "detection size 700.5 must be a whole number"),
        ({"blend": "melt"}, "blend"),
        ({"faces": "numbers", "face_numbers": "1.5"}, "face number '1.5' must be a whole number"),
        ({"faces": "numbers", "face_numbers": "-1"}, "face number '-1' must be a whole number"),
        ({"faces": "numbers", "face_numbers": ""}, "no face numbers"),
        ({"faces": "reference"}, "needs a reference photo"),
        ({"output_format": "gif"}, "unknown format 'gif'"),
    ],
)
def test_out_of_range_values_are_refused_not_clamped(
    state: UIState, t1: Path, hanks: Path, params: dict, said: str
) -> None:
    res = run_swap(state, str(t1), str(hanks), **params)
    assert res.status == "BAD_INPUT" and said in res.message and res.image is None, res.line
    assert _plain(res.message) and "refined" not in res.message


def test_missing_inputs(state: UIState, astronaut_rgb: ImageRGB, hanks: Path) -> None:
    assert run_swap(state, None, str(hanks)).message.startswith("no target photo")
    assert run_swap(state, astronaut_rgb, None).message.startswith("no identity")
    res = run_swap(state, astronaut_rgb, None, "nobody here")
    assert res.status == "BAD_INPUT" and "unknown identity 'nobody here'" in res.message and _plain(res.message)
    blank = np.full((200, 200, 3), 127, np.uint8)
    res = run_swap(state, astronaut_rgb, blank)
    assert res.status == "NO_FACE" and "identity" in res.message and _plain(res.message)


def test_group_photo_numbered_faces_and_a_chosen_face(state: UIState, t1: Path, hanks: Path, tmp_path: Path) -> None:
    view = detect_faces(state, str(t1))
    assert view.status == "OK" and len(view.boxes) == 6, view.message  # the CLI default finds all six
    assert view.overlay is not None and view.image is not None
    save_image(tmp_path / "faces.png", view.overlay)
    changed = np.abs(view.overlay.astype(int) - view.image.astype(int)).sum(axis=2) > 0
    for box in view.boxes:  # every box is drawn on the preview
        assert changed[round(box[1]), round(box[0]) : round(box[2])].mean() > 0.8
    x0, y0, x1, y1 = view.boxes[2]
    assert face_at(view.boxes, (x0 + x1) / 2, (y0 + y1) / 2) == 2  # a click inside face 2 picks it
    assert face_at(view.boxes, 2.0, 2.0) is None
    assert toggle_face("", 2) == "2" and toggle_face("0, 2", 2) == "0" and toggle_face("3", 1) == "1, 3"
    res = run_swap(state, str(t1), str(hanks), faces="numbers", face_numbers="2")
    assert res.status in DONE, res.line
    assert [f["index"] for f in res.report["faces"]] == [2]
    diff = np.abs(res.image.astype(int) - load_image(t1).rgb.astype(int)).sum(axis=2)
    inside = diff[round(y0) : round(y1), round(x0) : round(x1)].mean()
    others = [b for k, b in enumerate(view.boxes) if k != 2]
    # The other faces carry only the invisible watermark (~3.5 summed over RGB, measured); the swapped one ~30.
    assert inside > 10 and all(diff[round(b[1]) : round(b[3]), round(b[0]) : round(b[2])].mean() < 6 for b in others)


def test_stored_identities_per_face_and_audited(state: UIState, t1: Path, hanks: Path) -> None:
    added = identity_ui.add_identity(state, "hanks", [str(hanks)], consent="Tom agreed on 2026-01-01 (test)")
    assert added.status == "OK", added.message
    res = run_swap(state, str(t1), None, faces="mapping", mapping="1=hanks, 3=hanks")
    assert res.status in DONE, res.line
    assert sorted(f["index"] for f in res.report["faces"]) == [1, 3]
    audit = state.store().audit_log.read()
    used = [a for a in audit if a["identity"] == "hanks" and a.get("purpose") == "ui" and not a.get("refused")]
    assert used, audit
    bad = run_swap(state, str(t1), None, faces="mapping", mapping="1=hanks, x=bob")
    assert bad.status == "BAD_INPUT" and "face index 'x'" in bad.message


def test_require_consent(home: Path, astronaut_rgb: ImageRGB, hanks: Path, state: UIState) -> None:
    strict = UIState(
        state.pipeline_factory, store_dir=home / "consent-store", output_dir=home / "out", require_consent=True
    )
    strict._bases = state._bases  # share the loaded models
    res = run_swap(strict, astronaut_rgb, str(hanks))
    assert res.status == "BAD_INPUT" and "requires consent" in res.message
    refused = identity_ui.add_identity(strict, "hanks", [str(hanks)], consent="  ")
    assert refused.status == "BAD_INPUT" and "'Consent'" in refused.message
    assert strict.store().names() == []
    added = identity_ui.add_identity(strict, "hanks", [str(hanks)], consent="agreed in writing")
    assert added.status == "OK" and "consent:** agreed in writing" in added.details
    assert run_swap(strict, astronaut_rgb, None, "hanks").status in DONE
    strict.store().set_consent("hanks", None)
    res = run_swap(strict, astronaut_rgb, None, "hanks")
    assert res.status == "BAD_INPUT" and "no consent record" in res.message and _plain(res.message)


def test_identity_library_round_trip(state: UIState, shared_faces_dir: Path, tmp_path: Path) -> None:
    photos = [str(shared_faces_dir / f"person_a_{k}.jpg") for k in (1, 2, 3)]
    photos.append(str(shared_faces_dir / "person_b_1.jpg"))  # someone else: rejected, with the reason shown
    res = identity_ui.add_identity(state, "person a", photos, consent="test consent", note="three photos")
    assert res.status == "OK", res.message
    kept = {row[0]: row[1] for row in res.photos}
    assert kept["person_b_1.jpg"] == "no" and sum(v == "yes" for v in kept.values()) == 3
    assert "rejected: person_b_1.jpg" in res.message
    assert [r for r in identity_ui.identity_rows(state) if r[0] == "person a"][0][1:3] == ["3 of 4", "yes"]
    again = identity_ui.add_identity(state, "person a", photos[:1])
    assert again.status == "BAD_INPUT" and "already exists" in again.message and _plain(again.message)
    shown = identity_ui.show_identity(state, "person a")
    assert shown.status == "OK" and len(shown.photos) == 4
    assert identity_ui.rename_identity(state, "person a", "person A2").status == "OK"
    assert "person A2" in state.identity_names() and "person a" not in state.identity_names()
    exported = identity_ui.export_identity(state, "person A2")
    assert exported.status == "OK" and exported.file is not None and exported.file.stat().st_size > 1000
    refused = identity_ui.delete_identity(state, "person A2", confirmed=False)
    assert refused.status == "BAD_INPUT" and "person A2" in state.identity_names()
    assert identity_ui.delete_identity(state, "person A2", confirmed=True).status == "OK"
    assert "person A2" not in state.identity_names()
    bad = identity_ui.add_identity(state, "../evil", photos[:1])
    assert bad.status == "BAD_INPUT" and _plain(bad.message.replace("'../evil'", ""))


def test_strength_sweep(state: UIState, astronaut_rgb: ImageRGB, hanks: Path) -> None:
    before = len(_log(state))
    results = run_sweep(state, astronaut_rgb, str(hanks))
    assert [r.report["parameters"]["strength"] for r in results] == [0.3, 0.5, 0.7, 0.9]
    assert all(r.status in DONE and r.image is not None and r.quality is not None for r in results)
    assert results[0].quality < results[-1].quality  # more strength, more of the identity
    assert len(_log(state)) == before + 4


def test_batch_plan_and_run(tmp_path: Path, hanks: Path) -> None:
    import yaml

    names = [name for name, _path in batch_ui.spec_choices()]
    assert "batch_example.yaml" in names and "default.yaml" not in names
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    save_image(drafts / "group.png", load_image(insightface_image("t1.jpg")).rgb[150:550, 0:400])
    spec = tmp_path / "spec.yaml"
    data = {
        "name": "ui-batch",
        "output": {"dir": "out"},
        "drafts": {"folder": str(drafts)},
        "identities": [{"image": str(hanks), "name": "hanks"}],
        "sweep": {"strength": [0.7, 1.0]},
    }
    spec.write_text(yaml.safe_dump(data))
    planned = batch_ui.plan(None, str(spec))
    assert planned.status == "OK" and "2 items" in planned.message, planned.message
    seen: list[tuple[int, int]] = []
    ran = batch_ui.run(None, str(spec), progress=lambda k, n: seen.append((k, n)))
    assert ran.status == "OK" and "2 done" in ran.message, ran.message
    assert seen == [(1, 2), (2, 2)]
    assert (tmp_path / "out" / "manifest.sqlite").is_file()  # the CLI's manifest: `batch status` reads it
    assert ran.index is not None and ran.index.is_file() and ran.sheets
    assert batch_ui.plan(None, None).status == "BAD_INPUT"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert batch_ui.plan(None, str(broken)).status == "BAD_INPUT"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            "/tmp/gradio/3f2a/x.jpg: 9000x9000 exceeds 40000000 (raise --max-pixels if this is intended)",
            "x.jpg: 9000x9000 exceeds 40000000 (the server's pixel limit)",
        ),
        ("--size abc: expected WxH, e.g. 512x768", "'Size' abc: expected WxH, e.g. 512x768"),
        (
            "identity 'a' has no consent record and consent is required "
            "(record one with: portraitforge identity consent a TEXT)",
            "identity 'a' has no consent record and consent is required",
        ),
        (
            "model file 'm.onnx' is not available (missing, offline); get https://x.org/m.onnx and place it at "
            "/home/u/.local/share/portraitforge/models/m.onnx (or run: portraitforge models download buffalo_l, "
            "or portraitforge models import DIR)",
            "model file 'm.onnx' is not available (missing, offline); get https://x.org/m.onnx and place it at "
            "m.onnx (whoever runs this server can fetch it with: portraitforge models download buffalo_l)",
        ),
    ],
)
def test_messages_in_ui_words(raw: str, shown: str) -> None:
    assert ui_words(raw) == shown


def test_status_html_colours_and_escapes() -> None:
    ok, bad = status_html("OK", "done"), status_html("NO_FACE", "<b>x</b>")
    assert 'data-status="OK"' in ok and "#e6f4ea" in ok
    assert 'data-status="NO_FACE"' in bad and "&lt;b&gt;" in bad and "#fde8e8" in bad


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_without_gradio_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_ui, "gradio_available", lambda: False)
    result = CliRunner().invoke(cli_app, ["ui", "--port", "7861"])
    assert result.exit_code == 5
    assert "pip install 'portraitforge[ui]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_port_taken_is_one_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = str(sock.getsockname()[1])
        result = CliRunner().invoke(cli_app, ["ui", "--port", port, "--no-share", "--require-consent"])
    assert result.exit_code == 3, result.output
    assert port in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_generate_errors_are_one_line_and_logged(state: UIState, tmp_path: Path) -> None:
    from portraitforge.ui import run_generate

    image, draft, report, line = run_generate(state, "", "a portrait")
    assert image is None and draft is None and report["status"] == "BAD_INPUT" and "model" in line
    before = len(_log(state))
    _, _, report, line = run_generate(state, str(tmp_path), "a portrait", size="12x")
    assert report["status"] == "BAD_INPUT" and "'Size' 12x" in line and "--" not in line
    _, _, report, line = run_generate(state, str(tmp_path / "missing-model"), "a portrait")
    assert report["status"] != "OK" and "\n" not in line and str(tmp_path) not in line
    assert len(_log(state)) == before + 2 and _log(state)[-1]["operation"] == "generate"


def test_generate_loads_once_on_demand(state: UIState, tmp_path_factory: pytest.TempPathFactory) -> None:
    torch = pytest.importorskip("torch")
    diffusion_fixtures = pytest.importorskip("diffusion_fixtures")
    from portraitforge.ui import run_generate

    folder = diffusion_fixtures.save_tiny(tmp_path_factory.mktemp("tiny-sd"), "sd")
    loads: list[str] = []

    def portrait_factory(source: str, refiner):  # type: ignore[no-untyped-def]
        from portraitforge.pipelines.portrait import PortraitPipeline

        loads.append(source)
        return PortraitPipeline.from_pretrained(source, refiner=refiner, device="cpu")

    ui_state = UIState(state.pipeline_factory, store_dir=state.store_dir, portrait_factory=portrait_factory)
    ui_state._bases = state._bases  # share the loaded face models
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        events: list[int] = []
        image, draft, report, message = run_generate(
            ui_state, str(folder), "a portrait", seed=5, steps=2, callback=lambda e: events.append(e.step)
        )
        again, _, _, _ = run_generate(ui_state, str(folder), "a portrait", seed=5, steps=2)
    finally:
        torch.set_num_threads(saved)
    assert report["status"] == "OK", message  # no identity: the draft is the result
    assert image is not None and draft is not None and image.shape[2] == 3
    assert report["seed"] == 5 and events == [1, 2] and message.startswith("OK: seed 5")
    assert loads == [str(folder)]  # loaded on the first press, kept for the next
    np.testing.assert_array_equal(image, again)


def test_server_wide_nsfw_policy_gates_every_run(home: Path, astronaut_rgb: ImageRGB, hanks: Path) -> None:
    """`portraitforge ui --nsfw-policy flag`: the page cannot turn the gate off; a normal portrait is not flagged."""
    pytest.importorskip("nudenet")
    gated = UIState(
        store_dir=home / "store", output_dir=home / "gated", log_path=home / "gated.jsonl", nsfw_policy="flag"
    )
    res = run_swap(gated, astronaut_rgb, str(hanks), nsfw_check=False)
    assert res.status in DONE, res.line
    assert res.report["provenance"]["nsfw"] == {"policy": "flag", "threshold": 0.5, "flags": []}
    with pytest.raises(BadInputError, match="NSFW policy"):
        UIState(store_dir=home / "store", nsfw_policy="sometimes")
