"""The daemon's configuration: defaults, the documented file, flags, and every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog
import yaml
from daemon_support import REPO, write_config

from daemon.commands import run as run_command
from daemon.config import DaemonConfig, key_paths, load_config
from daemon.errors import ConfigError
from daemon.intake.claims import ClaimArea

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """run_command.main configures structlog for the process: undo it after each test."""
    yield
    structlog.reset_defaults()


class TestDefaults:
    def test_bare_run_needs_no_file_and_uses_var_folders(self, tmp_path, monkeypatch) -> None:
        """Without a file, folders are ./var/{incoming,reports,work} made absolute, device AUTO."""
        monkeypatch.chdir(tmp_path)
        config = load_config()
        assert config.incoming == tmp_path / "var" / "incoming"
        assert config.reports == tmp_path / "var" / "reports"
        assert config.status_path == tmp_path / "var" / "work" / "status.json"
        area = ClaimArea(config.incoming, config.work, config.outcome)
        assert area.root == tmp_path / "var" / "incoming" / ".infarctwatch"
        assert config.model.path is None
        assert config.inference.device == "AUTO"

    def test_documented_example_equals_the_embedded_defaults(self) -> None:
        """config/daemon.yaml sets every key to its built-in default: the two cannot drift."""
        assert load_config(REPO / "config" / "daemon.yaml") == load_config()

    def test_documented_example_shows_every_key(self) -> None:
        """Every key the loader accepts appears in config/daemon.yaml."""
        document = yaml.safe_load((REPO / "config" / "daemon.yaml").read_text(encoding="utf-8"))
        for dotted in key_paths():
            node = document
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"{dotted} is not documented"
                node = node[part]


class TestLoading:
    def test_flags_override_the_file(self, tmp_path) -> None:
        """A flag wins over the file; a flag that was not given (None) leaves the file's value."""
        path = write_config(tmp_path, inference={"device": "GPU"})
        config = load_config(
            path, {"inference.device": "cpu", "reports": str(tmp_path / "r"), "model.path": None}
        )
        assert config.inference.device == "CPU"
        assert config.reports == tmp_path / "r"
        assert config.incoming == tmp_path / "incoming"

    def test_relative_paths_are_relative_to_the_working_folder(self, tmp_path, monkeypatch) -> None:
        """Relative paths in the file are resolved against the working folder, once."""
        monkeypatch.chdir(tmp_path)
        path = tmp_path / "etc" / "d.yaml"
        path.parent.mkdir()
        path.write_text("incoming: in\nmodel: {path: models}\n", encoding="utf-8")
        config = load_config(path)
        assert config.incoming == tmp_path / "in"
        assert config.model.path == tmp_path / "models"

    def test_empty_file_means_defaults(self, tmp_path) -> None:
        """An empty YAML file (or an empty section) is the defaults."""
        path = tmp_path / "empty.yaml"
        path.write_text("watch:\n", encoding="utf-8")
        assert load_config(path) == load_config()

    def test_every_problem_is_reported_at_once_with_its_key_path(self, tmp_path) -> None:
        """Unknown keys, wrong types, bad choices and bounds are all listed in one error."""
        path = tmp_path / "bad.yaml"
        path.write_text(
            "inference: {device: 5, top_k: 0, colour: red}\n"
            "watch: {mode: fanotify, stable_s: -1, ignore_suffixes: [1]}\n"
            "pipeline: [1, 2]\n"
            "limits: {max_pixels: 100000000000}\n"
            "outcome: {success: archive}\n"
            "logging: {level: loud}\n"
            "typo: true\n",
            encoding="utf-8",
        )
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        problems = caught.value.problems
        for expected in (
            "At 'inference.device': must be a non-empty string",
            "At 'inference.top_k': must be at least 1",
            "At 'inference.colour': unknown key",
            "At 'watch.mode': must be one of inotify, polling",
            "At 'watch.stable_s': must be at least 0",
            "At 'watch.ignore_suffixes': must be a list of strings",
            "At 'pipeline': must be a mapping",
            "At 'limits.max_pixels': must be at most 89,478,485",
            "At 'outcome.success': must be one of move, keep, delete",
            "At 'logging.level': must be one of debug, info, warning, error",
            "At 'typo': unknown key",
        ):
            assert any(p.startswith(expected) for p in problems), expected
        assert len(problems) == 11
        assert str(path) in str(caught.value)

    def test_rules_between_keys_are_checked_with_the_rest(self, tmp_path) -> None:
        """Reports inside incoming and a required signature without a key are problems too."""
        path = write_config(
            tmp_path,
            reports=str(tmp_path / "incoming" / "reports"),
            model={"require_signature": True},
            inference={"top_k": -1},
        )
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        text = "\n".join(caught.value.problems)
        assert "At 'reports':" in text and "inside it" in text
        assert "At 'model.require_signature': true needs 'model.public_key'" in text
        assert "At 'inference.top_k'" in text

    def test_the_model_inbox_must_be_a_folder_of_its_own(self, tmp_path) -> None:
        """An inbox inside incoming (scanned as images) or equal to the models folder is refused."""
        for inbox, models, key in (
            (tmp_path / "incoming" / "inbox", tmp_path / "models", "incoming"),
            (tmp_path / "models", tmp_path / "models", "model.path"),
        ):
            path = write_config(tmp_path, model={"inbox": str(inbox), "path": str(models)})
            with pytest.raises(ConfigError) as caught:
                load_config(path)
            other = inbox if key == "model.path" else tmp_path / "incoming"
            expected = (
                f"At 'model.inbox': {inbox} must be a folder of its own, not {key} ({other}), "
                "inside it or around it"
            )
            assert caught.value.problems == [expected]
        path = write_config(
            tmp_path, model={"inbox": str(tmp_path / "inbox"), "path": str(tmp_path / "models")}
        )
        assert load_config(path).model.inbox == tmp_path / "inbox"

    def test_yaml_is_read_safely(self, tmp_path) -> None:
        """A Python object tag is refused by yaml.safe_load, reported as a config problem."""
        path = tmp_path / "evil.yaml"
        path.write_text("incoming: !!python/object/apply:os.getcwd []\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(path)

    def test_a_missing_file_is_a_problem(self, tmp_path) -> None:
        """--config naming no file is reported, not replaced by defaults."""
        with pytest.raises(ConfigError, match="cannot read the file"):
            load_config(tmp_path / "nope.yaml")

    def test_config_values_are_frozen(self) -> None:
        """Configuration is data: it cannot be changed after validation."""
        config = load_config()
        with pytest.raises(AttributeError):
            config.watch.mode = "polling"  # type: ignore[misc]
        assert isinstance(config, DaemonConfig)


class TestRunCommand:
    def test_invalid_config_exits_2_listing_every_problem(self, tmp_path, capsys) -> None:
        """`infarctwatch run` prints all problems with key paths and exits 2 before starting."""
        path = write_config(tmp_path, inference={"device": "", "top_k": 0}, watch={"mode": "x"})
        code = run_command.main(["--config", str(path)])
        err = capsys.readouterr().err
        assert code == 2
        assert "3 configuration problem(s)" in err
        for key in ("inference.device", "inference.top_k", "watch.mode"):
            assert f"At '{key}'" in err
        assert not (tmp_path / "incoming").exists(), "nothing is created for an invalid config"

    def test_usage_error_returns_2_without_raising(self, capsys) -> None:
        """An unknown flag is a usage error: exit code 2, no SystemExit escapes main()."""
        assert run_command.main(["--frobnicate"]) == 2
        assert "unrecognized arguments" in capsys.readouterr().err

    def test_public_key_that_cannot_be_read_is_a_config_problem(self, tmp_path, capsys) -> None:
        """model.public_key naming a file that is not a key is reported at its key."""
        bad_key = tmp_path / "key.pub"
        bad_key.write_text("not a key", encoding="utf-8")
        path = write_config(tmp_path, model={"public_key": str(bad_key)})
        assert run_command.main(["--config", str(path)]) == 2
        assert "At 'model.public_key'" in capsys.readouterr().err


def test_paths_given_as_flags_are_absolute(tmp_path: Path, monkeypatch) -> None:
    """--incoming relative to the working folder becomes absolute in the config."""
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"incoming": Path("drop")})
    assert config.incoming == tmp_path / "drop"
