"""Learning-rate schedules: functions of the epoch that the trainer writes to the device scalar."""

from __future__ import annotations

import math
from dataclasses import dataclass

from descent.arguments import natural, real
from descent.errors import at_user_line


@dataclass(frozen=True)
class StepLR:
    """Multiply the rate by `gamma` every `step_size` epochs."""

    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        natural("StepLR", "step_size", self.step_size, 1)
        real("StepLR", "gamma", self.gamma, 0.0)

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        return initial * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class CosineLR:
    """Cosine decay from the initial rate to `minimum` over `period` epochs (PyTorch's T_max; by default
    the epochs `fit` is given, so a run split into several fit calls needs it set)."""

    minimum: float = 0.0
    period: int | None = None

    def __post_init__(self) -> None:
        real("CosineLR", "minimum", self.minimum, 0.0)
        if self.period is not None:
            natural("CosineLR", "period", self.period, least=1)

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        period = max(epochs, 1) if self.period is None else self.period
        return self.minimum + (initial - self.minimum) * 0.5 * (1 + math.cos(math.pi * epoch / period))


@dataclass(frozen=True)
class ExponentialLR:
    """Multiply the rate by `gamma` every epoch."""

    gamma: float

    def __post_init__(self) -> None:
        real("ExponentialLR", "gamma", self.gamma, 0.0)

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        return initial * self.gamma**epoch


@dataclass(frozen=True)
class MultiStepLR:
    """Multiply the rate by `gamma` at each of the `milestones` (epochs)."""

    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not hasattr(self.milestones, "__iter__"):
            raise ValueError(at_user_line(f"MultiStepLR: milestones must be epochs, got {self.milestones!r}"))
        object.__setattr__(self, "milestones", tuple(natural("MultiStepLR", "each milestone", m, 0)
                                                     for m in self.milestones))
        real("MultiStepLR", "gamma", self.gamma, 0.0)

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        return initial * self.gamma ** sum(epoch >= milestone for milestone in self.milestones)


@dataclass(frozen=True)
class LinearLR:
    """Scale the rate by a factor going linearly from `start_factor` to `end_factor` over the first
    `total_iters` epochs, then staying there (a warm-up with the defaults, as PyTorch's)."""

    start_factor: float = 1.0 / 3.0
    end_factor: float = 1.0
    total_iters: int = 5

    def __post_init__(self) -> None:
        start = real("LinearLR", "start_factor", self.start_factor, 0.0)
        end = real("LinearLR", "end_factor", self.end_factor, 0.0)
        if not 0 < start <= 1 or not end <= 1:
            raise ValueError(at_user_line(f"LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], "
                                          f"got {self.start_factor}, {self.end_factor}"))
        natural("LinearLR", "total_iters", self.total_iters, 1)

    def __call__(self, initial: float, epoch: int, epochs: int) -> float:
        progress = min(epoch, self.total_iters) / self.total_iters
        return initial * (self.start_factor + (self.end_factor - self.start_factor) * progress)
