"""Per-app state of the web UI: loaded models, the identity store, where outputs and logs go.

Nothing here is module-level: each `build_app()` gets its own `UIState`, created empty (models load on the first
request). Gradio runs handlers in worker threads; one lock serialises model use (the CPU is the bottleneck anyway).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from portraitforge.config import RefineConfig
from portraitforge.errors import BadInputError, PortraitForgeError
from portraitforge.paths import default_log_path, home_dir
from portraitforge.types import Identity, ImageRGB

if TYPE_CHECKING:  # torch/diffusers/model code is imported on the first request
    from portraitforge.embeddings_cache.store import IdentityStore
    from portraitforge.pipelines.portrait import PortraitPipeline
    from portraitforge.pipelines.refine import RefinePipeline
    from portraitforge.refiners.base import FaceAnalyzer

PipelineFactory = Callable[[RefineConfig], "RefinePipeline"]
PortraitFactory = Callable[[str, "RefinePipeline"], "PortraitPipeline"]
# An upload as the handlers receive it: a file path (gradio), an RGB array (Python callers) or nothing.
ImageInput = ImageRGB | str | Path | None
IDENTITY_CACHE_SIZE = 8


def _default_pipeline_factory(config: RefineConfig) -> RefinePipeline:
    from portraitforge.pipelines.refine import RefinePipeline

    return RefinePipeline.from_config(config)


def _default_portrait_factory(source: str, refiner: RefinePipeline) -> PortraitPipeline:
    from portraitforge.pipelines.portrait import PortraitPipeline

    return PortraitPipeline.from_pretrained(source, refiner=refiner)


class UIState:
    """Models and caches of one app instance.

    `output_dir` receives every result (default `$PORTRAITFORGE_HOME/outputs/ui`), `log_path` the runs log
    (default: the CLI's `runs.jsonl`), `require_consent` refuses identities without a consent record,
    `nsfw_policy` (refuse, blur or flag; None: off) puts every run of this server through the NSFW gate.
    """

    def server_policy(self) -> dict[str, Any]:
        """Settings the server imposes on every run, whatever the page sends (the NSFW gate)."""
        return {} if self.nsfw_policy is None else {"nsfw_check": True, "nsfw_policy": self.nsfw_policy}

    def __init__(
        self,
        pipeline_factory: PipelineFactory | None = None,
        store_dir: str | Path | None = None,
        portrait_factory: PortraitFactory | None = None,
        *,
        output_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        require_consent: bool = False,
        nsfw_policy: str | None = None,
    ) -> None:
        self.pipeline_factory = pipeline_factory or _default_pipeline_factory
        self.portrait_factory = portrait_factory or _default_portrait_factory
        self.store_dir = store_dir
        self.require_consent = require_consent
        if nsfw_policy not in (None, "refuse", "blur", "flag"):
            raise BadInputError(f"unknown NSFW policy '{nsfw_policy}' (use refuse, blur or flag)")
        self.nsfw_policy = nsfw_policy
        self._output_dir = Path(output_dir) if output_dir is not None else None
        self._log_path = Path(log_path) if log_path is not None else None
        self.lock = threading.RLock()
        # Arrays handed to the handlers become PNG files here, so every run goes through the CLI's file path.
        self._scratch = tempfile.TemporaryDirectory(prefix="portraitforge-ui-")
        self._bases: dict[tuple[str, int], RefinePipeline] = {}
        self._configured: tuple[RefineConfig, RefinePipeline] | None = None
        self._identities: OrderedDict[tuple[str, str, str], Identity] = OrderedDict()
        self._store: IdentityStore | None = None
        self._portrait: tuple[str, PortraitPipeline] | None = None

    # ---- places

    @property
    def output_dir(self) -> Path:
        folder = self._output_dir or home_dir() / "outputs" / "ui"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def log_path(self) -> Path:
        return self._log_path or default_log_path()

    @property
    def scratch_dir(self) -> Path:
        return Path(self._scratch.name)

    def new_output(self, stem: str, suffix: str) -> Path:
        """A fresh file name in the output folder: `<time>-<stem>.<suffix>` (never overwrites)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40] or "image"
        base = f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}"
        for k in range(1000):
            path = self.output_dir / f"{base}{'' if k == 0 else f'-{k}'}.{suffix}"
            if not path.exists():
                return path
        raise BadInputError("too many outputs with the same name in one second")

    def as_file(self, image: Any, what: str) -> Path:
        """An upload as a file path: gradio's file as is, an array or PIL image saved as PNG (by pixel digest)."""
        if isinstance(image, (str, Path)):
            return Path(image)
        from PIL import Image

        from portraitforge.imageio import pil_to_rgb, save_image

        if isinstance(image, Image.Image):
            image = pil_to_rgb(image)[0]
        if not isinstance(image, np.ndarray):
            raise BadInputError(f"{what}: unsupported value of type {type(image).__name__}")
        if image.dtype != np.uint8:
            raise BadInputError(f"{what}: expected 8-bit pixels, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise BadInputError(f"{what}: expected an image of height x width x 3, got shape {image.shape}")
        image = np.ascontiguousarray(image[..., :3])
        digest = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]
        path = self.scratch_dir / f"{what.replace(' ', '-')}-{digest}.png"
        if not path.exists():
            save_image(path, image)
        return path

    # ---- refine pipeline

    @property
    def loaded(self) -> bool:
        return bool(self._bases)

    def pipeline(self, config: RefineConfig) -> RefinePipeline:
        """Built once per (analyzer, detection size): models load here; new parameters reuse it (`with_config`)."""
        with self.lock:
            if self._configured is not None and self._configured[0] == config:
                return self._configured[1]
            key = (config.resolved_analyzer, config.detect_max_side)
            base = self._bases.get(key)
            if base is None:
                pipe = self.pipeline_factory(config)
                self._bases[key] = pipe
            else:
                pipe = base if base.config == config else base.with_config(config)
            self._configured = (config, pipe)
            return pipe

    def identity_analyzers(self) -> list[FaceAnalyzer]:
        """What a new stored identity is embedded with: the default swap's analyzer and grader, as the CLI."""
        pipe = self.pipeline(RefineConfig())
        return [pipe.analyzer, *([] if pipe.grader is None else [pipe.grader])]

    # ---- identities

    def store(self) -> IdentityStore:
        with self.lock:
            if self._store is None:
                from portraitforge.embeddings_cache.store import IdentityStore

                self._store = IdentityStore(self.store_dir, require_consent=self.require_consent, purpose="ui")
            return self._store

    def identity_names(self) -> list[str]:
        try:
            return self.store().names()
        except (OSError, PortraitForgeError):
            return []

    def identity_from_photo(self, pipe: RefinePipeline, photo: Path, max_pixels: int) -> Identity:
        """An identity built from an uploaded photo, cached by pixel digest (moving a slider does not re-embed)."""
        from portraitforge.imageio import load_image

        rgb = load_image(photo, max_pixels=max_pixels).rgb
        label = photo.stem
        digest = hashlib.sha256(rgb.tobytes() + str(rgb.shape).encode()).hexdigest()
        key = (digest, pipe.analyzer.embedding_space, str(getattr(pipe.analyzer, "name", "")))
        with self.lock:
            cached = self._identities.get(key)
            if cached is not None:
                self._identities.move_to_end(key)
                return cached if cached.name == label else replace(cached, name=label)
        from portraitforge.embeddings_cache.identity import identity_from_image

        identity = identity_from_image(pipe.analyzer, rgb, name=label, source=photo.name)
        with self.lock:
            self._identities[key] = identity
            while len(self._identities) > IDENTITY_CACHE_SIZE:
                self._identities.popitem(last=False)
        return identity

    # ---- generation

    def portrait(self, source: str, refiner: RefinePipeline) -> PortraitPipeline:
        """One text-to-image model at a time (they are large); the refiner is swapped in per call."""
        with self.lock:
            if self._portrait is None or self._portrait[0] != source:
                self._portrait = None  # drop the old model before loading the new one
                self._portrait = (source, self.portrait_factory(source, refiner))
            return replace(self._portrait[1], refiner=refiner)
