"""Identity store on photos that ship in the wheels (runs everywhere): build, reject outliers, store, load,
corruption, names, export/import, stale models, consent and audit, concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from identity_store_fixtures import (
    CountingAnalyzer,
    ProjectedArcAnalyzer,
    hanks_variants,
    no_face_photo,
    other_people,
    tree_hash,
)

from portraitforge.atomic import file_sha256
from portraitforge.embeddings_cache.records import IdentityCorruptedError, seal, validate_name
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.errors import BadInputError, ModelUnavailableError, NoFaceError
from portraitforge.refiners.detect import DlibFaceAnalyzer


@pytest.fixture(scope="session")
def id_analyzer(request: pytest.FixtureRequest) -> DlibFaceAnalyzer:
    try:  # share the session's analyzer when conftest provides one (loading dlib costs seconds)
        shared = request.getfixturevalue("analyzer")
        if isinstance(shared, DlibFaceAnalyzer):
            return shared
    except pytest.FixtureLookupError:
        pass
    return DlibFaceAnalyzer.load()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, id_analyzer: DlibFaceAnalyzer) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("identity_photos")
    return {
        "hanks": hanks_variants(root / "hanks"),
        "others": other_people(root / "others", id_analyzer),
        "noface": [no_face_photo(root / "noface")],
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, list[Path]], id_analyzer: DlibFaceAnalyzer):
    """One store with 'hanks' (5 own photos + the astronaut mixed in), built once for the read-only tests."""
    store = IdentityStore(tmp_path_factory.mktemp("store"))
    record = store.add(
        "hanks", [*photos["hanks"], photos["others"][0]], note="wheel sample", consent="public sample photo",
        analyzers=[id_analyzer],
    )  # fmt: skip
    return store, record


def test_add_rejects_other_person_and_records_everything(built, photos) -> None:
    store, record = built
    assert [p.file for p in record.photos if not p.kept] == ["astronaut.png"]
    astronaut_rec = record.photos[-1]
    assert "dlib-128" in astronaut_rec.reasons[0] and "exceeds" in astronaut_rec.reasons[0]
    assert astronaut_rec.distances["dlib-128"] > 0.6
    assert all(p.distances["dlib-128"] < 0.35 for p in record.photos if p.kept)
    # Source hashes are of the files' bytes; the model hash is of dlib's descriptor file.
    for p, path in zip(record.photos, [*photos["hanks"], photos["others"][0]], strict=True):
        assert p.sha256 == file_sha256(path)
        assert 0.0 < p.quality <= 1.0 and p.quality_detail["landmarks_confidence"] > 0.3
    space = record.spaces["dlib-128"]
    assert space.model.name == "dlib_face_recognition_resnet_model_v1.dat" and len(space.model.sha256 or "") == 64
    assert space.kept == [0, 1, 2, 3, 4] and space.rejected == [5]
    assert record.note == "wheel sample" and record.consent is not None
    assert record.consent.text == "public sample photo"
    assert record.created <= record.updated
    # Files on disk: metadata JSON + one safetensors file, no pickle anywhere.
    folder = store.identities_dir / "hanks"
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(["identity.json", record.tensors_file])
    assert record.tensors_file.endswith(".safetensors")
    meta = json.loads((folder / "identity.json").read_text())
    assert meta["metadata_sha256"] == record.metadata_sha256


def test_get_is_a_cache_hit_without_any_embedding(built, id_analyzer: DlibFaceAnalyzer) -> None:
    store, record = built
    counting = CountingAnalyzer(id_analyzer)
    identity = store.get("hanks", counting)
    assert counting.calls.total() == 0, counting.calls  # no detect, no landmarks, no embed
    assert identity.cache_hit is True and identity.name == "hanks"
    assert identity.embeddings["dlib-128"].shape == (128,)
    assert identity.reference_crop.dtype == np.uint8 and identity.reference_crop.shape[2] == 3
    assert 256 <= identity.reference_crop.shape[0] <= 512
    assert identity.reference_landmarks68.shape == (68, 2)
    # Landmarks sit on the face inside the crop, eyes above the mouth.
    lm = identity.reference_landmarks68
    assert (lm >= 0).all() and (lm < identity.reference_crop.shape[0]).all()
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()
    assert identity.sources == [p.sha256 for p in record.photos if p.kept]
    # The centroid is the mean of the kept photos' embeddings.
    _, tensors = store.load("hanks")
    kept_rows = tensors["embeddings.dlib-128"][:5]
    np.testing.assert_allclose(identity.embeddings["dlib-128"], kept_rows.mean(0), atol=1e-6)


def test_centroid_matches_an_unseen_variant_better_than_a_photo(built, photos, id_analyzer: DlibFaceAnalyzer) -> None:
    """A variant the store has never seen (blurred) is closer to the centroid than to the average stored photo."""
    import cv2

    from portraitforge.imageio import load_image

    store, _ = built
    probe_rgb = cv2.GaussianBlur(load_image(photos["hanks"][0]).rgb, (0, 0), 1.2)
    face = max(id_analyzer.detect(probe_rgb), key=lambda f: f.area)
    probe = id_analyzer.embed(probe_rgb, face)
    _, tensors = store.load("hanks")
    singles = [float(np.linalg.norm(probe - row)) for row in tensors["embeddings.dlib-128"][:5]]
    centroid = float(np.linalg.norm(probe - store.get("hanks").embeddings["dlib-128"]))
    assert centroid <= float(np.mean(singles))


def test_every_other_wheel_face_is_rejected(photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    """Each face of another person mixed into the same person's photos is rejected (build_consensus is the
    code store.add runs; photos are analysed once here to keep the test fast)."""
    from portraitforge.embeddings_cache.consensus import SpaceSpec, analyze_photo, build_consensus, model_ref
    from portraitforge.imageio import load_image

    def analysed(path: Path):
        return analyze_photo(load_image(path).rgb, path.name, file_sha256(path), id_analyzer, [])

    own = [analysed(p) for p in photos["hanks"]]
    spec = IdentityStore(tmp_path)._spec(id_analyzer, 128)
    assert isinstance(spec, SpaceSpec) and spec.model == model_ref(id_analyzer, IdentityStore(tmp_path)._hashes)
    others = photos["others"]
    assert len(others) >= 4  # the astronaut and the faces of t1.jpg
    for path in others:
        outsider = analysed(path)
        for position in (0, 2, len(own)):  # wherever it appears in the list
            mixed = own[:position] + [outsider] + own[position:]
            result = build_consensus("hanks", mixed, {"dlib-128": spec}, "dlib-128")
            assert result.kept == [i for i in range(len(mixed)) if i != position], (path.name, position)
            assert result.reasons[position]


def test_photos_of_two_different_people_are_refused(photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "store")
    with pytest.raises(BadInputError, match="do not agree on one person"):
        store.add("mixed", [photos["hanks"][0], photos["others"][0]], analyzers=[id_analyzer])
    assert tree_hash(tmp_path / "store") == "absent"


@pytest.mark.parametrize("existing", [False, True])
def test_no_face_photo_leaves_store_byte_for_byte_unchanged(
    existing: bool, photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = IdentityStore(root)
    if existing:
        store.add("someone", photos["hanks"][:2], analyzers=[id_analyzer])
    before = tree_hash(root)
    with pytest.raises(NoFaceError, match="no_face.png: no face found"):
        store.add("hanks", [photos["hanks"][0], photos["noface"][0]], analyzers=[id_analyzer])
    assert tree_hash(root) == before
    # A replace that fails is also a no-op.
    if existing:
        with pytest.raises(NoFaceError):
            store.add("someone", photos["noface"], analyzers=[id_analyzer], exist="replace")
        assert tree_hash(root) == before


def test_corruption_is_detected_with_the_identity_name(built, tmp_path: Path) -> None:
    import shutil

    src_store, _ = built
    cases = {
        "flip": lambda d, rec: _flip_byte(d / rec["tensors_file"], -100),
        "truncate": lambda d, rec: (d / rec["tensors_file"]).write_bytes((d / rec["tensors_file"]).read_bytes()[:-64]),
        "missing": lambda d, rec: (d / rec["tensors_file"]).unlink(),
        "metadata": lambda d, rec: (d / "identity.json").write_text(
            json.dumps({**rec, "note": "edited by hand"}, indent=2)
        ),
        "json": lambda d, rec: (d / "identity.json").write_text("{not json"),
    }
    for case, damage in cases.items():
        root = tmp_path / case
        shutil.copytree(src_store.root, root)
        store = IdentityStore(root)
        folder = root / "identities" / "hanks"
        damage(folder, json.loads((folder / "identity.json").read_text()))
        with pytest.raises(IdentityCorruptedError, match="identity 'hanks' is corrupted") as info:
            store.get("hanks")
        assert "\n" not in str(info.value)
        [result] = store.verify()
        assert not result.ok and "identity 'hanks' is corrupted" in result.problems[0]
        if case in ("metadata", "json"):
            [summary] = store.list()
            assert summary.error is not None and "hanks" in summary.error


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


BAD_NAMES = [
    "", ".", "..", "../etc", "a/b", "a\\b", "/abs", "CON", "nul", "Com1", "lpt9.txt", "aux.json",
    "a\x00b", "tab\there", "new\nline", "\u202eevil", "zero\u200bwidth", "x" * 65, " lead", "trail ", ".hidden",
    "-rf", "trail.", "a:b", "a*b", "a?b", 'a"b', "a<b", "a|b", "0=alice", "a,b", "e\u0301",
]  # fmt: skip
GOOD_NAMES = ["alice", "Alice Smith", "idol_01", "v2.1-final", "初音ミク", "o'brien", "x" * 64]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_odd_and_traversal_names_are_rejected(name: str, built, tmp_path: Path) -> None:
    store, _ = built
    with pytest.raises(BadInputError):
        validate_name(name)
    before = tree_hash(store.root)
    with pytest.raises(BadInputError):
        store.get(name)
    with pytest.raises(BadInputError):
        store.rename("hanks", name)
    with pytest.raises(BadInputError):
        store.export(name, tmp_path / "x.safetensors")
    assert tree_hash(store.root) == before
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_reasonable_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


def test_lifecycle_rename_remove_case_clash_and_append(photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    first = store.add("Hanks", photos["hanks"][:2], analyzers=[id_analyzer])
    with pytest.raises(BadInputError, match="already exists"):
        store.add("Hanks", photos["hanks"][2:3], analyzers=[id_analyzer])
    with pytest.raises(BadInputError, match="case-insensitive"):
        store.add("hanks", photos["hanks"][2:3], analyzers=[id_analyzer])
    appended = store.add("Hanks", photos["hanks"][2:4] + photos["hanks"][:1], analyzers=[id_analyzer], exist="append")
    assert len(appended.photos) == 4  # the repeated file is not counted twice
    assert appended.created == first.created and appended.updated >= first.updated
    renamed = store.rename("Hanks", "hanks")  # case-only rename is allowed
    assert store.names() == ["hanks"] and renamed.name == "hanks"
    assert store.get("hanks").embeddings["dlib-128"].shape == (128,)
    store.remove("hanks")
    assert store.names() == [] and store.list() == []
    with pytest.raises(BadInputError, match="unknown identity 'hanks'"):
        store.remove("hanks")
    assert [r.name for r in store.verify()] == []
    ops = [e["operation"] for e in store.audit_log.read()]
    assert ops == ["add", "add", "rename from Hanks", "api", "remove"]  # `get` is a use: audited, purpose "api"


def test_export_import_round_trip_and_validation(built, tmp_path: Path) -> None:
    store, record = built
    exported = store.export("hanks", tmp_path / "hanks.safetensors")
    other = IdentityStore(tmp_path / "other")
    imported = other.import_(exported)
    assert imported.tensors_digest == record.tensors_digest
    assert imported.photos == record.photos and imported.spaces == record.spaces
    a, b = store.get("hanks"), other.get("hanks")
    for space in a.embeddings:
        np.testing.assert_array_equal(a.embeddings[space], b.embeddings[space])
    np.testing.assert_array_equal(a.reference_crop, b.reference_crop)
    np.testing.assert_array_equal(a.reference_landmarks68, b.reference_landmarks68)
    # Same name again is refused; --name stores a copy.
    with pytest.raises(BadInputError, match="already exists"):
        other.import_(exported)
    assert other.import_(exported, name="hanks copy").name == "hanks copy"
    with pytest.raises(BadInputError):
        other.import_(exported, name="../escape")
    # Tampered files are refused before anything is written.
    before = tree_hash(other.root)
    data = exported.read_bytes()
    tampered = {
        "tensor-byte": _flipped(data, len(data) - 10),
        "header-text": data.replace(b"wheel sample", b"wheel simple"),
        "truncated": data[: len(data) // 2],
        "not-safetensors": b"GIF89a" + b"\0" * 100,
        "empty": b"",
    }
    for case, blob in tampered.items():
        path = tmp_path / f"{case}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(BadInputError) as info:
            other.import_(path, name="fresh")
        assert "\n" not in str(info.value), case
    assert tree_hash(other.root) == before
    # A valid header whose name is a traversal attempt (re-sealed, so only the name check can catch it).
    rec = record.model_copy(update={"name": "../evil", "tensors_file": None})
    evil = seal(rec)
    from safetensors.numpy import save

    _, tensors = store.load("hanks")
    header = {"format": "portraitforge-identity", "format_version": "1", "identity": evil.model_dump_json()}
    (tmp_path / "evil.safetensors").write_bytes(save(tensors, metadata=header))
    with pytest.raises(IdentityCorruptedError, match="invalid name"):
        other.import_(tmp_path / "evil.safetensors")
    assert tree_hash(other.root) == before
    assert not (tmp_path / "evil").exists()


def _flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_stale_model_version_is_reported_then_recomputed(photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    store = IdentityStore(tmp_path)
    old = store.add("hanks", photos["hanks"][:4], analyzers=[id_analyzer])
    old_vec = store.get("hanks").embeddings["dlib-128"]
    newer = CountingAnalyzer(id_analyzer, model_sha256="f" * 64)  # the same space, another model file
    with pytest.raises(ModelUnavailableError, match="was embedded with dlib_face_recognition_resnet_model_v1.dat"):
        store.get("hanks", newer)
    [result] = store.verify([newer])
    assert not result.ok and result.stale and not result.problems
    identity = store.get("hanks", newer, on_stale="recompute")
    assert identity.cache_hit is False and newer.calls["embed"] == 4  # one per stored crop, no source photos
    record, _ = store.load("hanks")
    assert record.spaces["dlib-128"].model.sha256 == "f" * 64 and record.created == old.created
    assert store.verify([newer])[0].ok
    newer.calls.clear()
    again = store.get("hanks", newer)
    assert again.cache_hit and newer.calls.total() == 0
    # Recomputing from the 320 px stored crops lands next to the embedding of the source photos (re-cropping
    # moves single dlib descriptors by ~0.05 on ../shared/faces; a quarter of the 0.6 threshold is the bound).
    dist = float(np.linalg.norm(old_vec - again.embeddings["dlib-128"]))
    assert dist < 0.15, dist


def test_second_space_is_stored_and_a_missing_space_recomputed(
    photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path
) -> None:
    store = IdentityStore(tmp_path)
    arc = ProjectedArcAnalyzer(id_analyzer)
    record = store.add("hanks", photos["hanks"][:3], analyzers=[arc])  # dlib-128 is added automatically
    assert set(record.spaces) == {"dlib-128", "arcface-512"}
    assert record.spaces["arcface-512"].metric == "cosine" and record.spaces["dlib-128"].metric == "euclidean"
    identity = store.get("hanks", arc)
    assert abs(float(np.linalg.norm(identity.embeddings["arcface-512"])) - 1.0) < 1e-5  # unit-norm centroid
    # An identity built without that space: missing is reported, and recomputed from the stored crops.
    store.add("dlib only", photos["hanks"][:3], analyzers=[id_analyzer])
    with pytest.raises(ModelUnavailableError, match="has no 'arcface-512' embedding"):
        store.get("dlib only", arc)
    filled = store.get("dlib only", arc, on_stale="recompute")
    assert set(filled.embeddings) == {"dlib-128", "arcface-512"}
    assert arc.distance(filled.embeddings["arcface-512"], identity.embeddings["arcface-512"]) < 0.05


def test_consent_required_and_audit_log(built, photos, tmp_path: Path) -> None:
    store, _ = built
    strict = IdentityStore(store.root, require_consent=True)
    assert strict.get("hanks").name == "hanks"  # it has a consent record
    plain = IdentityStore(tmp_path / "plain", require_consent=True)
    plain.import_(store.export("hanks", tmp_path / "h.safetensors"))
    plain.set_consent("hanks", None)
    with pytest.raises(BadInputError, match="no consent record"):
        plain.get("hanks")
    assert plain.get("hanks", require_consent=False).name == "hanks"
    plain.set_consent("hanks", "signed release form #12")
    assert plain.get("hanks").name == "hanks"
    # Every use is one line: time, identity, operation, output file and its sha256.
    out = tmp_path / "result.png"
    out.write_bytes(b"pretend image bytes")
    entry = plain.audit("hanks", "swap", out)
    lines = (plain.root / "audit.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["identity"] == "hanks" and last["operation"] == "swap"
    assert last["output"] == str(out.resolve()) and last["output_sha256"] == file_sha256(out)
    assert last["time"] == entry.time and last["identity_digest"] == plain.load("hanks")[0].tensors_digest
    # Each `get` above is a use (purpose "api"), the refused one included.
    ops = ["import", "consent-withdrawn", "api", "api", "consent", "api", "swap"]
    assert [json.loads(x)["operation"] for x in lines] == ops
    with pytest.raises(BadInputError, match="does not exist"):
        plain.audit("hanks", "swap", tmp_path / "missing.png")


def _concurrent_add(root: str, name: str, paths: list[str], barrier) -> str:  # type: ignore[no-untyped-def]
    analyzer = DlibFaceAnalyzer.load(descriptor_backend="dlib")
    store = IdentityStore(root)
    barrier.wait(timeout=300)  # both processes start adding at the same moment
    for k, path in enumerate(paths):
        store.add(f"{name}-{k}", [path], analyzers=[analyzer])
    store.add(name, paths, analyzers=[analyzer])
    return name


def test_concurrent_adds_from_two_processes(photos, tmp_path: Path) -> None:
    root = tmp_path / "store"
    ctx = mp.get_context("spawn")  # fresh interpreters: no shared state with the test process
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        hanks = [str(p) for p in photos["hanks"][:3]]
        with ctx.Pool(2) as pool:
            jobs = [
                pool.apply_async(_concurrent_add, (str(root), "first", hanks, barrier)),
                pool.apply_async(_concurrent_add, (str(root), "second", hanks[::-1], barrier)),
            ]
            assert sorted(j.get(timeout=600) for j in jobs) == ["first", "second"]
    store = IdentityStore(root)
    expected = sorted(["first", "second"] + [f"{n}-{k}" for n in ("first", "second") for k in range(3)])
    assert store.names() == expected
    results = store.verify()
    assert all(r.ok for r in results), results
    assert len(store.audit_log.read()) == len(expected)
    assert not [p for p in (root / "identities").iterdir() if p.name.startswith(".")]


def test_in_memory_arrays_and_folders(photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path) -> None:
    from portraitforge.imageio import load_image

    store = IdentityStore(tmp_path / "store")
    folder = photos["hanks"][0].parent
    from_folder = store.add("folder", [folder], analyzers=[id_analyzer])
    assert len(from_folder.photos) == len(photos["hanks"])
    arrays = [load_image(p).rgb for p in photos["hanks"][:2]]
    from_arrays = store.add("arrays", arrays, analyzers=[id_analyzer])
    assert [p.file for p in from_arrays.photos] == ["array-0", "array-1"]
    with pytest.raises(BadInputError, match="folder contains no images"):
        store.add("empty", [tmp_path / "store" / "identities" / "folder"], analyzers=[id_analyzer])
    with pytest.raises(BadInputError, match="not a recognised image"):
        bad = tmp_path / "text.jpg"
        bad.write_text("hello")
        store.add("text", [bad], analyzers=[id_analyzer])


def test_real_insightface_analyzer_space_with_synthetic_weights(
    photos, id_analyzer: DlibFaceAnalyzer, tmp_path: Path
) -> None:
    """The real InsightFaceAnalyzer (synthetic ArcFace/SCRFD ONNX files with the real signatures, built here)
    as the arcface-512 space: model file name + sha256 recorded, cosine metric, unit-norm centroid, and a
    get() with that analyzer is a cache hit. Faces come from dlib boxes because the synthetic SCRFD finds
    bright blobs, not faces; `embed` (alignment + ONNX ArcFace) is the real code path."""
    pytest.importorskip("insightface")
    from dataclasses import dataclass

    from onnx_fixtures import make_arcface, make_scrfd

    from portraitforge.models.onnx_runtime import OnnxSessionPool
    from portraitforge.refiners.detect_insightface import InsightFaceAnalyzer, InsightFaceModels

    rec = make_arcface(tmp_path / "w600k_r50.onnx")
    models = InsightFaceModels.from_files(make_scrfd(tmp_path / "det_10g.onnx"), rec, None, OnnxSessionPool())
    insight = InsightFaceAnalyzer(models=models)

    @dataclass
    class DlibBoxesInsight:
        inner: InsightFaceAnalyzer
        name: str = "insightface"
        embedding_space: str = "arcface-512"

        def params(self):  # type: ignore[no-untyped-def]
            return self.inner.params()

        def detect(self, image):  # type: ignore[no-untyped-def]
            return id_analyzer.detect(image)

        def embed(self, image, face):  # type: ignore[no-untyped-def]
            return self.inner.embed(image, face)

        def landmarks(self, image, face):  # type: ignore[no-untyped-def]
            return id_analyzer.landmarks(image, face)

        def distance(self, a, b):  # type: ignore[no-untyped-def]
            return self.inner.distance(a, b)

        @property
        def models(self):  # type: ignore[no-untyped-def]
            return self.inner.models

    arc = DlibBoxesInsight(insight)
    store = IdentityStore(tmp_path / "store")
    record = store.add("hanks", photos["hanks"][:3], analyzers=[id_analyzer, arc])
    space = record.spaces["arcface-512"]
    assert space.metric == "cosine" and space.threshold == 0.6
    assert space.model.name == "w600k_r50.onnx" and space.model.sha256 == file_sha256(rec)
    assert all(p.spaces == ["dlib-128", "arcface-512"] for p in record.photos)
    identity = store.get("hanks", insight)  # the real analyzer: same model file -> not stale
    assert identity.cache_hit
    assert abs(float(np.linalg.norm(identity.embeddings["arcface-512"])) - 1.0) < 1e-5
