"""``infarctwatch run``: watch the incoming folder and write one report per scan.

Only what an entry point does: parse flags, load and validate the configuration, configure
logging and the allocator (`daemon.memory`) once for the process, install the signal handlers,
run the service and turn the outcome into an exit code (0 stopped cleanly, 1 a stage died,
2 configuration / lock / bundle / start-up error, 130 forced by a second Ctrl-C). Folders that are
missing or unwritable at start are waited for, not an exit (`daemon.service.service`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import structlog

from daemon.config import load_config
from daemon.errors import (
    AlreadyRunningError,
    BundleError,
    ConfigError,
    EngineError,
    WorkerStartError,
)
from daemon.logs import configure_logging
from daemon.memory import keep_freed_memory
from daemon.service.sdnotify import Notifier
from daemon.service.service import Service
from daemon.service.signals import Shutdown, capture_signals

EXIT_STARTUP = 2
_STARTUP_ERRORS = (
    ConfigError,
    AlreadyRunningError,
    BundleError,
    EngineError,
    WorkerStartError,
)
log = structlog.get_logger("infarctwatch")


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``infarctwatch run``; each overrides the configuration file."""
    parser = argparse.ArgumentParser(
        prog="infarctwatch run",
        description=(
            "Watch an incoming folder for DWI slices (PNG, JPEG, BMP, TIFF, DICOM) and write one "
            "JSON report per scan. Research use only, not for diagnostic use."
        ),
    )
    parser.add_argument("--config", type=Path, help="YAML configuration (see config/daemon.yaml)")
    parser.add_argument("--incoming", type=Path, help="folder to watch (incoming)")
    parser.add_argument("--reports", type=Path, help="folder for the JSON reports (reports)")
    parser.add_argument("--model", type=Path, help="bundle or models folder (model.path)")
    parser.add_argument(
        "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO... (inference.device)"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="process what is in the incoming folder now, then exit (backfills, cron)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch run``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_STARTUP
    overrides = {
        "incoming": args.incoming,
        "reports": args.reports,
        "model.path": args.model,
        "inference.device": args.device,
    }
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"infarctwatch run: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    configure_logging(config.logging.level, config.logging.format)
    keep_freed_memory()
    service = Service(config, once=args.once, notifier=Notifier.from_environ())
    with capture_signals(Shutdown()) as shutdown:
        try:
            return service.run(shutdown)
        except _STARTUP_ERRORS as exc:
            failure = exc
    log.error("startup_failed", error=type(failure).__name__)
    if not isinstance(failure, AlreadyRunningError):  # never overwrite the other daemon's status
        service.record_failure(EXIT_STARTUP, f"{type(failure).__name__}: {failure}")
    print(f"infarctwatch run: {failure}", file=sys.stderr)
    return EXIT_STARTUP
