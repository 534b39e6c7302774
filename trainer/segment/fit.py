"""Fit the segmenter: augmented batches, Dice + cross-entropy, the best validation epoch kept.

Each epoch draws ``segment.slices_per_epoch`` training slices (default: as many as there are),
``lesion_share`` of them from slices with a lesion, each group walked through in a fresh shuffled
order; indices for every epoch are drawn up front from the run seed.

Augmentation (stateless, from ``(seed, step)``): one affine map (shift, rotation, shear, zoom) and
an optional left-right flip applied to the DWI, the ADC and the mask together (the mask resampled
bilinearly and cut at 0.5); then the classifier's acquisition changes (`trainer.augment`: blur,
noise, saturation, gamma) on the DWI channel only; then the ADC channel replaced by zeros with
probability ``adc_dropout``, so the network also learns to work on a lone DWI image.

Loss: ``dice_weight x (1 - soft Dice over the batch) + bce_weight x mean binary cross-entropy``.
The soft Dice over the whole batch (not per image) stays defined on batches of normal slices.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import numpy.typing as npt
import structlog
import tensorflow as tf

from trainer.augment import Augmenter, random_geometry
from trainer.config import AugmentConfig
from trainer.fit import EpochLog, TimeBudget, seed_everything
from trainer.segment.model import build_unet

if TYPE_CHECKING:
    from trainer.config import SegmentConfig, TrainConfig
    from trainer.segment.data import SegTensors

log = structlog.get_logger("trainer.segment.fit")
_SMOOTH = 1.0
_PREDICT_BATCH = 64


@dataclass(frozen=True)
class SegFitResult:
    """A fitted segmenter and how it got there."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    seconds: float
    slices_per_epoch: int
    steps_per_epoch: int
    stopped_by_time: bool


def epoch_plan(
    lesion: npt.NDArray[np.bool_], *, epochs: int, per_epoch: int, lesion_share: float, seed: int
) -> npt.NDArray[np.int64]:
    """``(epochs, per_epoch)`` slice indices, ``lesion_share`` of each epoch from lesion slices."""
    rng = np.random.default_rng([seed, 0x5E6])
    groups = [np.flatnonzero(lesion), np.flatnonzero(~lesion)]
    if not len(groups[0]) or not len(groups[1]):
        groups = [np.arange(len(lesion))]
        counts = [per_epoch]
    else:
        n_lesion = round(per_epoch * lesion_share)
        counts = [n_lesion, per_epoch - n_lesion]
    queues = [np.empty(0, np.int64) for _ in groups]
    plan = np.empty((epochs, per_epoch), np.int64)
    for epoch in range(epochs):
        parts = []
        for g, (members, count) in enumerate(zip(groups, counts, strict=True)):
            while len(queues[g]) < count:
                queues[g] = np.concatenate([queues[g], rng.permutation(members)])
            parts.append(queues[g][:count])
            queues[g] = queues[g][count:]
        plan[epoch] = rng.permutation(np.concatenate(parts))
    return plan


class SegAugmenter:
    """Augments a batch of ``[dwi, adc]`` planes and masks (see the module docstring)."""

    def __init__(self, cfg: SegmentConfig, size: int) -> None:
        self.cfg = cfg
        self.size = size
        a = cfg.augment
        self.acquisition = Augmenter(
            AugmentConfig(blur=a.blur, noise=a.noise, saturation=a.saturation),
            np.zeros(0, np.int32),
            size=size,
            channels=1,
        )

    def __call__(
        self, images: tf.Tensor, masks: tf.Tensor, seed: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """``images`` ``(B, H, W, 2)``, ``masks`` ``(B, H, W)``; ``seed`` an int64 pair."""
        a = self.cfg.augment
        batch = tf.shape(images)[0]
        seeds = tf.random.experimental.stateless_split(seed, num=9)

        def uniform(i: int, limit: float) -> tf.Tensor:
            return tf.random.stateless_uniform([batch], seeds[i], -limit, limit, tf.float32)

        stack = tf.concat([tf.cast(images, tf.float32), tf.cast(masks, tf.float32)[..., None]], -1)
        stack = random_geometry(stack, a, seeds, self.size)
        if a.flip:
            draw = tf.random.stateless_uniform([batch], seeds[5], 0.0, 1.0)
            stack = tf.where((draw < a.flip)[:, None, None, None], tf.reverse(stack, [2]), stack)
        dwi, adc, mask = stack[..., :1], stack[..., 1:2], stack[..., 2:3]
        if a.blur or a.noise or a.saturation:
            dwi = self.acquisition.acquisition(dwi, seeds[6])
        if a.intensity:
            gamma = tf.exp(uniform(7, math.log1p(a.intensity)))
            dwi = tf.pow(tf.clip_by_value(dwi, 0.0, 1.0), gamma[:, None, None, None])
        if self.cfg.adc_dropout:
            keep = tf.random.stateless_uniform([batch], seeds[8], 0.0, 1.0) >= self.cfg.adc_dropout
            adc = adc * tf.cast(keep, tf.float32)[:, None, None, None]
        return tf.concat([dwi, adc], -1), tf.cast(mask >= 0.5, tf.float32)


def dice_bce_loss(dice_weight: float, bce_weight: float) -> Any:
    """The training loss (see the module docstring) as a Keras loss function."""

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        y_true = tf.cast(y_true, y_pred.dtype)
        total = tf.constant(0.0, y_pred.dtype)
        if bce_weight:
            total += bce_weight * tf.reduce_mean(keras.losses.binary_crossentropy(y_true, y_pred))
        if dice_weight:
            overlap = tf.reduce_sum(y_true * y_pred)
            sizes = tf.reduce_sum(y_true) + tf.reduce_sum(y_pred)
            total += dice_weight * (1.0 - (2.0 * overlap + _SMOOTH) / (sizes + _SMOOTH))
        return total

    return loss


def hard_dice(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Dice of the maps cut at 0.5 over the batch (a logged metric; 1 when both are empty)."""
    t = tf.cast(y_true >= 0.5, tf.float32)
    p = tf.cast(y_pred >= 0.5, tf.float32)
    return (2.0 * tf.reduce_sum(t * p) + 1e-6) / (tf.reduce_sum(t) + tf.reduce_sum(p) + 1e-6)


class KeepBest(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
    """Remember the weights of the epoch with the lowest validation loss."""

    def __init__(self) -> None:
        super().__init__()
        self.best = math.inf
        self.epoch = 0
        self.weights: list[Any] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Keep this epoch's weights when its validation loss is the lowest so far."""
        value = float((logs or {}).get("val_loss", math.inf))
        if value < self.best or not self.weights:
            self.best, self.epoch = value, epoch + 1
            self.weights = self.model.get_weights()


def _schedule(cfg: SegmentConfig, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    total = max(2, steps * cfg.epochs)
    warmup = min(steps, total - 1)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total - warmup, warmup_target=cfg.learning_rate, warmup_steps=warmup
    )


def training_batches(cfg: TrainConfig, train: SegTensors) -> tuple[tf.data.Dataset, int, int]:
    """Augmented ``(images, masks)`` batches of every epoch in order; slices and steps per epoch."""
    seg = cfg.segment
    per_epoch = seg.slices_per_epoch or len(train.samples)
    lesion = np.asarray(train.masks.reshape(len(train.masks), -1).any(axis=1), np.bool_)
    plan = epoch_plan(
        lesion, epochs=seg.epochs, per_epoch=per_epoch, lesion_share=seg.lesion_share, seed=cfg.seed
    )
    augmenter = SegAugmenter(seg, cfg.preprocess.input_size)
    images_t, masks_t = tf.constant(train.images), tf.constant(train.masks)
    seed_t = tf.constant(cfg.seed, tf.int64)

    def load(step: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return augmenter(
            tf.gather(images_t, index), tf.gather(masks_t, index), tf.stack([seed_t, step])
        )

    batches = (
        tf.data.Dataset.from_tensor_slices(plan)
        .flat_map(lambda row: tf.data.Dataset.from_tensor_slices(row).batch(seg.batch_size))
        .enumerate()
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return batches, per_epoch, -(-per_epoch // seg.batch_size)


def fit_segmenter(cfg: TrainConfig, train: SegTensors, validation: SegTensors) -> SegFitResult:
    """Train a fresh segmenter on ``train``; keep the epoch best on ``validation``."""
    seg = cfg.segment
    seed_everything(cfg.seed, deterministic=cfg.fit.deterministic)
    size = cfg.preprocess.input_size
    model = build_unet(size, base_filters=seg.base_filters, depth=seg.depth)
    batches, per_epoch, steps = training_batches(cfg, train)
    val_x = validation.images.astype(np.float32)
    val_y = validation.masks.astype(np.float32)[..., None]
    model.compile(
        optimizer=keras.optimizers.Adam(_schedule(seg, steps)),
        loss=dice_bce_loss(seg.dice_weight, seg.bce_weight),
        metrics=[hard_dice],
    )
    best, budget = KeepBest(), TimeBudget(seg.max_minutes)
    started = time.monotonic()
    history = model.fit(
        batches,
        epochs=seg.epochs,
        steps_per_epoch=steps,
        validation_data=(val_x, val_y) if len(val_x) else None,
        validation_batch_size=_PREDICT_BATCH,
        callbacks=[EpochLog(seg.epochs), budget, best],
        shuffle=False,
        verbose=0,
    )
    seconds = time.monotonic() - started
    model.set_weights(best.weights)
    record = {k: [float(v) for v in values] for k, values in history.history.items()}
    log.info("segmenter_fitted", best_epoch=best.epoch, seconds=round(seconds, 1))
    return SegFitResult(
        model=model,
        history=record,
        best_epoch=best.epoch,
        epochs_run=len(record.get("loss", [])),
        seconds=seconds,
        slices_per_epoch=per_epoch,
        steps_per_epoch=steps,
        stopped_by_time=budget.reached,
    )


def predict(model: keras.Model, images: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Lesion probabilities ``(n, H, W)`` of ``images`` ``(n, H, W, 2)``."""
    if not len(images):
        return np.zeros((0, *images.shape[1:3]), np.float32)
    out = model.predict(images.astype(np.float32), batch_size=_PREDICT_BATCH, verbose=0)
    return np.asarray(out, np.float32)[..., 0]
