"""The networks: ``seed`` (the study's), ``seed_bn`` (for comparison) and ``compact``.

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
network with batch normalisation after each convolution.

``compact`` (``model.architecture: compact``): seven 3x3 convolutions, each followed by batch
normalisation and ReLU, with the resolution halved early, and a flattened 8x8 map so that the
dense heads still see where a lesion is (left/right, lobe), which global pooling would discard::

    Conv2D(32, 3x3, stride 2)      -> 64x64x32       864 + 128 (batch norm)
    Conv2D(32, 3x3), MaxPool 2x2   -> 32x32x32     9,216 + 128
    Conv2D(64, 3x3)                -> 32x32x64    18,432 + 256
    Conv2D(64, 3x3), MaxPool 2x2   -> 16x16x64    36,864 + 256
    Conv2D(128, 3x3)               -> 16x16x128   73,728 + 512
    Conv2D(128, 3x3), MaxPool 2x2  ->  8x8x128   147,456 + 512
    Conv2D(32, 1x1)                ->  8x8x32      4,096 + 128
    Flatten                        ->  2048
    Dropout
    Dense(classes)                 -> classes      2048 * classes + classes
    Softmax

(347,899 parameters for 27 classes, 349,948 with the in_scope head, which is Dense(1, sigmoid) on
the same 2048 features.) Its forward pass costs about as many multiply-accumulates as ``seed``'s
(`multiply_accumulates`): 154.9 M against 148.5 M for 27 classes with the head; the batch norm
folds into the convolutions when exported.
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
FEATURE_KINDS = (layers.Conv2D, layers.BatchNormalization)
"""The layer kinds that ``--freeze features`` freezes: everything before the flatten that learns."""
COMPACT_MAP_CHANNELS = 32
"""Channels of ``compact``'s last 8x8 map, flattened for the heads (8 * 8 * 32 = 2048 features)."""
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


def _compact_block(
    x: keras.KerasTensor, filters: int, name: str, *, convs: int = 2
) -> keras.KerasTensor:
    """``convs`` x (Conv2D 3x3 same, no bias -> BatchNorm -> ReLU), then MaxPool 2x2."""
    for i in range(1, convs + 1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def compact_filters(width: float) -> tuple[int, int, int]:
    """Filters of ``compact``'s three stages at channel multiplier ``width`` (multiples of 8)."""
    return tuple(max(8, round(base * width / 8) * 8) for base in (32, 64, 128))  # type: ignore[return-value]


def compact(
    num_classes: int,
    input_shape: tuple[int, int, int],
    dropout: float,
    *,
    in_scope: bool = False,
    width: float = 1.0,
) -> keras.Model:
    """Seven 3x3 convolutions with batch norm, early striding, a flattened 8x8 map.

    See the module docstring for the layer table; ``width`` multiplies the filters of the stem and
    the three stages (`compact_filters`), not the 32-channel map the heads read.
    """
    first, second, third = compact_filters(width)
    inputs = keras.Input(shape=input_shape, name=INPUT_NAME)
    x = layers.Conv2D(first, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = _compact_block(x, first, "block1", convs=1)
    x = _compact_block(x, second, "block2")
    x = _compact_block(x, third, "block3")
    x = layers.Conv2D(COMPACT_MAP_CHANNELS, 1, use_bias=False, name="reduce_conv")(x)
    x = layers.BatchNormalization(name="reduce_bn")(x)
    x = layers.ReLU(name="reduce_relu")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    probabilities = layers.Softmax(name=CLASSES_OUTPUT)(logits)
    if not in_scope:
        return keras.Model(inputs, probabilities, name="compact")
    scope = layers.Dense(1, activation="sigmoid", name=SCOPE_OUTPUT)(x)
    return keras.Model(inputs, [probabilities, scope], name="compact")


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
    "compact": compact,
}


def build_model(
    architecture: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dropout: float,
    *,
    in_scope: bool = False,
    width: float = 1.0,
) -> keras.Model:
    """Build a named architecture (``model.architecture`` in train.yaml), optionally two-headed.

    ``width`` (``model.width``) applies to ``compact`` only.
    """
    if architecture == "compact":
        return compact(num_classes, input_shape, dropout, in_scope=in_scope, width=width)
    if width != 1:
        raise ValueError(f"model.width applies to 'compact' only, not {architecture!r}")
    return BUILDERS[architecture](num_classes, input_shape, dropout, in_scope=in_scope)


def multiply_accumulates(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass: every Conv2D and Dense layer.

    Batch norm folds into the convolution before it in the IR; pooling, ReLU and softmax are not
    counted.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            total += height * width * filters * kernel_h * kernel_w * layer.input.shape[-1]
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def has_scope_head(model: keras.Model) -> bool:
    """Whether ``model`` carries the ``in_scope`` output."""
    return len(model.outputs) == 2


def freeze_features(model: keras.Model) -> list[str]:
    """Make the feature layers (convolutions, batch norm) untrainable; return their names."""
    frozen = []
    for layer in model.layers:
        if isinstance(layer, FEATURE_KINDS):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
