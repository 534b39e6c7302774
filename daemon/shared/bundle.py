"""The model bundle: the one contract between the trainer, deploy and the daemon.

A bundle is a folder (shipped as a ``.tar.gz`` of it)::

    manifest.json        format version, name, version, creation time, sha256 + size of every file,
                         model variants, input spec, test-metric summary
    manifest.sig         optional ed25519 signature of manifest.json (see ``deploy``)
    model.xml/.bin       OpenVINO IR, FP16 weights          (variant "fp16")
    model-int8.xml/.bin  OpenVINO IR, NNCF INT8             (variant "int8", optional)
    labels.json          class labels in output order
    preprocess.json      `daemon.shared.preprocess.PreprocessSpec` used in training
    metrics.json         the training run's full metrics
    model_card.md        data, split, metrics, intended use
    model.keras          optional: the Keras model, for fine-tuning (``keras_model``)

Optional manifest fields (absent in older bundles, which load exactly as before; read into
`Bundle` when present, each checked):

    outputs      {"classes": NAME, "in_scope": NAME}: the IR output names by role. Without it the
                 network has one output, the class probabilities. With "in_scope" it has two.
    calibration  {"method": "temperature", "temperature": T, ...}: serve softmax(log(p) / T).
    thresholds   {"finding": {"negative_class", "acute_infarct", "no_acute_infarct", ...},
                  "in_scope": {"threshold", ...}}: see docs/training.md.
    parent       {"name", "version", "sha256"}: the bundle this one was fine-tuned from.
    keras_model  the listed file holding the Keras model.

Format 2 adds ``networks``: further networks beside the classifier (which stays where format 1
puts it, so everything above holds unchanged). Each has its own files, listed in ``files`` with
their sha256 like every other file (so deploy's verification and signatures cover them), in a
sub-folder named after it. Today one kind exists, the lesion segmenter::

    "networks": {"segmenter": {
        "task": "segment",
        "variants": {"fp16": {"xml": "segmenter/model.xml", "bin": "segmenter/model.bin",
                              "precision": "FP16"}},
        "default_variant": "fp16",
        "input": {"name": "image", "shape": [-1, 128, 128, 2], "layout": "NHWC", "dtype": "f32",
                  "channels": ["dwi", "adc"]},
        "output": "lesion",                 # per-pixel lesion probability, shape (N, H, W, 1)
        "preprocess": "segmenter/preprocess.json",
        "threshold": 0.5,                   # a pixel is lesion at or above this probability
        "min_lesion_px": 4,                 # smaller connected parts (input pixels) are dropped
        "metrics_summary": {...}}}

The input channels are the preprocessed DWI b1000 slice and, when the series provides one, the
ADC slice cropped and resized the same way; an absent ADC is a plane of zeros (the segmenter is
trained with ADC sometimes absent). Format 1 bundles (no ``networks``) load as before: a
classifier only, no lesion maps. `write_manifest` writes format 1 unless ``networks`` is given,
so a classifier-only bundle stays readable by older daemons.

Every file except ``manifest.json`` and ``manifest.sig`` must be listed in the manifest and match
its sha256; an unlisted file is an error too, so what is verified is exactly what is loaded.
The *bundle sha256* named in reports is the sha256 of ``manifest.json``: it pins every file.

This module reads, verifies and writes bundles; it never imports OpenVINO (compiling is
``daemon.scan.inference``'s job) or TensorFlow.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.errors import BundleError
from daemon.shared.preprocess import PreprocessSpec

FORMAT_VERSION = 1
"""The format of a bundle with a classifier only."""
NETWORKS_FORMAT_VERSION = 2
"""The format of a bundle with further networks (``networks``)."""
SUPPORTED_FORMAT_VERSIONS = frozenset({FORMAT_VERSION, NETWORKS_FORMAT_VERSION})
SEGMENTER = "segmenter"
SEGMENTER_CHANNELS = ("dwi", "adc")
"""The segmenter's input channels in order (``input.channels``; a bundle may use the first only)."""
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
LABELS = "labels.json"
PREPROCESS = "preprocess.json"
DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "default"
PLAIN_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
"""A bundle name or version: letters, digits and ``.+_-``, at most 64 characters."""
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Variant:
    """One compiled form of the network inside a bundle."""

    name: str
    xml: Path
    bin: Path
    precision: str


@dataclass(frozen=True)
class Network:
    """A further network of a format 2 bundle (today: the lesion segmenter)."""

    name: str
    task: str
    variants: dict[str, Variant]
    default_variant: str
    input_name: str
    input_shape: tuple[int, ...]
    channels: tuple[str, ...]
    output: str
    preprocess: PreprocessSpec
    threshold: float
    min_lesion_px: int
    spec: dict[str, Any]
    """The manifest entry as written."""

    def variant(self, preferred: str) -> Variant:
        """The named variant; ``auto``, or a name the network lacks: its ``default_variant``."""
        return self.variants.get(preferred, self.variants[self.default_variant])


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, ready for `daemon.scan.inference` to compile."""

    path: Path
    name: str
    version: str
    sha256: str
    created_at: str
    labels: tuple[str, ...]
    preprocess: PreprocessSpec
    variants: dict[str, Variant]
    manifest: dict[str, Any]
    outputs: dict[str, str] | None = None
    """IR output name by role (``classes``, ``in_scope``); None: one output, the classes."""
    temperature: float | None = None
    """Calibration temperature; None: serve the network's probabilities as they are."""
    finding_thresholds: dict[str, Any] | None = None
    """``thresholds.finding`` of the manifest: negative_class, acute_infarct, no_acute_infarct."""
    in_scope_threshold: float | None = None
    """Refuse an image whose in_scope output is below this (two-output bundles)."""
    parent: dict[str, str] | None = None
    """name, version, sha256 of the bundle this one was fine-tuned from."""
    networks: dict[str, Network] | None = None
    """Format 2: further networks by name; None for a classifier-only bundle."""

    @property
    def segmenter(self) -> Network | None:
        """The lesion segmenter, when the bundle holds one."""
        return (self.networks or {}).get(SEGMENTER)

    def variant(self, preferred: str) -> Variant:
        """The named variant; ``auto``, or a name the bundle lacks: its ``default_variant``."""
        if preferred in self.variants:
            return self.variants[preferred]
        return self.variants[self.manifest.get("default_variant", "fp16")]


def _safe_relpath(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name} is missing")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name} is not valid JSON: {exc}")
    return None


def _check_files(root: Path, files: Any, problems: list[str]) -> None:
    if not isinstance(files, dict) or not files:
        problems.append("manifest 'files' must be a non-empty mapping of path -> {sha256, bytes}")
        return
    for name, entry in sorted(files.items()):
        if not _safe_relpath(name):
            problems.append(f"manifest lists an unsafe path {name!r}")
            continue
        path = root / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{name} is listed in the manifest but is not a regular file here")
            continue
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        actual = sha256_file(path)
        if actual != expected:
            problems.append(f"{name}: sha256 {actual} does not match the manifest ({expected})")
    listed = set(files) | {MANIFEST, SIGNATURE}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in listed:
            problems.append(f"{rel} is in the bundle but not listed in the manifest")


def verify(path: Path) -> dict[str, Any]:
    """Check a bundle folder against its manifest and return the manifest.

    Raises:
        BundleError: listing every problem found (missing file, checksum, format version...).
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(str(root), ["not a folder (unpack a .tar.gz with 'infarctwatch deploy')"])
    problems: list[str] = []
    manifest = _read_json(root / MANIFEST, problems)
    if not isinstance(manifest, dict):
        if not problems:
            problems.append("manifest.json must hold a JSON object")
        raise BundleError(str(root), problems)
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_FORMAT_VERSIONS))
        raise BundleError(
            str(root),
            [f"format_version {version!r} is not supported (this build reads {supported})"],
        )
    required = ("name", "version", "created_at", "variants", "files")
    problems.extend(f"manifest is missing {key!r}" for key in required if key not in manifest)
    if not PLAIN_VERSION.match(str(manifest.get("version", ""))):
        problems.append(f"version {manifest.get('version')!r} is not a plain version string")
    _check_files(root, manifest.get("files"), problems)
    if problems:
        raise BundleError(str(root), problems)
    return manifest


def _read_variants(
    root: Path, entries: Any, files: dict[str, Any], problems: list[str], owner: str = ""
) -> dict[str, Variant]:
    variants: dict[str, Variant] = {}
    if not isinstance(entries, dict):
        problems.append(f"{owner}'variants' must be a mapping of name -> {{xml, bin, precision}}")
        return variants
    for name, entry in entries.items():
        try:
            parts = (entry["xml"], entry["bin"])
        except (KeyError, TypeError):
            problems.append(f"{owner}variant {name!r} must name its 'xml' and 'bin' files")
            continue
        unlisted = [part for part in parts if part not in files]
        problems.extend(
            f"{owner}variant {name!r} uses {p}, which the manifest does not list" for p in unlisted
        )
        variants[name] = Variant(
            name, root / parts[0], root / parts[1], str(entry.get("precision", name))
        )
    return variants


_ROLES = ("classes", "in_scope")


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _read_outputs(manifest: dict[str, Any], problems: list[str]) -> dict[str, str] | None:
    outputs = manifest.get("outputs")
    if outputs is None:
        return None
    if (
        not isinstance(outputs, dict)
        or "classes" not in outputs
        or not set(outputs) <= set(_ROLES)
        or not all(isinstance(v, str) and v for v in outputs.values())
    ):
        problems.append(
            "manifest 'outputs' must map 'classes' (and optionally 'in_scope') to output names"
        )
        return None
    return dict(outputs)


def _read_temperature(manifest: dict[str, Any], problems: list[str]) -> float | None:
    calibration = manifest.get("calibration")
    if calibration is None:
        return None
    t = calibration.get("temperature") if isinstance(calibration, dict) else None
    if (
        not isinstance(calibration, dict)
        or calibration.get("method") != "temperature"
        or not isinstance(t, int | float)
        or isinstance(t, bool)
        or not 0.0 < t < 1000.0
    ):
        problems.append(
            "manifest 'calibration' must be {'method': 'temperature', 'temperature': T > 0}"
        )
        return None
    return float(t)


def _read_thresholds(
    manifest: dict[str, Any], labels: Any, outputs: dict[str, str] | None, problems: list[str]
) -> tuple[dict[str, Any] | None, float | None]:
    thresholds = manifest.get("thresholds")
    if thresholds is None:
        return None, None
    if not isinstance(thresholds, dict):
        problems.append("manifest 'thresholds' must be a mapping")
        return None, None
    finding = thresholds.get("finding")
    if finding is not None and (
        not isinstance(finding, dict)
        or not _probability(finding.get("acute_infarct"))
        or not _probability(finding.get("no_acute_infarct"))
        or not isinstance(labels, list)
        or finding.get("negative_class") not in labels
    ):
        problems.append(
            "thresholds.finding needs acute_infarct and no_acute_infarct in [0, 1] and a "
            "negative_class named in labels.json"
        )
        finding = None
    scope = thresholds.get("in_scope")
    value = scope.get("threshold") if isinstance(scope, dict) else None
    if scope is not None and (not _probability(value) or "in_scope" not in (outputs or {})):
        problems.append("thresholds.in_scope needs a threshold in [0, 1] and an in_scope output")
        value = None
    return finding, (float(value) if value is not None else None)


def _read_parent(manifest: dict[str, Any], problems: list[str]) -> dict[str, str] | None:
    parent = manifest.get("parent")
    if parent is None:
        return None
    if not isinstance(parent, dict) or not all(
        isinstance(parent.get(k), str) for k in ("name", "version", "sha256")
    ):
        problems.append("manifest 'parent' must give the parent's name, version and sha256")
        return None
    return {k: parent[k] for k in ("name", "version", "sha256")}


def _read_network_input(
    entry: dict[str, Any], owner: str, problems: list[str]
) -> tuple[str, tuple[int, ...], tuple[str, ...]] | None:
    """A network's input name, NHWC shape and channel names, or None (a problem noted)."""
    spec = entry.get("input")
    if isinstance(spec, dict):
        name, shape, channels = spec.get("name"), spec.get("shape"), spec.get("channels")
        if (
            isinstance(name, str)
            and isinstance(shape, list)
            and len(shape) == 4
            and all(isinstance(v, int) for v in shape)
            and isinstance(channels, list)
            and channels
            and tuple(channels) == SEGMENTER_CHANNELS[: len(channels)]
            and shape[3] == len(channels)
        ):
            return name, tuple(shape), tuple(channels)
    problems.append(
        f"{owner}'input' needs a name, an NHWC shape [N, H, W, C] and C channels from "
        f"{list(SEGMENTER_CHANNELS)} in that order"
    )
    return None


def _read_network_preprocess(
    root: Path, entry: dict[str, Any], files: dict[str, Any], owner: str, problems: list[str]
) -> PreprocessSpec | None:
    """The network's own preprocessing spec, or None (a problem noted)."""
    spec_file = entry.get("preprocess")
    if not isinstance(spec_file, str) or spec_file not in files:
        problems.append(f"{owner}'preprocess' must name a file the manifest lists")
        return None
    raw = _read_json(root / spec_file, problems)
    try:
        return PreprocessSpec.from_dict(raw if isinstance(raw, dict) else {})
    except (TypeError, ValueError) as exc:
        problems.append(f"{owner}{spec_file}: {exc}")
    return None


def _read_network(
    root: Path, name: str, entry: Any, files: dict[str, Any], problems: list[str]
) -> Network | None:
    """One entry of ``networks`` (today only the segmenter), or None (problems noted)."""
    owner = f"networks.{name}: "
    if name != SEGMENTER or not isinstance(entry, dict):
        problems.append(f"{owner}not a segmenter entry (this build knows {SEGMENTER!r})")
        return None
    count = len(problems)
    if entry.get("task") != "segment":
        problems.append(f"{owner}'task' must be 'segment'")
    variants = _read_variants(root, entry.get("variants"), files, problems, owner)
    default = entry.get("default_variant", "fp16")
    if variants and default not in variants:
        problems.append(f"{owner}default_variant {default!r} is not one of its variants")
    elif not variants:
        problems.append(f"{owner}has no variants")
    io = _read_network_input(entry, owner, problems)
    output = entry.get("output")
    if not isinstance(output, str) or not output:
        problems.append(f"{owner}'output' must name the lesion probability output")
    threshold = entry.get("threshold", 0.5)
    if not _probability(threshold) or threshold == 0:
        problems.append(f"{owner}'threshold' must be in (0, 1]")
    min_px = entry.get("min_lesion_px", 1)
    if not isinstance(min_px, int) or isinstance(min_px, bool) or min_px < 1:
        problems.append(f"{owner}'min_lesion_px' must be a whole number >= 1")
    preprocess = _read_network_preprocess(root, entry, files, owner, problems)
    if len(problems) > count or io is None or preprocess is None:
        return None
    return Network(
        name=name,
        task="segment",
        variants=variants,
        default_variant=str(default),
        input_name=io[0],
        input_shape=io[1],
        channels=io[2],
        output=str(output),
        preprocess=preprocess,
        threshold=float(threshold),
        min_lesion_px=int(min_px),
        spec=entry,
    )


def _read_networks(
    root: Path, manifest: dict[str, Any], problems: list[str]
) -> dict[str, Network] | None:
    networks = manifest.get("networks")
    if manifest.get("format_version") == FORMAT_VERSION:
        if networks is not None:
            problems.append("'networks' needs format_version 2")
        return None
    if not isinstance(networks, dict) or not networks:
        problems.append("format_version 2 needs 'networks', a mapping of name -> network")
        return None
    read = {n: _read_network(root, n, e, manifest["files"], problems) for n, e in networks.items()}
    return {n: network for n, network in read.items() if network is not None}


def load_bundle(path: Path) -> Bundle:
    """Verify a bundle folder and read its labels, preprocessing and variants.

    Raises:
        BundleError: the bundle fails verification or its contents do not fit together.
    """
    root = Path(path).resolve()
    manifest = verify(root)
    problems: list[str] = []
    labels = _read_json(root / LABELS, problems)
    raw_spec = _read_json(root / PREPROCESS, problems)
    if labels is not None and (
        not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels)
    ):
        problems.append("labels.json must be a non-empty list of strings")
    spec = PreprocessSpec()
    if isinstance(raw_spec, dict):
        try:
            spec = PreprocessSpec.from_dict(raw_spec)
        except (TypeError, ValueError) as exc:
            problems.append(f"preprocess.json: {exc}")
    variants = _read_variants(root, manifest.get("variants") or {}, manifest["files"], problems)
    if not variants:
        problems.append("the bundle has no model variants")
    default = manifest.get("default_variant", "fp16")
    if variants and default not in variants:
        problems.append(f"default_variant {default!r} is not one of the variants")
    outputs = _read_outputs(manifest, problems)
    temperature = _read_temperature(manifest, problems)
    finding, in_scope = _read_thresholds(manifest, labels, outputs, problems)
    parent = _read_parent(manifest, problems)
    networks = _read_networks(root, manifest, problems)
    keras_model = manifest.get("keras_model")
    if keras_model is not None and keras_model not in manifest["files"]:
        problems.append(f"keras_model {keras_model!r} is not a file the manifest lists")
    if problems:
        raise BundleError(str(root), problems)
    return Bundle(
        path=root,
        name=str(manifest["name"]),
        version=str(manifest["version"]),
        sha256=sha256_file(root / MANIFEST),
        created_at=str(manifest["created_at"]),
        labels=tuple(labels),
        preprocess=spec,
        variants=variants,
        manifest=manifest,
        outputs=outputs,
        temperature=temperature,
        finding_thresholds=finding,
        in_scope_threshold=in_scope,
        parent=parent,
        networks=networks,
    )


def write_manifest(
    root: Path,
    *,
    name: str,
    version: str,
    variants: dict[str, dict[str, str]],
    input_spec: dict[str, Any],
    metrics_summary: dict[str, Any],
    default_variant: str = "fp16",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash every file in ``root`` and write ``manifest.json``; return the manifest.

    ``variants`` maps a variant name to ``{"xml": ..., "bin": ..., "precision": ...}``.
    The trainer calls this last, once every other file of the bundle is in place. With
    ``networks`` in ``extra`` the bundle is format 2, else format 1.
    """
    if not PLAIN_VERSION.match(version):
        raise ValueError(f"version {version!r} is not a plain version string")
    files = {}
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in (MANIFEST, SIGNATURE):
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest: dict[str, Any] = {
        "format_version": (
            NETWORKS_FORMAT_VERSION if (extra or {}).get("networks") else FORMAT_VERSION
        ),
        "name": name,
        "version": version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "default_variant": default_variant,
        "variants": variants,
        "input": input_spec,
        "labels": LABELS,
        "preprocess": PREPROCESS,
        "metrics_summary": metrics_summary,
        "files": files,
        **(extra or {}),
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (Path(root) / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


CURRENT = "current"
"""In a models folder managed by ``infarctwatch deploy``: the symlink to the version in service."""


def is_models_folder(path: Path | None) -> bool:
    """True when ``path`` is a deploy-managed models folder (its ``current`` is a symlink)."""
    return path is not None and (Path(path) / CURRENT).is_symlink()


def designated_bundle(path: Path | None) -> Path:
    """The bundle folder ``model.path`` designates right now, resolved.

    ``None``: the embedded default bundle. A models folder (with ``current``): the version
    ``current`` points at. Anything else: the bundle folder itself.
    """
    if path is None:
        return DEFAULT_BUNDLE
    current = Path(path) / CURRENT
    if os.path.lexists(current):
        return current.resolve()
    return Path(path).resolve()
