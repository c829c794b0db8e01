"""Optimisers whose state lives on the device and whose update runs inside the training graph."""

from descent.optim.adagrad import Adagrad
from descent.optim.adam import Adam, AdamW
from descent.optim.clip import clip_by_global_norm, global_norm
from descent.optim.optimizer import Optimizer
from descent.optim.rmsprop import RMSprop
from descent.optim.schedule import CosineLR, ExponentialLR, LinearLR, MultiStepLR, StepLR
from descent.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "RMSprop", "CosineLR", "ExponentialLR", "LinearLR", "MultiStepLR",
           "Optimizer", "StepLR", "clip_by_global_norm", "global_norm"]
