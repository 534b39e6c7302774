"""The systemd unit and its GPU/NPU drop-in.

systemd is not running here, but ``systemd-analyze verify`` and ``systemd-analyze security
--offline=true`` work on unit files, and the sandbox parts that decide whether OpenVINO can run
at all are reproduced with the kernel's own mechanisms:

* ``SystemCallFilter=`` / ``RestrictAddressFamilies=`` / ``SystemCallErrorNumber=``: a seccomp
  filter built with libseccomp (what systemd uses) from the unit's own lines and
  ``systemd-analyze syscall-filter``'s group lists, then OpenVINO inference on the committed
  bundle under it;
* ``MemoryDenyWriteExecute=``: ``prctl(PR_SET_MDWE)`` (what systemd >= 254 uses): proves the
  CPU plugin cannot run under it, which is why the unit leaves it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
from daemon_support import drop, small_png, versioned_bundle, wait_for, write_config

from daemon.config import ListenConfig, load_config
from daemon.service.status import read_status
from daemon.shared.bundle import DEFAULT_BUNDLE
from deploy.device import (
    CACHE,
    CONFIG,
    INBOX,
    INCOMING,
    MODELS,
    REPORTS,
    STATE,
    UNIT,
    VENV,
    WORK,
)
from deploy.install import install_bundle
from deploy.pack import pack_bundle
from deploy.signing import SignaturePolicy, keygen

REPO = Path(__file__).resolve().parent.parent
UNIT_FILE = REPO / "systemd" / UNIT
GPU_DROPIN = REPO / "systemd" / f"{UNIT}.d" / "gpu.conf"
DICOM_DROPIN = REPO / "systemd" / f"{UNIT}.d" / "dicom.conf"
EXEC_START = f"{VENV}/bin/infarctwatch run --config {CONFIG}"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (a key may repeat)."""
    result: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            result.setdefault(key.strip(), []).append(value.strip())
    return result


def staged_unit(tmp_path: Path, *, gpu: bool = False, dicom: bool = False) -> Path:
    """The unit copied to a temporary folder with ExecStart's binary present (verify needs it)."""
    binary = tmp_path / str(VENV).lstrip("/") / "bin" / "infarctwatch"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    text = UNIT_FILE.read_text().replace(f"{VENV}/bin/infarctwatch", str(binary))
    (units / UNIT).write_text(text)
    for wanted, dropin in ((gpu, GPU_DROPIN), (dicom, DICOM_DROPIN)):
        if wanted:
            (units / f"{UNIT}.d").mkdir(exist_ok=True)
            shutil.copy(dropin, units / f"{UNIT}.d" / dropin.name)
    return units / UNIT


def exposure(unit: Path) -> float:
    """The overall exposure that ``systemd-analyze security --offline=true`` gives the unit."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        cwd=unit.parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


class TestUnitFile:
    def test_every_setting_has_a_comment_above_it(self) -> None:
        """Each directive line in the unit and the drop-in is explained by the line before it."""
        for path in (UNIT_FILE, GPU_DROPIN, DICOM_DROPIN):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                if "=" in line and not line.startswith(("#", "[")):
                    assert lines[i - 1].startswith("#"), f"{path.name}:{i + 1} {line!r}"

    def test_service_contract(self) -> None:
        """Notify type, watchdog, restart policy, the user and the documented command line."""
        d = directives(UNIT_FILE)
        assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
        assert d["ExecStart"] == [EXEC_START]
        assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP: hot model reload
        assert d["WatchdogSec"] and d["Restart"] == ["on-failure"]
        assert d["RestartPreventExitStatus"] == ["2"]  # config/bundle errors need a human
        assert d["User"] == ["infarctwatch"] and d["Group"] == ["infarctwatch"]
        assert d["WantedBy"] == ["multi-user.target"]

    def test_hardening_settings(self) -> None:
        """The sandbox the issue asks for, and MemoryDenyWriteExecute explicitly off."""
        d = directives(UNIT_FILE)
        expected = {
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "NoNewPrivileges": "yes",
            "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_UNIX",
            "ProtectKernelTunables": "yes",
            "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
            "ProtectControlGroups": "yes",
            "LockPersonality": "yes",
            "RestrictNamespaces": "yes",
            "MemoryDenyWriteExecute": "no",
        }
        for key, value in expected.items():
            assert d[key] == [value], key
        assert d["SystemCallFilter"][0] == "@system-service"

    def test_folders_match_what_device_install_creates(self) -> None:
        """State/cache/config directories and ReadWritePaths agree with deploy.device's layout."""
        d = directives(UNIT_FILE)
        state = d["StateDirectory"][0].split()
        assert "infarctwatch" in state
        for folder in (MODELS, WORK, INBOX):
            assert str(folder.relative_to("/var/lib")) in state
            assert folder.is_relative_to(STATE)
        assert d["CacheDirectory"] == [str(CACHE.relative_to("/var/cache"))]
        assert d["ConfigurationDirectory"] == [str(CONFIG.parent.relative_to("/etc"))]
        writable = {PurePosixPath(p.lstrip("-")) for p in d["ReadWritePaths"][0].split()}
        assert writable == {INCOMING, REPORTS}

    def test_gpu_dropin_opens_only_render_devices(self) -> None:
        """The drop-in lifts PrivateDevices but keeps a closed device policy with DRM/accel only."""
        d = directives(GPU_DROPIN)
        assert d["PrivateDevices"] == ["no"]
        assert d["DevicePolicy"] == ["closed"]
        assert d["DeviceAllow"] == ["char-drm rw", "char-accel rw"]
        assert d["SupplementaryGroups"] == ["render"]

    def test_dicom_dropin_opens_only_the_receivers_port(self) -> None:
        """The drop-in gives the network back for dicom.listen: IP, private senders, one port.

        The base unit documents the port; the drop-in's port is the configuration's default.
        """
        d = directives(DICOM_DROPIN)
        assert d["PrivateNetwork"] == ["no"]
        assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
        assert "0.0.0.0/0" not in d["IPAddressAllow"][0] and "any" not in d["IPAddressAllow"][0]
        port = ListenConfig().port
        assert d["SocketBindAllow"] == [f"tcp:{port}"]
        assert d["SocketBindDeny"] == ["any"]
        assert f"TCP port {port}" in UNIT_FILE.read_text()
        assert directives(UNIT_FILE)["IPAddressDeny"] == ["any"]  # the allow list narrows it


@needs_analyze
class TestSystemdAnalyze:
    def test_verify_passes(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` accepts the unit (with and without the GPU drop-in)."""
        for gpu, dicom in ((False, False), (True, False), (False, True)):
            unit = staged_unit(tmp_path / f"{gpu}-{dicom}", gpu=gpu, dicom=dicom)
            result = subprocess.run(
                ["systemd-analyze", "verify", str(unit)],
                capture_output=True,
                text=True,
                check=False,
                cwd=unit.parent,
            )
            assert result.returncode == 0, result.stderr
            problems = [line for line in result.stderr.splitlines() if UNIT in line]
            assert problems == [], problems

    def test_security_exposure_is_at_most_2(self, tmp_path: Path) -> None:
        """`systemd-analyze security --offline=true` rates the unit 2.0 or better ("OK")."""
        assert exposure(staged_unit(tmp_path)) <= MAX_EXPOSURE

    def test_security_exposure_with_gpu_dropin_is_at_most_2(self, tmp_path: Path) -> None:
        """Opening the render devices costs a little exposure but stays within 2.0."""
        assert exposure(staged_unit(tmp_path, gpu=True)) <= MAX_EXPOSURE

    def test_security_exposure_with_dicom_dropin_is_at_most_2(self, tmp_path: Path) -> None:
        """Opening the network for the DICOM receiver costs exposure (1.0) but stays within 2.0."""
        assert exposure(staged_unit(tmp_path, dicom=True)) <= MAX_EXPOSURE


# --------------------------------------------------------------------- the sandbox, for real

PROBE = """\
import errno, os, socket, sys
import numpy as np
import openvino as ov
from PIL import Image
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle

bundle = load_bundle(DEFAULT_BUNDLE)
core = ov.Core()
compiled = core.compile_model(bundle.variant("fp16").xml, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
results = []
queue = ov.AsyncInferQueue(compiled, 2)
queue.set_callback(lambda request, i: results.append(request.get_output_tensor(0).data.sum()))
for i in range(8):
    queue.start_async(np.full((1, 128, 128, 3), i / 8, np.float32), i)
queue.wait_all()
assert len(results) == 8 and all(abs(r - 1.0) < 1e-3 for r in results), results
Image.fromarray(np.zeros((64, 64), np.uint8)).save(sys.argv[1])
Image.open(sys.argv[1]).load()
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    print("AF_INET allowed")
except OSError as exc:
    print("AF_INET refused", errno.errorcode[exc.errno])
try:
    os.sched_setaffinity(0, {0})
    print("affinity allowed")
except OSError as exc:
    print("affinity refused", errno.errorcode[exc.errno])
print("inference ok")
"""

SECCOMP_LAUNCHER = """\
import ctypes, errno, os, sys
allowed = sys.argv[1].split(",")
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.c_void_p]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

ALLOW = 0x7FFF0000
def ERRNO(n): return 0x00050000 | n
NE, EQ = 1, 4
ctx = lib.seccomp_init(ERRNO(errno.EPERM))            # SystemCallErrorNumber=EPERM
for name in allowed:                                   # SystemCallFilter=
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0 and name != "socket":
        assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None) == 0, name
socket_nr = lib.seccomp_syscall_resolve_name(b"socket")
for op, action in ((EQ, ALLOW), (NE, ERRNO(errno.EAFNOSUPPORT))):  # RestrictAddressFamilies=
    cmp = Cmp(0, op, 1, 0)                             # arg0 (family) vs AF_UNIX
    assert lib.seccomp_rule_add_array(ctx, action, socket_nr, 1, ctypes.byref(cmp)) == 0
assert lib.seccomp_load(ctx) == 0                      # also sets NoNewPrivileges
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def _syscall_groups() -> dict[str, list[str]]:
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.split()[0]
            groups[current] = []
        elif line.startswith("    ") and not line.strip().startswith("#") and current:
            groups[current].append(line.strip())
    return groups


def _expand(entries: list[str], groups: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        names |= _expand(groups[entry], groups) if entry.startswith("@") else {entry}
    return names


def unit_syscall_allow_list() -> set[str]:
    """The system calls the unit's SystemCallFilter= lines leave allowed (systemd's semantics)."""
    groups = _syscall_groups()
    allowed = _expand(["@default"], groups)
    for line in directives(UNIT_FILE)["SystemCallFilter"]:
        if line.startswith("~"):
            allowed -= _expand(line[1:].split(), groups)
        else:
            allowed |= _expand(line.split(), groups)
    return allowed


def _has_libseccomp() -> bool:
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return False
    return True


def _mdwe_supported() -> bool:
    """True when the kernel has PR_SET_MDWE (Linux >= 6.3): probed in a throwaway process."""
    code = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "sys.exit(0 if libc.prctl(65, 1, 0, 0, 0) == 0 else 1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@needs_analyze
@pytest.mark.skipif(not _has_libseccomp(), reason="libseccomp is not installed")
def test_openvino_runs_under_the_units_system_call_filter(tmp_path: Path) -> None:
    """Under the unit's seccomp policy, CPU inference works; AF_INET and affinity are refused."""
    allowed = unit_syscall_allow_list()
    assert "execve" in allowed and "sched_setaffinity" not in allowed and "mount" not in allowed
    launcher, probe = tmp_path / "launch.py", tmp_path / "probe.py"
    launcher.write_text(SECCOMP_LAUNCHER)
    probe.write_text(PROBE)
    result = subprocess.run(
        [
            sys.executable,
            str(launcher),
            ",".join(sorted(allowed)),
            str(probe),
            str(tmp_path / "i.png"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AF_INET refused EAFNOSUPPORT" in result.stdout
    assert "affinity refused EPERM" in result.stdout
    assert "inference ok" in result.stdout


MDWE_PROBE = textwrap.dedent(
    """\
    import ctypes, mmap, sys
    import numpy as np
    import openvino as ov
    from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("MDWE is not in force")
    except OSError:
        pass
    model = load_bundle(DEFAULT_BUNDLE).variant("fp16").xml
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    compiled(np.zeros((1, 128, 128, 3), np.float32))
    print("inference ok")
    """
)


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_openvino_cpu_cannot_run_with_memory_deny_write_execute(tmp_path: Path) -> None:
    """OpenVINO's CPU plugin JIT-compiles kernels, so MemoryDenyWriteExecute=yes would break it.

    If this test ever fails because inference works, OpenVINO stopped needing W->X memory and the
    unit can set MemoryDenyWriteExecute=yes.
    """
    probe = tmp_path / "mdwe.py"
    probe.write_text(MDWE_PROBE)
    result = subprocess.run(
        [sys.executable, str(probe)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode != 0
    assert "inference ok" not in result.stdout
    assert "can't protect" in result.stderr, result.stderr[-2000:]


def _proc_subset_pid() -> list[str]:
    """A command prefix giving ProcSubset=pid + ProtectProc=invisible's /proc, when root can.

    A private mount and PID namespace whose /proc is mounted ``subset=pid,hidepid=invisible``,
    as systemd does; empty (no prefix) where ``unshare`` or the privilege is missing.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return []
    remount = 'mount -o remount,subset=pid,hidepid=invisible /proc && exec "$@"'
    prefix = [unshare, "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", remount, "sh"]
    probe = subprocess.run([*prefix, "test", "!", "-e", "/proc/cpuinfo"], check=False)
    return prefix if probe.returncode == 0 else []


@needs_analyze
@pytest.mark.skipif(not _has_libseccomp(), reason="libseccomp is not installed")
def test_the_daemon_runs_under_the_units_system_call_filter(tmp_path: Path) -> None:
    """`infarctwatch run --once` under the unit's seccomp policy, as systemd would start it.

    A signed bundle installed by deploy, a device-style config requiring signatures, sd_notify
    over a Unix socket: READY=1, WATCHDOG=1 and STOPPING=1 arrive and the report is written.
    As root, /proc is also reduced as ProcSubset=pid and ProtectProc=invisible make it.
    """
    private, public = keygen(tmp_path / "release")
    archive = pack_bundle(DEFAULT_BUNDLE, tmp_path / "seed.tar.gz", sign_key=private).path
    install_bundle(archive, tmp_path / "models", policy=SignaturePolicy(public, True))
    for folder in ("incoming", "reports", "work"):
        (tmp_path / folder).mkdir()
    # A real DWI sample: the default model refuses made-up pictures (OUT_OF_SCOPE_IMAGE).
    shutil.copy(REPO / "samples" / "04-left-thalamus.png", tmp_path / "incoming" / "slice.png")
    config = tmp_path / "daemon.yaml"
    config.write_text(
        f"incoming: {tmp_path / 'incoming'}\nreports: {tmp_path / 'reports'}\n"
        f"work: {tmp_path / 'work'}\n"
        f"model:\n  path: {tmp_path / 'models'}\n  public_key: {public}\n"
        "  require_signature: true\ninference:\n  device: CPU\n"
    )
    launcher = tmp_path / "launch.py"
    launcher.write_text(SECCOMP_LAUNCHER)
    allowed = ",".join(sorted(unit_syscall_allow_list()))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
        command = [sys.executable, str(launcher), allowed, "-m", "daemon", "run"]
        command += ["--config", str(config), "--once"]
        result = subprocess.run(
            [*_proc_subset_pid(), *command],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            env=env,
            timeout=300,
        )
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(notify.recv(65536).decode())
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    notified = "\n".join(messages)
    for expected in ("READY=1", "WATCHDOG=1", "STOPPING=1"):
        assert expected in notified, messages
    reports = list((tmp_path / "reports").glob("*.json"))
    assert len(reports) == 1
    assert json.loads(reports[0].read_text())["status"] == "ok"


@needs_analyze
@pytest.mark.slow
@pytest.mark.skipif(not _has_libseccomp(), reason="libseccomp is not installed")
def test_hot_reload_and_the_inbox_under_the_units_system_call_filter(tmp_path: Path) -> None:
    """A long-running daemon under the unit's seccomp policy: a signed archive copied into its
    inbox is installed and hot-reloaded (inotify on the models folder, flock, rename, link for the
    note), the next report names it, SIGHUP is answered, SIGTERM stops it with exit code 0."""
    private, public = keygen(tmp_path / "release")
    v1 = versioned_bundle(tmp_path / "v1", "1.0.0-sandbox")
    v1_archive = pack_bundle(v1, tmp_path / "v1.tar.gz", sign_key=private).path
    install_bundle(v1_archive, tmp_path / "models", policy=SignaturePolicy(public, True))
    v2 = versioned_bundle(tmp_path / "v2", "2.0.0-sandbox")
    v2_archive = pack_bundle(v2, tmp_path / "v2.tar.gz", sign_key=private).path
    path = write_config(
        tmp_path,
        model={
            "path": str(tmp_path / "models"),
            "inbox": str(tmp_path / "inbox"),
            "public_key": str(public),
            "require_signature": True,
        },
    )
    config = load_config(path)
    launcher = tmp_path / "launch.py"
    launcher.write_text(SECCOMP_LAUNCHER)
    allowed = ",".join(sorted(unit_syscall_allow_list()))
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        daemon = subprocess.Popen(
            [sys.executable, str(launcher), allowed, "-m", "daemon", "run", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
        )

    def running() -> bool:
        return (read_status(config.status_path) or {}).get("state") == "running"

    try:
        wait_for(running, timeout=120, what="the daemon to run")
        drop(config.model.inbox, "v2.tar.gz", v2_archive.read_bytes())
        wait_for(
            lambda: read_status(config.status_path)["model"]["version"] == "2.0.0-sandbox",
            what="the inbox install and the hot reload",
        )
        drop(config.incoming, "slice.png", small_png(7))
        wait_for(lambda: any(config.reports.glob("*.json")), what="the report")
        (report,) = config.reports.glob("*.json")
        assert json.loads(report.read_text())["model"]["version"] == "2.0.0-sandbox"
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "model_unchanged" in log.read_text(), what="the SIGHUP check")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert (config.model.inbox / "installed" / "v2.tar.gz.json").is_file()
    levels = {json.loads(line)["level"] for line in log.read_text().splitlines()}
    assert levels <= {"debug", "info"}, log.read_text()[-3000:]  # no warning, no refused call
