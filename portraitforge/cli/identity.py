"""`portraitforge identity ...`: manage the identity store (add, list, show, rm, rename, export, import, verify).

Exit codes as in the README: 3 bad input (unknown or invalid name, corrupted identity, photos of different
people, unreadable file, unwritable store), 4 no face in a photo, 5 model unavailable or stale.
A failed `add` leaves the store unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from portraitforge.cli.common import emit_json, group, writable_dir
from portraitforge.errors import BadInputError, ParameterError
from portraitforge.types import EXIT_CODES, Status

if TYPE_CHECKING:  # the store and dlib are imported when a command runs, so `--help` starts fast
    from portraitforge.embeddings_cache.store import IdentityRecord, IdentityStore
    from portraitforge.refiners.base import FaceAnalyzer

STORE_HELP = "Identity store folder."
STORE_DEFAULT = "$PORTRAITFORGE_HOME/embeddings_cache"
ARCFACE_HELP = "Also embed with ArcFace: auto (when its model is installed), on (required) or off."
JSON_HELP = "Print the result as JSON on stdout."
NAME_ARGUMENT = typer.Argument(help="Identity name.", metavar="NAME", show_default=False)
STORE_OPTION = typer.Option("--store", help=STORE_HELP, metavar="DIR", show_default=STORE_DEFAULT)
ARCFACE_OPTION = typer.Option("--arcface", help=ARCFACE_HELP, metavar="auto|on|off")
CONSENT_BY_OPTION = typer.Option(
    "--consent-by", help="Who gave the consent (the person shown, or their agent).", metavar="WHO"
)
CONSENT_SCOPE_OPTION = typer.Option(
    "--consent-scope",
    help="Uses the consent covers, comma-separated: swap,generate,batch,ui,api.",
    metavar="USES",
    show_default="all",
)
CONSENT_UNTIL_OPTION = typer.Option(
    "--consent-until", help="Last day the consent holds.", metavar="YYYY-MM-DD", show_default="no expiry"
)

app = group("identity", "Manage cached identities: register once from several photos, reuse everywhere.")


# Below this many photos dlib's own descriptor (~160 ms a photo) beats importing torch and loading its port
# (~4 s once, then ~20 ms a photo). Both give the same vectors (parity < 1e-5).
TORCH_DESCRIPTOR_MIN_PHOTOS = 24


def load_analyzers(arcface: str = "auto", photos: int | None = None) -> list[FaceAnalyzer]:
    """The analyzers a swap would use (stage registry: mesh + grader when their files are set up, else dlib), plus
    ArcFace (`arcface`: auto when its files are in the store, on requires it, off never). Nothing is downloaded."""
    from portraitforge.models.store import ModelStore
    from portraitforge.pipelines.stage_registry import identity_analyzers

    if arcface not in ("auto", "on", "off"):
        raise ParameterError("--arcface must be auto, on or off")
    descriptor = "dlib" if photos is not None and photos < TORCH_DESCRIPTOR_MIN_PHOTOS else "auto"
    return identity_analyzers(ModelStore.from_dir(offline=True), arcface=arcface, descriptor_backend=descriptor)


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


@app.command("add")
def add_cmd(
    name: Annotated[
        str,
        typer.Argument(help="Identity name (letters, digits, spaces, _-.'()+).", metavar="NAME", show_default=False),
    ],
    images: Annotated[
        list[Path],
        typer.Argument(help="Photos and/or folders of photos of one person.", metavar="PHOTO", show_default=False),
    ],
    note: Annotated[
        str | None, typer.Option("--note", help="Free text stored with the identity.", metavar="NOTE")
    ] = None,
    consent: Annotated[
        str | None,
        typer.Option("--consent", help="Consent record (who agreed, to what, when).", metavar="RECORD"),
    ] = None,
    consent_by: Annotated[str | None, CONSENT_BY_OPTION] = None,
    consent_scope: Annotated[str | None, CONSENT_SCOPE_OPTION] = None,
    consent_until: Annotated[str | None, CONSENT_UNTIL_OPTION] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing identity of that name.")] = False,
    append: Annotated[bool, typer.Option("--append", help="Add these photos to an existing identity.")] = False,
    arcface: Annotated[str, ARCFACE_OPTION] = "auto",
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Register an identity from several photos: embeddings per photo, a robust centroid, a reference face."""
    from portraitforge.imageio import list_images

    if replace and append:
        raise ParameterError("use either --replace or --append")
    for photo in images:  # a typo'd path fails now, not after the models loaded
        if not photo.exists():
            raise BadInputError(f"{photo}: file not found")
    files = list_images(images)
    store = _store(store_dir, writes=True)
    record = store.add(
        name,
        images,
        note=note,
        consent=consent,
        analyzers=load_analyzers(arcface, photos=len(files)),
        exist="replace" if replace else "append" if append else "error",
        consent_by=consent_by,
        consent_scope=consent_scope,
        consent_until=consent_until,
    )
    if as_json:
        emit_json(_summary(record))
        return
    kept = len(record.kept)
    typer.echo(
        f"added '{record.name}': {kept} of {len(record.photos)} photo(s) kept, spaces: {', '.join(record.spaces)}, "
        f"reference: {record.photos[record.reference.photo].file}"
    )
    for p in record.rejected:
        typer.echo(f"  rejected {p.file}: {'; '.join(p.reasons)}")


@app.command("list")
def list_cmd(
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
) -> None:
    """List stored identities."""
    items = _store(store_dir).list()
    if as_json:
        emit_json([i.to_dict() for i in items])
        return
    if not items:
        typer.echo("no identities")
    for i in items:
        if i.error:
            typer.echo(f"{i.name}\tCORRUPTED: {i.error}")
        else:
            consent = "consent" if i.consent else "no consent"
            typer.echo(f"{i.name}\t{i.kept}/{i.photos} photos\t{','.join(i.spaces)}\t{consent}\t{i.updated}")


@app.command("show")
def show_cmd(
    name: Annotated[str, NAME_ARGUMENT],
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full metadata as JSON on stdout.")] = False,
) -> None:
    """Show an identity: photos (kept, rejected and why), quality, spaces and models, consent."""
    meta = _store(store_dir).show(name)
    if as_json:
        emit_json(meta)
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


@app.command("rm")
def rm_cmd(name: Annotated[str, NAME_ARGUMENT], store_dir: Annotated[Path | None, STORE_OPTION] = None) -> None:
    """Remove an identity."""
    _store(store_dir).remove(name)
    typer.echo(f"removed '{name}'")


@app.command("rename")
def rename_cmd(
    old: Annotated[str, typer.Argument(help="Current name.", metavar="OLD", show_default=False)],
    new: Annotated[str, typer.Argument(help="New name.", metavar="NEW", show_default=False)],
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
) -> None:
    """Rename an identity."""
    _store(store_dir).rename(old, new)
    typer.echo(f"renamed '{old}' to '{new}'")


@app.command("export")
def export_cmd(
    name: Annotated[str, NAME_ARGUMENT],
    file: Annotated[Path, typer.Argument(help="Output .safetensors file.", metavar="FILE", show_default=False)],
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
) -> None:
    """Export one identity as a self-contained .safetensors file (metadata in its header)."""
    store = _store(store_dir)
    store.show(name)  # an unknown name fails before the output folder is made
    writable_dir(file.absolute().parent, "output folder")
    out = store.export(name, file)
    typer.echo(f"exported '{name}' to {out}")


@app.command("import")
def import_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="A .safetensors file written by `identity export`.", metavar="FILE", show_default=False),
    ],
    name: Annotated[str | None, typer.Option("--name", help="Store it under another name.", metavar="NAME")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing identity of that name.")] = False,
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
) -> None:
    """Import an exported identity; it is validated completely before anything is written."""
    if not file.is_file():
        raise BadInputError(f"{file}: file not found")
    record = _store(store_dir, writes=True).import_(file, name=name, replace=replace)
    typer.echo(f"imported '{record.name}' ({len(record.kept)} photos, spaces: {', '.join(record.spaces)})")


def _consent_line(consent: dict[str, Any] | None) -> str:
    from portraitforge.embeddings_cache.records import ConsentRecord

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


@app.command("consent")
def consent_cmd(
    name: Annotated[str, NAME_ARGUMENT],
    text: Annotated[
        str | None, typer.Argument(help="Consent record; omit with --withdraw.", metavar="RECORD", show_default=False)
    ] = None,
    withdraw: Annotated[bool, typer.Option("--withdraw", help="Remove the consent record.")] = False,
    consent_by: Annotated[str | None, CONSENT_BY_OPTION] = None,
    consent_scope: Annotated[str | None, CONSENT_SCOPE_OPTION] = None,
    consent_until: Annotated[str | None, CONSENT_UNTIL_OPTION] = None,
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
) -> None:
    """Record or withdraw consent for an identity (needed when consent is required)."""
    if bool(text) == withdraw:
        raise ParameterError("give RECORD or --withdraw")
    _store(store_dir).set_consent(
        name, None if withdraw else text, by=consent_by, scope=consent_scope, until=consent_until
    )
    typer.echo(f"consent {'withdrawn' if withdraw else 'recorded'} for '{name}'")


@app.command("verify")
def verify_cmd(
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Re-embed stale identities from their stored crops.")
    ] = False,
    arcface: Annotated[str, ARCFACE_OPTION] = "auto",
    store_dir: Annotated[Path | None, STORE_OPTION] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
) -> None:
    """Check every identity's integrity and model version. Exit 3 if any is corrupted, 5 if any is stale."""
    store = _store(store_dir)
    # An empty (or absent) store has nothing to check: no need to load the analyzers.
    results = store.verify(load_analyzers(arcface), recompute=recompute) if store.names() else []
    if as_json:
        emit_json([r.to_dict() for r in results])
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


def _store(store_dir: Path | None, writes: bool = False) -> IdentityStore:
    """The store; `writes` checks first that its folder can be written (before any model loads)."""
    from portraitforge.embeddings_cache.store import IdentityStore

    store = IdentityStore(store_dir)
    if writes:
        writable_dir(store.root, "identity store folder")
    return store
