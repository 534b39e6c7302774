"""A small CPU-friendly U-Net: (128, 128, 2) [dwi, adc] -> sigmoid lesion map (128, 128, 1).

Each level has two 3x3 convolutions with batch normalisation and ReLU; max-pooling goes down,
bilinear up-sampling goes up and is concatenated with the level's skip connection. ``base_filters``
filters at full resolution, doubled per level down; ``depth`` down-sampling steps. The input is
named ``image`` and the output ``lesion``, the names the bundle's manifest records.
"""

from __future__ import annotations

import keras
from keras import layers

INPUT_NAME = "image"
OUTPUT_NAME = "lesion"
CHANNELS = 2


def _double_conv(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_unet(size: int = 128, *, base_filters: int = 8, depth: int = 3) -> keras.Model:
    """The segmenter network (untrained)."""
    inputs = keras.Input((size, size, CHANNELS), name=INPUT_NAME)
    x = inputs
    skips = []
    for level in range(depth):
        x = _double_conv(x, base_filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _double_conv(x, base_filters * 2**depth, "bottom")
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _double_conv(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="segmenter")
