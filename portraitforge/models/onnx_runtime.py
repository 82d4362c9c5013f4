"""ONNX Runtime execution: provider choice, thread settings and one session per model file.

`OnnxSessionPool` is an explicit object: build one per process (or worker) and pass it to every stage
that runs an ONNX model. There is deliberately no module-level session cache.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portraitforge.errors import ModelUnavailableError

# Preference when the caller does not choose: accelerators first, CPU always last as the fallback.
DEFAULT_PROVIDER_ORDER: tuple[str, ...] = (
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",  # DirectML (Windows)
    "CPUExecutionProvider",
)
PROVIDER_ALIASES: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def select_providers(preference: Sequence[str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """Providers to request, best first: `preference` (names or aliases like "cuda") filtered by what
    this onnxruntime build offers, with CPU appended as the fallback."""
    have = list(available) if available is not None else available_providers()
    wanted = [PROVIDER_ALIASES.get(p.lower(), p) for p in (preference or DEFAULT_PROVIDER_ORDER)]
    chosen = [p for p in dict.fromkeys(wanted) if p in have]
    if "CPUExecutionProvider" in have and "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    if not chosen:
        raise ModelUnavailableError(f"no usable ONNX Runtime provider (requested {wanted}, available {have})")
    return chosen


@dataclass(frozen=True)
class OnnxSettings:
    """How sessions are created. 0 threads lets onnxruntime decide (all physical cores)."""

    providers: tuple[str, ...] | None = None  # preference order; None = DEFAULT_PROVIDER_ORDER
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    device_id: int = 0
    graph_optimization: str = "all"  # "disable", "basic", "extended", "all"

    @classmethod
    def from_env(cls) -> OnnxSettings:
        """$PORTRAITFORGE_ORT_PROVIDERS (comma list) and $PORTRAITFORGE_ORT_THREADS."""
        providers = os.environ.get("PORTRAITFORGE_ORT_PROVIDERS")
        threads = int(os.environ.get("PORTRAITFORGE_ORT_THREADS", "0") or 0)
        return cls(
            providers=tuple(p.strip() for p in providers.split(",") if p.strip()) if providers else None,
            intra_op_threads=threads,
        )


@dataclass
class OnnxSessionPool:
    """One `InferenceSession` per model path, created on first use and shared by every stage using it."""

    settings: OnnxSettings = field(default_factory=OnnxSettings)
    _sessions: dict[Path, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def providers(self) -> list[str]:
        return select_providers(self.settings.providers)

    def session_options(self) -> Any:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = self.settings.intra_op_threads
        opts.inter_op_num_threads = self.settings.inter_op_threads
        levels = {
            "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        opts.graph_optimization_level = levels[self.settings.graph_optimization]
        opts.log_severity_level = 3  # errors only: unused-initializer warnings (inswapper's emap) are expected
        return opts

    def _provider_options(self, providers: list[str]) -> list[dict[str, Any]]:
        options: list[dict[str, Any]] = []
        for p in providers:
            if p in ("CUDAExecutionProvider", "DmlExecutionProvider"):
                options.append({"device_id": self.settings.device_id})
            else:
                options.append({})
        return options

    def get(self, model_path: str | os.PathLike[str]) -> Any:
        """The session for `model_path` (resolved), created once."""
        key = Path(model_path).resolve()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._create(key)
                self._sessions[key] = session
            return session

    def _create(self, path: Path) -> Any:
        import onnxruntime

        if not path.is_file():
            raise ModelUnavailableError(f"ONNX model file not found: {path}")
        providers = self.providers
        try:
            return onnxruntime.InferenceSession(
                str(path),
                sess_options=self.session_options(),
                providers=providers,
                provider_options=self._provider_options(providers),
            )
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
            first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ModelUnavailableError(f"cannot load ONNX model {path}: {first}") from None

    def loaded(self) -> list[Path]:
        return list(self._sessions)

    def close(self) -> None:
        """Drop every session (frees their memory once no stage holds them)."""
        with self._lock:
            self._sessions.clear()
