"""The OpenVINO engine with the committed bundle, the model holder, and bundle verification."""

from __future__ import annotations

import json
import shutil
import threading
from typing import TYPE_CHECKING

import numpy as np
import openvino.properties.hint as hints
import pytest
from daemon_support import brain_slice, make_config

from daemon.config import InferenceConfig
from daemon.errors import BundleError, EngineError
from daemon.model.holder import ModelHolder, load_model
from daemon.scan.inference import Engine
from daemon.service.service import load_verified_bundle
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle, write_manifest
from daemon.shared.preprocess import preprocess
from deploy.signing import keygen, sign_folder

if TYPE_CHECKING:
    from pathlib import Path

CPU = InferenceConfig(device="CPU")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_BUNDLE)


def _tensor(bundle) -> np.ndarray:
    return preprocess(brain_slice(), bundle.preprocess)


def _infer(
    engine: Engine, tensor: np.ndarray
) -> tuple[object, np.ndarray | None, float, str | None]:
    got: list[tuple[object, np.ndarray | None, float, str | None]] = []
    done = threading.Event()

    def on_done(job, outputs, latency, error) -> None:
        got.append((job, None if outputs is None else outputs.classes, latency, error))
        done.set()

    engine.submit(tensor, "job-1", on_done)
    assert done.wait(30)
    return got[0]


class TestEngine:
    def test_records_the_precision_actually_used(self, bundle) -> None:
        """The report's precision is what the compiled model says, not the IR's FP16."""
        engine = Engine.compile(bundle, CPU)
        actual = engine._compiled.get_property(hints.inference_precision).to_string()
        assert engine.info.precision == actual
        assert engine.info.weights_precision == "FP16"
        assert engine.info.device_requested == "CPU"
        assert engine.info.device_used == "CPU"
        assert engine.info.labels == bundle.labels
        assert engine.requests >= 1
        engine.close()

    def test_async_inference_hands_back_the_job_and_probabilities(self, bundle) -> None:
        """The job passed as userdata comes back with a probability per label."""
        engine = Engine.compile(bundle, CPU)
        job, probabilities, latency, error = _infer(engine, _tensor(bundle))
        engine.close()
        assert job == "job-1"
        assert error is None
        assert probabilities is not None
        assert probabilities.shape == (len(bundle.labels),)
        assert abs(float(probabilities.sum()) - 1.0) < 1e-3
        assert latency > 0

    def test_a_two_output_bundle_gives_its_in_scope_score(self, bundle) -> None:
        """The committed default names two outputs: the in_scope score comes with the classes."""
        assert bundle.outputs == {"classes": "classes", "in_scope": "in_scope"}
        engine = Engine.compile(bundle, CPU)
        got = []
        done = threading.Event()
        engine.submit(_tensor(bundle), "job", lambda *args: (got.append(args), done.set()))
        assert done.wait(30)
        engine.close()
        _job, outputs, _latency, error = got[0]
        assert error is None
        assert outputs is not None
        assert outputs.in_scope is not None
        assert 0.0 <= outputs.in_scope <= 1.0

    def test_one_channel_stands_for_identical_channels(self, bundle) -> None:
        """A (H, W, 1) tensor, as the scan workers send it, gives the (H, W, 3) result."""
        engine = Engine.compile(bundle, CPU)
        tensor = _tensor(bundle)
        _, full, _, _ = _infer(engine, tensor)
        _, plane, _, _ = _infer(engine, np.ascontiguousarray(tensor[:, :, :1]))
        engine.close()
        assert full is not None
        assert plane is not None
        np.testing.assert_array_equal(plane, full)

    def test_a_request_that_cannot_start_is_reported_to_its_job(self, bundle) -> None:
        """A tensor of the wrong shape becomes an error for that job, not an exception."""
        engine = Engine.compile(bundle, CPU)
        job, probabilities, _latency, error = _infer(engine, np.zeros((64, 64, 3), np.float32))
        engine.close()
        assert job == "job-1"
        assert probabilities is None
        assert error is not None and "could not start inference" in error

    def test_an_unknown_device_is_an_engine_error_naming_the_key(self, bundle) -> None:
        """A device OpenVINO does not have stops start-up with a message naming the key."""
        with pytest.raises(EngineError, match=r"At 'inference.device'.*NOPE"):
            Engine.compile(bundle, InferenceConfig(device="NOPE"))

    def test_labels_that_do_not_fit_the_network_are_refused(self, bundle, tmp_path) -> None:
        """A bundle whose labels.json does not match the network's outputs is refused."""
        copy = tmp_path / "bundle"
        shutil.copytree(DEFAULT_BUNDLE, copy)
        labels = json.loads((copy / "labels.json").read_text(encoding="utf-8"))
        (copy / "labels.json").write_text(json.dumps(labels[:5]), encoding="utf-8")
        manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
        write_manifest(
            copy,
            name=manifest["name"],
            version=manifest["version"],
            variants=manifest["variants"],
            input_spec=manifest["input"],
            metrics_summary={},
        )
        with pytest.raises(EngineError, match="labels"):
            Engine.compile(load_bundle(copy), CPU)


class TestHolder:
    def test_load_checks_the_model_as_the_workers_compile_it(self, bundle) -> None:
        """The model in service reports what a worker's one-thread engine reports, keeps none."""
        model = load_model(bundle, CPU, "fp16")
        worker = Engine.compile(bundle, CPU, "fp16", one_thread=True)
        assert model.info == worker.info
        assert model.requests == worker.requests
        assert model.choice.path == bundle.path
        assert model.choice.sha256 == bundle.sha256
        assert model.choice.variant == worker.info.variant
        kept = [type(value).__name__ for value in vars(model).values()]
        assert kept == ["Bundle", "ModelInfo", "int", "Rule"], "the daemon keeps no compiled model"
        worker.close()

    def test_a_model_the_device_cannot_compile_is_refused_at_load(self, bundle) -> None:
        """load_model compiles for the configured device: a missing device fails there."""
        with pytest.raises(EngineError, match=r"inference\.device"):
            load_model(bundle, InferenceConfig(device="NOPE"), "fp16")

    def test_swap_puts_the_new_model_in_service_and_returns_the_old(self, bundle) -> None:
        """A batch that took the model before the swap keeps it; later batches get the new one."""
        old = load_model(bundle, CPU, "fp16")
        new = load_model(bundle, CPU, "int8" if "int8" in bundle.variants else "fp16")
        holder = ModelHolder(old)
        taken = holder.current
        assert holder.swap(new) is old
        assert holder.current is new
        assert taken is old


class TestBundleAtStartup:
    def test_embedded_bundle_is_served_by_default(self, tmp_path) -> None:
        """model.path null serves daemon/models/default, verified; unsigned is reported so."""
        loaded, signature = load_verified_bundle(make_config(tmp_path))
        assert loaded.path == DEFAULT_BUNDLE
        assert signature == "unsigned"

    def test_models_folder_with_current_link_is_resolved(self, tmp_path) -> None:
        """A deploy-managed models folder serves the bundle its 'current' link points to."""
        models = tmp_path / "models"
        shutil.copytree(DEFAULT_BUNDLE, models / "versions" / "1")
        (models / "current").symlink_to(models / "versions" / "1")
        loaded, _ = load_verified_bundle(make_config(tmp_path, model={"path": str(models)}))
        assert loaded.path == (models / "versions" / "1").resolve()

    def test_tampered_bundle_is_refused(self, tmp_path) -> None:
        """One changed byte in the weights fails the sha256 check."""
        copy = tmp_path / "bundle"
        shutil.copytree(DEFAULT_BUNDLE, copy)
        weights = bytearray((copy / "model.bin").read_bytes())
        weights[1000] ^= 0xFF
        (copy / "model.bin").write_bytes(bytes(weights))
        with pytest.raises(BundleError, match=r"model\.bin: sha256"):
            load_verified_bundle(make_config(tmp_path, model={"path": str(copy)}))

    def test_signature_policy_is_applied(self, tmp_path) -> None:
        """Signed with the configured key: accepted; another key or no signature: refused."""
        copy = tmp_path / "bundle"
        shutil.copytree(DEFAULT_BUNDLE, copy)
        good_key, good_pub = keygen(tmp_path / "good")
        _, other_pub = keygen(tmp_path / "other")
        model = {"path": str(copy), "public_key": str(good_pub), "require_signature": True}
        with pytest.raises(BundleError, match="missing"):
            load_verified_bundle(make_config(tmp_path, model=model))
        sign_folder(copy, good_key)
        _, signature = load_verified_bundle(make_config(tmp_path, model=model))
        assert signature.startswith("signature valid")
        with pytest.raises(BundleError, match="does not verify"):
            load_verified_bundle(
                make_config(tmp_path, model={**model, "public_key": str(other_pub)})
            )


def test_missing_model_path_is_a_bundle_error(tmp_path: Path) -> None:
    """A model.path that does not exist stops start-up with a bundle error."""
    with pytest.raises(BundleError, match="not a folder"):
        load_verified_bundle(make_config(tmp_path, model={"path": str(tmp_path / "nowhere")}))
