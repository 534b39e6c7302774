"""The segmenter's augmentation moves image and mask together; ADC dropout zeroes the ADC only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from trainer.config import SegmentAugmentConfig, TrainConfig
from trainer.segment.fit import SegAugmenter, epoch_plan

pytestmark = pytest.mark.train
SIZE = 64


def _batch() -> tuple[np.ndarray, np.ndarray]:
    """Eight slices whose DWI channel is exactly their mask (a blob somewhere off-centre)."""
    rng = np.random.default_rng(1)
    masks = np.zeros((8, SIZE, SIZE), np.uint8)
    for i in range(8):
        top, left = rng.integers(4, SIZE - 20, 2)
        masks[i, top : top + 14, left : left + 10] = 1
    images = np.stack([masks.astype(np.float32), np.full(masks.shape, 0.5, np.float32)], -1)
    return images, masks


def _augmenter(adc_dropout: float, **augment: float) -> SegAugmenter:
    none = SegmentAugmentConfig(
        shift=0, rotation=0, shear=0, zoom=0, flip=0, intensity=0, blur=0, noise=0, saturation=0
    )
    seg = dataclasses.replace(
        TrainConfig().segment,
        adc_dropout=adc_dropout,
        augment=dataclasses.replace(none, **augment),
    )
    return SegAugmenter(seg, SIZE)


def test_geometry_and_flip_move_image_and_mask_together() -> None:
    """After shift, rotation, shear, zoom and flip the mask still covers the DWI blob."""
    images, masks = _batch()
    augmenter = _augmenter(0.0, shift=0.1, rotation=20, shear=5, zoom=0.1, flip=1.0)
    out, out_masks = augmenter(
        tf.constant(images), tf.constant(masks), tf.constant([3, 4], tf.int64)
    )
    dwi, mask = out.numpy()[..., 0] >= 0.5, out_masks.numpy()[..., 0] > 0
    assert not np.array_equal(mask, masks > 0)  # it did move
    agreement = (dwi == mask).mean()
    assert agreement > 0.995
    assert set(np.unique(out_masks.numpy())) <= {0.0, 1.0}


def test_acquisition_changes_leave_the_mask_alone() -> None:
    """Blur, noise, saturation and gamma change the DWI channel, never the mask or the ADC."""
    images, masks = _batch()
    augmenter = _augmenter(0.0, blur=2.0, noise=0.1, saturation=0.3, intensity=0.5)
    out, out_masks = augmenter(
        tf.constant(images), tf.constant(masks), tf.constant([5, 6], tf.int64)
    )
    assert not np.allclose(out.numpy()[..., 0], images[..., 0])
    np.testing.assert_array_equal(out_masks.numpy()[..., 0], masks)
    np.testing.assert_allclose(out.numpy()[..., 1], images[..., 1])


@pytest.mark.parametrize(("dropout", "kept"), [(0.0, 8), (1.0, 0)])
def test_adc_dropout(dropout: float, kept: int) -> None:
    """adc_dropout 1 zeroes every ADC channel, 0 none; the DWI channel is untouched either way."""
    images, masks = _batch()
    out, _ = _augmenter(dropout)(
        tf.constant(images), tf.constant(masks), tf.constant([1, 2], tf.int64)
    )
    adc = out.numpy()[..., 1]
    assert int((adc.reshape(8, -1).max(axis=1) > 0).sum()) == kept
    np.testing.assert_allclose(out.numpy()[..., 0], images[..., 0])


def test_adc_dropout_half_drops_about_half() -> None:
    """With 0.5, a large batch loses the ADC on roughly half its slices."""
    images = np.ones((200, 8, 8, 2), np.float32)
    seg = dataclasses.replace(TrainConfig().segment, adc_dropout=0.5)
    augmenter = SegAugmenter(
        dataclasses.replace(seg, augment=SegmentAugmentConfig(0, 0, 0, 0, 0, 0, 0, 0, 0)),
        8,
    )
    out, _ = augmenter(tf.constant(images), tf.zeros((200, 8, 8)), tf.constant([7, 8], tf.int64))
    dropped = int((out.numpy()[..., 1].reshape(200, -1).max(axis=1) == 0).sum())
    assert 70 < dropped < 130


def test_epoch_plan_draws_the_lesion_share() -> None:
    """Each epoch holds lesion_share of lesion slices; a small group repeats; all slices used."""
    lesion = np.array([True] * 3 + [False] * 17)
    plan = epoch_plan(lesion, epochs=5, per_epoch=10, lesion_share=0.6, seed=1)
    assert plan.shape == (5, 10)
    assert all(int(lesion[row].sum()) == 6 for row in plan)
    assert set(plan.reshape(-1).tolist()) == set(range(20))
