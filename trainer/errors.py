"""Every error the trainer raises.

`DatasetError` and `LabelMapError` are the daemon's (`daemon.errors`): reading a labelled dataset
is shared with ``infarctwatch evaluate`` (`daemon.shared.dataset`). The trainer's commands catch
them beside `TrainerError` (`TRAINER_ERRORS`).
"""

from __future__ import annotations

from daemon.errors import DatasetError, LabelMapError

__all__ = [
    "TRAINER_ERRORS",
    "DatasetError",
    "ExportError",
    "LabelMapError",
    "RunFolderError",
    "SynthError",
    "TrainConfigError",
    "TrainerError",
]


class TrainerError(Exception):
    """Base class for every error raised by the ``trainer`` package (but the two above)."""


class TrainConfigError(TrainerError):
    """``train.yaml`` is invalid. Lists every problem with its key path."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} training configuration problem(s){where}:\n{lines}")


class ExportError(TrainerError):
    """Conversion to OpenVINO IR, quantisation or the parity check failed."""


class SynthError(TrainerError):
    """The synthetic data generator cannot run (missing anatomy files, bad options)."""


class RunFolderError(TrainerError):
    """A run folder would overwrite an earlier run, or lacks what ``export`` needs."""


TRAINER_ERRORS = (TrainerError, DatasetError)
"""What a trainer command reports in one line (`LabelMapError` is a `DatasetError`)."""
