"""Non-DWI pictures nobody on the team rendered, as an out-of-scope set for `infarctwatch evaluate`.

``.venv/bin/python scripts/public_pictures.py OUT``

Every image of pydicom's and pydicom-data's test files that decodes to a 2-D picture of at least
48 pixels a side (CT, MR T1/T2, CR, ultrasound, nuclear medicine, secondary captures; the middle
frame of a multi-frame object, colour averaged to grey), every axial slice of nibabel's real
echo-planar brain volume (``example4d.nii.gz``: a T2*-weighted fMRI EPI, bright CSF, the look of a
b0 image), every tenth axial slice of nilearn's MNI152 T1 template (skull-stripped, white matter
bright) and matplotlib's sample pictures (two photographs, a logo, two elevation maps and a
sagittal MR slice of a head). Each is windowed from its 1st to its 99th percentile and written as
an 8-bit PNG and as a JPEG (quality 90): the headers are gone, so only the pixels can refuse them.
One folder per kind (``pydicom_<Modality>``, ``nibabel_epi``, ``mni_t1``, ``matplotlib_<what>``);
``manifest.csv`` has the columns ``file``, ``kind``, ``image_id`` and ``expected_code``
(``OUT_OF_SCOPE_IMAGE``), which `infarctwatch evaluate` reads as an out-of-scope set:

    .venv/bin/python scripts/public_pictures.py /tmp/public
    .venv/bin/infarctwatch evaluate /tmp/public --out /tmp/public-eval

None of these files comes from `trainer.synth`; they are public test data shipped in PyPI packages
(pydicom, pydicom-data, nibabel, nilearn, matplotlib), so nothing is downloaded. Needs the
``[train]`` extra (nilearn). Research use only.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import matplotlib as mpl
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
from nilearn.datasets import load_mni152_template
from PIL import Image

MIN_SIDE = 48
EXPECTED = "OUT_OF_SCOPE_IMAGE"


def _grey(pixels: npt.NDArray[np.generic]) -> npt.NDArray[np.float64] | None:
    """One 2-D grey picture of a decoded DICOM pixel array (None: not a picture)."""
    array = np.asarray(pixels, dtype=np.float64)
    if array.ndim == 4:  # frames x rows x columns x samples
        array = array[array.shape[0] // 2]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    elif array.ndim == 3:
        array = array[array.shape[0] // 2]
    if array.ndim != 2 or min(array.shape) < MIN_SIDE:
        return None
    return array


def _dicom_suites() -> list[Path]:
    """The files of pydicom's test folder and of pydicom-data, as installed.

    Nothing is fetched: pydicom's own `get_testdata_files` would try to download the files it lacks.
    """
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    store = importlib.util.find_spec("data_store")  # pydicom-data
    if store is not None and store.submodule_search_locations:
        roots.append(Path(next(iter(store.submodule_search_locations))) / "data")
    return sorted(
        path
        for root in roots
        for path in root.glob("*")
        if path.is_file() and path.suffix not in {".py", ".json", ".txt"}
    )


def _pydicom_pictures() -> list[tuple[str, str, npt.NDArray[np.float64]]]:
    found = []
    for path in _dicom_suites():
        try:
            ds = pydicom.dcmread(path)
            grey = _grey(ds.pixel_array)
        except Exception:  # noqa: BLE001, S112 - not a decodable picture: not part of the set
            continue
        if grey is not None:
            modality = str(ds.get("Modality") or "NA")
            found.append((f"pydicom_{modality}", Path(path).stem, grey))
    return found


def _epi_slices() -> list[tuple[str, str, npt.NDArray[np.float64]]]:
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    image: Any = nib.load(path)  # typed FileBasedImage, which has no dataobj
    volume = np.asanyarray(image.dataobj)[..., 0].astype(np.float64)
    return [("nibabel_epi", f"z{z:02d}", np.rot90(volume[:, :, z])) for z in range(volume.shape[2])]


def _template_slices() -> list[tuple[str, str, npt.NDArray[np.float64]]]:
    volume = load_mni152_template(resolution=1).get_fdata()
    return [("mni_t1", f"z{z:03d}", np.rot90(volume[:, :, z])) for z in range(30, 160, 10)]


def _matplotlib_pictures() -> list[tuple[str, str, npt.NDArray[np.float64]]]:
    """The sample data of matplotlib: two photographs, a logo, two elevation maps, an MR slice."""
    folder = Path(mpl.get_data_path()) / "sample_data"

    def picture(name: str) -> npt.NDArray[np.float64]:
        with Image.open(folder / name) as image:
            return np.asarray(image.convert("L"), dtype=np.float64)

    def elevation(name: str, key: str) -> npt.NDArray[np.float64]:
        with np.load(folder / name) as data:
            return np.asarray(data[key], dtype=np.float64)

    with gzip.open(folder / "s1045.ima.gz") as raw:  # 256 x 256 16-bit, no header
        sagittal = np.frombuffer(raw.read(), np.uint16).reshape(256, 256).astype(np.float64)
    return [
        ("matplotlib_photo", "grace_hopper", picture("grace_hopper.jpg")),
        ("matplotlib_photo", "present", picture("Minduka_Present_Blue_Pack.png")),
        ("matplotlib_graphic", "logo", picture("logo2.png")),
        ("matplotlib_map", "jacksboro_dem", elevation("jacksboro_fault_dem.npz", "elevation")),
        ("matplotlib_map", "topobathy", elevation("topobathy.npz", "topo")),
        ("matplotlib_mr", "sagittal_head", sagittal),
    ]


def _eight_bit(picture: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8] | None:
    low, high = (float(v) for v in np.percentile(picture, [1, 99]))
    if high <= low:
        return None
    return (np.clip((picture - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def write_set(out: Path) -> int:
    """Write the set into ``out`` (created); returns the number of files."""
    out.mkdir(parents=True)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on odd test files
        pictures = _pydicom_pictures() + _epi_slices() + _template_slices() + _matplotlib_pictures()
    for number, (kind, stem, picture) in enumerate(pictures):
        eight = _eight_bit(picture)
        if eight is None:
            continue
        (out / kind).mkdir(exist_ok=True)
        image_id = f"p{number:04d}"
        formats: tuple[tuple[str, dict[str, Any]], ...] = ((".png", {}), (".jpg", {"quality": 90}))
        for suffix, options in formats:
            name = f"{kind}/{image_id}_{stem}{suffix}"
            Image.fromarray(eight).save(out / name, **options)
            rows.append(
                {"file": name, "kind": kind, "image_id": image_id, "expected_code": EXPECTED}
            )
    with (out / "manifest.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "kind", "image_id", "expected_code"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    """Command line: write the set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create")
    args = parser.parse_args()
    print(f"wrote {write_set(args.out)} pictures to {args.out} (manifest.csv)")


if __name__ == "__main__":
    main()
