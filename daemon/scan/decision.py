"""From the network's outputs to a report's answer: calibration, the finding, image-level refusal.

The bundle says how its outputs are to be read (docs/training.md, "What the bundle tells the
daemon"); the ``thresholds`` configuration may override its numbers. `resolve` turns both into a
`Rule` once per model load, the same way in the daemon (which logs it) and in each scan worker
(which applies it to every scan, `Rule.answer`):

1. **Image-level refusal.** A bundle with an ``in_scope`` output: an image whose in_scope score is
   below the threshold (or not a number) is not an axial DWI b1000 brain slice. It gets no
   prediction: `Rule.answer` returns an `OutOfScope` with the code ``OUT_OF_SCOPE_IMAGE`` and
   the report says ``not_analysed``, like the DICOM header rules (`daemon.shared.dicom_scope`).
   A DICOM image whose header already says diffusion MR with a b-value in range
   (`daemon.records.Decoded.header_dwi`) is held to the lower ``in_scope_dicom_dwi`` threshold
   (never above ``in_scope``): the header has ruled out the other contrasts and modalities, so the
   pixels only need to rule out what is not a brain; the margin the general threshold keeps
   against T1, FLAIR, CT and pictures is not needed, and shifted acquisitions lose fewer slices.
2. **Calibration.** A bundle with a temperature ``T`` is served ``softmax(log(max(p, 1e-12)) / T)``
   of its class output (the trainer's ``apply_temperature``), and the prediction says
   ``calibrated``; without one, the class output as it is.
3. **Finding**, on the probabilities served, with ``p_neg`` = p('No acute infarct')::

       1 - p_neg >= acute_infarct      -> acute_infarct      (checked first)
       p_neg >= no_acute_infarct       -> no_acute_infarct
       otherwise                       -> indeterminate

Each threshold comes from the configuration when set there, else from the bundle, else from the
configuration's ``fallback_*`` value (a bundle without thresholds: the embedded 1.0.x model). A
bundle whose labels lack the negative class and that names none gets ``indeterminate`` always.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from daemon.records import Prediction
from daemon.shared.dicom_scope import OutOfScope

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from daemon.config import ThresholdsConfig
    from daemon.shared.bundle import Bundle

NEGATIVE_CLASS = "No acute infarct"
"""The negative class of a bundle whose manifest names none (the trainer's label)."""
OUT_OF_SCOPE_IMAGE = "OUT_OF_SCOPE_IMAGE"
ACUTE, NEGATIVE, INDETERMINATE = "acute_infarct", "no_acute_infarct", "indeterminate"
FINDINGS = (ACUTE, NEGATIVE, INDETERMINATE)
_EPS = 1e-12


def calibrate(probabilities: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """``softmax(log(p) / T)`` of one row (``p`` clipped at 1e-12 before the log), in float64."""
    out: npt.NDArray[np.float64] = np.log(np.clip(np.asarray(probabilities, np.float64), _EPS, 1.0))
    out /= temperature
    out -= out.max()
    np.exp(out, out=out)
    out /= out.sum()
    return out


def finding(p_negative: float | None, acute_infarct: float, no_acute_infarct: float) -> str:
    """The finding for p('No acute infarct') (``None``: the model has no such class)."""
    if p_negative is None:
        return INDETERMINATE
    if 1.0 - p_negative >= acute_infarct:
        return ACUTE
    if p_negative >= no_acute_infarct:
        return NEGATIVE
    return INDETERMINATE


@dataclass(frozen=True)
class Rule:
    """How one bundle's outputs become a report's answer, with the thresholds in service."""

    labels: tuple[str, ...]
    temperature: float | None
    """None: the class output is served as it is (``calibrated: false``)."""
    negative_class: str | None
    """The label whose probability is p_neg; None: every finding is ``indeterminate``."""
    acute_infarct: float
    no_acute_infarct: float
    in_scope: float | None
    """Refuse below this in_scope score; None: the network has no in_scope output."""
    in_scope_dicom_dwi: float | None = None
    """Refuse a header-confirmed DICOM DWI image below this instead (at most `in_scope`)."""
    sources: tuple[tuple[str, str], ...] = ()
    """Where each threshold came from: ``config``, ``bundle`` or ``fallback``."""

    @functools.cached_property
    def negative_index(self) -> int | None:
        """Index of `negative_class` in the labels."""
        if self.negative_class is None or self.negative_class not in self.labels:
            return None
        return self.labels.index(self.negative_class)

    def scope_threshold(self, *, header_dwi: bool = False) -> float | None:
        """The in_scope threshold for an image (``header_dwi``: its DICOM header says DWI)."""
        if self.in_scope is None or not header_dwi or self.in_scope_dicom_dwi is None:
            return self.in_scope
        return min(self.in_scope, self.in_scope_dicom_dwi)

    def answer(
        self,
        classes: npt.NDArray[np.float32],
        in_scope: float | None,
        *,
        header_dwi: bool = False,
    ) -> Prediction | OutOfScope:
        """The prediction for one image's outputs, or why it is refused."""
        threshold = self.scope_threshold(header_dwi=header_dwi)
        if threshold is not None and in_scope is not None and not in_scope >= threshold:
            return OutOfScope(
                OUT_OF_SCOPE_IMAGE,
                f"in_scope score {in_scope:.3f} is below the threshold {threshold:.3f}: "
                "not an axial DWI b1000 brain slice",
            )
        if self.temperature is None:
            probabilities: Sequence[float] = classes.tolist()
        else:
            probabilities = calibrate(classes, self.temperature).tolist()
        index = self.negative_index
        p_negative = None if index is None else float(probabilities[index])
        return Prediction(
            self.labels,
            tuple(probabilities),
            calibrated=self.temperature is not None,
            finding=finding(p_negative, self.acute_infarct, self.no_acute_infarct),
        )

    def log_fields(self) -> dict[str, Any]:
        """What the model-load log lines say about the rule in service."""
        return {
            "calibrated": self.temperature is not None,
            "temperature": self.temperature,
            "negative_class": self.negative_class if self.negative_index is not None else None,
            "finding_thresholds": {ACUTE: self.acute_infarct, NEGATIVE: self.no_acute_infarct},
            "in_scope_threshold": self.in_scope,
            "in_scope_dicom_dwi_threshold": self.scope_threshold(header_dwi=True),
            "thresholds_from": dict(self.sources),
        }


def _pick(
    name: str, configured: float | None, bundled: Any, fallback: float
) -> tuple[float, tuple[str, str]]:
    if configured is not None:
        return configured, (name, "config")
    if isinstance(bundled, int | float) and not isinstance(bundled, bool):
        return float(bundled), (name, "bundle")
    return fallback, (name, "fallback")


def resolve(bundle: Bundle, thresholds: ThresholdsConfig) -> Rule:
    """The `Rule` of ``bundle`` under the ``thresholds`` configuration (module docstring)."""
    bundled = bundle.finding_thresholds or {}
    acute, acute_from = _pick(
        ACUTE, thresholds.acute_infarct, bundled.get(ACUTE), thresholds.fallback_acute_infarct
    )
    negative, negative_from = _pick(
        NEGATIVE,
        thresholds.no_acute_infarct,
        bundled.get(NEGATIVE),
        thresholds.fallback_no_acute_infarct,
    )
    sources = [acute_from, negative_from]
    scope: float | None = None
    dicom_dwi: float | None = None
    if bundle.outputs is not None and "in_scope" in bundle.outputs:
        scope, scope_from = _pick(
            "in_scope",
            thresholds.in_scope,
            bundle.in_scope_threshold,
            thresholds.fallback_in_scope,
        )
        dicom_dwi, dicom_dwi_from = _pick(
            "in_scope_dicom_dwi",
            thresholds.in_scope_dicom_dwi,
            None,
            thresholds.fallback_in_scope_dicom_dwi,
        )
        sources += [scope_from, dicom_dwi_from]
    negative_class = bundled.get("negative_class", NEGATIVE_CLASS)
    return Rule(
        labels=bundle.labels,
        temperature=bundle.temperature,
        negative_class=str(negative_class),
        acute_infarct=acute,
        no_acute_infarct=negative,
        in_scope=scope,
        in_scope_dicom_dwi=dicom_dwi,
        sources=tuple(sources),
    )
