"""`portraitforge identity ...` commands, `--identity NAME` resolution, per-face mappings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from identity_store_fixtures import REPO, CountingAnalyzer, hanks_variants, no_face_photo, other_people, tree_hash
from typer.testing import CliRunner

from portraitforge.cli import app as cli_app
from portraitforge.cli import identity as cli_identity
from portraitforge.embeddings_cache.records import seal
from portraitforge.embeddings_cache.resolve import (
    assign_by_nearest,
    is_face_mapping,
    parse_face_mapping,
    resolve_face_mapping,
    resolve_identity,
)
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.errors import BadInputError
from portraitforge.refiners.detect import DlibFaceAnalyzer


@pytest.fixture(scope="module")
def cli_analyzer(request: pytest.FixtureRequest) -> DlibFaceAnalyzer:
    try:  # share the session's analyzer when conftest provides one
        shared = request.getfixturevalue("analyzer")
        if isinstance(shared, DlibFaceAnalyzer):
            return shared
    except pytest.FixtureLookupError:
        pass
    return DlibFaceAnalyzer.load()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, cli_analyzer: DlibFaceAnalyzer) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("cli_photos")
    return {
        "hanks": hanks_variants(root / "hanks"),
        "others": other_people(root / "others", cli_analyzer),
        "noface": [no_face_photo(root / "noface")],
    }


@pytest.fixture(scope="module")
def app(cli_analyzer: DlibFaceAnalyzer) -> typer.Typer:
    """The real command line (its error contract included), with the session's dlib analyzer (no model reload
    per call)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(cli_identity, "load_analyzers", lambda arcface="auto", photos=None: [cli_analyzer])
    yield cli_app
    mp.undo()


def run(app: typer.Typer, *args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_add_list_show_export_import_rm(app: typer.Typer, files, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out, err = run(app, "identity", "add", "hanks", *files["hanks"][:3], files["others"][0],
                         "--note", "wheel", "--consent", "public sample", "--store", store)  # fmt: skip
    assert code == 0, err
    assert "added 'hanks': 3 of 4 photo(s) kept" in out and "rejected astronaut.png" in out
    code, out, _ = run(app, "identity", "list", "--store", store, "--json")
    [entry] = json.loads(out)
    assert code == 0 and entry["name"] == "hanks" and entry["kept"] == 3 and entry["consent"] is True
    code, out, _ = run(app, "identity", "show", "hanks", "--store", store)
    assert code == 0 and "REJECTED" in out and "consent: public sample" in out and "reference" in out
    code, out, _ = run(app, "identity", "show", "hanks", "--store", store, "--json")
    meta = json.loads(out)
    assert meta["name"] == "hanks" and len(meta["photos"]) == 4 and meta["spaces"]["dlib-128"]["model"]["sha256"]
    export = tmp_path / "hanks.safetensors"
    assert run(app, "identity", "export", "hanks", export, "--store", store)[0] == 0
    assert run(app, "identity", "import", export, "--name", "hanks2", "--store", store)[0] == 0
    assert run(app, "identity", "rename", "hanks2", "tom", "--store", store)[0] == 0
    code, out, _ = run(app, "identity", "verify", "--store", store, "--json")
    assert code == 0 and sorted(r["name"] for r in json.loads(out)) == ["hanks", "tom"]
    assert run(app, "identity", "rm", "tom", "--store", store)[0] == 0
    code, out, _ = run(app, "identity", "list", "--store", store)
    assert out.startswith("hanks\t3/4 photos")


def test_cli_errors_are_one_line_with_documented_codes(app: typer.Typer, files, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert run(app, "identity", "add", "hanks", *files["hanks"][:2], "--store", store)[0] == 0
    before = tree_hash(store)
    cases = [
        (4, ["add", "new", files["hanks"][0], files["noface"][0]], "no face found"),
        (3, ["add", "../up", files["hanks"][0]], "must not contain '..'"),
        (3, ["add", "CON", files["hanks"][0]], "reserved device name"),
        (3, ["add", "hanks", files["hanks"][2]], "already exists"),
        (3, ["add", "pair", files["hanks"][0], files["others"][1]], "do not agree on one person"),
        (3, ["add", "x", tmp_path / "missing.jpg"], "file not found"),
        (3, ["show", "nobody"], "unknown identity 'nobody' (known: hanks"),
        (3, ["rm", "nobody"], "unknown identity"),
        (3, ["rename", "hanks", "a/b"], "contains '/'"),
        (3, ["import", tmp_path / "missing.safetensors"], "file not found"),
        (3, ["export", "hanks", tmp_path / "out.txt"], "must end in .safetensors"),
    ]
    for code, args, message in cases:
        got, out, err = run(app, "identity", *args, "--store", store)
        assert got == code, (args, got, err)
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, (args, err)
        assert tree_hash(store) == before, args
    assert run(app, "identity", "add", "--store", store)[0] == 2  # usage error
    assert run(app, "identity", "add", "z", files["hanks"][0], "--replace", "--append", "--store", store)[0] == 2


def test_cli_verify_reports_corruption_and_stale_models(app: typer.Typer, files, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    assert run(app, "identity", "add", "hanks", *files["hanks"][:2], "--store", store_dir)[0] == 0
    store = IdentityStore(store_dir)
    # An identity written by another model version (the store's own writer, so only the model hash differs).
    record, tensors = store.load("hanks")
    spaces = {k: v.model_copy(update={"model": v.model.model_copy(update={"sha256": "0" * 64})})
              for k, v in record.spaces.items()}  # fmt: skip
    store._commit(seal(record.model_copy(update={"spaces": spaces})), tensors, "update")
    code, out, _ = run(app, "identity", "verify", "--store", store_dir)
    assert code == 5 and "STALE" in out and "was embedded with" in out
    code, out, _ = run(app, "identity", "verify", "--recompute", "--store", store_dir)
    assert code == 0 and "recomputed" in out
    assert store.load("hanks")[0].spaces["dlib-128"].model.sha256 != "0" * 64
    assert run(app, "identity", "verify", "--store", store_dir)[0] == 0
    # Corruption: exit 3 naming the identity.
    folder = store_dir / "identities" / "hanks"
    tensors_file = json.loads((folder / "identity.json").read_text())["tensors_file"]
    data = bytearray((folder / tensors_file).read_bytes())
    data[-5] ^= 0xFF
    (folder / tensors_file).write_bytes(bytes(data))
    code, out, _ = run(app, "identity", "verify", "--store", store_dir)
    assert code == 3 and "identity 'hanks' is corrupted" in out
    code, _, err = run(app, "identity", "show", "hanks", "--store", store_dir)
    assert code == 3 and "identity 'hanks' is corrupted" in err


def test_real_entry_point_no_face_exit_code_and_unchanged_store(files, tmp_path: Path) -> None:
    """Through `python -m portraitforge.cli` (registration in cli.py, real exit codes, one stderr line)."""
    store = tmp_path / "store"
    store.mkdir()
    before = tree_hash(store)
    cmd = [sys.executable, "-m", "portraitforge.cli", "identity", "add", "x", str(files["hanks"][0]),
           str(files["noface"][0]), "--arcface", "off", "--store", str(store)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("\n") == 1 and "no face found" in proc.stderr
    assert tree_hash(store) == before
    proc = subprocess.run(
        [sys.executable, "-m", "portraitforge.cli", "identity", "list", "--store", str(store)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "no identities"


# ------------------------------------------------------------------------------------------ resolution


def test_resolve_identity_image_path_name_and_unknown(files, cli_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "store")
    store.add("hanks", files["hanks"][:3], analyzers=[cli_analyzer], consent="ok")
    counting = CountingAnalyzer(cli_analyzer)
    by_name = resolve_identity("hanks", counting, store_dir=store.root)
    assert by_name.cache_hit and counting.calls.total() == 0  # no embedding for a stored identity
    by_path = resolve_identity(str(files["hanks"][0]), counting, store_dir=store.root)
    assert not by_path.cache_hit and counting.calls["embed"] == 1
    assert cli_analyzer.distance(by_name.embeddings["dlib-128"], by_path.embeddings["dlib-128"]) < 0.3
    with pytest.raises(BadInputError) as info:
        resolve_identity("alice", counting, store_dir=store.root)
    assert str(info.value).startswith("unknown identity 'alice' (known: hanks") and "\n" not in str(info.value)
    with pytest.raises(BadInputError, match="file not found"):
        resolve_identity(str(tmp_path / "nope.jpg"), counting, store_dir=store.root)
    with pytest.raises(BadInputError, match="no stored identity has that name"):
        resolve_identity("../../etc/passwd-like", counting, store_dir=store.root)
    # Consent: stored identities with a record pass, image paths have none and are refused.
    assert resolve_identity("hanks", counting, store_dir=store.root, require_consent=True).name == "hanks"
    with pytest.raises(BadInputError, match="no consent record"):
        resolve_identity(str(files["hanks"][0]), counting, store_dir=store.root, require_consent=True)


def test_parse_face_mapping() -> None:
    assert parse_face_mapping("0=alice,1=bob") == {0: "alice", 1: "bob"}
    assert parse_face_mapping(" 2 = Alice Smith , 0=bob ") == {2: "Alice Smith", 0: "bob"}
    assert parse_face_mapping("0=faces/a.jpg") == {0: "faces/a.jpg"}
    assert is_face_mapping("0=alice") and not is_face_mapping("alice")
    for bad in ["", "0=", "=alice", "alice", "0=a,,1=b", "x=alice", "-1=alice", "0=a,0=b", "0=a=b", "١=alice"]:
        with pytest.raises(BadInputError):
            parse_face_mapping(bad)


def test_resolve_face_mapping_and_nearest_assignment(files, cli_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    from portraitforge.imageio import load_image

    store = IdentityStore(tmp_path / "store")
    store.add("hanks", files["hanks"][:3], analyzers=[cli_analyzer])
    store.add("astronaut", [files["others"][0]], analyzers=[cli_analyzer])
    mapping = resolve_face_mapping("1=hanks,0=astronaut,2=hanks", cli_analyzer, store=store)
    assert {k: v.name for k, v in mapping.items()} == {0: "astronaut", 1: "hanks", 2: "hanks"}
    assert mapping[1] is mapping[2]  # loaded once
    with pytest.raises(BadInputError, match="unknown identity 'carol'"):
        resolve_face_mapping("0=hanks,1=carol", cli_analyzer, store=store)
    # Nearest reference: faces in a frame get the identity they resemble, one identity per face.
    faces = []
    for path in (files["others"][0], files["hanks"][4]):
        rgb = load_image(path).rgb
        face = max(cli_analyzer.detect(rgb), key=lambda f: f.area)
        faces.append(cli_analyzer.embed(rgb, face))
    identities = [store.get("hanks"), store.get("astronaut")]
    assigned = assign_by_nearest(faces, identities, "dlib-128", cli_analyzer.distance)
    assert {k: v.name for k, v in assigned.items()} == {0: "astronaut", 1: "hanks"}
    far = assign_by_nearest(faces[:1], identities[:1], "dlib-128", cli_analyzer.distance, max_distance=0.6)
    assert far == {}
    assert np.isfinite(identities[0].embeddings["dlib-128"]).all()
