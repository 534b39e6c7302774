"""The daemon's configuration file, from deploy's side: read its model keys, write a device's.

Deploy takes ``model.path`` (the models folder), ``model.public_key`` and
``model.require_signature`` from ``/etc/infarctwatch/daemon.yaml``, read with the daemon's own
loader (`daemon.config`), so ``infarctwatch deploy install`` on a device applies exactly the
signature policy the daemon applies.

Writing: `render_device_config` takes the documented ``config/daemon.yaml`` and sets the device's
paths in place, line by line, keeping every comment, then checks the result parses to the
intended values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.shared.signature import SignaturePolicy
from deploy.errors import DeployConfigError, DeviceInstallError

DEVICE_CONFIG = Path("/etc/infarctwatch/daemon.yaml")


@dataclass(frozen=True)
class DeployPolicy:
    """What deploy takes from a daemon configuration file."""

    source: Path | None
    models_dir: Path | None
    signature: SignaturePolicy


def read_policy(path: Path) -> DeployPolicy:
    """The models folder and the signature policy of the daemon configured by ``path``.

    Read with the daemon's own loader (`daemon.config.load_config`), so deploy and the daemon
    can never read one file two ways: a file the daemon would refuse is refused here too, with
    the same messages.

    Raises:
        DeployConfigError: the file is unreadable, not YAML, or not a valid daemon configuration.
    """
    path = Path(path)
    try:
        model = load_config(path).model
    except ConfigError as exc:
        raise DeployConfigError(str(exc)) from exc
    return DeployPolicy(
        path, model.path, SignaturePolicy(model.public_key, model.require_signature)
    )


# -------------------------------------------------------------------------------------- render

FALLBACK_TEMPLATE = """\
# infarctwatch daemon configuration (written by `infarctwatch deploy device-install`).
# Every key and its default is documented in config/daemon.yaml of the source tree.
incoming: ./var/incoming          # the folder the scanner / PACS rule writes into
reports: ./var/reports            # one JSON report per scan
work: ./var/work                  # done/, failed/ and status.json
model:
  path: null                      # deploy-managed models folder: current -> versions/<v>
  inbox: null                     # a bundle .tar.gz dropped here is installed and hot-reloaded
  public_key: null                # ed25519 public key (PEM) bundle signatures must verify with
  require_signature: false
inference:
  device: AUTO                    # CPU | GPU | NPU | AUTO
  cache_dir: null                 # compiled-blob cache (speeds up GPU/NPU start)
"""

_SECTION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(#.*)?$")
_PLAIN = re.compile(r"^[A-Za-z0-9_./@+-]+$")


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if _PLAIN.match(text) else json.dumps(text)


def _set(lines: list[str], dotted: str, value: object) -> None:
    """Replace the value of ``dotted`` (``key`` or ``section.key``) keeping the line's comment."""
    *section, key = dotted.split(".")
    indent = "  " if section else ""
    pattern = re.compile(rf"^({indent}{re.escape(key)}:)(\s*)([^#]*?)(\s*#.*)?$")
    current: str | None = None
    for i, line in enumerate(lines):
        head = _SECTION.match(line)
        if head and not line.startswith(" "):
            current = head.group(1)
        in_scope = (current == section[0]) if section else not line.startswith(" ")
        match = pattern.match(line)
        if in_scope and match:
            new = f"{match.group(1)} {_scalar(value)}"
            if match.group(4):  # keep the comment, in its column when the value fits
                column = line.index("#", match.start(4))
                new = f"{new.ljust(column - 1)} {match.group(4).lstrip()}"
            lines[i] = new
            return
    raise DeviceInstallError(f"the configuration template has no '{dotted}' key to set")


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def render_device_config(template: str, values: dict[str, object]) -> str:
    """Set each ``values`` key (dotted path) in the YAML ``template``; return the new text.

    Raises:
        DeviceInstallError: a key is missing from the template or the result does not parse back
            to the intended values.
    """
    lines = template.splitlines()
    for dotted, value in values.items():
        _set(lines, dotted, value)
    text = "\n".join(lines) + "\n"
    parsed = yaml.safe_load(text)
    wrong = [k for k, v in values.items() if _get(parsed, k) != v]
    if wrong:
        raise DeviceInstallError(f"the rendered configuration does not hold {', '.join(wrong)}")
    return text
