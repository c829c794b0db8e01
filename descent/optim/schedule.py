"""Learning-rate schedules: functions of the epoch that the trainer writes to the device scalar."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class StepLR:
    """Multiply the rate by `gamma` every `step_size` epochs."""

    step_size: int
    gamma: float = 0.1

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        return initial * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class CosineLR:
    """Cosine decay from the initial rate to `minimum` over the run."""

    minimum: float = 0.0

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        return self.minimum + (initial - self.minimum) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
