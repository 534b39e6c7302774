"""`SliceRecord` s made by hand for the series rules' tests."""

from __future__ import annotations

from typing import Any

from daemon.scan.slices import SliceRecord


def slice_record(index: int, z: float | None, **fields: Any) -> SliceRecord:
    """Image ``index`` (InstanceNumber ``index + 1``) at slice position ``z``.

    By default an analysed slice (status ``ok``) of series ``dwi``, scanned by a bundle with a
    segmenter; ``fields`` set or override any other `SliceRecord` field.
    """
    values: dict[str, Any] = {
        "series_id": "dwi",
        "scan_id": f"{index:016x}-00000000",
        "name": f"n{index}",
        "status": "ok",
        "received_at": "",
        "sop_uid": f"1.2.{index}",
        "instance_number": index + 1,
        "slice_position": z,
        "segmented": True,
    }
    return SliceRecord(**(values | fields))
