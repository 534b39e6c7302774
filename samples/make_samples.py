"""Regenerate ``samples/``: a few synthetic DWI slices made by ``infarctwatch synth``.

Run ``scripts/make-samples`` (needs the ``[train]`` extra, i.e. the repo's ``.venv``). It asks the
generator for one case of each class in `CLASSES`, one slice each, in the formats of `FORMATS`,
from the fixed seed `SEED`, then copies the DWI files here under readable names and writes:

* ``manifest.csv``: file, true class, format, lesions, sha256 of every sample (from synth's own
  manifest; the daemon never sees it);
* ``synth.json``: the generator's provenance record, credits of the anatomy included;
* the table and the credits in ``README.md`` between the ``samples:begin``/``samples:end`` marks;
* ``series-01/``: one small complete DWI study from ``infarctwatch synth --series`` (`SERIES_CLASS`,
  `SERIES_SLICES` positions around the lesion at a `SERIES_MATRIX` matrix): a DWI series with the
  b0 and b1000 image of every position (``s01_b0.dcm``, ``s01_b1000.dcm``, ...) and its ADC
  series (``s01_adc.dcm``, ...), classic single-frame DICOM files; ``series-01.json`` lists them
  (series, b-value, instance number, sha256) with the generator's truth for the study (the
  slices that show the lesion, its volume and location).

``scripts/make-samples --check`` regenerates into a temporary folder and only compares: exit 0 when
the committed samples are exactly what the current generator makes, 1 otherwise. ``--series``
limits either to the sample series.

The seed is not the one ``scripts/train-default`` trains on, so no sample is a training image.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.synth import ManifestRow, SeriesSpec, generate

HERE = Path(__file__).resolve().parent
SEED = 20261126
"""Fixed; deliberately not the training seed of scripts/train-default (1)."""
FORMATS = "png=3,jpeg=3,dicom=2"
"""Three scanner-matrix PNGs, three 512x512 JPEG screenshots, two 16-bit DICOMs."""
CLASSES = (
    "No acute infarct",
    "Left frontal lobe",
    "Right temporal lobe",
    "Left thalamus",
    "Right basal ganglia",
    "Right cerebellar hemisphere",
    "Left centrum semiovale and right parietal lobe",
    "Right frontal and parietal lobes",
)
SERIES_CLASS = "Right parietal lobe"
SERIES_SLICES = 4
SERIES_MATRIX = 128
SERIES_DIR = "series-01"
SERIES_RECORD = "series-01.json"
MANIFEST = "manifest.csv"
PROVENANCE = "synth.json"
README = "README.md"
BEGIN, END = "<!-- samples:begin -->", "<!-- samples:end -->"
SERIES_BEGIN, SERIES_END = "<!-- series:begin -->", "<!-- series:end -->"
COLUMNS = (
    "file",
    "label",
    "format",
    "lesion_count",
    "lesion_regions",
    "lesion_area_mm2",
    "case_id",
    "synth_file",
    "bytes",
    "sha256",
)
FORMAT_NAMES = {"png": "PNG (scanner matrix)", "jpeg": "JPEG screenshot", "dicom": "DICOM MR"}


@dataclass(frozen=True)
class Sample:
    """One committed sample and where it came from."""

    file: str
    source: Path
    row: ManifestRow
    sha256: str
    size: int

    def record(self) -> dict[str, str]:
        """The sample's row in ``manifest.csv``."""
        return {
            "file": self.file,
            "label": self.row.label,
            "format": self.row.format,
            "lesion_count": str(self.row.lesion_count),
            "lesion_regions": self.row.lesion_regions,
            "lesion_area_mm2": f"{self.row.lesion_area_mm2:g}",
            "case_id": self.row.case_id,
            "synth_file": self.row.file,
            "bytes": str(self.size),
            "sha256": self.sha256,
        }


def slug(label: str) -> str:
    """``Left thalamus`` -> ``left-thalamus``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def make(out: Path) -> list[Sample]:
    """Run the generator into ``out`` and name the samples (nothing is copied yet)."""
    rows = generate(
        out,
        cases_per_class=1,
        slices_per_case=1,
        formats=FORMATS,
        seed=SEED,
        classes=CLASSES,
        adc=False,
    )
    order = {label: i for i, label in enumerate(CLASSES)}
    samples = []
    for number, row in enumerate(sorted(rows, key=lambda r: order[r.label]), start=1):
        source = out / row.file
        data = source.read_bytes()
        name = f"{number:02d}-{slug(row.label)}{source.suffix}"
        samples.append(Sample(name, source, row, hashlib.sha256(data).hexdigest(), len(data)))
    return samples


@dataclass(frozen=True)
class SeriesFile:
    """One file of the sample series and where it came from."""

    file: str
    """Name inside `SERIES_DIR`."""
    source: Path
    series: str
    """``dwi`` or ``adc``."""
    b_value: int | None
    instance: int
    sha256: str
    size: int

    def record(self) -> dict[str, object]:
        """The file's entry in `SERIES_RECORD`."""
        return {
            "file": self.file,
            "series": self.series,
            "b_value": self.b_value,
            "instance_number": self.instance,
            "bytes": self.size,
            "sha256": self.sha256,
        }


def make_series(out: Path) -> tuple[list[SeriesFile], dict[str, Any]]:
    """Run the generator's series mode into ``out``; name the files, return them and the truth."""
    rows = generate(
        out,
        cases_per_class=1,
        classes=(SERIES_CLASS,),
        negative_share="balanced",
        seed=SEED,
        matrix=SERIES_MATRIX,
        series=SeriesSpec(slices=SERIES_SLICES),
    )
    truth = json.loads((out / "series.json").read_text(encoding="utf-8"))["studies"][0]
    files = []
    for row in rows:
        position = f"s{row.slice_index:02d}"
        entries = (
            (row.b0_file, f"{position}_b0.dcm", "dwi", 0, row.b0_instance_number),
            (row.file, f"{position}_b{row.b_value}.dcm", "dwi", row.b_value, row.instance_number),
            (row.adc_file, f"{position}_adc.dcm", "adc", None, row.adc_instance_number),
        )
        for source, name, series, b_value, instance in entries:
            data = (out / source).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            files.append(
                SeriesFile(name, out / source, series, b_value, instance, digest, len(data))
            )
    return sorted(files, key=lambda f: f.file), truth


def series_record(files: list[SeriesFile], truth: dict[str, Any]) -> dict[str, Any]:
    """`SERIES_RECORD`: the files and the generator's truth (paths renamed to the samples')."""
    dwi = next(s for s in truth["series"] if s["kind"] == "dwi")
    return {
        "folder": SERIES_DIR,
        "label": truth["label"],
        "study_instance_uid": truth["study_instance_uid"],
        "files": [f.record() for f in files],
        "truth": {
            key: dwi[key]
            for key in (
                "series_instance_uid",
                "slices",
                "positions_mm",
                "thickness_mm",
                "spacing_mm",
                "pixel_mm",
                "matrix",
                "b_values",
                "lesions",
                "lesion_volume_ml",
                "mask_volume_ml",
            )
        }
        | {
            "adc_series_instance_uid": next(
                s["series_instance_uid"] for s in truth["series"] if s["kind"] == "adc"
            ),
            "lesion_slices": [
                {
                    "slice": item["slice"],
                    "position_mm": item["position_mm"],
                    "file": f"s{item['slice']:02d}_b{dwi['b_values'][1]}.dcm",
                    "area_mm2": item["area_mm2"],
                    "lesions": item["lesions"],
                }
                for item in dwi["lesion_slices"]
            ],
        },
    }


def readme_block(samples: list[Sample], provenance: dict[str, object]) -> str:
    """The generated part of README.md: the table and the credits."""
    lines = [
        BEGIN,
        "<!-- written by scripts/make-samples from manifest.csv and synth.json: do not edit -->",
        "",
        "| file | true class | format | lesions |",
        "|---|---|---|---|",
    ]
    for sample in samples:
        row = sample.row
        lesions = (
            f"{row.lesion_count}: {row.lesion_regions.replace(';', ', ')}"
            if row.lesion_count
            else "none"
        )
        lines.append(f"| `{sample.file}` | {row.label} | {FORMAT_NAMES[row.format]} | {lesions} |")
    total = sum(s.size for s in samples)
    lines += [
        "",
        (
            f"{len(samples)} files, {total / 1000:.0f} kB in all. Generator: `infarctwatch synth` "
            f"version {provenance['generator_version']}, seed {SEED}, formats `{FORMATS}`."
        ),
        "",
    ]
    lines += [
        "**Credits** (they travel with every image derived from this anatomy):",
        "",
    ]
    credit_lines = provenance.get("credits", [])
    lines += [f"* {line}" for line in credit_lines] if isinstance(credit_lines, list) else []
    lines += ["", f"_{provenance['disclaimer']}_", END]
    return "\n".join(lines)


def install(samples: list[Sample], provenance: dict[str, object]) -> None:
    """Replace the samples in this folder, the manifest, synth.json and the README table."""
    old = HERE / MANIFEST
    if old.is_file():
        with old.open(encoding="utf-8", newline="") as handle:
            for listed in csv.DictReader(handle):
                (HERE / Path(listed["file"]).name).unlink(missing_ok=True)
    for sample in samples:
        shutil.copyfile(sample.source, HERE / sample.file)
    with old.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sample.record() for sample in samples)
    text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    (HERE / PROVENANCE).write_text(text, encoding="utf-8")
    _replace_block(BEGIN, END, readme_block(samples, provenance))


def _replace_block(begin: str, end_mark: str, block: str) -> None:
    """Replace the README's text from ``begin`` to ``end_mark`` (both kept) with ``block``."""
    readme = HERE / README
    current = readme.read_text(encoding="utf-8")
    start, end = current.find(begin), current.find(end_mark)
    if start < 0 or end < start:
        msg = f"{readme} lacks the {begin} ... {end_mark} marks"
        raise SystemExit(msg)
    readme.write_text(current[:start] + block + current[end + len(end_mark) :], encoding="utf-8")


def series_block(series: list[SeriesFile], record: dict[str, Any]) -> str:
    """The generated part of README.md about the sample series."""
    lines = [
        SERIES_BEGIN,
        "<!-- written by scripts/make-samples from series-01.json: do not edit -->",
        "",
    ]
    truth = record["truth"]
    shown = ", ".join(item["file"] for item in truth["lesion_slices"])
    lesions = "; ".join(
        f"{lesion['region']}, {lesion['volume_ml']:g} mL in the patient, "
        f"{lesion['mask_volume_ml']:g} mL of it within the series' slabs"
        for lesion in truth["lesions"]
    )
    b = truth["b_values"][1]
    lines += [
        (
            f"**`{SERIES_DIR}/`**: one small DWI study ({record['label']}), "
            f"{len(series)} DICOM files, {sum(f.size for f in series) / 1000:.0f} kB: "
            f"a DWI series of {truth['slices']} positions with a b0 and a b{b} image each "
            f"(`sNN_b0.dcm`, `sNN_b{b}.dcm`), {truth['thickness_mm']:g} mm slices "
            f"{truth['spacing_mm']:g} mm apart, and its ADC series (`sNN_adc.dcm`). The "
            f"lesion ({lesions}) shows on {shown}. [`{SERIES_RECORD}`]({SERIES_RECORD}) "
            "lists every file and the generator's truth."
        ),
        "",
    ]
    lines.append(SERIES_END)
    return "\n".join(lines)


def install_series(series: list[SeriesFile], record: dict[str, Any]) -> None:
    """Replace the sample series, its record and its README paragraph."""
    folder = HERE / SERIES_DIR
    if folder.is_dir():
        for old_file in folder.glob("*.dcm"):
            old_file.unlink()
    folder.mkdir(exist_ok=True)
    for item in series:
        shutil.copyfile(item.source, folder / item.file)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    (HERE / SERIES_RECORD).write_text(text, encoding="utf-8")
    _replace_block(SERIES_BEGIN, SERIES_END, series_block(series, record))


def check(samples: list[Sample], series: list[SeriesFile]) -> list[str]:
    """Differences between freshly generated samples (and series) and the committed ones."""
    committed: dict[str, str] = {}
    if samples:
        with (HERE / MANIFEST).open(encoding="utf-8", newline="") as handle:
            committed = {r["file"]: r["sha256"] for r in csv.DictReader(handle)}
    record_path = HERE / SERIES_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        committed |= {f"{SERIES_DIR}/{f['file']}": f["sha256"] for f in record["files"]}
    fresh = {s.file: s.sha256 for s in samples}
    fresh |= {f"{SERIES_DIR}/{f.file}": f.sha256 for f in series}
    problems = [f"{name}: not made any more" for name in sorted(set(committed) - set(fresh))]
    problems += [f"{name}: new" for name in sorted(set(fresh) - set(committed))]
    problems += [
        f"{name}: different bytes"
        for name in sorted(set(fresh) & set(committed))
        if fresh[name] != committed[name]
    ]
    return problems


def main(argv: list[str]) -> int:
    """Regenerate the samples, or with ``--check`` compare them with the generator's output."""
    parser = argparse.ArgumentParser(prog="scripts/make-samples", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="compare only: exit 1 if the samples differ"
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help=f"only the sample series ({SERIES_DIR}/, {SERIES_RECORD}), not the single slices",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="infarctwatch-samples-") as tmp:
        out = Path(tmp) / "synth"
        samples = [] if args.series else make(out)
        series, truth = make_series(Path(tmp) / "series")
        if args.check:
            problems = check(samples, series)
            for problem in problems:
                print(f"make-samples: {problem}", file=sys.stderr)
            if not problems:
                print(
                    f"make-samples: the {len(samples)} samples and the {len(series)} files of "
                    f"{SERIES_DIR}/ match the generator"
                )
            return 1 if problems else 0
        if samples:
            provenance = json.loads((out / "synth.json").read_text(encoding="utf-8"))
            install(samples, provenance)
        install_series(series, series_record(series, truth))
    for sample in samples:
        print(f"{sample.file:<58} {sample.row.label}")
    if samples:
        print(f"wrote {len(samples)} samples ({sum(s.size for s in samples):,} bytes) to {HERE}")
    print(
        f"wrote the series {SERIES_DIR}/: {len(series)} files "
        f"({sum(f.size for f in series):,} bytes) and {SERIES_RECORD}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
