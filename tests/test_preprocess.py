"""The shared preprocessing: brain crop, resize, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.errors import BadDimensionsError, BlankImageError
from daemon.shared.preprocess import PreprocessSpec, brain_box, preprocess, preprocess_placed


def _phantom(size: int = 512, text: bool = True) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    image[
        ((yy - 0.5 * size) / (0.35 * size)) ** 2 + ((xx - 0.48 * size) / (0.3 * size)) ** 2 < 1
    ] = 100
    rng = np.random.default_rng(0)
    image += rng.random((size, size), dtype=np.float32) * 5
    if text:
        image[10:22, 10:150] = 255  # a burned-in annotation line in the top-left corner
        image[size - 20 : size - 10, size - 120 : size - 10] = 255
    return image


class TestBrainBox:
    def test_box_surrounds_the_brain_and_ignores_corner_text(self) -> None:
        """Annotation text in the corners is not part of the box; the whole brain is."""
        top, left, bottom, right = brain_box(_phantom(), PreprocessSpec())
        assert 60 <= top <= 85 and 430 <= bottom <= 460
        assert 70 <= left <= 100 and 390 <= right <= 420

    def test_a_solid_annotation_block_in_a_corner_is_left_out(self) -> None:
        """A multi-line text block merges into a blob that survives the opening: still left out."""
        image = _phantom(text=False)
        image[8:60, 8:140] = 255  # five lines of annotation, merged by the box filter
        top, left, bottom, right = brain_box(image, PreprocessSpec())
        assert top >= 60 and left >= 70
        assert bottom <= 460 and right <= 420

    def test_split_low_slice_keeps_every_part_that_reaches_the_centre(self) -> None:
        """Temporal lobes and cerebellum, apart on a low slice, all stay inside the box."""
        image = np.zeros((256, 256), np.float32)
        image[60:120, 30:90] = 100  # right temporal lobe (image left)
        image[60:120, 166:226] = 100  # left temporal lobe
        image[120:200, 90:166] = 100  # cerebellum, through the centre
        top, left, bottom, right = brain_box(image, PreprocessSpec())
        assert left <= 32 and right >= 224 and top <= 62 and bottom >= 198

    def test_box_of_a_featureless_noise_image_is_the_whole_image(self) -> None:
        """With nothing surviving the opening, the whole image is used."""
        rng = np.random.default_rng(1)
        image = (rng.random((64, 64)) > 0.97).astype(np.float32)
        assert brain_box(image, PreprocessSpec()) == (0, 0, 64, 64)


class TestPreprocess:
    def test_output_shape_dtype_and_range(self) -> None:
        """The tensor is (128, 128, 3) float32 in [0, 1] with identical channels."""
        out = preprocess(_phantom(), PreprocessSpec())
        assert out.shape == (128, 128, 3)
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.array_equal(out[:, :, 0], out[:, :, 2])

    def test_result_does_not_depend_on_bit_depth_or_scale(self) -> None:
        """An 8-bit and a 16-bit rendering of the same slice give the same tensor."""
        base = _phantom(text=False)
        eight = np.round(base / base.max() * 255).astype(np.uint8)
        sixteen = eight.astype(np.uint16) * 257
        a = preprocess(eight, PreprocessSpec())
        b = preprocess(sixteen, PreprocessSpec())
        assert np.abs(a - b).max() < 1e-4

    def test_text_does_not_change_the_tensor_much(self) -> None:
        """Burned-in corner text is cropped away: the tensor matches the clean image's."""
        a = preprocess(_phantom(text=True), PreprocessSpec())
        b = preprocess(_phantom(text=False), PreprocessSpec())
        assert np.abs(a - b).mean() < 0.01

    def test_left_right_order_is_kept(self) -> None:
        """A bright spot on the image's left stays on the tensor's left: laterality is the class."""
        image = _phantom(text=False)
        image[220:280, 110:170] = 400  # 1.4% of the pixels: above the 99.5th percentile
        out = preprocess(image, PreprocessSpec())[:, :, 0]
        assert out[:, :64].max() == pytest.approx(1.0)
        assert out[:, 64:].max() < 0.7

    def test_blank_image_is_rejected(self) -> None:
        """A constant image has nothing to classify."""
        with pytest.raises(BlankImageError):
            preprocess(np.full((64, 64), 7, np.uint8), PreprocessSpec())

    def test_tiny_or_3d_input_is_rejected(self) -> None:
        """Too small, or not 2-D: a clear dimension error."""
        with pytest.raises(BadDimensionsError):
            preprocess(np.ones((8, 8)), PreprocessSpec())
        with pytest.raises(BadDimensionsError):
            preprocess(np.ones((32, 32, 3)), PreprocessSpec())


def test_spec_round_trips_and_rejects_unknown_keys() -> None:
    """preprocess.json round-trips; an unknown key or version is refused."""
    spec = PreprocessSpec(input_size=96)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown"):
        PreprocessSpec.from_dict({"input_size": 128, "colour": "red"})
    with pytest.raises(ValueError, match="version"):
        PreprocessSpec.from_dict({"version": 99})


class TestPlacement:
    """An ADC slice or a lesion mask goes through the same crop as its DWI slice, and back."""

    @staticmethod
    def _head(shape: tuple[int, int] = (200, 260)) -> np.ndarray:
        """An off-centre elliptical head with a bright round lesion, on a noisy background."""
        rng = np.random.default_rng(5)
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        head = ((yy - 110) / 70) ** 2 + ((xx - 150) / 90) ** 2 < 1
        image = rng.normal(20, 5, shape) + 600 * head
        image[((yy - 90) / 12) ** 2 + ((xx - 170) / 12) ** 2 < 1] = 1500
        return image.astype(np.float32)

    def test_placed_grey_image_is_the_slice_own_tensor(self) -> None:
        """The slice placed by its own placement gives exactly its preprocessed plane."""
        image = self._head()
        spec = PreprocessSpec(channels=1)
        tensor, placement = preprocess_placed(image, spec)
        np.testing.assert_array_equal(placement.place(image), tensor[:, :, 0])
        np.testing.assert_array_equal(preprocess(image, spec), tensor)
        assert placement.shape == image.shape
        assert placement.bottom - placement.top < image.shape[0]

    def test_a_mask_goes_to_the_input_square_and_back(self) -> None:
        """A lesion mask placed and mapped back covers the same pixels (IoU > 0.9)."""
        image = self._head()
        _, placement = preprocess_placed(image, PreprocessSpec())
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        mask = ((yy - 90) / 12) ** 2 + ((xx - 170) / 12) ** 2 < 1
        square = placement.place(mask.astype(np.uint8), mask=True)
        assert set(np.unique(square)) == {0.0, 1.0}
        back = placement.to_source(square, 0.5)
        iou = (back & mask).sum() / (back | mask).sum()
        assert iou > 0.9, iou
        assert placement.source_per_input == placement.side / 128

    def test_an_image_of_another_shape_is_refused(self) -> None:
        """An ADC slice that does not match the DWI slice's matrix is an error, not a guess."""
        _, placement = preprocess_placed(self._head(), PreprocessSpec())
        with pytest.raises(BadDimensionsError, match="like the slice"):
            placement.place(self._head((200, 200)))
