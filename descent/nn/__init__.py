"""Modules, the trainer and checkpoints: the layer most users touch."""

from descent.nn.activations import (
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Sin,
    Softmax,
    Softplus,
    Tanh,
    gelu,
    silu,
    softplus,
)
from descent.nn.checkpoint import CheckpointError
from descent.nn.layers import (
    AdaptiveAvgPool2D,
    AvgPool1D,
    AvgPool2D,
    BatchNorm,
    BlurMaxPool2D,
    Conv1D,
    Conv2D,
    ConvTranspose1D,
    ConvTranspose2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool1D,
    MaxPool2D,
    Sequential,
    Upsample,
)
from descent.nn.module import Module
from descent.nn.trainer import Trainer

__all__ = [
    "AdaptiveAvgPool2D", "AvgPool1D", "AvgPool2D", "BatchNorm", "BlurMaxPool2D", "CheckpointError", "Conv1D",
    "Conv2D", "ConvTranspose1D", "ConvTranspose2D", "Dense", "Dropout", "Embedding", "Flatten", "GELU", "Identity",
    "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MaxPool1D", "MaxPool2D", "Module", "ReLU", "Sequential",
    "SiLU", "Sigmoid", "Sin", "Softmax", "Softplus", "Tanh", "Trainer", "Upsample", "gelu", "silu", "softplus",
]
