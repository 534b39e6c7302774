"""Helpers shared by the daemon tests: real images, real DICOM, configs, a service thread."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np
import pydicom
import yaml
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from daemon.config import DaemonConfig, load_config
from daemon.intake.rules import CLAIM_AREA
from daemon.service.service import Service
from daemon.service.signals import Shutdown
from daemon.shared.bundle import DEFAULT_BUNDLE, MANIFEST, SIGNATURE, write_manifest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module, registered under ``name`` (its dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SCHEMA = json.loads((REPO / "schemas" / "report.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
_DATA_STORE = importlib.util.find_spec("data_store")
PYDICOM_DATA = (
    Path(next(iter(_DATA_STORE.submodule_search_locations or []))) / "data"
    if _DATA_STORE is not None
    else PYDICOM_FILES
)
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-4711-XYZ"
BIRTH_DATE = "19450317"


def brain_slice(size: int = 256, seed: int = 0, scale: float = 3000.0) -> np.ndarray:
    """A DWI-like slice: an ellipse of tissue, a brighter spot, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.float32)
    image[((yy - size / 2) / (0.35 * size)) ** 2 + ((xx - size / 2) / (0.3 * size)) ** 2 < 1] = 1.0
    image[
        ((yy - 0.4 * size) / (0.05 * size)) ** 2 + ((xx - 0.6 * size) / (0.05 * size)) ** 2 < 1
    ] = 1.6
    image += rng.random((size, size), dtype=np.float32) * 0.1
    return image * np.float32(scale / 1.7)


def image_bytes(fmt: str, *, size: int = 256, seed: int = 0, mode: str = "I;16") -> bytes:
    """A brain slice encoded as ``fmt`` (PNG, JPEG, BMP, TIFF) in Pillow ``mode``."""
    pixels = brain_slice(size, seed)
    if mode == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16))
    elif mode == "F":
        image = Image.fromarray(pixels.astype(np.float32))
    else:
        eight = Image.fromarray((pixels / pixels.max() * 255).astype(np.uint8))
        image = eight if mode == "L" else eight.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels over almost no data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def new_dataset(sop_class: str) -> Dataset:
    """An empty dataset of ``sop_class`` with a new SOP Instance UID and explicit VR file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def dicom_bytes(
    frames: list[np.ndarray] | None = None,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    raw: bool = False,
) -> bytes:
    """A DWI-like MR DICOM with patient attributes that must never reach reports or logs.

    ``raw``: a bare dataset (no preamble, no file meta, implicit VR), as old exports write.
    """
    planes = frames if frames is not None else [brain_slice(128)]
    ds = new_dataset(MRImageStorage)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.DiffusionBValue = 1000
    ds.Rows, ds.Columns = planes[0].shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if len(planes) > 1:
        ds.NumberOfFrames = len(planes)
    stack = np.stack([np.clip(p, 0, 4095).astype(np.uint16) for p in planes])
    ds.PixelData = stack.tobytes()
    buffer = io.BytesIO()
    if raw:
        del ds.file_meta
        ds.preamble = None
        ds.save_as(buffer, enforce_file_format=False, implicit_vr=True, little_endian=True)
    else:
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_config(tmp_path: Path, **sections: Any) -> Path:
    """A YAML config with tmp folders, device CPU, fast timings, overridden by ``sections``.

    The made-up test slices (`brain_slice`: an ellipse and a spot) are no DWI brain slice to the
    default model's in_scope output, so unless ``thresholds`` is given, ``thresholds.in_scope`` is
    0 (nothing is refused for the picture): these tests are about the service's mechanics.
    Refusals have their own tests, which give ``thresholds`` (test_daemon_decisions, with bundles
    whose in_scope output the test controls; test_default_model_scope).
    """
    data: dict[str, Any] = {
        "incoming": str(tmp_path / "incoming"),
        "reports": str(tmp_path / "reports"),
        "work": str(tmp_path / "work"),
        "inference": {"device": "CPU"},
        "watch": {"stable_s": 0.3, "poll_interval_s": 0.1, "reconcile_interval_s": 30},
        "logging": {"format": "json"},
    }
    if "thresholds" not in sections:
        data["thresholds"] = {"in_scope": 0}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def make_config(tmp_path: Path, **sections: Any) -> DaemonConfig:
    """`write_config`, loaded by the real loader."""
    return load_config(write_config(tmp_path, **sections))


def claim_root(config: DaemonConfig) -> Path:
    """``<incoming>/.infarctwatch``: the daemon's claim area."""
    return config.incoming / CLAIM_AREA


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout} s waiting for {what}"
            raise AssertionError(msg)
        time.sleep(0.02)


def reports(folder: Path) -> dict[str, dict[str, Any]]:
    """Every report in ``folder`` by source name, each validated against the published schema."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        VALIDATOR.validate(document)
        assert path.stem == document["id"]
        assert document["source"]["name"] not in found, "two reports for one input"
        found[document["source"]["name"]] = document
    return found


def files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of every non-folder entry below ``folder`` (links not followed)."""
    if not folder.exists():
        return []
    out = []
    for parent, _dirs, names in os.walk(folder):
        out += [Path(parent, n).relative_to(folder).as_posix() for n in names]
    return sorted(out)


class ServiceThread:
    """Runs a real `Service` on a thread; `stop` asks it to drain and returns its exit code."""

    def __init__(self, config: DaemonConfig, *, once: bool = False) -> None:
        self.service = Service(config, once=once)
        self.shutdown = Shutdown()
        self.code: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-service")

    def _run(self) -> None:
        try:
            self.code = self.service.run(self.shutdown)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def start(self) -> ServiceThread:
        self._thread.start()
        wait_for(lambda: self.service.state != "starting" or not self._thread.is_alive())
        return self

    def join(self, timeout: float = 60.0) -> int:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "service did not stop"
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code

    def stop(self) -> int:
        self.shutdown.stop.set()
        return self.join()


@contextmanager
def running(config: DaemonConfig) -> Iterator[ServiceThread]:
    """A running service for the ``with`` block, stopped (and checked to exit 0) after it."""
    service = ServiceThread(config).start()
    try:
        yield service
    finally:
        code = service.stop()
    assert code == 0


def run_once(config: DaemonConfig) -> int:
    """``infarctwatch run --once`` in-process."""
    return ServiceThread(config, once=True).start().join()


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m daemon ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def spawn(
    *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m daemon ARGS`` in the background (stderr to ``log``)."""
    err = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            cwd=REPO,
        )
    finally:
        if log is not None and not isinstance(err, int):
            err.close()


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines a daemon subprocess wrote."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def write_slowly(path: Path, data: bytes, chunks: int = 5, pause: float = 0.1) -> None:
    """Write like a scanner: one open, several chunks with pauses, then close."""
    step = max(1, len(data) // chunks)
    with path.open("wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start : start + step])
            fh.flush()
            time.sleep(pause)


def versioned_bundle(
    folder: Path, version: str, *, change: Callable[[Path], None] | None = None
) -> Path:
    """The committed bundle copied to ``folder`` as ``version`` (manifest rewritten to match,
    its optional fields kept).

    ``change`` may alter the copy's files first; the manifest then matches the altered files,
    so the bundle verifies (e.g. a truncated model.bin that only OpenVINO can refuse).
    """
    seed = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text(encoding="utf-8"))
    shutil.copytree(DEFAULT_BUNDLE, folder, ignore=shutil.ignore_patterns(SIGNATURE))
    if change is not None:
        change(folder)
    write_manifest(
        folder,
        name=seed["name"],
        version=version,
        variants=seed["variants"],
        input_spec=seed["input"],
        metrics_summary=seed.get("metrics_summary", {}),
        default_variant=seed.get("default_variant", "fp16"),
        extra={k: v for k, v in seed.items() if k not in _WRITTEN_BY_WRITE_MANIFEST},
    )
    return folder


_WRITTEN_BY_WRITE_MANIFEST = frozenset(
    (
        "format_version",
        "name",
        "version",
        "created_at",
        "default_variant",
        "variants",
        "input",
        "labels",
        "preprocess",
        "metrics_summary",
        "files",
    )
)
"""Manifest keys `write_manifest` makes itself; the rest (outputs, calibration, ...) are copied."""


def point_current(models: Path, target: Path) -> None:
    """Switch ``models/current`` to ``target`` the way deploy does: a new symlink renamed over."""
    tmp = models / ".current-test"
    tmp.symlink_to(target.relative_to(models))
    tmp.replace(models / "current")


def small_png(seed: int) -> bytes:
    """A distinct 128x128 16-bit brain slice per ``seed``."""
    return image_bytes("PNG", size=128, seed=seed)


def drop(incoming: Path, name: str, data: bytes) -> None:
    """Put a file into incoming the way a careful sender does: a dotfile, then a rename."""
    tmp = incoming / f".{name}.part"
    tmp.write_bytes(data)
    tmp.rename(incoming / name)


def enhanced_mr(
    study: str,
    series: str,
    frames: list[tuple[float, float | None]],
    planes: list[np.ndarray] | None = None,
) -> bytes:
    """An Enhanced MR object: one frame per ``(z, b-value)``, placed by per-frame groups.

    A b-value of None leaves the frame without MR Diffusion. ``planes``: each frame's 16-bit
    pixels (default: the pixels of sample 05, a DWI slice, in every frame).
    """
    if planes is None:
        sample = pydicom.dcmread(REPO / "samples" / "05-right-basal-ganglia.dcm")
        planes = [sample.pixel_array] * len(frames)
    ds = new_dataset(EnhancedMRImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.InstanceNumber, ds.SeriesNumber = "MR", 1, 7
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.Rows, ds.Columns = planes[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = len(frames)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared = Dataset()
    shared.PlaneOrientationSequence = [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for z, b in frames:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [-120.0, -120.0, z]
        group.PlanePositionSequence = [position]
        if b is not None:
            diffusion = Dataset()
            diffusion.DiffusionBValue = b
            group.MRDiffusionSequence = [diffusion]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = np.stack([np.asarray(p, np.uint16) for p in planes]).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
