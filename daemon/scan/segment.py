"""A batch's lesion maps: the segmenter run on every analysed image of the batch.

After the classifier has answered for the whole batch (`daemon.scan.worker.scan_claims`), every
image with a prediction goes through the bundle's segmenter (`daemon.scan.inference.Segmenter`),
batched on its own infer requests like the classifier. Its DWI channel is the classifier's
preprocessed plane when both networks preprocess alike (the same `PreprocessSpec` but for the
channel count), else the source image preprocessed with the segmenter's own spec; its ADC channel
(when it has one) is zeros. Each answer becomes the image's `daemon.lesionmaps.slice.LesionMap`.

Only images with a prediction are segmented: an image refused (out of scope), failed or not
analysed gets no map. Frames of enhanced multi-frame objects are not segmented (the image's map is
that of the frame the report's prediction comes from).

A segmenter that fails for an image (OpenVINO, a bad map) costs that image its map, never its
prediction: the map says why (``LesionMap.error``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from daemon.lesionmaps.files import encode_mask
from daemon.lesionmaps.overlay import render_overlay
from daemon.lesionmaps.slice import lesion_map
from daemon.records import LesionMap
from daemon.shared.preprocess import preprocess_placed

if TYPE_CHECKING:
    import numpy.typing as npt

    from daemon.records import Decoded, Prediction, ScanResult
    from daemon.scan.inference import Segmenter
    from daemon.shared.bundle import Network
    from daemon.shared.preprocess import Placement, PreprocessSpec


def same_preprocessing(one: PreprocessSpec, other: PreprocessSpec) -> bool:
    """True when both specs give the same plane (they may differ in their channel count)."""
    return dataclasses.replace(one, channels=other.channels) == other


def _dwi_plane(
    job: Decoded, segmenter: Segmenter, classifier: PreprocessSpec
) -> tuple[npt.NDArray[np.float32], Placement]:
    spec = segmenter.network.preprocess
    if job.placement is not None and same_preprocessing(spec, classifier):
        return job.tensor[:, :, 0], job.placement
    if job.pixels is None:
        msg = "the decoded image was not kept"
        raise ValueError(msg)
    tensor, placement = preprocess_placed(job.pixels, spec)
    return tensor[:, :, 0], placement


def segment_batch(
    segmenter: Segmenter,
    classifier: PreprocessSpec,
    results: list[ScanResult | None],
    decoded: list[Decoded | None],
) -> None:
    """Give each result with a prediction its lesion map (in place; see the module docstring)."""
    planes: dict[int, tuple[npt.NDArray[np.float32] | None, float, str | None]] = {}
    placements: dict[int, Placement] = {}

    def done(
        index: int, plane: npt.NDArray[np.float32] | None, latency_ms: float, error: str | None
    ) -> None:  # OpenVINO's callback thread: only store the answer
        planes[index] = (plane, latency_ms, error)

    for index, job in enumerate(decoded):
        result = results[index]
        if job is None or result is None or result.prediction is None:
            continue
        try:
            dwi, placement = _dwi_plane(job, segmenter, classifier)
        except Exception as exc:  # noqa: BLE001 - this image's map fails, its prediction stands
            planes[index] = (None, 0.0, f"preparing the segmenter's input failed: {exc}")
            continue
        placements[index] = placement
        segmenter.submit(dwi, index, done)
    segmenter.wait()
    network = segmenter.network
    for index, placement in placements.items():
        result, job = results[index], decoded[index]
        assert result is not None  # noqa: S101 - only results were segmented
        assert job is not None  # noqa: S101 - with their decoded image
        plane, latency_ms, error = planes.get(index, (None, 0.0, "OpenVINO never answered"))
        found = _map(job, plane, placement, network, latency_ms=latency_ms, error=error)
        if result.prediction is not None and found.mask is not None:
            found = _with_files(found, job, result.prediction, result.model.name_version)
        results[index] = dataclasses.replace(result, lesion_map=found)
    for index, (_, _, error) in planes.items():
        result = results[index]
        if index not in placements and result is not None:
            results[index] = dataclasses.replace(result, lesion_map=LesionMap(None, error=error))


def _map(
    job: Decoded,
    plane: npt.NDArray[np.float32] | None,
    placement: Placement,
    network: Network,
    *,
    latency_ms: float,
    error: str | None,
) -> LesionMap:
    if plane is None:
        return LesionMap(None, error=error or "the segmenter failed")
    if not np.isfinite(plane).all():
        return LesionMap(None, error="the segmenter's map holds values that are not numbers")
    dicom = job.source.dicom
    try:
        return lesion_map(
            plane,
            placement,
            threshold=network.threshold,
            min_lesion_px=network.min_lesion_px,
            pixel_spacing=None if dicom is None else dicom.series.pixel_spacing,
            pixels=job.pixels,
            segment_ms=latency_ms,
        )
    except Exception as exc:  # noqa: BLE001 - this image's map fails, its prediction stands
        return LesionMap(None, error=f"unexpected {type(exc).__name__} in the lesion map: {exc}")


def _with_files(found: LesionMap, job: Decoded, prediction: Prediction, model: str) -> LesionMap:
    """``found`` with its mask PNG and, with a lesion, its overlay PNG (the source pixels freed)."""
    assert found.mask is not None  # noqa: S101 - the caller checks
    try:
        mask_png = encode_mask(found.mask)
        overlay_png = None
        if found.lesions and job.pixels is not None:
            overlay_png = render_overlay(
                job.pixels,
                found.mask,
                label=prediction.label,
                finding=prediction.finding,
                map_disagrees=found.disagrees_with(prediction.finding),
                model=model,
            )
    except Exception as exc:  # noqa: BLE001 - this image's map fails, its prediction stands
        return LesionMap(None, error=f"unexpected {type(exc).__name__} writing the map: {exc}")
    return dataclasses.replace(found, pixels=None, mask_png=mask_png, overlay_png=overlay_png)
