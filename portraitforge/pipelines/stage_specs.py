"""The shapes behind the stage registries (`stage_registry.py`): what a stage needs from the model store
(`ModelNeed`), the typed descriptor of each stage kind, and `Registry`, the name -> descriptor map of one kind."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from portraitforge.errors import ModelUnavailableError, ParameterError
from portraitforge.models.registry import MESH_PACK

if TYPE_CHECKING:
    from portraitforge.config import RefineConfig
    from portraitforge.models.onnx_runtime import OnnxSessionPool
    from portraitforge.models.store import ModelStore
    from portraitforge.refiners.base import Blender, FaceAnalyzer, Swapper, Upscaler
    from portraitforge.refiners.detect_mesh import Detector
    from portraitforge.refiners.grade import IdentityGrader

StageKind = Literal["analyzer", "face_detector", "swapper", "upscaler", "blender", "grader", "restorer"]
UPSCALER_FILE = "file"  # the upscaler entry that stands for a path to a user's model file


# ---- model needs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelNeed:
    """One file a stage needs. `where`: a model-store entry (by its registry name), a user's file (by path) or an
    installed package that ships the weights. `fetch`: the store may download it when it is missing."""

    name: str
    where: Literal["store", "file", "package"] = "store"
    fetch: bool = False

    def present(self, models: ModelStore) -> bool:
        if self.where == "file":
            return Path(self.name).expanduser().is_file()
        if self.where == "package":
            return importlib.util.find_spec(self.name) is not None
        return models.check(self.name, hash_if_needed=False).state in ("ok", "unverified", "present")


NeedsFn = Callable[["RefineConfig", "ModelStore"], tuple[ModelNeed, ...]]


def present_in(models: ModelStore | None, name: str) -> bool:
    """A store file is there (no hashing: the builder verifies it when it loads it)."""
    return models is not None and ModelNeed(name).present(models)


def _no_models(config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
    return ()


def require_models(needs: Iterable[ModelNeed], models: ModelStore) -> None:
    """Fetch what may be fetched, then fail in one line (MODEL_UNAVAILABLE) naming every file still missing."""
    missing: list[ModelNeed] = []
    for need in dict.fromkeys(needs):  # in order, without repeats
        if need.present(models):
            continue
        if need.where == "store" and need.fetch and not models.offline:
            try:
                models.ensure(need.name)
                continue
            except ModelUnavailableError:
                pass
        missing.append(need)
    if missing:
        raise unavailable(missing, models)


def unavailable(missing: list[ModelNeed], models: ModelStore) -> ModelUnavailableError:
    """One line for one or several missing files, with what to run to get them."""
    why = "offline" if models.offline else "downloads disabled"
    files = [n for n in missing if n.where == "store"]
    if len(missing) == 1 and files:
        return models.unavailable(models.spec(files[0].name), f"missing, {why}")
    parts: list[str] = []
    if files:
        specs = [models.spec(n.name) for n in files]
        commands = dict.fromkeys(
            "portraitforge models setup" if s.pack == MESH_PACK else f"portraitforge models download {s.name}"
            for s in specs
        )
        parts.append(
            f"model files not available (missing, {why}): {', '.join(s.filename for s in specs)} in {models.root} "
            f"(run: {'; '.join(commands)}, or portraitforge models import DIR)"
        )
    parts += [f"upscaler model file not found: {n.name}" for n in missing if n.where == "file"]
    parts += [
        f"embedded weights need the '{n.name.replace('_', '-')}' package installed"
        for n in missing
        if n.where == "package"
    ]
    return ModelUnavailableError("; ".join(parts))


# ---- descriptors -------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """What every descriptor has: a name, a one-line summary (help text) and the model files it needs."""

    name: str
    summary: str
    needs: NeedsFn = field(default=_no_models, repr=False)
    # For an entry that stands for a pattern rather than a name (a path to a model file): which names it takes.
    pattern: Callable[[str], bool] | None = field(default=None, repr=False)

    @property
    def named(self) -> bool:
        return self.pattern is None

    def model_needs(self, config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
        return self.needs(config, models)

    def missing_models(self, config: RefineConfig, models: ModelStore) -> list[str]:
        """Names (store entries, paths or packages) of the files this stage needs under `config` that are absent.
        Never downloads or hashes."""
        return [n.name for n in self.model_needs(config, models) if not n.present(models)]


@dataclass(frozen=True, kw_only=True)
class AnalyzerSpec(StageSpec):
    build: Callable[[RefineConfig, ModelStore, OnnxSessionPool], FaceAnalyzer] = field(repr=False)

    def from_config(
        self, config: RefineConfig, models: ModelStore, pool: OnnxSessionPool | None = None
    ) -> FaceAnalyzer:
        from portraitforge.models.onnx_runtime import OnnxSessionPool

        return self.build(config, models, pool if pool is not None else OnnxSessionPool())


@dataclass(frozen=True, kw_only=True)
class DetectorSpec(StageSpec):
    build: Callable[[RefineConfig, ModelStore], Detector] = field(repr=False)

    def from_config(self, config: RefineConfig, models: ModelStore) -> Detector:
        return self.build(config, models)


SwapperBuild = Callable[["RefineConfig", "ModelStore", "OnnxSessionPool", "FaceAnalyzer", "Upscaler"], "Swapper"]


@dataclass(frozen=True, kw_only=True)
class SwapperSpec(StageSpec):
    """A swap engine, with the analyzers that can feed it (the first is what `analyzer: auto` picks) and the
    graders independent of it (the first is what `grader: auto` picks)."""

    analyzers: tuple[str, ...] = ()
    analyzer_need: str = ""  # what the engine needs from its analyzer, for the one-line refusal
    graders: tuple[str, ...] = ("mobilefacenet", "none")
    build: SwapperBuild = field(repr=False)

    def check_analyzer(self, analyzer: str) -> str | None:
        """None when `analyzer` can feed this engine, else the one-line reason."""
        if analyzer in self.analyzers:
            return None
        return f"the {self.name} swap engine needs {self.analyzer_need}: use analyzer {', '.join(self.analyzers)}"

    def from_config(
        self,
        config: RefineConfig,
        models: ModelStore,
        analyzer: FaceAnalyzer,
        upscaler: Upscaler,
        pool: OnnxSessionPool | None = None,
    ) -> Swapper:
        from portraitforge.models.onnx_runtime import OnnxSessionPool

        reason = self.check_analyzer(analyzer.name)
        if reason is not None:
            raise ParameterError(reason)
        return self.build(config, models, pool if pool is not None else OnnxSessionPool(), analyzer, upscaler)


@dataclass(frozen=True, kw_only=True)
class UpscalerSpec(StageSpec):
    """Built from a name (`upscaler` and `frame_upscaler` share this registry); `file` stands for a user's
    spandrel-loadable model file, given by its path."""

    build: Callable[[str], Upscaler] = field(repr=False)
    file_needs: Callable[[str], tuple[ModelNeed, ...]] = field(default=lambda name: (), repr=False)

    def _name(self, config: RefineConfig) -> str:
        return config.upscaler if self.name == UPSCALER_FILE else self.name

    def model_needs(self, config: RefineConfig, models: ModelStore) -> tuple[ModelNeed, ...]:
        return self.file_needs(self._name(config))

    def from_name(self, name: str) -> Upscaler:
        return self.build(name)

    def from_config(self, config: RefineConfig, models: ModelStore) -> Upscaler:
        return self.build(self._name(config))


@dataclass(frozen=True, kw_only=True)
class BlenderSpec(StageSpec):
    build: Callable[[RefineConfig], Blender] = field(repr=False)

    def from_config(self, config: RefineConfig, models: ModelStore) -> Blender:
        return self.build(config)


GraderBuild = Callable[["RefineConfig", "ModelStore", "FaceAnalyzer"], "IdentityGrader | None"]


@dataclass(frozen=True, kw_only=True)
class GraderSpec(StageSpec):
    build: GraderBuild = field(repr=False)

    def from_config(self, config: RefineConfig, models: ModelStore, analyzer: FaceAnalyzer) -> IdentityGrader | None:
        return self.build(config, models, analyzer)


@dataclass(frozen=True, kw_only=True)
class RestorerSpec(StageSpec):
    """Slot for face restorers (GFPGAN/CodeFormer style): they register here when they arrive."""

    build: Callable[[RefineConfig, ModelStore], Any] = field(repr=False)

    def from_config(self, config: RefineConfig, models: ModelStore) -> Any:
        return self.build(config, models)


SpecT = TypeVar("SpecT", bound=StageSpec)
AutoFn = Callable[["RefineConfig", "ModelStore | None"], str]


@dataclass(frozen=True)
class Registry(Generic[SpecT]):
    """Names of one stage kind. `field` is the RefineConfig field that picks one; `auto` resolves that field's
    `auto` (None: the kind has no auto) and `auto_doc` says what it means (see the module docstring)."""

    kind: StageKind
    field: str | None
    entries: Mapping[str, SpecT]
    auto: AutoFn | None = None
    auto_doc: str = ""

    def names(self) -> tuple[str, ...]:
        """The names a user can choose (not the entries that stand for a pattern)."""
        return tuple(name for name, spec in self.entries.items() if spec.named)

    def choices(self) -> tuple[str, ...]:
        """What the config accepts: the names, plus `auto` when the kind has one."""
        return (*self.names(), "auto") if self.auto is not None else self.names()

    def __iter__(self) -> Iterator[SpecT]:
        return iter(self.entries.values())

    def get(self, name: str) -> SpecT:
        """The entry called `name`, or the pattern entry that takes it (e.g. an upscaler file's path)."""
        spec = self.entries.get(name)
        if spec is not None and spec.named:
            return spec
        for spec in self:
            if spec.pattern is not None and spec.pattern(name):
                return spec
        patterns = "".join(f", or {spec.summary}" for spec in self if not spec.named)
        raise ParameterError(f"unknown {self.kind} '{name}' (choose {', '.join(self.choices())}{patterns})")

    def resolve_name(self, config: RefineConfig, models: ModelStore | None = None) -> str:
        """The name the config's field picks, `auto` resolved by this kind's one rule."""
        assert self.field is not None
        name = str(getattr(config, self.field))
        if name == "auto":
            if self.auto is None:
                raise ParameterError(f"{self.kind} has no 'auto' (choose {', '.join(self.names())})")
            return self.auto(config, models)
        return name

    def resolve(self, config: RefineConfig, models: ModelStore | None = None) -> SpecT:
        return self.get(self.resolve_name(config, models))

    def describe(self) -> str:
        text = "; ".join(
            (f"{spec.name} ({spec.summary})" if spec.summary else spec.name) if spec.named else f"or {spec.summary}"
            for spec in self
        )
        if self.auto is not None:
            text += f"; auto: {self.auto_doc}"
        return text
