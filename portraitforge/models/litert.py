"""TFLite models (MediaPipe mesh/detectors, face parser, MobileFaceNet) on Google's `ai-edge-litert` runtime.

One small typed wrapper so every stage calls a model the same way: `run({input_index: array}) -> outputs`.
An interpreter is not thread-safe; each stage owns its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from portraitforge.errors import ModelUnavailableError


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 meanwhile (TFLite's "INFO: Created TensorFlow Lite
    XNNPACK delegate" line, OpenCV's DNN warnings): the CLI promises one line on stderr per problem."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. some notebook kernels): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _threads() -> int:
    # Two cores here; more threads than cores only adds contention in XNNPACK.
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class LiteModel:
    """A loaded `.tflite` file with fixed input/output details."""

    path: Path
    interpreter: Any = field(repr=False)
    inputs: list[dict[str, Any]] = field(repr=False)
    outputs: list[dict[str, Any]] = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], num_threads: int | None = None) -> LiteModel:
        p = Path(path)
        if not p.is_file():
            raise ModelUnavailableError(f"model file not found: {p}")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - declared dependency
            raise ModelUnavailableError("ai-edge-litert is not installed (pip install ai-edge-litert)") from None
        try:
            with quiet_native_stderr():
                interpreter = Interpreter(model_path=str(p), num_threads=num_threads or _threads())
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelUnavailableError(f"{p.name}: not a loadable TFLite model ({exc})") from None
        return cls(
            path=p,
            interpreter=interpreter,
            inputs=interpreter.get_input_details(),
            outputs=interpreter.get_output_details(),
        )

    def input_shape(self, index: int = 0) -> tuple[int, ...]:
        return tuple(int(v) for v in self.inputs[index]["shape"])

    def square_input_side(self, channels: int) -> int:
        """S of a [1,S,S,channels] input (the segmentation models' layout), else ModelUnavailableError."""
        shape = self.input_shape()
        if len(shape) != 4 or shape[0] != 1 or shape[3] != channels or shape[1] != shape[2]:
            raise ModelUnavailableError(f"{self.path.name}: expected a [1,S,S,{channels}] input, got {list(shape)}")
        return shape[1]

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Feed inputs in declaration order; return every output (copied out of the interpreter)."""
        for detail, array in zip(self.inputs, arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        self.interpreter.invoke()
        return [np.array(self.interpreter.get_tensor(d["index"])) for d in self.outputs]
