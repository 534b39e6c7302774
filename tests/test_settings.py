"""daemon.shared.settings: the one YAML-to-dataclass checker of both configurations."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from daemon.shared.settings import (
    INVALID,
    SettingsReader,
    key_paths,
    octal,
    regex,
    rules,
    set_dotted,
)


@dataclass(frozen=True)
class Inner:
    count: int = field(default=2, metadata=rules(1, maximum=10))
    share: float | None = field(default=None, metadata=rules(above=0))
    mode: Literal["a", "b"] = "a"
    kind: str = field(default="x", metadata=rules(one_of=("x", "y")))


@dataclass(frozen=True)
class Outer:
    name: str = field(default="dev", metadata=rules(transform=str.upper))
    pattern: str = field(default=r"^(?P<case>\w+)", metadata=rules(check=regex("case")))
    umask: str = field(default="0027", metadata=rules(check=octal(0o777)))
    folder: Path = Path("var/x")
    names: tuple[str, ...] = ("a",)
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_defaults_are_converted_and_refined_like_given_values(tmp_path, monkeypatch) -> None:
    """An empty mapping gives the defaults, with transforms applied and paths made absolute."""
    monkeypatch.chdir(tmp_path)
    reader = SettingsReader()
    built = reader.build(Outer, {})
    assert reader.problems == []
    assert built == Outer(name="DEV", folder=tmp_path / "var" / "x")


def test_values_are_converted_to_the_field_types() -> None:
    """An int where a float belongs becomes a float; lists become tuples; None passes rules."""
    reader = SettingsReader()
    built = reader.build(Outer, {"names": ["p", "q"], "inner": {"share": 2, "mode": "b"}})
    assert reader.problems == []
    assert built.names == ("p", "q")
    assert built.inner.share == 2.0
    assert isinstance(built.inner.share, float)
    assert built.inner.mode == "b"


def test_every_problem_is_reported_with_its_key_path() -> None:
    """Types, bounds, choices, checks and unknown keys: each problem once, none stops the rest."""
    reader = SettingsReader()
    raw = {
        "pattern": "^(\\w+)",
        "umask": "0999",
        "flag": 1,
        "typo": 3,
        "inner": {"count": 0, "share": 0, "mode": "c", "kind": "z", "other": True},
    }
    assert reader.build(Outer, raw) is INVALID
    wanted = {
        "pattern": "named group (?P<case>",
        "umask": "octal string 0000-0777",
        "flag": "must be true or false, got 1",
        "typo": "unknown key",
        "inner.count": "must be at least 1, got 0",
        "inner.share": "must be greater than 0",
        "inner.mode": "must be one of a, b",
        "inner.kind": "must be one of x, y, got 'z'",
        "inner.other": "unknown key",
    }
    assert len(reader.problems) == len(wanted), reader.problems
    for key, text in wanted.items():
        assert any(p.startswith(f"At '{key}':") and text in p for p in reader.problems), key


def test_booleans_are_not_numbers_and_sections_must_be_mappings() -> None:
    """true is not a count; a scalar where a section belongs is reported at the section."""
    reader = SettingsReader()
    assert reader.fields(Outer, {"inner": 3})["inner"] is INVALID
    assert reader.fields(Inner, {"count": True})["count"] is INVALID
    assert reader.problems == [
        "At 'inner': must be a mapping, got 3",
        "At 'count': must be a whole number, got True",
    ]


def test_set_dotted_creates_sections_and_refuses_to_go_below_a_value() -> None:
    """Overrides land at their key path; a path through a scalar is a problem, not a reset."""
    raw: dict[str, object] = {"inner": {"count": 3}, "flag": True}
    assert set_dotted(raw, "inner.share", 0.5) is None
    assert set_dotted(raw, "new.deep.key", 1) is None
    assert raw == {"inner": {"count": 3, "share": 0.5}, "flag": True, "new": {"deep": {"key": 1}}}
    problem = set_dotted(raw, "flag.x", 1)
    assert problem is not None
    assert problem.startswith("At 'flag': is not a section")


def test_key_paths_lists_every_leaf() -> None:
    assert key_paths(Outer) == [
        "name",
        "pattern",
        "umask",
        "folder",
        "names",
        "flag",
        "inner.count",
        "inner.share",
        "inner.mode",
        "inner.kind",
    ]
