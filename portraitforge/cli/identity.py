"""`portraitforge identity ...`: manage the identity store (add, list, show, rm, rename, export, import, verify).

Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad input (unknown or invalid name, corrupted identity,
photos of different people, unreadable file), 4 no face in a photo, 5 model unavailable or stale.
Every failure prints one line to stderr; a failed `add` leaves the store unchanged.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from portraitforge.cli_common import exit_code_for
from portraitforge.embeddings_cache.records import ConsentRecord, IdentityRecord
from portraitforge.embeddings_cache.store import IdentityStore
from portraitforge.errors import ModelUnavailableError, PortraitForgeError
from portraitforge.imageio import list_images
from portraitforge.refiners.base import FaceAnalyzer
from portraitforge.refiners.detect import DlibFaceAnalyzer
from portraitforge.types import EXIT_CODES, EXIT_USAGE, Status

STORE_HELP = "identity store directory (default: $PORTRAITFORGE_HOME/embeddings_cache)"
ARCFACE_HELP = "also embed with ArcFace: auto (when its model is installed), on (required) or off"
CONSENT_BY_HELP = "who gave the consent (the person shown, or their agent)"
CONSENT_SCOPE_HELP = "uses the consent covers, comma-separated: swap,generate,batch,ui,api (default: all)"
CONSENT_UNTIL_HELP = "last day the consent holds, YYYY-MM-DD (default: no expiry)"

identity_app = typer.Typer(
    name="identity",
    help="Manage cached identities: register once from several photos, reuse everywhere.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """One line on stderr and the documented exit code for every failure; never a traceback."""
    try:
        yield
    except typer.Exit:
        raise
    except PortraitForgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exit_code_for(exc)) from None  # ParameterError (bad option value) is a usage error
    except BrokenPipeError:  # `| head` closed the pipe: click exits quietly (1)
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_CODES[Status.INTERRUPTED]) from None
    except OSError as exc:  # unwritable store, full disk, unreadable file: the user's environment
        typer.echo(f"error: {_one_line(str(exc))}", err=True)
        raise typer.Exit(EXIT_CODES[Status.BAD_INPUT]) from None
    except Exception as exc:  # noqa: BLE001 - the CLI contract is one line, never a traceback
        typer.echo(f"internal error: {type(exc).__name__}: {_one_line(str(exc))}", err=True)
        raise typer.Exit(EXIT_CODES[Status.INTERNAL]) from None


# Below this many photos dlib's own descriptor (~160 ms a photo) beats importing torch and loading its port
# (~4 s once, then ~20 ms a photo). Both give the same vectors (parity < 1e-5).
TORCH_DESCRIPTOR_MIN_PHOTOS = 24


def load_analyzers(arcface: str = "auto", photos: int | None = None) -> list[FaceAnalyzer]:
    """dlib always; the ArcFace analyzer (portraitforge.refiners.detect_insightface) when requested/available."""
    if arcface not in ("auto", "on", "off"):
        usage_error("--arcface must be auto, on or off")
    descriptor = "dlib" if photos is not None and photos < TORCH_DESCRIPTOR_MIN_PHOTOS else "auto"
    dlib = DlibFaceAnalyzer.load(descriptor_backend=descriptor)
    # The default engine's analyzer when its files are here: the store then keeps the reference's mesh, fitted on
    # the whole photo, and aligns the reference exactly as a swap with that photo would.
    mesh, grader = _default_engine_analyzers(dlib)
    analyzers: list[FaceAnalyzer] = [mesh or dlib]
    if grader is not None:
        analyzers.append(grader)
    if arcface == "off":
        return analyzers
    try:
        from portraitforge.refiners import detect_insightface  # type: ignore[attr-defined, unused-ignore]

        analyzers.append(detect_insightface.InsightFaceAnalyzer.load())
    except (ImportError, AttributeError, ModelUnavailableError) as exc:
        if arcface == "on":
            message = exc.message if isinstance(exc, ModelUnavailableError) else str(exc)
            raise ModelUnavailableError(f"ArcFace analyzer unavailable: {message}") from None
    return analyzers


def _default_engine_analyzers(dlib: FaceAnalyzer) -> tuple[FaceAnalyzer | None, FaceAnalyzer | None]:
    """The default engine's mesh analyzer and grader, built as a swap builds them, when their files are in the
    model store (nothing is downloaded here); None for what is missing."""
    from portraitforge.config import RefineConfig
    from portraitforge.errors import PortraitForgeError
    from portraitforge.models.store import ModelStore
    from portraitforge.pipelines.stages import load_grader, load_mesh_analyzer

    config, store = RefineConfig(), ModelStore.from_dir(offline=True)
    try:
        mesh: FaceAnalyzer | None = load_mesh_analyzer(config, store, dlib)
    except PortraitForgeError:  # mesh files not set up: dlib alone still makes a usable identity
        mesh = None
    return mesh, load_grader(config, store, dlib)


def usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USAGE)


def _emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def _summary(record: IdentityRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "photos": len(record.photos),
        "kept": [p.file for p in record.photos if p.kept],
        "rejected": [{"file": p.file, "reasons": p.reasons} for p in record.rejected],
        "spaces": {s: {"model": r.model.name, "model_sha256": r.model.sha256} for s, r in record.spaces.items()},
        "reference": record.photos[record.reference.photo].file,
        "consent": record.consent is not None,
        "tensors_digest": record.tensors_digest,
    }


@identity_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="identity name (letters, digits, spaces, _-.'()+)")],
    images: Annotated[list[Path], typer.Argument(help="photos and/or folders of photos of one person")],
    note: Annotated[str | None, typer.Option("--note", help="free text stored with the identity")] = None,
    consent: Annotated[str | None, typer.Option("--consent", help="consent record (who agreed, to what, when)")] = None,
    consent_by: Annotated[str | None, typer.Option("--consent-by", help=CONSENT_BY_HELP)] = None,
    consent_scope: Annotated[str | None, typer.Option("--consent-scope", help=CONSENT_SCOPE_HELP)] = None,
    consent_until: Annotated[str | None, typer.Option("--consent-until", help=CONSENT_UNTIL_HELP)] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing identity of that name")] = False,
    append: Annotated[bool, typer.Option("--append", help="add these photos to an existing identity")] = False,
    arcface: Annotated[str, typer.Option("--arcface", help=ARCFACE_HELP)] = "auto",
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Register an identity from several photos: embeddings per photo, a robust centroid, a reference face."""
    with cli_errors():
        if replace and append:
            usage_error("use either --replace or --append")
        store = IdentityStore(store_dir)
        record = store.add(
            name,
            images,
            note=note,
            consent=consent,
            analyzers=load_analyzers(arcface, photos=len(list_images(images))),
            exist="replace" if replace else "append" if append else "error",
            consent_by=consent_by,
            consent_scope=consent_scope,
            consent_until=consent_until,
        )
        if as_json:
            _emit_json(_summary(record))
            return
        kept = len(record.kept)
        typer.echo(
            f"added '{record.name}': {kept} of {len(record.photos)} photo(s) kept, spaces: {', '.join(record.spaces)}, "
            f"reference: {record.photos[record.reference.photo].file}"
        )
        for p in record.rejected:
            typer.echo(f"  rejected {p.file}: {'; '.join(p.reasons)}")


@identity_app.command("list")
def list_cmd(
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the list as JSON")] = False,
) -> None:
    """List stored identities."""
    with cli_errors():
        items = IdentityStore(store_dir).list()
        if as_json:
            _emit_json([i.to_dict() for i in items])
            return
        if not items:
            typer.echo("no identities")
        for i in items:
            if i.error:
                typer.echo(f"{i.name}\tCORRUPTED: {i.error}")
            else:
                consent = "consent" if i.consent else "no consent"
                typer.echo(f"{i.name}\t{i.kept}/{i.photos} photos\t{','.join(i.spaces)}\t{consent}\t{i.updated}")


@identity_app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument()],
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full metadata as JSON")] = False,
) -> None:
    """Show an identity: photos (kept, rejected and why), quality, spaces and models, consent."""
    with cli_errors():
        meta = IdentityStore(store_dir).show(name)
        if as_json:
            _emit_json(meta)
            return
        typer.echo(f"identity: {meta['name']}")
        typer.echo(f"created: {meta['created']}  updated: {meta['updated']}")
        if meta.get("note"):
            typer.echo(f"note: {meta['note']}")
        typer.echo(f"consent: {_consent_line(meta.get('consent'))}")
        for space, s in meta["spaces"].items():
            sha = (s["model"]["sha256"] or "unknown")[:16]
            typer.echo(f"space {space}: {s['model']['name']} sha256 {sha}  threshold {s['threshold']}")
        ref = meta["reference"]["photo"]
        for p in meta["photos"]:
            mark = "kept" if p["kept"] else "REJECTED"
            dist = ", ".join(f"{k} {v:.3f}" for k, v in p["distances"].items() if v is not None)
            extra = "  reference" if p["index"] == ref else ""
            typer.echo(f"  [{p['index']}] {p['file']}  {mark}  quality {p['quality']:.2f}  dist {dist}{extra}")
            for reason in p["reasons"]:
                typer.echo(f"      {reason}")


def _consent_line(consent: dict[str, Any] | None) -> str:
    if not consent:
        return "none"
    parts = [f"{consent['text']} ({consent['recorded_at']})"]
    if consent.get("consented_by"):
        parts.append(f"by {consent['consented_by']}")
    parts.append(f"for {', '.join(consent['scope'])}" if consent.get("scope") else "for all uses")
    if consent.get("until"):
        expired = ConsentRecord.model_validate(consent).expired()
        parts.append(f"until {consent['until']}" + (" (EXPIRED)" if expired else ""))
    return "; ".join(parts)


@identity_app.command("rm")
def rm_cmd(
    name: Annotated[str, typer.Argument()],
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
) -> None:
    """Remove an identity."""
    with cli_errors():
        IdentityStore(store_dir).remove(name)
        typer.echo(f"removed '{name}'")


@identity_app.command("rename")
def rename_cmd(
    old: Annotated[str, typer.Argument()],
    new: Annotated[str, typer.Argument()],
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
) -> None:
    """Rename an identity."""
    with cli_errors():
        IdentityStore(store_dir).rename(old, new)
        typer.echo(f"renamed '{old}' to '{new}'")


@identity_app.command("export")
def export_cmd(
    name: Annotated[str, typer.Argument()],
    file: Annotated[Path, typer.Argument(help="output .safetensors file")],
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
) -> None:
    """Export one identity as a self-contained .safetensors file (metadata in its header)."""
    with cli_errors():
        out = IdentityStore(store_dir).export(name, file)
        typer.echo(f"exported '{name}' to {out}")


@identity_app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="a .safetensors file written by `identity export`")],
    name: Annotated[str | None, typer.Option("--name", help="store it under another name")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing identity of that name")] = False,
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
) -> None:
    """Import an exported identity; it is validated completely before anything is written."""
    with cli_errors():
        record = IdentityStore(store_dir).import_(file, name=name, replace=replace)
        typer.echo(f"imported '{record.name}' ({len(record.kept)} photos, spaces: {', '.join(record.spaces)})")


@identity_app.command("consent")
def consent_cmd(
    name: Annotated[str, typer.Argument()],
    text: Annotated[str | None, typer.Argument(help="consent record; omit with --withdraw")] = None,
    withdraw: Annotated[bool, typer.Option("--withdraw", help="remove the consent record")] = False,
    consent_by: Annotated[str | None, typer.Option("--consent-by", help=CONSENT_BY_HELP)] = None,
    consent_scope: Annotated[str | None, typer.Option("--consent-scope", help=CONSENT_SCOPE_HELP)] = None,
    consent_until: Annotated[str | None, typer.Option("--consent-until", help=CONSENT_UNTIL_HELP)] = None,
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
) -> None:
    """Record or withdraw consent for an identity (needed when consent is required)."""
    with cli_errors():
        if bool(text) == withdraw:
            usage_error("give TEXT or --withdraw")
        IdentityStore(store_dir).set_consent(
            name, None if withdraw else text, by=consent_by, scope=consent_scope, until=consent_until
        )
        typer.echo(f"consent {'withdrawn' if withdraw else 'recorded'} for '{name}'")


@identity_app.command("verify")
def verify_cmd(
    recompute: Annotated[
        bool, typer.Option("--recompute", help="re-embed stale identities from their stored crops")
    ] = False,
    arcface: Annotated[str, typer.Option("--arcface", help=ARCFACE_HELP)] = "auto",
    store_dir: Annotated[Path | None, typer.Option("--store", help=STORE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Check every identity's integrity and model version. Exit 3 if any is corrupted, 5 if any is stale."""
    with cli_errors():
        results = IdentityStore(store_dir).verify(load_analyzers(arcface), recompute=recompute)
        if as_json:
            _emit_json([r.to_dict() for r in results])
        else:
            if not results:
                typer.echo("no identities")
            for r in results:
                state = "ok" if r.ok else "STALE" if r.stale and not r.problems else "PROBLEM"
                state += " (recomputed)" if r.recomputed else ""
                typer.echo(f"{r.name}\t{state}")
                for msg in r.problems + r.stale:
                    typer.echo(f"  {msg}")
        if any(r.problems for r in results):
            raise typer.Exit(EXIT_CODES[Status.BAD_INPUT])
        if any(r.stale for r in results):
            raise typer.Exit(EXIT_CODES[Status.MODEL_UNAVAILABLE])


def register(app: typer.Typer) -> None:
    app.add_typer(identity_app, name="identity")
