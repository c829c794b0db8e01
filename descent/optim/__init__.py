"""Optimisers whose state lives on the device and whose update runs inside the training graph."""

from descent.optim.adam import Adam, AdamW
from descent.optim.optimizer import Optimizer
from descent.optim.schedule import CosineLR, StepLR
from descent.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "CosineLR", "Optimizer", "StepLR"]
