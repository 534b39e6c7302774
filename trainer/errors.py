"""Every error the trainer raises."""

from __future__ import annotations


class TrainerError(Exception):
    """Base class for every error raised by the ``trainer`` package."""


class LabelMapError(TrainerError):
    """The label map is malformed, or a dataset folder has a name it cannot map."""


class DatasetError(TrainerError):
    """A dataset folder is missing, empty, or cannot be split by case."""


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
