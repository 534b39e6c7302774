"""The daemon's configuration: embedded defaults, then a YAML file, then command-line flags.

The configuration is data: frozen dataclasses whose fields carry their type and bounds. One pass
over the merged mapping checks every key and collects *every* problem, each with its key path
(``At 'inference.device': ...``), into one `daemon.errors.ConfigError`; unknown keys are problems
too, so a typo never silently falls back to a default. ``config/daemon.yaml`` documents every key.

Relative paths are relative to the working folder and are made absolute here, once.
What can only be checked on the machine (folders writable, the public key readable) is checked by
`daemon.preflight` at start-up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from daemon.errors import ConfigError
from daemon.shared.dicom_scope import B_RANGE
from daemon.shared.settings import INVALID, SettingsReader, describe, octal, rules, set_dotted
from daemon.shared.settings import key_paths as _key_paths

if TYPE_CHECKING:
    from collections.abc import Mapping

# Pillow warns above this many pixels and refuses above twice as many: ``limits.max_pixels`` stays
# at or below it so that our own check, with its clear error code, always fires first.
PILLOW_BOMB_PIXELS = 89_478_485
AE_TITLE_MAX = 16
"""A DICOM Application Entity title holds at most 16 characters (PS3.5, VR AE)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which bundle to serve and how far to trust it."""

    path: Path | None = None
    """A bundle folder or a deploy-managed models folder (``current`` -> ``versions/<v>``);
    ``None`` serves the embedded default bundle."""
    variant: Literal["auto", "fp16", "int8"] = "auto"
    """``auto``: the bundle's ``default_variant``; ``fp16``/``int8``: that variant when the bundle
    carries it, else the bundle's default."""
    inbox: Path | None = None
    """A folder where a bundle ``.tar.gz`` can be dropped to be installed into ``path`` (which must
    then be a models folder) and hot-reloaded; see `daemon.model.inbox`."""
    public_key: Path | None = None
    require_signature: bool = False


@dataclass(frozen=True)
class InferenceConfig:
    """How OpenVINO compiles and runs the network."""

    device: str = field(default="AUTO", metadata=rules(transform=str.upper))
    """Any OpenVINO device string (CPU, GPU.1, NPU, AUTO:GPU,CPU...), upper-cased."""
    performance_hint: Literal["THROUGHPUT", "LATENCY"] = "THROUGHPUT"
    num_requests: int = field(default=0, metadata=rules(0, maximum=64))
    cache_dir: Path | None = None
    top_k: int = field(default=3, metadata=rules(1))
    lesion_maps: bool = True
    """Run the bundle's lesion segmenter when it has one; False serves the classifier alone (no
    lesion fields, no map files), as with a format 1 bundle."""


_PROBABILITY = rules(0, maximum=1)
_FINDING = rules(0.5, maximum=1)


@dataclass(frozen=True)
class ThresholdsConfig:
    """The decision thresholds on the network's outputs (`daemon.scan.decision`).

    ``None`` takes the bundle's own (manifest ``thresholds``); the ``fallback_*`` values serve a
    bundle that has none. Finding thresholds are at least 0.5, so that ``acute_infarct`` and
    ``no_acute_infarct`` cannot both hold.
    """

    acute_infarct: float | None = field(default=None, metadata=_FINDING)
    """``prediction.finding`` is ``acute_infarct`` when 1 - p('No acute infarct') >= this."""
    no_acute_infarct: float | None = field(default=None, metadata=_FINDING)
    """Else ``no_acute_infarct`` when p('No acute infarct') >= this; else ``indeterminate``."""
    in_scope: float | None = field(default=None, metadata=_PROBABILITY)
    """A two-output bundle's image is refused (``OUT_OF_SCOPE_IMAGE``) when its in_scope output is
    below this; 0 refuses nothing."""
    in_scope_dicom_dwi: float | None = field(default=None, metadata=_PROBABILITY)
    """The in_scope threshold instead for a single-frame DICOM MR image whose header passed every
    rule with a b-value in ``limits.b_value_min`` to ``b_value_max``; never above ``in_scope``."""
    fallback_acute_infarct: float = field(default=0.9, metadata=_FINDING)
    fallback_no_acute_infarct: float = field(default=0.9, metadata=_FINDING)
    fallback_in_scope: float = field(default=0.5, metadata=_PROBABILITY)
    fallback_in_scope_dicom_dwi: float = field(default=0.5, metadata=_PROBABILITY)
    """`in_scope_dicom_dwi` when the configuration does not set it: the in_scope
    head's own even odds."""


@dataclass(frozen=True)
class WatchConfig:
    """How new files in the incoming folder are noticed."""

    mode: Literal["inotify", "polling"] = "inotify"
    recursive: bool = True
    """Also watch sub-folders (a study folder, a PNG series folder); False: loose files only."""
    poll_interval_s: float = field(default=1.0, metadata=rules(above=0, maximum=3600))
    stable_s: float = field(default=2.0, metadata=rules(0, maximum=3600))
    reconcile_interval_s: float = field(default=60.0, metadata=rules(above=0, maximum=86400))
    grace_s: float = field(default=5.0, metadata=rules(0, maximum=3600))
    """A 0-byte file waits this long unchanged before it is taken; a file found truncated or
    empty is looked at again after this long, and put back to wait if it changed meanwhile."""
    ignore_suffixes: tuple[str, ...] = (
        ".part",
        ".tmp",
        ".partial",
        ".filepart",
        ".crdownload",
        ".swp",
    )


@dataclass(frozen=True)
class OutcomeConfig:
    """What happens to an input file once its report is written."""

    success: Literal["move", "keep", "delete"] = "move"
    failure: Literal["move", "keep", "delete"] = "move"


@dataclass(frozen=True)
class PipelineConfig:
    """Concurrency and back-pressure."""

    decode_workers: int = field(default=2, metadata=rules(1, maximum=64))
    """How many scan worker processes (`daemon.workers.process`). Each runs whole scans, not only
    decoding: the key keeps its name for compatibility."""
    max_pending: int = field(default=64, metadata=rules(1, maximum=100_000))


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds that keep one hostile file from exhausting the device."""

    max_file_bytes: int = field(default=268_435_456, metadata=rules(1))
    max_pixels: int = field(default=40_000_000, metadata=rules(1, maximum=PILLOW_BOMB_PIXELS))
    decode_timeout_s: float = field(default=30.0, metadata=rules(above=0, maximum=3600))
    """A file whose decoding takes longer gets a ``DECODE_TIMEOUT`` report; its worker restarts."""
    max_attempts: int = field(default=3, metadata=rules(1, maximum=100))
    """A claim that was in flight when the daemon (or its worker) died this many times in a row is
    set aside into failed/ with a ``REPEATED_CRASH`` report instead of being taken up again."""
    dicom_header_rules: bool = True
    """A DICOM file whose header says it is not a DWI b1000 MR slice gets a ``not_analysed``
    report (`daemon.shared.dicom_scope`); ``False`` analyses every DICOM whatever it says."""
    b_value_min: float = field(default=B_RANGE[0], metadata=rules(0, maximum=10_000))
    b_value_max: float = field(default=B_RANGE[1], metadata=rules(0, maximum=10_000))
    """A DICOM file declaring a b-value (s/mm²) outside ``b_value_min`` .. ``b_value_max`` gets a
    ``not_analysed`` report with reason ``NOT_B1000`` (`daemon.shared.dicom_scope`)."""


@dataclass(frozen=True)
class SeriesConfig:
    """How images are grouped into series and when a series counts as complete (`daemon.series`)."""

    stable_s: float = field(default=10.0, metadata=rules(above=0, maximum=3600))
    """A series is complete once no new image of it has arrived for this long (or earlier, when
    ImagesInAcquisition says how many it holds and all have arrived); its report is then written.
    An image arriving later reopens it and its report is rewritten after the same quiet time."""


@dataclass(frozen=True)
class ServiceConfig:
    """The service shell: shutdown and the status file."""

    drain_timeout_s: float = field(default=15.0, metadata=rules(0, maximum=3600))
    status_file: Path | None = None
    """``None`` means ``<work>/status.json``."""
    umask: str = field(default="0027", metadata=rules(check=octal(0o777)))
    """The daemon's umask (an octal string), set at the start of ``run`` and inherited by the
    worker processes: reports, the status file and the folders it creates are not world-readable."""

    @property
    def umask_bits(self) -> int:
        """`umask` as a number."""
        return int(self.umask, 8)


def _ae_title_problem(value: str | tuple[str, ...]) -> str | None:
    """A DICOM AE title (or each of a tuple): 1-16 printable characters, no backslash."""
    for title in (value,) if isinstance(value, str) else value:
        if not 1 <= len(title) <= AE_TITLE_MAX or "\\" in title or not title.isprintable():
            return (
                f"an AE title must have 1-{AE_TITLE_MAX} printable characters and no backslash, "
                f"got {title!r}"
            )
    return None


def _stripped(titles: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(title.strip() for title in titles)


def _ip_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"must be an IPv4 or IPv6 address, got {value!r}"
    return None


@dataclass(frozen=True)
class ListenConfig:
    """The DICOM Storage SCP (`daemon.receive`): where it listens and whom it accepts."""

    port: int = field(default=11112, metadata=rules(1, maximum=65535))
    """TCP port; below 1024 needs a capability the service does not have (docs/daemon.md)."""
    address: str = field(default="0.0.0.0", metadata=rules(check=_ip_problem))  # noqa: S104 - LAN
    """The local IPv4 or IPv6 address to listen on: ``0.0.0.0`` every IPv4 interface."""
    ae_title: str = field(default="INFARCTWATCH", metadata=rules(check=_ae_title_problem))
    """The called AE title senders must use: 1-16 characters, no backslash or control code."""
    allowed_calling_ae_titles: tuple[str, ...] = field(
        default=(), metadata=rules(transform=_stripped, check=_ae_title_problem)
    )
    """When not empty, an association from any other calling AE title is rejected."""
    min_free_mb: int = field(default=1024, metadata=rules(0, maximum=10_000_000))
    """A C-STORE that would leave less than this much free space (MiB) on the incoming folder's
    file system is answered "out of resources" (0xA700) instead of being written."""


@dataclass(frozen=True)
class DicomConfig:
    """DICOM networking: ``listen`` is ``None`` (off) or where the Storage SCP listens."""

    listen: ListenConfig | None = None


@dataclass(frozen=True)
class LoggingConfig:
    """structlog output."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _ae_title(value: str) -> str | None:
    """A DICOM Application Entity title: 1-16 printable ASCII characters, no backslash."""
    if len(value) > 16 or not value.isascii() or not value.isprintable() or "\\" in value:
        return f"must be 1-16 printable ASCII characters without a backslash, got {value!r}"
    return None


@dataclass(frozen=True)
class DicomSendConfig:
    """Sending the outbox to a PACS (C-STORE); off while ``host`` is ``None``."""

    host: str | None = None
    port: int = field(default=104, metadata=rules(1, maximum=65535))
    ae_title: str = field(default="ANY-SCP", metadata=rules(check=_ae_title))
    """The PACS's AE title (the called AE)."""
    calling_ae_title: str = field(default="INFARCTWATCH", metadata=rules(check=_ae_title))
    timeout_s: float = field(default=30.0, metadata=rules(above=0, maximum=600))
    """Connection, association and per-message time limit."""
    max_attempts: int = field(default=6, metadata=rules(1, maximum=100))
    """Tries per file; after the last failed one the file goes to ``<outbox>/dead-letter/``."""
    backoff_s: float = field(default=30.0, metadata=rules(above=0, maximum=86_400))
    """Wait after the first failed try; doubled after each further one."""
    backoff_max_s: float = field(default=600.0, metadata=rules(above=0, maximum=86_400))
    after_send: Literal["move", "delete"] = "move"
    """A file the PACS accepted goes to ``<outbox>/sent/`` (move) or is deleted."""


@dataclass(frozen=True)
class DicomOutputConfig:
    """DICOM results: Secondary Captures in an outbox folder, optionally sent to a PACS."""

    outbox: Path | None = None
    """``None``: no DICOM results."""
    send: DicomSendConfig = DicomSendConfig()


@dataclass(frozen=True)
class OutputsConfig:
    """What the daemon writes besides the JSON reports."""

    dicom: DicomOutputConfig = DicomOutputConfig()


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``infarctwatch run`` needs to know, validated."""

    incoming: Path = Path("var/incoming")
    reports: Path = Path("var/reports")
    work: Path = Path("var/work")
    model: ModelConfig = ModelConfig()
    inference: InferenceConfig = InferenceConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    watch: WatchConfig = WatchConfig()
    outcome: OutcomeConfig = OutcomeConfig()
    pipeline: PipelineConfig = PipelineConfig()
    limits: LimitsConfig = LimitsConfig()
    series: SeriesConfig = SeriesConfig()
    service: ServiceConfig = ServiceConfig()
    dicom: DicomConfig = DicomConfig()
    logging: LoggingConfig = LoggingConfig()
    outputs: OutputsConfig = OutputsConfig()

    @property
    def status_path(self) -> Path:
        """Where the status file lives."""
        return self.service.status_file or self.work / "status.json"


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    """Rules between keys, checked on whatever parsed, so every problem is reported at once."""
    problems = []
    model = values["model"]
    if model is not INVALID and model.require_signature and model.public_key is None:
        problems.append(
            "At 'model.require_signature': true needs 'model.public_key' to name the public key"
        )
    limits = values["limits"]
    if limits is not INVALID and limits.b_value_min > limits.b_value_max:
        problems.append(
            f"At 'limits.b_value_min': {limits.b_value_min:g} must not exceed "
            f"'limits.b_value_max' ({limits.b_value_max:g})"
        )
    incoming = values["incoming"]
    for key in ("reports", "work"):
        folder = values[key]
        if INVALID in (folder, incoming):
            continue
        if folder == incoming or incoming in folder.parents:
            problems.append(
                f"At '{key}': {folder} must not be the incoming folder or inside it "
                "(the daemon would ingest its own output)"
            )
    if model is not INVALID and model.inbox is not None:
        problems.extend(_inbox_problems(model.inbox, model.path, values))
    outputs = values["outputs"]
    if outputs is not INVALID:
        problems.extend(_dicom_output_problems(outputs.dicom, incoming))
    return problems


def _dicom_output_problems(dicom: DicomOutputConfig, incoming: Any) -> list[str]:
    """The outbox lies outside incoming; sending needs an outbox; the back-off grows."""
    problems = []
    outbox, send = dicom.outbox, dicom.send
    if (
        outbox is not None
        and incoming is not INVALID
        and (outbox == incoming or incoming in outbox.parents)
    ):
        problems.append(
            f"At 'outputs.dicom.outbox': {outbox} must not be the incoming folder or inside it"
        )
    if send.host is not None and outbox is None:
        problems.append("At 'outputs.dicom.send.host': sending needs 'outputs.dicom.outbox'")
    if send.backoff_max_s < send.backoff_s:
        problems.append(
            f"At 'outputs.dicom.send.backoff_max_s': {send.backoff_max_s:g} must not be less "
            f"than 'outputs.dicom.send.backoff_s' ({send.backoff_s:g})"
        )
    return problems


def _inbox_problems(inbox: Path, models: Path | None, values: Mapping[str, Any]) -> list[str]:
    """The inbox is a folder of its own: not a scan folder or the models folder, nor nested."""
    others = {key: values[key] for key in ("incoming", "reports", "work")}
    others["model.path"] = models
    return [
        f"At 'model.inbox': {inbox} must be a folder of its own, not {key} ({folder}), "
        "inside it or around it"
        for key, folder in others.items()
        if folder is not None
        and folder is not INVALID
        and (inbox == folder or folder in inbox.parents or inbox in folder.parents)
    ]


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file with ``yaml.safe_load``.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML or not a mapping.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"the file is not UTF-8 text: {exc}"], str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"At '(top level)': must be a mapping, got {describe(data)}"], str(path))
    return data


def load_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> DaemonConfig:
    """Embedded defaults, then the YAML file at ``path``, then ``overrides`` (dotted keys).

    ``overrides`` holds the command-line flags, e.g. ``{"inference.device": "CPU"}``; a ``None``
    value means the flag was not given.

    Raises:
        ConfigError: listing every problem found, each with its key path.
    """
    raw: dict[str, Any] = read_yaml(path) if path is not None else {}
    reader = SettingsReader()
    for dotted, value in (overrides or {}).items():
        if value is not None and (problem := set_dotted(raw, dotted, value)) is not None:
            reader.problems.append(problem)
    values = reader.fields(DaemonConfig, raw)
    problems = reader.problems + (_cross_checks(values) if values is not INVALID else [])
    if problems:
        raise ConfigError(problems, str(path) if path is not None else None)
    return DaemonConfig(**values)


def key_paths() -> list[str]:
    """Every key path the configuration accepts, e.g. ``watch.stable_s`` (used by the docs test)."""
    return _key_paths(DaemonConfig)
