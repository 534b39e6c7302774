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

(190,308 parameters for the study's 36 classes.) With ``in_scope=True`` a second output shares the
features: Flatten -> Dropout -> Dense(1, sigmoid) named ``in_scope`` (2,305 parameters more), the
probability that the input is an axial DWI b1000 brain slice at all. ``seed_bn`` is the same
network with batch normalisation after each convolution, offered for comparison
(``model.architecture``). It has not
yet been measured against ``seed`` on held-out cases; ``seed`` stays the default either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
from keras import layers

if TYPE_CHECKING:
    from collections.abc import Callable

INPUT_NAME = "image"
CLASSES_OUTPUT = "probabilities"
"""Keras name of the class output (the softmax layer)."""
SCOPE_OUTPUT = "in_scope"
"""Keras name of the in-scope output (sigmoid), present when the model has the head."""
FEATURE_LAYERS = ("block1_conv", "block1_bn", "block2_conv", "block2_bn")
"""The convolutional layers that ``--freeze features`` freezes."""


def _conv_block(x: keras.KerasTensor, name: str, *, batch_norm: bool) -> keras.KerasTensor:
    if batch_norm:
        x = layers.Conv2D(64, 5, use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    else:
        x = layers.Conv2D(64, 5, activation="relu", name=f"{name}_conv")(x)
    return layers.MaxPooling2D(4, name=f"{name}_pool")(x)


def _seed_like(
    num_classes: int,
    input_shape: tuple[int, int, int],
    dropout: float,
    *,
    batch_norm: bool,
    in_scope: bool,
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    x = _conv_block(inputs, "block1", batch_norm=batch_norm)
    x = _conv_block(x, "block2", batch_norm=batch_norm)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    probabilities = layers.Softmax(name=CLASSES_OUTPUT)(logits)
    name = "seed_bn" if batch_norm else "seed"
    if not in_scope:
        return keras.Model(inputs, probabilities, name=name)
    scope = layers.Dense(1, activation="sigmoid", name=SCOPE_OUTPUT)(x)
    return keras.Model(inputs, [probabilities, scope], name=name)


def seed(
    num_classes: int, input_shape: tuple[int, int, int], dropout: float, *, in_scope: bool = False
) -> keras.Model:
    """The study's network (see the module docstring)."""
    return _seed_like(num_classes, input_shape, dropout, batch_norm=False, in_scope=in_scope)


def seed_bn(
    num_classes: int, input_shape: tuple[int, int, int], dropout: float, *, in_scope: bool = False
) -> keras.Model:
    """``seed`` with batch normalisation after each convolution."""
    return _seed_like(num_classes, input_shape, dropout, batch_norm=True, in_scope=in_scope)


BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "seed": seed,
    "seed_bn": seed_bn,
}


def build_model(
    architecture: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dropout: float,
    *,
    in_scope: bool = False,
) -> keras.Model:
    """Build a named architecture (``model.architecture`` in train.yaml), optionally two-headed."""
    return BUILDERS[architecture](num_classes, input_shape, dropout, in_scope=in_scope)


def has_scope_head(model: keras.Model) -> bool:
    """Whether ``model`` carries the ``in_scope`` output."""
    return len(model.outputs) == 2


def freeze_features(model: keras.Model) -> list[str]:
    """Make the convolutional feature layers untrainable; return their names."""
    frozen = []
    for layer in model.layers:
        if layer.name in FEATURE_LAYERS:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
