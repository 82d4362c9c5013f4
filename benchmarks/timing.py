"""The one timing helper the benchmarks share (they run as scripts from this folder: `from timing import ...`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(fn: Callable[[], object], repeats: int = 5, warmup: bool = True) -> float:
    """Median wall time of `fn` in milliseconds over `repeats` calls, after one untimed call unless `warmup=False`."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
