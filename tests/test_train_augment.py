"""Augmentation (never a plain flip; laterality-aware flip swaps labels) and class balancing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from daemon.shared.labels import load_label_map
from trainer.augment import NO_MIRROR, Augmenter, mirror_table
from trainer.config import AugmentConfig
from trainer.inputs import (
    OUT_OF_SCOPE,
    add_out_of_scope,
    balanced_epochs,
    steps_per_epoch,
    training_dataset,
)

pytestmark = pytest.mark.train

LABELS = load_label_map()
SIZE = 64
NO_GEOMETRY = AugmentConfig(shift=0.0, rotation=0.0, shear=0.0)


def _spot_left(n: int) -> np.ndarray:
    """Grey planes with a bright spot in the image's left half only."""
    grey = np.zeros((n, SIZE, SIZE), np.float32)
    grey[:, 28:36, 8:16] = 1.0
    return grey


def _augment(
    cfg: AugmentConfig, grey: np.ndarray, labels: list[int], step: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    augmenter = Augmenter(cfg, mirror_table(LABELS), size=SIZE, channels=3)
    images, out = augmenter(
        tf.constant(grey), tf.constant(labels, tf.int32), tf.constant([11, step], tf.int64)
    )
    return np.asarray(images), np.asarray(out)


def test_mirror_table_pairs_sides_and_skips_unmirrorable_classes() -> None:
    """Left <-> Right; classes without a side map to themselves; a mixed class cannot flip."""
    table = mirror_table(LABELS)
    assert table[LABELS.index("Left thalamus")] == LABELS.index("Right thalamus")
    assert table[LABELS.index("Right pons")] == LABELS.index("Left pons")
    assert table[LABELS.index("No acute infarct")] == LABELS.index("No acute infarct")
    assert table[LABELS.index("Left centrum semiovale and right parietal lobe")] == NO_MIRROR
    assert table[LABELS.index("Right frontal and parietal lobes")] == NO_MIRROR


def test_without_laterality_flip_the_side_never_changes() -> None:
    """Shifts, rotations, shears and zooms over many batches never move the spot across."""
    cfg = AugmentConfig(shift=0.08, rotation=10.0, shear=5.0, zoom=0.05, intensity=0.2)
    label = LABELS.index("Left thalamus")
    for step in range(20):
        images, labels = _augment(cfg, _spot_left(32), [label] * 32, step)
        left = images[:, :, : SIZE // 2, 0].max(axis=(1, 2))
        right = images[:, :, SIZE // 2 :, 0].max(axis=(1, 2))
        assert (left > 0.5).all() and (right < 0.05).all()
        assert (labels == label).all()


def test_acquisition_changes_stay_in_range_and_draw_their_own_amounts() -> None:
    """Blur, noise and saturation keep [0, 1], vary per image and are reproducible per step."""
    cfg = replace(NO_GEOMETRY, blur=1.5, noise=0.1, saturation=0.5)
    grey = np.tile(np.linspace(0.0, 1.0, SIZE, dtype=np.float32), (16, SIZE, 1))
    grey[:, :8] = 0.0  # a black background band
    images, _ = _augment(cfg, grey, [0] * 16, step=3)
    again, _ = _augment(cfg, grey, [0] * 16, step=3)
    other, _ = _augment(cfg, grey, [0] * 16, step=4)
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    assert images.min() >= 0.0 and images.max() <= 1.0
    spread = images[:, 8:, :, 0].reshape(16, -1).std(axis=1)
    assert np.ptp(spread) > 0.01, "every image drew the same amounts"


def test_noise_lifts_a_black_background_and_saturation_whitens_bright_tissue() -> None:
    """Noise puts a rectified floor on a black background; saturation clips the top to 1."""
    grey = np.full((64, SIZE, SIZE), 0.8, np.float32)
    grey[:, :, : SIZE // 2] = 0.0
    noisy, _ = _augment(replace(NO_GEOMETRY, noise=0.2), grey, [0] * 64)
    background = noisy[:, :, : SIZE // 2, 0]
    assert background.min() == 0.0 and 0.02 < background.mean() < 0.1
    saturated, _ = _augment(replace(NO_GEOMETRY, saturation=0.5), grey, [0] * 64)
    tissue = saturated[:, :, SIZE // 2 :, 0].max(axis=(1, 2))
    assert (tissue >= 0.8 - 1e-6).all() and (tissue == 1.0).mean() > 0.3
    assert (saturated[:, :, : SIZE // 2] == 0.0).all()


def test_blur_softens_an_edge_without_moving_it() -> None:
    """A sharp vertical edge gets intermediate values around it; its side does not change."""
    grey = _spot_left(32)
    blurred, _ = _augment(replace(NO_GEOMETRY, blur=2.0), grey, [0] * 32)
    plane = blurred[..., 0]
    assert ((plane > 0.05) & (plane < 0.95)).sum(axis=(1, 2)).max() > 20
    assert (plane[:, :, SIZE // 2 :] < 0.01).all()
    np.testing.assert_allclose(plane.sum(axis=(1, 2)), grey.sum(axis=(1, 2)), rtol=0.02)


def test_laterality_flip_mirrors_image_and_label_together() -> None:
    """With p=1 a Left class becomes its Right class and the spot moves right, exactly mirrored."""
    cfg = replace(NO_GEOMETRY, laterality_flip=1.0)
    names = [
        "Left thalamus",
        "Right pons",
        "No acute infarct",
        "Left centrum semiovale and right parietal lobe",
    ]
    grey = _spot_left(len(names))
    images, labels = _augment(cfg, grey, [LABELS.index(n) for n in names])
    assert [LABELS.classes[i] for i in labels] == [
        "Right thalamus",
        "Left pons",
        "No acute infarct",
        "Left centrum semiovale and right parietal lobe",
    ]
    for i in range(3):
        assert np.array_equal(images[i, :, :, 0], grey[i, :, ::-1])
    assert np.array_equal(images[3, :, :, 0], grey[3])  # its mirror is no class: never flipped


def test_every_flip_comes_with_a_label_swap() -> None:
    """At p=0.5, images whose spot moved right are exactly those whose label was swapped."""
    cfg = replace(NO_GEOMETRY, laterality_flip=0.5)
    left = LABELS.index("Left insula")
    images, labels = _augment(cfg, _spot_left(200), [left] * 200)
    moved = images[:, :, SIZE // 2 :, 0].max(axis=(1, 2)) > 0.5
    swapped = labels == LABELS.index("Right insula")
    assert np.array_equal(moved, swapped)
    assert 60 < swapped.sum() < 140


def test_no_augmentation_is_the_identity_and_channels_are_copies() -> None:
    """All strengths 0: the output equals the input, repeated to three channels."""
    cfg = NO_GEOMETRY
    grey = np.random.default_rng(0).random((3, SIZE, SIZE), np.float32)
    images, _ = _augment(cfg, grey, [0, 0, 0])
    assert images.shape == (3, SIZE, SIZE, 3)
    assert np.array_equal(images[..., 0], grey)
    assert np.array_equal(images[..., 2], grey)


def test_balanced_epochs_give_every_class_the_same_count() -> None:
    """Classes of 50, 7 and 1 images each get images_per_class per epoch; all images are used."""
    labels = np.array([0] * 50 + [3] * 7 + [5])
    plan = balanced_epochs(labels, epochs=4, per_class=20, seed=1)
    assert plan.indices.shape == (4, 60)
    assert plan.classes == (0, 3, 5)
    for epoch in plan.indices:
        assert sorted(np.bincount(labels[epoch], minlength=6)[[0, 3, 5]]) == [20, 20, 20]
    assert set(plan.indices.ravel()) == set(range(len(labels)))
    again = balanced_epochs(labels, epochs=4, per_class=20, seed=1)
    assert np.array_equal(plan.indices, again.indices)


def test_default_images_per_class_is_the_largest_class() -> None:
    """per_class None: the largest training class's size."""
    plan = balanced_epochs(np.array([0] * 9 + [1] * 2), epochs=1, per_class=None, seed=0)
    assert plan.per_class == 9
    assert plan.indices.shape == (1, 18)


def test_training_dataset_yields_balanced_one_hot_batches_per_epoch() -> None:
    """Exactly steps_per_epoch batches per epoch, one-hot labels, equal class totals per epoch."""
    labels = np.array([1] * 12 + [2] * 3)
    grey = np.random.default_rng(0).random((15, SIZE, SIZE)).astype(np.float16)
    plan = balanced_epochs(labels, epochs=2, per_class=10, seed=0)
    augmenter = Augmenter(AugmentConfig(), mirror_table(LABELS), size=SIZE, channels=3)
    dataset = training_dataset(grey, labels, plan, augmenter, batch_size=8, num_classes=4, seed=0)
    batches = [(np.asarray(x), np.asarray(y)) for x, y in dataset]
    steps = steps_per_epoch(plan, 8)
    assert steps == 3
    assert len(batches) == 2 * steps
    assert batches[0][0].shape == (8, SIZE, SIZE, 3)
    for epoch in range(2):
        totals = sum(y.sum(axis=0) for _, y in batches[epoch * steps : (epoch + 1) * steps])
        assert totals.tolist() == [0, 10, 10, 0]


def test_out_of_scope_images_are_never_flipped() -> None:
    """An out-of-scope image (label -1) keeps its label and its pixels even at flip p=1."""
    cfg = replace(NO_GEOMETRY, laterality_flip=1.0)
    grey = _spot_left(2)
    images, labels = _augment(cfg, grey, [OUT_OF_SCOPE, LABELS.index("Left thalamus")])
    assert list(labels) == [OUT_OF_SCOPE, LABELS.index("Right thalamus")]
    assert np.array_equal(images[0, :, :, 0], grey[0])


def test_out_of_scope_images_make_up_their_share_of_every_epoch() -> None:
    """15 % of each epoch comes from the out-of-scope cache rows, each seen before any repeats."""
    labels = np.repeat(np.arange(4), 10)
    plan = balanced_epochs(labels, epochs=3, per_class=17, seed=1)
    mixed = add_out_of_scope(plan, offset=40, count=9, share=0.15, seed=1)
    assert mixed.indices.shape == (3, 80)  # 68 DWI + round(0.15 / 0.85 * 68) = 12
    for row, dwi in zip(mixed.indices, plan.indices, strict=True):
        assert np.sum(row >= 40) == 12
        assert sorted(row[row < 40]) == sorted(dwi)
    first = mixed.indices[0][mixed.indices[0] >= 40]
    assert set(first.tolist()) == set(range(40, 49))  # all 9 before a repeat


def test_negative_weight_multiplies_one_class_per_epoch() -> None:
    """weights={0: 3.0}: class 0 gets 3 x per_class images per epoch, the others per_class."""
    labels = np.repeat(np.arange(3), 10)
    plan = balanced_epochs(labels, epochs=2, per_class=8, seed=1, weights={0: 3.0})
    for row in plan.indices:
        assert np.bincount(labels[row], minlength=3).tolist() == [24, 8, 8]


def test_acquisition_share_leaves_the_other_images_untouched() -> None:
    """With a share of 0.5 about half the images change and the rest are exactly the input."""
    cfg = replace(NO_GEOMETRY, blur=1.0, noise=0.1, saturation=0.5, acquisition_share=0.5)
    grey = np.tile(np.linspace(0.0, 1.0, SIZE, dtype=np.float32), (200, SIZE, 1))
    images, _ = _augment(cfg, grey, [0] * 200)
    same = np.array([np.array_equal(images[i, ..., 0], grey[i]) for i in range(200)])
    assert 0.35 < same.mean() < 0.65, same.mean()
