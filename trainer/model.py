"""The networks. ``seed`` is exactly the study's network and stays the default.

``seed`` on a 128x128x3 input::

    Conv2D(64, 5x5, ReLU)  -> 124x124x64     4,864 parameters
    MaxPool 4x4            ->  31x31x64
    Conv2D(64, 5x5, ReLU)  ->  27x27x64   102,464
    MaxPool 4x4            ->   6x6x64
    Flatten                ->  2304
    Dropout
    Dense(classes)         -> classes      2304 * classes + classes
    Softmax

(190,308 parameters for the study's 36 classes.) ``seed_bn`` is the same network with batch
normalisation after each convolution, offered for comparison (``model.architecture``). It has not
yet been measured against ``seed`` on held-out cases; ``seed`` stays the default either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
from keras import layers

if TYPE_CHECKING:
    from collections.abc import Callable

INPUT_NAME = "image"


def _conv_block(x: keras.KerasTensor, name: str, *, batch_norm: bool) -> keras.KerasTensor:
    if batch_norm:
        x = layers.Conv2D(64, 5, use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    else:
        x = layers.Conv2D(64, 5, activation="relu", name=f"{name}_conv")(x)
    return layers.MaxPooling2D(4, name=f"{name}_pool")(x)


def _seed_like(
    num_classes: int, input_shape: tuple[int, int, int], dropout: float, *, batch_norm: bool
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    x = _conv_block(inputs, "block1", batch_norm=batch_norm)
    x = _conv_block(x, "block2", batch_norm=batch_norm)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    name = "seed_bn" if batch_norm else "seed"
    return keras.Model(inputs, outputs, name=name)


def seed(num_classes: int, input_shape: tuple[int, int, int], dropout: float) -> keras.Model:
    """The study's network (see the module docstring)."""
    return _seed_like(num_classes, input_shape, dropout, batch_norm=False)


def seed_bn(num_classes: int, input_shape: tuple[int, int, int], dropout: float) -> keras.Model:
    """``seed`` with batch normalisation after each convolution."""
    return _seed_like(num_classes, input_shape, dropout, batch_norm=True)


BUILDERS: dict[str, Callable[[int, tuple[int, int, int], float], keras.Model]] = {
    "seed": seed,
    "seed_bn": seed_bn,
}


def build_model(
    architecture: str, num_classes: int, input_shape: tuple[int, int, int], dropout: float
) -> keras.Model:
    """Build a named architecture (``model.architecture`` in train.yaml)."""
    return BUILDERS[architecture](num_classes, input_shape, dropout)
