"""The one terminal progress mechanism: tqdm bars on stderr (stdout stays clean for --json and pipes).

CLI commands and the batch runner draw their bars with `progress_bar`; the models store reports byte counts
through `download_bars`. Library code takes callbacks instead and draws nothing; the UI keeps gr.Progress.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm  # plain: tqdm.auto warns inside notebooks without ipywidgets

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    unit: str,
    total: float | None = None,
    enabled: bool = True,
    **options: Any,
) -> tqdm[T]:
    """A tqdm bar on stderr, or a silent pass-through when not `enabled` (callers decide; usually a TTY)."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=not enabled, file=sys.stderr, **options)


class DownloadBars:
    """A `ModelStore.progress` callback `(label, done, total)`: one byte bar per file, closed when complete."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars: dict[str, tqdm[Any]] = {}

    def __call__(self, label: str, done: int, total: int | None) -> None:
        bar = self.bars.get(label)
        if bar is None:
            bar = progress_bar(desc=label, unit="B", total=total, enabled=self.enabled, unit_scale=True)
            self.bars[label] = bar
        bar.update(done - bar.n)  # the store reports running totals; tqdm counts increments
        if total is not None and done >= total:
            bar.close()
            del self.bars[label]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
