"""The networks: the study's seed network, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.model import build_model

pytestmark = pytest.mark.train


def test_seed_network_is_the_studys_for_36_classes() -> None:
    """Every layer's output shape matches the study, and the total is exactly 190,308 parameters."""
    model = build_model("seed", 36, (128, 128, 3), 0.5)
    shapes = [(layer.__class__.__name__, tuple(layer.output.shape)) for layer in model.layers]
    assert shapes == [
        ("InputLayer", (None, 128, 128, 3)),
        ("Conv2D", (None, 124, 124, 64)),
        ("MaxPooling2D", (None, 31, 31, 64)),
        ("Conv2D", (None, 27, 27, 64)),
        ("MaxPooling2D", (None, 6, 6, 64)),
        ("Flatten", (None, 2304)),
        ("Dropout", (None, 2304)),
        ("Dense", (None, 36)),
        ("Softmax", (None, 36)),
    ]
    assert [layer.count_params() for layer in model.layers] == [
        0,
        4864,
        0,
        102464,
        0,
        0,
        0,
        82980,
        0,
    ]
    assert model.count_params() == 190_308
    conv1, conv2 = model.layers[1], model.layers[3]
    assert conv1.kernel_size == conv2.kernel_size == (5, 5)
    assert conv1.activation.__name__ == conv2.activation.__name__ == "relu"
    assert model.layers[2].pool_size == model.layers[4].pool_size == (4, 4)


def test_seed_network_outputs_probabilities() -> None:
    """The output rows are softmax distributions over the classes."""
    model = build_model("seed", 27, (128, 128, 3), 0.5)
    out = np.asarray(model(np.random.default_rng(0).random((2, 128, 128, 3), np.float32)))
    assert out.shape == (2, 27)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_seed_bn_adds_batch_norm_and_keeps_the_head() -> None:
    """The comparison network differs from seed only by batch normalisation after each conv."""
    model = build_model("seed_bn", 36, (128, 128, 3), 0.5)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == 2
    assert tuple(model.get_layer("flatten").output.shape) == (None, 2304)


def test_unknown_architecture_is_a_key_error() -> None:
    """Only registered architectures build (the config loader reports the name first)."""
    with pytest.raises(KeyError):
        build_model("vgg16", 3, (128, 128, 3), 0.5)


def test_in_scope_head_adds_one_sigmoid_on_the_shared_features() -> None:
    """The second output costs 2,305 parameters (2304 weights + bias) and gives one probability."""
    plain = build_model("seed", 36, (128, 128, 3), 0.5)
    headed = build_model("seed", 36, (128, 128, 3), 0.5, in_scope=True)
    assert headed.count_params() - plain.count_params() == 2305
    probs, scope = headed(np.random.default_rng(0).random((2, 128, 128, 3), np.float32))
    assert tuple(probs.shape) == (2, 36)
    assert tuple(scope.shape) == (2, 1)
    assert np.all((np.asarray(scope) > 0) & (np.asarray(scope) < 1))
