"""Training-time augmentation on batches of preprocessed grey planes (TensorFlow ops).

As in the study: small height/width shifts, rotation and shear, composed into one affine map and
resampled once (bilinear, background filled with 0, the normalised background value). Optional
small zoom and gamma jitter.

Optional acquisition and display changes, in the order a scanner and a viewer make them, each
image drawing its own amount uniformly from none to the configured largest (and only a share
``acquisition_share`` of the images any at all, so clean images stay in every batch):

* ``blur``: the image blended with its Gaussian blur at the largest sigma (a coarser acquired or
  display matrix, a wider point-spread function);
* ``noise``: Gaussian noise added and the result clipped at 0 (so the background gets the
  rectified noise floor of a magnitude image): a lower SNR;
* ``saturation``: a white level below 1, everything above it shown as 1 (a high-gain window in
  which lesions and bright cortex saturate together).

There is no plain flip anywhere: a left-right flip turns a left infarct into a right one, so it
would teach the network the wrong label. The optional *laterality-aware* flip mirrors the image and
swaps Left and Right in the label (`daemon.shared.labels.LabelMap.mirror`); a class whose mirror is
not a class (e.g. "Left centrum semiovale and right parietal lobe") is never flipped, and a class
without a side ("No acute infarct") keeps its label.

Randomness is stateless: each batch's draws come from ``(seed, step)``, so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

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


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """``images`` ``(B, H, W, 1)`` blurred by a separable Gaussian of ``sigma`` pixels.

    Edges are mirrored, so the background stays the background.
    """
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = tf.constant(taps / taps.sum(), tf.float32)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    rows = tf.nn.conv2d(padded, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    return tf.nn.conv2d(rows, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")


class Geometry(Protocol):
    """The geometric augmentation settings (`AugmentConfig`, the segmenter's too)."""

    @property
    def shift(self) -> float:
        """Largest height/width shift, as a fraction of the side."""

    @property
    def rotation(self) -> float:
        """Largest rotation, degrees."""

    @property
    def shear(self) -> float:
        """Largest shear angle, degrees."""

    @property
    def zoom(self) -> float:
        """Largest relative zoom in or out."""


def random_geometry(images: tf.Tensor, cfg: Geometry, seeds: tf.Tensor, size: int) -> tf.Tensor:
    """``images`` ``(B, size, size, C)`` through one random affine map per image.

    Shift, rotation, shear and zoom are drawn uniformly within ``cfg``'s limits from
    ``seeds[0]`` to ``seeds[4]``; resampled once, bilinear, the background filled with 0. The
    identity (no call to the op) when every limit is 0.
    """
    if not (cfg.shift or cfg.rotation or cfg.shear or cfg.zoom):
        return images
    batch = tf.shape(images)[0]

    def uniform(i: int, limit: float) -> tf.Tensor:
        return tf.random.stateless_uniform([batch], seeds[i], -limit, limit, tf.float32)

    transforms = affine_transforms(
        angle=uniform(0, math.radians(cfg.rotation)),
        shear=uniform(1, math.radians(cfg.shear)),
        shift_x=uniform(2, cfg.shift * size),
        shift_y=uniform(3, cfg.shift * size),
        scale=1.0 + uniform(4, cfg.zoom),
        size=size,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


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

        images = random_geometry(tf.cast(grey, tf.float32)[..., tf.newaxis], cfg, seeds, self.size)
        if cfg.blur or cfg.noise or cfg.saturation:
            images = self.acquisition(images, tf.random.experimental.stateless_fold_in(seed, 1))
        if cfg.intensity:
            gamma = tf.exp(uniform(5, math.log1p(cfg.intensity)))
            images = tf.pow(tf.clip_by_value(images, 0.0, 1.0), gamma[:, None, None, None])
        if cfg.laterality_flip:
            images, labels = self.laterality_flip(images, labels, seeds[6])
        if self.channels > 1:
            images = tf.repeat(images, self.channels, axis=-1)
        return images, labels

    def acquisition(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Blur, noise and saturation (see the module docstring) on ``images`` ``(B, H, W, 1)``."""
        cfg = self.cfg
        batch = tf.shape(images)[0]
        seeds = tf.random.experimental.stateless_split(seed, num=5)
        chosen = tf.random.stateless_uniform([batch], seeds[4], 0.0, 1.0, tf.float32)
        share = tf.cast(chosen < cfg.acquisition_share, tf.float32)[:, None, None, None]

        def amount(i: int, largest: float) -> tf.Tensor:
            draw = tf.random.stateless_uniform([batch], seeds[i], 0.0, largest, tf.float32)
            return draw[:, None, None, None] * share

        if cfg.blur:
            images += amount(0, 1.0) * (gaussian_blur(images, cfg.blur) - images)
        if cfg.noise:
            noise = tf.random.stateless_normal(tf.shape(images), seeds[1], dtype=tf.float32)
            images = tf.maximum(images + amount(2, cfg.noise) * noise, 0.0)
        if cfg.saturation:
            images = images / (1.0 - amount(3, cfg.saturation))
        return tf.clip_by_value(images, 0.0, 1.0)

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
