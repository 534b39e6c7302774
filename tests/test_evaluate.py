"""``infarctwatch evaluate``: a tiny synthetic set scored with the committed default bundle.

The CLI runs as a real process (``python -m daemon evaluate``), on the real OpenVINO runtime, over
files written by the real generator (``infarctwatch synth``), once per module; the tests read
what it wrote.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
from daemon_support import cli, reports, write_config
from PIL import Image
from pydicom.data import get_testdata_file
from scope_bundles import Network, ellipse_png, mean_brightness, write_bundle

from daemon.evaluate.progress import Progress
from daemon.evaluate.scoring import BATCH
from daemon.shared.labels import DEFAULT_LABELS, load_label_map
from trainer.synth import generate

REPO = Path(__file__).resolve().parent.parent
CLASSES = ("No acute infarct", "Left frontal lobe", "Right thalamus", "Left cerebellar hemisphere")
NOT_DWI_FILE = "No acute infarct/x900_01_mr.dcm"
"""pydicom's MR_small.dcm (a T2 spin echo) among the normal slices: the header rules refuse it."""
EMPTY_FILE = "Left frontal lobe/x901_01_dwi.png"
FORBIDDEN = ("tensorflow", "keras", "nncf", "matplotlib", "trainer")
_RUN = (
    "import sys\n"
    "from daemon.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
    "print('IMPORTED=' + ','.join(bad))\n"
    "sys.exit(code)\n"
)


def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    """``infarctwatch evaluate ARGS`` in a fresh interpreter that then lists what it imported."""
    return subprocess.run(
        [sys.executable, "-c", _RUN, "evaluate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=REPO,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The anatomy cache the synth tests share."""
    return tmp_path_factory.getbasetemp() / "synth-anatomy-cache"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """Four classes, two cases each, two slices a case, PNG + JPEG + DICOM; plus a T2 DICOM and
    an empty file among them."""
    root = tmp_path_factory.mktemp("evaluate") / "data"
    generate(
        root,
        cases_per_class=2,
        slices_per_case=2,
        formats="png,jpeg,dicom",
        seed=11,
        workers=2,
        classes=list(CLASSES),
        negative_share=None,
        cache_dir=synth_cache,
    )
    shutil.copyfile(get_testdata_file("MR_small.dcm"), root / NOT_DWI_FILE)
    (root / EMPTY_FILE).write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def scored(labelled: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One evaluation of the labelled set on the CPU, progress as log lines."""
    out = labelled.parent / "evaluation"
    result = evaluate(str(labelled), "--out", str(out), "--device", "CPU", "--progress", "log")
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.fixture(scope="module")
def metrics(scored: tuple[subprocess.CompletedProcess[str], Path]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((scored[1] / "metrics.json").read_text("utf-8"))
    return document


@pytest.fixture(scope="module")
def rows(scored: tuple[subprocess.CompletedProcess[str], Path]) -> list[dict[str, str]]:
    return read_csv(scored[1] / "results.csv")


class TestLabelledSet:
    def test_writes_the_four_files_and_a_summary(
        self,
        scored: tuple[subprocess.CompletedProcess[str], Path],
        labelled: Path,
        rows: list[dict[str, str]],
    ) -> None:
        """metrics.json, results.csv and two PNGs land in --out; stdout sums it up; no staging
        folder is left beside it."""
        result, out = scored
        assert sorted(p.name for p in out.iterdir()) == [
            "confusion_matrix.png",
            "metrics.json",
            "reliability.png",
            "results.csv",
        ]
        with Image.open(out / "confusion_matrix.png") as image:
            assert image.format == "PNG"
            assert image.width > 600
        with Image.open(out / "reliability.png") as image:
            assert image.format == "PNG"
            assert image.width > image.height  # a slice panel and a case panel
        assert f"evaluated {len(rows)} file(s)" in result.stdout
        assert "'No acute infarct' recall" in result.stdout
        assert "Research use only" in result.stdout
        assert [p.name for p in labelled.parent.iterdir() if p.name.startswith(".")] == []

    def test_imports_no_training_stack(
        self, scored: tuple[subprocess.CompletedProcess[str], Path]
    ) -> None:
        """The whole evaluation ran without importing TensorFlow, Keras, matplotlib or the
        trainer (the edge install has none of them)."""
        imported = [ln for ln in scored[0].stdout.splitlines() if ln.startswith("IMPORTED=")]
        assert imported == ["IMPORTED="]

    def test_one_row_per_file_with_the_dataset_labels(
        self, rows: list[dict[str, str]], labelled: Path
    ) -> None:
        """Every slice of the dataset (not the ADC maps) has a row with its case and its class
        through the label map (raw folder names merged)."""
        manifest = read_csv(labelled / "manifest.csv")
        expected = {r["file"]: (r["case_id"], r["label"]) for r in manifest}
        expected[NOT_DWI_FILE] = ("x900", "No acute infarct")
        expected[EMPTY_FILE] = ("x901", "Left frontal lobe")
        assert {r["file"]: (r["case"], r["truth"]) for r in rows} == expected
        assert not any("_adc." in r["file"] for r in rows)

    def test_a_non_dwi_dicom_is_refused_and_counted(
        self, rows: list[dict[str, str]], metrics: dict[str, Any]
    ) -> None:
        """MR_small.dcm (T2 spin echo) gets not_analysed / NOT_DWI and no label, like in the
        daemon; metrics count it as refused and leave it out of the accuracy figures."""
        row = next(r for r in rows if r["file"] == NOT_DWI_FILE)
        assert (row["status"], row["code"], row["label"], row["correct"]) == (
            "not_analysed",
            "NOT_DWI",
            "",
            "",
        )
        outcomes = metrics["outcomes"]
        assert outcomes["not_analysed"] == 1
        assert outcomes["by_code"]["NOT_DWI"] == 1
        assert outcomes["refused_share"] == pytest.approx(1 / len(rows))
        assert metrics["slice"]["n"] == len(rows) - 2
        assert metrics["per_format"]["dicom"]["not_analysed"] == 1

    def test_an_empty_file_is_an_error_row(
        self, rows: list[dict[str, str]], metrics: dict[str, Any]
    ) -> None:
        """An empty file is final here (nobody is writing it): an EMPTY_FILE error row."""
        row = next(r for r in rows if r["file"] == EMPTY_FILE)
        assert (row["status"], row["code"], row["correct"]) == ("error", "EMPTY_FILE", "")
        assert metrics["outcomes"]["error"] == 1

    def test_metrics_agree_with_results_csv(
        self, rows: list[dict[str, str]], metrics: dict[str, Any]
    ) -> None:
        """Recomputed from results.csv: counts, codes, slice top-1, top-1 over all files,
        'No acute infarct' recall, per-class recall, the confusion matrix and the case count."""
        analysed = [r for r in rows if r["status"] == "ok"]
        assert metrics["outcomes"]["files"] == len(rows) == metrics["data"]["files"]
        assert metrics["outcomes"]["ok"] == len(analysed)
        codes = Counter(r["code"] for r in rows if r["code"])
        assert metrics["outcomes"]["by_code"] == dict(codes)
        for r in analysed:
            assert r["correct"] == ("1" if r["label"] == r["truth"] else "0")
            assert 0.0 < float(r["probability"]) <= 1.0
        right = sum(r["correct"] == "1" for r in analysed)
        level = metrics["slice"]
        assert level["top1"] == pytest.approx(right / len(analysed))
        assert level["top1_all_files"] == pytest.approx(right / len(rows))
        assert level["top1"] <= level["top3"]
        classes = metrics["classes"]
        for name in CLASSES:
            mine = [r for r in analysed if r["truth"] == name]
            recall = sum(r["label"] == name for r in mine) / len(mine)
            assert level["per_class_recall"][name] == pytest.approx(recall)
        assert level["no_acute_infarct_recall"] == level["per_class_recall"]["No acute infarct"]
        confusion = Counter((r["truth"], r["label"]) for r in analysed)
        for i, truth in enumerate(classes):
            for j, label in enumerate(classes):
                assert level["confusion"][i][j] == confusion[(truth, label)]
        assert metrics["case"]["n"] == len({(r["case"], r["truth"]) for r in analysed})
        findings: dict[str, Counter[str]] = {}
        for r in analysed:
            true = "no_acute_infarct" if r["truth"] == "No acute infarct" else "acute_infarct"
            findings.setdefault(true, Counter())[r["finding"]] += 1
        assert metrics["findings"] == {k: dict(v) for k, v in findings.items()}
        assert 0.0 <= level["ece"] <= 1.0
        assert 0.0 <= metrics["case"]["ece"] <= 1.0

    def test_per_format_figures_cover_every_file(
        self, rows: list[dict[str, str]], metrics: dict[str, Any]
    ) -> None:
        """PNG, JPEG and DICOM each have their figures; together they count every file."""
        per_format = metrics["per_format"]
        assert {"png", "jpeg", "dicom"} <= set(per_format)
        assert sum(f["files"] for f in per_format.values()) == len(rows)
        dicom = [r for r in rows if r["file"].endswith(".dcm") and r["status"] == "ok"]
        right = sum(r["correct"] == "1" for r in dicom)
        assert per_format["dicom"]["slice_top1"] == pytest.approx(right / len(dicom))

    def test_names_the_model_that_was_scored(self, metrics: dict[str, Any]) -> None:
        """Model name, version, bundle sha256 and variant are the embedded bundle's."""
        manifest_text = (REPO / "daemon/models/default/manifest.json").read_bytes()
        manifest = json.loads(manifest_text)
        model = metrics["model"]
        assert (model["name"], model["version"]) == (manifest["name"], manifest["version"])
        assert model["bundle_sha256"] == hashlib.sha256(manifest_text).hexdigest()
        assert model["variant"] == manifest["default_variant"]  # --variant auto
        assert metrics["settings"]["bins"] == 15
        assert "Research use only" in metrics["disclaimer"]

    def test_gives_the_daemons_own_answers(
        self, rows: list[dict[str, str]], labelled: Path, tmp_path: Path
    ) -> None:
        """The same files through ``infarctwatch run --once``: every report has the status, code,
        label, finding and top probability that results.csv gives."""
        config = write_config(tmp_path)
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        for row in rows:
            shutil.copyfile(labelled / row["file"], incoming / Path(row["file"]).name)
        result = cli("run", "--config", str(config), "--once")
        assert result.returncode == 0, result.stderr[-2000:]
        served = reports(tmp_path / "reports")
        assert len(served) == len(rows)
        for row in rows:
            report = served[Path(row["file"]).name]
            assert report["status"] == row["status"], row["file"]
            if row["status"] == "ok":
                assert report["prediction"]["label"] == row["label"], row["file"]
                assert report["prediction"]["finding"] == row["finding"], row["file"]
                assert report["prediction"]["probability"] == pytest.approx(
                    float(row["probability"]), abs=2e-3
                )
            else:
                why = report["reason"] if row["status"] == "not_analysed" else report["error"]
                assert why["code"] == row["code"]


@pytest.fixture(scope="module")
def out_of_scope(tmp_path_factory: pytest.TempPathFactory, synth_cache: Path) -> Path:
    """One DICOM of every out-of-scope kind."""
    root = tmp_path_factory.mktemp("evaluate-oos") / "oos"
    generate(root, out_of_scope=1, formats="dicom", seed=3, workers=2, cache_dir=synth_cache)
    return root


class TestOutOfScopeSet:
    def test_reports_the_refusal_rate_per_kind(self, out_of_scope: Path) -> None:
        """Every DICOM of every out-of-scope kind is refused by its header, with the code the
        set expects; metrics give the rate per kind, results.csv marks each refusal correct."""
        out = out_of_scope.parent / "evaluation"
        result = evaluate(str(out_of_scope), "--out", str(out), "--device", "CPU")
        assert result.returncode == 0, result.stderr
        metrics = json.loads((out / "metrics.json").read_text("utf-8"))
        rows = read_csv(out / "results.csv")
        manifest = read_csv(out_of_scope / "manifest.csv")
        assert metrics["kind"] == "out_of_scope"
        assert set(metrics["per_kind"]) == {r["kind"] for r in manifest}
        for kind, figures in metrics["per_kind"].items():
            assert figures["refused_share"] == 1.0, kind
            assert figures["refused_with_expected_code"] == figures["files"], kind
        assert metrics["outcomes"]["refused_share"] == 1.0
        assert {r["file"]: r["code"] for r in rows} == {
            r["file"]: r["expected_code"] for r in manifest
        }
        assert all(r["correct"] == "1" and r["label"] == "" for r in rows)
        assert "refused 1.000 of the out-of-scope files" in result.stdout
        assert not (out / "confusion_matrix.png").exists()


class TestTwoOutputBundle:
    def test_the_daemons_refusal_calibration_and_findings_are_scored(self, tmp_path: Path) -> None:
        """A two-output bundle (in_scope head, temperature, finding thresholds): a picture below
        the in_scope threshold is counted as OUT_OF_SCOPE_IMAGE, the others get the findings
        the daemon gives, and metrics.json names the rule that was applied."""
        levels = {"refused": 0.1, "dim": 0.3, "middle": 0.5, "bright": 1.0}
        pictures = {name: ellipse_png(level) for name, level in levels.items()}
        means = {name: mean_brightness(data) for name, data in pictures.items()}
        network = Network(m_even=means["middle"], m_scope=(means["refused"] + means["dim"]) / 2)
        finding = {"acute_infarct": 0.9, "no_acute_infarct": 0.8}
        bundle = write_bundle(tmp_path / "bundle", network, temperature=2.0, finding=finding)
        files = {
            "No acute infarct/a_01.png": "bright",
            "No acute infarct/b_01.png": "middle",
            "Left frontal lobe/c_01.png": "dim",
            "Left frontal lobe/d_01.png": "refused",
        }
        for rel, name in files.items():
            (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / rel).write_bytes(pictures[name])
        out = tmp_path / "out"
        result = evaluate(
            str(tmp_path / "data"), "--model", str(bundle), "--out", str(out), "--device", "CPU"
        )
        assert result.returncode == 0, result.stderr
        rows = {r["file"]: r for r in read_csv(out / "results.csv")}
        refused = rows["Left frontal lobe/d_01.png"]
        assert (refused["status"], refused["code"], refused["label"]) == (
            "not_analysed",
            "OUT_OF_SCOPE_IMAGE",
            "",
        )
        assert rows["No acute infarct/a_01.png"]["finding"] == "no_acute_infarct"
        assert rows["No acute infarct/a_01.png"]["label"] == "No acute infarct"
        assert rows["No acute infarct/b_01.png"]["finding"] == "indeterminate"
        assert rows["Left frontal lobe/c_01.png"]["finding"] == "acute_infarct"
        metrics = json.loads((out / "metrics.json").read_text("utf-8"))
        assert metrics["outcomes"]["by_code"] == {"OUT_OF_SCOPE_IMAGE": 1}
        assert metrics["slice"]["n"] == 3
        assert metrics["findings"] == {
            "acute_infarct": {"acute_infarct": 1},
            "no_acute_infarct": {"indeterminate": 1, "no_acute_infarct": 1},
        }
        decision = metrics["settings"]["decision"]
        assert decision["calibrated"] is True
        assert decision["temperature"] == 2.0
        assert decision["in_scope_threshold"] == 0.5
        assert metrics["model"]["name"] == "scope-test"


class TestRefusals:
    def test_a_missing_folder_exits_2(self, tmp_path: Path) -> None:
        """A DATA folder that does not exist: one line naming it, exit 2, nothing written."""
        result = evaluate(str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
        assert result.returncode == 2
        assert "nowhere does not exist" in result.stderr
        assert not (tmp_path / "out").exists()

    def test_unknown_class_folders_exit_2_naming_each(self, tmp_path: Path, labelled: Path) -> None:
        """Two folders the label map cannot map: exit 2 and both names in the message."""
        data = tmp_path / "data"
        source = next(labelled.glob("Left frontal lobe/*_dwi.png"))
        for folder in ("Mystery lesion", "Right thalamus", "Odd_folder"):
            (data / folder).mkdir(parents=True)
            shutil.copyfile(source, data / folder / "k1_01_dwi.png")
        result = evaluate(str(data), "--out", str(tmp_path / "out"))
        assert result.returncode == 2
        assert "Mystery lesion" in result.stderr
        assert "Odd_folder" in result.stderr
        assert "merge" in result.stderr
        assert not (tmp_path / "out").exists()

    def test_an_existing_out_folder_is_never_overwritten(
        self, tmp_path: Path, labelled: Path
    ) -> None:
        """--out naming an existing folder (even empty): exit 2, the folder left as it was."""
        out = tmp_path / "out"
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        result = evaluate(str(labelled), "--out", str(out))
        assert result.returncode == 2
        assert "never overwrites" in result.stderr
        assert [p.name for p in out.iterdir()] == ["keep.txt"]

    def test_a_case_pattern_without_its_group_exits_2(self, tmp_path: Path) -> None:
        """--case-pattern must name a group 'case'."""
        result = evaluate(str(tmp_path), "--case-pattern", "^([^_]+)_")
        assert result.returncode == 2
        assert "no named group 'case'" in result.stderr


class TestProgress:
    def test_a_bar_on_a_terminal(self) -> None:
        """Bar mode redraws one line with the count and ends it with a newline."""
        stream = io.StringIO()
        progress = Progress(2 * BATCH, stream, bar=True)
        progress(BATCH)
        progress(BATCH)
        progress.close()
        text = stream.getvalue()
        assert text.startswith("\revaluate [")
        assert f"{2 * BATCH}/{2 * BATCH} files" in text
        assert text.endswith("\n")

    def test_log_lines_otherwise(self) -> None:
        """Log mode writes nothing to the stream and one event per tenth reached."""
        stream = io.StringIO()
        with structlog.testing.capture_logs() as events:
            progress = Progress(20, stream, bar=False)
            for _ in range(20):
                progress(1)
            progress.close()
        assert stream.getvalue() == ""
        done = [e["done"] for e in events if e["event"] == "evaluate_progress"]
        assert done == list(range(2, 21, 2))


def test_the_shipped_label_map_is_package_data() -> None:
    """The label map evaluate reads by default sits inside the package (the edge install has
    no config/ folder) and config/labels.yaml is that very file."""
    assert DEFAULT_LABELS.parent == REPO / "daemon" / "shared"
    assert (REPO / "config" / "labels.yaml").resolve() == DEFAULT_LABELS.resolve()
    assert "No acute infarct" in load_label_map().classes
