"""The model bundle format: verification and loading (no OpenVINO needed here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from segmenter_bundles import classifier_only, default_with_segmenter

from daemon.errors import BundleError
from daemon.shared.bundle import (
    DEFAULT_BUNDLE,
    MANIFEST,
    designated_bundle,
    load_bundle,
    sha256_file,
    verify,
    write_manifest,
)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A private copy of the committed default bundle."""
    return Path(shutil.copytree(DEFAULT_BUNDLE, tmp_path / "bundle"))


class TestCommittedDefault:
    def test_default_bundle_verifies_and_loads(self) -> None:
        """The bundle shipped inside the package verifies and names its labels and variants."""
        loaded = load_bundle(DEFAULT_BUNDLE)
        assert loaded.sha256 == sha256_file(DEFAULT_BUNDLE / MANIFEST)
        assert len(loaded.labels) == 27
        assert "No acute infarct" in loaded.labels
        assert loaded.variant("fp16").xml.is_file()
        assert loaded.preprocess.input_size == 128


class TestVerify:
    def test_a_flipped_byte_is_named(self, bundle: Path) -> None:
        """Changing one byte of the weights fails verification, naming the file."""
        weights = bundle / "model.bin"
        data = bytearray(weights.read_bytes())
        data[100] ^= 0xFF
        weights.write_bytes(bytes(data))
        with pytest.raises(BundleError, match=r"model\.bin: sha256"):
            verify(bundle)

    def test_missing_and_unlisted_files_are_all_reported(self, bundle: Path) -> None:
        """A deleted file and an extra file are both reported in one error."""
        (bundle / "labels.json").unlink()
        (bundle / "notes.txt").write_text("hello")
        with pytest.raises(BundleError) as info:
            verify(bundle)
        assert any("labels.json" in p for p in info.value.problems)
        assert any("notes.txt" in p for p in info.value.problems)

    def test_unknown_format_version_is_refused(self, bundle: Path) -> None:
        """A manifest from a future format is refused with the supported versions named."""
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["format_version"] = 99
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="format_version 99"):
            verify(bundle)

    def test_manifest_path_escaping_the_bundle_is_refused(self, bundle: Path) -> None:
        """A manifest entry like '../x' is unsafe and refused."""
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["files"]["../outside"] = {"sha256": "0" * 64, "bytes": 1}
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="unsafe path"):
            verify(bundle)

    def test_symlinked_member_is_refused(self, bundle: Path, tmp_path: Path) -> None:
        """A listed file replaced by a symlink (even to identical bytes) is refused."""
        target = tmp_path / "elsewhere.json"
        shutil.copy(bundle / "labels.json", target)
        (bundle / "labels.json").unlink()
        (bundle / "labels.json").symlink_to(target)
        with pytest.raises(BundleError, match=r"labels\.json is listed"):
            verify(bundle)

    def test_not_a_folder(self, tmp_path: Path) -> None:
        """A path that is not a folder gets a clear error."""
        with pytest.raises(BundleError, match="not a folder"):
            verify(tmp_path / "nope")


class TestWriteManifest:
    def test_rewritten_manifest_matches_edited_files(self, bundle: Path) -> None:
        """After editing a file, write_manifest makes the bundle verify again with new hashes."""
        (bundle / "metrics.json").write_text('{"top1": 0.5}\n')
        before = json.loads((bundle / MANIFEST).read_text())
        write_manifest(
            bundle,
            name=before["name"],
            version="9.9.9",
            variants=before["variants"],
            input_spec=before["input"],
            metrics_summary={"top1": 0.5},
        )
        loaded = load_bundle(bundle)
        assert loaded.version == "9.9.9"
        assert loaded.manifest["files"]["metrics.json"]["sha256"] == sha256_file(
            bundle / "metrics.json"
        )

    def test_bad_version_string_is_refused(self, bundle: Path) -> None:
        """Versions become folder names on devices: '../x' or spaces are refused."""
        with pytest.raises(ValueError, match="version"):
            write_manifest(
                bundle, name="x", version="../1", variants={}, input_spec={}, metrics_summary={}
            )


def test_designated_bundle_follows_current(tmp_path: Path) -> None:
    """A deploy-managed models folder designates the version 'current' points at."""
    version = tmp_path / "models" / "versions" / "1.0.0"
    version.mkdir(parents=True)
    (tmp_path / "models" / "current").symlink_to("versions/1.0.0")
    assert designated_bundle(tmp_path / "models") == version.resolve()
    assert designated_bundle(version) == version.resolve()
    assert designated_bundle(None) == DEFAULT_BUNDLE


def _rewrite(bundle: Path, **extra: object) -> None:
    """Rewrite the manifest of a bundle copy with optional fields added."""
    before = json.loads((bundle / MANIFEST).read_text())
    keep = ("architecture", "research_use_only", "trained_with")
    write_manifest(
        bundle,
        name=before["name"],
        version=before["version"],
        variants=before["variants"],
        input_spec=before["input"],
        metrics_summary=before["metrics_summary"],
        extra={**{k: before[k] for k in keep if k in before}, **extra},
    )


CONTRACT = {
    "outputs": {"classes": "classes", "in_scope": "in_scope"},
    "calibration": {"method": "temperature", "temperature": 1.7, "applies_to": "classes"},
    "thresholds": {
        "finding": {
            "negative_class": "No acute infarct",
            "acute_infarct": 0.8,
            "no_acute_infarct": 0.7,
        },
        "in_scope": {"threshold": 0.42},
    },
    "parent": {"name": "infarctwatch-seed", "version": "1.0.1", "sha256": "ab" * 32},
}


class TestOptionalFields:
    def test_a_format_1_bundle_without_them_loads_as_before(self, bundle: Path) -> None:
        """A manifest without the optional fields (as before issue 11): every one reads as None."""
        _rewrite(bundle)
        loaded = load_bundle(bundle)
        assert loaded.manifest["format_version"] == 1
        assert loaded.outputs is None
        assert loaded.temperature is None
        assert loaded.finding_thresholds is None
        assert loaded.in_scope_threshold is None
        assert loaded.parent is None

    def test_the_committed_default_carries_the_calibration_contract(self) -> None:
        """The embedded default is a two-output, calibrated bundle with both kinds of threshold."""
        loaded = load_bundle(DEFAULT_BUNDLE)
        assert loaded.outputs == {"classes": "classes", "in_scope": "in_scope"}
        assert loaded.temperature is not None
        assert loaded.finding_thresholds is not None
        assert loaded.in_scope_threshold is not None

    def test_outputs_calibration_thresholds_and_parent_are_read(self, bundle: Path) -> None:
        """A bundle with the calibration contract loads with each field parsed."""
        _rewrite(bundle, **CONTRACT)
        loaded = load_bundle(bundle)
        assert loaded.outputs == {"classes": "classes", "in_scope": "in_scope"}
        assert loaded.temperature == pytest.approx(1.7)
        assert loaded.finding_thresholds is not None
        assert loaded.finding_thresholds["acute_infarct"] == pytest.approx(0.8)
        assert loaded.in_scope_threshold == pytest.approx(0.42)
        assert loaded.parent == CONTRACT["parent"]

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("outputs", {"in_scope": "x"}, "outputs"),
            ("calibration", {"method": "temperature", "temperature": -1}, "calibration"),
            ("calibration", {"method": "platt", "temperature": 1.0}, "calibration"),
            (
                "thresholds",
                {
                    "finding": {
                        "negative_class": "Nope",
                        "acute_infarct": 0.5,
                        "no_acute_infarct": 0.5,
                    }
                },
                "negative_class",
            ),
            ("thresholds", {"in_scope": {"threshold": 0.5}}, "in_scope output"),
            ("parent", {"name": "x"}, "parent"),
            ("keras_model", "absent.keras", "keras_model"),
        ],
    )
    def test_a_malformed_field_is_named(
        self, bundle: Path, field: str, value: object, message: str
    ) -> None:
        """Each optional field is checked when present; a bad one stops the load, named."""
        _rewrite(bundle, **{field: value})
        with pytest.raises(BundleError, match=message):
            load_bundle(bundle)


class TestFormat2:
    """Bundles with a lesion segmenter beside the classifier (tests/segmenter_bundles.py)."""

    def test_a_segmenter_bundle_loads_with_its_network(self, tmp_path: Path) -> None:
        """Format 2: the classifier as in format 1, the segmenter's files, input and settings."""
        folder = default_with_segmenter(tmp_path / "b", threshold=0.4, min_lesion_px=6)
        loaded = load_bundle(folder)
        assert loaded.manifest["format_version"] == 2
        assert loaded.labels == load_bundle(DEFAULT_BUNDLE).labels
        segmenter = loaded.segmenter
        assert segmenter is not None
        assert segmenter.variant("auto").xml == folder / "segmenter" / "model.xml"
        assert segmenter.channels == ("dwi", "adc")
        assert segmenter.input_shape == (-1, 128, 128, 2)
        assert (segmenter.output, segmenter.threshold, segmenter.min_lesion_px) == (
            "lesion",
            0.4,
            6,
        )
        classifier = load_bundle(classifier_only(DEFAULT_BUNDLE, tmp_path / "c"))
        assert (classifier.manifest["format_version"], classifier.segmenter) == (1, None)
        assert classifier.labels == loaded.labels

    def test_the_segmenter_files_are_verified_like_the_rest(self, tmp_path: Path) -> None:
        """A changed byte of the segmenter's weights fails verification, naming the file."""
        folder = default_with_segmenter(tmp_path / "b")
        weights = folder / "segmenter" / "model.bin"
        weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
        with pytest.raises(BundleError, match=r"segmenter/model\.bin: sha256"):
            verify(folder)

    @pytest.mark.parametrize(
        ("change", "problem"),
        [
            (lambda m: m.pop("networks"), "format_version 2 needs 'networks'"),
            (lambda m: m.update(format_version=1), "'networks' needs format_version 2"),
            (
                lambda m: m["networks"]["segmenter"]["input"].update(channels=["adc"]),
                "channels from",
            ),
            (lambda m: m["networks"]["segmenter"].update(threshold=0), "'threshold'"),
            (lambda m: m["networks"]["segmenter"].update(task="classify"), "'task'"),
            (lambda m: m["networks"].update(denoiser={}), "networks.denoiser"),
            (
                lambda m: m["networks"]["segmenter"].update(preprocess="nowhere.json"),
                "'preprocess' must name a file",
            ),
        ],
    )
    def test_a_broken_networks_entry_is_refused_with_its_reason(
        self, tmp_path: Path, change, problem: str
    ) -> None:
        """Every malformed part of ``networks`` is an error naming it; nothing half-loads."""
        folder = default_with_segmenter(tmp_path / "b")
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        change(manifest)
        (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        with pytest.raises(BundleError, match=problem):
            load_bundle(folder)

    def test_a_classifier_only_manifest_stays_format_1(self, bundle: Path) -> None:
        """Without networks, write_manifest writes format 1: older daemons keep reading it."""
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        written = write_manifest(
            bundle,
            name=manifest["name"],
            version="9.9.9",
            variants=manifest["variants"],
            input_spec=manifest["input"],
            metrics_summary={},
        )
        assert written["format_version"] == 1
        assert load_bundle(bundle).networks is None
