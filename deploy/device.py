"""Install infarctwatch on a Debian/Ubuntu edge device, or into a root prefix (an image, a test).

What it creates, relative to ``root`` (``/`` on the device itself)::

    user and group infarctwatch          system account, no login shell, home /var/lib/infarctwatch
    /etc/infarctwatch/                   root:infarctwatch 0750
        daemon.yaml                      root:infarctwatch 0640, written only if absent
        bundle-signing.pub               root:infarctwatch 0640, with --public-key
    /var/lib/infarctwatch/{,models,work,inbox}  infarctwatch:infarctwatch 0750
    /var/lib/infarctwatch/intel/openvino_telemetry  "0": the service user opts out of OpenVINO's
                                         telemetry (what `opt_in_out --opt_out` writes)
    /var/cache/infarctwatch/             infarctwatch:infarctwatch 0750 (compiled-model cache)
    /srv/infarctwatch/incoming           infarctwatch:infarctwatch 2770, only if absent
    /srv/infarctwatch/reports            infarctwatch:infarctwatch 2750, only if absent
    /opt/infarctwatch/venv/              root:root, the edge install only (never [train])
    /usr/local/bin/infarctwatch          symlink into the venv (admins, `deploy push`)
    /etc/systemd/system/infarctwatch.service  (+ .d/gpu.conf with --gpu, .d/paths.conf for
                                         non-default folders), enabled; started when root is /

Every step is idempotent: running it again repairs owners and modes, upgrades the venv and
never touches an edited ``daemon.yaml``. The config it writes serves ``models`` with hot reload
and watches ``inbox`` for bundle archives (`daemon.model.inbox`). The setgid bit on incoming/reports
keeps files in the infarctwatch group, so a scanner's receiving user only needs to join that
group.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import yaml

from daemon.shared.bundle import DEFAULT_BUNDLE
from deploy.device_config import FALLBACK_TEMPLATE, render_device_config
from deploy.errors import DeviceInstallError
from deploy.install import current_version, install_bundle

if TYPE_CHECKING:
    from collections.abc import Callable

USER = GROUP = "infarctwatch"
UNIT = "infarctwatch.service"
ETC = PurePosixPath("/etc/infarctwatch")
CONFIG = ETC / "daemon.yaml"
PUBLIC_KEY = ETC / "bundle-signing.pub"
STATE = PurePosixPath("/var/lib/infarctwatch")
MODELS = STATE / "models"
WORK = STATE / "work"
INBOX = STATE / "inbox"
TELEMETRY_DIR = STATE / "intel"
TELEMETRY_OPT_OUT = TELEMETRY_DIR / "openvino_telemetry"
"""``import openvino`` starts the openvino_telemetry client, which is opt-*out*: it sends usage
events unless ``$HOME/intel/openvino_telemetry`` holds ``0``. The service user's home is
`STATE`, so this file opts it out (the unit's PrivateNetwork and AF_UNIX-only sockets would block
the traffic anyway; this also stops the client from writing its id and stats files)."""
CACHE = PurePosixPath("/var/cache/infarctwatch")
INCOMING = PurePosixPath("/srv/infarctwatch/incoming")
REPORTS = PurePosixPath("/srv/infarctwatch/reports")
OPT = PurePosixPath("/opt/infarctwatch")
VENV = OPT / "venv"
BIN_LINK = PurePosixPath("/usr/local/bin/infarctwatch")
UNIT_DIR = PurePosixPath("/etc/systemd/system")
DROPIN_DIR = UNIT_DIR / f"{UNIT}.d"
REPO = Path(__file__).resolve().parent.parent
_FORBIDDEN_IN_VENV = ("tensorflow", "keras", "nncf")
_PYTHON_RANGE = ((3, 11), (3, 13))


@dataclass(frozen=True)
class DeviceOptions:
    """Everything `install_device` needs; paths are device paths unless said otherwise."""

    root: Path = Path("/")
    """Install into this prefix instead of the running system (no user switch, no start)."""
    source: Path | None = None
    """A source checkout: where systemd/ and config/ come from, and the package if no wheel."""
    wheel: Path | None = None
    """A built infarctwatch wheel to install into the venv (local path on this machine)."""
    incoming: PurePosixPath = INCOMING
    reports: PurePosixPath = REPORTS
    public_key: Path | None = None
    """A public key on this machine: copied to the device and required for every bundle."""
    gpu: bool = False
    skip_venv: bool = False
    python: str = "python3"
    find_links: tuple[Path, ...] = ()
    no_index: bool = False
    start: bool = True
    initial_bundle: bool = True
    """Install the embedded default bundle when the models folder has none (unsigned: skipped
    when a signature is required)."""


@dataclass
class _Context:
    options: DeviceOptions
    report: Callable[[str], None]
    uid: int = 0
    gid: int = 0
    done: list[str] = field(default_factory=list)

    def at(self, device_path: PurePosixPath) -> Path:
        """The real path of a device path under the root prefix."""
        return self.options.root / str(device_path).lstrip("/")

    def say(self, message: str) -> None:
        self.done.append(message)
        self.report(message)


def _run(command: list[str], what: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DeviceInstallError(f"{what}: cannot run {command[0]}: {exc.strerror}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise DeviceInstallError(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n  "
            + "\n  ".join(detail)
        )
    return result.stdout


# -------------------------------------------------------------------------------- the account


def _lookup(path: Path, name: str, field_index: int) -> int | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > field_index and parts[0] == name:
            return int(parts[field_index])
    return None


def _ensure_account(ctx: _Context) -> None:
    root = ctx.options.root
    prefix = [] if root == Path("/") else ["--prefix", str(root)]
    passwd, group = ctx.at(PurePosixPath("/etc/passwd")), ctx.at(PurePosixPath("/etc/group"))
    if not passwd.is_file() or not group.is_file():
        raise DeviceInstallError(f"{root} has no etc/passwd and etc/group: not a system root")
    if _lookup(group, GROUP, 2) is None:
        _run(["groupadd", *prefix, "--system", GROUP], "creating the group")
        ctx.say(f"created system group {GROUP}")
    if _lookup(passwd, USER, 2) is None:
        _run(
            [
                "useradd",
                *prefix,
                "--system",
                "--gid",
                GROUP,
                "--home-dir",
                str(STATE),
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "infarctwatch edge service",
                USER,
            ],
            "creating the user",
        )
        ctx.say(f"created system user {USER}")
    uid, gid = _lookup(passwd, USER, 2), _lookup(group, GROUP, 2)
    if uid is None or gid is None:
        raise DeviceInstallError(f"user {USER} or group {GROUP} missing after creating them")
    ctx.uid, ctx.gid = uid, gid


# -------------------------------------------------------------------------------- the folders


def _ensure_dir(
    ctx: _Context, device_path: PurePosixPath, owner: str, mode: int, *, only_new: bool = False
) -> None:
    """Create ``device_path`` (parents root-owned 0755) and set its owner and mode.

    ``only_new``: an existing folder (perhaps a mounted share) is left exactly as it is.
    """
    path = ctx.at(device_path)
    if path.is_symlink():
        raise DeviceInstallError(f"{device_path} is a symlink: refusing to chown through it")
    existed = path.is_dir()
    if existed and only_new:
        ctx.say(f"kept existing {device_path} (owner and mode unchanged)")
        return
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir(mode=0o755)
    path.mkdir(mode=0o700, exist_ok=True)
    _set_owner(path, ctx, owner, mode)
    if not existed:
        ctx.say(f"created {device_path} ({_owner_name(owner)} {mode:04o})")


def _owner_name(owner: str) -> str:
    return {"service": f"{USER}:{GROUP}", "root:service": f"root:{GROUP}"}.get(owner, "root:root")


def _write_file(
    ctx: _Context, device_path: PurePosixPath, data: bytes, owner: str, mode: int, *, keep: bool
) -> None:
    """Write a file atomically; with ``keep`` an existing file is never replaced."""
    path = ctx.at(device_path)
    if path.exists() or path.is_symlink():
        if keep:
            ctx.say(f"kept existing {device_path} (never overwritten)")
            return
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            _set_owner(path, ctx, owner, mode)
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    _set_owner(tmp, ctx, owner, mode)
    tmp.replace(path)
    ctx.say(f"wrote {device_path} ({_owner_name(owner)} {mode:04o})")


def _set_owner(path: Path, ctx: _Context, owner: str, mode: int) -> None:
    """``owner``: ``service`` (infarctwatch:infarctwatch), ``root:service`` or ``root``."""
    gid = ctx.gid if owner in ("service", "root:service") else 0
    os.chown(path, ctx.uid if owner == "service" else 0, gid, follow_symlinks=False)
    path.chmod(mode)


# ---------------------------------------------------------------------------------- the venv


def venv_commands(
    python: str,
    venv: Path,
    package: str,
    *,
    find_links: tuple[Path, ...] = (),
    no_index: bool = False,
) -> list[list[str]]:
    """The commands that build the edge venv: create it, then pip install the package, no extras."""
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--upgrade"]
    pip += ["--disable-pip-version-check", "--no-input", "--quiet"]
    if no_index:
        pip.append("--no-index")
    for folder in find_links:
        pip += ["--find-links", str(folder)]
    return [[python, "-m", "venv", str(venv)], [*pip, package]]


def _package(options: DeviceOptions) -> str:
    if options.wheel is not None:
        if "[" in options.wheel.name:
            raise DeviceInstallError("install the wheel without extras: the device runs no trainer")
        return str(options.wheel.absolute())
    source = options.source or REPO
    if not (source / "pyproject.toml").is_file():
        raise DeviceInstallError(f"{source} is not a source checkout: pass --wheel or --source")
    return str(source.absolute())


def _check_python(python: str) -> None:
    out = _run([python, "-c", "import sys; print(*sys.version_info[:2])"], "checking python")
    version = tuple(int(x) for x in out.split())
    low, high = _PYTHON_RANGE
    if not low <= version < high:
        raise DeviceInstallError(
            f"{python} is Python {'.'.join(map(str, version))}; infarctwatch needs >= 3.11, < 3.13 "
            "(pass --python python3.11)"
        )


def _build_venv(ctx: _Context) -> None:
    options = ctx.options
    venv = ctx.at(VENV)
    _check_python(options.python)
    for command in venv_commands(
        options.python,
        venv,
        _package(options),
        find_links=options.find_links,
        no_index=options.no_index,
    ):
        if command[1:3] == ["-m", "venv"] and (venv / "bin" / "python").exists():
            continue
        _run(command, "building the venv")
    probe = (
        "import importlib.util, sys; "
        f"bad = [m for m in {_FORBIDDEN_IN_VENV!r} if importlib.util.find_spec(m)]; "
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    _run([str(venv / "bin" / "python"), "-c", probe], "checking the venv holds no trainer")
    _run([str(venv / "bin" / "infarctwatch"), "--help"], "checking the infarctwatch command")
    ctx.say(f"installed the edge package into {VENV}")


# ----------------------------------------------------------------------------------- systemd


def _assets(options: DeviceOptions) -> Path:
    base = options.source or REPO
    if not (base / "systemd" / UNIT).is_file():
        raise DeviceInstallError(
            f"{base / 'systemd' / UNIT} not found: pass --source (a source checkout)"
        )
    return base


def _config_text(ctx: _Context, assets: Path) -> bytes:
    template_path = assets / "config" / "daemon.yaml"
    template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
    values: dict[str, object] = {
        "incoming": str(ctx.options.incoming),
        "reports": str(ctx.options.reports),
        "work": str(WORK),
        "model.path": str(MODELS),
        "model.inbox": str(INBOX),
        "inference.cache_dir": str(CACHE),
    }
    if ctx.options.public_key is not None:
        values["model.public_key"] = str(PUBLIC_KEY)
        values["model.require_signature"] = True
    return render_device_config(template or FALLBACK_TEMPLATE, values).encode()


def _paths_dropin(options: DeviceOptions) -> bytes | None:
    extra = [p for p in (options.incoming, options.reports) if p not in (INCOMING, REPORTS)]
    if not extra:
        return None
    paths = " ".join(f"-{p}" for p in extra)
    return (
        "# Written by `infarctwatch deploy device-install`: this device's incoming and reports\n"
        "# folders, writable despite ProtectSystem=strict.\n"
        f"[Service]\nReadWritePaths={paths}\n"
    ).encode()


def _enable(ctx: _Context) -> None:
    root = ctx.options.root
    if root != Path("/"):
        _run(["systemctl", f"--root={root}", "enable", UNIT], "enabling the unit")
        ctx.say(f"enabled {UNIT} in {root}")
        return
    _run(["systemctl", "daemon-reload"], "reloading systemd")
    start = ctx.options.start and current_version(ctx.at(MODELS)) is not None
    _run(["systemctl", "enable", *(["--now"] if start else []), UNIT], "enabling the unit")
    ctx.say(f"enabled {UNIT}" + (" and started it" if start else " (not started)"))


# ----------------------------------------------------------------------------------- install


def install_device(options: DeviceOptions, report: Callable[[str], None]) -> list[str]:
    """Install or upgrade infarctwatch on a device (or under ``options.root``); return the steps.

    ``report`` receives each step as it completes (the CLI prints them).

    Raises:
        DeviceInstallError: a step failed; the steps before it stay done (re-run after a fix).
    """
    root = Path(options.root).absolute()
    options = dataclasses.replace(options, root=root)
    if root == Path("/") and os.geteuid() != 0:
        raise DeviceInstallError("installing on this system needs root (or pass --root PREFIX)")
    ctx = _Context(options, report)
    try:
        _install(ctx)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise DeviceInstallError(f"{where}{exc.strerror or exc}") from exc
    return ctx.done


def _install(ctx: _Context) -> None:
    options = ctx.options
    assets = _assets(options)
    _ensure_account(ctx)
    _ensure_dir(ctx, ETC, "root:service", 0o750)
    for path in (STATE, MODELS, WORK, INBOX, CACHE, TELEMETRY_DIR):
        _ensure_dir(ctx, path, "service", 0o750)
    _write_file(ctx, TELEMETRY_OPT_OUT, b"0", "service", 0o640, keep=False)
    _ensure_dir(ctx, options.incoming, "service", 0o2770, only_new=True)
    _ensure_dir(ctx, options.reports, "service", 0o2750, only_new=True)
    _ensure_dir(ctx, OPT, "root", 0o755)
    if options.skip_venv:
        ctx.say(f"left {VENV} as it is (--skip-venv)")
    else:
        _build_venv(ctx)
    _link_command(ctx)
    if options.public_key is not None:
        key = Path(options.public_key).read_bytes()
        _write_file(ctx, PUBLIC_KEY, key, "root:service", 0o640, keep=False)
    _write_file(ctx, CONFIG, _config_text(ctx, assets), "root:service", 0o640, keep=True)
    unit = (assets / "systemd" / UNIT).read_bytes()
    _write_file(ctx, UNIT_DIR / UNIT, unit, "root", 0o644, keep=False)
    if options.gpu:
        gpu = (assets / "systemd" / f"{UNIT}.d" / "gpu.conf").read_bytes()
        _write_file(ctx, DROPIN_DIR / "gpu.conf", gpu, "root", 0o644, keep=False)
    paths = _paths_dropin(options)
    if paths is not None:
        _write_file(ctx, DROPIN_DIR / "paths.conf", paths, "root", 0o644, keep=False)
    _check_existing_config(ctx)
    _initial_bundle(ctx)
    _enable(ctx)


def _model_keys(ctx: _Context) -> dict[str, object]:
    """The ``model`` mapping of the device's daemon.yaml as it is now (empty if unreadable)."""
    try:
        data = yaml.safe_load(ctx.at(CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, dict) else {}


def _check_existing_config(ctx: _Context) -> None:
    """Say so when a kept config does not use the public key this run installed."""
    if ctx.options.public_key is None:
        return
    if _model_keys(ctx).get("public_key") != str(PUBLIC_KEY):
        ctx.say(
            f"note: {CONFIG} was kept and does not set model.public_key: {PUBLIC_KEY} "
            "(edit it, with model.require_signature: true, to require signed bundles)"
        )


def _link_command(ctx: _Context) -> None:
    link = ctx.at(BIN_LINK)
    target = str(VENV / "bin" / "infarctwatch")
    if link.is_symlink() and str(link.readlink()) == target:
        return
    if link.exists() and not link.is_symlink():
        ctx.say(f"kept existing {BIN_LINK} (not a symlink)")
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    ctx.say(f"linked {BIN_LINK} -> {target}")


def _initial_bundle(ctx: _Context) -> None:
    models = ctx.at(MODELS)
    if current_version(models) is not None or not ctx.options.initial_bundle:
        return
    if _model_keys(ctx).get("require_signature", False):
        ctx.say(
            "no model installed yet and signatures are required: push a signed bundle "
            "(infarctwatch deploy push BUNDLE HOST) before the service can start"
        )
        return
    result = install_bundle(DEFAULT_BUNDLE, models)
    ctx.say(f"installed the embedded default model {result.version} into {MODELS}")
