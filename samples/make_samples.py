"""Regenerate ``samples/``: a few synthetic DWI slices made by ``infarctwatch synth``.

Run ``scripts/make-samples`` (needs the ``[train]`` extra, i.e. the repo's ``.venv``). It asks the
generator for one case of each class in `CLASSES`, one slice each, in the formats of `FORMATS`,
from the fixed seed `SEED`, then copies the DWI files here under readable names and writes:

* ``manifest.csv``: file, true class, format, lesions, sha256 of every sample (from synth's own
  manifest; the daemon never sees it);
* ``synth.json``: the generator's provenance record, credits of the anatomy included;
* the table and the credits in ``README.md`` between the ``samples:begin``/``samples:end`` marks.

``scripts/make-samples --check`` regenerates into a temporary folder and only compares: exit 0 when
the committed samples are exactly what the current generator makes, 1 otherwise.

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

from trainer.synth import ManifestRow, generate

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
MANIFEST = "manifest.csv"
PROVENANCE = "synth.json"
README = "README.md"
BEGIN, END = "<!-- samples:begin -->", "<!-- samples:end -->"
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
            for record in csv.DictReader(handle):
                (HERE / Path(record["file"]).name).unlink(missing_ok=True)
    for sample in samples:
        shutil.copyfile(sample.source, HERE / sample.file)
    with old.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sample.record() for sample in samples)
    text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
    (HERE / PROVENANCE).write_text(text, encoding="utf-8")
    readme = HERE / README
    current = readme.read_text(encoding="utf-8")
    start, end = current.find(BEGIN), current.find(END)
    if start < 0 or end < start:
        msg = f"{readme} lacks the {BEGIN} ... {END} marks"
        raise SystemExit(msg)
    block = readme_block(samples, provenance)
    readme.write_text(current[:start] + block + current[end + len(END) :], encoding="utf-8")


def check(samples: list[Sample]) -> list[str]:
    """Differences between freshly generated samples and the committed ones."""
    with (HERE / MANIFEST).open(encoding="utf-8", newline="") as handle:
        committed = {r["file"]: r["sha256"] for r in csv.DictReader(handle)}
    fresh = {s.file: s.sha256 for s in samples}
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
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="infarctwatch-samples-") as tmp:
        out = Path(tmp) / "synth"
        samples = make(out)
        if args.check:
            problems = check(samples)
            for problem in problems:
                print(f"make-samples: {problem}", file=sys.stderr)
            if not problems:
                print(f"make-samples: the {len(samples)} samples match the generator")
            return 1 if problems else 0
        provenance = json.loads((out / "synth.json").read_text(encoding="utf-8"))
        install(samples, provenance)
    for sample in samples:
        print(f"{sample.file:<58} {sample.row.label}")
    print(f"wrote {len(samples)} samples ({sum(s.size for s in samples):,} bytes) to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
