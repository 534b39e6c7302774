"""The coded concepts of the lesion results (SEG and TID 1500 SR): what a lesion is and where.

Every code here is one the DICOM standard itself uses (PS3.16 context groups, as pydicom ships
them), except ``INFARCT`` (SNOMED CT 55641003 "Infarct", a morphologic abnormality; CID 7151,
the segmentation property types, is extensible). A location label of the classifier
(``daemon/shared/labels.yaml``) maps to one or two finding sites, each an anatomic code and a
laterality (left, right, or none for a midline structure):

* exact codes for the frontal, parietal, temporal and occipital lobes, the insula, the thalamus,
  the internal capsule and the genu and splenium of the corpus callosum;
* the enclosing structure where PS3.16 has no code for the region itself: the basal ganglia as
  the cerebral hemisphere, the centrum semiovale as the cerebral white matter, a cerebellar
  hemisphere as the cerebellum, the pons as the brain stem (each with its laterality). The
  label text always goes with the codes, so a reader loses nothing; a site that wants the
  narrower SNOMED CT concepts replaces them in ``_REGIONS`` after checking them in a SNOMED CT
  browser.

pydicom's codes only (highdicom takes them as they are): importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

INFARCT = Code("55641003", "SCT", "Infarct")
"""SNOMED CT "Infarct" (morphologic abnormality): the segment's type and the finding's."""
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
"""The segment's category (CID 7150)."""
BRAIN = codes.SCT.Brain
"""The anatomic region of the segment."""
MILLILITER = Code("ml", "UCUM", "milliliter")
VOLUME = codes.SCT.Volume
ADC = codes.DCM.ApparentDiffusionCoefficient
"""DCM 113041, a lesion's apparent diffusion coefficient (its median over the lesion)."""
ADC_VERDICT = {True: codes.SCT.Decreased, False: codes.SCT.Normal}
"""A lesion's ADC check (``adc.restricted``) as a qualitative evaluation of its ADC: Decreased
(restricted diffusion, an acute infarct) or Normal (a look-alike)."""
MICROMETER2_PER_SECOND = Code("um2/s", "UCUM", "um2/s")
"""The ADC's unit: 1 um2/s is 1e-6 mm2/s, the unit of the series report's ``adc.median``."""
MEDIAN = codes.SCT.Median
"""The derivation of the lesion's ADC measurement."""
ARTIFICIAL_INTELLIGENCE = codes.cid7162.ArtificialIntelligence
"""The algorithm family (CID 7162)."""
IMAGING_PROCEDURE = codes.SCT.ImagingProcedure
"""The procedure reported (CID 100 has no code for brain diffusion MRI)."""
PRESENCE = {
    "acute_infarct": codes.cid240.Present,
    "no_acute_infarct": codes.cid240.Absent,
    "indeterminate": codes.cid240.Undetermined,
}
"""The series finding as CID 240 (Present / Absent / Undetermined)."""
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
"""TID 1500 row 12: evaluations of the whole report's subject (the disclaimer goes there)."""
COMMENT = codes.DCM.Comment

LEFT, RIGHT = codes.SCT.Left, codes.SCT.Right


@dataclass(frozen=True)
class Site:
    """One finding site: an anatomic code, its laterality (None: midline), exact or enclosing."""

    region: str
    anatomy: Code
    laterality: Code | None
    exact: bool


_REGIONS: dict[str, tuple[Code, bool]] = {
    "frontal lobe": (codes.SCT.FrontalLobe, True),
    "parietal lobe": (codes.SCT.ParietalLobe, True),
    "temporal lobe": (codes.SCT.TemporalLobe, True),
    "occipital lobe": (codes.SCT.OccipitalLobe, True),
    "insula": (codes.SCT.Insula, True),
    "thalamus": (codes.SCT.Thalamus, True),
    "internal capsule": (codes.SCT.InternalCapsule, True),
    "genu of the corpus callosum": (codes.SCT.GenuOfCorpusCallosum, True),
    "splenium of the corpus callosum": (codes.SCT.SpleniumOfCorpusCallosum, True),
    "basal ganglia": (codes.SCT.CerebralHemisphere, False),
    "centrum semiovale": (codes.SCT.CerebralWhiteMatter, False),
    "cerebellar hemisphere": (codes.SCT.Cerebellum, False),
    "pons": (codes.SCT.BrainStem, False),
}
"""A region's name (as the labels spell it, lower case) -> its code and whether it is exact."""

_SIDES = {"left": LEFT, "right": RIGHT}


def finding_sites(label: str) -> list[Site]:
    """The finding sites a location label names, in the label's order; [] for an unknown label.

    ``Left parietal lobe`` is one site; ``Left centrum semiovale and right parietal lobe`` two;
    ``Right frontal and parietal lobes`` two on the right; ``Genu of the corpus callosum`` one
    without laterality.
    """
    text = " ".join(label.lower().split())
    sites: list[Site] = []
    side = None
    for part in text.split(" and "):
        words = part.split()
        if words and words[0] in _SIDES:
            side = _SIDES[words[0]]
            words = words[1:]
        region = " ".join(words)
        if region.endswith("lobes"):  # "frontal and parietal lobes": each part is a lobe
            region = region[:-1]
        elif region in {"frontal", "parietal", "temporal", "occipital"}:
            region += " lobe"
        if region not in _REGIONS:
            return []
        anatomy, exact = _REGIONS[region]
        midline = "corpus callosum" in region
        sites.append(Site(region, anatomy, None if midline else side, exact))
    return sites
