"""Training configuration: one frozen dataclass of every hyperparameter, loaded from YAML.

``config/train.yaml`` documents each setting; its values equal the defaults below (a test checks
it). `load_config` reads a file with ``yaml.safe_load``, applies ``--set key.path=value``
overrides, rejects unknown keys and reports every problem with its key path in one
`trainer.errors.TrainConfigError`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from daemon.shared.preprocess import PREPROCESS_VERSION, PreprocessSpec
from trainer.errors import TrainConfigError

ARCHITECTURES = ("seed", "seed_bn", "compact")
SCHEDULES = ("cosine", "constant")
MONITORS = ("val_loss", "val_accuracy")
FREEZE = ("none", "features")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")


@dataclass(frozen=True)
class DataConfig:
    """How a folder-per-class dataset is read."""

    labels: str | None = None
    """Label map (labels.yaml); None: the one shipped in ``config/labels.yaml``."""
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm")
    exclude: str = r"(?i)_(adc|eadc|exp|t1|t2|flair)\.[a-z0-9]+$"
    """Regex searched in each file name; a match means the file is not a DWI slice."""
    case_pattern: str = r"^(?P<case>[^_]+)_"
    """Regex with a named group ``case`` giving the case id from a file name."""
    manifest: str | None = "manifest.csv"
    """CSV in the dataset root with ``file`` and ``case_id`` columns; wins over case_pattern."""
    workers: int = 2
    """Threads that decode and preprocess images."""
    shifted_test: str | None = None
    """A second, shifted-acquisition test set (same layout and label map), scored as a whole."""
    out_of_scope: str | None = None
    """Out-of-scope images (``infarctwatch synth --out-of-scope N``): train the in_scope head."""


@dataclass(frozen=True)
class SplitConfig:
    """Case-level split, stratified by class, done before any augmentation."""

    validation: float = 0.15
    test: float = 0.15


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometry applied to training images only (never a plain flip)."""

    shift: float = 0.08
    """Largest height/width shift, as a fraction of the side."""
    rotation: float = 10.0
    """Largest rotation, degrees."""
    shear: float = 5.0
    """Largest shear angle, degrees."""
    zoom: float = 0.0
    """Largest relative zoom in or out."""
    intensity: float = 0.0
    """Largest relative gamma change of the normalised image."""
    laterality_flip: float = 0.0
    """Probability of a horizontal flip that also swaps Left and Right in the label."""
    images_per_class: int | None = None
    """Training images per class per epoch; None: the largest class's training image count."""
    negative_weight: float = 1.0
    """'No acute infarct' gets this many times images_per_class per epoch (1: balanced)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train."""

    architecture: str = "seed"
    dropout: float = 0.5


@dataclass(frozen=True)
class FitConfig:
    """Optimiser and loop."""

    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 0.001
    schedule: str = "cosine"
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    patience: int = 0
    """Stop after this many epochs without improvement of ``monitor``; 0 never stops early."""
    monitor: str = "val_loss"
    """Validation metric that picks the epoch whose weights are kept."""
    deterministic: bool = True
    """Deterministic TensorFlow kernels (same seed, same weights) at a small speed cost."""
    max_minutes: float | None = None
    """Stop after the epoch that passes this many minutes of fitting (None: no limit)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out metrics."""

    top_k: int = 3
    ece_bins: int = 15


@dataclass(frozen=True)
class ExportConfig:
    """OpenVINO IR export and the bundle."""

    name: str = "infarctwatch-seed"
    version: str = "0.1.0"
    int8: bool = True
    calibration_images: int = 300
    max_softmax_delta: float = 0.01
    """Export fails when Keras and the FP16 IR (computed in f32) differ by more than this."""
    int8_default_within: float = 0.5
    """INT8 becomes the bundle's default variant when its top-1 (case and slice, on the test
    split and the shifted test set) is within this many percentage points of FP16's."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Temperature scaling and the ``finding`` thresholds, both fitted on the validation split."""

    target_specificity: float = 0.95
    """At most 1 - this share of validation normal slices may be called acute_infarct."""
    target_sensitivity: float = 0.95
    """At most 1 - this share of validation infarct slices may be called no_acute_infarct."""


@dataclass(frozen=True)
class ScopeConfig:
    """The in_scope head, trained when ``data.out_of_scope`` is set."""

    epoch_share: float = 0.15
    """Share of each training epoch's images that are out-of-scope images."""
    max_wrongly_refused: float = 0.01
    """The threshold refuses at most this share of validation DWI slices."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Start from a shipped bundle's weights (``--init-from``) instead of a fresh network."""

    init_from: str | None = None
    """A bundle folder carrying ``model.keras``; its labels must equal the label map's classes."""
    freeze: str = "none"
    """none, or features: the convolutional layers keep the parent's weights."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run. Recorded in full in the run folder and the model card."""

    seed: int = 20260326
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    scope: ScopeConfig = field(default_factory=ScopeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) for YAML and JSON."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    args = typing.get_args(tp)
    if type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(args[0])}s"
    return str(tp)


_SCALARS: dict[Any, Any] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, value) for a YAML value against a field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            return type(None) in args, None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if not isinstance(value, list):
            return False, value
        coerced = [_coerce(v, typing.get_args(tp)[0]) for v in value]
        return all(ok for ok, _ in coerced), tuple(v for _, v in coerced)
    check = _SCALARS.get(tp)
    if check is None or not check(value):
        return False, value
    return True, float(value) if tp is float else value


def _build(cls: type[Any], raw: Any, path: str, problems: list[str]) -> Any:
    """Instantiate a (nested) dataclass from a mapping, collecting every problem."""
    where = path or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"At '{where}': expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in sorted(set(raw) - known, key=str):
        choices = ", ".join(sorted(known))
        problems.append(f"At '{_join(path, str(key))}': unknown key (known here: {choices})")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        key_path = _join(path, f.name)
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(typing.cast("type[Any]", tp), raw[f.name], key_path, problems)
            continue
        ok, value = _coerce(raw[f.name], tp)
        if ok:
            kwargs[f.name] = value
        else:
            problems.append(f"At '{key_path}': expected {_type_name(tp)}, got {raw[f.name]!r}")
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_fraction(problems: list[str], key: str, value: float, *, high: float = 1.0) -> None:
    if not 0.0 <= value <= high:
        problems.append(f"At '{key}': must be between 0 and {high:g}, got {value:g}")


def _check_positive(problems: list[str], key: str, value: int | None) -> None:
    if value is not None and value < 1:
        problems.append(f"At '{key}': must be at least 1, got {value}")


def _check_regex(problems: list[str], key: str, pattern: str, group: str | None = None) -> None:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        problems.append(f"At '{key}': not a valid regular expression: {exc}")
        return
    if group and group not in compiled.groupindex:
        problems.append(f"At '{key}': needs a named group (?P<{group}>...)")


def _check_choice(problems: list[str], key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        problems.append(f"At '{key}': {value!r} is not one of {', '.join(choices)}")


def _validate_data(cfg: TrainConfig, problems: list[str]) -> None:
    _check_regex(problems, "data.exclude", cfg.data.exclude)
    _check_regex(problems, "data.case_pattern", cfg.data.case_pattern, "case")
    _check_positive(problems, "data.workers", cfg.data.workers)
    problems.extend(
        f"At 'data.extensions': {ext!r} must start with '.'"
        for ext in cfg.data.extensions
        if not ext.startswith(".")
    )
    _check_fraction(problems, "split.validation", cfg.split.validation, high=0.5)
    _check_fraction(problems, "split.test", cfg.split.test, high=0.5)


def _validate_augment(cfg: TrainConfig, problems: list[str]) -> None:
    aug = cfg.augment
    _check_fraction(problems, "augment.shift", aug.shift, high=0.5)
    if not 0.0 <= aug.rotation <= 45.0:
        problems.append(f"At 'augment.rotation': must be 0-45 degrees, got {aug.rotation:g}")
    if not 0.0 <= aug.shear <= 30.0:
        problems.append(f"At 'augment.shear': must be 0-30 degrees, got {aug.shear:g}")
    _check_fraction(problems, "augment.zoom", aug.zoom, high=0.5)
    _check_fraction(problems, "augment.intensity", aug.intensity, high=0.9)
    _check_fraction(problems, "augment.laterality_flip", aug.laterality_flip)
    _check_positive(problems, "augment.images_per_class", aug.images_per_class)
    if not 0.1 <= aug.negative_weight <= 50.0:
        problems.append(
            f"At 'augment.negative_weight': must be between 0.1 and 50, got {aug.negative_weight:g}"
        )


def _validate_fit(cfg: TrainConfig, problems: list[str]) -> None:
    fit = cfg.fit
    _check_choice(problems, "model.architecture", cfg.model.architecture, ARCHITECTURES)
    _check_fraction(problems, "model.dropout", cfg.model.dropout, high=0.95)
    _check_positive(problems, "fit.epochs", fit.epochs)
    _check_positive(problems, "fit.batch_size", fit.batch_size)
    if not 0.0 < fit.learning_rate <= 1.0:
        problems.append(f"At 'fit.learning_rate': must be in (0, 1], got {fit.learning_rate:g}")
    _check_choice(problems, "fit.schedule", fit.schedule, SCHEDULES)
    _check_choice(problems, "fit.monitor", fit.monitor, MONITORS)
    if fit.warmup_epochs < 0:
        problems.append(f"At 'fit.warmup_epochs': must be 0 or more, got {fit.warmup_epochs}")
    if fit.max_minutes is not None and fit.max_minutes <= 0:
        problems.append(f"At 'fit.max_minutes': must be above 0, got {fit.max_minutes:g}")
    if fit.patience < 0:
        problems.append(f"At 'fit.patience': must be 0 or more, got {fit.patience}")
    _check_fraction(problems, "fit.label_smoothing", fit.label_smoothing, high=0.5)
    _check_positive(problems, "evaluate.top_k", cfg.evaluate.top_k)
    _check_choice(problems, "finetune.freeze", cfg.finetune.freeze, FREEZE)
    for key, value in (
        ("calibration.target_specificity", cfg.calibration.target_specificity),
        ("calibration.target_sensitivity", cfg.calibration.target_sensitivity),
    ):
        if not 0.5 <= value <= 1.0:
            problems.append(f"At '{key}': must be between 0.5 and 1, got {value:g}")
    _check_fraction(problems, "scope.epoch_share", cfg.scope.epoch_share, high=0.8)
    _check_fraction(problems, "scope.max_wrongly_refused", cfg.scope.max_wrongly_refused, high=0.5)
    _check_positive(problems, "evaluate.ece_bins", cfg.evaluate.ece_bins)


def _validate_export(cfg: TrainConfig, problems: list[str]) -> None:
    if not _VERSION_RE.match(cfg.export.name):
        problems.append(f"At 'export.name': {cfg.export.name!r} is not a plain name")
    if not _VERSION_RE.match(cfg.export.version):
        problems.append(f"At 'export.version': {cfg.export.version!r} is not a plain version")
    _check_positive(problems, "export.calibration_images", cfg.export.calibration_images)
    if cfg.export.max_softmax_delta <= 0:
        problems.append("At 'export.max_softmax_delta': must be above 0")
    if not 0.0 <= cfg.export.int8_default_within <= 100.0:
        problems.append("At 'export.int8_default_within': must be 0-100 percentage points")
    if cfg.preprocess.version != PREPROCESS_VERSION:
        problems.append(
            f"At 'preprocess.version': this build implements version {PREPROCESS_VERSION}"
        )
    _check_positive(problems, "preprocess.input_size", cfg.preprocess.input_size)
    if cfg.preprocess.channels not in (1, 3):
        problems.append(f"At 'preprocess.channels': must be 1 or 3, got {cfg.preprocess.channels}")


def validate(cfg: TrainConfig) -> list[str]:
    """Range and consistency problems of a well-typed config, each with its key path."""
    problems: list[str] = []
    for check in (_validate_data, _validate_augment, _validate_fit, _validate_export):
        check(cfg, problems)
    return problems


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into a key path and a YAML-parsed value.

    Raises:
        TrainConfigError: the text has no ``=`` or an empty key, or a value YAML cannot read.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise TrainConfigError([f"--set {text!r}: expected KEY.PATH=VALUE"])
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise TrainConfigError([f"--set {text!r}: value is not valid YAML: {exc}"]) from exc
    return key.strip().split("."), parsed


def _apply_override(raw: dict[str, Any], parts: list[str], value: Any, problems: list[str]) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            problems.append(
                f"At '{'.'.join(parts[: i + 1])}': is not a section, cannot set below it"
            )
            return
        node = child
    node[parts[-1]] = value


def load_config(
    path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read ``path`` (or take the defaults), apply ``key.path=value`` overrides, validate.

    Raises:
        TrainConfigError: listing every problem, each with its key path.
    """
    source = str(path) if path else None
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise TrainConfigError([f"cannot read the file: {exc}"], source) from exc
        except yaml.YAMLError as exc:
            raise TrainConfigError([f"not valid YAML: {exc}"], source) from exc
    if not isinstance(raw, dict):
        raise TrainConfigError(["the file must hold a mapping of sections"], source)
    problems: list[str] = []
    for text in overrides:
        parts, value = parse_override(text)
        _apply_override(raw, parts, value, problems)
    # A mistyped value falls back to its default in `cfg`, so range checks still see every field.
    cfg = _build(TrainConfig, raw, "", problems)
    problems.extend(validate(cfg))
    if problems:
        raise TrainConfigError(problems, source)
    return typing.cast("TrainConfig", cfg)


def dump_config(cfg: TrainConfig, path: Path) -> None:
    """Write the full resolved config as YAML (loadable again by `load_config`)."""
    text = "# The full resolved configuration of this run (infarctwatch train).\n"
    text += yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    Path(path).write_text(text, encoding="utf-8")
