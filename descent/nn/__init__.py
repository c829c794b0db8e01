"""Modules, the trainer and checkpoints: the layer most users touch."""

from descent.nn.activations import GELU, LeakyReLU, ReLU, Sigmoid, Sin, Softplus, Tanh, gelu, softplus
from descent.nn.checkpoint import CheckpointError
from descent.nn.layers import (
    AvgPool2D,
    BatchNorm,
    BlurMaxPool2D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool2D,
    Sequential,
)
from descent.nn.module import Module
from descent.nn.trainer import Trainer

__all__ = [
    "AvgPool2D", "BatchNorm", "BlurMaxPool2D", "CheckpointError", "Conv2D", "Dense", "Dropout", "Embedding",
    "Flatten", "GELU", "LayerNorm", "LeakyReLU", "Linear", "MaxPool2D", "Module", "ReLU", "Sequential", "Sigmoid",
    "Sin", "Softplus", "Tanh", "Trainer", "gelu", "softplus",
]
