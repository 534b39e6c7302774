"""Two-output bundles through the real daemon: refusals, calibrated probabilities, findings.

The bundles are real (OpenVINO IR from `scope_bundles`, a manifest with ``outputs``,
``calibration``, ``thresholds``, ``default_variant``); their network answers from an image's mean
brightness, so each picture's fate is known in advance:

=========  ==================================  ==========================================
picture    in_scope                            calibrated (T = 2) p('No acute infarct')
=========  ==================================  ==========================================
refused    0.03: below the threshold 0.5       (not analysed)
dim        0.97                                0.05 -> acute_infarct (p_inf >= 0.9)
middle     1.00                                0.17 -> indeterminate (between both)
bright     1.00                                0.86 -> no_acute_infarct (p_neg >= 0.8)
=========  ==================================  ==========================================

Every report is validated against the published schema (`daemon_support.reports`).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from typing import TYPE_CHECKING, Any

import jsonschema
import numpy as np
import pydicom
import pytest
from daemon_support import (
    PYDICOM_FILES,
    VALIDATOR,
    cli,
    dicom_bytes,
    drop,
    enhanced_mr,
    files_under,
    make_config,
    reports,
    run_once,
    running,
    wait_for,
    write_config,
)
from pydicom.uid import generate_uid
from scope_bundles import (
    LABEL_LIST,
    NEGATIVE,
    SPEC,
    Network,
    ellipse_png,
    mean_brightness,
    write_bundle,
)
from structlog.testing import capture_logs

from daemon.config import InferenceConfig, ThresholdsConfig, load_config
from daemon.errors import ConfigError, EngineError
from daemon.scan.decision import (
    ACUTE,
    INDETERMINATE,
    OUT_OF_SCOPE_IMAGE,
    calibrate,
    finding,
    resolve,
)
from daemon.scan.decision import (
    NEGATIVE as NO_ACUTE,
)
from daemon.scan.inference import Engine
from daemon.service.status import describe, read_status
from daemon.shared.bundle import load_bundle
from daemon.shared.decode import decode
from daemon.shared.preprocess import preprocess
from deploy.install import install_bundle
from trainer.calibration import apply_temperature

if TYPE_CHECKING:
    from pathlib import Path

LEVELS = {"refused.png": 0.1, "dim.png": 0.3, "middle.png": 0.5, "bright.png": 1.0}
PICTURES = {name: ellipse_png(level) for name, level in LEVELS.items()}
ACCEPTED = ("dim.png", "middle.png", "bright.png")
FINDING = {"acute_infarct": 0.9, "no_acute_infarct": 0.8}
EXPECTED = {"dim.png": ACUTE, "middle.png": INDETERMINATE, "bright.png": NO_ACUTE}
T = 2.0
NEG = LABEL_LIST.index(NEGATIVE)


@pytest.fixture(scope="module")
def network() -> Network:
    """Even odds at the middle picture; the in_scope step between the refused and the dim one."""
    means = {name: mean_brightness(data) for name, data in PICTURES.items()}
    assert means["refused.png"] < means["dim.png"] < means["middle.png"] < means["bright.png"]
    return Network(
        m_even=means["middle.png"], m_scope=(means["refused.png"] + means["dim.png"]) / 2
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, network) -> dict[str, Path]:
    """calibrated (int8 its default), its uncalibrated twin, one without any threshold, and a
    one-output bundle without calibration or thresholds (as bundles were before issue 11)."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "calibrated": write_bundle(
            root / "calibrated", network, temperature=T, finding=FINDING, default_variant="int8"
        ),
        "raw": write_bundle(
            root / "raw", network, temperature=None, finding=FINDING, default_variant="int8"
        ),
        "bare": write_bundle(
            root / "bare", network, temperature=None, finding=None, in_scope_threshold=None
        ),
        "one": write_bundle(
            root / "one",
            network,
            version="1.0.0-one",
            temperature=None,
            finding=None,
            in_scope_threshold=None,
            two_outputs=False,
        ),
    }


def _once(root: Path, bundle: Path | None, **sections: Any) -> dict[str, Any]:
    """``run --once`` (in-process, real worker processes) over the pictures (and ``extra``)."""
    extra = sections.pop("extra", {})
    model_section = {"path": None if bundle is None else str(bundle), **sections.pop("model", {})}
    sections.setdefault("thresholds", {})  # the bundle's own thresholds (see write_config)
    config = make_config(root, model=model_section, **sections)
    config.incoming.mkdir(parents=True)
    for name, data in {**PICTURES, **extra}.items():
        (config.incoming / name).write_bytes(data)
    with capture_logs() as logs:
        code = run_once(config)
    assert code == 0
    return {
        "config": config,
        "reports": reports(config.reports),
        "logs": logs,
        "status": read_status(config.status_path),
    }


def _started(logs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in logs if e["event"] == "started")


@pytest.fixture(scope="module")
def calibrated_cli(tmp_path_factory, bundles) -> dict[str, Any]:
    """A real ``infarctwatch run --once`` process over the pictures and a CT (a header refusal)."""
    root = tmp_path_factory.mktemp("calibrated")
    path = write_config(root, model={"path": str(bundles["calibrated"])}, thresholds={})
    config = load_config(path)
    config.incoming.mkdir(parents=True)
    for name, data in PICTURES.items():
        (config.incoming / name).write_bytes(data)
    (config.incoming / "ct.dcm").write_bytes((PYDICOM_FILES / "CT_small.dcm").read_bytes())
    result = cli("run", "--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return {
        "config": config,
        "reports": reports(config.reports),
        "logs": logs,
        "status": read_status(config.status_path),
    }


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory, bundles) -> dict[str, Any]:
    return _once(tmp_path_factory.mktemp("raw"), bundles["raw"])


class TestRefusal:
    def test_an_out_of_scope_picture_is_not_analysed(self, calibrated_cli) -> None:
        """OUT_OF_SCOPE_IMAGE with the score in a stable message; no prediction; done/."""
        report = calibrated_cli["reports"]["refused.png"]
        assert report["status"] == "not_analysed"
        assert report["reason"]["code"] == OUT_OF_SCOPE_IMAGE
        assert report["reason"]["message"].startswith("in_scope score 0.0")
        assert "below the threshold 0.500" in report["reason"]["message"]
        assert report["prediction"] is None
        assert report["error"] is None
        assert report["model"]["name"] == "scope-test"
        done = files_under(calibrated_cli["config"].work / "done")
        assert "refused.png" in done
        assert "refused.png" not in files_under(calibrated_cli["config"].work / "failed")

    def test_refusals_are_counted_with_the_header_ones(self, calibrated_cli) -> None:
        """The status file and command count the image refusal and the CT alike."""
        status = calibrated_cli["status"]
        assert calibrated_cli["reports"]["ct.dcm"]["reason"]["code"] == "NOT_MR"
        assert status["not_analysed"] == 2
        assert status["processed"] == len(ACCEPTED)
        assert status["failed"] == 0
        text, _ = describe(status, calibrated_cli["config"].status_path, dt.datetime.now(dt.UTC))
        assert "not analysed 2" in text

    def test_the_scan_line_gives_the_code_and_never_the_name(self, calibrated_cli) -> None:
        scans = [e for e in calibrated_cli["logs"] if e["event"] == "scan"]
        refused = [e for e in scans if e["status"] == "not_analysed"]
        assert sorted(e["code"] for e in refused) == ["NOT_MR", OUT_OF_SCOPE_IMAGE]
        text = json.dumps(calibrated_cli["logs"])
        assert not any(name in text for name in (*PICTURES, "ct.dcm"))


class TestCalibration:
    def test_accepted_pictures_are_calibrated_by_the_temperature(
        self, calibrated_cli, raw_run
    ) -> None:
        """Same network, same pictures: calibrated = softmax(log(raw) / T), the trainer's formula.

        Exact (to the reports' six decimals) where every raw probability is well above their
        rounding (dim, middle); the bright picture's smallest raw ones (1e-5) are not, so there
        the temperature is only seen to soften it.
        """
        for name in ("dim.png", "middle.png"):
            calibrated = calibrated_cli["reports"][name]["prediction"]
            raw = raw_run["reports"][name]["prediction"]
            assert calibrated["calibrated"] is True
            assert raw["calibrated"] is False
            got = np.array([calibrated["probabilities"][label] for label in LABEL_LIST])
            plain = np.array([raw["probabilities"][label] for label in LABEL_LIST])
            expected = apply_temperature(plain[None, :], T)[0]
            np.testing.assert_allclose(got, expected, atol=5e-6)
            assert np.abs(got - plain).max() > 0.01, "the temperature changed nothing"
            assert calibrated["probability"] == max(calibrated["probabilities"].values())
            assert calibrated["top_k"][0]["probability"] == calibrated["probability"]
        calibrated = calibrated_cli["reports"]["bright.png"]["prediction"]
        raw = raw_run["reports"]["bright.png"]["prediction"]
        assert calibrated["label"] == raw["label"] == NEGATIVE
        assert 0.5 < calibrated["probability"] < raw["probability"] - 0.1

    def test_the_finding_follows_the_bundle_thresholds_on_each_side(
        self, calibrated_cli, raw_run
    ) -> None:
        """acute_infarct, indeterminate, no_acute_infarct as designed; on calibrated values."""
        for name, expected in EXPECTED.items():
            prediction = calibrated_cli["reports"][name]["prediction"]
            assert prediction["finding"] == expected, prediction["probabilities"][NEGATIVE]
            p_neg = prediction["probabilities"][NEGATIVE]
            assert finding(p_neg, **FINDING) == expected
        # uncalibrated, the middle picture's p_neg is near 0.5: still neither side
        assert raw_run["reports"]["middle.png"]["prediction"]["finding"] == INDETERMINATE

    def test_variant_auto_serves_the_bundle_default_and_the_load_is_logged(
        self, calibrated_cli
    ) -> None:
        """model.variant auto (the default) + default_variant int8: int8 serves; logged."""
        for name in ACCEPTED:
            model = calibrated_cli["reports"][name]["model"]
            assert model["variant"] == "int8"
            assert model["weights_precision"] == "FP32"  # the stand-in's manifest says so
        started = _started(calibrated_cli["logs"])
        assert started["variant"] == "int8"
        assert started["variant_setting"] == "auto"
        assert started["calibrated"] is True
        assert started["temperature"] == T
        assert started["finding_thresholds"] == FINDING
        assert started["in_scope_threshold"] == 0.5
        assert started["in_scope_dicom_dwi_threshold"] == 0.5
        assert started["negative_class"] == NEGATIVE
        assert started["thresholds_from"] == {
            "acute_infarct": "bundle",
            "no_acute_infarct": "bundle",
            "in_scope": "bundle",
            "in_scope_dicom_dwi": "fallback",
        }


def test_config_overrides_the_bundle_thresholds_and_variant(tmp_path, bundles) -> None:
    """in_scope 0 refuses nothing; 0.5/0.5 leaves nothing indeterminate; fp16 beats auto."""
    run = _once(
        tmp_path,
        bundles["calibrated"],
        thresholds={"in_scope": 0.0, "acute_infarct": 0.5, "no_acute_infarct": 0.5},
        model={"variant": "fp16"},
    )
    found = run["reports"]
    assert {r["status"] for r in found.values()} == {"ok"}
    assert found["refused.png"]["prediction"]["calibrated"] is True
    for report in found.values():
        prediction = report["prediction"]
        assert prediction["finding"] != INDETERMINATE
        assert prediction["finding"] == finding(prediction["probabilities"][NEGATIVE], 0.5, 0.5)
        assert report["model"]["variant"] == "fp16"
    assert found["middle.png"]["prediction"]["finding"] == ACUTE
    started = _started(run["logs"])
    assert started["thresholds_from"] == {
        **dict.fromkeys(("acute_infarct", "no_acute_infarct", "in_scope"), "config"),
        "in_scope_dicom_dwi": "fallback",
    }
    assert started["in_scope_dicom_dwi_threshold"] == 0.0  # never above in_scope
    assert started["variant"] == "fp16"
    assert run["status"]["not_analysed"] == 0


def test_a_dicom_header_that_says_dwi_b1000_lowers_the_in_scope_threshold(
    tmp_path, bundles
) -> None:
    """The refused picture's pixels as a DICOM MR image with b = 1000 are answered under
    in_scope_dicom_dwi 0; the same pixels without a b-value, and as a PNG, are still refused."""
    pixels = decode(PICTURES["refused.png"], "refused.png").pixels
    with_b = dicom_bytes([pixels / pixels.max() * 4095])
    ds = pydicom.dcmread(io.BytesIO(with_b))
    del ds.DiffusionBValue
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    run = _once(
        tmp_path,
        bundles["calibrated"],
        thresholds={"in_scope_dicom_dwi": 0.0},
        extra={"dwi.dcm": with_b, "plain.dcm": buffer.getvalue()},
    )
    found = run["reports"]
    assert found["dwi.dcm"]["status"] == "ok"
    assert found["dwi.dcm"]["prediction"]["calibrated"] is True
    for name in ("plain.dcm", "refused.png"):
        assert found[name]["status"] == "not_analysed"
        assert found[name]["reason"]["code"] == OUT_OF_SCOPE_IMAGE
        assert "threshold 0.500" in found[name]["reason"]["message"]
    started = _started(run["logs"])
    assert started["in_scope_dicom_dwi_threshold"] == 0.0
    assert started["thresholds_from"]["in_scope_dicom_dwi"] == "config"


def _planes(*names: str) -> list[np.ndarray]:
    """The pictures' pixels as 12-bit DICOM planes."""
    found = [decode(PICTURES[name], name).pixels for name in names]
    return [(p / max(float(p.max()), 1.0) * 4095).astype(np.uint16) for p in found]


def test_frames_whose_own_b_value_says_dwi_get_the_dicom_dwi_threshold(tmp_path, bundles) -> None:
    """An enhanced MR object of refused pixels: the frames with b = 1000 are answered under
    in_scope_dicom_dwi 0 (the middle one gives the object's prediction), the frame without a
    b-value is refused at the general threshold."""
    frames: list[tuple[float, float | None]] = [(0.0, 1000.0), (5.0, 1000.0), (10.0, None)]
    data = enhanced_mr(generate_uid(), generate_uid(), frames, _planes(*["refused.png"] * 3))
    run = _once(
        tmp_path,
        bundles["calibrated"],
        thresholds={"in_scope_dicom_dwi": 0.0},
        extra={"enhanced.dcm": data},
    )
    report = run["reports"]["enhanced.dcm"]
    assert report["status"] == "ok"
    assert report["source"]["dicom"]["frame_used"] == 1
    listed = report["frames"]
    assert [f["analysed"] for f in listed] == [True, True, False]
    assert listed[2]["error"].startswith(OUT_OF_SCOPE_IMAGE)
    assert "threshold 0.500" in listed[2]["error"]


def test_an_enhanced_object_is_classified_by_a_frame_in_range(tmp_path, bundles) -> None:
    """b1000 frames first, then b0 frames of refused pixels: the middle frame (index 3) is a b0
    frame, so the object's prediction comes from the middle b1000 frame (index 1), and the
    object and its b1000 frames are analysed."""
    frames: list[tuple[float, float | None]] = [
        *((z, 1000.0) for z in (0.0, 5.0, 10.0)),
        *((z, 0.0) for z in (0.0, 5.0, 10.0)),
    ]
    planes = _planes(*["bright.png"] * 3, *["refused.png"] * 3)
    data = enhanced_mr(generate_uid(), generate_uid(), frames, planes)
    run = _once(tmp_path, bundles["calibrated"], extra={"enhanced.dcm": data})
    report = run["reports"]["enhanced.dcm"]
    assert report["status"] == "ok", report.get("reason")
    assert report["source"]["dicom"]["frame_used"] == 1
    assert report["prediction"]["finding"] == EXPECTED["bright.png"]
    assert [f["analysed"] for f in report["frames"]] == [True] * 3 + [False] * 3


def test_the_dicom_dwi_threshold_never_exceeds_in_scope(bundles) -> None:
    """A configured in_scope_dicom_dwi above in_scope is capped at in_scope; other images and
    bundles without an in_scope output are unaffected."""
    bundle = load_bundle(bundles["calibrated"])
    rule = resolve(bundle, ThresholdsConfig(in_scope=0.6, in_scope_dicom_dwi=0.9))
    assert rule.scope_threshold(header_dwi=True) == 0.6
    assert rule.scope_threshold() == 0.6
    rule = resolve(bundle, ThresholdsConfig(in_scope=0.6, in_scope_dicom_dwi=0.2))
    assert rule.scope_threshold(header_dwi=True) == 0.2
    assert rule.scope_threshold(header_dwi=False) == 0.6
    one = resolve(load_bundle(bundles["one"]), ThresholdsConfig(in_scope_dicom_dwi=0.2))
    assert one.scope_threshold(header_dwi=True) is None


def test_a_bundle_without_thresholds_uses_the_fallbacks(tmp_path, bundles) -> None:
    """No thresholds in the manifest: fallback_in_scope 0.5 refuses, 0.9/0.9 decide findings."""
    run = _once(tmp_path, bundles["bare"])
    found = run["reports"]
    assert found["refused.png"]["reason"]["code"] == OUT_OF_SCOPE_IMAGE
    assert "threshold 0.500" in found["refused.png"]["reason"]["message"]
    for name in ACCEPTED:
        prediction = found[name]["prediction"]
        assert prediction["calibrated"] is False
        assert prediction["finding"] == finding(prediction["probabilities"][NEGATIVE], 0.9, 0.9)
    assert found["dim.png"]["prediction"]["finding"] == ACUTE
    assert found["middle.png"]["prediction"]["finding"] == INDETERMINATE
    assert found["bright.png"]["prediction"]["finding"] == NO_ACUTE
    assert _started(run["logs"])["thresholds_from"] == dict.fromkeys(
        ("acute_infarct", "no_acute_infarct", "in_scope", "in_scope_dicom_dwi"), "fallback"
    )


def test_a_one_output_bundle_is_served_as_before(tmp_path, bundles) -> None:
    """One output, no calibration, no thresholds: nothing refused, the network's own probabilities.

    The probabilities are what its engine gives for the daemon's tensor (as reports gave them
    before two-output bundles); the finding is the fallback rule's on them.
    """
    run = _once(tmp_path, bundles["one"])
    bundle = load_bundle(bundles["one"])
    engine = Engine.compile(bundle, InferenceConfig(device="CPU"), "fp16")
    try:
        for name, data in PICTURES.items():
            report = run["reports"][name]
            assert report["status"] == "ok"
            prediction = report["prediction"]
            assert prediction["calibrated"] is False
            p_neg = prediction["probabilities"][NEGATIVE]
            assert prediction["finding"] == finding(p_neg, 0.9, 0.9)
            direct = _classes(engine, preprocess(decode(data).pixels, SPEC))
            got = [prediction["probabilities"][label] for label in bundle.labels]
            np.testing.assert_allclose(got, direct, atol=1e-6)
    finally:
        engine.close()
    started = _started(run["logs"])
    assert started["calibrated"] is False
    assert started["in_scope_threshold"] is None
    assert started["variant"] == "fp16"  # auto: the bundle's default_variant
    assert run["status"]["not_analysed"] == 0


def _classes(engine: Engine, tensor: np.ndarray) -> np.ndarray:
    got: list[Any] = []
    done = threading.Event()
    engine.submit(tensor, None, lambda _job, out, _ms, _err: (got.append(out), done.set()))
    assert done.wait(30)
    assert got[0] is not None
    return np.asarray(got[0].classes, np.float64)


def test_a_hot_reload_to_a_two_output_bundle_takes_effect(tmp_path, bundles) -> None:
    """A running daemon on a one-output model; install the calibrated bundle; it refuses."""
    models = tmp_path / "models"
    install_bundle(bundles["one"], models)
    config = make_config(tmp_path, model={"path": str(models)}, thresholds={})
    with capture_logs() as logs, running(config) as service:
        drop(config.incoming, "before.png", PICTURES["refused.png"])
        wait_for(lambda: "before.png" in reports(config.reports), what="the first report")
        install_bundle(bundles["calibrated"], models)
        reloader = service.service.reloader
        assert reloader is not None
        wait_for(lambda: reloader.snapshot().reloads == 1, 60, "the reload")
        drop(config.incoming, "after.png", PICTURES["refused.png"])
        drop(config.incoming, "dim.png", PICTURES["dim.png"])
        wait_for(lambda: len(reports(config.reports)) == 3, 60, "every report")
        wait_for(lambda: (read_status(config.status_path) or {}).get("not_analysed") == 1)
    found = reports(config.reports)
    assert found["before.png"]["status"] == "ok"
    assert found["before.png"]["prediction"]["calibrated"] is False
    assert found["after.png"]["status"] == "not_analysed"
    assert found["after.png"]["reason"]["code"] == OUT_OF_SCOPE_IMAGE
    assert found["dim.png"]["prediction"]["calibrated"] is True
    assert found["dim.png"]["prediction"]["finding"] == ACUTE
    assert found["dim.png"]["model"]["variant"] == "int8"
    reloaded = next(e for e in logs if e["event"] == "model_reloaded")
    assert reloaded["calibrated"] is True
    assert reloaded["in_scope_threshold"] == 0.5
    assert reloaded["finding_thresholds"] == FINDING


class TestEngineOutputs:
    def test_outputs_are_read_by_name_not_position(self, tmp_path, network) -> None:
        """The manifest's names win: an IR listing in_scope first gives the same outputs."""
        data = preprocess(decode(PICTURES["dim.png"]).pixels, SPEC)
        got = []
        for name, swap in (("plain", False), ("swapped", True)):
            bundle = load_bundle(write_bundle(tmp_path / name, network, swap_outputs=swap))
            engine = Engine.compile(bundle, InferenceConfig(device="CPU"), "fp16")
            got.append(_outputs(engine, data))
        plain, swapped = got
        assert swapped.classes.shape == (len(LABEL_LIST),)
        np.testing.assert_allclose(swapped.classes, plain.classes, atol=1e-6)
        assert swapped.in_scope == pytest.approx(plain.in_scope, abs=1e-6)
        assert 0.5 < swapped.in_scope < 1.0

    def test_a_named_output_the_network_lacks_is_refused(self, tmp_path, network) -> None:
        folder = write_bundle(
            tmp_path / "b", network, outputs={"classes": "classes", "in_scope": "scope"}
        )
        with pytest.raises(EngineError, match="no output named 'scope'"):
            Engine.compile(load_bundle(folder), InferenceConfig(device="CPU"))

    def test_two_outputs_without_names_are_refused(self, tmp_path, network) -> None:
        """A manifest naming no outputs promises one; a second is not guessed at."""
        folder = write_bundle(
            tmp_path / "b", network, outputs={"classes": "classes"}, in_scope_threshold=None
        )
        with pytest.raises(EngineError, match="one input and the outputs its manifest names"):
            Engine.compile(load_bundle(folder), InferenceConfig(device="CPU"))


def _outputs(engine: Engine, tensor: np.ndarray) -> Any:
    got: list[Any] = []
    done = threading.Event()
    engine.submit(tensor, None, lambda _job, out, _ms, _err: (got.append(out), done.set()))
    assert done.wait(30)
    engine.close()
    assert got[0] is not None
    return got[0]


class TestRule:
    def test_calibrate_is_the_trainer_formula(self) -> None:
        rng = np.random.default_rng(1)
        p = rng.dirichlet(np.ones(27) * 0.3)
        p[3] = 0.0  # clipped at 1e-12 before the log, as in training
        for t in (0.5, 1.0, 1.7, 4.0):
            np.testing.assert_allclose(calibrate(p, t), apply_temperature(p[None], t)[0])

    @pytest.mark.parametrize(
        ("p_neg", "expected"),
        [
            (0.1, ACUTE),  # p_inf 0.9 exactly: acute (>=)
            (0.8, NO_ACUTE),
            (0.5, INDETERMINATE),
            (None, INDETERMINATE),
        ],
    )
    def test_finding_sides(self, p_neg, expected) -> None:
        assert finding(p_neg, 0.9, 0.8) == expected

    def test_a_nan_score_is_refused(self, tmp_path, network) -> None:
        rule = resolve(load_bundle(write_bundle(tmp_path / "b", network)), ThresholdsConfig())
        classes = np.full(len(LABEL_LIST), 1.0 / len(LABEL_LIST), np.float32)
        refused = rule.answer(classes, float("nan"))
        assert getattr(refused, "code", None) == OUT_OF_SCOPE_IMAGE
        accepted = rule.answer(classes, 0.5)
        assert getattr(accepted, "calibrated", None) is True


def test_the_schema_requires_finding_and_calibrated_in_a_prediction(calibrated_cli) -> None:
    """A 1.1 ok report without the new fields, or with an unknown finding, is invalid."""
    report = calibrated_cli["reports"]["dim.png"]
    VALIDATOR.validate(report)
    for key in ("finding", "calibrated"):
        broken = json.loads(json.dumps(report))
        del broken["prediction"][key]
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(broken)
    broken = json.loads(json.dumps(report))
    broken["prediction"]["finding"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(broken)


@pytest.mark.parametrize(
    ("thresholds", "problem"),
    [
        ({"acute_infarct": 0.3}, "At 'thresholds.acute_infarct': must be at least 0.5"),
        ({"no_acute_infarct": 1.5}, "At 'thresholds.no_acute_infarct': must be at most 1"),
        ({"in_scope": -0.1}, "At 'thresholds.in_scope': must be at least 0"),
        ({"fallback_in_scope": "high"}, "At 'thresholds.fallback_in_scope': must be a number"),
    ],
)
def test_thresholds_out_of_bounds_are_config_errors(tmp_path, thresholds, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, thresholds=thresholds)
    assert problem in str(caught.value)


def test_model_variant_accepts_auto_fp16_int8_only(tmp_path) -> None:
    assert load_config().model.variant == "auto"
    for variant in ("auto", "fp16", "int8"):
        assert make_config(tmp_path, model={"variant": variant}).model.variant == variant
    with pytest.raises(ConfigError, match=r"At 'model\.variant': must be one of auto, fp16, int8"):
        make_config(tmp_path, model={"variant": "fp32"})
