"""Training-time augmentation on batches of preprocessed grey planes (TensorFlow ops).

As in the study: small height/width shifts, rotation and shear, composed into one affine map and
resampled once (bilinear, background filled with 0, the normalised background value). Optional
small zoom and gamma jitter.

There is no plain flip anywhere: a left-right flip turns a left infarct into a right one, so it
would teach the network the wrong label. The optional *laterality-aware* flip mirrors the image and
swaps Left and Right in the label (`daemon.shared.labels.LabelMap.mirror`); a class whose mirror is
not a class (e.g. "Left centrum semiovale and right parietal lobe") is never flipped, and a class
without a side ("No acute infarct") keeps its label.

Randomness is stateless: each batch's draws come from ``(seed, step)``, so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tensorflow as tf

if TYPE_CHECKING:
    from daemon.shared.labels import LabelMap
    from trainer.config import AugmentConfig

NO_MIRROR = -1


def mirror_table(labels: LabelMap) -> npt.NDArray[np.int32]:
    """For each class index, the index of its mirror class, or -1 when a flip must not happen."""
    table = np.full(len(labels.classes), NO_MIRROR, np.int32)
    for i, name in enumerate(labels.classes):
        mirrored = labels.mirror(name)
        if mirrored is not None:
            table[i] = labels.index(mirrored)
    return table


def affine_transforms(
    *,
    angle: tf.Tensor,
    shear: tf.Tensor,
    shift_x: tf.Tensor,
    shift_y: tf.Tensor,
    scale: tf.Tensor,
    size: int,
) -> tf.Tensor:
    """Projective transform rows ``[a0 a1 a2 b0 b1 b2 0 0]`` (output -> input) for a batch.

    The forward map is ``p_out = M (p_in - c) + c + t`` with ``M = scale * R(angle) @ S(shear)``
    about the image centre ``c``; the op needs its inverse. Angles in radians, shifts in pixels.
    """
    cos, sin, tan = tf.cos(angle), tf.sin(angle), tf.tan(shear)
    m00 = scale * cos
    m01 = scale * (cos * tan - sin)
    m10 = scale * sin
    m11 = scale * (sin * tan + cos)
    det = m00 * m11 - m01 * m10
    a, b = m11 / det, -m01 / det
    d, e = -m10 / det, m00 / det
    c = (size - 1) / 2.0
    ox, oy = c + shift_x, c + shift_y
    a2 = c - a * ox - b * oy
    b2 = c - d * ox - e * oy
    zeros = tf.zeros_like(a)
    return tf.stack([a, b, a2, d, e, b2, zeros, zeros], axis=1)


class Augmenter:
    """Turns a batch of grey planes and class indices into augmented model inputs and labels."""

    def __init__(
        self, cfg: AugmentConfig, mirror: npt.NDArray[np.int32], *, size: int, channels: int
    ) -> None:
        self.cfg = cfg
        self.size = size
        self.channels = channels
        self.mirror = tf.constant(mirror, tf.int32)

    def __call__(
        self, grey: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment ``grey`` ``(B, H, W)`` with ``labels`` ``(B,)``; ``seed`` is an int64 pair."""
        cfg = self.cfg
        batch = tf.shape(grey)[0]
        seeds = tf.random.experimental.stateless_split(seed, num=7)

        def uniform(i: int, limit: float) -> tf.Tensor:
            return tf.random.stateless_uniform([batch], seeds[i], -limit, limit, tf.float32)

        images = tf.cast(grey, tf.float32)[..., tf.newaxis]
        if cfg.shift or cfg.rotation or cfg.shear or cfg.zoom:
            transforms = affine_transforms(
                angle=uniform(0, math.radians(cfg.rotation)),
                shear=uniform(1, math.radians(cfg.shear)),
                shift_x=uniform(2, cfg.shift * self.size),
                shift_y=uniform(3, cfg.shift * self.size),
                scale=1.0 + uniform(4, cfg.zoom),
                size=self.size,
            )
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=transforms,
                output_shape=tf.constant([self.size, self.size], tf.int32),
                fill_value=tf.constant(0.0, tf.float32),
                interpolation="BILINEAR",
                fill_mode="CONSTANT",
            )
        if cfg.intensity:
            gamma = tf.exp(uniform(5, math.log1p(cfg.intensity)))
            images = tf.pow(tf.clip_by_value(images, 0.0, 1.0), gamma[:, None, None, None])
        if cfg.laterality_flip:
            images, labels = self.laterality_flip(images, labels, seeds[6])
        if self.channels > 1:
            images = tf.repeat(images, self.channels, axis=-1)
        return images, labels

    def laterality_flip(
        self, images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mirror a random share of images whose class has a mirror class, swapping the label."""
        # Out-of-scope images (label -1) are never flipped: their label has no mirror.
        target = tf.where(labels >= 0, tf.gather(self.mirror, tf.maximum(labels, 0)), NO_MIRROR)
        draw = tf.random.stateless_uniform(tf.shape(labels), seed, 0.0, 1.0)
        flip = tf.logical_and(target != NO_MIRROR, draw < self.cfg.laterality_flip)
        mirrored = tf.reverse(images, axis=[2])
        images = tf.where(flip[:, None, None, None], mirrored, images)
        return images, tf.where(flip, target, labels)
