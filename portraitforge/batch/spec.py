"""Batch spec: a YAML file validated with pydantic, expanded into `BatchItem`s with content-hash ids.

Validation errors name the line and the field (`spec.yaml:12: refine.strength: ...`): the YAML is
composed once to keep every node's line, and pydantic's error locations are looked up in that map.

An item's id is the sha256 of its fully resolved parameters (prompt text, seed, identity and draft
*file contents*, model settings, the complete refiner config with defaults filled in, output format).
Paths never enter the hash, so the same spec gives the same ids on any machine and in any run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from portraitforge.atomic import file_sha256
from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, ParameterError
from portraitforge.imageio import IMAGE_SUFFIXES, OUTPUT_FORMATS

ID_VERSION = 1  # bump when the meaning of an id's inputs changes
MANIFEST_NAME = "manifest.sqlite"
_FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}


# --------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class SpecIssue:
    line: int | None  # 1-based line in the spec file
    field: str  # dotted path, e.g. "identities.1.image"
    message: str
    missing_file: bool = False  # a file or folder the spec names is not there (bad input, not a bad value)

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "spec"
        return f"{where}: {self.field}: {self.message}"


class SpecError(BadInputError):
    """A spec that fails validation. `issues` lists every problem; the message shows the first."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        first = issues[0]
        where = f"{source}:{first.line}" if first.line else source
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{where}: {first.field}: {first.message}{more}")


class SpecValueError(SpecError, ParameterError):
    """A spec that parses but holds an invalid value (out of range, unknown or missing field, bad template):
    a usage error (exit 2), like the same value given as a flag or in a --config preset. Unreadable specs and
    specs naming files that are not there stay `SpecError` (bad input, exit 3)."""


def _spec_error(source: str, issues: list[SpecIssue]) -> SpecError:
    """The error for `issues`; its class follows the first issue, the one its message shows."""
    return SpecError(source, issues) if issues[0].missing_file else SpecValueError(source, issues)


# --------------------------------------------------------------------------------------------- schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSpec(_Strict):
    dir: str = Field(description="output folder, relative to the spec file; the manifest lives here")
    naming: str | None = Field(None, description="file name template without extension, '/' makes folders")
    format: Literal["png", "jpg", "jpeg", "webp"] = "png"
    jpeg_quality: int = Field(95, ge=1, le=100)
    save_drafts: bool = Field(False, description="also keep the diffusion draft of every generated item")


class PromptSpec(_Strict):
    templates: list[str] = Field(min_length=1, description="python format strings: '{character}, {outfit}'")
    variables: dict[str, list[str | int | float]] = Field(default_factory=dict)
    negative: str = ""

    @field_validator("variables")
    @classmethod
    def _non_empty_lists(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, values in value.items():
            if not name.isidentifier():
                raise ValueError(f"variable name '{name}' must be an identifier")
            if not values:
                raise ValueError(f"variable '{name}' has no values")
        return value


class IdentitySpec(_Strict):
    name: str | None = Field(None, description="identity library name, or a label for an image identity")
    image: str | None = Field(None, description="a photo of the identity, relative to the spec file")

    @model_validator(mode="after")
    def _one_source(self) -> IdentitySpec:
        if self.name is None and self.image is None:
            raise ValueError("give 'name' (identity library) or 'image' (a photo)")
        return self

    @property
    def label(self) -> str:
        return self.name if self.name is not None else Path(str(self.image)).stem


class SeedRange(_Strict):
    start: int = Field(0, ge=0)
    count: int = Field(ge=1, le=1_000_000)


class ModelSpec(_Strict):
    source: str = Field(description="Hub id, local diffusers folder or single .safetensors file")
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str | None = None
    steps: int = Field(25, ge=1, le=1000)
    guidance: float = Field(7.0, ge=0.0, le=50.0)
    width: int = Field(512, ge=16, le=4096, multiple_of=8)
    height: int = Field(512, ge=16, le=4096, multiple_of=8)


class DraftsSpec(_Strict):
    folder: str = Field(description="folder of existing images to refine, relative to the spec file")
    pattern: str = Field("*", description="glob inside the folder, e.g. '*.png'")


class NoFacePolicy(_Strict):
    retries: int = Field(2, ge=0, le=50, description="try the next seed up to this many more times")
    on_exhausted: Literal["fail", "keep_draft"] = Field(
        "fail", description="fail the item, or save the unrefined draft and flag it NO_FACE"
    )


class BatchSpec(_Strict):
    """The whole batch. Exactly one of `model` (generate drafts) or `drafts` (refine-only) is given."""

    name: str = "batch"
    output: OutputSpec
    prompts: PromptSpec | None = None
    identities: list[IdentitySpec] = Field(min_length=1)
    identity_store: str | None = Field(None, description="identity library folder (default: portraitforge home)")
    require_consent: bool = Field(
        False, description="refuse identities without a consent that covers batch use (image identities too)"
    )
    seeds: list[int] | SeedRange | None = None
    model: ModelSpec | None = None
    drafts: DraftsSpec | None = None
    refine: RefineConfig = Field(default_factory=RefineConfig)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="grid over refine fields")
    no_face: NoFacePolicy = Field(default_factory=NoFacePolicy)
    keep: int | None = Field(
        None,
        ge=1,
        description="best-of-N: per identity x prompt (x sweep point) the seeds are the candidates (in refine mode"
        " the drafts); the K the grader ranks highest are marked kept in the manifest and shown first in review",
    )

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int] | SeedRange | None) -> list[int] | SeedRange | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("seed list is empty")
            if any(s < 0 for s in value):
                raise ValueError("seeds must be >= 0")
            if len(set(value)) != len(value):
                raise ValueError("seed list has duplicates")
        return value

    @field_validator("identities")
    @classmethod
    def _unique_labels(cls, value: list[IdentitySpec]) -> list[IdentitySpec]:
        labels = [i.label for i in value]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"identity label used twice: {', '.join(dupes)} (set distinct 'name's)")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep_fields(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if key not in RefineConfig.model_fields:
                raise ValueError(f"'{key}' is not a refine setting")
            if not values:
                raise ValueError(f"sweep '{key}' has no values")
            for v in values:
                RefineConfig.validated({key: v}, source=f"sweep.{key}")
        return value

    @model_validator(mode="after")
    def _mode(self) -> BatchSpec:
        if (self.model is None) == (self.drafts is None):
            raise ValueError("give exactly one of 'model' (generate drafts) or 'drafts' (refine existing images)")
        if self.model is not None:
            if self.prompts is None:
                raise ValueError("'prompts' is required with 'model'")
            if self.seeds is None:
                raise ValueError("'seeds' is required with 'model'")
            if self.keep is not None and self.keep > len(self.seed_list()):
                raise ValueError(f"keep {self.keep} is more than the {len(self.seed_list())} seeds (the candidates)")
        else:
            if self.prompts is not None:
                raise ValueError("'prompts' only applies with 'model' (drafts come from the folder)")
            if self.seeds is not None:
                raise ValueError("'seeds' only applies with 'model' (drafts come from the folder)")
        return self

    @property
    def mode(self) -> Literal["generate", "refine"]:
        return "generate" if self.model is not None else "refine"

    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, SeedRange):
            return list(range(self.seeds.start, self.seeds.start + self.seeds.count))
        return list(self.seeds or [])


# ------------------------------------------------------------------------------------ line map / load


def _line_map(node: yaml.Node, path: tuple[str | int, ...] = (), out: dict[tuple[str | int, ...], int] | None = None):
    """Every YAML node's 1-based line, keyed by its path of mapping keys and list indices."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            _line_map(value_node, child, out)
            # Keys with a scalar value sit on the key's line; nested blocks start on the next one.
            out[child] = key_node.start_mark.line + 1
            out[(*child, "__value__")] = value_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)
    return out


def _lookup_line(lines: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """Longest known prefix of `loc` (pydantic adds union-branch names such as 'list[int]')."""
    clean = tuple(p for p in loc if isinstance(p, int) or "[" not in str(p))
    for n in range(len(clean), -1, -1):
        if clean[:n] in lines:
            return lines[clean[:n]]
    return None


def _field_name(loc: tuple[str | int, ...]) -> str:
    parts = [str(p) for p in loc if isinstance(p, int) or "[" not in str(p)]
    return ".".join(parts) or "spec"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus where it came from (relative paths resolve against `base_dir`)."""

    spec: BatchSpec
    path: Path
    lines: dict[tuple[str | int, ...], int] = field(repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.spec.output.dir)

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / MANIFEST_NAME

    def line_of(self, *loc: str | int) -> int | None:
        return _lookup_line(self.lines, loc)

    def store_dir(self) -> Path | None:
        return self.resolve(self.spec.identity_store) if self.spec.identity_store else None


def load_spec(path: str | Path) -> LoadedSpec:
    p = Path(path).resolve()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read spec ({exc})") from None
    return parse_spec(text, p)


def parse_spec(text: str, path: Path) -> LoadedSpec:
    source = str(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(source, [SpecIssue(line, "yaml", str(exc.problem or exc).strip())]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [SpecIssue(None, "yaml", str(exc).splitlines()[0])]) from None
    if node is None or not isinstance(data, dict):
        raise SpecError(source, [SpecIssue(1, "spec", "a batch spec must be a mapping (name, output, ...)")])
    lines = _line_map(node)
    try:
        spec = BatchSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                message = "required field is missing"
            issues.append(SpecIssue(_lookup_line(lines, loc), _field_name(loc), message))
        raise SpecValueError(source, issues) from None
    loaded = LoadedSpec(spec=spec, path=path, lines=lines)
    _check_references(loaded)
    return loaded


# ------------------------------------------------------------------------------ semantic checks


def _template_fields(template: str) -> list[str]:
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name.isidentifier():
                raise ValueError(f"placeholder '{{{name}}}' must be a plain name")
            if name not in names:
                names.append(name)
    return names


def naming_fields(spec: BatchSpec) -> set[str]:
    base = {"id", "id8", "identity", "name"} | set(spec.sweep)
    if spec.mode == "generate":
        assert spec.prompts is not None
        return base | {"prompt_index", "seed"} | set(spec.prompts.variables)
    return base | {"draft", "draft_index"}


def default_naming(spec: BatchSpec) -> str:
    if spec.mode == "generate":
        return "{identity}/p{prompt_index:02d}_s{seed}_{id8}"
    return "{identity}/{draft}_{id8}"


def _check_references(loaded: LoadedSpec) -> None:
    """Things pydantic cannot see: undefined template variables, missing files, bad name templates."""
    spec, issues = loaded.spec, []
    if spec.prompts is not None:
        for i, template in enumerate(spec.prompts.templates):
            try:
                used = _template_fields(template)
            except ValueError as exc:
                issues.append(SpecIssue(loaded.line_of("prompts", "templates", i), f"prompts.templates.{i}", str(exc)))
                continue
            missing = [n for n in used if n not in spec.prompts.variables]
            if missing:
                issues.append(
                    SpecIssue(
                        loaded.line_of("prompts", "templates", i),
                        f"prompts.templates.{i}",
                        f"variable(s) {', '.join(missing)} not defined in prompts.variables",
                    )
                )
    for i, ident in enumerate(spec.identities):
        if ident.image is not None:
            p = loaded.resolve(ident.image)
            if not p.is_file():
                issues.append(
                    SpecIssue(
                        loaded.line_of("identities", i, "image"), f"identities.{i}.image", f"{p}: not found", True
                    )
                )
    if spec.drafts is not None:
        folder = loaded.resolve(spec.drafts.folder)
        if not folder.is_dir():
            issues.append(
                SpecIssue(loaded.line_of("drafts", "folder"), "drafts.folder", f"{folder}: not a folder", True)
            )
        elif not draft_files(loaded):
            issues.append(
                SpecIssue(
                    loaded.line_of("drafts", "pattern"),
                    "drafts",
                    f"no images match {spec.drafts.pattern} in {folder}",
                    True,
                )
            )
        elif spec.keep is not None and spec.keep > len(draft_files(loaded)):
            n = len(draft_files(loaded))
            issues.append(
                SpecIssue(
                    loaded.line_of("keep"), "keep", f"keep {spec.keep} is more than the {n} drafts (the candidates)"
                )
            )
    naming = spec.output.naming or default_naming(spec)
    try:
        fields = _template_fields(naming)
        unknown = [f for f in fields if f not in naming_fields(spec)]
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join(unknown)}; use {', '.join(sorted(naming_fields(spec)))}"
            )
        if naming.startswith("/") or ".." in Path(naming).parts:
            raise ValueError("names must stay inside the output folder")
    except ValueError as exc:
        issues.append(SpecIssue(loaded.line_of("output", "naming"), "output.naming", str(exc)))
    if issues:
        raise _spec_error(str(loaded.path), issues)


def draft_files(loaded: LoadedSpec) -> list[Path]:
    assert loaded.spec.drafts is not None
    folder = loaded.resolve(loaded.spec.drafts.folder)
    return sorted(
        p for p in folder.glob(loaded.spec.drafts.pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


# ------------------------------------------------------------------------------------------ expansion


@dataclass(frozen=True)
class IdentityRef:
    """How a worker gets the identity: from the store by name, or from a photo (path is local only)."""

    label: str
    store_name: str | None
    image_path: str | None
    image_sha256: str | None

    def key(self) -> dict[str, Any]:
        if self.store_name is not None and self.image_path is None:
            return {"store": self.store_name}
        return {"image_sha256": self.image_sha256}


@dataclass(frozen=True)
class BatchItem:
    """One output image: every parameter resolved. `params` is exactly what the id hashes."""

    id: str
    seq: int
    identity: IdentityRef
    params: dict[str, Any]
    output_relpath: str
    labels: dict[str, Any]  # prompt variables / draft name / sweep values, for review sheets
    seed: int | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    draft_path: str | None = None
    group: str | None = None  # best-of-N: items with the same group are one identity x prompt's candidates

    @property
    def id8(self) -> str:
        return self.id[:8]


def item_id(params: dict[str, Any]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _identity_refs(loaded: LoadedSpec) -> list[IdentityRef]:
    refs = []
    for ident in loaded.spec.identities:
        if ident.image is not None:
            p = loaded.resolve(ident.image)
            refs.append(IdentityRef(ident.label, None, str(p), file_sha256(p)))
        else:
            refs.append(IdentityRef(ident.label, ident.name, None, None))
    return refs


def _sweep_points(spec: BatchSpec) -> Iterator[dict[str, Any]]:
    keys = sorted(spec.sweep)
    for values in itertools.product(*(spec.sweep[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def _prompt_points(prompts: PromptSpec) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(template index, resolved text, variables used) - only variables a template uses multiply it."""
    for t_index, template in enumerate(prompts.templates):
        names = _template_fields(template)
        for values in itertools.product(*(prompts.variables[n] for n in names)):
            variables = dict(zip(names, values, strict=True))
            yield t_index, template.format(**variables), variables


def expand(loaded: LoadedSpec) -> list[BatchItem]:
    """All items of a spec in a stable order. Identical resolved parameters collapse into one item."""
    spec = loaded.spec
    refs = _identity_refs(loaded)
    fmt = spec.output.format
    output_params: dict[str, Any] = {"format": _FORMAT_SUFFIX[fmt].lstrip(".")}
    if fmt in ("jpg", "jpeg", "webp"):
        output_params["quality"] = spec.output.jpeg_quality
    naming = spec.output.naming or default_naming(spec)
    suffix = _FORMAT_SUFFIX[fmt]
    assert suffix in OUTPUT_FORMATS

    points: list[tuple[IdentityRef, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    # Each point: identity, params without refine/identity, naming fields, labels.
    if spec.mode == "generate":
        assert spec.model is not None and spec.prompts is not None
        model = spec.model.model_dump(exclude={"device", "dtype"})  # device/dtype do not change intent
        prompt_list = list(_prompt_points(spec.prompts))
        prompt_index = {text: i for i, (_, text, _) in enumerate(prompt_list)}
        for ref in refs:
            for _, text, variables in prompt_list:
                for seed in spec.seed_list():
                    base: dict[str, Any] = {
                        "mode": "generate",
                        "prompt": text,
                        "negative_prompt": spec.prompts.negative,
                        "seed": seed,
                        "model": model,
                    }
                    names = {"prompt_index": prompt_index[text], "seed": seed, **variables}
                    points.append((ref, base, names, {**variables, "seed": seed}))
    else:
        for d_index, draft in enumerate(draft_files(loaded)):
            for ref in refs:
                base = {"mode": "refine", "draft_sha256": file_sha256(draft)}
                names = {"draft": draft.stem, "draft_index": d_index}
                points.append((ref, base, names, {"draft": draft.name, "_path": str(draft)}))
        points.sort(key=lambda p: (refs.index(p[0]), p[2]["draft_index"]))

    items: list[BatchItem] = []
    seen: set[str] = set()
    paths: dict[str, str] = {}
    for ref, base, names, labels in points:
        for sweep in _sweep_points(spec):  # one empty point without a sweep
            refine = RefineConfig.validated({**spec.refine.model_dump(), **sweep}).model_dump()
            params = {
                "v": ID_VERSION,
                **base,
                "identity": ref.key(),
                "refine": refine,
                "no_face": spec.no_face.model_dump(),
                "output": output_params,
            }
            iid = item_id(params)
            if iid in seen:
                continue
            seen.add(iid)
            fields = {"id": iid, "id8": iid[:8], "identity": ref.label, "name": spec.name, **names, **sweep}
            rel = naming.format(**fields) + suffix
            if rel in paths:
                raise SpecValueError(
                    str(loaded.path),
                    [
                        SpecIssue(
                            loaded.line_of("output", "naming"),
                            "output.naming",
                            f"two items map to {rel}; add {{id8}} or {{seed}} to the template",
                        )
                    ],
                )
            paths[rel] = iid
            group = None
            if spec.keep is not None:
                # The candidates of a group differ only in the seed (or draft): hash everything else.
                group = item_id({k: v for k, v in params.items() if k not in ("seed", "draft_sha256")})[:16]
            public_labels = {k: v for k, v in labels.items() if not k.startswith("_")}
            items.append(
                BatchItem(
                    id=iid,
                    seq=len(items),
                    identity=ref,
                    params=params,
                    output_relpath=rel,
                    labels={**public_labels, **sweep},
                    seed=base.get("seed"),
                    prompt=base.get("prompt"),
                    negative_prompt=base.get("negative_prompt"),
                    draft_path=labels.get("_path"),
                    group=group,
                )
            )
    return items


def plan_summary(loaded: LoadedSpec, items: list[BatchItem], examples: int = 3) -> dict[str, Any]:
    spec = loaded.spec
    axes: dict[str, int] = {"identities": len(spec.identities)}
    if spec.mode == "generate":
        assert spec.prompts is not None
        axes["prompts"] = sum(1 for _ in _prompt_points(spec.prompts))
        axes["seeds"] = len(spec.seed_list())
    else:
        axes["drafts"] = len(draft_files(loaded))
    for key, values in spec.sweep.items():
        axes[f"sweep.{key}"] = len(values)
    return {
        "spec": str(loaded.path),
        "mode": spec.mode,
        "items": len(items),
        "axes": axes,
        "output_dir": str(loaded.output_dir),
        "manifest": str(loaded.manifest_path),
        "examples": [
            {
                "id": it.id,
                "identity": it.identity.label,
                "output": it.output_relpath,
                **({"prompt": it.prompt, "seed": it.seed} if it.prompt is not None else {"draft": it.labels["draft"]}),
            }
            for it in items[:examples]
        ],
    }
