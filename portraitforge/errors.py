"""Errors that carry a report status; the CLI turns them into one line and an exit code."""

from __future__ import annotations

from portraitforge.types import Status


class PortraitForgeError(Exception):
    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        # Keep messages on one line: they are printed verbatim by the CLI.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class BadInputError(PortraitForgeError):
    status = Status.BAD_INPUT


class NoFaceError(PortraitForgeError):
    status = Status.NO_FACE


class ModelUnavailableError(PortraitForgeError):
    status = Status.MODEL_UNAVAILABLE


class OutOfMemoryError(PortraitForgeError):
    status = Status.OUT_OF_MEMORY


class ParameterError(BadInputError):
    """An invalid option value: reported like a usage error (exit code 2)."""


class RunInterruptedError(PortraitForgeError):
    """Ctrl-C (or a stop request) ended a run; the message says what was kept (exit code 130)."""

    status = Status.INTERRUPTED
