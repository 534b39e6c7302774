"""Which model is in service: the bundle, what it reports, and what the scan workers compile.

The daemon process runs no inference. `load_model` checks a verified bundle the way the workers
will use it (`daemon.scan.inference.check_compiles`: compiled once with the workers' settings, then
dropped) and returns a `ServedModel`; `ModelHolder` holds the one in service and swaps it
atomically on a hot reload (`daemon.model.reload`). Each batch takes `ModelHolder.current` once and
sends its `ServedModel.choice` to the worker, which compiles that bundle when it changes: a batch
never mixes two models, and reports name the model that scanned them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.config import ThresholdsConfig
from daemon.scan.decision import Rule, resolve
from daemon.scan.inference import check_compiles
from daemon.scan.protocol import ModelChoice

if TYPE_CHECKING:
    from daemon.config import InferenceConfig
    from daemon.records import ModelInfo
    from daemon.shared.bundle import Bundle


@dataclass(frozen=True)
class ServedModel:
    """A bundle checked for service."""

    bundle: Bundle
    info: ModelInfo
    """What reports and the status file say: name, version, precision, devices (the workers')."""
    requests: int
    """Infer requests of each worker's engine."""
    rule: Rule
    """Calibration and thresholds in service (the workers resolve the same from the bundle)."""

    @property
    def choice(self) -> ModelChoice:
        """What a worker must compile to serve this model."""
        return ModelChoice(self.bundle.path, self.info.variant, self.bundle.sha256)


def load_model(
    bundle: Bundle,
    inference: InferenceConfig,
    variant: str,
    thresholds: ThresholdsConfig | None = None,
) -> ServedModel:
    """Check that the device compiles ``bundle`` as the workers will, and describe it.

    ``variant``: ``auto`` serves the bundle's default variant. ``thresholds``: the configuration's
    overrides (None: the built-in defaults).

    Raises:
        EngineError: the network does not fit the bundle, or the device cannot compile it.
    """
    info, requests = check_compiles(bundle, inference, variant)
    return ServedModel(bundle, info, requests, resolve(bundle, thresholds or ThresholdsConfig()))


class ModelHolder:
    """The model in service; replaced atomically between batches (`swap`)."""

    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._lock = threading.Lock()

    @property
    def current(self) -> ServedModel:
        """The model new batches go to."""
        return self._model

    def swap(self, model: ServedModel) -> ServedModel:
        """Put ``model`` in service; returns the one it replaces."""
        with self._lock:
            old, self._model = self._model, model
        return old
