"""Hot reload: a real daemon swaps models while scans stream in, refuses broken ones, obeys SIGHUP.

Every model is the committed bundle copied and given its own version (`versioned_bundle`), so
nothing here depends on which default model is committed. Versions are installed with deploy's
own `install_bundle` (what ``infarctwatch deploy install`` runs), or by hand (a symlink renamed
over ``current``) where deploy would refuse the bundle.
"""

from __future__ import annotations

import errno
import json
import signal
import threading
from typing import TYPE_CHECKING

import pytest
from daemon_support import (
    cli,
    drop,
    log_events,
    make_config,
    point_current,
    reports,
    running,
    small_png,
    spawn,
    versioned_bundle,
    wait_for,
    write_config,
)
from structlog.testing import capture_logs
from watchdog.observers.inotify import InotifyObserver

from daemon.clock import utc_now
from daemon.config import load_config
from daemon.model.holder import ModelHolder, load_model
from daemon.model.reload import ModelReloader
from daemon.service.status import describe, read_status
from daemon.shared.bundle import load_bundle
from deploy.install import install_bundle, rollback
from deploy.pack import pack_bundle
from deploy.signing import SignaturePolicy, keygen

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from daemon_support import ServiceThread

V1, V2, V3 = "1.0.0-reload", "2.0.0-reload", "3.0.0-reload"


def models_with(tmp_path: Path, version: str = V1, **policy: object) -> Path:
    """A deploy-managed models folder whose current version is ``version``."""
    models = tmp_path / "models"
    install_bundle(versioned_bundle(tmp_path / f"src-{version}", version), models, **policy)  # type: ignore[arg-type]
    return models


def reload_error(service: ServiceThread):
    return service.service.reloader.snapshot().error  # type: ignore[union-attr]


def scan_version(config, name: str, data: bytes, timeout: float = 30) -> str:
    """Drop one scan, wait for its report, return the model version the report names."""
    drop(config.incoming, name, data)
    wait_for(lambda: name in reports(config.reports), timeout, f"the report of {name}")
    report = reports(config.reports)[name]
    assert report["status"] == "ok", report["error"]
    return report["model"]["version"]


class TestHotReload:
    def test_a_new_version_is_swapped_in_while_scans_stream_in(self, tmp_path) -> None:
        """No scan lost or failed across `infarctwatch deploy install` (a real process) of v2.

        Causality, not clocks: scans reported before the install began must name v1, scans
        dropped after the daemon said it reloaded must name v2, scans in between either.
        """
        models = models_with(tmp_path)
        v2 = versioned_bundle(tmp_path / "src-v2", V2)
        config = make_config(tmp_path, model={"path": str(models)})
        dropped: list[str] = []

        def drop_next() -> str:
            name = f"scan-{len(dropped):04d}.png"
            drop(config.incoming, name, small_png(len(dropped)))
            dropped.append(name)
            return name

        with running(config) as service:
            reloader = service.service.reloader
            assert reloader is not None
            for _ in range(8):
                drop_next()
            wait_for(lambda: len(reports(config.reports)) == 8, what="the first reports")
            before = set(reports(config.reports))
            done: list[subprocess.CompletedProcess[str]] = []
            command = ("deploy", "install", str(v2), "--models-dir", str(models), "--no-config")
            install = threading.Thread(target=lambda: done.append(cli(*command)), name="install")
            install.start()
            stop_event = threading.Event()
            while reloader.snapshot().reloads == 0 and len(dropped) < 2000:
                drop_next()
                stop_event.wait(0.01)
            install.join()
            assert done[0].returncode == 0, done[0].stderr
            assert "installed and activated" in done[0].stdout
            after = {drop_next() for _ in range(8)}
            wait_for(lambda: len(reports(config.reports)) == len(dropped), what="every report")
            wait_for(lambda: read_status(config.status_path)["model"]["version"] == V2)
            status = read_status(config.status_path)
        found = reports(config.reports)
        assert sorted(found) == dropped
        assert all(r["status"] == "ok" for r in found.values())
        assert not (config.work / "failed").exists() or not any((config.work / "failed").iterdir())
        versions = {name: r["model"]["version"] for name, r in found.items()}
        assert {versions[name] for name in before} == {V1}
        assert {versions[name] for name in after} == {V2}
        assert set(versions.values()) == {V1, V2}
        assert status is not None
        assert status["model"]["version"] == V2
        assert status["model"]["reloads"] == 1
        assert status["model"]["reload_error"] is None
        assert status["model"]["watching"] == str(models)

    @pytest.mark.parametrize(
        ("breakage", "expected"),
        [
            ("truncated_bin", "Incorrect weights"),
            ("labels_mismatch", "outputs but labels.json names"),
        ],
    )
    def test_a_model_that_cannot_be_compiled_leaves_the_old_one_serving(
        self, tmp_path, breakage, expected
    ) -> None:
        """A bundle that verifies but OpenVINO refuses: logged, status says so, v1 keeps serving.

        A later good version is then picked up normally and clears the error.
        """

        def truncated_bin(folder: Path) -> None:  # every variant's weights, whichever is served
            for weights in folder.glob("*.bin"):
                data = weights.read_bytes()
                weights.write_bytes(data[: len(data) // 2])

        def labels_mismatch(folder: Path) -> None:
            labels = json.loads((folder / "labels.json").read_text())
            (folder / "labels.json").write_text(json.dumps(labels[:-1]))

        change = {"truncated_bin": truncated_bin, "labels_mismatch": labels_mismatch}[breakage]
        models = models_with(tmp_path)
        broken = versioned_bundle(tmp_path / "src-v2", V2, change=change)
        config = make_config(tmp_path, model={"path": str(models)})
        with running(config) as service:
            install_bundle(broken, models)  # deploy verifies checksums: this one passes
            wait_for(lambda: reload_error(service) is not None, what="the reload failure")
            assert scan_version(config, "during.png", small_png(1)) == V1
            error = reload_error(service)
            assert error.version == V2
            assert expected in error.message
            wait_for(lambda: read_status(config.status_path)["model"]["reload_error"] is not None)
            status = read_status(config.status_path)
            assert status["model"]["version"] == V1
            assert status["model"]["reload_error"]["version"] == V2
            assert expected in status["model"]["reload_error"]["message"]
            text, code = describe(status, config.status_path, utc_now())
            assert code == 0
            assert f"reload error FAILED to load {V2}" in text
            assert f"still serving {V1}" in text
            install_bundle(versioned_bundle(tmp_path / "src-v3", V3), models)
            wait_for(lambda: service.service.reloader.snapshot().reloads == 1, what="v3")
            assert reload_error(service) is None
            assert scan_version(config, "after.png", small_png(2)) == V3

    def test_a_model_that_fails_verification_leaves_the_old_one_serving(self, tmp_path) -> None:
        """A version edited by hand (checksum mismatch) is refused and not retried on its own.

        Rolling back clears the error; repairing the version in place and sending SIGHUP (here
        its effect, `Shutdown.reload`) loads it.
        """
        models = models_with(tmp_path)
        bad = models / "versions" / V2
        versioned_bundle(bad, V2)
        good_labels = (bad / "labels.json").read_bytes()
        (bad / "labels.json").write_text('["tampered"]')
        config = make_config(tmp_path, model={"path": str(models)})
        with running(config) as service:
            reloader = service.service.reloader
            point_current(models, bad)
            wait_for(lambda: reload_error(service) is not None, what="the reload failure")
            error = reload_error(service)
            assert error.version == V2
            assert "labels.json: sha256" in error.message
            assert scan_version(config, "during.png", small_png(1)) == V1
            rollback(models, to=V1)
            wait_for(lambda: reload_error(service) is None, what="the error to clear")
            assert reloader.snapshot().reloads == 0
            assert scan_version(config, "rolled-back.png", small_png(2)) == V1
            point_current(models, bad)
            wait_for(lambda: reload_error(service) is not None, what="the second failure")
            (bad / "labels.json").write_bytes(good_labels)
            service.shutdown.reload.set()
            wait_for(lambda: reloader.snapshot().reloads == 1, what="the retry on SIGHUP")
            assert reload_error(service) is None
            assert scan_version(config, "repaired.png", small_png(3)) == V2

    def test_an_unsigned_model_is_refused_when_signatures_are_required(self, tmp_path) -> None:
        """The signature policy applies on reload too: an unsigned version never serves."""
        private, public = keygen(tmp_path / "release")
        signed = pack_bundle(
            versioned_bundle(tmp_path / "src-v1", V1), tmp_path / "v1.tar.gz", sign_key=private
        )
        models = tmp_path / "models"
        install_bundle(signed.path, models, policy=SignaturePolicy(public, True))
        config = make_config(
            tmp_path,
            model={"path": str(models), "public_key": str(public), "require_signature": True},
        )
        with running(config) as service:
            install_bundle(versioned_bundle(tmp_path / "src-v2", V2), models)  # no policy: lands
            wait_for(lambda: reload_error(service) is not None, what="the refusal")
            assert "manifest.sig is missing" in reload_error(service).message
            assert scan_version(config, "during.png", small_png(1)) == V1

    def test_a_plain_bundle_folder_is_only_reloaded_when_asked(self, tmp_path) -> None:
        """model.path naming a bundle folder: no models folder to watch; a reload request (SIGHUP's
        effect) loads it if its manifest changed, and says unchanged otherwise."""
        bundle = versioned_bundle(tmp_path / "bundle", V1)
        config = make_config(tmp_path, model={"path": str(bundle)})
        with running(config) as service:
            reloader = service.service.reloader
            assert reloader.snapshot().watching is None
            service.shutdown.reload.set()
            wait_for(lambda: not service.shutdown.reload.is_set(), what="the request taken")
            assert scan_version(config, "same.png", small_png(1)) == V1
            versioned_bundle(tmp_path / "v2", V2)
            (bundle / "manifest.json").write_bytes((tmp_path / "v2" / "manifest.json").read_bytes())
            service.shutdown.reload.set()
            wait_for(lambda: reloader.snapshot().reloads == 1, what="the reload")
            assert scan_version(config, "new.png", small_png(2)) == V2


def test_without_inotify_the_periodic_check_finds_a_new_current(tmp_path, monkeypatch) -> None:
    """When the models folder cannot be watched (inotify limit, fault injected), the periodic
    look at where current resolves still swaps the new version in."""

    def no_inotify(_observer) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(InotifyObserver, "start", no_inotify)
    models = models_with(tmp_path)
    config = make_config(tmp_path, model={"path": str(models)})
    holder = ModelHolder(load_model(load_bundle(models / "current"), config.inference, "fp16"))
    with (
        capture_logs() as logs,
        ModelReloader(config, holder, "unsigned", check_interval_s=0.1) as reloader,
    ):
        install_bundle(versioned_bundle(tmp_path / "src-v2", V2), models)
        wait_for(lambda: reloader.snapshot().reloads == 1, what="the periodic check")
    assert holder.current.info.version == V2
    assert "models_folder_not_watched" in [e["event"] for e in logs]


@pytest.mark.slow
class TestSighup:
    def test_sighup_reloads_a_changed_bundle_in_a_real_process(self, tmp_path) -> None:
        """`kill -HUP` (systemctl reload) on a running daemon: the rewritten bundle serves next."""
        bundle = versioned_bundle(tmp_path / "bundle", V1)
        path = write_config(tmp_path, model={"path": str(bundle)})
        config = load_config(path)
        daemon = spawn("run", "--config", str(path), log=tmp_path / "daemon.log")
        try:
            wait_for(
                lambda: (read_status(config.status_path) or {}).get("state") == "running",
                timeout=60,
                what="the daemon to run",
            )
            assert scan_version(config, "before.png", small_png(1)) == V1
            versioned_bundle(tmp_path / "v2", V2)
            (bundle / "manifest.json").write_bytes((tmp_path / "v2" / "manifest.json").read_bytes())
            daemon.send_signal(signal.SIGHUP)
            wait_for(
                lambda: read_status(config.status_path)["model"]["version"] == V2,
                what="the status to name v2",
            )
            assert scan_version(config, "after.png", small_png(2)) == V2
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
        events = [e["event"] for e in log_events(tmp_path / "daemon.log")]
        assert "reload_requested" in events
        assert "model_reloaded" in events
