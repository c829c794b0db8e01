"""Timing helpers shared by the benchmark cases."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], None], repeats: int = 5, min_time: float = 0.2) -> float:
    """Seconds per call: the best of `repeats` rounds, each running `fn` until `min_time` passes."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = min(best, elapsed / calls)
    return best
