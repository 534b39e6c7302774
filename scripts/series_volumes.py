"""Series lesion volumes of a model against the synthetic truth, through the real daemon.

``.venv/bin/python scripts/series_volumes.py [--profile train|shifted] [--seed N] [--cases N]
[--slices N] [--model BUNDLE] [--out DIR]``

`trainer.synth` writes whole DWI studies (``--series``: b0 and b1000 slices over the lesion and an
ADC series; ``--cases`` per infarct class for eight classes, as many normal studies) with the
acquisition ranges of ``--profile``; ``infarctwatch run --once`` with the model (the embedded
default unless ``--model``) writes the series reports; each DWI series' ``lesion_volume_ml`` is
compared with ``mask_volume_ml`` of ``series.json`` (what perfect slice masks measure,
docs/synth.md), and the series' findings are counted, with and without the ADC check
(`daemon.series.adc`). Prints the median and mean absolute volume difference, how many studies are
within 1 mL and show a lesion at all, and the normal studies' false-positive volumes; the same for
``restricted_volume_ml`` (the lesions the ADC confirms); one line per infarct study. Needs the
``[train]`` extra (the generator). Research use only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from daemon.series.assemble import classifier_finding
from trainer.synth import SeriesSpec, generate

REPO = Path(__file__).resolve().parent.parent
CLASSES = (
    "Right parietal lobe",
    "Left frontal lobe",
    "Left temporal lobe",
    "Right basal ganglia",
    "Left cerebellar hemisphere",
    "Right frontal and parietal lobes",
    "Left thalamus",
    "Right occipital lobe",
    "No acute infarct",
)
NORMAL = CLASSES[-1]


def daemon_reports(data: Path, work: Path, model: Path | None) -> dict[str, dict[str, Any]]:
    """Series reports of ``infarctwatch run --once`` over a copy of ``data``, by Series UID."""
    shutil.copytree(data, work / "incoming")
    config: dict[str, Any] = {
        "incoming": str(work / "incoming"),
        "reports": str(work / "reports"),
        "work": str(work / "work"),
        "inference": {"device": "CPU"},
        "logging": {"level": "warning", "format": "json"},
    }
    if model is not None:
        config["model"] = {"path": str(model.resolve())}
    (work / "daemon.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, "-m", "daemon", "run", "--config", str(work / "daemon.yaml")]
    subprocess.run([*command, "--once"], cwd=REPO, check=True, capture_output=True)
    series = [json.loads(p.read_text("utf-8")) for p in (work / "reports/series").glob("*.json")]
    return {document["series_instance_uid"]: document for document in series}


def main() -> None:
    """Generate, run the daemon, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("train", "shifted"), default="train")
    parser.add_argument("--seed", type=int, default=880_001)
    parser.add_argument("--cases", type=int, default=2, help="studies per infarct class")
    parser.add_argument(
        "--slices", type=int, default=8, help="slice positions per series (0: the whole brain)"
    )
    parser.add_argument("--model", type=Path, help="bundle (default: the embedded default)")
    parser.add_argument("--out", type=Path, help="keep the data and reports here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iw-volumes-") as tmp:
        root = args.out or Path(tmp)
        generate(
            root / "data",
            cases_per_class=args.cases,
            classes=CLASSES,
            negative_share=0.5,
            seed=args.seed,
            profile=args.profile,
            series=SeriesSpec(slices=args.slices),
        )
        studies = json.loads((root / "data" / "series.json").read_text("utf-8"))["studies"]
        found = daemon_reports(root / "data", root, args.model)
    rows, normal = [], []
    restricted_rows: list[tuple[float, float | None]] = []
    normal_restricted: list[float | None] = []
    findings = {"infarct": Counter[str](), "normal": Counter[str]()}
    alone = {"infarct": Counter[str](), "normal": Counter[str]()}
    for study in studies:
        dwi = next(s for s in study["series"] if s["kind"] == "dwi")
        report = found[dwi["series_instance_uid"]]
        volume = report["lesion_volume_ml"] or 0.0
        restricted = report.get("restricted_volume_ml")  # None: not known (no ADC read)
        truth = "normal" if dwi["label"] == NORMAL else "infarct"
        findings[truth][str(report["finding"])] += 1
        alone[truth][classifier_finding([e["finding"] for e in report["slices"]])] += 1
        if dwi["mask_volume_ml"] == 0:
            normal.append(volume)
            normal_restricted.append(restricted)
        else:
            rows.append((dwi["label"], dwi["mask_volume_ml"], volume, report["finding"]))
            restricted_rows.append((dwi["mask_volume_ml"], restricted))
    differences = [abs(got - true) for _, true, got, _ in rows]
    restricted_off = [abs(got - true) for true, got in restricted_rows if got is not None]
    unknown = sum(got is None for _, got in restricted_rows) + normal_restricted.count(None)
    print(f"profile {args.profile}, seed {args.seed}: {len(rows)} infarct and {len(normal)} normal")
    print(
        f"  |volume difference| median {statistics.median(differences):.2f} mL, mean "
        f"{statistics.mean(differences):.2f} mL; within 1 mL {sum(d <= 1 for d in differences)}"
        f" of {len(rows)}; a lesion found in {sum(got > 0 for _, _, got, _ in rows)} of {len(rows)}"
    )
    print(
        f"  normal studies with a false lesion {sum(v > 0 for v in normal)} of {len(normal)}, "
        f"mean {statistics.mean(normal):.2f} mL, largest {max(normal):.2f} mL"
    )
    print(
        f"  restricted_volume_ml: |difference| median {statistics.median(restricted_off):.2f} mL,"
        f" within 1 mL {sum(d <= 1 for d in restricted_off)} of {len(rows)}; normal studies with"
        f" a restricted volume {sum((v or 0) > 0 for v in normal_restricted)} of {len(normal)};"
        f" unknown (null) in {unknown} studies"
    )
    for truth, tally in findings.items():
        counts = ", ".join(f"{finding} {n}" for finding, n in sorted(tally.items()))
        before = ", ".join(f"{finding} {n}" for finding, n in sorted(alone[truth].items()))
        print(f"  series findings of the {truth} studies: {counts} (classifier alone: {before})")
    for (label, true, got, finding), (_, confirmed) in zip(rows, restricted_rows, strict=True):
        print(
            f"    {label:34s} true {true:6.2f} mL  measured {got:6.2f} mL  restricted"
            f" {'?' if confirmed is None else f'{confirmed:.2f}':>6} mL  finding {finding}"
        )


if __name__ == "__main__":
    main()
