"""``infarctwatch deploy``: pack, sign, verify, install, roll back and push model bundles.

Exit codes: 0 done, 1 refused or failed (the message says why; nothing was changed), 2 usage.

On a device, ``verify`` and ``install`` read the signature policy (``model.public_key``,
``model.require_signature``) and the models folder (``model.path``) from
``/etc/infarctwatch/daemon.yaml`` when it exists, so a bundle is held to the same rules by hand
as by the daemon. ``--config FILE`` names another file, ``--no-config`` ignores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import structlog

from daemon.shared.signature import SignaturePolicy
from deploy.device import INCOMING, REPORTS, DeviceOptions, install_device
from deploy.device_config import DEVICE_CONFIG, DeployPolicy, read_policy
from deploy.errors import DeployError
from deploy.install import DEFAULT_KEEP, install_bundle, list_versions, prune, rollback
from deploy.pack import pack_bundle, sign_bundle
from deploy.push import DEFAULT_REMOTE_CONFIG, PushOptions, push
from deploy.signing import keygen
from deploy.verify import verify_bundle

if TYPE_CHECKING:
    from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A combination of options that cannot work (exit code 2)."""


# ------------------------------------------------------------------------------- policy options


def _add_policy_options(
    parser: argparse.ArgumentParser, *, models_dir: bool = True, signature: bool = True
) -> None:
    if models_dir:
        parser.add_argument(
            "--models-dir", type=Path, help="the models folder (default: model.path of --config)"
        )
    if signature:
        parser.add_argument("--public-key", type=Path, help="ed25519 public key (PEM)")
        parser.add_argument(
            "--require-signature", action="store_true", help="refuse bundles without a signature"
        )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config",
        type=Path,
        help=f"daemon config to take model.* keys from (default: {DEVICE_CONFIG} if present)",
    )
    group.add_argument("--no-config", action="store_true", help=f"ignore {DEVICE_CONFIG}")


def _policy(args: argparse.Namespace) -> DeployPolicy:
    """Command-line options on top of the daemon config's model keys (never weaker than it)."""
    config: Path | None = args.config
    if config is None and not args.no_config and DEVICE_CONFIG.is_file():
        config = DEVICE_CONFIG
    base = read_policy(config) if config else DeployPolicy(None, None, SignaturePolicy())
    public_key = getattr(args, "public_key", None) or base.signature.public_key
    require = getattr(args, "require_signature", False) or base.signature.require_signature
    if require and public_key is None:
        raise UsageError("--require-signature needs --public-key (or model.public_key in --config)")
    models_dir = getattr(args, "models_dir", None) or base.models_dir
    return DeployPolicy(config, models_dir, SignaturePolicy(public_key, require))


def _models_dir(args: argparse.Namespace) -> Path:
    policy = _policy(args)
    if policy.models_dir is None:
        raise UsageError("--models-dir is required (or a --config whose model.path is set)")
    return policy.models_dir


# ---------------------------------------------------------------------------------- commands


def _cmd_pack(args: argparse.Namespace) -> int:
    packed = pack_bundle(args.source, args.output, sign_key=args.sign, public_key=args.public_key)
    v = packed.verified
    print(f"packed {v.name} {v.version} -> {packed.path}")
    print(f"  manifest sha256 {v.sha256}, {v.files} files, {v.bytes} bytes, {v.signature}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    policy = _policy(args)
    v = verify_bundle(args.bundle, policy.signature)
    print(f"OK {v.name} {v.version}: {v.files} files, {v.bytes} bytes, checksums match")
    print(f"  manifest sha256 {v.sha256}")
    print(f"  {v.signature}")
    return EXIT_OK


def _cmd_sign(args: argparse.Namespace) -> int:
    path = sign_bundle(args.bundle, args.key, args.output)
    print(f"signed {path}")
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    private, public = keygen(args.prefix)
    print(f"private key {private} (mode 0600: keep it off devices, back it up)")
    print(f"public key  {public} (copy to devices: device-install --public-key {public})")
    return EXIT_OK


def _cmd_install(args: argparse.Namespace) -> int:
    policy = _policy(args)
    if policy.models_dir is None:
        raise UsageError("--models-dir is required (or a --config whose model.path is set)")
    result = install_bundle(args.bundle, policy.models_dir, policy=policy.signature, keep=args.keep)
    what = {
        "installed": "installed and activated",
        "activated": "already installed; activated",
        "unchanged": "already installed and current; nothing changed",
        "repaired": "installed copy was damaged; replaced and activated",
    }[result.action]
    print(f"{result.name} {result.version}: {what} ({result.signature})")
    if result.action != "unchanged":
        print(f"  current -> versions/{result.version} (was {result.previous or 'none'})")
    if result.pruned:
        print(f"  pruned {', '.join(result.pruned)}")
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    old, new = rollback(_models_dir(args), to=args.to)
    print(f"rolled back: current -> versions/{new} (was {old or 'none'})")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    state = list_versions(_models_dir(args))
    if args.json:
        data = {
            "path": str(state.path),
            "current": state.current,
            "previous": state.previous,
            "versions": [dataclasses.asdict(v) for v in state.versions],
        }
        print(json.dumps(data, indent=2))
        return EXIT_OK
    if not state.versions:
        print(f"no versions installed in {state.path}")
        return EXIT_OK
    for v in state.versions:
        mark = "*" if v.current else ("<" if v.previous else " ")
        print(f"{mark} {v.version:<24} {v.name:<24} created {v.created_at}  sha256 {v.sha256[:12]}")
    print("(* current, < rollback target)")
    return EXIT_OK


def _cmd_prune(args: argparse.Namespace) -> int:
    removed = prune(_models_dir(args), keep=args.keep)
    print(f"pruned {', '.join(removed)}" if removed else "nothing to prune")
    return EXIT_OK


def _cmd_push(args: argparse.Namespace) -> int:
    options = PushOptions(
        ssh_options=("BatchMode=yes", *args.ssh_option),
        remote_command=args.remote_command,
        models_dir=args.models_dir,
        remote_config=None if args.no_remote_config else args.remote_config,
        sudo=args.sudo,
        restart=args.restart,
    )
    result = push(args.bundle, args.host, options)
    v = result.verified
    print(f"{args.host}: pushed {v.name} {v.version} (manifest sha256 {v.sha256[:12]})")
    for line in result.remote_output.strip().splitlines():
        print(f"  {args.host}: {line}")
    return EXIT_OK


def _cmd_device_install(args: argparse.Namespace) -> int:
    options = DeviceOptions(
        root=args.root,
        source=args.source,
        wheel=args.wheel,
        incoming=PurePosixPath(args.incoming),
        reports=PurePosixPath(args.reports),
        public_key=args.public_key,
        gpu=args.gpu,
        skip_venv=args.skip_venv,
        python=args.python,
        find_links=tuple(args.find_links),
        no_index=args.no_index,
        start=not args.no_start,
        initial_bundle=not args.no_initial_model,
    )
    for device_path in (options.incoming, options.reports):
        if not device_path.is_absolute():
            raise UsageError(f"{device_path} must be an absolute path on the device")
    install_device(options, lambda line: print(f"  {line}"))
    print("done: journalctl -u infarctwatch -f   |   infarctwatch status")
    return EXIT_OK


# ------------------------------------------------------------------------------------ parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infarctwatch deploy",
        description="Pack, sign, verify, install, roll back and push model bundles; set up a "
        "device. Research use only.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_bundle_commands(sub)
    _add_models_commands(sub)
    _add_device_commands(sub)
    return parser


def _add_bundle_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pack", help="pack a training run's bundle into NAME-VERSION.tar.gz")
    p.add_argument("source", type=Path, help="a training run folder (RUN/bundle) or bundle folder")
    p.add_argument("-o", "--output", type=Path, help="archive path (default NAME-VERSION.tar.gz)")
    p.add_argument("--sign", type=Path, metavar="KEY", help="private key: add manifest.sig")
    p.add_argument("--public-key", type=Path, help="check the new archive's signature with it")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("verify", help="check a bundle archive or folder")
    p.add_argument("bundle", type=Path)
    _add_policy_options(p, models_dir=False)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("sign", help="add manifest.sig to a bundle folder or archive")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="private key from keygen")
    p.add_argument("-o", "--output", type=Path, help="write a signed archive here instead")
    p.set_defaults(func=_cmd_sign)

    p = sub.add_parser("keygen", help="write an ed25519 key pair PREFIX.key / PREFIX.pub")
    p.add_argument("prefix", type=Path)
    p.set_defaults(func=_cmd_keygen)


def _add_models_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install", help="verify a bundle and make it the current model")
    p.add_argument("bundle", type=Path)
    _add_policy_options(p, models_dir=True)
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="versions to keep (default 3)")
    p.set_defaults(func=_cmd_install)

    p = sub.add_parser("rollback", help="make the previous version current again")
    _add_policy_options(p, signature=False)
    p.add_argument("--to", metavar="VERSION", help="roll back (or forward) to this version")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("list", help="list installed versions")
    _add_policy_options(p, signature=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("prune", help="remove old versions (never current or the previous one)")
    _add_policy_options(p, signature=False)
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    p.set_defaults(func=_cmd_prune)


def _add_device_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("push", help="copy a bundle to a device over ssh and install it there")
    p.add_argument("bundle", type=Path)
    p.add_argument("host", help="user@host (anything ssh accepts, incl. ~/.ssh/config names)")
    p.add_argument("--models-dir", help="on the device (default: model.path of its config)")
    p.add_argument(
        "--ssh-option", action="append", default=[], metavar="OPT", help="ssh -o OPT (repeatable)"
    )
    p.add_argument("--remote-command", default="infarctwatch", help="infarctwatch on the device")
    p.add_argument("--remote-config", default=DEFAULT_REMOTE_CONFIG, help="the device's config")
    p.add_argument("--no-remote-config", action="store_true", help="do not pass --config")
    p.add_argument("--sudo", action="store_true", help="run the remote install with sudo -n")
    p.add_argument(
        "--restart",
        action="store_true",
        help="restart the service afterwards (not needed: the daemon hot-reloads a new model)",
    )
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("device-install", help="install the service on this device (as root)")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this prefix")
    p.add_argument("--source", type=Path, help="source checkout (default: this one)")
    p.add_argument("--wheel", type=Path, help="infarctwatch wheel to install into the venv")
    p.add_argument("--incoming", default=str(INCOMING), help=f"default {INCOMING}")
    p.add_argument("--reports", default=str(REPORTS), help=f"default {REPORTS}")
    p.add_argument("--public-key", type=Path, help="require bundles signed by this key")
    p.add_argument("--gpu", action="store_true", help="install the GPU/NPU drop-in")
    p.add_argument("--skip-venv", action="store_true", help="leave /opt/infarctwatch/venv alone")
    p.add_argument("--python", default="python3", help="interpreter for the venv (3.11 or 3.12)")
    p.add_argument("--find-links", type=Path, action="append", default=[], help="local wheels")
    p.add_argument("--no-index", action="store_true", help="pip: use --find-links only")
    p.add_argument("--no-start", action="store_true", help="enable but do not start")
    p.add_argument("--no-initial-model", action="store_true", help="skip the embedded model")
    p.set_defaults(func=_cmd_device_install)


def _configure_logging(verbose: bool) -> None:
    if structlog.is_configured():
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.ERROR
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str]) -> int:
    """Entry point of ``infarctwatch deploy``."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    _configure_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        print(f"infarctwatch deploy {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DeployError as exc:
        print(f"infarctwatch deploy {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
