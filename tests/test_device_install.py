"""`deploy device-install` into a temporary root: account, folders, config, unit, enablement.

Each test installs into a fresh prefix holding only the account files a Debian system has, with
the real ``useradd --prefix`` / ``groupadd --prefix`` and ``systemctl --root=`` (both work
without a running systemd), and checks every file, owner and mode it creates. The venv is
skipped (``--skip-venv``) except in the one test that builds it from a local wheelhouse.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import pytest
import structlog
import yaml

from daemon.config import load_config
from deploy.cli import main
from deploy.device import (
    BIN_LINK,
    CACHE,
    CONFIG,
    DROPIN_DIR,
    ETC,
    INBOX,
    MODELS,
    OPT,
    PUBLIC_KEY,
    STATE,
    TELEMETRY_OPT_OUT,
    UNIT,
    UNIT_DIR,
    VENV,
    WORK,
    DeviceOptions,
    install_device,
    venv_commands,
)
from deploy.errors import DeviceInstallError
from deploy.install import list_versions
from deploy.signing import keygen

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating users and chown need root"),
    pytest.mark.skipif(
        not (shutil.which("useradd") and shutil.which("systemctl")),
        reason="needs useradd and systemctl",
    ),
]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog for a terminal; leave the global state as it was found."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty system root with the account databases of a fresh Debian install."""
    prefix = tmp_path / "root"
    etc = prefix / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nrender:x:105:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nrender:!::\n")
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    return prefix


def at(root: Path, device_path: PurePosixPath) -> Path:
    return root / str(device_path).lstrip("/")


def account(root: Path, database: str, name: str) -> list[str]:
    for line in (root / "etc" / database).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in {database}")


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def install(root: Path, **kwargs: object) -> list[str]:
    options = DeviceOptions(root=root, skip_venv=True, **kwargs)  # type: ignore[arg-type]
    return install_device(options, lambda _: None)


class TestDeviceInstall:
    def test_system_account_is_created(self, root: Path) -> None:
        """A system user and group infarctwatch, no login shell, home in the state folder."""
        install(root)
        user = account(root, "passwd", "infarctwatch")
        group = account(root, "group", "infarctwatch")
        assert int(user[2]) < 1000 and user[3] == group[2]
        assert user[5] == str(STATE) and user[6] == "/usr/sbin/nologin"
        assert not at(root, PurePosixPath("/home/infarctwatch")).exists()

    def test_folders_owners_and_modes(self, root: Path) -> None:
        """Every folder with the documented owner and mode; incoming/reports setgid."""
        install(root)
        uid = int(account(root, "passwd", "infarctwatch")[2])
        gid = int(account(root, "group", "infarctwatch")[2])
        expected = {
            ETC: (0, gid, 0o750),
            STATE: (uid, gid, 0o750),
            MODELS: (uid, gid, 0o750),
            WORK: (uid, gid, 0o750),
            INBOX: (uid, gid, 0o750),
            CACHE: (uid, gid, 0o750),
            PurePosixPath("/srv/infarctwatch/incoming"): (uid, gid, 0o2770),
            PurePosixPath("/srv/infarctwatch/reports"): (uid, gid, 0o2750),
            OPT: (0, 0, 0o755),
        }
        for device_path, want in expected.items():
            assert owner_mode(at(root, device_path)) == want, device_path

    def test_config_is_the_documented_one_with_device_paths(self, root: Path) -> None:
        """daemon.yaml: root:infarctwatch 0640, comments kept, device paths, daemon accepts it."""
        install(root)
        path = at(root, CONFIG)
        gid = int(account(root, "group", "infarctwatch")[2])
        assert owner_mode(path) == (0, gid, 0o640)
        text = path.read_text()
        assert "# One JSON report per scan" in text  # the documented template, comments kept
        data = yaml.safe_load(text)
        assert data["incoming"] == "/srv/infarctwatch/incoming"
        assert data["reports"] == "/srv/infarctwatch/reports"
        assert data["work"] == str(WORK)
        assert data["model"]["path"] == str(MODELS)
        assert data["model"]["inbox"] == str(INBOX)
        assert data["inference"]["cache_dir"] == str(CACHE)
        assert data["model"]["require_signature"] is False
        config = load_config(path)  # the daemon's own loader: every key valid
        assert config.model.path == Path(str(MODELS))

    def test_the_service_user_opts_out_of_openvino_telemetry(self, root: Path) -> None:
        """$HOME/intel/openvino_telemetry holds 0 for the service user, as opt_in_out --opt_out
        writes it; openvino_telemetry's own checker, pointed at that home, then declines."""
        install(root)
        uid = int(account(root, "passwd", "infarctwatch")[2])
        gid = int(account(root, "group", "infarctwatch")[2])
        home = at(root, PurePosixPath(account(root, "passwd", "infarctwatch")[5]))
        opt_out = at(root, TELEMETRY_OPT_OUT)
        assert opt_out == home / "intel" / "openvino_telemetry"
        assert opt_out.read_text() == "0"
        assert owner_mode(opt_out) == (uid, gid, 0o640)
        code = (
            "from openvino_telemetry.utils.opt_in_checker import OptInChecker, ConsentCheckResult\n"
            "print(OptInChecker().check(enable_opt_in_dialog=False) is ConsentCheckResult.DECLINED)"
        )
        env = {"HOME": str(home), "PATH": os.environ["PATH"]}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert result.stdout.strip() == "True"

    def test_unit_installed_and_enabled(self, root: Path) -> None:
        """The unit file is the repository's, 0644, and multi-user.target wants it."""
        install(root)
        unit = at(root, UNIT_DIR / UNIT)
        assert unit.read_bytes() == (REPO / "systemd" / UNIT).read_bytes()
        assert owner_mode(unit) == (0, 0, 0o644)
        wants = at(root, UNIT_DIR / "multi-user.target.wants" / UNIT)
        assert wants.is_symlink()
        assert wants.readlink() == Path(str(UNIT_DIR / UNIT))
        assert not at(root, DROPIN_DIR).exists()

    def test_command_link_and_initial_model(self, root: Path) -> None:
        """/usr/local/bin/infarctwatch points into the venv; the embedded model is current."""
        install(root)
        link = at(root, BIN_LINK)
        assert link.readlink() == Path(str(VENV / "bin" / "infarctwatch"))
        models = at(root, MODELS)
        state = list_versions(models)
        assert state.current is not None
        uid = int(account(root, "passwd", "infarctwatch")[2])
        assert all(p.lstat().st_uid == uid for p in models.rglob("*"))

    def test_rerun_keeps_an_edited_config_and_repairs_modes(self, root: Path) -> None:
        """A second run never overwrites daemon.yaml, and puts a loosened mode back."""
        install(root)
        config = at(root, CONFIG)
        config.write_text(config.read_text().replace("device: AUTO", "device: GPU"))
        at(root, WORK).chmod(0o777)
        steps = install(root)
        assert "device: GPU" in config.read_text()
        assert f"kept existing {CONFIG} (never overwritten)" in steps
        assert stat.S_IMODE(at(root, WORK).stat().st_mode) == 0o750
        assert not any(step.startswith("created system") for step in steps)

    def test_existing_incoming_share_is_left_alone(self, root: Path) -> None:
        """A pre-existing incoming folder (e.g. a mount point) keeps its owner and mode."""
        incoming = at(root, PurePosixPath("/srv/infarctwatch/incoming"))
        incoming.mkdir(parents=True)
        incoming.chmod(0o755)
        install(root)
        assert owner_mode(incoming) == (0, 0, 0o755)

    def test_custom_folders_get_a_paths_dropin(self, root: Path) -> None:
        """--incoming/--reports elsewhere: created, in the config, and writable via paths.conf."""
        install(
            root,
            incoming=PurePosixPath("/mnt/pacs/dwi"),
            reports=PurePosixPath("/data/reports"),
        )
        data = yaml.safe_load(at(root, CONFIG).read_text())
        assert data["incoming"] == "/mnt/pacs/dwi" and data["reports"] == "/data/reports"
        dropin = at(root, DROPIN_DIR / "paths.conf").read_text()
        assert "ReadWritePaths=-/mnt/pacs/dwi -/data/reports" in dropin
        assert at(root, PurePosixPath("/mnt/pacs/dwi")).is_dir()

    def test_gpu_dropin(self, root: Path) -> None:
        """--gpu installs the GPU/NPU drop-in next to the unit."""
        install(root, gpu=True)
        dropin = at(root, DROPIN_DIR / "gpu.conf")
        assert dropin.read_bytes() == (REPO / "systemd" / f"{UNIT}.d" / "gpu.conf").read_bytes()
        assert owner_mode(dropin) == (0, 0, 0o644)

    def test_public_key_requires_signatures_and_skips_the_unsigned_model(
        self, root: Path, tmp_path: Path
    ) -> None:
        """--public-key: key copied, require_signature on, no unsigned model installed."""
        _, public = keygen(tmp_path / "release")
        steps = install(root, public_key=public)
        key = at(root, PUBLIC_KEY)
        gid = int(account(root, "group", "infarctwatch")[2])
        assert key.read_bytes() == public.read_bytes()
        assert owner_mode(key) == (0, gid, 0o640)
        data = yaml.safe_load(at(root, CONFIG).read_text())
        assert data["model"]["public_key"] == str(PUBLIC_KEY)
        assert data["model"]["require_signature"] is True
        assert list_versions(at(root, MODELS)).current is None
        assert any("push a signed bundle" in step for step in steps)

    def test_a_key_added_later_to_a_kept_config_is_pointed_out(
        self, root: Path, tmp_path: Path
    ) -> None:
        """Re-run with --public-key on an existing config: the key is installed, a note says the
        config must be edited, and no unsigned model is installed from then on."""
        install(root, initial_bundle=False)
        _, public = keygen(tmp_path / "release")
        steps = install(root, public_key=public)
        assert at(root, PUBLIC_KEY).read_bytes() == public.read_bytes()
        assert any(step.startswith(f"note: {CONFIG} was kept") for step in steps)

    def test_a_root_without_account_files_is_refused(self, tmp_path: Path) -> None:
        """An empty folder is not a system root: refused before anything is written."""
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(DeviceInstallError, match="not a system root"):
            install(empty)
        assert list(empty.iterdir()) == []

    def test_cli(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`infarctwatch deploy device-install --root R --skip-venv` prints each step."""
        assert main(["device-install", "--root", str(root), "--skip-venv"]) == 0
        out = capsys.readouterr().out
        assert "created system user infarctwatch" in out
        assert f"enabled {UNIT}" in out


class TestVenv:
    def test_venv_commands_install_the_edge_package_only(self, tmp_path: Path) -> None:
        """python -m venv, then pip install of the bare package (no [train] extra)."""
        commands = venv_commands(
            "python3.11",
            Path("/opt/infarctwatch/venv"),
            "/src/infarctwatch",
            find_links=(Path("/wheels"),),
            no_index=True,
        )
        assert commands[0] == ["python3.11", "-m", "venv", "/opt/infarctwatch/venv"]
        pip = commands[1]
        assert pip[:4] == ["/opt/infarctwatch/venv/bin/python", "-m", "pip", "install"]
        assert pip[-1] == "/src/infarctwatch"
        assert "--no-index" in pip and pip[pip.index("--find-links") + 1] == "/wheels"
        assert not any("[" in word for word in pip)

    @pytest.mark.slow
    @pytest.mark.skipif(
        not os.environ.get("INFARCTWATCH_WHEELHOUSE"),
        reason="set INFARCTWATCH_WHEELHOUSE to a folder of wheels to build the real venv offline",
    )
    def test_real_edge_venv(self, root: Path) -> None:
        """Builds the venv from local wheels: infarctwatch runs, TensorFlow is absent."""
        wheelhouse = Path(os.environ["INFARCTWATCH_WHEELHOUSE"])
        options = DeviceOptions(
            root=root,
            source=REPO,
            python=sys.executable,
            find_links=(wheelhouse,),
            no_index=True,
        )
        install_device(options, lambda _: None)
        python = at(root, VENV / "bin" / "python")
        probe = "import importlib.util as u; print(u.find_spec('tensorflow') is None)"
        result = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == "True"
        command = at(root, VENV / "bin" / "infarctwatch")
        models = at(root, MODELS)
        listing = subprocess.run(
            [str(command), "deploy", "list", "--models-dir", str(models), "--no-config"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert listing.returncode == 0 and listing.stdout.startswith("* ")
