"""The training configuration: defaults, the documented file, overrides and error reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.config import TrainConfig, dump_config, load_config
from trainer.errors import TrainConfigError

REPO = Path(__file__).resolve().parent.parent


def test_documented_file_equals_the_built_in_defaults() -> None:
    """config/train.yaml lists every setting with exactly the dataclass defaults."""
    assert load_config(REPO / "config" / "train.yaml") == TrainConfig()


def test_documented_file_mentions_every_setting() -> None:
    """Each key of the config appears in train.yaml (so each is documented there)."""
    text = (REPO / "config" / "train.yaml").read_text()
    for section, values in TrainConfig().to_dict().items():
        assert f"{section}:" in text
        if isinstance(values, dict):
            for key in values:
                assert f"  {key}:" in text, f"{section}.{key} is not in train.yaml"


def test_overrides_are_yaml_values_at_key_paths() -> None:
    """--set values are parsed as YAML and land at their key path."""
    cfg = load_config(
        None,
        [
            "fit.epochs=3",
            "augment.laterality_flip=0.5",
            "data.labels=null",
            "data.extensions=[.png, .dcm]",
            "export.version=2.0.0-rc1",
            "seed=9",
        ],
    )
    assert cfg.fit.epochs == 3
    assert cfg.augment.laterality_flip == 0.5
    assert cfg.data.labels is None
    assert cfg.data.extensions == (".png", ".dcm")
    assert cfg.export.version == "2.0.0-rc1"
    assert cfg.seed == 9
    assert isinstance(load_config(None, ["fit.learning_rate=1"]).fit.learning_rate, float)


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    """Unknown keys, wrong types and bad values: one error listing each with its path."""
    path = tmp_path / "train.yaml"
    path.write_text(
        "fit:\n  epochs: many\n  optimizer: sgd\n"
        "augment:\n  rotation: 90\n  flip: true\n"
        "data:\n  case_pattern: '^([^_]+)_'\n"
        "split:\n  test: 0.7\n"
        "export:\n  version: 'not a version'\n"
        "model:\n  architecture: resnet\n"
    )
    with pytest.raises(TrainConfigError) as err:
        load_config(path, ["fit.batch_size=0"])
    problems = err.value.problems
    expected = [
        "fit.epochs",
        "fit.optimizer",
        "augment.rotation",
        "augment.flip",
        "data.case_pattern",
        "split.test",
        "export.version",
        "model.architecture",
        "fit.batch_size",
    ]
    for key in expected:
        assert any(f"At '{key}'" in p for p in problems), f"{key} not reported: {problems}"
    assert len(problems) == len(expected)
    assert str(path) in str(err.value)


def test_bools_are_not_numbers_and_sections_are_mappings() -> None:
    """true is not an int, and a scalar where a section belongs is an error."""
    with pytest.raises(TrainConfigError) as err:
        load_config(None, ["fit.epochs=true", "augment=3"])
    assert any("fit.epochs" in p for p in err.value.problems)
    assert any("'augment'" in p and "mapping" in p for p in err.value.problems)


def test_malformed_yaml_and_overrides_are_config_errors(tmp_path: Path) -> None:
    """Unreadable YAML, a top-level list or an override without '=' is a TrainConfigError."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit: [unclosed\n")
    with pytest.raises(TrainConfigError, match="YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(TrainConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(TrainConfigError, match=r"KEY\.PATH=VALUE"):
        load_config(None, ["fit.epochs"])


def test_the_resolved_config_round_trips(tmp_path: Path) -> None:
    """RUN/config.yaml loads back to the same configuration."""
    cfg = load_config(None, ["fit.epochs=2", "data.labels=/x/labels.yaml"])
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
