"""The web UI: `run_swap`/`run_generate` handlers on real photos (no browser), the gradio app over HTTP, the CLI."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from typer.testing import CliRunner  # noqa: E402

from portraitforge.cli import app as cli_app  # noqa: E402
from portraitforge.cli import ui as cli_ui  # noqa: E402
from portraitforge.config import RefineConfig  # noqa: E402
from portraitforge.demo import identity_photo  # noqa: E402
from portraitforge.imageio import save_image  # noqa: E402
from portraitforge.pipelines.refine import RefinePipeline  # noqa: E402
from portraitforge.refiners.detect import DlibFaceAnalyzer  # noqa: E402
from portraitforge.types import ImageRGB  # noqa: E402
from portraitforge.ui import SWAP_CONTROLS, UIState, build_app, run_generate, run_swap  # noqa: E402

DONE = ("OK", "LOW_QUALITY")


class CountingFactory:
    """Builds pipelines on the session's analyzer (loading dlib costs seconds) and counts the builds."""

    def __init__(self, analyzer: DlibFaceAnalyzer) -> None:
        self.analyzer = analyzer
        self.calls = 0

    def __call__(self, config: RefineConfig) -> RefinePipeline:
        self.calls += 1
        # The session's dlib analyzer serves the landmark engine; the mesh engine loads its own analyzer.
        shared = self.analyzer if config.resolved_analyzer == "dlib" else None
        return RefinePipeline.from_config(config, analyzer=shared)


@pytest.fixture(scope="module")
def factory(analyzer: DlibFaceAnalyzer) -> CountingFactory:
    return CountingFactory(analyzer)


@pytest.fixture(scope="module")
def state(factory: CountingFactory, tmp_path_factory: pytest.TempPathFactory) -> UIState:
    return UIState(factory, store_dir=tmp_path_factory.mktemp("ui-store"))


@pytest.fixture(scope="module")
def id_photo(analyzer: DlibFaceAnalyzer) -> ImageRGB:
    return identity_photo(analyzer)


@pytest.fixture(scope="module")
def swapped(state: UIState, astronaut_rgb: ImageRGB, id_photo: ImageRGB):
    return run_swap(state, astronaut_rgb, id_photo, None)


def _one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


def _face_box(report: dict, index: int = 0) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(v)) for v in report["faces"][index]["box"])
    return x0, y0, x1, y1


def test_build_app_is_blocks_and_loads_nothing(factory: CountingFactory, tmp_path: Path) -> None:
    fresh = UIState(factory, store_dir=tmp_path)
    before = factory.calls
    app = build_app(state=fresh)
    assert isinstance(app, gr.Blocks)
    assert app.portraitforge_state is fresh  # type: ignore[attr-defined]
    assert factory.calls == before  # models load on the first request, not when the app is built
    assert isinstance(build_app(store_dir=tmp_path), gr.Blocks)  # default factory, still nothing loaded


def test_swap_from_uploaded_photo_changes_the_face(swapped, astronaut_rgb: ImageRGB) -> None:
    image, sheet, report, message = swapped
    assert report["status"] == "OK", message
    assert image is not None and image.shape == astronaut_rgb.shape and image.dtype == np.uint8
    x0, y0, x1, y1 = _face_box(report)
    diff = np.abs(image.astype(int) - astronaut_rgb.astype(int))
    assert diff[y0:y1, x0:x1].mean() > 5.0  # the face changed...
    assert diff[400:, :].mean() < 1.0  # ...the rest of the photo did not
    quality = report["faces"][0]["quality"]
    assert quality["identity_distance"] < 0.6
    assert report["identity"] == "uploaded" and report["identity_cache_hit"] is False
    # target | identity | result, each 384 px high under a 36 px label bar
    assert sheet is not None and sheet.shape[0] == 420 and sheet.shape[1] > 2 * 384
    assert _one_line(message) and message.startswith(f"{report['status']}: ")


def test_new_parameters_reuse_models_and_identity(
    state: UIState, factory: CountingFactory, swapped, astronaut_rgb: ImageRGB, id_photo: ImageRGB
) -> None:
    calls = factory.calls
    image, _, report, message = run_swap(
        state, astronaut_rgb, id_photo.copy(), "", strength=0.5, blend="feather", mask="features", contrast=0.2
    )
    assert report["status"] in DONE, message
    assert factory.calls == calls  # with_config: no model was loaded again
    base = state.pipeline(RefineConfig())
    assert state.pipeline(RefineConfig(analyzer="auto", strength=0.5)).analyzer is base.analyzer
    assert len(state._identities) == 1  # the same photo was not embedded again
    assert report["parameters"]["strength"] == 0.5 and report["parameters"]["blend"] == "feather"
    assert image is not None and not np.array_equal(image, swapped[0])


@pytest.mark.parametrize(
    ("params", "field"),
    [({"strength": 2}, "strength"), ({"resolution": "huge"}, "resolution"), ({"blend": "melt"}, "blend")],
)
def test_bad_parameters_give_one_line_and_no_image(
    state: UIState, astronaut_rgb: ImageRGB, id_photo: ImageRGB, params: dict, field: str
) -> None:
    image, sheet, report, message = run_swap(state, astronaut_rgb, id_photo, None, **params)
    assert image is None and sheet is None
    assert report["status"] == "BAD_INPUT" and field in report["message"]
    assert _one_line(message) and message.startswith("BAD_INPUT: ") and field in message


def test_target_without_face_says_so(state: UIState, id_photo: ImageRGB) -> None:
    ramp = np.linspace(0, 255, 320 * 240, dtype=np.float32).reshape(240, 320)
    landscape = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=2).astype(np.uint8)
    image, sheet, report, message = run_swap(state, landscape, id_photo, None)
    assert image is None and sheet is None
    assert report["status"] == "NO_FACE"
    assert _one_line(message) and "no face" in message.lower()


def test_missing_or_unusable_inputs(state: UIState, astronaut_rgb: ImageRGB, id_photo: ImageRGB) -> None:
    _, _, report, message = run_swap(state, None, id_photo, None)
    assert report["status"] == "BAD_INPUT" and "target" in message
    _, _, report, message = run_swap(state, astronaut_rgb, None, None)
    assert report["status"] == "BAD_INPUT" and "identity" in message
    _, _, report, message = run_swap(state, astronaut_rgb, None, "nobody here")
    assert report["status"] == "BAD_INPUT" and "unknown identity 'nobody here'" in message
    blank = np.full((200, 200, 3), 127, np.uint8)
    _, _, report, message = run_swap(state, astronaut_rgb, blank, None)
    assert report["status"] == "NO_FACE" and "identity" in message and _one_line(message)
    _, _, report, message = run_swap(state, astronaut_rgb.astype(np.float32), id_photo, None)
    assert report["status"] == "BAD_INPUT" and "8-bit" in message


def test_files_and_rgba_uploads(
    state: UIState, tmp_path: Path, astronaut_rgb: ImageRGB, id_photo: ImageRGB, swapped
) -> None:
    target_file = save_image(tmp_path / "astronaut.png", astronaut_rgb)
    identity_file = save_image(tmp_path / "t1 face.png", id_photo)
    image, _, report, message = run_swap(state, str(target_file), identity_file, None)
    assert report["status"] in DONE, message
    assert report["identity"] == "t1 face"  # an uploaded file's name becomes the identity's name
    np.testing.assert_array_equal(image, swapped[0])  # same pixels as the array upload
    rgba = np.concatenate([astronaut_rgb, np.full(astronaut_rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    image, _, report, message = run_swap(state, rgba, id_photo, None)
    assert report["status"] in DONE and image is not None and image.shape == astronaut_rgb.shape


def test_stored_identity_wins_over_photo(
    state: UIState, analyzer: DlibFaceAnalyzer, astronaut_rgb: ImageRGB, id_photo: ImageRGB
) -> None:
    state.store().add("t1 face", [id_photo], analyzers=[analyzer])
    assert "t1 face" in state.identity_names()
    blank = np.full((200, 200, 3), 127, np.uint8)  # would fail as an identity photo: the stored name wins
    image, _, report, message = run_swap(state, astronaut_rgb, blank, "t1 face")
    assert report["status"] in DONE, message
    assert image is not None and report["identity"] == "t1 face" and report["identity_cache_hit"] is True
    assert report["faces"][0]["quality"]["identity_distance"] < 0.6


def test_generate_errors_are_one_line(state: UIState, tmp_path: Path) -> None:
    image, draft, report, message = run_generate(state, "", "a portrait")
    assert image is None and draft is None and report["status"] == "BAD_INPUT" and "model" in message
    _, _, report, message = run_generate(state, str(tmp_path / "missing-model"), "a portrait")
    assert report["status"] != "OK" and _one_line(message)
    _, _, report, message = run_generate(state, str(tmp_path), "a portrait", size="12x")
    assert report["status"] == "BAD_INPUT" and "size" in message


def test_generate_loads_once_on_demand(state: UIState, tmp_path_factory: pytest.TempPathFactory) -> None:
    torch = pytest.importorskip("torch")
    diffusion_fixtures = pytest.importorskip("diffusion_fixtures")
    folder = diffusion_fixtures.save_tiny(tmp_path_factory.mktemp("tiny-sd"), "sd")
    loads: list[str] = []

    def portrait_factory(source: str, refiner: RefinePipeline):
        from portraitforge.pipelines.portrait import PortraitPipeline

        loads.append(source)
        return PortraitPipeline.from_pretrained(source, refiner=refiner, device="cpu")

    ui_state = UIState(state.pipeline_factory, store_dir=state.store_dir, portrait_factory=portrait_factory)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        events: list[int] = []
        image, draft, report, message = run_generate(
            ui_state, str(folder), "a portrait", seed=5, steps=2, callback=lambda e: events.append(e.step)
        )
        again, _, report2, _ = run_generate(ui_state, str(folder), "a portrait", seed=5, steps=2)
    finally:
        torch.set_num_threads(saved)
    assert report["status"] == "OK", message  # no identity: the draft is the result
    assert image is not None and draft is not None and image.shape[2] == 3
    assert report["seed"] == 5 and events == [1, 2] and message.startswith("OK: seed 5")
    assert loads == [str(folder)]  # loaded on the first press, kept for the next
    np.testing.assert_array_equal(image, again)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def served(state: UIState):
    app = build_app(state=state)
    try:
        port = _free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    except OSError as exc:
        pytest.skip(f"cannot bind a local port: {exc}")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_served_over_http_and_swap_wired(served: str, tmp_path: Path, astronaut_rgb: ImageRGB, id_photo) -> None:
    with urllib.request.urlopen(served, timeout=30) as response:  # noqa: S310 - local server
        assert response.status == 200
        assert b"portraitforge" in response.read()
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False)
    defaults = RefineConfig()
    controls = [getattr(defaults, name) for name in SWAP_CONTROLS]
    target = handle_file(str(save_image(tmp_path / "target.png", astronaut_rgb)))
    identity = handle_file(str(save_image(tmp_path / "me.png", id_photo)))
    result, sheet, report, message = client.predict(target, identity, "", *controls, api_name="/on_swap")
    assert report["status"] in DONE, message
    assert Path(result).is_file() and Path(sheet).is_file() and report["identity"] == "me"


def test_cli_without_gradio_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_ui, "gradio_available", lambda: False)
    result = CliRunner().invoke(cli_app, ["ui", "--port", "7861"])
    assert result.exit_code == 5
    assert "pip install 'portraitforge[ui]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_port_taken_is_one_line(served: str) -> None:
    port = served.rstrip("/").rsplit(":", 1)[1]
    result = CliRunner().invoke(cli_app, ["ui", "--port", port, "--no-share"])
    assert result.exit_code == 3, result.output
    assert port in result.stderr and len(result.stderr.strip().splitlines()) == 1
