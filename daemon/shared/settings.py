"""Settings as data: a YAML mapping checked against frozen dataclasses, every problem collected.

The daemon's configuration (`daemon.config`) and the trainer's (`trainer.config`) are both frozen
dataclasses whose fields carry their type and their rules. `SettingsReader` walks a mapping (from
``yaml.safe_load`` plus overrides) against such a dataclass and converts each value, collecting
*every* problem with its key path (``At 'fit.epochs': must be a whole number, got 'many'``)
instead of stopping at the first: unknown keys are problems too, so a typo never falls back to a
default silently. A field with a problem is `INVALID`; a section holding one is `INVALID` too,
and the other fields are still checked.

Rules live in the field's metadata, made with `rules`:

    epochs: int = field(default=40, metadata=rules(minimum=1))
    architecture: str = field(default="seed", metadata=rules(one_of=ARCHITECTURES))
    case_pattern: str = field(default=r"^(?P<case>[^_]+)_", metadata=rules(check=regex("case")))

Types understood: bool, int, float (an int is accepted), str (non-empty, stripped), `Path`
(made absolute against the working folder), ``X | None``, ``Literal[...]``, ``tuple[str, ...]``
and nested dataclasses. True and false are never numbers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

INVALID: Any = object()
"""Stands for a value (or a section) with a problem."""

Check = Callable[[Any], str | None]
"""A field rule: the problem with a converted value (``"must ..."``), or None."""


def rules(
    minimum: float | None = None,
    *,
    above: float | None = None,
    maximum: float | None = None,
    one_of: Iterable[Any] | None = None,
    check: Check | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata: numeric bounds, allowed values, a check and a transform, all optional.

    ``transform`` runs after conversion and before the other rules (e.g. ``str.upper``).
    """
    return {
        "minimum": minimum,
        "above": above,
        "maximum": maximum,
        "one_of": None if one_of is None else tuple(one_of),
        "check": check,
        "transform": transform,
    }


def regex(group: str | None = None) -> Check:
    """A check: the value is a valid regular expression (with the named ``group``, if given)."""

    def check(value: str) -> str | None:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            return f"must be a valid regular expression: {exc}"
        if group is not None and group not in compiled.groupindex:
            return f"must have a named group (?P<{group}>...)"
        return None

    return check


def octal(maximum: int) -> Check:
    """A check: the value is an octal string from 0 to ``maximum`` (a umask, a file mode)."""

    def check(value: str) -> str | None:
        try:
            number = int(value, 8)
        except ValueError:
            number = -1
        if 0 <= number <= maximum:
            return None
        return f"must be an octal string 0000-{maximum:04o}, got {value!r}"

    return check


def absolute(value: Any) -> Path:
    """``value`` as an absolute path; a symlinked folder keeps the name the operator gave it."""
    return Path(os.path.abspath(Path(value).expanduser()))  # noqa: PTH100 - abspath, not resolve()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_string_list(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


# type -> (accepts the YAML value, converts it, what the problem message says is wanted)
_SCALARS: dict[Any, tuple[Callable[[object], bool], Callable[[Any], Any], str]] = {
    bool: (lambda v: isinstance(v, bool), bool, "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int, "a whole number"),
    float: (_is_number, float, "a number"),
    str: (lambda v: isinstance(v, str) and bool(v.strip()), str.strip, "a non-empty string"),
    Path: (
        lambda v: isinstance(v, str | os.PathLike) and bool(str(v).strip()),
        absolute,
        "a path",
    ),
}


def describe(value: object) -> str:
    """A short rendering of a YAML value for a problem message."""
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


class SettingsReader:
    """Converts a mapping into dataclasses, collecting problems instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> Any:
        """Record a problem at key path ``where``; return `INVALID`."""
        self.problems.append(f"At '{where}': {message}")
        return INVALID

    def build(self, cls: type[Any], raw: object, where: str = "") -> Any:
        """An instance of ``cls`` from ``raw``, or `INVALID` if any field has a problem."""
        values = self.fields(cls, raw, where)
        if values is INVALID or any(v is INVALID for v in values.values()):
            return INVALID
        return cls(**values)

    def fields(self, cls: type[Any], raw: object, where: str = "") -> Any:
        """The converted value of every field of ``cls`` (`INVALID` where there is a problem).

        Missing keys take the field's default, converted and checked the same way (a relative
        default path becomes absolute).
        """
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            return self.problem(where or "(top level)", f"must be a mapping, got {describe(raw)}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in known:
                self.problem(_join(where, key), f"unknown key (known here: {', '.join(known)})")
        values = {}
        for name, spec in known.items():
            path = _join(where, name)
            hint = hints[name]
            if name in raw:
                value = self.convert(raw[name], hint, path)
            elif dataclasses.is_dataclass(hint):
                value = self.build(typing.cast("type[Any]", hint), {}, path)
            else:
                default = spec.default
                if default is dataclasses.MISSING:
                    default = spec.default_factory()  # type: ignore[operator]
                value = self.convert(default, hint, path)
            values[name] = self.refine(value, spec.metadata, path)
        return values

    def convert(self, value: object, hint: Any, where: str) -> Any:
        """``value`` converted to type ``hint``, or a problem."""
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            return self.build(typing.cast("type[Any]", hint), value, where)
        if origin in (types.UnionType, typing.Union):
            if value is None:
                return None
            (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
            return self.convert(value, inner, where)
        accepts: Callable[[object], bool]
        make: Callable[[Any], Any]
        if origin is Literal:
            accepts, make = typing.get_args(hint).__contains__, _same
            wanted = "one of " + ", ".join(str(c) for c in typing.get_args(hint))
        elif origin is tuple:
            accepts, make, wanted = _is_string_list, _to_tuple, "a list of strings"
        else:
            accepts, make, wanted = _SCALARS[hint]
        if not accepts(value):
            return self.problem(where, f"must be {wanted}, got {describe(value)}")
        return make(value)

    def refine(self, value: Any, field_rules: Mapping[str, Any], where: str) -> Any:
        """Apply a field's `rules` to its converted value (None and `INVALID` pass untouched)."""
        if value is INVALID or value is None or not field_rules:
            return value
        if field_rules["transform"] is not None:
            value = field_rules["transform"](value)
        minimum, above, maximum = (
            field_rules["minimum"],
            field_rules["above"],
            field_rules["maximum"],
        )
        allowed, check = field_rules["one_of"], field_rules["check"]
        message = None
        if minimum is not None and value < minimum:
            message = f"must be at least {minimum:g}, got {value!r}"
        elif above is not None and value <= above:
            message = f"must be greater than {above:g}, got {value!r}"
        elif maximum is not None and value > maximum:
            message = f"must be at most {maximum:,}, got {value!r}"
        elif allowed is not None and value not in allowed:
            message = f"must be one of {', '.join(map(str, allowed))}, got {value!r}"
        elif check is not None:
            message = check(value)
        return value if message is None else self.problem(where, message)


def _same(value: Any) -> Any:
    return value


def _to_tuple(value: Any) -> tuple[str, ...]:
    return tuple(value)


def set_dotted(target: dict[str, Any], dotted: str, value: object) -> str | None:
    """Set ``a.b.c`` in a nested mapping, creating sections; the problem if one is not a section."""
    *parents, leaf = dotted.split(".")
    node = target
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return f"At '{'.'.join(parents[: i + 1])}': is not a section, cannot set {dotted}"
        node = child
    node[leaf] = value
    return None


def key_paths(cls: type[Any], prefix: str = "") -> list[str]:
    """Every key path ``cls`` accepts, e.g. ``watch.stable_s`` (the docs tests use it)."""
    paths = []
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        path = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(hints[spec.name]):
            paths.extend(key_paths(hints[spec.name], f"{path}."))
        else:
            paths.append(path)
    return paths
