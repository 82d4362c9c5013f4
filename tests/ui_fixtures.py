"""Real-browser fixtures: the `portraitforge ui` server in a subprocess, headless Chromium driven by Playwright.

Playwright cannot download its own browser here, so the tests drive Debian's Chromium (`apt-get install chromium`);
they skip, saying why, only when that browser or Playwright is genuinely absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = REPO / "outputs" / "test-artefacts" / "ui"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
START_TIMEOUT_S = 120.0


def chromium_path() -> str | None:
    found = os.environ.get("PORTRAITFORGE_CHROMIUM") or next(
        (p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None
    )
    return found or shutil.which("chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UIServer:
    """`portraitforge ui` on a free port with its own PORTRAITFORGE_HOME (models linked from the test home)."""

    def __init__(self, home: Path, models_from: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        home.mkdir(parents=True, exist_ok=True)
        if (models_from / "models").is_dir() and not (home / "models").exists():
            (home / "models").symlink_to(models_from / "models")
        env = {**os.environ, "PORTRAITFORGE_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        self.log = open(home / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portraitforge.cli", "ui", "--port", str(self.port), "--no-share", *extra_args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
        )

    @property
    def runs_log(self) -> Path:
        return self.home / "logs" / "runs.jsonl"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the UI server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:  # noqa: S310 - local server
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"the UI server did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium at /usr/bin/chromium: install it with `apt-get install chromium`")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory, isolated_home: Path) -> Iterator[UIServer]:
    server = UIServer(tmp_path_factory.mktemp("ui-server-home"), isolated_home)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def page(browser: Any, ui_server: UIServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(ui_server.url)
    page.wait_for_selector("#pf-swap")
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def status_of(page: Any, element: str) -> tuple[str, str]:
    """(status code, text) of a status line (`#pf-status`, `#pf-id-status`)."""
    # One read of the DOM: two separate reads could pair the old line's code with the new line's text.
    code, text = page.locator(f"{element} .pf-status").evaluate(
        "node => [node.getAttribute('data-status') || '', node.innerText]"
    )
    return str(code), str(text)


def wait_for_status(
    page: Any, element: str, accept: Callable[[str, str], bool], timeout_s: float = 180.0
) -> tuple[str, str]:
    """Poll a status line until `accept(code, text)`; on timeout, fail with what it last said."""
    deadline = time.monotonic() + timeout_s
    code, text = "", ""
    while time.monotonic() < deadline:
        code, text = status_of(page, element)
        if accept(code, text):
            return code, text
        page.wait_for_timeout(250)
    raise AssertionError(f"status {element} never became what was expected; last: {code}: {text}")


def upload(page: Any, element: str, *files: Path) -> None:
    page.locator(f"{element} input[type=file]").set_input_files([str(f) for f in files])


def error_badges(page: Any) -> int:
    """Gradio's own error toasts/badges: shown when a failure escapes our handlers (must stay 0)."""
    return int(page.locator(".toast-body.error, .error-message, span.error").count())
