"""Training configuration: one frozen dataclass of every hyperparameter, loaded from YAML.

``config/train.yaml`` documents each setting; its values equal the defaults below (a test checks
it). `load_config` reads a file with ``yaml.safe_load``, applies ``--set key.path=value``
overrides, and checks the result with the daemon's `daemon.shared.settings` (field types and the
rules in each field's metadata), reporting every problem with its key path in one
`trainer.errors.TrainConfigError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon.shared.bundle import PLAIN_VERSION
from daemon.shared.dataset import DatasetLayout
from daemon.shared.preprocess import PREPROCESS_VERSION, PreprocessSpec
from daemon.shared.settings import INVALID, SettingsReader, regex, rules, set_dotted
from trainer.errors import TrainConfigError

ARCHITECTURES = ("seed", "seed_bn", "compact")
SCHEDULES = ("cosine", "constant")
MONITORS = ("val_loss", "val_accuracy")
FREEZE = ("none", "features")
SCOPE_RULES = ("midpoint", "dwi")
_LAYOUT = DatasetLayout()
"""The dataset layout's defaults, shared with ``infarctwatch evaluate``."""


def _plain_name(value: str) -> str | None:
    """A bundle name or version: letters, digits and ``.+_-``, at most 64 characters."""
    return None if PLAIN_VERSION.match(value) else f"{value!r} is not a plain name or version"


def _suffixes(values: tuple[str, ...]) -> str | None:
    bad = [v for v in values if not v.startswith(".")]
    return f"every extension must start with '.', got {bad}" if bad else None


@dataclass(frozen=True)
class DataConfig:
    """How a folder-per-class dataset is read."""

    labels: str | None = None
    """Label map (labels.yaml); None: the one shipped with infarctwatch (``config/labels.yaml``)."""
    extensions: tuple[str, ...] = field(default=_LAYOUT.extensions, metadata=rules(check=_suffixes))
    exclude: str = field(default=_LAYOUT.exclude, metadata=rules(check=regex()))
    """Regex searched in each file name; a match means the file is not a DWI slice."""
    case_pattern: str = field(default=_LAYOUT.case_pattern, metadata=rules(check=regex("case")))
    """Regex with a named group ``case`` giving the case id from a file name."""
    manifest: str | None = _LAYOUT.manifest
    """CSV in the dataset root with ``file`` and ``case_id`` columns; wins over case_pattern."""
    workers: int = field(default=2, metadata=rules(1))
    """Threads that decode and preprocess images."""
    shifted_test: str | None = None
    """A second, shifted-acquisition test set (same layout and label map), scored as a whole."""
    out_of_scope: str | None = None
    """Out-of-scope images (``infarctwatch synth --out-of-scope N``): train the in_scope head."""


@dataclass(frozen=True)
class SplitConfig:
    """Case-level split, stratified by class, done before any augmentation."""

    validation: float = field(default=0.15, metadata=rules(0, maximum=0.5))
    test: float = field(default=0.15, metadata=rules(0, maximum=0.5))


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometry and acquisition changes of training images only (never a plain flip)."""

    shift: float = field(default=0.08, metadata=rules(0, maximum=0.5))
    """Largest height/width shift, as a fraction of the side."""
    rotation: float = field(default=10.0, metadata=rules(0, maximum=45))
    """Largest rotation, degrees."""
    shear: float = field(default=5.0, metadata=rules(0, maximum=30))
    """Largest shear angle, degrees."""
    zoom: float = field(default=0.0, metadata=rules(0, maximum=0.5))
    """Largest relative zoom in or out."""
    intensity: float = field(default=0.0, metadata=rules(0, maximum=0.9))
    """Largest relative gamma change of the normalised image."""
    blur: float = field(default=0.0, metadata=rules(0, maximum=4))
    """Largest Gaussian blur, sigma in input pixels (a coarser acquisition or display matrix)."""
    noise: float = field(default=0.0, metadata=rules(0, maximum=0.5))
    """Largest SD of added noise, as a share of the normalised range (a lower SNR)."""
    saturation: float = field(default=0.0, metadata=rules(0, maximum=0.9))
    """Largest share of the range cut off at the top (a high-gain window saturates tissue)."""
    acquisition_share: float = field(default=1.0, metadata=rules(0, maximum=1))
    """Share of training images that get the blur, noise and saturation changes (the rest none)."""
    laterality_flip: float = field(default=0.0, metadata=rules(0, maximum=1))
    """Probability of a horizontal flip that also swaps Left and Right in the label."""
    images_per_class: int | None = field(default=None, metadata=rules(1))
    """Training images per class per epoch; None: the largest class's training image count."""
    negative_weight: float = field(default=1.0, metadata=rules(0.1, maximum=50))
    """'No acute infarct' gets this many times images_per_class per epoch (1: balanced)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train."""

    architecture: str = field(default="seed", metadata=rules(one_of=ARCHITECTURES))
    dropout: float = field(default=0.5, metadata=rules(0, maximum=0.95))
    width: float = field(default=1.0, metadata=rules(0.25, maximum=4))
    """Channel multiplier of ``compact``'s convolutions (1: 32/64/128); the other networks are
    fixed and take 1 only."""


@dataclass(frozen=True)
class FitConfig:
    """Optimiser and loop."""

    epochs: int = field(default=40, metadata=rules(1))
    batch_size: int = field(default=64, metadata=rules(1))
    learning_rate: float = field(default=0.001, metadata=rules(above=0, maximum=1))
    schedule: str = field(default="cosine", metadata=rules(one_of=SCHEDULES))
    warmup_epochs: int = field(default=1, metadata=rules(0))
    label_smoothing: float = field(default=0.0, metadata=rules(0, maximum=0.5))
    patience: int = field(default=0, metadata=rules(0))
    """Stop after this many epochs without improvement of ``monitor``; 0 never stops early."""
    monitor: str = field(default="val_loss", metadata=rules(one_of=MONITORS))
    """Validation metric that picks the epoch whose weights are kept."""
    deterministic: bool = True
    """Deterministic TensorFlow kernels (same seed, same weights) at a small speed cost."""
    max_minutes: float | None = field(default=None, metadata=rules(above=0))
    """Stop after the epoch that passes this many minutes of fitting (None: no limit)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out metrics."""

    top_k: int = field(default=3, metadata=rules(1))
    ece_bins: int = field(default=15, metadata=rules(1))


@dataclass(frozen=True)
class ExportConfig:
    """OpenVINO IR export and the bundle."""

    name: str = field(default="infarctwatch-seed", metadata=rules(check=_plain_name))
    version: str = field(default="0.1.0", metadata=rules(check=_plain_name))
    int8: bool = True
    calibration_images: int = field(default=300, metadata=rules(1))
    max_softmax_delta: float = field(default=0.01, metadata=rules(above=0))
    """Export fails when Keras and the FP16 IR (computed in f32) differ by more than this."""
    int8_default_within: float = field(default=0.5, metadata=rules(0, maximum=100))
    """INT8 becomes the bundle's default variant when its top-1 (case and slice, on the test
    split and the shifted test set) is within this many percentage points of FP16's."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Temperature scaling and the ``finding`` thresholds, both fitted on the validation split."""

    target_specificity: float = field(default=0.95, metadata=rules(0.5, maximum=1))
    """At most 1 - this share of validation normal slices may be called acute_infarct."""
    target_sensitivity: float = field(default=0.95, metadata=rules(0.5, maximum=1))
    """At most 1 - this share of validation infarct slices may be called no_acute_infarct."""


@dataclass(frozen=True)
class ScopeConfig:
    """The in_scope head, trained when ``data.out_of_scope`` is set."""

    epoch_share: float = field(default=0.15, metadata=rules(0, maximum=0.8))
    """Share of each training epoch's images that are out-of-scope images."""
    max_wrongly_refused: float = field(default=0.01, metadata=rules(0, maximum=0.5))
    """The threshold refuses at most this share of validation DWI slices."""
    min_refused: float = field(default=0.99, metadata=rules(0.5, maximum=1))
    """The threshold refuses at least this share of validation out-of-scope images."""
    rule: str = field(default="midpoint", metadata=rules(one_of=SCOPE_RULES))
    """midpoint: halfway in log-odds between the highest threshold meeting max_wrongly_refused and
    the lowest meeting min_refused; dwi: the highest meeting max_wrongly_refused."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Start from a shipped bundle's weights (``--init-from``) instead of a fresh network."""

    init_from: str | None = None
    """A bundle folder carrying ``model.keras``; its labels must equal the label map's classes."""
    freeze: str = field(default="none", metadata=rules(one_of=FREEZE))
    """none, or features: the convolutional layers keep the parent's weights."""


SEGMENT_ARCHITECTURES = ("unet",)
CHOOSE_ON = ("dwi_only", "as_loaded")


@dataclass(frozen=True)
class SegmentAugmentConfig:
    """Random changes to the segmenter's training slices.

    Geometry on the image and its mask together, acquisition changes on the DWI channel only.
    """

    shift: float = field(default=0.06, metadata=rules(0, maximum=0.5))
    """Largest height/width shift, as a fraction of the side."""
    rotation: float = field(default=12.0, metadata=rules(0, maximum=45))
    """Largest rotation, degrees."""
    shear: float = field(default=3.0, metadata=rules(0, maximum=30))
    """Largest shear angle, degrees."""
    zoom: float = field(default=0.1, metadata=rules(0, maximum=0.5))
    """Largest relative zoom in or out."""
    flip: float = field(default=0.5, metadata=rules(0, maximum=1))
    """Probability of a left-right flip (image and mask together: a mask has no side label)."""
    intensity: float = field(default=0.3, metadata=rules(0, maximum=0.9))
    """Largest relative gamma change of the DWI channel."""
    blur: float = field(default=1.0, metadata=rules(0, maximum=4))
    """Largest Gaussian blur of the DWI channel, sigma in input pixels."""
    noise: float = field(default=0.04, metadata=rules(0, maximum=0.5))
    """Largest SD of noise added to the DWI channel, as a share of the normalised range."""
    saturation: float = field(default=0.2, metadata=rules(0, maximum=0.9))
    """Largest share of the DWI channel's range cut off at the top."""


@dataclass(frozen=True)
class SegmentConfig:
    """The lesion segmenter (``infarctwatch train --task segment``)."""

    classifier: str | None = None
    """The classifier bundle the segmenter joins; its preprocessing is the segmenter's."""
    architecture: str = field(default="unet", metadata=rules(one_of=SEGMENT_ARCHITECTURES))
    base_filters: int = field(default=8, metadata=rules(4, maximum=64))
    """Filters of the first level; each level down doubles them."""
    depth: int = field(default=3, metadata=rules(2, maximum=4))
    """Down-sampling steps (the bottleneck works at 128 / 2**depth pixels)."""
    epochs: int = field(default=30, metadata=rules(1))
    batch_size: int = field(default=16, metadata=rules(1))
    learning_rate: float = field(default=0.002, metadata=rules(above=0, maximum=1))
    """Adam's peak rate (linear warm-up over one epoch, then cosine decay to 0)."""
    slices_per_epoch: int | None = field(default=None, metadata=rules(1))
    """Training slices drawn per epoch; None: every training slice once."""
    lesion_share: float = field(default=0.6, metadata=rules(0, maximum=1))
    """Share of each epoch's slices drawn from slices with a lesion (the rest: without)."""
    adc_dropout: float = field(default=0.5, metadata=rules(0, maximum=1))
    """Probability that a training slice's ADC channel is replaced by zeros (a lone DWI image)."""
    dice_weight: float = field(default=1.0, metadata=rules(0, maximum=10))
    """Weight of the soft Dice loss (computed over each batch)."""
    bce_weight: float = field(default=1.0, metadata=rules(0, maximum=10))
    """Weight of the per-pixel binary cross-entropy."""
    target_normal_clean: float = field(default=0.95, metadata=rules(0, maximum=1))
    """The threshold and min_lesion_px are chosen among those leaving at least this share of
    validation normal cases without a predicted lesion."""
    choose_on: str = field(default="dwi_only", metadata=rules(one_of=CHOOSE_ON))
    """The validation input the threshold is chosen on: ``dwi_only`` (ADC channel zeros: what the
    daemon feeds, as it segments each image alone) or ``as_loaded`` (ADC where the data has it)."""
    max_prob_delta: float = field(default=0.1, metadata=rules(above=0, maximum=1))
    """Export fails when Keras and the FP16 IR (in f32) differ by more than this in 0.01 % of the
    test pixels (the 99.99th percentile of the per-pixel differences)."""
    min_parity_dice: float = field(default=0.99, metadata=rules(0, maximum=1))
    """Export fails when the Dice of the Keras and FP16 IR masks (at the threshold) is lower."""
    version: str | None = field(default=None, metadata=rules(check=_plain_name))
    """The new bundle's version; None: the classifier's version + '+seg'."""
    max_minutes: float | None = field(default=None, metadata=rules(above=0))
    """Stop after the epoch that passes this many minutes of fitting (None: no limit)."""
    augment: SegmentAugmentConfig = field(default_factory=SegmentAugmentConfig)


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
    segment: SegmentConfig = field(default_factory=SegmentConfig)
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


def _preprocess_problems(spec: PreprocessSpec) -> list[str]:
    """The preprocessing section's rules (its dataclass is the daemon's, without field rules)."""
    problems = []
    if spec.version != PREPROCESS_VERSION:
        problems.append(
            f"At 'preprocess.version': this build implements version {PREPROCESS_VERSION}"
        )
    if spec.input_size < 1:
        problems.append(f"At 'preprocess.input_size': must be at least 1, got {spec.input_size}")
    if spec.channels not in (1, 3):
        problems.append(f"At 'preprocess.channels': must be 1 or 3, got {spec.channels}")
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
    reader = SettingsReader()
    for text in overrides:
        parts, value = parse_override(text)
        if (problem := set_dotted(raw, ".".join(parts), value)) is not None:
            reader.problems.append(problem)
    values = reader.fields(TrainConfig, raw)
    problems = reader.problems
    preprocess = values["preprocess"] if values is not INVALID else INVALID
    if preprocess is not INVALID:
        problems.extend(_preprocess_problems(preprocess))
    model = values["model"] if values is not INVALID else INVALID
    if model is not INVALID and model.width != 1 and model.architecture != "compact":
        problems.append(
            f"At 'model.width': only 'compact' takes a width other than 1, got {model.width}"
            f" for {model.architecture!r}"
        )
    if problems:
        raise TrainConfigError(problems, source)
    return TrainConfig(**values)


def dump_config(cfg: TrainConfig, path: Path) -> None:
    """Write the full resolved config as YAML (loadable again by `load_config`)."""
    text = "# The full resolved configuration of this run (infarctwatch train).\n"
    text += yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    Path(path).write_text(text, encoding="utf-8")
