"""Test hook: crash a batch run at an exact point, so kill-safety is tested where it matters, not by luck.

`PORTRAITFORGE_FAULT=kill-after-write:N` makes the driver SIGKILL itself right after it has made the N-th
output file of this run durable (counting from 1, outputs written by this process only) and before that
item's manifest row is committed: the one window in which a file exists for an item the manifest does not
call done. The next `batch run` must redo that item and end with every output exactly once.

The variable is read once, when a run starts, into a `FaultPlan` that the driver passes down; nothing else
reads it. It is a test hook, not a feature: unset (the normal case) it does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from portraitforge.errors import BadInputError

FAULT_VARIABLE = "PORTRAITFORGE_FAULT"


@dataclass(frozen=True)
class FaultPlan:
    kill_after_write: int | None = None  # SIGKILL after this many outputs were written, before the row commits

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultPlan:
        value = (os.environ if environ is None else environ).get(FAULT_VARIABLE, "").strip()
        if not value:
            return cls()
        kind, _, count = value.partition(":")
        if kind != "kill-after-write" or not count.isdigit() or int(count) < 1:
            raise BadInputError(f"{FAULT_VARIABLE}={value!r}: expected kill-after-write:N with N >= 1")
        return cls(kill_after_write=int(count))

    def after_write(self, written: int) -> None:
        """Called by the driver after the `written`-th output file is durable and before its row commits."""
        if self.kill_after_write is not None and written == self.kill_after_write:
            # SIGKILL, not an exception: no handler, `finally` or atexit may tidy up, as with the OOM killer.
            os.kill(os.getpid(), signal.SIGKILL)
