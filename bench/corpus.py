"""A benchmark corpus: thousands of distinct scan files made by perturbing the committed samples.

Two kinds (`KINDS`): ``mixed``, every one of ``samples/`` in turn (synthetic DWI: scanner-matrix
PNG, 512x512 JPEG screenshot, 16-bit DICOM, in the samples' proportions), and ``png``, the PNG
samples only (256x256, 8-bit: the cheapest decode, so inference and the daemon's own work per scan
dominate). Every file is a sample with a few pixels nudged by one grey level, at places
drawn from a per-file seed, then encoded again the way the original was (PNG: same mode and zlib
level as the generator; JPEG: the original's quantisation tables and subsampling, plus a comment
with the file's number; DICOM: same dataset with new SOP instance UIDs). So each file decodes at
the cost of a real sample, and no two files have the same sha256. The corpus is cached in its
folder and rebuilt when the samples or the parameters change.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, JpegImagePlugin
from pydicom.uid import generate_uid

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CORPUS_VERSION = 1
KINDS = ("mixed", "png")
"""``mixed``: every sample in turn; ``png``: the PNG samples only."""
_NUDGED_PIXELS = 64
_PNG_LEVEL = 1  # what `infarctwatch synth` writes


@dataclass(frozen=True)
class Corpus:
    """The files of a corpus, in order, and what they are."""

    folder: Path
    files: tuple[Path, ...]
    formats: dict[str, int]
    total_bytes: int


def _samples(kind: str) -> list[tuple[Path, str]]:
    if kind not in KINDS:
        msg = f"unknown corpus kind {kind!r} (one of {', '.join(KINDS)})"
        raise ValueError(msg)
    with (SAMPLES / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        rows = [(SAMPLES / row["file"], row["format"]) for row in csv.DictReader(handle)]
    return [(path, fmt) for path, fmt in rows if kind in ("mixed", fmt)]


def _nudge(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy with a few pixels moved by one grey level (never out of the type's range)."""
    out = pixels.copy()
    flat = out.reshape(-1)
    where = rng.choice(flat.size, _NUDGED_PIXELS, replace=False)
    high = np.iinfo(out.dtype).max
    up = flat[where] < high
    flat[where[up]] += 1
    flat[where[~up]] -= 1
    return out


def _png(data: bytes, rng: np.random.Generator) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        mode = image.mode
        pixels = np.asarray(image)
    buffer = io.BytesIO()
    Image.fromarray(_nudge(pixels, rng), mode=mode).save(buffer, "PNG", compress_level=_PNG_LEVEL)
    return buffer.getvalue()


def _jpeg(data: bytes, rng: np.random.Generator, index: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        if not isinstance(image, JpegImagePlugin.JpegImageFile):
            msg = "not a JPEG"
            raise TypeError(msg)
        tables = image.quantization
        subsampling = JpegImagePlugin.get_sampling(image)
        mode = image.mode
        pixels = np.asarray(image)
    buffer = io.BytesIO()
    Image.fromarray(_nudge(pixels, rng), mode=mode).save(
        buffer,
        "JPEG",
        qtables=tables,
        subsampling=subsampling,
        comment=f"infarctwatch bench {index}",  # the nudges alone may quantise away
    )
    return buffer.getvalue()


def _dicom(data: bytes, rng: np.random.Generator, index: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = _nudge(ds.pixel_array, rng).tobytes()
    uid = generate_uid(entropy_srcs=["infarctwatch-bench", str(index)])
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def perturb(data: bytes, fmt: str, index: int, seed: int = 0) -> bytes:
    """File number ``index`` of a corpus: ``data`` (a sample in format ``fmt``) nudged."""
    rng = np.random.default_rng([seed, index])
    if fmt == "png":
        return _png(data, rng)
    if fmt == "jpeg":
        return _jpeg(data, rng, index)
    if fmt == "dicom":
        return _dicom(data, rng, index)
    msg = f"unknown sample format {fmt!r}"
    raise ValueError(msg)


def _key(samples: list[tuple[Path, str]], count: int, seed: int, kind: str) -> str:
    tag = f"{CORPUS_VERSION}/{count}/{seed}" + ("" if kind == "mixed" else f"/{kind}")
    digest = hashlib.sha256(tag.encode())
    for path, fmt in samples:
        digest.update(fmt.encode() + path.read_bytes())
    return digest.hexdigest()


def build(folder: Path, count: int, seed: int = 0, kind: str = "mixed") -> Corpus:
    """``count`` distinct files of ``kind`` in ``folder`` (reused when built with the same inputs).

    Raises:
        RuntimeError: two files came out identical (a broken perturbation).
    """
    samples = _samples(kind)
    key = _key(samples, count, seed, kind)
    stamp = folder / "corpus.json"
    if stamp.is_file():
        meta = json.loads(stamp.read_text(encoding="utf-8"))
        if meta.get("key") == key:
            files = tuple(folder / name for name in meta["files"])
            if all(p.is_file() for p in files):
                return Corpus(folder, files, meta["formats"], meta["total_bytes"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    originals = [(path.read_bytes(), fmt, path) for path, fmt in samples]
    seen: set[str] = set()
    names: list[str] = []
    formats: dict[str, int] = {}
    total = 0
    for index in range(count):
        data, fmt, path = originals[index % len(originals)]
        out = perturb(data, fmt, index, seed)
        digest = hashlib.sha256(out).hexdigest()
        if digest in seen:
            msg = f"corpus file {index} repeats an earlier file"
            raise RuntimeError(msg)
        seen.add(digest)
        name = f"{index:05d}-{path.stem}{path.suffix}"
        (folder / name).write_bytes(out)
        names.append(name)
        formats[fmt] = formats.get(fmt, 0) + 1
        total += len(out)
    meta = {"key": key, "files": names, "formats": formats, "total_bytes": total}
    stamp.write_text(json.dumps(meta), encoding="utf-8")
    return Corpus(folder, tuple(folder / n for n in names), formats, total)
