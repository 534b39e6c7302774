"""Fit a network on the cached training tensors, one log line per epoch.

With out-of-scope images (`ScopeImages`) the network gets the ``in_scope`` head and both outputs
are trained together, the class loss masked for out-of-scope images (`trainer.inputs`). With
``init`` (``--init-from``) training starts from a shipped model's weights, optionally with the
convolutional layers frozen (``finetune.freeze: features``); a parent with an ``in_scope`` head
fine-tuned without out-of-scope images keeps that head's weights (its loss weight is 0 and the
layer is frozen), since DWI slices alone would teach it that everything is in scope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import numpy.typing as npt
import structlog
import tensorflow as tf

from trainer.augment import Augmenter
from trainer.inputs import (
    OUT_OF_SCOPE,
    add_out_of_scope,
    balanced_epochs,
    model_inputs,
    steps_per_epoch,
    training_dataset,
)
from trainer.model import SCOPE_OUTPUT, build_model, freeze_features, has_scope_head

if TYPE_CHECKING:
    from trainer.config import TrainConfig

log = structlog.get_logger("trainer.fit")


@dataclass(frozen=True)
class FitResult:
    """A fitted network and how it got there."""

    model: keras.Model
    history: dict[str, list[float]]
    best_epoch: int
    """1-based epoch whose weights were kept."""
    epochs_run: int
    seconds: float
    images_per_class: int
    steps_per_epoch: int
    stopped_by_time: bool
    frozen: tuple[str, ...] = ()
    """Layers that kept their initial weights."""


@dataclass(frozen=True)
class ScopeImages:
    """Out-of-scope images for the in_scope head: training and validation grey planes."""

    train_grey: npt.NDArray[np.floating]
    val_grey: npt.NDArray[np.floating]


_RENAMES = {
    "probabilities_accuracy": "accuracy",
    "val_probabilities_accuracy": "val_accuracy",
    "probabilities_loss": "class_loss",
    "val_probabilities_loss": "val_class_loss",
}


class EpochLog(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
    """One structured log line per epoch: losses, accuracies, learning rate, seconds."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: ARG002
        """Start the epoch clock."""
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Log the epoch's figures."""
        figures = {k: round(float(v), 4) for k, v in (logs or {}).items()}
        lr = self.model.optimizer.learning_rate
        log.info(
            "epoch",
            epoch=epoch + 1,
            epochs=self.epochs,
            seconds=round(time.monotonic() - self.started, 1),
            lr=float(np.asarray(lr)),
            **figures,
        )


class TimeBudget(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
    """Stop training after the epoch that passes ``minutes`` of fitting."""

    def __init__(self, minutes: float | None) -> None:
        super().__init__()
        self.limit = None if minutes is None else minutes * 60.0
        self.started = time.monotonic()
        self.reached = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:  # noqa: ARG002
        """Start the clock."""
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:  # noqa: ARG002
        """Stop when the budget is spent."""
        if self.limit is not None and time.monotonic() - self.started > self.limit:
            self.reached = True
            self.model.stop_training = True
            log.warning("time_budget_reached", epoch=epoch + 1, minutes=self.limit / 60.0)


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow; optionally force deterministic kernels."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _learning_rate(
    cfg: TrainConfig, steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if cfg.fit.schedule == "constant":
        return cfg.fit.learning_rate
    total = steps * cfg.fit.epochs
    warmup = min(steps * cfg.fit.warmup_epochs, total - 1)
    if warmup <= 0:
        return keras.optimizers.schedules.CosineDecay(cfg.fit.learning_rate, decay_steps=total)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total - warmup,
        warmup_target=cfg.fit.learning_rate,
        warmup_steps=warmup,
    )


def fit(
    cfg: TrainConfig,
    *,
    train_grey: npt.NDArray[np.floating],
    train_labels: npt.NDArray[np.integer],
    val_grey: npt.NDArray[np.floating],
    val_labels: npt.NDArray[np.integer],
    num_classes: int,
    mirror: npt.NDArray[np.int32],
    scope: ScopeImages | None = None,
    init: keras.Model | None = None,
    negative: int | None = None,
) -> FitResult:
    """Train ``cfg.model.architecture`` (or ``init``) with class-balanced, augmented batches.

    ``negative`` is the index of 'No acute infarct' (``augment.negative_weight`` applies to it).
    """
    seed_everything(cfg.seed, deterministic=cfg.fit.deterministic)
    size, channels = cfg.preprocess.input_size, cfg.preprocess.channels
    plan = balanced_epochs(
        train_labels,
        epochs=cfg.fit.epochs,
        per_class=cfg.augment.images_per_class,
        seed=cfg.seed,
        weights=None if negative is None else {negative: cfg.augment.negative_weight},
    )
    grey, labels = train_grey, np.asarray(train_labels, np.int64)
    if scope is not None and len(scope.train_grey):
        plan = add_out_of_scope(
            plan,
            offset=len(train_grey),
            count=len(scope.train_grey),
            share=cfg.scope.epoch_share,
            seed=cfg.seed,
        )
        grey = np.concatenate([train_grey, scope.train_grey.astype(train_grey.dtype)])
        labels = np.concatenate([labels, np.full(len(scope.train_grey), OUT_OF_SCOPE, np.int64)])
    if init is not None:
        model = init
        two = has_scope_head(model)
    else:
        two = scope is not None
        model = build_model(
            cfg.model.architecture,
            num_classes,
            (size, size, channels),
            cfg.model.dropout,
            in_scope=two,
            width=cfg.model.width,
        )
    frozen = freeze_features(model) if cfg.finetune.freeze == "features" else []
    train_scope = two and scope is not None
    if two and not train_scope:
        model.get_layer(SCOPE_OUTPUT).trainable = False
        frozen.append(SCOPE_OUTPUT)
    steps = steps_per_epoch(plan, cfg.fit.batch_size)
    augmenter = Augmenter(cfg.augment, mirror, size=size, channels=channels)
    dataset = training_dataset(
        grey,
        labels,
        plan,
        augmenter,
        batch_size=cfg.fit.batch_size,
        num_classes=num_classes,
        seed=cfg.seed,
        two_outputs=two,
    )
    class_loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.fit.label_smoothing)
    accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    if two:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=_learning_rate(cfg, steps)),
            loss=[class_loss, keras.losses.BinaryCrossentropy()],
            loss_weights=[1.0, 1.0 if train_scope else 0.0],
            metrics=[[accuracy], [keras.metrics.BinaryAccuracy(name="accuracy")]],
        )
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=_learning_rate(cfg, steps)),
            loss=class_loss,
            metrics=[accuracy],
        )
    validation = _validation(val_grey, val_labels, scope, num_classes, channels, two=two)
    monitor = cfg.fit.monitor if validation is not None else "loss"
    if two and monitor == "val_accuracy":
        monitor = "val_probabilities_accuracy"
    keeper = keras.callbacks.EarlyStopping(
        monitor=monitor,
        mode="max" if monitor.endswith("accuracy") else "min",
        patience=cfg.fit.patience or cfg.fit.epochs,
        restore_best_weights=True,
    )
    budget = TimeBudget(cfg.fit.max_minutes)
    log.info(
        "training",
        architecture=cfg.model.architecture,
        parameters=model.count_params(),
        in_scope_head=two,
        init_from=cfg.finetune.init_from,
        frozen=frozen,
        train_slices=len(train_labels),
        out_of_scope_images=0 if scope is None else len(scope.train_grey),
        classes_in_training=len(plan.classes),
        images_per_class=plan.per_class,
        steps_per_epoch=steps,
        epochs=cfg.fit.epochs,
    )
    started = time.monotonic()
    history = model.fit(
        dataset,
        epochs=cfg.fit.epochs,
        steps_per_epoch=steps,
        validation_data=validation,
        validation_batch_size=256,
        callbacks=[EpochLog(cfg.fit.epochs), keeper, budget],
        shuffle=False,  # the plan already shuffles, reproducibly
        verbose=0,
    )
    seconds = time.monotonic() - started
    curves = {
        _RENAMES.get(k, k): [float(v) for v in values] for k, values in history.history.items()
    }
    epochs_run = len(curves.get("loss", []))
    best_epoch = (keeper.best_epoch + 1) if keeper.best_weights is not None else epochs_run
    log.info("trained", seconds=round(seconds, 1), epochs_run=epochs_run, best_epoch=best_epoch)
    return FitResult(
        model=model,
        history=curves,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        seconds=seconds,
        images_per_class=plan.per_class,
        steps_per_epoch=steps,
        stopped_by_time=budget.reached,
        frozen=tuple(frozen),
    )


def _validation(
    val_grey: npt.NDArray[np.floating],
    val_labels: npt.NDArray[np.integer],
    scope: ScopeImages | None,
    num_classes: int,
    channels: int,
    *,
    two: bool,
) -> tuple[Any, ...] | None:
    """Validation data in the shape the compiled model expects (None: no validation cases)."""
    if not len(val_labels):
        return None
    one_hot = keras.utils.to_categorical(val_labels, num_classes)
    if not two:
        return (model_inputs(val_grey, channels), one_hot)
    oos = (
        scope.val_grey if scope is not None else np.zeros((0, *val_grey.shape[1:]), val_grey.dtype)
    )
    inputs = model_inputs(np.concatenate([val_grey, oos.astype(val_grey.dtype)]), channels)
    one_hot = np.concatenate([one_hot, np.zeros((len(oos), num_classes), one_hot.dtype)])
    in_scope = np.concatenate([np.ones(len(val_labels)), np.zeros(len(oos))]).astype(np.float32)
    return (inputs, (one_hot, in_scope[:, None]), (in_scope, np.ones_like(in_scope)))
