"""Timing helpers shared by the benchmark cases."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], None], sync: Callable[[], None] = lambda: None, repeats: int = 5,
            min_time: float = 0.2) -> float:
    """Seconds per call: the best of `repeats` rounds, each calling `fn` until `min_time` passes and
    then `sync` (waits for the device), so queued work is counted and calls may overlap as in a loop."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            if time.perf_counter() - start >= min_time:
                break
        sync()
        best = min(best, (time.perf_counter() - start) / calls)
    return best
