"""DICOM decoder plugins compared: decode time per transfer syntax, installed size, licence.

Run in a venv that holds the candidates (the edge venv holds only the chosen ones)::

    python3.11 -m venv /tmp/codecs && /tmp/codecs/bin/pip install pydicom numpy pillow \
        pydicom-data pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle pyjpegls \
        python-gdcm
    /tmp/codecs/bin/python bench/dicom_codecs.py [--repeat 30]

For each real test file (pydicom's own and pydicom-data's, one or two per transfer syntax, the
files a PACS archive is made of: MR, CT, NM in 8 to 16 bits) and each installed plugin that
pydicom offers for its syntax, the pixels of the frame the daemon would classify (the middle one)
are decoded ``--repeat`` times; the median wall time is printed, with the largest difference from
the first plugin's pixels (0 means the plugins agree). Then the same for the project's DWI sample
(256x256, the daemon's usual input) encoded into each syntax the installed encoders write
(pyjpegls, pylibjpeg-openjpeg, pydicom's RLE), against its uncompressed pixels. Then the
installed size of each candidate package (the sum of the files its wheel installed) and the
licence its metadata declares. Prints figures only.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from machine import cpu_lines
from pydicom import uid
from pydicom.pixels import (  # type: ignore[attr-defined]  # public, but not marked re-exported
    get_decoder,
    pixel_array,
)

if TYPE_CHECKING:
    from importlib.metadata import PackageMetadata

PACKAGES = (
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
    "python-gdcm",
    "pydicom",
    "pillow",
)
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
FILES = (
    "JPGExtended.dcm",
    "JPEG-lossy.dcm",
    "JPEG-LL.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    "MR_small_jp2klossless.dcm",
    "MR2_J2KR.dcm",
    "MR2_J2KI.dcm",
    "MR_small_RLE.dcm",
    "emri_small_RLE.dcm",
    "image_dfl.dcm",
    "MR_small_bigendian.dcm",
)


def _data_store() -> Path:
    spec = importlib.util.find_spec("data_store")  # pydicom-data's package
    if spec is None:
        return PYDICOM_FILES
    return Path(next(iter(spec.submodule_search_locations or []))) / "data"


def _median_ms(ds: pydicom.Dataset, plugin: str, index: int | None, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        pixel_array(ds, index=index, decoding_plugin=plugin)
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _decode_table(repeat: int) -> None:
    print(f"{'transfer syntax':<44} {'file':<32} {'size':>11} {'plugin':<10} {'ms':>8} {'diff':>6}")
    stores = (PYDICOM_FILES, _data_store())
    for name in FILES:
        path = next((s / name for s in stores if (s / name).exists()), None)
        if path is None:
            print(f"{'?':<44} {name:<32} (not found)")
            continue
        ds = pydicom.dcmread(path)
        syntax = ds.file_meta.TransferSyntaxUID
        frames = int(ds.get("NumberOfFrames") or 1)
        index = frames // 2 if frames > 1 else None
        shape = f"{ds.Columns}x{ds.Rows}x{frames}"
        decoder = get_decoder(syntax)
        plugins = list(decoder.available_plugins) or ["(built in)"]
        reference = None
        for plugin in plugins:
            choice = "" if plugin == "(built in)" else plugin
            try:
                pixels = pixel_array(ds, index=index, decoding_plugin=choice)
            except Exception as exc:  # noqa: BLE001 - a plugin's failure is a result too
                reason = str(exc).strip().splitlines()[-1].strip()[:90]
                print(
                    f"{syntax.name[:44]:<44} {name:<32} {shape:>11} {plugin:<10} failed: {reason}"
                )
                continue
            reference = pixels if reference is None else reference
            diff = np.abs(pixels.astype(np.float64) - reference.astype(np.float64)).max()
            ms = _median_ms(ds, choice, index, repeat)
            print(f"{syntax.name[:44]:<44} {name:<32} {shape:>11} {plugin:<10} {ms:8.2f} {diff:6g}")


def _sample_table(repeat: int) -> None:
    """The project's DWI sample (256x256, 16-bit) encoded into each syntax pydicom can write."""
    sample = Path(__file__).resolve().parent.parent / "samples" / "05-right-basal-ganglia.dcm"
    original = pydicom.dcmread(sample).pixel_array.astype(np.float64)
    print(f"\nDWI sample {sample.name}, 256x256 16-bit; diff against the uncompressed pixels")
    print(f"{'transfer syntax':<44} {'bytes':>7} {'plugin':<10} {'ms':>8} {'diff':>6}")
    options: dict[uid.UID, dict[str, Any]] = {
        uid.RLELossless: {},
        uid.JPEGLSLossless: {},
        uid.JPEGLSNearLossless: {"jls_error": 3},
        uid.JPEG2000Lossless: {},
        uid.JPEG2000: {"j2k_cr": [15]},
    }
    for syntax, kwargs in options.items():
        ds = pydicom.dcmread(sample)
        try:
            ds.compress(syntax, **kwargs)
        except Exception as exc:  # noqa: BLE001 - no encoder installed: say so
            print(f"{syntax.name[:44]:<44} cannot encode: {str(exc).splitlines()[0][:60]}")
            continue
        size = len(ds.PixelData)
        for plugin in get_decoder(syntax).available_plugins:
            pixels = pixel_array(ds, decoding_plugin=plugin).astype(np.float64)
            diff = np.abs(pixels - original).max()
            ms = _median_ms(ds, plugin, None, repeat)
            print(f"{syntax.name[:44]:<44} {size:7} {plugin:<10} {ms:8.2f} {diff:6g}")


def _field(meta: PackageMetadata, name: str) -> str | None:
    """The field's first value or None, as ``meta.get`` (which typeshed has from Python 3.12 on)."""
    values = meta.get_all(name)
    return str(values[0]) if values else None


def _package_table() -> None:
    print(f"\n{'package':<20} {'version':<10} {'installed MB':>12}  licence")
    for package in PACKAGES:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            print(f"{package:<20} (not installed)")
            continue
        size = sum(f.size or 0 for f in dist.files or [])
        meta = dist.metadata
        licence = _field(meta, "License-Expression") or _field(meta, "License") or ""
        classifiers = [
            c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("Lic")
        ]
        text = licence.splitlines()[0][:40] if licence else ""
        shown = "; ".join(filter(None, [text, *classifiers]))
        print(f"{package:<20} {dist.version:<10} {size / 1e6:12.1f}  {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="decodes per file and plugin")
    args = parser.parse_args()
    print("\n".join(cpu_lines()))
    print(f"Python {platform.python_version()}; pydicom {pydicom.__version__}")
    _decode_table(args.repeat)
    _sample_table(args.repeat)
    _package_table()


if __name__ == "__main__":
    main()
