"""Optimisers whose state lives on the device and whose update runs inside the training graph."""

from descent.optim.adam import Adam, AdamW
from descent.optim.clip import clip_by_global_norm, global_norm
from descent.optim.optimizer import Optimizer
from descent.optim.schedule import CosineLR, StepLR
from descent.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "CosineLR", "Optimizer", "StepLR", "clip_by_global_norm", "global_norm"]
