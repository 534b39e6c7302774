"""`SliceRecord` s made by hand for the series rules' tests: analysed slices of one series."""

from __future__ import annotations

from typing import Any

from daemon.scan.slices import SliceRecord


def analysed_slice(index: int, z: float | None, **fields: Any) -> SliceRecord:
    """Slice ``index`` (InstanceNumber ``index + 1``) of series ``dwi`` at position ``z``.

    Analysed (status ``ok``) by a bundle with a segmenter; ``fields`` set the rest.
    """
    return SliceRecord(
        series_id="dwi",
        scan_id=f"{index:016x}-00000000",
        name=f"n{index}",
        status="ok",
        received_at="",
        sop_uid=f"1.2.{index}",
        instance_number=index + 1,
        slice_position=z,
        segmented=True,
        **fields,
    )
