"""The tf.data input pipelines: class-balanced, augmented training batches and plain eval inputs.

Balancing: every class present in the training split contributes exactly ``images_per_class``
images to every epoch. A class walks through its own shuffled images and reshuffles when it runs
out, so a small class repeats its images (each time with fresh augmentation) and a large class
shows a different part of itself each epoch. The epoch order is then shuffled. Indices for all
epochs are drawn up front in numpy from the run seed, so the sequence of batches is reproducible.

Out-of-scope images (`add_out_of_scope`) sit after the DWI slices in the cache with the label
``OUT_OF_SCOPE`` (-1); a share of every epoch is drawn from them. A two-output model then gets
``(images, (one_hot, in_scope), (class_weight, 1))`` batches: an out-of-scope image has an all-zero
one-hot and class weight 0 (the class loss is masked for it) and in-scope target 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tensorflow as tf

if TYPE_CHECKING:
    from trainer.augment import Augmenter


OUT_OF_SCOPE = -1
"""Label of an out-of-scope image in the training cache."""


@dataclass(frozen=True)
class EpochPlan:
    """Which cached images each training epoch uses."""

    indices: npt.NDArray[np.int64]
    """``(epochs, per_epoch)`` indices into the training cache."""
    per_class: int
    classes: tuple[int, ...]
    """Class indices present in training (each gets ``per_class`` images per epoch)."""


def balanced_epochs(
    labels: npt.NDArray[np.integer],
    *,
    epochs: int,
    per_class: int | None,
    seed: int,
    weights: dict[int, float] | None = None,
) -> EpochPlan:
    """Draw class-balanced index lists for every epoch (see the module docstring).

    ``weights`` scales one class's count (e.g. ``{negative: 4.0}``: the normal class gets four
    times ``per_class`` images per epoch); unlisted classes get ``per_class``.
    """
    rng = np.random.default_rng([seed, 0xBA1A])
    present = tuple(int(c) for c in np.unique(labels))
    members = {c: np.flatnonzero(labels == c) for c in present}
    count = per_class or max(len(m) for m in members.values())
    counts = {c: max(1, round(count * (weights or {}).get(c, 1.0))) for c in present}
    queues = {c: np.empty(0, np.int64) for c in present}
    plan = np.empty((epochs, sum(counts.values())), np.int64)
    for epoch in range(epochs):
        parts = []
        for c in present:
            while len(queues[c]) < counts[c]:
                queues[c] = np.concatenate([queues[c], rng.permutation(members[c])])
            parts.append(queues[c][: counts[c]])
            queues[c] = queues[c][counts[c] :]
        plan[epoch] = rng.permutation(np.concatenate(parts))
    return EpochPlan(indices=plan, per_class=count, classes=present)


def add_out_of_scope(
    plan: EpochPlan, *, offset: int, count: int, share: float, seed: int
) -> EpochPlan:
    """Mix ``count`` out-of-scope images (cache indices ``offset..``) into every epoch.

    They make up ``share`` of each epoch (at least one image when there are any); each epoch walks
    through them in a fresh shuffled order, as a class does.
    """
    if count == 0 or share <= 0:
        return plan
    rng = np.random.default_rng([seed, 0x0005])
    dwi = plan.indices.shape[1]
    extra = max(1, round(share / (1.0 - share) * dwi))
    queue = np.empty(0, np.int64)
    rows = []
    for row in plan.indices:
        while len(queue) < extra:
            queue = np.concatenate([queue, offset + rng.permutation(count)])
        rows.append(rng.permutation(np.concatenate([row, queue[:extra]])))
        queue = queue[extra:]
    return EpochPlan(indices=np.stack(rows), per_class=plan.per_class, classes=plan.classes)


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
    two_outputs: bool = False,
) -> tf.data.Dataset:
    """Augmented ``(images, one_hot)`` batches for every epoch of ``plan``, in order.

    ``two_outputs``: ``(images, (one_hot, in_scope), (class_weight, scope_weight))`` batches (see
    the module docstring).
    """
    images_t = tf.constant(grey)
    labels_t = tf.constant(labels.astype(np.int32))
    seed_t = tf.constant(seed, tf.int64)

    def epoch_batches(row: tf.Tensor) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(row).batch(batch_size)

    def load(step: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images, classes = augmenter(
            tf.gather(images_t, index), tf.gather(labels_t, index), tf.stack([seed_t, step])
        )
        one_hot = tf.one_hot(classes, num_classes)  # all zeros for OUT_OF_SCOPE
        if not two_outputs:
            return images, one_hot
        in_scope = tf.cast(classes >= 0, tf.float32)
        return (images, (one_hot, in_scope[:, None]), (in_scope, tf.ones_like(in_scope)))

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
