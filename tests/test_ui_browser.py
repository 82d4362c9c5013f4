"""The web UI in a real browser (headless Chromium via Playwright) against `portraitforge ui` in a subprocess.

Each test saves a screenshot to outputs/test-artefacts/ui/ to look at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ui_fixtures import browser, error_badges, page, screenshot, status_of, ui_server, upload, wait_for_status

from portraitforge.imageio import load_image, save_image
from portraitforge.samples import astronaut, insightface_image

__all__ = ["browser", "page", "ui_server"]  # fixtures used by name

DONE = ("OK", "LOW_QUALITY")


def _finished(code: str, text: str) -> bool:
    return code in DONE and "saved as" in text or code not in ("", *DONE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser-photos")
    ramp = np.linspace(0, 255, 320 * 240, dtype=np.float32).reshape(240, 320)
    landscape = np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=2).astype(np.uint8)
    fake = folder / "holiday.jpg"
    fake.write_bytes(b"not a picture at all\n" * 20)
    return {
        "target": save_image(folder / "astronaut.png", astronaut()),
        "identity": insightface_image("Tom_Hanks_54745.png"),
        "group": insightface_image("t1.jpg"),
        "landscape": save_image(folder / "landscape.png", landscape),
        "fake": fake,
    }


def _on_screen(page: Any, selector: str) -> bool:
    box, viewport = page.locator(selector).bounding_box(), page.viewport_size
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


def _swap(page: Any) -> tuple[str, str]:
    page.click("#pf-swap")
    page.wait_for_timeout(300)
    outcome = wait_for_status(page, "#pf-status", _finished)
    page.wait_for_timeout(500)  # the scroll to the outputs
    assert _on_screen(page, "#pf-status .pf-status"), "the status line is out of view after pressing Swap"
    return outcome


def test_happy_path_result_in_view_and_logged(page: Any, ui_server: Any, photos: dict[str, Path]) -> None:
    upload(page, "#pf-target", photos["target"])
    wait_for_status(page, "#pf-status", lambda c, t: "face(s) found" in t)
    upload(page, "#pf-identity-photo", photos["identity"])
    page.get_by_text("Mask and blend").click()  # settings open: the result must still be where the user looks
    page.get_by_text("Look", exact=True).click()
    code, text = _swap(page)
    assert code in DONE, text
    assert "quality" in text and "/100" in text
    result = page.locator("#pf-result img")
    result.wait_for(state="visible")
    assert page.locator("#pf-status").is_visible()
    box, viewport = result.bounding_box(), page.viewport_size
    assert box is not None and box["y"] < viewport["height"] and box["y"] + box["height"] > 0  # on screen
    assert page.locator("#pf-download a").count() >= 1  # the image download
    assert error_badges(page) == 0
    screenshot(page, "happy_path", full_page=False)
    screenshot(page, "happy_path_full")
    logged = [json.loads(line) for line in ui_server.runs_log.read_text().splitlines()]
    mine = [r for r in logged if r.get("interface") == "ui" and r["status"] == code]
    assert mine, logged
    assert Path(mine[-1]["output"]).is_file() and Path(mine[-1]["input"]).name == "astronaut.png"


def test_fake_jpg_explained(page: Any, photos: dict[str, Path]) -> None:
    upload(page, "#pf-target", photos["fake"])
    code, text = wait_for_status(page, "#pf-status", lambda c, t: c == "BAD_INPUT")
    assert text == "BAD_INPUT: holiday.jpg: not a recognised image file"
    upload(page, "#pf-identity-photo", photos["identity"])
    code, text = _swap(page)
    assert code == "BAD_INPUT" and "holiday.jpg: not a recognised image file" in text
    assert error_badges(page) == 0
    screenshot(page, "fake_jpg", full_page=False)
    notes = photos["fake"].with_name("notes.txt")  # another extension: still our message, not gradio's refusal
    notes.write_text("shopping list\n")
    page.reload()
    page.wait_for_selector("#pf-swap")
    upload(page, "#pf-target", notes)
    code, text = wait_for_status(page, "#pf-status", lambda c, t: "notes.txt" in t)
    assert text == "BAD_INPUT: notes.txt: not a recognised image file"
    assert error_badges(page) == 0


def test_no_face_photo(page: Any, photos: dict[str, Path]) -> None:
    upload(page, "#pf-target", photos["landscape"])
    code, text = wait_for_status(page, "#pf-status", lambda c, t: c != "" and "landscape" in t)
    assert code == "NO_FACE", text
    upload(page, "#pf-identity-photo", photos["identity"])
    code, text = _swap(page)
    assert code == "NO_FACE" and "no face" in text.lower()
    assert error_badges(page) == 0
    screenshot(page, "no_face", full_page=False)


def test_out_of_range_strength_refused(page: Any, photos: dict[str, Path]) -> None:
    upload(page, "#pf-target", photos["target"])
    wait_for_status(page, "#pf-status", lambda c, t: "face(s) found" in t)
    upload(page, "#pf-identity-photo", photos["identity"])
    page.locator("#pf-strength input").fill("5")
    code, text = _swap(page)
    assert code == "BAD_INPUT" and "strength 5 is out of range" in text
    assert error_badges(page) == 0


def test_group_photo_click_a_face(page: Any, photos: dict[str, Path], tmp_path: Path) -> None:
    upload(page, "#pf-target", photos["group"])
    code, text = wait_for_status(page, "#pf-status", lambda c, t: "face(s) found" in t)
    assert text.startswith("OK: 6 face(s) found"), text
    # Where face 2 is, from the same analyzer the server uses (the overlay numbers follow the report's).
    from portraitforge.config import RefineConfig
    from portraitforge.pipelines.refine import RefinePipeline

    rgb = load_image(photos["group"]).rgb
    faces = RefinePipeline.from_config(RefineConfig()).analyzer.detect(rgb)
    x0, y0, x1, y1 = (float(v) for v in faces[2].box)
    image = page.locator("#pf-faces img")
    image.wait_for(state="visible")
    box = image.bounding_box()
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    # The image is letterboxed inside its element (object-fit: contain): map pixels to the shown picture.
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    left = box["x"] + (box["width"] - natural[0] * scale) / 2
    top = box["y"] + (box["height"] - natural[1] * scale) / 2
    page.mouse.click(left + (x0 + x1) / 2 * scale, top + (y0 + y1) / 2 * scale)
    wait_for_status(page, "#pf-status", lambda c, t: "faces chosen: 2" in t)
    assert page.locator("#pf-face-numbers textarea, #pf-face-numbers input").first.input_value() == "2"
    upload(page, "#pf-identity-photo", photos["identity"])
    code, text = _swap(page)
    assert code in DONE and "refined 1 of 6 face(s)" in text, text
    screenshot(page, "group_face_2", full_page=False)
    with page.expect_download() as download_info:
        page.locator("#pf-report-file a").first.click()
    report_path = tmp_path / "report.json"
    download_info.value.save_as(report_path)
    report = json.loads(report_path.read_text())
    assert [f["index"] for f in report["faces"]] == [2]


def test_identity_tab_round_trip(page: Any, ui_server: Any) -> None:
    page.get_by_role("tab", name="Identities").click()
    hanks = insightface_image("Tom_Hanks_54745.png")
    upload(page, "#pf-id-photos", hanks)
    page.locator("#pf-id-name input, #pf-id-name textarea").first.fill("tom")
    page.locator("#pf-id-consent input, #pf-id-consent textarea").first.fill("Tom agreed, test only, 2026")
    page.click("#pf-id-add")
    code, text = wait_for_status(page, "#pf-id-status", lambda c, t: c != "" and "tom" in t)
    assert code == "OK" and "added 'tom': 1 of 1 photo(s) kept" in text, text
    table = page.locator("#pf-id-table").inner_text()
    assert "tom" in table and "1 of 1" in table, table
    screenshot(page, "identity_added", full_page=False)
    page.locator("#pf-id-rename-to input, #pf-id-rename-to textarea").first.fill("tom h")
    page.click("#pf-id-rename")
    code, text = wait_for_status(page, "#pf-id-status", lambda c, t: "renamed" in t or c not in ("", "OK"))
    assert code == "OK" and text == "OK: renamed 'tom' to 'tom h'", text
    assert (ui_server.home / "embeddings_cache" / "identities" / "tom h").is_dir()
    page.click("#pf-id-delete")  # not confirmed: refused
    code, text = wait_for_status(page, "#pf-id-status", lambda c, t: c == "BAD_INPUT")
    assert "tick 'Yes, delete'" in text
    page.locator("#pf-id-confirm input").check()
    # The tick reaches gradio's page state through its own change event: under load (the full suite) a click
    # right after it could still send the unticked value.
    page.wait_for_timeout(500)
    page.click("#pf-id-delete")
    code, text = wait_for_status(page, "#pf-id-status", lambda c, t: "deleted" in t)
    assert code == "OK" and not (ui_server.home / "embeddings_cache" / "identities" / "tom h").exists()
    assert error_badges(page) == 0
    screenshot(page, "identity_deleted", full_page=False)
    status_of(page, "#pf-id-status")


def test_strength_sweep(page: Any, photos: dict[str, Path]) -> None:
    upload(page, "#pf-target", photos["target"])
    wait_for_status(page, "#pf-status", lambda c, t: "face(s) found" in t)
    upload(page, "#pf-identity-photo", photos["identity"])
    page.click("#pf-sweep")
    code, text = wait_for_status(page, "#pf-status", lambda c, t: "sweep done" in t or c not in ("", *DONE))
    assert code in DONE and "0.3: " in text and "0.9: " in text, text
    gallery = page.locator("#pf-sweep-gallery")
    gallery.wait_for(state="visible")
    assert gallery.locator("img").count() == 4
    assert error_badges(page) == 0
    gallery.scroll_into_view_if_needed()
    screenshot(page, "strength_sweep", full_page=False)


def test_batch_tab_plan_and_run(page: Any, photos: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    drafts = tmp_path / "drafts"
    drafts.mkdir()
    save_image(drafts / "group_left.png", load_image(photos["group"]).rgb[150:550, 0:400])
    spec = tmp_path / "ui-batch.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ui-batch",
                "output": {"dir": str(tmp_path / "out")},
                "drafts": {"folder": str(drafts)},
                "identities": [{"image": str(photos["identity"]), "name": "hanks"}],
                "sweep": {"strength": [0.7, 1.0]},
            }
        )
    )
    page.get_by_role("tab", name="Batch").click()
    upload(page, "#pf-batch-spec", spec)
    page.click("#pf-batch-plan")
    code, text = wait_for_status(page, "#pf-batch-status", lambda c, t: c != "")
    assert code == "OK" and text == "OK: ui-batch: 2 items", text
    page.click("#pf-batch-run")
    code, text = wait_for_status(page, "#pf-batch-status", lambda c, t: "done" in t or c not in ("", "OK"))
    assert code == "OK" and "2 items: 2 done, 0 failed" in text, text
    assert (tmp_path / "out" / "manifest.sqlite").is_file()
    page.locator("#pf-batch-sheets img").first.wait_for(state="visible")
    assert error_badges(page) == 0
    screenshot(page, "batch_run", full_page=False)
