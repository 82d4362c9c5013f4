"""Consent and audit hold on every path that uses a stored identity: CLI swap, CLI generate, batch, the UI's swap
handler and the Python API. Each use writes exactly one audit line with its purpose; with consent required, a
missing, expired or out-of-scope consent is refused on every path (one line, exit 3 for the CLI, nothing written).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from batch_fixtures import write_spec
from typer.testing import CliRunner

from portraitforge.cli import app
from portraitforge.config import RefineConfig
from portraitforge.embeddings_cache.records import METADATA_FILE, ConsentRecord
from portraitforge.embeddings_cache.resolve import resolve_identity
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.errors import BadInputError
from portraitforge.imageio import save_image
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import ImageRGB

EXPIRED = "2020-01-01"
# name -> consent given to `IdentityStore.set_consent` (None: no consent record)
CONSENTS: dict[str, dict[str, Any] | None] = {
    "granted": {"text": "signed release #1", "by": "T. Hanks"},
    "none": None,
    "expired": {"text": "signed release #2", "until": EXPIRED},
    "api only": {"text": "signed release #3", "scope": "api"},  # out of scope for swap/generate/batch/ui
    "swap only": {"text": "signed release #4", "scope": ["swap"]},  # out of scope for the API
}
REFUSED = {"none": "no consent record", "expired": f"consent expired on {EXPIRED}", "api only": "does not cover"}


@pytest.fixture(scope="module")
def template_store(tmp_path_factory: pytest.TempPathFactory, analyzer: DlibFaceAnalyzer, hanks_path: Path) -> Path:
    """One embedding, five identities differing only in their consent (export/import: embedded once)."""
    root = tmp_path_factory.mktemp("consent") / "store"
    store = IdentityStore(root)
    store.add("granted", [hanks_path], analyzers=[analyzer])
    exported = store.export("granted", root.parent / "granted.safetensors")
    for name, consent in CONSENTS.items():
        if name != "granted":
            store.import_(exported, name=name)
        if consent is not None:
            text = consent.pop("text")
            store.set_consent(name, text, **consent)
            consent["text"] = text
    return root


@pytest.fixture()
def store_dir(template_store: Path, tmp_path: Path) -> Path:
    """A fresh copy per test, so its audit log holds this test's lines only."""
    return Path(shutil.copytree(template_store, tmp_path / "store"))


def uses(store_dir: Path) -> list[dict[str, Any]]:
    """Audit lines of uses (they carry a purpose; store changes such as import/consent do not)."""
    lines = (store_dir / "audit.jsonl").read_text("utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("purpose")]


def assert_one_use(store_dir: Path, name: str, purpose: str, refused: str | None = None) -> dict[str, Any]:
    [entry] = uses(store_dir)
    assert entry["identity"] == name and entry["purpose"] == purpose and entry["operation"] == purpose
    digest = json.loads((store_dir / "identities" / name / METADATA_FILE).read_text())["tensors_digest"]
    assert entry["identity_digest"] == digest
    if refused is None:
        assert entry["refused"] is None
    else:
        assert refused in entry["refused"] and "consent is required" in entry["refused"]
    return entry


def _target(tmp_path: Path, rgb: ImageRGB) -> Path:
    return save_image(tmp_path / "target.png", rgb)


# ------------------------------------------------------------------------------------------------------ CLI swap


def test_cli_swap_audits_each_use_once_and_refuses_without_consent(
    store_dir: Path, tmp_path: Path, astronaut_rgb: ImageRGB
) -> None:
    target = _target(tmp_path, astronaut_rgb)
    common = ["swap", str(target), "--store", str(store_dir), "--log", str(tmp_path / "runs.jsonl")]
    ok = CliRunner().invoke(app, [*common, "-i", "granted", "-o", str(tmp_path / "ok.png"), "--require-consent"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "ok.png").is_file()
    assert assert_one_use(store_dir, "granted", "swap")["consent"] == "ok"
    for name, why in REFUSED.items():
        (store_dir / "audit.jsonl").unlink()
        out = tmp_path / f"{name}.png"
        refused = CliRunner().invoke(app, [*common, "-i", name, "-o", str(out), "--require-consent"])
        assert refused.exit_code == 3, refused.output
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: ") and why in line
        assert not out.exists()
        assert_one_use(store_dir, name, "swap", refused=why)
    # Without --require-consent an expired consent is used, and the audit line says so.
    (store_dir / "audit.jsonl").unlink()
    noted = CliRunner().invoke(app, [*common, "-i", "expired", "-o", str(tmp_path / "noted.png")])
    assert noted.exit_code == 0, noted.output
    assert assert_one_use(store_dir, "expired", "swap")["consent"] == f"consent expired on {EXPIRED}"
    # An identity photo (not stored) has no consent record: refused too, before anything is written.
    photo = CliRunner().invoke(app, [*common, "-i", str(target), "-o", str(tmp_path / "p.png"), "--require-consent"])
    assert photo.exit_code == 3 and "no consent record" in photo.stderr and not (tmp_path / "p.png").exists()


def test_cli_swap_several_identities_audit_each_once(store_dir: Path, tmp_path: Path, astronaut_rgb: ImageRGB) -> None:
    target = _target(tmp_path, astronaut_rgb)
    args = ["swap", str(target), "-i", "nearest:granted,expired,granted", "-o", str(tmp_path / "o.png")]
    result = CliRunner().invoke(app, [*args, "--store", str(store_dir), "--log", str(tmp_path / "r.jsonl")])
    assert result.exit_code == 0, result.output
    assert sorted((e["identity"], e["purpose"]) for e in uses(store_dir)) == [
        ("expired", "swap"),
        ("granted", "swap"),
    ]


# -------------------------------------------------------------------------------------------------- CLI generate


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    diffusion_fixtures = pytest.importorskip("diffusion_fixtures")
    return Path(diffusion_fixtures.save_tiny(tmp_path_factory.mktemp("tiny"), "sd"))


def test_cli_generate_audits_each_use_once_and_refuses_without_consent(
    store_dir: Path, tmp_path: Path, tiny_model: Path
) -> None:
    common = ["generate", "portrait", "-m", str(tiny_model), "--store", str(store_dir), "--steps", "1"]
    common += ["--retries", "0", "--log", str(tmp_path / "runs.jsonl"), "--require-consent"]
    used = CliRunner().invoke(app, [*common, "-i", "granted", "-o", str(tmp_path / "ok")])
    # The tiny random model draws noise (no face: exit 4), but the identity was loaded for it: one use.
    assert used.exit_code == 4, used.output
    assert_one_use(store_dir, "granted", "generate")
    for name, why in REFUSED.items():
        (store_dir / "audit.jsonl").unlink()
        out = tmp_path / name
        refused = CliRunner().invoke(app, [*common, "-i", name, "-o", str(out)])
        assert refused.exit_code == 3, refused.output
        assert why in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert not out.exists() or not any(out.rglob("*.png"))
        assert_one_use(store_dir, name, "generate", refused=why)


# ---------------------------------------------------------------------------------------------------------- batch


def _batch(tmp_path: Path, store_dir: Path, target: Path, identities: list[dict[str, str]], **extra: Any):
    drafts = target.parent / "drafts"
    drafts.mkdir(exist_ok=True)
    shutil.copy(target, drafts / "draft.png")
    data = {
        "name": "consent",
        "output": {"dir": str(tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}")},
        "drafts": {"folder": str(drafts)},
        "identities": identities,
        "identity_store": str(store_dir),
        "refine": {"detect_max_side": 400},
        **extra,
    }
    spec = write_spec(tmp_path / "spec.yaml", data)
    result = CliRunner().invoke(app, ["batch", "run", str(spec), "--no-progress", "--no-review", "--json"])
    assert result.exit_code == 0, result.output
    rows = CliRunner().invoke(app, ["batch", "export", str(spec), "-f", "jsonl"])
    assert rows.exit_code == 0, rows.output
    by_identity = {}
    for line in rows.stdout.splitlines():
        row = json.loads(line)
        by_identity[row["identity"]] = row
    return by_identity, Path(data["output"]["dir"])


def test_batch_audits_each_use_once_and_refuses_without_consent(
    store_dir: Path, tmp_path: Path, astronaut_rgb: ImageRGB
) -> None:
    target = _target(tmp_path, astronaut_rgb)
    names = ["granted", *REFUSED]
    identities = [{"name": n} for n in names] + [{"image": str(target), "name": "photo"}]
    rows, out = _batch(tmp_path, store_dir, target, identities, require_consent=True)
    assert rows["granted"]["status"] == "done" and (out / rows["granted"]["output_path"]).is_file()
    for name, why in {**REFUSED, "photo": "has no consent record"}.items():
        assert rows[name]["status"] == "failed" and why in rows[name]["reason"], rows[name]
        assert rows[name]["reason"].startswith("BAD_INPUT: ")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [rows["granted"]["output_path"]]  # nothing written for a refused identity
    entries = uses(store_dir)
    assert sorted(e["identity"] for e in entries) == sorted(names)  # one line per stored identity used
    assert {e["purpose"] for e in entries} == {"batch"}
    assert {e["identity"] for e in entries if e["refused"] is None} == {"granted"}
    # Without require_consent the expired identity is used and its audit line notes the lapse.
    (store_dir / "audit.jsonl").unlink()
    rows, _ = _batch(tmp_path, store_dir, target, [{"name": "expired"}])
    assert rows["expired"]["status"] == "done"
    assert assert_one_use(store_dir, "expired", "batch")["consent"] == f"consent expired on {EXPIRED}"


# ------------------------------------------------------------------------------------------------------------- UI


def test_ui_swap_handler_audits_each_use_once_and_refuses_without_consent(
    store_dir: Path, analyzer: DlibFaceAnalyzer, astronaut_rgb: ImageRGB, hanks_path: Path
) -> None:
    from portraitforge.ui import UIState, run_swap

    def factory(config: RefineConfig) -> RefinePipeline:
        shared = analyzer if config.resolved_analyzer == "dlib" else None  # dlib loads in seconds: share it
        return RefinePipeline.from_config(config, analyzer=shared)

    state = UIState(factory, store_dir=store_dir, output_dir=store_dir.parent / "ui-out", require_consent=True)
    res = run_swap(state, astronaut_rgb, None, "granted")
    assert res.image is not None and res.status in ("OK", "LOW_QUALITY"), res.line
    assert_one_use(store_dir, "granted", "ui")
    for name, why in REFUSED.items():
        (store_dir / "audit.jsonl").unlink()
        res = run_swap(state, astronaut_rgb, None, name)
        assert res.image is None and res.output is None and res.status == "BAD_INPUT" and why in res.message
        assert_one_use(store_dir, name, "ui", refused=why)
    res = run_swap(state, astronaut_rgb, str(hanks_path), None)  # an upload: no consent record
    assert res.image is None and res.status == "BAD_INPUT" and "requires consent" in res.message


# ------------------------------------------------------------------------------------------------------ Python API


def test_api_get_audits_each_use_once_and_enforces_consent(store_dir: Path, hanks_path: Path) -> None:
    store = IdentityStore(store_dir)
    assert store.get("granted").cache_hit
    assert assert_one_use(store_dir, "granted", "api")["consent"] == "ok"
    strict = IdentityStore(store_dir, require_consent=True)
    refused = {k: v for k, v in REFUSED.items() if k != "api only"} | {"swap only": "does not cover 'api'"}
    for name, why in refused.items():
        (store_dir / "audit.jsonl").unlink()
        with pytest.raises(BadInputError, match=why):
            strict.get(name)
        assert_one_use(store_dir, name, "api", refused=why)
    # The purpose decides the scope: "swap only" serves a swap, not an API call.
    (store_dir / "audit.jsonl").unlink()
    assert strict.get("swap only", purpose="swap").name == "swap only"
    assert_one_use(store_dir, "swap only", "swap")
    # Without consent required, a gap is noted, not refused; per-call require_consent overrides the store's.
    (store_dir / "audit.jsonl").unlink()
    store.get("none")
    assert assert_one_use(store_dir, "none", "api")["consent"] == "no consent record"
    (store_dir / "audit.jsonl").unlink()
    with pytest.raises(BadInputError, match="no consent record"):
        store.get("none", require_consent=True)
    with pytest.raises(BadInputError, match="unknown purpose"):
        store.get("granted", purpose="print")  # type: ignore[arg-type]


def test_resolver_cannot_bypass_a_store_that_requires_consent(
    store_dir: Path, analyzer: DlibFaceAnalyzer, hanks_path: Path
) -> None:
    """`resolve_identity` (what pipelines and `PortraitPipeline.load_identity` call) honours the store's policy
    even when its own `require_consent` is left at False, and audits with the store's purpose."""
    strict = IdentityStore(store_dir, require_consent=True, purpose="generate")
    with pytest.raises(BadInputError, match="consent expired"):
        resolve_identity("expired", analyzer, store=strict)
    with pytest.raises(BadInputError, match="no consent record"):
        resolve_identity(str(hanks_path), analyzer, store=strict)  # an image path never has one
    assert_one_use(store_dir, "expired", "generate", refused="consent expired")
    (store_dir / "audit.jsonl").unlink()
    assert resolve_identity("granted", analyzer, store=strict).cache_hit
    assert_one_use(store_dir, "granted", "generate")


# --------------------------------------------------------------------------------------------- consent records


def test_identity_add_records_who_what_until_and_show_displays_it(tmp_path: Path, hanks_path: Path) -> None:
    store = ["--store", str(tmp_path / "s")]
    args = ["identity", "add", "hanks", str(hanks_path), "--consent", "release #7", "--consent-by", "T. Hanks"]
    args += ["--consent-scope", "generate,swap", "--consent-until", "2099-12-31", "--arcface", "off"]
    added = CliRunner().invoke(app, [*args, *store])
    assert added.exit_code == 0, added.output
    consent = IdentityStore(tmp_path / "s").load("hanks")[0].consent
    assert consent is not None and consent.text == "release #7" and consent.consented_by == "T. Hanks"
    assert consent.scope == ["swap", "generate"] and consent.until == "2099-12-31" and consent.recorded_at
    shown = CliRunner().invoke(app, ["identity", "show", "hanks", *store])
    assert shown.exit_code == 0
    assert "consent: release #7" in shown.stdout and "by T. Hanks; for swap, generate; until 2099-12-31" in shown.stdout
    # Malformed values are usage errors (exit 2, one line); nothing is written.
    for bad, why in [
        (["--consent", "x", "--consent-until", "31/12/2099"], "YYYY-MM-DD"),
        (["--consent", "x", "--consent-scope", "swap,print"], "consent scope"),
        (["--consent-until", "2099-12-31"], "need --consent TEXT"),
    ]:
        result = CliRunner().invoke(app, ["identity", "add", "other", str(hanks_path), *bad, *store])
        assert result.exit_code == 2, result.output
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert IdentityStore(tmp_path / "s").names() == ["hanks"]
    # `identity consent` renews it; an expired one is marked in `show`.
    renewed = CliRunner().invoke(app, ["identity", "consent", "hanks", "old", "--consent-until", EXPIRED, *store])
    assert renewed.exit_code == 0, renewed.output
    shown = CliRunner().invoke(app, ["identity", "show", "hanks", *store])
    assert f"for all uses; until {EXPIRED} (EXPIRED)" in shown.stdout


def test_records_written_before_the_consent_fields_still_load(store_dir: Path) -> None:
    """identity.json written by the previous format-1 code has consent {text, recorded_at, recorded_by} only and
    a digest over exactly that; it must load, verify and be used as before."""
    path = store_dir / "identities" / "granted" / METADATA_FILE
    data = json.loads(path.read_text())
    data["consent"] = {"text": "old release", "recorded_at": "2026-01-02T03:04:05.000Z", "recorded_by": "root"}
    payload = {k: v for k, v in data.items() if k != "metadata_sha256"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    data["metadata_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()  # as the older code sealed it
    path.write_text(json.dumps(data, indent=2))
    store = IdentityStore(store_dir, require_consent=True)
    assert store.verify()[0].ok and [r.ok for r in store.verify()] == [True] * len(CONSENTS)
    assert store.load("granted")[0].consent == ConsentRecord(
        text="old release", recorded_at="2026-01-02T03:04:05.000Z", recorded_by="root"
    )
    assert store.get("granted", purpose="batch").name == "granted"  # no scope, no expiry: every use
    # Tampering with the consent is still caught by the seal.
    data["consent"]["until"] = "2099-01-01"
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(BadInputError, match="metadata hash mismatch"):
        store.load("granted")
