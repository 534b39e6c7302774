"""The ``compact`` network: its layers and size, its cost against ``seed``, and one epoch of real
training on tiny data through export to a verified two-output bundle."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import openvino as ov
import pytest
import structlog
from test_train_e2e import make_tiny_dataset

from daemon.shared.bundle import MANIFEST, load_bundle
from trainer.cli import train_main
from trainer.config import load_config
from trainer.errors import TrainConfigError
from trainer.model import build_model, freeze_features, multiply_accumulates
from trainer.synth import generate

pytestmark = pytest.mark.train

if TYPE_CHECKING:
    from collections.abc import Iterator

SHAPE = (128, 128, 3)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_compact_layers_and_parameters_for_27_classes() -> None:
    """Seven 3x3 convolutions with batch norm down to an 8x8 map, 2048 features, 347,899
    parameters (349,948 with the in_scope head)."""
    model = build_model("compact", 27, SHAPE, 0.25)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 6 + [(1, 1)]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128, 32]
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == len(convs)
    assert tuple(model.get_layer("reduce_relu").output.shape) == (None, 8, 8, 32)
    assert tuple(model.get_layer("flatten").output.shape) == (None, 2048)
    assert model.count_params() == 347_899
    headed = build_model("compact", 27, SHAPE, 0.25, in_scope=True)
    assert headed.count_params() == 349_948
    probs, scope = headed(np.random.default_rng(0).random((2, *SHAPE), np.float32))
    assert np.allclose(np.asarray(probs).sum(axis=1), 1.0, atol=1e-5)
    assert tuple(scope.shape) == (2, 1)


def test_compact_costs_about_what_seed_costs() -> None:
    """Multiply-accumulates per image: seed 148.5 M, compact 154.9 M (27 classes, both heads);
    the issue allows at most twice the seed's cost."""
    seed = build_model("seed", 27, SHAPE, 0.25, in_scope=True)
    compact = build_model("compact", 27, SHAPE, 0.25, in_scope=True)
    assert multiply_accumulates(seed) == 148_518_912
    assert multiply_accumulates(compact) == 154_853_376
    assert multiply_accumulates(compact) < 2 * multiply_accumulates(seed)


def test_width_multiplies_the_filters_of_compact_only() -> None:
    """model.width 1.5: 48/96/192 filters, the 32-channel map and 2048 features unchanged; the
    other networks refuse a width, in the config as in build_model."""
    wide = build_model("compact", 27, SHAPE, 0.25, in_scope=True, width=1.5)
    convs = [layer for layer in wide.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [48, 48, 96, 96, 192, 192, 32]
    assert tuple(wide.get_layer("flatten").output.shape) == (None, 2048)
    assert wide.count_params() == 710_444
    assert multiply_accumulates(wide) == 345_497_600
    with pytest.raises(ValueError, match="compact"):
        build_model("seed", 27, SHAPE, 0.25, width=1.5)
    with pytest.raises(TrainConfigError, match=r"model\.width"):
        load_config(overrides=["model.architecture=seed_bn", "model.width=2"])
    assert load_config(overrides=["model.architecture=compact", "model.width=2"]).model.width == 2


def test_freeze_features_freezes_every_convolution_and_batch_norm() -> None:
    """--freeze features leaves only the dense heads trainable, for compact as for seed."""
    model = build_model("compact", 27, SHAPE, 0.25, in_scope=True)
    frozen = freeze_features(model)
    assert len(frozen) == 14
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"logits", "in_scope"}
    assert freeze_features(build_model("seed", 27, SHAPE, 0.5)) == ["block1_conv", "block2_conv"]


@pytest.mark.slow
def test_compact_trains_one_epoch_and_exports_a_two_output_bundle(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One epoch on tiny data with out-of-scope images: the bundle verifies, names compact and its
    width, and both variants give both outputs on OpenVINO."""
    data = make_tiny_dataset(tmp_path / "tiny")
    cache = tmp_path_factory.getbasetemp() / "synth-anatomy-cache"  # shared with the synth tests
    oos = tmp_path / "oos"
    generate(oos, out_of_scope=3, formats="png=0.5,dicom=0.5", seed=5, workers=1, cache_dir=cache)
    out = tmp_path / "run"
    settings = (
        f"data.labels={data / 'labels.yaml'}",
        "model.architecture=compact",
        "model.width=1.5",
        "fit.epochs=1",
        "augment.images_per_class=16",
        "fit.batch_size=16",
        "export.calibration_images=16",
    )
    args = [str(data), "--out", str(out), "--out-of-scope", str(oos)]
    assert train_main(args + [a for s in settings for a in ("--set", s)]) == 0
    bundle = load_bundle(out / "bundle")
    assert bundle.outputs == {"classes": "classes", "in_scope": "in_scope"}
    manifest = json.loads((out / "bundle" / MANIFEST).read_text())
    assert (manifest["architecture"], manifest["width"]) == ("compact", 1.5)
    assert "`compact` at width 1.5" in (out / "bundle" / "model_card.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_run"] == 1
    inputs = np.random.default_rng(1).random((2, *SHAPE), np.float32)
    for xml in ("model.xml", "model-int8.xml"):
        compiled = ov.Core().compile_model(str(out / "bundle" / xml), "CPU")
        result = compiled(inputs)
        assert np.asarray(result[compiled.output("classes")]).shape == (2, 4)
        assert np.asarray(result[compiled.output("in_scope")]).shape == (2, 1)


def test_train_default_recipe_is_a_valid_compact_configuration() -> None:
    """scripts/train-default's TRAIN_SET loads with config/train.yaml and trains compact."""
    script = (REPO / "scripts" / "train-default").read_text()
    match = re.search(r"^TRAIN_SET=\$\{TRAIN_SET:-(.*)\}$", script, re.MULTILINE)
    assert match is not None
    cfg = load_config(REPO / "config" / "train.yaml", match.group(1).split())
    assert cfg.model.architecture == "compact"
    assert cfg.export.name == "infarctwatch-compact"
    assert cfg.augment.negative_weight > 1
