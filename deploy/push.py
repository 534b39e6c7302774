"""Push a bundle to a device over ssh and install it there with ``infarctwatch deploy install``.

Uses the system's ``ssh`` and ``scp`` (argument lists, never a local shell), so keys, agents,
``~/.ssh/config``, jump hosts and known_hosts work as for any ssh session. Steps:

1. verify the bundle here (a folder is packed into a temporary ``.tar.gz`` first);
2. ``ssh HOST mktemp -d`` a private folder on the device;
3. ``scp`` the archive into it;
4. ``ssh HOST infarctwatch deploy install ...``: the device verifies again, applying *its* policy
   (``/etc/infarctwatch/daemon.yaml``: public key, require_signature) and installs;
5. ``ssh HOST rm -rf`` the temporary folder, whatever happened.

The running daemon hot-reloads the new ``current`` by itself; ``--restart`` is only for daemons
that predate hot reload or for configuration changes.

The remote command line is built with ``shlex.quote`` on every word. For a fleet, loop over hosts
(see docs/deploy.md): each push is independent and returns non-zero on failure.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from deploy.archive import find_bundle_folder, is_archive
from deploy.errors import PushError
from deploy.pack import pack_bundle
from deploy.verify import Verified, verify_bundle

log = structlog.get_logger(__name__)

REMOTE_ARCHIVE = "bundle.tar.gz"
REMOTE_TEMPLATE = "infarctwatch-push.XXXXXXXX"
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._/-]*infarctwatch-push\.[A-Za-z0-9]+$")
DEFAULT_REMOTE_CONFIG = "/etc/infarctwatch/daemon.yaml"


@dataclass(frozen=True)
class PushOptions:
    """How to reach a device and what to run there."""

    ssh: str = "ssh"
    scp: str = "scp"
    ssh_options: tuple[str, ...] = ("BatchMode=yes",)
    """Each is passed as ``-o OPTION`` to ssh and scp (BatchMode: never hang on a prompt)."""
    remote_command: str = "infarctwatch"
    models_dir: str | None = None
    """Override the device config's ``model.path``."""
    remote_config: str | None = DEFAULT_REMOTE_CONFIG
    """The device's daemon config, which supplies the models folder and signature policy."""
    sudo: bool = False
    """Prefix the remote install with ``sudo -n`` (the models folder belongs to the service)."""
    restart: bool = False
    """``systemctl try-restart infarctwatch`` after a successful install."""


@dataclass(frozen=True)
class PushResult:
    """What a push did: the bundle and the device's own report."""

    host: str
    verified: Verified
    remote_output: str


def _ssh_base(command: str, options: PushOptions) -> list[str]:
    base = [command]
    for option in options.ssh_options:
        base += ["-o", option]
    return base


def remote_install_command(remote_archive: str, options: PushOptions) -> str:
    """The shell command run on the device (every word quoted)."""
    words = [options.remote_command, "deploy", "install", remote_archive]
    if options.models_dir:
        words += ["--models-dir", options.models_dir]
    if options.remote_config:
        words += ["--config", options.remote_config]
    command = shlex.join(words)
    if options.sudo:
        command = f"sudo -n {command}"
    if options.restart:
        restart = "systemctl try-restart infarctwatch.service"
        command += f" && {'sudo -n ' if options.sudo else ''}{restart}"
    return command


def _run(argv: list[str], step: str, host: str) -> str:
    log.debug("push_step", host=host, step=step, argv=argv)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise PushError(f"{host}: {step}: cannot run {argv[0]}: {exc.strerror}") from exc
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise PushError(
            f"{host}: {step} failed (exit {result.returncode}):\n  " + "\n  ".join(detail[-20:])
        )
    return result.stdout


def push(bundle: Path, host: str, options: PushOptions | None = None) -> PushResult:
    """Copy ``bundle`` (archive or folder) to ``host`` and install it there.

    Raises:
        PushError: a step failed (the message names it and carries the remote output).
        UnsafeArchiveError, VerificationError: the bundle is refused locally (nothing was sent).
    """
    options = options or PushOptions()
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise PushError(f"{host!r} is not a host name (user@host)")
    bundle = Path(bundle)
    verified = verify_bundle(bundle)
    with tempfile.TemporaryDirectory(prefix="infarctwatch-push-") as tmp:
        archive = bundle
        if not is_archive(bundle):
            archive = pack_bundle(find_bundle_folder(bundle), Path(tmp) / REMOTE_ARCHIVE).path
        ssh = [*_ssh_base(options.ssh, options), "--", host]
        remote_dir = _run([*ssh, f"mktemp -d -t {REMOTE_TEMPLATE}"], "mktemp", host).strip()
        if not _REMOTE_DIR.match(remote_dir):
            raise PushError(f"{host}: mktemp returned {remote_dir!r}, not a plain absolute path")
        remote_archive = f"{remote_dir}/{REMOTE_ARCHIVE}"
        try:
            scp = _ssh_base(options.scp, options)
            _run([*scp, "--", str(archive), f"{host}:{remote_archive}"], "copy", host)
            output = _run([*ssh, remote_install_command(remote_archive, options)], "install", host)
        finally:
            try:
                _run([*ssh, shlex.join(["rm", "-rf", "--", remote_dir])], "cleanup", host)
            except PushError as exc:
                log.warning("push_cleanup_failed", host=host, remote_dir=remote_dir, error=str(exc))
    log.info("bundle_pushed", host=host, version=verified.version, sha256=verified.sha256)
    return PushResult(host, verified, output)
