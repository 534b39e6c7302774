"""The edge runtime must never import TensorFlow or Keras."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import daemon

FORBIDDEN = ("tensorflow", "keras", "nncf", "nilearn")


def test_importing_every_daemon_module_pulls_no_training_framework() -> None:
    """Import each module of the daemon package in a fresh interpreter, then inspect sys.modules."""
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(daemon.__path__, "daemon.")
        if m.name != "daemon.__main__"
    )
    assert "daemon.shared.preprocess" in modules
    assert "daemon.shared.bundle" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"daemon imported: {result.stdout.strip()}"


def test_trainer_command_without_extra_says_so_in_one_line() -> None:
    """With TensorFlow hidden, `infarctwatch train` exits 2 with a one-line install hint."""
    code = (
        "import sys, importlib.util as u\n"
        "real = u.find_spec\n"
        "hide = lambda name: name.split('.')[0] == 'tensorflow'\n"
        "u.find_spec = lambda name, *a: None if hide(name) else real(name, *a)\n"
        "from daemon.cli import main\n"
        "sys.exit(main(['train']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'infarctwatch[train]'" in lines[0]
    assert "tensorflow" in lines[0]


def test_the_daemon_imports_deploy_only_for_the_inbox() -> None:
    """Every daemon module imports without the deploy package; signatures are the runtime's own."""
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(daemon.__path__, "daemon.")
        if m.name != "daemon.__main__"
    )
    assert "daemon.shared.signature" in modules
    assert "daemon.model.inbox" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'deploy')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"daemon imported: {result.stdout.strip()}"
