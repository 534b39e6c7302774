"""The tf.data input pipelines: class-balanced, augmented training batches and plain eval inputs.

Balancing: every class present in the training split contributes exactly ``images_per_class``
images to every epoch. A class walks through its own shuffled images and reshuffles when it runs
out, so a small class repeats its images (each time with fresh augmentation) and a large class
shows a different part of itself each epoch. The epoch order is then shuffled. Indices for all
epochs are drawn up front in numpy from the run seed, so the sequence of batches is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tensorflow as tf

if TYPE_CHECKING:
    from trainer.augment import Augmenter


@dataclass(frozen=True)
class EpochPlan:
    """Which cached images each training epoch uses."""

    indices: npt.NDArray[np.int64]
    """``(epochs, per_epoch)`` indices into the training cache."""
    per_class: int
    classes: tuple[int, ...]
    """Class indices present in training (each gets ``per_class`` images per epoch)."""


def balanced_epochs(
    labels: npt.NDArray[np.integer], *, epochs: int, per_class: int | None, seed: int
) -> EpochPlan:
    """Draw class-balanced index lists for every epoch (see the module docstring)."""
    rng = np.random.default_rng([seed, 0xBA1A])
    present = tuple(int(c) for c in np.unique(labels))
    members = {c: np.flatnonzero(labels == c) for c in present}
    count = per_class or max(len(m) for m in members.values())
    queues = {c: np.empty(0, np.int64) for c in present}
    plan = np.empty((epochs, count * len(present)), np.int64)
    for epoch in range(epochs):
        parts = []
        for c in present:
            while len(queues[c]) < count:
                queues[c] = np.concatenate([queues[c], rng.permutation(members[c])])
            parts.append(queues[c][:count])
            queues[c] = queues[c][count:]
        plan[epoch] = rng.permutation(np.concatenate(parts))
    return EpochPlan(indices=plan, per_class=count, classes=present)


def steps_per_epoch(plan: EpochPlan, batch_size: int) -> int:
    """Batches in one epoch (the last one may be short)."""
    return int(-(-plan.indices.shape[1] // batch_size))


def training_dataset(
    grey: npt.NDArray[np.floating],
    labels: npt.NDArray[np.integer],
    plan: EpochPlan,
    augmenter: Augmenter,
    *,
    batch_size: int,
    num_classes: int,
    seed: int,
) -> tf.data.Dataset:
    """Augmented ``(images, one_hot)`` batches for every epoch of ``plan``, in order."""
    images_t = tf.constant(grey)
    labels_t = tf.constant(labels.astype(np.int32))
    seed_t = tf.constant(seed, tf.int64)

    def epoch_batches(row: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(row).batch(batch_size)

    def load(step: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, classes = augmenter(
            tf.gather(images_t, index), tf.gather(labels_t, index), tf.stack([seed_t, step])
        )
        return images, tf.one_hot(classes, num_classes)

    return (
        tf.data.Dataset.from_tensor_slices(plan.indices)
        .flat_map(epoch_batches)
        .enumerate()
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def model_inputs(grey: npt.NDArray[np.floating], channels: int) -> npt.NDArray[np.float32]:
    """Cached grey planes as the model's float32 ``(n, size, size, channels)`` input."""
    planes = grey.astype(np.float32)[..., np.newaxis]
    return np.repeat(planes, channels, axis=-1) if channels > 1 else planes
