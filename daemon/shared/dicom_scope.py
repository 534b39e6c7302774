"""Whether a DICOM file is a DWI b1000 MR slice at all, decided from its header alone.

The model answers for diffusion-weighted MR slices at b = 1000 s/mm². A file whose header says
otherwise gets no prediction, ever: its report has ``"status": "not_analysed"`` and a reason with
a stable code. The rules, in the order they are tried (the first that fits is the reason):

=============  ===============================================================================
code           when
=============  ===============================================================================
``OWN_RESULT`` Manufacturer (0008,0070) is ``infarctwatch``: a Secondary Capture or SEG the daemon
               wrote itself, routed back by a PACS (analysing it would answer for its own answer,
               and could loop)
``NOT_MR``     Modality (0008,0060) is present and is not ``MR``
``NOT_DWI``    ImageType (0008,0008), SeriesDescription (0008,103E), ProtocolName (0018,1030)
               or SequenceName (0018,0024) names a non-DWI image: ADC (also eADC, dADC,
               TRACEW-ADC, GE's "(Exponential) Apparent Diffusion Coefficient"), FLAIR, T1, T2
               or a structural sequence (MPRAGE, SPGR, BRAVO, TFE, VIBE, FLASH, CUBE, SPACE,
               TSE, FSE, HASTE, GRE, STIR, PD) (unless the same text also says
               DWI/diffusion/TRACE), localizer, scout or survey,
               a tensor map (FA, ColFA), perfusion (PWI, DSC, DCE, ASL and their CBF, CBV, MTT,
               Tmax, TTP maps), susceptibility weighting (SWI, SWAN, mIP), an angiogram or a
               projection (TOF, MRA, MIP), a Siemens MOSAIC (many slices tiled in one image);
               or ScanningSequence (0018,0020) is present without ``EP``
               (echo planar) while no b-value and no diffusion word is anywhere in the header
               (a spin echo or gradient echo image: pydicom's ``MR_small.dcm``);
               or, again with no b-value and no diffusion word, the timing or the acquisition
               rules a diffusion image out: MRAcquisitionType (0018,0023)
               ``3D``, EchoTime (0018,0081) under `MIN_DWI_TE_MS`, RepetitionTime (0018,0080)
               under `MIN_DWI_TR_MS` or InversionTime (0018,0082) from `MIN_NON_DWI_TI_MS` up
``NOT_B1000``  a b-value is present and lies outside the accepted range (`B_RANGE`, config
               ``limits.b_value_min`` .. ``limits.b_value_max``): b0 images of a diffusion series
               are not b1000
``NOT_AXIAL``  ImageOrientationPatient (0020,0037) (or an enhanced object's shared plane
               orientation) puts the slice normal nearer the left-right or front-back axis than
               the head-foot axis: a sagittal or coronal slice, tilted more than 45° from axial
=============  ===============================================================================

b-values are read from the standard DiffusionBValue (0018,9087) first, then from the vendors'
private tags: Siemens (0019,100C), GE (0043,1039), Philips (2001,1003). GE writes its b-value as
the first value of (0043,1039), sometimes offset by 1,000,000,000 (``1000001000`` for b = 1000):
the value is taken modulo 10⁹. Last comes Siemens' SequenceName (0018,0024), which names each
image's b-value (``*ep_b0``, ``*ep_b1000t``, ``*re_b1000#2``) and survives the anonymisers that
strip private tags. A header with none of these says nothing about b (most raster exports and
many older DICOM files): no rule fires on a missing attribute.

Shared (daemon and trainer): the rules need nothing but the parsed header.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from daemon import GENERATOR
from daemon.shared.dicom_series import image_orientation, slice_normal

B_RANGE = (700.0, 1600.0)
"""Accepted b-values (s/mm²) by default: the generator trains on 800-1500, with a margin for the
b-values sites call "b1000" (some scanners write 998 or 1005; some protocols use 800 or 1500)."""

MIN_DWI_TE_MS = 35.0
"""A b = 1000 s/mm² spin echo needs its diffusion gradients on both sides of the refocusing pulse:
with the 40-80 mT/m of clinical scanners the shortest echo times are about 45-65 ms (60-110 ms
in practice). An EchoTime under this is a T1, PD or gradient-echo image."""

MIN_DWI_TR_MS = 1000.0
"""Multi-slice DWI repeats every 2-10 s (1.5 s and up with simultaneous multi-slice); T1 spin echo
(400-700 ms) and gradient echo (under 100 ms) repeat faster than this."""

MIN_NON_DWI_TI_MS = 600.0
"""Fat suppression of a DWI by inversion (STIR) uses 150-250 ms; from this up an inversion is a
FLAIR (1,800-2,800 ms) or a T1 inversion recovery or MPRAGE (800-1,200 ms)."""

GE_B_OFFSET = 1_000_000_000
"""GE's (0043,1039) may carry the b-value plus this offset."""

NOT_MR = "NOT_MR"
NOT_DWI = "NOT_DWI"
NOT_B1000 = "NOT_B1000"
NOT_AXIAL = "NOT_AXIAL"
OWN_RESULT = "OWN_RESULT"
CODES = (OWN_RESULT, NOT_MR, NOT_DWI, NOT_B1000, NOT_AXIAL)
"""Every reason code of this module, in the order the rules are tried."""


def _word(pattern: str) -> re.Pattern[str]:
    """``pattern`` with no letter right before or after it (``_``, digits, spaces may touch)."""
    return re.compile(rf"(?<![A-Z])(?:{pattern})(?![A-Z])", re.IGNORECASE)


_DIFFUSION = re.compile(
    "DWI|" + _word(r"DIFFUSION|DIFF|TRACEW?|EP2D_DIFF|B\s?1000").pattern, re.IGNORECASE
)
"""Words that say diffusion. ``DWI`` counts inside a word too (Philips' ``sDWI``, ``DWIBS``):
this pattern only ever keeps a file in, so a loose match costs nothing but a picture check."""
_NOT_DWI = (
    ("an ADC map", _word(r"(?:E|D|EXP)?ADC|APPARENT[\s_-]*DIFFUSION|EXPONENTIAL")),
    ("FLAIR", _word(r"FLAIR|TIRM|DARK[\s_-]?FLUID")),
    ("a localizer", _word(r"LOCALI[SZ]ER|SCOUT|SURVEY|LOC")),
    ("a diffusion tensor map", _word(r"(?:COL|RGB)?FA|FRACTIONAL[\s_-]*ANISOTROPY|TENSOR")),
    ("perfusion", _word(r"PERF(?:USION)?|PWI|DSC|DCE|P?C?ASL|CBF|CBV|MTT|TMAX|TTP")),
    ("susceptibility weighting", _word(r"SWI|SWIP|SWAN|MNIP|SUSCEPTIBILITY|HEMO")),
    ("an angiogram or a projection", _word(r"TOF|MRA|ANGIO|MIP|PROJECTION[\s_-]*IMAGE")),
    ("a mosaic (many slices tiled in one image)", _word(r"MOSAIC")),
)
_ADC_MAP = _word(r"D?ADC|APPARENT[\s_-]*DIFFUSION[\s_-]*COEFFICIENT")
_EXPONENTIAL = _word(r"E(?:XP)?ADC|EXP(?:ONENTIAL)?")


def names_adc_map(header: Header) -> bool:
    """True when ImageType or a description names an ADC map (not its exponential, eADC)."""
    texts = [text for _, text in header.texts]
    return any(_ADC_MAP.search(t) for t in texts) and not any(_EXPONENTIAL.search(t) for t in texts)


_WEIGHTING = re.compile(r"(?<![A-Z0-9])T[12](?:W|WI)?(?![A-Z0-9])", re.IGNORECASE)
"""T1, T2, T1W, T2WI as a word of their own (``T2*`` too; not ``TRACEW`` or ``ep2d``)."""
_STRUCTURAL = _word(
    r"MP2?RAGE|F?SPGR|BRAVO|T?FE|VIBE|FLASH|CUBE|SPACE|[TF]SE|HASTE|SSFSE|GRE|STIR|PD"
)
"""The vendors' names of structural (not diffusion) sequences: read like T1/T2 above."""

B_VALUE_TAGS = (
    ("DiffusionBValue (0018,9087)", 0x00189087),
    ("Siemens (0019,100C)", 0x0019100C),
    ("GE (0043,1039)", 0x00431039),
    ("Philips (2001,1003)", 0x20011003),
)
"""Where a b-value is looked for, in this order; the first readable one is the file's (then
Siemens' SequenceName, `SEQUENCE_NAME_B`)."""

SEQUENCE_NAME_B = re.compile(r"(?:EP|RE)_B(\d+)(?![\d_])", re.IGNORECASE)
"""Siemens' diffusion SequenceName: ``*ep_b1000t``, ``*ep_b0``, ``*re_b1000#1`` (readout-segmented);
not the ADC's ``*ep_b0_1000``, which names two b-values."""


@dataclass(frozen=True)
class Header:
    """What the rules read from a DICOM header (nothing identifying)."""

    modality: str | None = None
    scanning_sequence: str | None = None
    texts: tuple[tuple[str, str], ...] = ()
    """``(attribute, value)``: ImageType's values and the descriptions, as written."""
    b_value: float | None = None
    b_value_tag: str | None = None
    normal: tuple[float, float, float] | None = None
    """The slice plane's unit normal from ImageOrientationPatient (None: not given)."""
    manufacturer: str | None = None
    acquisition: str | None = None
    """MRAcquisitionType: ``2D`` or ``3D``."""
    echo_ms: float | None = None
    repetition_ms: float | None = None
    inversion_ms: float | None = None
    """EchoTime, RepetitionTime, InversionTime; None when absent or not above 0."""


@dataclass(frozen=True)
class OutOfScope:
    """Why a file gets no prediction: a stable code of `CODES` and a message."""

    code: str
    message: str


def read_header(ds: Any) -> Header:
    """The attributes the rules need, from a pydicom ``Dataset``."""
    modality = ds.get("Modality")
    texts: list[tuple[str, str]] = []
    texts.extend(("ImageType", value) for value in _values(ds.get("ImageType")))
    for keyword in ("SeriesDescription", "ProtocolName", "SequenceName"):
        value = ds.get(keyword)
        if value:
            texts.append((keyword, str(value)))
    sequence = "\\".join(_values(ds.get("ScanningSequence"))) or None
    b_value, tag = b_value_of(ds)
    orientation = image_orientation(ds)
    return Header(
        str(modality) if modality else None,
        sequence,
        tuple(texts),
        b_value,
        tag,
        slice_normal(orientation) if orientation is not None else None,
        str(ds.get("Manufacturer") or "").strip() or None,
        str(ds.get("MRAcquisitionType") or "").strip().upper() or None,
        _time(ds.get("EchoTime")),
        _time(ds.get("RepetitionTime")),
        _time(ds.get("InversionTime")),
    )


def _time(value: Any) -> float | None:
    """A timing attribute in ms; None when absent, unreadable or not above 0 ("not applicable")."""
    number = _number(value) if value is not None else None
    return number if number is not None and number > 0 else None


def _values(value: Any) -> list[str]:
    """A text attribute's values (a ``MultiValue`` or one ``str``), empty ones left out."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | bytes) else list(value)
    return [str(item) for item in items if item]


def b_value_of(ds: Any) -> tuple[float | None, str | None]:
    """The b-value and the tag it came from (`B_VALUE_TAGS`), or ``(None, None)``."""
    for name, tag in B_VALUE_TAGS:
        element = ds.get(tag)
        if element is None:
            continue
        value = _number(element.value)
        if value is None:
            continue
        if tag == 0x00431039:
            value %= GE_B_OFFSET
        return value, name
    found = SEQUENCE_NAME_B.search(str(ds.get("SequenceName") or ""))
    if found:
        return float(found[1]), "SequenceName (0018,0024)"
    return None, None


def _number(value: Any) -> float | None:
    """The first number in an element's value (a number, a list of them, text or raw bytes)."""
    if isinstance(value, bytes):  # a private tag read without its VR (implicit VR files)
        value = _from_bytes(value)
    if isinstance(value, str):
        value = value.split("\\")[0]
    elif not isinstance(value, int | float) and hasattr(value, "__len__"):  # MultiValue, list
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None  # noqa: PLR0124


def _from_bytes(raw: bytes) -> Any:
    """An implicit-VR private value: IS/DS text, else a little-endian FL (4 bytes) or FD (8)."""
    text = raw.decode("latin-1").strip("\x00 ")
    if text and all(c in "0123456789+-.eE\\ " for c in text):
        return text
    if len(raw) in _FLOAT_FORMATS:
        return struct.unpack(_FLOAT_FORMATS[len(raw)], raw)[0]
    return None


_FLOAT_FORMATS = {4: "<f", 8: "<d"}


def judge(header: Header, b_range: tuple[float, float] = B_RANGE) -> OutOfScope | None:
    """The first rule ``header`` breaks, or ``None`` when it may be a DWI b1000 MR slice."""
    if header.manufacturer == GENERATOR:
        return OutOfScope(
            OWN_RESULT, f"Manufacturer is {GENERATOR!r}: one of its own results, not a scan"
        )
    if header.modality is not None and header.modality.strip().upper() != "MR":
        return OutOfScope(NOT_MR, f"Modality is {header.modality!r}, not MR")
    named = _named_otherwise(header.texts) or _acquired_otherwise(header)
    if named is not None:
        return named
    low, high = b_range
    if header.b_value is not None and not low <= header.b_value <= high:
        return OutOfScope(
            NOT_B1000,
            f"b = {header.b_value:g} s/mm² ({header.b_value_tag}), outside {low:g}-{high:g}",
        )
    return _plane(header.normal)


def _acquired_otherwise(header: Header) -> OutOfScope | None:
    """`NOT_DWI` when nothing says diffusion and the acquisition cannot have been one.

    A series whose descriptions an export emptied still carries how it was acquired. A b-value
    or a diffusion word anywhere in the header overrules these rules.
    """
    if header.b_value is not None or any(_DIFFUSION.search(text) for _, text in header.texts):
        return None
    sequence = header.scanning_sequence
    if sequence is not None and "EP" not in sequence.upper():
        return OutOfScope(
            NOT_DWI,
            f"ScanningSequence is {sequence!r} (no echo planar) and no b-value is given: "
            "not a diffusion acquisition",
        )
    why = _timing_rules_out(header)
    if why is None:
        return None
    return OutOfScope(NOT_DWI, f"{why}, and no b-value is given: not a diffusion image")


def _timing_rules_out(header: Header) -> str | None:
    """What in the acquisition's type or timing cannot be a DWI b1000 image, or None."""
    if header.acquisition == "3D":
        return "MRAcquisitionType is 3D (DWI is acquired slice by slice)"
    if header.echo_ms is not None and header.echo_ms < MIN_DWI_TE_MS:
        return f"EchoTime is {header.echo_ms:g} ms (a b1000 DWI needs {MIN_DWI_TE_MS:g} ms or more)"
    if header.repetition_ms is not None and header.repetition_ms < MIN_DWI_TR_MS:
        return (
            f"RepetitionTime is {header.repetition_ms:g} ms "
            f"(a multi-slice DWI repeats in {MIN_DWI_TR_MS:g} ms or more)"
        )
    if header.inversion_ms is not None and header.inversion_ms >= MIN_NON_DWI_TI_MS:
        return f"InversionTime is {header.inversion_ms:g} ms (a FLAIR or T1 inversion recovery)"
    return None


def _named_otherwise(texts: tuple[tuple[str, str], ...]) -> OutOfScope | None:
    """`NOT_DWI` when ImageType or a description names something other than a DWI."""
    for attribute, text in texts:
        for what, pattern in _NOT_DWI:
            if pattern.search(text):
                return OutOfScope(NOT_DWI, f"{attribute} says {what}, not one DWI b1000 slice")
        if _DIFFUSION.search(text):
            continue
        if _WEIGHTING.search(text):
            return OutOfScope(NOT_DWI, f"{attribute} says T1 or T2 weighting, not diffusion")
        if found := _STRUCTURAL.search(text):
            return OutOfScope(
                NOT_DWI, f"{attribute} names a structural sequence ({found[0]}), not diffusion"
            )
    return None


def _plane(normal: tuple[float, float, float] | None) -> OutOfScope | None:
    """`NOT_AXIAL` when the slice normal is nearer the x or y axis than z (tilted over 45°)."""
    if normal is None:
        return None
    x, y, z = (abs(component) for component in normal)
    if z >= max(x, y):
        return None
    plane = "sagittal" if x >= y else "coronal"
    tilt = math.degrees(math.acos(min(z, 1.0)))
    return OutOfScope(
        NOT_AXIAL,
        f"ImageOrientationPatient gives a {plane} plane ({tilt:.0f}° from axial): "
        "the model reads axial slices",
    )
