"""Shared fixtures. Every test runs with a guard that fails it if it leaks a thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
_LEAK_GRACE_S = 5.0


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a Python thread running (an observer or pool not shut down)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + _LEAK_GRACE_S
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    names = ", ".join(t.name for t in leaked)
    pytest.fail(f"test leaked {len(leaked)} thread(s): {names}")


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO
