"""``infarctwatch status``: print the running daemon's counters from its status file.

Exit codes follow LSB ``status``: 0 running, 1 the status file says running but the daemon is
gone or has stopped updating it, 2 configuration error, 3 not running, 4 unknown (the status file
exists but cannot be read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from daemon.clock import utc_now
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.service.status import (
    EXIT_RUNNING,
    EXIT_UNKNOWN,
    StatusUnreadableError,
    describe,
    read_status,
)

EXIT_CONFIG = 2


def main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch status``."""
    parser = argparse.ArgumentParser(
        prog="infarctwatch status", description="Show the daemon's counters from its status file."
    )
    parser.add_argument("--config", type=Path, help="the daemon's YAML configuration")
    parser.add_argument("--json", action="store_true", help="print the status file as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"infarctwatch status: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    path = config.status_path
    try:
        document = read_status(path)
    except StatusUnreadableError as exc:
        print(
            f"infarctwatch status: {exc.strerror}; run it as the service's user or root",
            file=sys.stderr,
        )
        return EXIT_UNKNOWN
    text, code = describe(document, path, utc_now())
    if args.json:
        text = json.dumps({**(document or {}), "running": code == EXIT_RUNNING}, indent=2)
    _print_quietly(text)
    return code


def _print_quietly(text: str) -> None:
    """Print ``text``; a reader that closed the pipe early (``| head -1``) is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at /dev/null so that flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
