"""`portraitforge models list|download|verify|path`: the model store from the command line.

Every failure is one line on stderr and a documented exit code (5 = model unavailable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from portraitforge.errors import PortraitForgeError
from portraitforge.models.registry import DEFAULT_REGISTRY, ModelRegistry, UnknownModelError
from portraitforge.models.store import FileStatus, ModelStore
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

models_app = typer.Typer(
    name="models",
    help="List, download, verify and locate model files (inswapper_128, buffalo_l, ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MODELS_DIR_OPTION = typer.Option(
    None, "--models-dir", help="Model store folder (default: $PORTRAITFORGE_HOME/models or the XDG data dir)."
)
JSON_OPTION = typer.Option(False, "--json", help="Print a machine-readable report on stdout.")
DOWNLOAD_NAMES = typer.Argument(None, help="Model names (default: all).")
VERIFY_NAMES = typer.Argument(None, help="Model names (default: every file present in the store).")
REGISTRY: ModelRegistry = DEFAULT_REGISTRY  # the models this CLI manages (tests substitute local ones)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


def _store(models_dir: Path | None, offline: bool | None = None, mirror: str | None = None) -> ModelStore:
    return ModelStore.from_dir(models_dir, registry=REGISTRY, offline=offline, mirror=mirror)


def _names(store: ModelStore, names: list[str] | None) -> list[str]:
    if not names:
        return store.registry.names()
    try:
        return [store.spec(n).name for n in names]
    except UnknownModelError as exc:
        raise _fail(str(exc.args[0]), EXIT_USAGE) from None


def _emit(payload: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
    else:
        for line in lines:
            typer.echo(line)


def _progress(label: str, done: int, total: int | None) -> None:
    # Coarse progress on stderr (stdout stays clean for --json); one update per ~5 %.
    if total:
        pct = int(done * 100 / total)
        if pct % 5 == 0 and pct != getattr(_progress, "_last", -1):
            _progress._last = pct  # type: ignore[attr-defined]
            print(f"\r{label}: {pct:3d}% of {total / 1e6:.1f} MB", end="" if pct < 100 else "\n", file=sys.stderr)


@models_app.command("list")
def list_models(models_dir: Path | None = MODELS_DIR_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Every registered model with its task, size, licence and whether it is in the store."""
    store = _store(models_dir)
    rows = []
    lines = [f"store: {store.root}"]
    for spec in store.registry:
        status = store.check(spec.name, hash_if_needed=False)
        rows.append({**spec.to_dict(), "path": str(status.path), "state": status.state})
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "?"
        noncommercial = " [non-commercial]" if "non-commercial" in spec.license else ""
        lines.append(f"{spec.name:<22} {spec.task:<10} {size:>10}  {status.state:<9}{noncommercial}")
    _emit({"store": str(store.root), "models": rows}, as_json, lines)


@models_app.command("download")
def download_models(
    names: list[str] = DOWNLOAD_NAMES,
    models_dir: Path | None = MODELS_DIR_OPTION,
    mirror: str | None = typer.Option(None, "--mirror", help="Base URL tried first: <mirror>/<file name>."),
    offline: bool = typer.Option(False, "--offline", help="Never touch the network (also $PORTRAITFORGE_OFFLINE=1)."),
    force: bool = typer.Option(False, "--force", help="Fetch again even if a verified copy exists."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Fetch models (resumable, sha256-checked, atomic). Offline or unreachable: exit code 5."""
    store = _store(models_dir, offline=offline or None, mirror=mirror)
    if not as_json:
        store.progress = _progress
    done: list[dict[str, Any]] = []
    for name in _names(store, names):
        try:
            path = store.download(name, force=True) if force else store.ensure(name, download=True)
        except PortraitForgeError as exc:
            raise _fail(exc.message, EXIT_CODES[exc.status]) from None
        done.append({"name": name, "path": str(path), "state": "ok"})
    _emit({"store": str(store.root), "models": done}, as_json, [f"{d['name']}: {d['path']}" for d in done])


@models_app.command("verify")
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
        [f"{r.name:<22} {r.state:<10} {r.path}" for r in results] or [f"no model files in {store.root}"],
    )
    if bad:
        worst = bad[0]
        spec = store.spec(worst.name)
        raise _fail(
            store.unavailable(spec, f"{worst.state}").message,
            EXIT_CODES[Status.MODEL_UNAVAILABLE],
        )


@models_app.command("path")
def model_path(
    name: str | None = typer.Argument(None, help="A model name; without it, the store folder."),
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
        raise _fail(str(exc.args[0]), EXIT_USAGE) from None
    path = store.root / spec.filename
    payload = {"name": spec.name, "path": str(path), "exists": path.is_file()}
    _emit(payload, as_json, [str(path)])


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
