"""`deploy push`: copy a bundle to a device over ssh and install it there.

The system's ``ssh`` and ``scp`` are replaced by small scripts first on PATH that record their
arguments and act locally (``ssh HOST CMD`` runs ``sh -c CMD``; ``scp SRC HOST:DST`` copies), so
the real remote side runs: the real ``infarctwatch deploy install`` on a local "device" folder.
``FAKE_SCP_FAIL`` injects a transfer failure.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from daemon.shared.bundle import DEFAULT_BUNDLE, MANIFEST
from daemon.shared.bundle import write_manifest as daemon_write_manifest
from deploy.cli import main
from deploy.errors import PushError, VerificationError
from deploy.install import CURRENT, list_versions
from deploy.pack import pack_bundle
from deploy.push import PushOptions, push, remote_install_command
from deploy.signing import keygen

if TYPE_CHECKING:
    from collections.abc import Iterator

FAKE_SSH = """\
#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
opts = []
while args and args[0] == "-o":
    opts.append(args[1]); args = args[2:]
assert args[0] == "--", args
host, command = args[1], " ".join(args[2:])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": "ssh", "opts": opts, "host": host, "command": command}}) + "\\n")
sys.exit(subprocess.run(["sh", "-c", command]).returncode)
"""

FAKE_SCP = """\
#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
opts = []
while args and args[0] == "-o":
    opts.append(args[1]); args = args[2:]
assert args[0] == "--", args
source, target = args[1], args[2]
host, _, path = target.partition(":")
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": "scp", "opts": opts, "host": host, "source": source,
                           "path": path}}) + "\\n")
if os.environ.get("FAKE_SCP_FAIL"):
    print("lost connection", file=sys.stderr)
    sys.exit(1)
shutil.copyfile(source, path)
"""


def make_bundle(base: Path, version: str) -> Path:
    """A valid bundle folder with its own version, from the committed seed bundle."""
    folder = base / f"src-{version}"
    shutil.copytree(DEFAULT_BUNDLE, folder)
    seed = json.loads((DEFAULT_BUNDLE / MANIFEST).read_text())
    (folder / "metrics.json").write_text(json.dumps({"version": version}) + "\n")
    daemon_write_manifest(
        folder,
        name="infarctwatch-test",
        version=version,
        variants=seed["variants"],
        input_spec=seed["input"],
        metrics_summary={},
    )
    return folder


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for a terminal; leave the global state as it was found."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake ssh/scp first on PATH, the venv's infarctwatch next; returns the call log path."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        script = bin_dir / name
        script.write_text(text.format(python=sys.executable))
        script.chmod(0o755)
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    log = tmp_path / "calls.jsonl"
    venv_bin = Path(sys.executable).parent
    monkeypatch.setenv("PATH", f"{bin_dir}:{venv_bin}:/usr/bin:/bin")
    monkeypatch.setenv("TMPDIR", str(remote_tmp))
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def calls(log: Path) -> list[dict[str, object]]:
    """The recorded ssh/scp invocations, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def options(models: Path, **kwargs: object) -> PushOptions:
    return PushOptions(models_dir=str(models), remote_config=None, **kwargs)  # type: ignore[arg-type]


class TestPush:
    def test_push_installs_on_the_device_and_cleans_up(self, tmp_path: Path, device: Path) -> None:
        """mktemp, scp, remote install, rm: the bundle ends up current on the device."""
        archive = pack_bundle(make_bundle(tmp_path, "1.0.0"), tmp_path / "b.tar.gz").path
        models = tmp_path / "device-models"
        result = push(archive, "edge@scanner-1", options(models))
        assert "installed and activated" in result.remote_output
        assert (models / CURRENT).readlink() == Path("versions/1.0.0")
        log = calls(device)
        assert [c["tool"] for c in log] == ["ssh", "scp", "ssh", "ssh"]
        assert all(c["host"] == "edge@scanner-1" for c in log)
        assert all("BatchMode=yes" in c["opts"] for c in log)  # type: ignore[operator]
        assert str(log[0]["command"]).startswith("mktemp -d")
        assert str(log[1]["path"]).endswith("/bundle.tar.gz")
        assert "deploy install" in str(log[2]["command"])
        assert str(log[3]["command"]).startswith("rm -rf --")
        assert list((tmp_path / "remote-tmp").iterdir()) == []

    def test_a_folder_is_packed_on_the_fly(self, tmp_path: Path, device: Path) -> None:
        """Pushing a bundle folder (or a training run) sends a packed archive."""
        models = tmp_path / "device-models"
        push(make_bundle(tmp_path, "2.0.0"), "edge@scanner-1", options(models))
        assert list_versions(models).current == "2.0.0"

    def test_the_device_policy_refuses_an_unsigned_bundle(
        self, tmp_path: Path, device: Path
    ) -> None:
        """The device's own config demands a signature: the push fails, the device is unchanged."""
        _, public = keygen(tmp_path / "release")
        models = tmp_path / "device-models"
        config = tmp_path / "daemon.yaml"
        config.write_text(
            f"model:\n  path: {models}\n  public_key: {public}\n  require_signature: true\n"
        )
        archive = pack_bundle(make_bundle(tmp_path, "1.0.0"), tmp_path / "b.tar.gz").path
        with pytest.raises(PushError, match=r"install failed (?s:.*)manifest\.sig is missing"):
            push(archive, "edge@scanner-1", PushOptions(remote_config=str(config)))
        assert not models.exists()
        assert str(calls(device)[-1]["command"]).startswith("rm -rf")

    def test_a_transfer_failure_is_reported_and_cleaned_up(
        self, tmp_path: Path, device: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """scp fails: PushError names the copy step, no install runs, the temp folder goes."""
        monkeypatch.setenv("FAKE_SCP_FAIL", "1")
        archive = pack_bundle(make_bundle(tmp_path, "1.0.0"), tmp_path / "b.tar.gz").path
        models = tmp_path / "device-models"
        with pytest.raises(PushError, match=r"copy failed \(exit 1\):\n  lost connection"):
            push(archive, "edge@scanner-1", options(models))
        assert [c["tool"] for c in calls(device)] == ["ssh", "scp", "ssh"]
        assert not models.exists()
        assert list((tmp_path / "remote-tmp").iterdir()) == []

    def test_an_invalid_bundle_is_never_sent(self, tmp_path: Path, device: Path) -> None:
        """Local verification fails first: no ssh or scp is run at all."""
        folder = make_bundle(tmp_path, "1.0.0")
        (folder / "model.bin").write_bytes(b"corrupt")
        with pytest.raises(VerificationError):
            push(folder, "edge@scanner-1", options(tmp_path / "m"))
        assert calls(device) == []

    @pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "", "a b"])
    def test_a_host_that_is_not_a_host_is_refused(
        self, tmp_path: Path, device: Path, host: str
    ) -> None:
        """A host starting with '-' (an ssh option) or holding spaces never reaches ssh."""
        with pytest.raises(PushError, match="is not a host name"):
            push(make_bundle(tmp_path, "1.0.0"), host, options(tmp_path / "m"))
        assert calls(device) == []

    def test_ssh_options_are_passed_to_ssh_and_scp(self, tmp_path: Path, device: Path) -> None:
        """--ssh-option values reach both tools as -o OPTION."""
        archive = pack_bundle(make_bundle(tmp_path, "1.0.0"), tmp_path / "b.tar.gz").path
        opts = options(tmp_path / "m", ssh_options=("BatchMode=yes", "Port=2222"))
        push(archive, "edge@scanner-1", opts)
        assert all("Port=2222" in c["opts"] for c in calls(device))  # type: ignore[operator]

    def test_cli_push_prints_the_device_report(
        self, tmp_path: Path, device: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`infarctwatch deploy push` prints one line per device output line, prefixed by host."""
        archive = pack_bundle(make_bundle(tmp_path, "1.0.0"), tmp_path / "b.tar.gz").path
        models = tmp_path / "device-models"
        args = ["push", str(archive), "edge@scanner-1", "--models-dir", str(models)]
        assert main([*args, "--no-remote-config"]) == 0
        out = capsys.readouterr().out
        assert "edge@scanner-1: pushed infarctwatch-test 1.0.0" in out
        assert "edge@scanner-1: infarctwatch-test 1.0.0: installed and activated" in out


class TestRemoteCommand:
    def test_every_word_is_quoted(self) -> None:
        """A models folder with spaces and quotes stays one word on the remote shell."""
        command = remote_install_command(
            "/tmp/infarctwatch-push.abc/bundle.tar.gz",
            PushOptions(models_dir="/srv/my models/it's", remote_config=None),
        )
        assert command == (
            "infarctwatch deploy install /tmp/infarctwatch-push.abc/bundle.tar.gz "
            "--models-dir '/srv/my models/it'\"'\"'s'"
        )

    def test_sudo_config_and_restart(self) -> None:
        """--sudo prefixes both commands with sudo -n; --restart try-restarts the service."""
        command = remote_install_command("/tmp/x/b.tar.gz", PushOptions(sudo=True, restart=True))
        assert command == (
            "sudo -n infarctwatch deploy install /tmp/x/b.tar.gz "
            "--config /etc/infarctwatch/daemon.yaml"
            " && sudo -n systemctl try-restart infarctwatch.service"
        )
